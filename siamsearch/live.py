"""``LiveIndex``: one index folder served to many threads and processes while it changes.

A service holds one ``LiveIndex``. Reads go to the generation loaded last. A write loads the
committed generation afresh, changes that copy, commits it (``SearchIndex.save``, durable
before it returns) and only then swaps it in: readers never wait for a write and never see
an uncommitted state, and a write is reported done only once it would survive a crash.

Searches arriving together from many threads are answered together: the first to find no
search running takes every query waiting (``Coalescer``) into one ``search_batch`` call, which
encodes them in one pass, while the others wait for their part. Under load that turns N
threads contending for two cores into one batch, with no added wait when there is no load.

Commits run on one thread per ``LiveIndex``, started with the first write, at a lower CPU
priority (``COMMIT_NICE``, Linux): the cores should go to the searches answering meanwhile.
A commit writes the delta since the loaded base and links the rest (``index_folder.save``);
the occasional one that folds the delta into a new base rewrites the index.

Writers queue on ``QUEUE_LOCK`` in the folder, so the threads of one process and the
processes of one service (its workers) commit one after another and none is lost. A writer
that does not queue (the CLI's ``add``) and collides is refused with a ``ConflictError``,
never merged silently. A generation another process committed is picked up by the next read
(``SearchIndex.is_stale``: one small file read).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import IndexDirectoryError
from .filters import Where
from .query import Hit, Observe, Request
from .search import SearchIndex
from .storage import waiting_lock

QUEUE_LOCK = ".queue.lock"
MAX_COALESCED = 64
"""Queries answered by one ``search_batch`` call at most."""
COMMIT_NICE = 10
"""How much lower than the searches the committing thread runs (Linux ``nice``; 0 turns it off)."""
WRITE_WAIT_S = 120.0
"""How long a write waits for the writers ahead of it before it is refused."""


class _Job:
    __slots__ = ("change", "done", "commit", "error")

    def __init__(self, change: Callable[[SearchIndex], int]):
        self.change, self.done = change, threading.Event()
        self.commit: Commit | None = None
        self.error: BaseException | None = None


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority (Linux schedules threads as tasks; elsewhere a no-op)."""
    if nice <= 0 or not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError:
        pass


@dataclass(frozen=True)
class Commit:
    """What a write committed: the new generation, the documents it holds, and how many
    documents the change replaced, removed or (compact) tombstones it dropped."""

    generation: int
    documents: int
    changed: int


class _Waiting:
    __slots__ = ("index", "request", "key", "done", "hits", "error")

    def __init__(self, index: SearchIndex, request: Request):
        self.index, self.request = index, request
        self.key = (id(index), *request.key())
        self.done = False
        self.hits: list[list[Hit]] | None = None
        self.error: BaseException | None = None


class Coalescer:
    """Answers the searches of many threads with as few ``search_batch`` calls as possible
    (see the module doc). Whichever waiting thread finds no search running answers the
    oldest waiting search together with every other one that shares its index, ``k`` and
    filter, then hands on; so searches are answered in arrival order and no thread works for
    the others for longer than one batch. Each search is checked before it waits, so one bad
    query cannot fail the others' batch."""

    def __init__(self, max_batch: int = MAX_COALESCED):
        self.max_batch = max_batch
        self._turn = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._busy = False

    def search(self, index: SearchIndex, queries: list[str], k: int, where: Where | None = None,
               observe: Observe | None = None, min_match: float | None = None,
               mode: str = "dense") -> list[list[Hit]]:
        mine = _Waiting(index, Request.checked(queries, k, where, min_match, mode, index.encoder, index.dense_only))
        with self._turn:
            self._waiting.append(mine)
            while not mine.done:
                if self._busy:
                    self._turn.wait()
                    continue
                self._busy = True
                batch = self._next_batch()
                self._turn.release()
                try:
                    self._answer(batch, observe)
                finally:
                    self._turn.acquire()
                    self._busy = False
                    self._turn.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.hits

    def _next_batch(self) -> list[_Waiting]:
        first, batch, size = self._waiting[0], [], 0
        for waiting in self._waiting:
            if waiting.key == first.key and (not batch or size + len(waiting.request.queries) <= self.max_batch):
                batch.append(waiting)
                size += len(waiting.request.queries)
        self._waiting = [w for w in self._waiting if w not in batch]
        return batch

    @staticmethod
    def _answer(batch: list[_Waiting], observe: Observe | None) -> None:
        try:
            found = batch[0].index.answer(Request.joined([w.request for w in batch]), observe)
        except BaseException as e:  # handed to every search of the batch
            for waiting in batch:
                waiting.error, waiting.done = e, True
            return
        for waiting in batch:
            n = len(waiting.request.queries)
            waiting.hits, found = found[:n], found[n:]
            waiting.done = True


class LiveIndex:
    """The latest committed generation of an index folder, for serving (see the module doc).

    Example: ``live = LiveIndex("indexes/faq"); live.search_batch(["退款多久到账"], k=5)``."""

    def __init__(self, path: str | Path, mmap: bool = True):
        self.path = Path(path)
        self.mmap = mmap
        self._current = SearchIndex.load(self.path, mmap=mmap)
        self._swap = threading.Lock()
        self._coalescer = Coalescer()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._committer: threading.Thread | None = None
        self._starting = threading.Lock()

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
                    self._current = self._load(self.mmap)
                current = self._current
        return current

    def search_batch(self, queries: list[str], k: int = 10, where: Where | None = None,
                     observe: Observe | None = None, min_match: float | None = None,
                     mode: str = "dense") -> tuple[int, list[list[Hit]]]:
        """The generation answering and its hits for each query (as ``SearchIndex.search_batch``);
        searches from other threads at the same moment are answered in the same batch.
        Example: ``generation, [hits] = live.search_batch(["退款多久到账"], k=5)``."""
        index = self.index
        return index.generation, self._coalescer.search(index, queries, k, where, observe, min_match, mode)

    def _load(self, mmap: bool) -> SearchIndex:
        """The committed generation, with the encoder already loaded when it is the same one
        (building an onnxruntime session again would cost more than the rest of a small commit)."""
        try:
            return SearchIndex.load(self.path, self._current.encoder, mmap=mmap)
        except IndexDirectoryError as e:
            if e.argument != "encoder":
                raise
            return SearchIndex.load(self.path, mmap=mmap)  # rebuilt with another model meanwhile

    def upsert(self, texts: Sequence[str], ids: Sequence[str], metadata: Sequence[dict] | None = None) -> Commit:
        """Add documents, replacing those whose id exists; ``changed``: how many were replaced.

        Example: ``live.upsert(["可以用花呗吗"], ids=["q-201"], metadata=[{"topic": "支付"}]).generation``."""
        return self._commit(lambda index: index.upsert(texts, ids, metadata))

    def remove(self, ids: Sequence[str]) -> Commit:
        """Remove documents by id, all or none (an unknown id is a ``NotFoundError``).

        Example: ``live.remove(["q-201"])``."""
        return self._commit(lambda index: index.remove(ids))

    def compact(self) -> Commit:
        """Drop the tombstones left by removals and replacements.

        Example: ``live.compact().changed`` (tombstones dropped)."""
        return self._commit(lambda index: index.compact())

    def _commit(self, change: Callable[[SearchIndex], int]) -> Commit:
        """Hand the change to the committing thread and wait until it is committed (or refused)."""
        with self._starting:
            if self._committer is None:
                self._committer = threading.Thread(target=self._run_commits, name="siamsearch-commits", daemon=True)
                self._committer.start()
        job = _Job(change)
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.commit

    def _run_commits(self) -> None:
        _lower_priority(COMMIT_NICE)
        while True:
            job = self._jobs.get()
            try:
                job.commit = self._commit_now(job.change)
            except BaseException as e:  # handed to the request that asked for the change
                job.error = e
            job.done.set()

    def _commit_now(self, change: Callable[[SearchIndex], int]) -> Commit:
        with waiting_lock(self.path / QUEUE_LOCK, WRITE_WAIT_S):
            fresh = self._load(mmap=True)  # the committed state, whoever wrote it
            changed = change(fresh)
            fresh.save(self.path)
            # Served from the files just written: a file-backed table reads on a pool of
            # connections, where the copy changed in memory reads on one.
            served = self._load(self.mmap)
            with self._swap:
                self._current = served
        return Commit(served.generation, len(served), changed)
