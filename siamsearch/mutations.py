"""Changes to an index in memory: add, upsert and remove validate their input and encode,
then hand the state's transition to ``IndexState`` (``state.py``; ``compact`` is one of
its transitions, with nothing to validate or encode).

They become durable when the index is saved (``index_folder.save``). Vectors are
append-only: a removed or replaced document leaves a tombstone (its row stays in FAISS,
which cannot delete from HNSW, and is filtered before re-ranking) until ``compact``
rebuilds FAISS from the live vectors, without re-encoding. A loaded index keeps its base
as the files hold it: new vectors go to the state's delta, so a save writes only the
change. Every change encodes first, the step that can fail or be interrupted, and only
then touches the state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import frames
from .data import read_corpus
from .encoder import Encoder
from .errors import InputError, NotFoundError
from .progress import Progress
from .state import IndexState
from .text import is_blank, normalize

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("siamsearch")

DELTA_MAX_ROWS = 10_000
"""Rows a loaded index keeps in its delta (written by every save, searched exactly) before
they are folded into FAISS and the next save writes a new base. The exact search costs each
query about +0.37 ms at 10,000 rows, +0.83 ms at 20,000 (median, one query at a time, against
a 300k-document IVF index that takes 1.4 ms; 2026-12-03, Xeon, 2 cores); a fold costs a full
rewrite of the index once per that many added rows. A delta also never outgrows its base, so
a small index folds often and cheaply."""



def documents_from(texts: Sequence[str] | pd.DataFrame, ids: Sequence[str] | None, metadata: Sequence[dict] | None,
                   text_column: str | None, id_column: str | None) -> tuple[Sequence[str], Sequence[str] | None,
                                                                          Sequence[dict] | None]:
    """Texts, ids and metadata from a list or a DataFrame (whose columns carry all three)."""
    if not frames.is_frame(texts):
        if text_column or id_column:
            raise InputError("text_column and id_column choose a DataFrame's columns; texts is not a DataFrame",
                             argument="text_column" if text_column else "id_column")
        return texts, ids, metadata
    if ids is not None or metadata is not None:
        raise InputError("a DataFrame carries its ids and metadata in its columns: choose them with id_column, "
                         "and leave ids and metadata out", argument="ids" if ids is not None else "metadata")
    corpus = read_corpus(texts, text_column, id_column)
    if corpus.skipped:
        logger.warning("skipped %d blank documents of the DataFrame", corpus.skipped)
    return corpus.texts, corpus.ids if corpus.ids_given else None, corpus.metadata


def check_id(doc_id: object) -> str:
    doc_id = str(doc_id)
    if not doc_id.strip() or any(c in doc_id for c in "\t\n\r\x00"):
        raise InputError(f"document id {doc_id!r} is blank or holds a tab, line break or NUL; ids must be one line",
                         argument="ids")
    return doc_id


def checked(state: IndexState | None, texts: Sequence[str], ids: Sequence[str] | None,
            metadata: Sequence[dict] | None) -> tuple[list[str], list[str], list[dict]]:
    """Texts normalized, ids (new numeric ones after the state's largest if none are given;
    without a state they must be) and metadata, or an InputError naming the first document at fault."""
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
        metadata: Sequence[dict] | None, progress: Progress | None) -> list[str]:
    """Add new documents; an id that already exists is an error (see ``upsert``). Returns the ids."""
    texts, ids, metadata = checked(state, texts, ids, metadata)
    taken = state.documents.positions(ids)
    if taken:
        raise InputError(f"document id {next(iter(taken))!r} already exists; use upsert to replace it", argument="ids")
    _append(state, encoder, texts, ids, metadata, {}, progress)
    return ids


def upsert(state: IndexState, encoder: Encoder, texts: Sequence[str], ids: Sequence[str],
           metadata: Sequence[dict] | None, progress: Progress | None) -> int:
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
    state.delete(list(found.values()))
    return len(found)


def _append(state: IndexState, encoder: Encoder, texts: list[str], ids: list[str], metadata: list[dict],
            replaced: dict[str, int], progress: Progress | None) -> None:
    def report(stage: str) -> Callable[[int], None] | None:
        return None if progress is None else (lambda n: progress(stage, n, len(texts)))

    vectors = encoder.encode(texts, progress=report("encode"))
    state.append(vectors, texts, ids, metadata, list(replaced.values()), DELTA_MAX_ROWS, progress=report("index"))
