"""``IndexState``: what one index holds in memory, shared by the query engine, the mutations
and the index folder.

Positions are rows of the vectors and FAISS labels alike; ``documents`` maps the live ones
to (id, text, metadata). A removed or replaced document leaves a tombstone: its row stays in
FAISS and the vectors until ``mutations.compact``.

A state loaded from a folder keeps its **base** (the FAISS index, ``vectors`` and the base
documents, all as the files of ``base`` hold them) unchanged: rows added after loading go to
``delta``, scored exactly at query time, so that saving writes only them and links the base
files (``index_folder.save``). A state built in memory has no base and adds to FAISS directly.
The lexical index follows the same split, row for row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from .documents import Documents
from .kinds import IndexKind
from .lexical import LexicalIndex


@dataclass(frozen=True)
class BaseFiles:
    """The generation folder whose base files (FAISS index, vectors, documents) a loaded state
    holds, with their manifest entries (SHA-256 and bytes), so a save can link them unread."""

    directory: Path
    files: dict


@dataclass
class IndexState:
    kind: IndexKind
    faiss_index: faiss.Index | None  # None until the first documents arrive (IVF trains on them)
    vectors: np.ndarray
    """(FAISS rows, dim) float32 encodings, the exact re-rank source (memory-mapped when loaded)."""
    documents: Documents
    rerank_factor: int
    mapped: bool = False
    """FAISS data memory-mapped from a file: copied to memory before a change."""
    delta: np.ndarray | None = None
    """(rows after FAISS's, dim) float32: vectors added since the base, searched exactly."""
    base: BaseFiles | None = None
    """Where the unchanged base lies on disk; None once FAISS or the vectors change in memory."""
    lexical: LexicalIndex | None = None
    """BM25 over the same rows, its base and delta split as the vectors' are (``lexical.py``);
    None for an index written before it existed (dense search only)."""

    def __post_init__(self) -> None:
        if self.delta is None:
            self.delta = np.empty((0, self.vectors.shape[1]), np.float32)

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def base_rows(self) -> int:
        """Rows in FAISS (and ``vectors``)."""
        return 0 if self.faiss_index is None else int(self.faiss_index.ntotal)

    @property
    def rows(self) -> int:
        """Vectors held, tombstones included."""
        return self.base_rows + len(self.delta)

    @property
    def tombstones(self) -> int:
        return self.rows - len(self)

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The stored vectors of these positions, from the base or the delta."""
        if not len(self.delta):
            return self.vectors[positions]
        in_base = positions < self.base_rows
        if in_base.all():
            return self.vectors[positions]
        out = np.empty((len(positions), self.vectors.shape[1]), np.float32)
        out[in_base] = self.vectors[positions[in_base]]
        out[~in_base] = self.delta[positions[~in_base] - self.base_rows]
        return out

    def all_vectors(self) -> np.ndarray:
        """Every row's vector, base then delta (a copy when there is a delta)."""
        if not len(self.delta):
            return self.vectors
        return np.concatenate([np.asarray(self.vectors, np.float32), self.delta])
