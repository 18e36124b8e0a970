"""The documents of an index, in SQLite: position (the FAISS label) → id, text, metadata.

Positions are rows of the vector matrix and are never reused until ``compact``: removing
a document deletes its row here (a tombstone: its vector stays in FAISS and is filtered
out at query time). While an index is built or changed the table lives in memory; saving
copies it to a file with SQLite's backup API, and a loaded file is opened read-only and
copied to memory only when first changed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

SCHEMA = ("CREATE TABLE documents (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
          "text TEXT NOT NULL, metadata TEXT NOT NULL)")
CHUNK = 500  # bound parameters per statement, well under SQLite's limit


def _chunks(items: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    return (items[i : i + size] for i in range(0, len(items), size))


class Documents:
    def __init__(self, conn: sqlite3.Connection, writable: bool):
        self.conn = conn
        self.writable = writable
        self._count = conn.execute("SELECT count(*) FROM documents").fetchone()[0]

    @classmethod
    def create(cls) -> Documents:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.execute(SCHEMA)
        return cls(conn, writable=True)

    @classmethod
    def open(cls, path: Path) -> Documents:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        return cls(conn, writable=False)

    def save(self, path: Path) -> None:
        target = sqlite3.connect(path)
        try:
            self.conn.backup(target)
        finally:
            target.close()

    def __len__(self) -> int:
        return self._count

    def _make_writable(self) -> None:
        if not self.writable:
            memory = sqlite3.connect(":memory:", check_same_thread=False)
            self.conn.backup(memory)
            self.conn.close()
            self.conn, self.writable = memory, True

    def get(self, positions: Sequence[int]) -> dict[int, tuple[str, str, dict]]:
        """position → (id, text, metadata), for the positions that hold a live document."""
        found = {}
        for chunk in _chunks([int(p) for p in positions]):
            rows = self.conn.execute(
                f"SELECT position, id, text, metadata FROM documents WHERE position IN ({','.join('?' * len(chunk))})",
                chunk)
            found.update({p: (i, t, json.loads(m)) for p, i, t, m in rows})
        return found

    def positions(self, ids: Sequence[str]) -> dict[str, int]:
        """id → position, for the ids that exist."""
        found = {}
        for chunk in _chunks(list(ids)):
            rows = self.conn.execute(f"SELECT id, position FROM documents WHERE id IN ({','.join('?' * len(chunk))})",
                                     chunk)
            found.update(dict(rows))
        return found

    def max_numeric_id(self) -> int:
        """The largest id that is a whole number, or -1: new default ids continue after it."""
        row = self.conn.execute(
            "SELECT max(CAST(id AS INTEGER)) FROM documents WHERE id NOT GLOB '*[^0-9]*' AND id != ''").fetchone()
        return -1 if row[0] is None else int(row[0])

    def max_position(self) -> int:
        row = self.conn.execute("SELECT max(position) FROM documents").fetchone()
        return -1 if row[0] is None else int(row[0])

    def live_positions(self) -> list[int]:
        return [p for (p,) in self.conn.execute("SELECT position FROM documents ORDER BY position")]

    def items(self) -> list[tuple[str, str, dict]]:
        """(id, text, metadata) of every live document, in position order."""
        return [(i, t, json.loads(m)) for i, t, m in
                self.conn.execute("SELECT id, text, metadata FROM documents ORDER BY position")]

    # -- changes (in memory until the index is saved) -------------------------------------
    def insert(self, start: int, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict]) -> None:
        self._make_writable()
        with self.conn:
            self.conn.executemany("INSERT INTO documents VALUES (?, ?, ?, ?)",
                                  ((start + n, i, t, json.dumps(m, ensure_ascii=False))
                                   for n, (i, t, m) in enumerate(zip(ids, texts, metadata))))
        self._count += len(ids)

    def delete(self, positions: Sequence[int]) -> None:
        self._make_writable()
        with self.conn:
            for chunk in _chunks([int(p) for p in positions]):
                self.conn.execute(f"DELETE FROM documents WHERE position IN ({','.join('?' * len(chunk))})", chunk)
        self._count = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]

    def renumber(self) -> None:
        """Give live documents the positions 0, 1, … in their current order (for ``compact``)."""
        self._make_writable()
        with self.conn:
            self.conn.execute("CREATE TABLE compacted AS SELECT row_number() OVER (ORDER BY position) - 1 AS position, "
                              "id, text, metadata FROM documents")
            self.conn.execute("DROP TABLE documents")
            self.conn.execute(SCHEMA)
            self.conn.execute("INSERT INTO documents SELECT * FROM compacted")
            self.conn.execute("DROP TABLE compacted")
