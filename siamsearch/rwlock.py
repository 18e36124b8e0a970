"""A readers-writer lock: many searches at once, or one change, never both.

Why not one lock: searches would queue behind each other (txtai serialises every search
this way); why a lock at all: a change grows FAISS, the vectors and the documents in place,
and a search must see all three before or all three after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Reading:
    """The reader side as a plain context manager (a generator-based one cost ~3 µs a search)."""

    __slots__ = ("rw",)

    def __init__(self, rw: ReadWriteLock):
        self.rw = rw

    def __enter__(self) -> None:
        rw = self.rw
        with rw._cond:
            while rw._writing or rw._waiting_writers:  # a waiting writer goes first: no starvation
                rw._cond.wait()
            rw._readers += 1

    def __exit__(self, *exc) -> None:
        rw = self.rw
        with rw._cond:
            rw._readers -= 1
            if not rw._readers:
                rw._cond.notify_all()


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0
        self._read = _Reading(self)

    def reading(self) -> _Reading:
        """``with lock.reading():`` — held by any number of readers at once."""
        return self._read

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
