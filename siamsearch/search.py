"""``SearchIndex``: encode a corpus, find candidates with FAISS, rank them by the exact score.

The one class users hold; the work is done by one module per concern:

* ``query.py``: encode → FAISS candidates → exact exp(-L1) re-rank → hits;
* ``mutations.py``: add, upsert, remove, compact (in memory until saved);
* ``index_folder.py``: the folder on disk (manifest, generations, save, load, checks);
* ``kinds.py`` / ``choice.py``: the FAISS index kinds, and which one ``kind="auto"`` picks.

Threads: any number may search one index at once (``search``, ``search_batch``, reading
documents); a change waits for the searches under way and holds the next ones back until it
is done, so a search sees the index before or after a change, never half of one. Another
process's commit is seen through ``is_stale`` and ``reload``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import frames, index_folder, mutations, query
from .choice import DEFAULT_RERANK_FACTOR, check_options, resolve
from .documents import Document, Documents
from .encoder import Encoder
from .errors import IndexDirectoryError, InputError
from .filters import Where
from .fusion import NO_LEXICAL_PART, Fusion, check_mode
from .kinds import IndexKind
from .lexical import LexicalIndex, Statistics
from .mutations import documents_from
from .progress import Progress
from .query import Hit, Observe
from .rwlock import ReadWriteLock
from .shard_map import SHARD_MAP, is_sharded, read_map
from .shards import ShardedIndex
from .state import IndexState

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Document", "Hit", "SearchIndex"]


class SearchIndex:
    """A searchable corpus: documents, their encodings, a FAISS index and the encoder.

    Example: ``idx = SearchIndex.build(texts, Encoder.load()); idx.search("退款多久到账")``."""

    def __init__(self, encoder: Encoder, state: IndexState, origin: tuple[Path, int] | None = None):
        self.encoder = encoder
        self._state = state
        self._origin = origin  # (directory, generation) this state was loaded from or saved to
        self._lock = ReadWriteLock()
        self._saving = threading.Lock()

    def __len__(self) -> int:
        return len(self._state)

    def __repr__(self) -> str:
        where = "unsaved" if self.path is None else f"path={str(self.path)!r}, generation={self.generation}"
        return (f"SearchIndex(documents={len(self):,}, kind={self.kind!r}, encoder={self.encoder.fingerprint[:12]!r}, "
                f"{where})")

    @property
    def spec(self) -> IndexKind:
        """The index kind with its parameters (``kinds.py``), as the manifest records them."""
        return self._state.kind

    @property
    def kind(self) -> str:
        return self._state.kind.name

    @property
    def rerank_factor(self) -> int:
        return self._state.rerank_factor

    @property
    def vectors(self) -> np.ndarray:
        """(rows, dim) float32 encodings, tombstones' rows included (a copy when rows were added
        to a loaded index since it was loaded or last compacted; else memory-mapped if loaded so)."""
        return self._state.all_vectors()

    @property
    def rows(self) -> int:
        """Vectors held, tombstones included."""
        return self._state.rows

    @property
    def tombstones(self) -> int:
        return self._state.tombstones

    # -- generations -------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        """The folder this state was loaded from or last saved to (None: never saved)."""
        return None if self._origin is None else self._origin[0]

    @property
    def generation(self) -> int | None:
        """The committed generation this state was loaded from or last saved as (None: never saved)."""
        return None if self._origin is None else self._origin[1]

    def is_stale(self) -> bool:
        """Whether the folder has committed a newer generation than this state (another process
        wrote it): one small file read, cheap enough to call before every request.

        Example: ``if idx.is_stale(): idx = idx.reload()``."""
        if self._origin is None:
            return False
        return index_folder.committed_generation(self._origin[0]) != self._origin[1]

    def reload(self, mmap: bool = False) -> SearchIndex:
        """The folder's committed generation, as a new index; this one is left as it is, so
        that searches under way finish on it and a server can swap the two in one assignment.

        Example: ``idx = idx.reload()``."""
        if self._origin is None:
            raise InputError("this index was never saved or loaded, so there is nothing to reload", argument="path")
        return SearchIndex.load(self._origin[0], mmap=mmap)

    # -- documents ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Document]:
        """Every live document, in position order (read in pages, so memory stays flat; a
        change made in this process while iterating may show partway)."""
        for doc_id, text, metadata in self._state.documents:
            yield Document(doc_id, text, metadata)

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or None.

        Example: ``idx.get("faq-001").text``."""
        with self._lock.reading():
            documents = self._state.documents
            position = documents.positions([str(doc_id)]).get(str(doc_id))
            found = None if position is None else documents.get([position]).get(position)
        return None if found is None else Document(*found)

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` this index holds, in one lookup. Example: ``"faq-001" in idx.existing(["faq-001"])``."""
        with self._lock.reading():
            return set(self._state.documents.positions([str(i) for i in ids]))

    def max_numeric_id(self) -> int:
        """The largest id that is a whole number (-1 if none): ``add`` without ids continues after it.

        Example: ``idx.max_numeric_id() + 1`` (the id ``idx.add(["新问题"])`` gives)."""
        with self._lock.reading():
            return self._state.documents.max_numeric_id()

    # -- building and changing ---------------------------------------------------------
    @classmethod
    def build(cls, texts: Sequence[str] | pd.DataFrame, encoder: Encoder, ids: Sequence[str] | None = None,
              metadata: Sequence[dict] | None = None, kind: str = "auto", max_memory: int | None = None,
              rerank_factor: int = DEFAULT_RERANK_FACTOR, progress: Progress | None = None,
              text_column: str | None = None, id_column: str | None = None, **params: int) -> SearchIndex:
        """Encode ``texts`` and index them. ``ids`` default to "0", "1", …; ``params`` are the
        kind's parameters (``kinds.py``); ``kind="auto"`` chooses from the corpus size and
        ``max_memory`` (bytes, see choice.py) and keeps the parameters that kind takes.
        ``texts`` may be a DataFrame: its ``text_column`` ("text"), its ``id_column`` ("id" if
        present) and every other column as metadata, read as a CSV file is (blank texts skipped).
        Example: ``SearchIndex.build(["怎么退货", "运费谁出"], Encoder.load())``,
        ``SearchIndex.build(df, enc, text_column="question", id_column="faq_id")``."""
        texts, ids, metadata = documents_from(texts, ids, metadata, text_column, id_column)
        if isinstance(texts, str):
            raise InputError("texts must be a list of documents, not one string", argument="texts")
        if not texts:
            raise InputError("the corpus is empty: nothing to index", argument="texts")
        check_options(kind, rerank_factor, params)
        spec = resolve(kind, len(texts), encoder.dim, max_memory, params)
        state = IndexState(spec, None, np.empty((0, encoder.dim), np.float32), Documents.create(), rerank_factor,
                           lexical=LexicalIndex.of([]))
        index = cls(encoder, state)
        index.add(texts, ids, metadata, progress)
        return index

    def add(self, texts: Sequence[str] | pd.DataFrame, ids: Sequence[str] | None = None,
            metadata: Sequence[dict] | None = None, progress: Progress | None = None,
            text_column: str | None = None, id_column: str | None = None) -> list[str]:
        """Add new documents (a list, or a DataFrame as in ``build``); an id that already exists
        is an error (see ``upsert``). Returns the ids. Example: ``idx.add(["新问题"], ids=["q-201"])``."""
        texts, ids, metadata = documents_from(texts, ids, metadata, text_column, id_column)
        with self._lock.writing():
            return mutations.add(self._state, self.encoder, texts, ids, metadata, progress)

    def upsert(self, texts: Sequence[str] | pd.DataFrame, ids: Sequence[str] | None = None,
               metadata: Sequence[dict] | None = None, progress: Progress | None = None,
               text_column: str | None = None, id_column: str | None = None) -> int:
        """Add documents (a list, or a DataFrame with an id column), replacing those whose id
        exists. Returns how many were replaced. Example: ``idx.upsert(["改过的问题"], ids=["q-17"])``."""
        texts, ids, metadata = documents_from(texts, ids, metadata, text_column, id_column)
        with self._lock.writing():
            return mutations.upsert(self._state, self.encoder, texts, ids, metadata, progress)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id; an unknown id is an error and then nothing is removed.

        Example: ``idx.remove(["faq-001", "faq-002"])``."""
        with self._lock.writing():
            return mutations.remove(self._state, ids)

    def compact(self, lexical: bool = False) -> int:
        """Drop tombstones: rebuild FAISS from the live vectors (no re-encoding). Returns how many.
        ``lexical``: also build the lexical index an index written before it existed lacks.

        Example: ``idx.compact(); idx.save("indexes/faq")``."""
        with self._lock.writing():
            return self._state.compact(lexical)

    @property
    def has_lexical(self) -> bool:
        """Whether lexical and hybrid searches are possible (an index written before they
        existed has no lexical part until ``compact(lexical=True)``)."""
        return self._state.lexical is not None

    @property
    def dense_only(self) -> str | None:
        """Why this index answers dense searches only (None: every mode), for error messages."""
        return None if self.has_lexical else NO_LEXICAL_PART

    # -- search ------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, where: Where | None = None, min_match: float | None = None,
               mode: str = "dense", fusion: Fusion | None = None) -> list[Hit]:
        """Example: ``idx.search("退款多久到账", k=5, where={"topic": "退款"})``,
        ``idx.search("iPhone 15 退货", mode="hybrid")`` (see ``search_batch``)."""
        return self.search_batch([query], k, where, min_match=min_match, mode=mode, fusion=fusion)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, where: Where | None = None,
                     observe: Observe | None = None, min_match: float | None = None, mode: str = "dense",
                     fusion: Fusion | None = None) -> list[list[Hit]]:
        """Top-k hits for each query, ranked by exact exp(-L1), ties by id (``query.py``).

        ``where`` keeps the documents whose metadata match it, before ranking (``filters.py``):
        ``{"topic": "订单"}``, or ``{"topic": ["订单", "退款"], "lang": "zh"}`` (any of a list, all fields).
        ``observe(stage, seconds)`` is told how long each stage took (e.g. for latency metrics).
        ``min_match`` keeps only hits at least that likely to mean the same as the query
        (``Hit.match``, the model's calibration), so fewer than ``k`` may come back.
        ``mode``: "dense" ranks by the model's score; "lexical" by BM25 over character terms
        (``lexical.py``); "hybrid" takes candidates from both and orders them by ``fusion``
        (``fusion.py``; default: the model's fitted one, else reciprocal rank fusion). In every
        mode a hit's ``score`` is the model's exact exp(-L1) for the pair; lexical and hybrid hits
        add ``lexical`` (BM25) and ``rank_score`` (what they are ordered by).

        Example: ``idx.search_batch(["退款多久到账", "怎么开发票"], k=5)``.

        """
        request = query.Request.checked(queries, k, where, min_match, mode, self.encoder, self.dense_only)
        return self.answer(request, observe, fusion)

    def answer(self, request: query.Request, observe: Observe | None = None,
               fusion: Fusion | None = None, encoded: np.ndarray | None = None) -> list[list[Hit]]:
        """``search_batch``'s hits for a request it has checked already (``query.Request.checked``),
        so that a caller who checks each request before batching them (a service's coalescer)
        does not check them twice; ``encoded``: the queries' vectors if the caller has them
        (``shards.ShardedIndex`` encodes once for its shards). Example: ``idx.answer(
        Request.checked(["退款"], 5, None, None, "dense", idx.encoder, idx.dense_only))``."""
        with self._lock.reading():
            return query.search(self._state, self.encoder, request, observe, fusion, encoded)

    def lexical_statistics(self, queries: Sequence[str]) -> list[Statistics]:
        """Each query's BM25 counts over this index's live documents: summed over the shards of
        one corpus, they make each shard score BM25 as one index would (``shards.py``).
        Example: ``idx.lexical_statistics(["退款"])[0].documents == len(idx)``."""
        texts = query.checked_queries(queries)
        check_mode("lexical", self.dense_only)
        with self._lock.reading():
            return [self._state.lexical.statistics(text) for text in texts]

    def candidate_hits(self, request: query.Request, observe: Observe | None = None,
                       encoded: np.ndarray | None = None,
                       statistics: Sequence[Statistics] | None = None) -> list[list[Hit]]:
        """Each query's lexical or hybrid candidates, every one a hit scored exactly by both
        sides, unordered, BM25 by ``statistics`` if given (``query.candidate_hits``): what a
        sharded index merges with ``query.fused``. ``observe`` is not told stages (the caller
        times the call). Example: ``idx.candidate_hits(Request.checked(["退款"], 5, None, None,
        "hybrid", idx.encoder, idx.dense_only))``."""
        with self._lock.reading():
            return query.candidate_hits(self._state, self.encoder, request, encoded, statistics)

    def hybrid_pools(self, queries: Sequence[str], k: int = 10) -> list[query.Pool]:
        """Each query's hybrid candidates with both exact scores, before any fusion orders them
        (``Pool.ranked(fusion, k, calibration)`` is then ``search(mode="hybrid")``'s answer): so
        that fitting can try many fusions on one set of candidates (``fusion_fit.py``). Example:
        ``idx.hybrid_pools(["退款多久到账"])[0].ranked(Reciprocal(), 10, idx.encoder.calibration)``."""
        with self._lock.reading():
            return query.pools(self._state, self.encoder, queries, k)

    def count(self, where: Where | None = None) -> int:
        """How many documents ``where`` keeps (all of them without a filter); an
        ``UnknownFieldError`` when it names a field no document has. Why: an empty answer to a
        filtered search is either "nothing matches the filter" or "nothing ranked"; this tells
        them apart. Example: ``idx.count({"topic": "退款"})``."""
        with self._lock.reading():
            return query.matching(self._state, where)

    def search_frame(self, queries: Sequence[str], k: int = 10, where: Where | None = None,
                     min_match: float | None = None, mode: str = "dense") -> pd.DataFrame:
        """``search_batch`` as a tidy DataFrame: query, rank, id, text, score, match, then one
        column per metadata field. Example: ``idx.search_frame(["退款多久到账", "怎么开发票"], k=3)``."""
        return frames.hits_frame(queries, self.search_batch(queries, k, where, min_match=min_match, mode=mode))

    # -- on disk -----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Commit this state as the next generation of ``path`` (see ``index_folder.py``).

        If this index was loaded from ``path`` and another writer has committed since, the
        save is refused rather than silently undoing that writer's changes.
        Example: ``idx.save("indexes/faq")``.
        """
        path = Path(path)
        # searches go on while it is written; changes wait; another save of this index waits its turn, since a
        # save moves the state's base and this index's generation
        with self._saving, self._lock.reading():
            loaded = self.generation if self.path == path.resolve() else None
            generation = index_folder.save(self._state, self.encoder, path, loaded)
            self._origin = (path.resolve(), generation)

    @classmethod
    def _load_sharded(cls, path: Path, encoder: Encoder | None, mmap: bool) -> ShardedIndex:
        """The shard map, then every shard with one encoder, each checked against the map's."""
        found = read_map(path)
        shards: list[SearchIndex] = []
        for folder in found["folders"]:
            shard = cls.load(path / folder, encoder or (shards[0].encoder if shards else None), mmap)
            if shard.encoder.fingerprint != found["encoder_fingerprint"]:
                raise IndexDirectoryError.damaged(path, f"{folder} was built with another encoder than {SHARD_MAP} "
                                                        "names")
            shards.append(shard)
        return ShardedIndex(shards, found, path)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None, mmap: bool = False) -> SearchIndex | ShardedIndex:
        """Open an index folder. If ``encoder`` is given it must be the one the index was built with.
        A sharded folder (``shards.py``) opens as a ``ShardedIndex``, searched as one index.

        ``mmap`` leaves the FAISS data on disk, paged in as searches touch it, so a large index
        opens in milliseconds (and is hashed only up to ``index_folder.VERIFY_ALL_MAX_BYTES``).
        A mapped index can still be changed; it is copied into memory first.
        Example: ``SearchIndex.load("indexes/faq", mmap=True)``.
        """
        if is_sharded(path):
            return cls._load_sharded(Path(path).resolve(), encoder, mmap)
        state, encoder, generation = index_folder.load(path, encoder, mmap)
        return cls(encoder, state, (Path(path).resolve(), generation))
