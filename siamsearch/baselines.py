"""Lexical baselines for the retrieval evaluation: what keyword search gets on the same task.

Both work on characters, because the texts are Chinese with no word boundaries: a text's
terms are its characters and its character bigrams, as ``lexical.terms`` makes them for the
index's own lexical part (so the BM25 baseline is what ``mode="lexical"`` ranks by).

``BM25Retriever``
    BM25 from ``bm25s`` (Lucene's variant: idf = ln(1 + (N - df + 0.5) / (df + 0.5))),
    k1 = 1.2, b = 0.75; a query term is counted once however often it occurs.
``TfidfRetriever``
    scikit-learn's ``TfidfVectorizer`` (smoothed idf, sublinear tf off, L2-normalised
    rows), ranked by cosine similarity.

``TeacherRetriever``
    A pretrained sentence encoder (``teacher.py``, e.g. ``use-m3``) zero-shot: cosine
    similarity of its vectors, exact. What a user would get from an off-the-shelf model.

Equal scores are ordered by corpus position. All implement ``evaluation.Retriever`` and,
for pair files, ``evaluation.PairScorer`` (``pair_scores``: the score of each pair, over an
index of the file's own distinct sentences).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .lexical import terms


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Positions of the ``k`` highest scores, best first, equal scores by position."""
    cut = len(scores) - min(k, len(scores))
    kth_best = np.partition(scores, cut)[cut]
    candidates = np.flatnonzero(scores >= kth_best)  # everything tied with the k-th best too
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k].tolist()


class BM25Retriever:
    name = "BM25 (chars+bigrams)"

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        import bm25s

        self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")

    def index(self, corpus: Sequence[str]) -> None:
        self._bm25.index([terms(t) for t in corpus], show_progress=False)

    def search(self, query: str, k: int) -> list[int]:
        return top_k(self._bm25.get_scores(list(dict.fromkeys(terms(query)))), k)

    def pair_scores(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """BM25 is a query's score for a document: the mean of both directions, with the
        file's distinct sentences as the collection (its idf and mean length)."""
        texts = list(dict.fromkeys([*left, *right]))
        where = {t: i for i, t in enumerate(texts)}
        self.index(texts)
        partners: dict[str, list[tuple[int, int]]] = {}  # query → (pair, the other sentence's position)
        for i, (a, b) in enumerate(zip(left, right)):
            partners.setdefault(a, []).append((i, where[b]))
            partners.setdefault(b, []).append((i, where[a]))
        total = np.zeros(len(left))
        for query, wanted in partners.items():  # one score row at a time: n rows of n would not fit
            row = self._bm25.get_scores(list(dict.fromkeys(terms(query))))
            for i, position in wanted:
                total[i] += row[position]
        return total / 2


class TfidfRetriever:
    name = "TF-IDF (chars+bigrams)"

    def __init__(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(analyzer=terms, lowercase=False)
        self._matrix = None

    def index(self, corpus: Sequence[str]) -> None:
        self._matrix = self._vectorizer.fit_transform(corpus).T.tocsr()

    def search(self, query: str, k: int) -> list[int]:
        scores = (self._vectorizer.transform([query]) @ self._matrix).toarray().ravel()
        return top_k(scores, k)

    def pair_scores(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """Cosine of the two sentences' TF-IDF vectors, idf from the file's distinct sentences."""
        texts = list(dict.fromkeys([*left, *right]))
        where = {t: i for i, t in enumerate(texts)}
        rows = self._vectorizer.fit_transform(texts)
        a, b = rows[[where[t] for t in left]], rows[[where[t] for t in right]]
        return np.asarray(a.multiply(b).sum(axis=1)).ravel()


class TeacherRetriever:
    """A pretrained teacher zero-shot: exact cosine over its vectors (cached, ``TeacherCache``)."""

    def __init__(self, teacher: str = "use-m3"):
        from .teacher import TeacherCache, load_teacher

        self._cache = TeacherCache(load_teacher(teacher))
        self.name = f"{teacher} (pretrained, cosine)"
        self._vectors = None

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        return self._cache.vectors(texts)

    def index(self, corpus: Sequence[str]) -> None:
        self._vectors = self.vectors(corpus)

    def search(self, query: str, k: int) -> list[int]:
        return top_k(self._vectors @ self.vectors([query])[0], k)

    def pair_scores(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        return np.einsum("ij,ij->i", self.vectors(left), self.vectors(right))
