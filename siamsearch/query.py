"""The query engine: encode → FAISS candidates → exact exp(-L1) re-rank → hits.

``k × rerank_factor`` nearest candidates come from FAISS (L1), plus one for each tombstone;
tombstones are dropped; every candidate is scored exactly, exp(-Σ|q - d|) against the stored
float32 vectors; the top ``k`` are returned, ties broken by id. The score of a hit is
therefore exactly what the Siamese model predicts for (query, document).

Nothing here changes the state it reads, so any number of threads may search one state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .encoder import Encoder
from .errors import InputError
from .scoring import exp_neg_l1
from .state import IndexState
from .text import first_blank, normalize


@dataclass(frozen=True)
class Hit:
    """One search result; ``score`` is the Siamese model's prediction for (query, document)."""

    rank: int
    id: str
    text: str
    score: float
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rank": self.rank, "id": self.id, "text": self.text, "score": self.score, "metadata": self.metadata}


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a whole number of at least 1, got {k!r}", argument="k")
    return int(k)


def checked_queries(queries: Sequence[str]) -> list[str]:
    """The queries normalized, or an InputError naming the first that is not a list of text."""
    if isinstance(queries, str):
        raise InputError("search_batch takes a list of queries; use search() for one", argument="queries")
    blank = first_blank(queries)
    if blank is not None:
        raise InputError(f"query #{blank + 1} is empty or whitespace only; give some text to search for",
                         argument="queries")
    return [normalize(q) for q in queries]


def search(state: IndexState, encoder: Encoder, queries: Sequence[str], k: int) -> list[list[Hit]]:
    """Top-k hits for each query, ranked by exact exp(-L1), ties by id."""
    k = check_k(k)
    texts = checked_queries(queries)
    if not texts or not len(state):
        return [[] for _ in texts]
    encoded = encoder.encode(texts)
    n = min(state.rows, k * state.rerank_factor + state.tombstones)
    found = state.kind.search(state.faiss_index, encoded, n)
    return [rerank(state, q, np.unique(pos[pos >= 0]), k) for q, pos in zip(encoded, found)]


def rerank(state: IndexState, query: np.ndarray, positions: np.ndarray, k: int) -> list[Hit]:
    """Score every candidate exactly, then read documents best-first only as far as needed:
    the first ``k`` live ones plus every candidate tied with the last (ties go by id)."""
    scores = exp_neg_l1(query, state.vectors[positions])
    order = np.argsort(-scores, kind="stable")
    end = min(k, len(order))
    while True:
        while end < len(order) and scores[order[end]] == scores[order[end - 1]]:
            end += 1
        docs = state.documents.get(positions[order[:end]])
        if len(docs) >= k or end == len(order):
            break
        end = min(len(order), end + k - len(docs) + state.tombstones)
    ranked = sorted(((scores[i], int(positions[i])) for i in order[:end] if int(positions[i]) in docs),
                    key=lambda sp: (-sp[0], docs[sp[1]][0]))[:k]
    return [Hit(rank, *docs[p][:2], float(score), docs[p][2]) for rank, (score, p) in enumerate(ranked, 1)]
