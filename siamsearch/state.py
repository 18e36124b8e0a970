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

The state owns its transitions (``append``, ``delete``, ``compact``, ``rebase``), and each
checks the invariants after it (``_check``): FAISS and ``vectors`` hold the same rows; a
state without a base has no delta (its rows go straight into FAISS); the lexical part, where
there is one, covers every row. ``mutations.py`` validates and encodes, then calls them;
``index_folder.py`` reads and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from .documents import Documents
from .kinds import IndexKind
from .lexical import LexicalIndex
from .progress import Advance


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
        self._check()

    def _check(self) -> None:
        """The invariants every transition keeps (cheap: counts only)."""
        if len(self.vectors) != self.base_rows:
            raise AssertionError(f"FAISS holds {self.base_rows} rows, the vectors {len(self.vectors)}")
        if self.base is None and len(self.delta):
            raise AssertionError("a state without a base has a delta")
        if self.lexical is not None and self.lexical.rows != self.rows:
            raise AssertionError(f"the lexical index covers {self.lexical.rows} rows of {self.rows}")

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

    # -- transitions -----------------------------------------------------------------------
    def append(self, vectors: np.ndarray, texts: list[str], ids: list[str], metadata: list[dict],
               replaced: list[int], delta_max_rows: int, progress: Advance | None = None) -> None:
        """Add encoded documents as new rows, and tombstone the ``replaced`` positions. A state
        with a base takes them into its delta while the delta stays within ``delta_max_rows``
        and its base's size (a save then writes the delta alone); otherwise the delta is folded
        into FAISS, the rows are added there, and the state no longer has a base."""
        start = self.rows
        into_delta = self.base is not None and len(self.delta) + len(vectors) <= min(delta_max_rows, self.base_rows)
        if into_delta:
            self.delta = np.concatenate([self.delta, vectors])
            if progress is not None:
                progress(len(vectors))
        else:
            if self.faiss_index is None:
                self.faiss_index = self.kind.create(vectors.shape[1], vectors)
            elif self.mapped:
                self.faiss_index, self.mapped = self.kind.in_memory(self.faiss_index), False
            self._fold_delta()
            self.base = None
            self.kind.add(self.faiss_index, vectors, progress=progress)
            self.vectors = vectors if start == 0 else np.concatenate([np.asarray(self.vectors, np.float32), vectors])
        if self.lexical is not None:
            self.lexical = self.lexical.added(texts, start, into_delta)
        self.delete(replaced)
        self.documents.insert(start, ids, texts, metadata)
        self._check()

    def delete(self, positions: list[int]) -> None:
        """Tombstone these positions: their documents go, their rows stay until ``compact``."""
        self.documents.delete(positions)
        if self.lexical is not None and positions:
            self.lexical = self.lexical.without(positions)

    def compact(self, lexical: bool = False) -> int:
        """Rebuild FAISS from the live rows' vectors (no re-encoding), dropping the tombstones;
        ``lexical``: build the lexical part a state without one lacks. Returns how many went."""
        dropped = self.tombstones
        live = self.documents.live_positions()
        vectors = np.asarray(self.vectors_at(np.asarray(live, dtype=np.int64)), dtype=np.float32)
        rebuilt = self.kind.emptied(self.faiss_index)
        self.kind.add(rebuilt, vectors)
        self.documents.renumber()
        if self.lexical is not None:
            self.lexical = self.lexical.compacted(live)
        elif lexical:
            self.lexical = LexicalIndex.of([text for _, text, _ in self.documents])
        self.faiss_index, self.vectors, self.mapped = rebuilt, vectors, False
        self.delta, self.base = vectors[:0], None
        self._check()
        return dropped

    def rebase(self, directory: Path) -> None:
        """The base files now lie (hard-linked, unchanged) in ``directory``, a new generation's."""
        if self.base is None:
            raise AssertionError("rebase of a state without a base")
        self.base = BaseFiles(directory, self.base.files)

    def faiss_with_delta(self, in_place: bool = False) -> faiss.Index:
        """The FAISS index with the delta's rows added: what a save writes where it cannot link
        the base, leaving the state as it is (a copy when there is a delta); ``in_place``: add
        them to the state's own index (in memory), as ``_fold_delta`` does."""
        if not len(self.delta):
            return self.faiss_index
        if in_place:
            index = self.faiss_index
        else:
            index = self.kind.in_memory(self.faiss_index) if self.mapped else faiss.clone_index(self.faiss_index)
        self.kind.add(index, self.delta)
        return index

    def _fold_delta(self) -> None:
        """Move the delta's rows into FAISS (already in memory) and the vectors: the one fold."""
        if len(self.delta):
            self.faiss_index = self.faiss_with_delta(in_place=True)
            self.vectors = np.concatenate([np.asarray(self.vectors, np.float32), self.delta])
            self.delta = self.delta[:0]
