"""The documents of an index, in SQLite: position (the FAISS label) → id, text, metadata.

Positions are rows of the vector matrix and are never reused until ``compact``: removing
a document deletes its row here (a tombstone: its vector stays in FAISS and is filtered
out at query time).

Two layers, read as one through the temporary view ``live``: a **base** file (attached as
``base``, read-only, shared unchanged by the generations that follow it) and the **delta**
(the ``main`` schema): ``documents`` added since the base and ``removed``, the base
positions removed since. A commit of a few changes writes only the delta (``save_delta``),
so it costs the change, not the index; ``save`` writes both layers as one new base. Every
position in the delta is above every position in the base, since rows are append-only.
While an index is built or changed the delta lives in memory; a loaded delta file is
opened read-only and copied to memory (it is small) only when first changed. A table
built in memory has an empty base.

Reads are safe from many threads: files are opened read-only as a pool of connections,
each used by one thread at a time (SQLite connections must not be shared unguarded). They
are all opened with the index, while its generation is locked against removal, so they keep
reading that generation's files after a writer commits a newer one and deletes it (POSIX
keeps an open file readable). An in-memory delta, which has one connection, is read and
changed under a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .filters import cache_key, where_sql

SCHEMA = ("CREATE TABLE {schema}.documents (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
          "text TEXT NOT NULL, metadata TEXT NOT NULL)")
REMOVED_SCHEMA = "CREATE TABLE main.removed (position INTEGER PRIMARY KEY)"
LIVE_VIEW = ("CREATE TEMP VIEW live AS SELECT * FROM base.documents WHERE position NOT IN "
             "(SELECT position FROM main.removed) UNION ALL SELECT * FROM main.documents")
"""The live documents, base then delta. SQLite pushes a ``WHERE`` on position or id into both
sides (their primary key and id index), so a lookup costs what it costs on one table."""
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


@dataclass(frozen=True)
class Document:
    """One stored document. Example: ``doc = idx.get("faq-001"); doc.text, doc.metadata``."""

    id: str
    text: str
    metadata: dict = field(default_factory=dict)


class DocumentsFile:
    """A documents table written straight to its file a chunk at a time, for a streamed build:
    memory holds SQLite's page cache, not the corpus. No journal: the file is in a staging
    folder that is deleted if the build fails, and flushed to disk before it is committed."""

    def __init__(self, path: Path):
        self._conn = sqlite3.connect(path)
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._conn.execute(SCHEMA.format(schema="main"))
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


def _connect(delta: Path | None, base: Path | None, writable: bool = False) -> sqlite3.Connection:
    """A connection whose ``main`` is the delta and whose ``base`` is the base file (read-only)
    or an empty table in memory, with the ``live`` view over both. The delta is the file
    read-only, or a copy of it in memory when ``writable`` (a new empty one without a file)."""
    if delta is not None and not writable:
        conn = sqlite3.connect(f"{delta.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        if delta is None:
            conn.execute(SCHEMA.format(schema="main"))
            conn.execute(REMOVED_SCHEMA)
        else:
            source = sqlite3.connect(f"{delta.resolve().as_uri()}?mode=ro", uri=True)
            try:
                source.backup(conn)
            finally:
                source.close()
    _attach_base(conn, base)
    return conn


def _attach_base(conn: sqlite3.Connection, base: Path | None) -> None:
    if base is None:
        conn.execute("ATTACH ':memory:' AS base")
        conn.execute(SCHEMA.format(schema="base"))
    else:
        conn.execute("ATTACH ? AS base", (f"{base.resolve().as_uri()}?mode=ro",))
    conn.execute(LIVE_VIEW)


class Documents:
    def __init__(self, memory: sqlite3.Connection | None, readers: Sequence[sqlite3.Connection] = (),
                 base: Path | None = None, spare: sqlite3.Connection | None = None, count: int | None = None):
        self._memory = memory  # the writable in-memory delta, or None while reading files
        self._spare = spare  # what becomes ``_memory`` on the first change: opened with the files
        self._base = base  # the base file, or None: an empty base
        self._lock = threading.Lock()
        self._readers = [(threading.Lock(), conn) for conn in readers]
        self._selections: dict[tuple, np.ndarray] = {}
        self._selections_lock = threading.Lock()
        if count is None:
            with self._reading() as conn:
                count = _count(conn)
        self._count = count

    @classmethod
    def create(cls) -> Documents:
        return cls(_connect(None, None))

    @classmethod
    def open(cls, base: Path, delta: Path | None = None, count: int | None = None) -> Documents:
        """Open a saved table read-only: ``READERS`` connections, each with the files open already,
        and one more holding the delta in memory for the first change. All are opened now,
        because a writer may remove these files once they are open (see the module doc).
        ``count``: the live documents, when known (else counted: a scan of the base)."""
        readers = [_connect(delta, base) for _ in range(READERS)]
        spare = _connect(delta, base, writable=True)
        for conn in (*readers, spare):
            conn.execute("SELECT 1 FROM live LIMIT 1").fetchone()  # opens the files now (a count would scan them)
        return cls(None, readers, base, spare, count)

    @property
    def delta_count(self) -> int:
        """Documents added and base documents removed since the base: what ``save_delta`` writes."""
        with self._reading() as conn:
            return conn.execute("SELECT (SELECT count(*) FROM main.documents) + "
                                "(SELECT count(*) FROM main.removed)").fetchone()[0]

    def _reading(self) -> _Reading:
        return _Reading(self)

    def save(self, path: Path) -> None:
        """Write every live document as one table (a base for later deltas)."""
        with self._reading() as conn:
            if self._base is None:  # everything is in main: a page copy is fastest
                target = sqlite3.connect(path)
                try:
                    conn.backup(target)
                finally:
                    target.close()
                return
            conn.execute("ATTACH ? AS target", (str(path),))
            try:
                with conn:
                    conn.execute(SCHEMA.format(schema="target"))
                    conn.execute("INSERT INTO target.documents SELECT * FROM live ORDER BY position")
            finally:
                conn.execute("DETACH target")

    def save_delta(self, path: Path) -> None:
        """Write the delta alone: the base file stays as it is, shared."""
        target = sqlite3.connect(path)
        try:
            with self._reading() as conn:
                conn.backup(target)  # main: the delta
        finally:
            target.close()

    def __len__(self) -> int:
        return self._count

    def _writing(self) -> sqlite3.Connection:
        """The in-memory delta: the spare connection opened with the files (or a new empty table)."""
        if self._memory is None:
            self._memory, self._spare = self._spare, None
        return self._memory

    def get(self, positions: Sequence[int]) -> dict[int, tuple[str, str, dict]]:
        """position → (id, text, metadata), for the positions that hold a live document."""
        return {p: (i, t, json.loads(m)) for p, i, t, m in self._at(positions, "id, text, metadata")}

    def ids(self, positions: Sequence[int]) -> dict[int, str]:
        """position → id, for the positions that hold a live document: ``get`` without reading
        texts and decoding metadata, for candidates most of which will not be shown."""
        return dict(self._at(positions, "id"))

    def _at(self, positions: Sequence[int], columns: str) -> list[tuple]:
        """(position, *columns) of the live documents at these positions."""
        found = []
        with self._reading() as conn:
            for chunk in _chunks([int(p) for p in positions]):
                found += conn.execute(f"SELECT position, {columns} FROM live WHERE position IN "
                                      f"({','.join('?' * len(chunk))})", chunk).fetchall()
        return found

    def positions(self, ids: Sequence[str]) -> dict[str, int]:
        """id → position, for the ids that exist."""
        found = {}
        with self._reading() as conn:
            for chunk in _chunks(list(ids)):
                rows = conn.execute(f"SELECT id, position FROM live WHERE id IN ({','.join('?' * len(chunk))})",
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
                rows = conn.execute(f"SELECT position FROM live WHERE {clause} ORDER BY position", params)
                found = np.fromiter((p for (p,) in rows), dtype=np.int64)
            with self._selections_lock:
                if len(self._selections) >= SELECTIONS:
                    self._selections.pop(next(iter(self._selections)))
                self._selections[key] = found
        return found

    def missing_fields(self, fields: Iterable[str]) -> list[str]:
        """The fields of ``fields`` that no live document's metadata has (each a scan that stops
        at the first document holding it: asked only when a filter selected nothing)."""
        missing = []
        with self._reading() as conn:
            for field in fields:
                if conn.execute("SELECT 1 FROM live WHERE json_type(metadata, ?) IS NOT NULL LIMIT 1",
                                [f'$."{field}"']).fetchone() is None:
                    missing.append(field)
        return missing

    def _one(self, sql: str) -> int:
        with self._reading() as conn:
            row = conn.execute(sql).fetchone()
        return -1 if row[0] is None else int(row[0])

    def max_numeric_id(self) -> int:
        """The largest id that is a whole number, or -1: new default ids continue after it."""
        return self._one("SELECT max(CAST(id AS INTEGER)) FROM live WHERE id NOT GLOB '*[^0-9]*' AND id != ''")

    def max_position(self) -> int:
        """The largest position either layer holds, removed ones included (a bound for checks;
        the maximum over ``live`` would scan every row)."""
        return self._one("SELECT max(coalesce((SELECT max(position) FROM base.documents), -1), "
                         "coalesce((SELECT max(position) FROM main.documents), -1))")

    def delta_texts(self) -> tuple[list[int], list[str]]:
        """Positions and texts of the documents added since the base (the delta layer's)."""
        with self._reading() as conn:
            rows = conn.execute("SELECT position, text FROM main.documents ORDER BY position").fetchall()
        return [p for p, _ in rows], [t for _, t in rows]

    def live_positions(self) -> list[int]:
        with self._reading() as conn:
            return [p for (p,) in conn.execute("SELECT position FROM live ORDER BY position")]

    def __iter__(self) -> Iterator[tuple[str, str, dict]]:
        """(id, text, metadata) of every live document, in position order, ``PAGE`` rows a
        statement so that memory stays flat however many there are."""
        after = -1
        while True:
            with self._reading() as conn:
                rows = conn.execute("SELECT position, id, text, metadata FROM live WHERE position > ? "
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
        """Delta documents are deleted; base ones are recorded as removed."""
        with self._lock:
            self._selections.clear()
            conn = self._writing()
            gone = 0  # counted from the changes, not by a scan of the base
            with conn:
                for chunk in _chunks([int(p) for p in positions]):
                    marks = ",".join("?" * len(chunk))
                    gone += conn.execute(f"DELETE FROM main.documents WHERE position IN ({marks})", chunk).rowcount
                    gone += conn.execute(f"INSERT OR IGNORE INTO main.removed SELECT position FROM base.documents "
                                         f"WHERE position IN ({marks})", chunk).rowcount
            self._count -= gone

    def renumber(self) -> None:
        """Give live documents the positions 0, 1, … in their current order, all in memory with
        no base (for ``compact``)."""
        with self._lock:
            self._selections.clear()
            conn = self._writing()
            with conn:
                conn.execute("CREATE TABLE main.compacted AS SELECT row_number() OVER (ORDER BY position) - 1 "
                             "AS position, id, text, metadata FROM live")
                conn.execute("DROP TABLE main.documents")
                conn.execute("DELETE FROM main.removed")
                conn.execute(SCHEMA.format(schema="main"))
                conn.execute("INSERT INTO main.documents SELECT * FROM main.compacted")
                conn.execute("DROP TABLE main.compacted")
            conn.execute("DROP VIEW live")
            conn.execute("DETACH base")
            _attach_base(conn, None)
            self._base = None


def _count(conn: sqlite3.Connection) -> int:
    """Live documents, counted per layer (a count over ``live`` would test every base row against ``removed``)."""
    return conn.execute("SELECT (SELECT count(*) FROM base.documents) - (SELECT count(*) FROM main.removed) + "
                        "(SELECT count(*) FROM main.documents)").fetchone()[0]
