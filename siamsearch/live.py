"""``LiveIndex``: one index folder served to many threads and processes while it changes.

A service holds one ``LiveIndex``. Reads go to the generation loaded last. A write loads the
committed generation afresh, changes that copy, commits it (``SearchIndex.save``, durable
before it returns) and only then swaps it in: readers never wait for a write and never see
an uncommitted state, and a write is reported done only once it would survive a crash.

Writers queue on ``QUEUE_LOCK`` in the folder, so the threads of one process and the
processes of one service (its workers) commit one after another and none is lost. A writer
that does not queue (the CLI's ``add``) and collides is refused with a ``ConflictError``,
never merged silently. A generation another process committed is picked up by the next read
(``SearchIndex.is_stale``: one small file read).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .search import SearchIndex
from .storage import waiting_lock

QUEUE_LOCK = ".queue.lock"
WRITE_WAIT_S = 120.0
"""How long a write waits for the writers ahead of it before it is refused."""


@dataclass(frozen=True)
class Commit:
    """What a write committed: the new generation, the documents it holds, and how many
    documents the change replaced, removed or (compact) tombstones it dropped."""

    generation: int
    documents: int
    changed: int


class LiveIndex:
    """The latest committed generation of an index folder, for serving (see the module doc)."""

    def __init__(self, path: str | Path, mmap: bool = True):
        self.path = Path(path)
        self.mmap = mmap
        self._current = SearchIndex.load(self.path, mmap=mmap)
        self._swap = threading.Lock()
        self._writes = threading.Lock()

    def __repr__(self) -> str:
        return f"LiveIndex({str(self.path)!r}, generation={self._current.generation})"

    @property
    def index(self) -> SearchIndex:
        """The latest committed generation; hold on to it for the length of one request so
        that every answer in it comes from one generation."""
        current = self._current
        if current.is_stale():
            with self._swap:
                if self._current.is_stale():
                    self._current = self._current.reload(mmap=self.mmap)
                current = self._current
        return current

    def upsert(self, texts: Sequence[str], ids: Sequence[str], metadata: Sequence[dict] | None = None) -> Commit:
        """Add documents, replacing those whose id exists; ``changed``: how many were replaced."""
        return self._commit(lambda index: index.upsert(texts, ids, metadata))

    def remove(self, ids: Sequence[str]) -> Commit:
        """Remove documents by id, all or none (an unknown id is a ``NotFoundError``)."""
        return self._commit(lambda index: index.remove(ids))

    def compact(self) -> Commit:
        """Drop the tombstones left by removals and replacements."""
        return self._commit(lambda index: index.compact())

    def _commit(self, change: Callable[[SearchIndex], int]) -> Commit:
        with self._writes, waiting_lock(self.path / QUEUE_LOCK, WRITE_WAIT_S):
            fresh = SearchIndex.load(self.path, mmap=True)  # the committed state, whoever wrote it
            changed = change(fresh)
            fresh.save(self.path)
            # Served from the files just written: a file-backed table reads on a pool of
            # connections, where the copy changed in memory reads on one.
            served = SearchIndex.load(self.path, mmap=self.mmap)
            with self._swap:
                self._current = served
        return Commit(served.generation, len(served), changed)
