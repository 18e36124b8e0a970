"""The documents of an index, in SQLite: position (the FAISS label) → id, text, metadata.

Positions are rows of the vector matrix and are never reused until ``compact``: removing
a document deletes its row here (a tombstone: its vector stays in FAISS and is filtered
out at query time). While an index is built or changed the table lives in memory; saving
copies it to a file with SQLite's backup API, and a loaded file is opened read-only and
copied to memory only when first changed.

Reads are safe from many threads: a file is opened read-only as a pool of connections,
each used by one thread at a time (SQLite connections must not be shared unguarded). They
are all opened with the index, while its generation is locked against removal, so they keep
reading that generation's file after a writer commits a newer one and deletes it (POSIX
keeps an open file readable). An in-memory table, which has one connection, is read and
changed under a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .filters import cache_key, where_sql

SCHEMA = ("CREATE TABLE documents (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
          "text TEXT NOT NULL, metadata TEXT NOT NULL)")
CHUNK = 500  # bound parameters per statement, well under SQLite's limit
PAGE = 1000  # documents read per statement when iterating
READERS = 8  # read-only connections of an opened file: threads beyond this many wait their turn
CACHE_KIB = 256 << 10  # SQLite's page cache while a table is written straight to its file
SELECTIONS = 64  # filters whose matching positions are kept, until the documents change


def _chunks(items: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _insert(conn: sqlite3.Connection, start: int, ids: Sequence[str], texts: Sequence[str],
            metadata: Sequence[dict]) -> None:
    conn.executemany("INSERT INTO documents VALUES (?, ?, ?, ?)",
                     ((start + n, i, t, json.dumps(m, ensure_ascii=False))
                      for n, (i, t, m) in enumerate(zip(ids, texts, metadata))))


class DocumentsFile:
    """A documents table written straight to its file a chunk at a time, for a streamed build:
    memory holds SQLite's page cache, not the corpus. No journal: the file is in a staging
    folder that is deleted if the build fails, and flushed to disk before it is committed."""

    def __init__(self, path: Path):
        self._conn = sqlite3.connect(path)
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._conn.execute(SCHEMA)
        self.rows = 0

    def append(self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict]) -> str | None:
        """Insert documents at the next positions; returns the first id already taken (by an
        earlier document or one of these) and inserts none of them, else None."""
        try:
            with self._conn:
                _insert(self._conn, self.rows, ids, texts, metadata)
        except sqlite3.IntegrityError:
            seen: set[str] = set()
            for doc_id in ids:
                if doc_id in seen or self._conn.execute("SELECT 1 FROM documents WHERE id = ?", (doc_id,)).fetchone():
                    return doc_id
                seen.add(doc_id)
            raise
        self.rows += len(ids)
        return None

    def close(self) -> None:
        self._conn.close()


class _Reading:
    """Borrows a connection: the in-memory one under its lock, else the first idle reader (the
    same few stay warm), else the caller waits for one. Plain lock calls, no queue: this runs
    on every search, where a ``queue.Queue`` round trip measured ~6 µs."""

    __slots__ = ("documents", "lock")

    def __init__(self, documents: Documents):
        self.documents = documents

    def __enter__(self) -> sqlite3.Connection:
        documents = self.documents
        if documents._memory is not None:
            self.lock = documents._lock
            self.lock.acquire()
            return documents._memory
        for lock, conn in documents._readers:
            if lock.acquire(blocking=False):
                self.lock = lock
                return conn
        self.lock, conn = documents._readers[threading.get_ident() % len(documents._readers)]
        self.lock.acquire()
        return conn

    def __exit__(self, *exc) -> None:
        self.lock.release()


class Documents:
    def __init__(self, memory: sqlite3.Connection | None, readers: Sequence[sqlite3.Connection] = ()):
        self._memory = memory  # the writable in-memory table, or None while reading a file
        self._lock = threading.Lock()
        self._readers = [(threading.Lock(), conn) for conn in readers]
        self._selections: dict[tuple, np.ndarray] = {}
        self._selections_lock = threading.Lock()
        with self._reading() as conn:
            self._count = conn.execute("SELECT count(*) FROM documents").fetchone()[0]

    @classmethod
    def create(cls) -> Documents:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.execute(SCHEMA)
        return cls(conn)

    @classmethod
    def open(cls, path: Path) -> Documents:
        """Open a saved table read-only: ``READERS`` connections, each with the file open already."""
        uri = f"{path.resolve().as_uri()}?mode=ro"
        readers = [sqlite3.connect(uri, uri=True, check_same_thread=False) for _ in range(READERS)]
        for conn in readers:
            conn.execute("SELECT 1 FROM documents LIMIT 1").fetchone()  # opens the file now (a count would scan it)
        return cls(None, readers)

    def _reading(self) -> _Reading:
        return _Reading(self)

    def save(self, path: Path) -> None:
        target = sqlite3.connect(path)
        try:
            with self._reading() as conn:
                conn.backup(target)
        finally:
            target.close()

    def __len__(self) -> int:
        return self._count

    def _writing(self) -> sqlite3.Connection:
        """The in-memory connection, made on the first change by copying the file."""
        if self._memory is None:
            memory = sqlite3.connect(":memory:", check_same_thread=False)
            with self._reading() as conn:
                conn.backup(memory)
            self._memory = memory
        return self._memory

    def get(self, positions: Sequence[int]) -> dict[int, tuple[str, str, dict]]:
        """position → (id, text, metadata), for the positions that hold a live document."""
        found = {}
        with self._reading() as conn:
            for chunk in _chunks([int(p) for p in positions]):
                rows = conn.execute(f"SELECT position, id, text, metadata FROM documents WHERE position IN "
                                    f"({','.join('?' * len(chunk))})", chunk)
                found.update({p: (i, t, json.loads(m)) for p, i, t, m in rows})
        return found

    def positions(self, ids: Sequence[str]) -> dict[str, int]:
        """id → position, for the ids that exist."""
        found = {}
        with self._reading() as conn:
            for chunk in _chunks(list(ids)):
                rows = conn.execute(f"SELECT id, position FROM documents WHERE id IN ({','.join('?' * len(chunk))})",
                                    chunk)
                found.update(dict(rows))
        return found

    def select(self, where: dict[str, tuple]) -> np.ndarray:
        """Sorted positions of the live documents matching a checked filter (``filters.py``).

        A filter is a scan of the table, so each filter's answer is kept until the documents
        change (a loaded index never changes; an index being changed is not searched meanwhile).
        """
        key = cache_key(where)
        found = self._selections.get(key)
        if found is None:
            clause, params = where_sql(where)
            with self._reading() as conn:
                rows = conn.execute(f"SELECT position FROM documents WHERE {clause} ORDER BY position", params)
                found = np.fromiter((p for (p,) in rows), dtype=np.int64)
            with self._selections_lock:
                if len(self._selections) >= SELECTIONS:
                    self._selections.pop(next(iter(self._selections)))
                self._selections[key] = found
        return found

    def _one(self, sql: str) -> int:
        with self._reading() as conn:
            row = conn.execute(sql).fetchone()
        return -1 if row[0] is None else int(row[0])

    def max_numeric_id(self) -> int:
        """The largest id that is a whole number, or -1: new default ids continue after it."""
        return self._one("SELECT max(CAST(id AS INTEGER)) FROM documents WHERE id NOT GLOB '*[^0-9]*' AND id != ''")

    def max_position(self) -> int:
        return self._one("SELECT max(position) FROM documents")

    def live_positions(self) -> list[int]:
        with self._reading() as conn:
            return [p for (p,) in conn.execute("SELECT position FROM documents ORDER BY position")]

    def __iter__(self) -> Iterator[tuple[str, str, dict]]:
        """(id, text, metadata) of every live document, in position order, ``PAGE`` rows a
        statement so that memory stays flat however many there are."""
        after = -1
        while True:
            with self._reading() as conn:
                rows = conn.execute("SELECT position, id, text, metadata FROM documents WHERE position > ? "
                                    "ORDER BY position LIMIT ?", (after, PAGE)).fetchall()
            yield from ((i, t, json.loads(m)) for _, i, t, m in rows)
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    # -- changes (in memory until the index is saved) -------------------------------------
    def insert(self, start: int, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict]) -> None:
        with self._lock:
            self._selections.clear()
            conn = self._writing()
            with conn:
                _insert(conn, start, ids, texts, metadata)
            self._count += len(ids)

    def delete(self, positions: Sequence[int]) -> None:
        with self._lock:
            self._selections.clear()
            conn = self._writing()
            with conn:
                for chunk in _chunks([int(p) for p in positions]):
                    conn.execute(f"DELETE FROM documents WHERE position IN ({','.join('?' * len(chunk))})", chunk)
            self._count = conn.execute("SELECT count(*) FROM documents").fetchone()[0]

    def renumber(self) -> None:
        """Give live documents the positions 0, 1, … in their current order (for ``compact``)."""
        with self._lock:
            self._selections.clear()
            conn = self._writing()
            with conn:
                conn.execute("CREATE TABLE compacted AS SELECT row_number() OVER (ORDER BY position) - 1 AS position, "
                             "id, text, metadata FROM documents")
                conn.execute("DROP TABLE documents")
                conn.execute(SCHEMA)
                conn.execute("INSERT INTO documents SELECT * FROM compacted")
                conn.execute("DROP TABLE compacted")
