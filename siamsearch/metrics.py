"""The measures shared by training and evaluation: pair metrics and the decision threshold,
the retrieval task made from labelled pairs and its metrics. Plain NumPy over scores and
rankings: training (``trainer``, ``training``, ``fusion_fit``) and the evaluators
(``evaluation.py``, which run systems) both import this, and it imports neither stack.

Pair classification
    ``pair_metrics``: accuracy, precision, recall and F1 of ``exp(-L1) >= threshold``, and
    two threshold-free measures: ROC-AUC, and Spearman's rank correlation between score and
    label (the C-MTEB / text2vec figure, there ×100; rank-based, so exp(-L1) and -L1 agree);
    for graded labels (STS-B's 0-5), Spearman's and Pearson's correlations;
    ``best_threshold`` picks the threshold on validation pairs.
Retrieval (``RetrievalTask``)
    Defined from labelled pair files so that numbers compare across models and baselines:

    * the corpus is every distinct sentence of the main file and the distractor files;
    * the queries are the distinct sentence1 of the main file's positive pairs, skipping
      pairs whose two sentences are identical;
    * a query's relevant documents are all sentences linked to it through positive pairs of
      the main file, transitively, except the query itself, which is also removed from its
      own result list.

    Metrics (``retrieval_metrics``): recall@1 and recall@10 (the share of queries with at
    least one relevant document in the top 1 / top 10, the usual "success@k" of FAQ
    retrieval) and MRR@10 (the mean of 1/rank of the first relevant document, 0 beyond rank
    10); ``recall_curve`` for k = 1 … depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
