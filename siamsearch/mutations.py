"""Changes to an index in memory: add, upsert, remove, compact.

They become durable when the index is saved (``index_folder.save``). Vectors are
append-only: a removed or replaced document leaves a tombstone (its row stays in FAISS,
which cannot delete from HNSW, and is filtered before re-ranking) until ``compact``
rebuilds FAISS from the live vectors, without re-encoding. A loaded index keeps its base
as the files hold it: new vectors go to the state's delta (``state.py``), so a save writes
only the change. Every change encodes first, the step that can fail or be interrupted, and
only then touches the state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .encoder import Encoder
from .errors import InputError, NotFoundError
from .lexical import LexicalIndex
from .state import IndexState
from .text import is_blank, normalize

DELTA_MAX_ROWS = 10_000
"""Rows a loaded index keeps in its delta (written by every save, searched exactly) before
they are folded into FAISS and the next save writes a new base. The exact search costs each
query about +0.37 ms at 10,000 rows, +0.83 ms at 20,000 (median, one query at a time, against
a 300k-document IVF index that takes 1.4 ms; 2026-12-03, Xeon, 2 cores); a fold costs a full
rewrite of the index once per that many added rows. A delta also never outgrows its base, so
a small index folds often and cheaply."""

BuildProgress = Callable[[str, int, int], None]
"""Called with a stage ("encode" or "index"), the documents it just finished, and the total."""


def check_id(doc_id: object) -> str:
    doc_id = str(doc_id)
    if not doc_id.strip() or any(c in doc_id for c in "\t\n\r\x00"):
        raise InputError(f"document id {doc_id!r} is blank or holds a tab, line break or NUL; ids must be one line",
                         argument="ids")
    return doc_id


def checked(state: IndexState, texts: Sequence[str], ids: Sequence[str] | None,
            metadata: Sequence[dict] | None) -> tuple[list[str], list[str], list[dict]]:
    """Texts normalized, ids (new numeric ones after the largest if none are given) and
    metadata, or an InputError naming the first document at fault."""
    if isinstance(texts, str):
        raise InputError("texts must be a list of documents, not one string", argument="texts")
    texts = [normalize(t) if isinstance(t, str) else t for t in texts]
    if ids is None:
        first = state.documents.max_numeric_id() + 1
        ids = [str(first + i) for i in range(len(texts))]
    ids = [check_id(i) for i in ids]
    metadata = [{} for _ in texts] if metadata is None else [dict(m) for m in metadata]
    if not len(ids) == len(metadata) == len(texts):
        raise InputError(f"got {len(texts)} texts, {len(ids)} ids and {len(metadata)} metadata records",
                         argument="ids")
    seen: set[str] = set()
    for doc_id, text in zip(ids, texts):
        if is_blank(text):
            raise InputError(f"document {doc_id!r} is empty or whitespace only", argument="texts")
        if doc_id in seen:
            raise InputError(f"duplicate document id {doc_id!r}", argument="ids")
        seen.add(doc_id)
    return texts, ids, metadata


def add(state: IndexState, encoder: Encoder, texts: Sequence[str], ids: Sequence[str] | None,
        metadata: Sequence[dict] | None, progress: BuildProgress | None) -> list[str]:
    """Add new documents; an id that already exists is an error (see ``upsert``). Returns the ids."""
    texts, ids, metadata = checked(state, texts, ids, metadata)
    taken = state.documents.positions(ids)
    if taken:
        raise InputError(f"document id {next(iter(taken))!r} already exists; use upsert to replace it", argument="ids")
    _append(state, encoder, texts, ids, metadata, {}, progress)
    return ids


def upsert(state: IndexState, encoder: Encoder, texts: Sequence[str], ids: Sequence[str],
           metadata: Sequence[dict] | None, progress: BuildProgress | None) -> int:
    """Add documents, replacing those whose id exists. Returns how many were replaced."""
    if ids is None:
        raise InputError("upsert needs ids: they say which documents to replace", argument="ids")
    texts, ids, metadata = checked(state, texts, ids, metadata)
    replaced = state.documents.positions(ids)
    _append(state, encoder, texts, ids, metadata, replaced, progress)
    return len(replaced)


def remove(state: IndexState, ids: Sequence[str]) -> int:
    """Remove documents by id; an unknown id is an error and then nothing is removed."""
    if isinstance(ids, str):
        raise InputError("remove takes a list of ids", argument="ids")
    ids = [str(i) for i in ids]
    found = state.documents.positions(ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFoundError(f"no document with id {missing[0]!r}; nothing was removed", argument="ids")
    _delete(state, list(found.values()))
    return len(found)


def compact(state: IndexState, lexical: bool = False) -> int:
    """Drop tombstones: rebuild FAISS from the live vectors (no re-encoding). Returns how many.
    ``lexical``: build the lexical index where the state has none (an older index's)."""
    dropped = state.tombstones
    live = state.documents.live_positions()
    vectors = np.asarray(state.vectors_at(np.asarray(live, dtype=np.int64)), dtype=np.float32)
    rebuilt = state.kind.emptied(state.faiss_index)
    state.kind.add(rebuilt, vectors)
    state.documents.renumber()
    if state.lexical is not None:
        state.lexical = state.lexical.compacted(live)
    elif lexical:
        state.lexical = LexicalIndex.of([text for _, text, _ in state.documents])
    state.faiss_index, state.vectors, state.mapped = rebuilt, vectors, False
    state.delta, state.base = vectors[:0], None
    return dropped


def _append(state: IndexState, encoder: Encoder, texts: list[str], ids: list[str], metadata: list[dict],
            replaced: dict[str, int], progress: BuildProgress | None) -> None:
    def report(stage: str) -> Callable[[int], None] | None:
        return None if progress is None else (lambda n: progress(stage, n, len(texts)))

    vectors = encoder.encode(texts, progress=report("encode"))
    start = state.rows
    into_delta = state.base is not None and len(state.delta) + len(vectors) <= min(DELTA_MAX_ROWS, state.base_rows)
    if state.lexical is not None:
        state.lexical = state.lexical.added(texts, start, into_delta)
    if into_delta:
        state.delta = np.concatenate([state.delta, vectors])  # the save writes the delta alone
        if (indexed := report("index")) is not None:
            indexed(len(texts))
    else:
        if state.faiss_index is None:
            state.faiss_index = state.kind.create(encoder.dim, vectors)
        elif state.mapped:
            state.faiss_index, state.mapped = state.kind.in_memory(state.faiss_index), False
        if len(state.delta):
            _fold_delta(state)
        state.base = None
        state.kind.add(state.faiss_index, vectors, progress=report("index"))
        state.vectors = vectors if start == 0 else np.concatenate([np.asarray(state.vectors, np.float32), vectors])
    _delete(state, list(replaced.values()))
    state.documents.insert(start, ids, texts, metadata)


def _delete(state: IndexState, positions: list[int]) -> None:
    state.documents.delete(positions)
    if state.lexical is not None and positions:
        state.lexical = state.lexical.without(positions)


def _fold_delta(state: IndexState) -> None:
    """Add the delta's rows to the FAISS index (already in memory) and the vectors."""
    state.kind.add(state.faiss_index, state.delta)
    state.vectors = np.concatenate([np.asarray(state.vectors, np.float32), state.delta])
    state.delta = state.delta[:0]
