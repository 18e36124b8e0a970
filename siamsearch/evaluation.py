"""How good a model is, run: ``PairEvaluator`` scores a pair file with an encoder and
baselines; ``RetrievalEvaluator`` runs a ``metrics.RetrievalTask`` against any ``Retriever``,
one query at a time, with the mean latency of one query: the encoder's ``SearchIndex``
(``EncoderRetriever``) or a lexical baseline (``baselines.py``). The measures themselves are
``metrics.py``'s, which training shares.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .data import Pairs
from .metrics import MRR_AT, RetrievalTask, pair_metrics, recall_curve, retrieval_metrics


class PairScorer(Protocol):
    """A baseline that scores sentence pairs (higher: more alike), for ``PairEvaluator.baseline``."""

    name: str

    def pair_scores(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray: ...


class PairEvaluator:
    """Pair classification of an encoder on labelled pairs."""

    def __init__(self, pairs: Pairs):
        self.pairs = pairs

    def scores(self, encoder) -> np.ndarray:
        """The Siamese score of every pair (``Encoder.pair_scores``)."""
        return encoder.pair_scores(self.pairs)

    def __call__(self, encoder, threshold: float | None = None) -> dict:
        """``pair_metrics`` at ``threshold``, by default the encoder's own."""
        return pair_metrics(self.scores(encoder), self.pairs.labels,
                            encoder.threshold if threshold is None else threshold)

    def table(self, encoder, baselines: Sequence[PairScorer] = (), name: str = "siamsearch",
              ) -> tuple[list[dict], dict[str, np.ndarray]]:
        """One record per system, the encoder at its threshold first, then each baseline
        (threshold-free), and each system's pair scores. ``pandas.DataFrame(records)`` is the
        table ``siamsearch evaluate`` prints. Example:
        ``records, _ = PairEvaluator(read_pairs("dev.tsv")).table(Encoder.load(), [BM25Retriever()])``."""
        scores = {name: self.scores(encoder)}
        records = [{"name": name, **pair_metrics(scores[name], self.pairs.labels, encoder.threshold)}]
        for scorer in baselines:
            scores[scorer.name] = scorer.pair_scores(self.pairs.left, self.pairs.right)
            records.append(self.baseline(scorer, scores[scorer.name]))
        return records, scores

    def baseline(self, scorer: PairScorer, scores: np.ndarray | None = None) -> dict:
        """The threshold-free ``pair_metrics`` (ROC-AUC, Spearman; Pearson for graded labels)
        of a baseline's pair scores, with its name; ``scores``: those scores if already computed
        (a plot needs them too)."""
        if scores is None:
            scores = scorer.pair_scores(self.pairs.left, self.pairs.right)
        return {"name": scorer.name, **pair_metrics(scores, self.pairs.labels, threshold=None)}


class Retriever(Protocol):
    """What the retrieval evaluator needs: index a corpus once, then rank it for one query."""

    name: str

    def index(self, corpus: Sequence[str]) -> None: ...

    def search(self, query: str, k: int) -> list[int]:
        """Corpus positions of the ``k`` best documents, best first."""
        ...


class EncoderRetriever:
    """The product's own path: a ``SearchIndex`` over the corpus (FAISS candidates, exact
    exp(-L1) re-rank; lexical and hybrid ``mode`` too), with corpus positions as document ids.
    Retrievers made by ``sharing`` search the same built index in another mode, so a
    comparison of modes encodes the corpus once."""

    def __init__(self, encoder, name: str = "siamsearch", mode: str = "dense", fusion=None, **build_options):
        self.encoder, self.name, self.mode, self.fusion, self.build_options = encoder, name, mode, fusion, build_options
        self._built: dict = {}  # the corpus and its SearchIndex; one dict for all that share it

    @property
    def search_index(self):
        """The SearchIndex that ``index`` built (None before)."""
        return self._built.get("index")

    def sharing(self, name: str, mode: str, fusion=None) -> EncoderRetriever:
        """Another retriever over this one's index (built once, by whichever indexes first)."""
        other = EncoderRetriever(self.encoder, name, mode, fusion, **self.build_options)
        other._built = self._built
        return other

    def index(self, corpus: Sequence[str]) -> None:
        from .search import SearchIndex

        if self._built.get("corpus") is not corpus:
            self._built.update(corpus=corpus, index=SearchIndex.build(
                list(corpus), self.encoder, ids=[str(i) for i in range(len(corpus))], **self.build_options))

    def search(self, query: str, k: int) -> list[int]:
        return [int(hit.id) for hit in self.search_index.search(query, k, mode=self.mode, fusion=self.fusion)]


class RetrievalEvaluator:
    """Runs a ``RetrievalTask`` against retrievers, one query at a time (as users query)."""

    def __init__(self, task: RetrievalTask):
        self.task = task

    def rank(self, retriever: Retriever, k: int = MRR_AT) -> list[list[int]]:
        """Each query's ``k`` best corpus positions from an indexed ``retriever``, best first,
        the query itself removed (the task's rule: it is in the corpus, and finding it says
        nothing)."""
        corpus = self.task.corpus
        return [[d for d in retriever.search(corpus[q], k + 1) if d != q][:k] for q in self.task.queries]

    def __call__(self, retriever: Retriever, depth: int = MRR_AT) -> dict:
        """Metrics plus ``ms_per_query`` (mean over queries) and ``index_seconds``; with ``depth``
        above ``MRR_AT``, each query ranks that many documents and ``recall_curve`` (recall@1 …
        recall@depth) is added (the latency then includes the deeper search)."""
        task = self.task
        started = time.perf_counter()
        retriever.index(task.corpus)
        index_seconds = time.perf_counter() - started
        started = time.perf_counter()
        ranked = self.rank(retriever, max(depth, MRR_AT))
        seconds = time.perf_counter() - started
        curve = {"recall_curve": recall_curve(ranked, task.relevant, depth)} if depth > MRR_AT else {}
        return {
            "name": retriever.name,
            **retrieval_metrics(ranked, task.relevant),
            "ms_per_query": 1000 * seconds / max(len(task.queries), 1),
            "index_seconds": index_seconds,
            "queries": len(task.queries),
            "corpus": len(task.corpus),
            **curve,
        }
