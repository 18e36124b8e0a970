"""How good a model is: as a pair classifier, and as a search engine.

Pair classification
    ``pair_metrics``: accuracy, precision, recall and F1 of ``exp(-L1) >= threshold``, and
    two threshold-free measures: ROC-AUC, and Spearman's rank correlation between score and
    label (the C-MTEB / text2vec figure, there ×100; rank-based, so exp(-L1) and -L1 agree);
    for graded labels (STS-B's 0-5), Spearman's and Pearson's correlations;
    ``best_threshold`` picks the threshold on validation pairs;
    ``PairEvaluator`` runs an encoder on a pair file.
Retrieval (``RetrievalTask``, ``RetrievalEvaluator``)
    Defined from labelled pair files so that numbers compare across models and baselines:

    * the corpus is every distinct sentence of the main file and the distractor files;
    * the queries are the distinct sentence1 of the main file's positive pairs, skipping
      pairs whose two sentences are identical;
    * a query's relevant documents are all sentences linked to it through positive pairs of
      the main file, transitively, except the query itself, which is also removed from its
      own result list.

    Metrics: recall@1 and recall@10 (the share of queries with at least one relevant
    document in the top 1 / top 10, the usual "success@k" of FAQ retrieval), MRR@10 (the
    mean of 1/rank of the first relevant document, 0 beyond rank 10) and the mean latency of
    one query. Any ``Retriever`` can be evaluated: the encoder's ``SearchIndex``
    (``EncoderRetriever``) or a lexical baseline (``baselines.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .data import Pairs, is_graded, is_positive, paraphrase_groups
from .errors import InputError
from .model_folder import DEFAULT_THRESHOLD

RECALL_AT = (1, 10)
MRR_AT = 10


def pair_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float | None = DEFAULT_THRESHOLD) -> dict:
    """Accuracy, precision, recall and F1 of ``score >= threshold`` against 0/1 labels, and
    ROC-AUC and Spearman's correlation of scores and labels (None when the labels hold only
    one class). Graded labels (any label but 0 and 1, e.g. STS-B's 0-5) have no classes: their
    figures are Spearman's and Pearson's correlations, the rest None. ``threshold=None``
    gives the threshold-free figures only (for scores with no threshold of their own, such
    as a baseline's)."""
    from sklearn.metrics import roc_auc_score

    scores, labels = np.asarray(scores), np.asarray(labels)
    graded = is_graded(labels)
    metrics = {"n": int(labels.size), "graded": graded, "threshold": None if graded else threshold,
               **dict.fromkeys(("accuracy", "precision", "recall", "f1", "roc_auc", "spearman", "pearson"))}
    if graded:
        return {**metrics, "spearman": _correlation("spearmanr", scores, labels),
                "pearson": _correlation("pearsonr", scores, labels)}
    actual = is_positive(labels)
    if 0 < actual.sum() < actual.size:
        metrics.update(roc_auc=float(roc_auc_score(actual, scores)), spearman=_correlation("spearmanr", scores, labels))
    if threshold is None:
        return metrics
    predicted = scores >= threshold
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {**metrics, "accuracy": float(np.mean(predicted == actual)) if actual.size else 0.0,
            "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def _correlation(name: str, scores: np.ndarray, labels: np.ndarray) -> float | None:
    """scipy.stats' ``spearmanr`` or ``pearsonr`` of scores and labels; None where either is
    constant (the correlation is undefined)."""
    import scipy.stats

    if np.ptp(scores) == 0 or np.ptp(labels) == 0:
        return None
    return float(getattr(scipy.stats, name)(scores, labels).statistic)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold with the highest accuracy of ``score >= threshold`` on these pairs:
    halfway between the two adjacent distinct scores where the best split lies (so a
    slightly different score on new data falls on the side it fell on here)."""
    scores, actual = np.asarray(scores, dtype=np.float64), is_positive(labels)
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], actual[order]
    # a split after sorted position i (predict positive for s[i+1:]): correct = negatives up to i + positives after i
    correct = np.concatenate([[0], np.cumsum(~y)]) + (y.sum() - np.concatenate([[0], np.cumsum(y)]))
    distinct = np.concatenate([[True], s[1:] > s[:-1], [True]])  # splits between equal scores are not real
    best = int(np.flatnonzero(distinct)[np.argmax(correct[distinct])])
    if best == 0:
        return float(s[0]) if len(s) else DEFAULT_THRESHOLD
    if best == len(s):
        return float(np.nextafter(s[-1], np.inf))
    return float((s[best - 1] + s[best]) / 2)


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


@dataclass(frozen=True)
class RetrievalTask:
    """A corpus, the queries (corpus positions) and each query's relevant corpus positions."""

    corpus: list[str]
    queries: list[int]
    relevant: list[frozenset[int]]

    @classmethod
    def from_pairs(cls, main: Pairs, distractors: Sequence[Pairs] = ()) -> RetrievalTask:
        """The task of the module docstring. The corpus is in reading order (main file first,
        row by row), which is also how the lexical baselines order equal scores."""
        if main.graded:
            raise InputError(f"{main.source or 'the pair file'}: graded labels (scores such as 0-5); the retrieval "
                             "task needs 0 and 1 labels", path=main.source or None)
        corpus = list(dict.fromkeys(s for pairs in (main, *distractors) for pair in zip(pairs.left, pairs.right)
                                    for s in pair))
        group = paraphrase_groups(corpus, main)
        members: dict[int, list[int]] = {}
        for position, g in enumerate(group.tolist()):
            members.setdefault(g, []).append(position)
        position = {s: i for i, s in enumerate(corpus)}
        queries = list(dict.fromkeys(position[a] for a, b, positive in zip(main.left, main.right, main.positive)
                                     if positive and a != b))
        if not queries:
            raise InputError(f"{main.source or 'the pair file'}: no positive pairs of two different sentences, "
                             "so no queries; the retrieval task needs some", path=main.source or None)
        relevant = [frozenset(members[group[q]]) - {q} for q in queries]
        return cls(corpus, queries, relevant)


def retrieval_metrics(ranked: Sequence[Sequence[int]], relevant: Sequence[frozenset[int]]) -> dict:
    """recall@1, recall@10 and MRR@10 of ranked result lists (best first) against the relevant sets."""
    first = np.array([next((rank for rank, doc in enumerate(docs[:MRR_AT], 1) if doc in rel), 0)
                      for docs, rel in zip(ranked, relevant)])
    found = first > 0
    metrics = {f"recall@{k}": float(np.mean(found & (first <= k))) if len(first) else 0.0 for k in RECALL_AT}
    metrics[f"mrr@{MRR_AT}"] = float(np.mean(np.where(found, 1.0 / np.maximum(first, 1), 0.0))) if len(first) else 0.0
    return metrics


def recall_curve(ranked: Sequence[Sequence[int]], relevant: Sequence[frozenset[int]], depth: int) -> list[float]:
    """recall@k for k = 1 … ``depth``: the share of queries with a relevant document in the top k."""
    first = np.array([next((rank for rank, doc in enumerate(docs[:depth], 1) if doc in rel), depth + 1)
                      for docs, rel in zip(ranked, relevant)])
    return [float(np.mean(first <= k)) if len(first) else 0.0 for k in range(1, depth + 1)]


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
