"""``IndexState``: what one index holds in memory, shared by the query engine, the mutations
and the index folder.

Positions are rows of ``vectors`` and FAISS labels alike; ``documents`` maps the live ones
to (id, text, metadata). A removed or replaced document leaves a tombstone: its row stays in
FAISS and ``vectors`` until ``mutations.compact``.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from .documents import Documents
from .kinds import IndexKind


@dataclass
class IndexState:
    kind: IndexKind
    faiss_index: faiss.Index | None  # None until the first documents arrive (IVF trains on them)
    vectors: np.ndarray
    """(rows, dim) float32 encodings, the exact re-rank source (memory-mapped when loaded)."""
    documents: Documents
    rerank_factor: int
    mapped: bool = False
    """FAISS data memory-mapped from a file: copied to memory before a change."""

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def rows(self) -> int:
        """Vectors held, tombstones included."""
        return 0 if self.faiss_index is None else int(self.faiss_index.ntotal)

    @property
    def tombstones(self) -> int:
        return self.rows - len(self)
