"""A sharded index: N ordinary index folders behind one shard map, searched as one index.

Layout (``indexes/README.md`` documents the shard map field by field)::

    NAME/
      shards.json        the shard map: how many shards, their folders, how documents are
                         placed, one encoder fingerprint, the index kind, its own checksum
      quantiser.npy      IVF only: the centroids every shard's lists are built around
      shard-000/         an ordinary index folder (``index_folder.py``): every command opens it
      shard-001/
      …

A document lives in the shard ``shard_of(id)`` names, a stable hash of its id, so every
writer agrees where an id belongs without asking anyone. The build (``build_sharded``) reads
and encodes the corpus once, spilling each shard's documents and vectors to a file of its own
(``Spill``), then builds shard 0 from its file as any streamed build does, then the others
with shard 0's kind, parameters and, for IVF, its trained quantiser: the shards are copies
of one trained index holding different documents (autofaiss's distributed build), and a
query probes the same lists in each. The whole folder is staged and appears at once, so a
failed build leaves nothing.

A search encodes the query once, asks every shard for its ``k`` best by the exact score,
and merges them by that score, ties by id: each shard re-ranks its own candidates exactly
and the score is the model's exp(-L1) for the pair, so the scores of different shards are
comparable as they are, and the answer is one index's (where each shard's FAISS search finds
what one index's would; tested for every kind). A lexical or hybrid search first sums each
shard's BM25 counts for the query's terms (``lexical.Statistics``: documents, their length,
each term's document frequency), so that every shard scores BM25 as one index of them all
would; each shard then gathers its candidates of both sides, scored exactly, and the merge
keeps each side's best of them all and orders them by the fusion (``query.fused``): one
index's pool, so one index's hits, where each shard's candidate search finds what one
index's would (FAISS's, and BM25's: a key in more than ``lexical.HEAD`` of a shard's
documents is read by that shard's own best postings, so at scale the candidates can differ
from one index's). The counts and the candidates are two calls per shard; a write between
them can make the counts one commit old.

Each shard commits its own generations (a write goes to the shard that owns the id); the
sharded index's ``generation`` is their sum, which grows with every commit to any shard.
"""

from __future__ import annotations

import pickle
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from . import index_folder
from .build import Engine, Source, VectorFile, build_index, corpus_sources, make_engine
from .choice import DEFAULT_RERANK_FACTOR
from .data import CORPUS_CHUNK, Corpus
from .documents import Document
from .errors import InputError, NotFoundError, UnknownFieldError
from .filters import Where
from .fusion import NO_LEXICAL_PART, Fusion
from .kinds import IVF, IndexKind
from .lexical import Statistics
from .mutations import checked, documents_from
from .progress import Progress
from .query import Hit, Observe, Request, fused, fusion_for, likely
from .shard_map import check_shards, folder_name, shard_of, write_map
from .storage import check_output_dir, staged_directory

if TYPE_CHECKING:
    import pandas as pd

    from .encoder import Encoder

__all__ = ["BuiltShards", "ShardedIndex", "build_sharded", "merge"]
T = TypeVar("T")


class Shard(Protocol):
    """What a sharded index needs of each shard: ``SearchIndex``'s API (in one process a
    ``SearchIndex`` is the shard; a shard served elsewhere is whatever answers these)."""

    encoder: Encoder

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Document]: ...  # in one process only, as is save
    @property
    def spec(self) -> IndexKind: ...
    @property
    def rows(self) -> int: ...
    @property
    def tombstones(self) -> int: ...
    @property
    def rerank_factor(self) -> int: ...
    @property
    def generation(self) -> int | None: ...
    def is_stale(self) -> bool: ...
    def get(self, doc_id: str) -> Document | None: ...
    def existing(self, ids: list[str]) -> set[str]: ...
    def max_numeric_id(self) -> int: ...
    def add(self, texts: list[str], ids: list[str], metadata: list[dict], progress: Progress | None) -> list[str]: ...
    def upsert(self, texts: list[str], ids: list[str], metadata: list[dict], progress: Progress | None) -> int: ...
    def remove(self, ids: list[str]) -> int: ...
    def compact(self) -> int: ...  # with lexical=True too, in one process (SearchIndex.compact)
    def save(self, path: Path) -> None: ...  # a shard served elsewhere commits each change itself
    def count(self, where: Where | None) -> int: ...
    def answer(self, request: Request, observe: Observe | None, encoded: np.ndarray | None) -> list[list[Hit]]: ...
    @property
    def has_lexical(self) -> bool: ...
    def lexical_statistics(self, queries: list[str]) -> list[Statistics]: ...
    def candidate_hits(self, request: Request, observe: Observe | None, encoded: np.ndarray | None,
                       statistics: list[Statistics] | None) -> list[list[Hit]]: ...


def _of_shard(progress: Progress | None, shard: int, shards: int) -> Progress | None:
    """Each shard's stages under their own names ("index 2/4"), so their counts are not summed;
    its documents come encoded already (``Spill``), so its "encode" is a "write"."""
    if progress is None:
        return None
    return lambda stage, done, total: progress(f"{'write' if stage == 'encode' else stage} {shard + 1}/{shards}",
                                               done, total)


SPILL_DOCS = 4 * CORPUS_CHUNK
"""Documents a ``Spill`` holds in memory before it appends them to their shards' files."""


class Spill:
    """One pass over the corpus, for all the shards: each chunk's documents and vectors, split
    by ``shard_of``, appended to the file of the shard that holds them; then each shard's
    build reads its own file (``engine``). So the corpus is read and encoded once however many
    shards there are, and each shard's chunks are the corpus's chunks as that shard holds them
    (the same files, byte for byte, as a build reading the corpus for one shard would write).
    Parts are held in memory up to ``SPILL_DOCS`` documents in all, and files are opened only to
    append, so thousands of shards need no thousands of open files. The price is disk: the
    spill holds every document and vector once more until its shard is built (each file is
    removed as its shard is done)."""

    def __init__(self, folder: Path, shards: int):
        self.folder, self.shards = folder, shards
        folder.mkdir()
        self._held: list[list[tuple[Corpus, np.ndarray]]] = [[] for _ in range(shards)]
        self._count = 0

    def path(self, shard: int) -> Path:
        return self.folder / f"{folder_name(shard)}.pickle"

    def write(self, chunks: Iterator[tuple[Corpus, np.ndarray]], progress: Progress | None) -> None:
        for chunk, vectors in chunks:
            placed = np.fromiter((shard_of(i, self.shards) for i in chunk.ids), np.int64, len(chunk.ids))
            order = np.argsort(placed, kind="stable")  # each shard's rows, in corpus order
            bounds = np.searchsorted(placed[order], np.arange(self.shards + 1))
            for shard in range(self.shards):
                rows = order[bounds[shard] : bounds[shard + 1]].tolist()
                skipped = chunk.skipped if shard == 0 else 0  # blank documents are counted by shard 0 alone
                if rows or skipped:
                    self._held[shard].append((_part(chunk, rows, skipped), vectors[rows]))
                    self._count += len(rows)
            if self._count >= SPILL_DOCS:
                self._flush()
            if progress and len(chunk):
                progress("encode", len(chunk), 0)
        self._flush()

    def _flush(self) -> None:
        for shard, parts in enumerate(self._held):
            if parts:
                with self.path(shard).open("ab") as out:
                    pickle.dump(parts, out, protocol=5)
                parts.clear()
        self._count = 0

    def engine(self, shard: int, runner: Engine) -> Engine:
        """The ``Engine`` a shard's build reads its documents from (``runner`` assigns IVF lists)."""
        return _Spilled(self.path(shard), runner)


def _part(chunk: Corpus, rows: list[int], skipped: int) -> Corpus:
    return replace(chunk, ids=[chunk.ids[i] for i in rows], texts=[chunk.texts[i] for i in rows],
                   metadata=[chunk.metadata[i] for i in rows] if chunk.metadata else [],
                   lines=[chunk.lines[i] for i in rows] if chunk.lines else [], skipped=skipped)


class _Spilled:
    """An ``Engine`` over one shard's spill file: its chunks as ``Spill`` wrote them (the
    sources a build passes are those the spill was read from)."""

    def __init__(self, path: Path, runner: Engine):
        self.path, self.runner = path, runner

    def encode(self, sources: Sequence[Source], encoder: Encoder) -> Iterator[tuple[Corpus, np.ndarray]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as spilled:
            while True:
                try:
                    parts = pickle.load(spilled)  # noqa: S301 (written by this build, in its own staging folder)
                except EOFError:
                    return
                yield from parts

    def assign(self, centroids: np.ndarray, vectors: VectorFile) -> np.ndarray:
        return self.runner.assign(centroids, vectors)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class BuiltShards:
    """What ``build_sharded`` wrote."""

    path: Path
    shards: int
    documents: int
    skipped: int
    kind: IndexKind
    seconds: float
    per_shard: list[int]
    """Documents in each shard."""


def build_sharded(corpus: str | Path | Sequence[str | Path], out: str | Path, encoder: Encoder, shards: int,
                  kind: str = "auto", max_memory: int | None = None, rerank_factor: int = DEFAULT_RERANK_FACTOR,
                  text_column: str | None = None, id_column: str | None = None, engine: str | Engine = "local",
                  progress: Progress | None = None, **params: int) -> BuiltShards:
    """Encode corpus files into a new sharded index of ``shards`` shards at ``out`` (see the
    module docstring); the options are ``build.build_index``'s, ``kind="auto"`` chooses from
    shard 0's size. The corpus is read and encoded once (``Spill``), then each shard built
    from its own documents. Example:
    ``build_sharded("corpus/", "indexes/all", Encoder.load(), shards=4)``."""
    check_shards(shards)
    out = Path(out)
    check_output_dir(out, lambda _: False, "an empty folder (a sharded build writes a new one)")
    started, done, skipped, sizes = time.perf_counter(), 0, 0, []
    sources = corpus_sources(corpus, text_column, id_column)
    runner = make_engine(engine) if isinstance(engine, str) else engine
    with staged_directory(out) as stage:
        try:
            spill = Spill(stage / ".spill", shards)
            spill.write(runner.encode(sources, encoder), progress)
            spec, trained = None, None
            for shard in range(shards):
                options = params if spec is None else {k: v for k, v in spec.to_dict().items() if k != "kind"}
                built = build_index(corpus, stage / folder_name(shard), encoder,
                                    kind=kind if spec is None else spec.name, max_memory=max_memory,
                                    rerank_factor=rerank_factor, text_column=text_column, id_column=id_column,
                                    engine=spill.engine(shard, runner), progress=_of_shard(progress, shard, shards),
                                    trained=trained, **options)
                spill.path(shard).unlink(missing_ok=True)
                if not built.documents:
                    raise InputError(f"shard {shard} of {shards} holds no documents: the corpus has too few for "
                                     f"{shards} shards; use fewer", argument="shards")
                if spec is None:
                    spec, trained = built.kind, index_folder.trained_faiss(built.path)
                done, skipped = done + built.documents, skipped + built.skipped
                sizes.append(built.documents)
            shutil.rmtree(spill.folder)
        finally:
            if isinstance(engine, str):
                runner.close()
        quantiser = trained.quantizer.reconstruct_n(0, trained.nlist) if isinstance(spec, IVF) else None
        write_map(stage, shards, encoder, spec, done, quantiser)
    return BuiltShards(out, shards, done, skipped, spec, time.perf_counter() - started, sizes)


class ShardedIndex:
    """Several index folders searched as one (see the module docstring); what ``SearchIndex.load``
    returns for a sharded folder, with ``SearchIndex``'s API for dense searches and changes.

    Example: ``idx = SearchIndex.load("indexes/all"); idx.search("退款多久到账")``."""

    def __init__(self, shards: list[Shard], found: dict, path: Path, parallel: bool = False):
        """``SearchIndex.load`` makes one from the folder's map (``shard_map.read_map``) and its
        shards, each checked against the map's encoder. ``parallel``: ask the shards at once,
        each on a thread, for shards served elsewhere (``cluster.py``), whose waits then overlap;
        in one process the shards are asked in turn, as FAISS already uses every core."""
        self.shards = shards
        """The shards, each an ordinary ``SearchIndex`` (shard ``i`` holds the ids ``shard_of`` gives ``i``)."""
        self.encoder = shards[0].encoder
        self.path = path
        self._map = found
        self._changed: set[int] = set()
        self._pool = ThreadPoolExecutor(len(shards), thread_name_prefix="siamsearch-shards") if parallel else None

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def __repr__(self) -> str:
        return (f"ShardedIndex(documents={len(self):,}, shards={len(self.shards)}, kind={self.kind!r}, "
                f"path={str(self.path)!r})")

    @property
    def spec(self) -> IndexKind:
        return self.shards[0].spec

    @property
    def kind(self) -> str:
        return self.shards[0].kind

    @property
    def rerank_factor(self) -> int:
        return self.shards[0].rerank_factor

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)

    @property
    def tombstones(self) -> int:
        return sum(shard.tombstones for shard in self.shards)

    @property
    def generation(self) -> int:
        """The sum of the shards' committed generations: it grows by one with each commit to any shard."""
        return sum(shard.generation or 0 for shard in self.shards)

    @property
    def has_lexical(self) -> bool:
        return all(shard.has_lexical for shard in self.shards)

    @property
    def dense_only(self) -> str | None:
        return None if self.has_lexical else NO_LEXICAL_PART

    def is_stale(self) -> bool:
        """Whether any shard has a newer committed generation. Example: ``if idx.is_stale(): idx = idx.reload()``."""
        return any(shard.is_stale() for shard in self.shards)

    def reload(self, mmap: bool = False) -> ShardedIndex:
        """Every shard's committed generation, as a new index. Example: ``idx = idx.reload()``."""
        return type(self.shards[0]).load(self.path, self.encoder, mmap)  # SearchIndex.load opens sharded folders

    def owner(self, doc_id: str) -> Shard:
        """The shard that holds (or would hold) ``doc_id``. Example: ``idx.owner("faq-001").path``."""
        return self.shards[shard_of(str(doc_id), len(self.shards))]

    # -- documents ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Document]:
        """Every live document, shard by shard (of shards in this process)."""
        for shard in self.shards:
            yield from shard

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or None, from its shard. Example: ``idx.get("faq-001").text``."""
        return self.owner(doc_id).get(doc_id)

    # -- changing ------------------------------------------------------------------------
    def _by_shard(self, ids: Sequence[str]) -> dict[int, list[int]]:
        """Positions in ``ids`` grouped by the shard that owns each id."""
        groups: dict[int, list[int]] = {}
        for i, doc_id in enumerate(ids):
            groups.setdefault(shard_of(doc_id, len(self.shards)), []).append(i)
        return groups

    def _existing(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` that are held, one lookup per shard (not one per id)."""
        calls = [partial(self.shards[shard].existing, [ids[i] for i in rows])
                 for shard, rows in self._by_shard(ids).items()]
        return set().union(*self._each(calls))

    def _checked(self, texts: Sequence[str] | pd.DataFrame, ids: Sequence[str] | None,
                 metadata: Sequence[dict] | None, text_column: str | None,
                 id_column: str | None, upsert: bool = False) -> tuple[list[str], list[str], list[dict]]:
        """Every document checked before any shard changes, so that a bad one changes nothing;
        new ids continue after the largest numeric id of all shards, as one index's would."""
        texts, ids, metadata = documents_from(texts, ids, metadata, text_column, id_column)
        if ids is None and upsert:
            raise InputError("upsert needs ids: they say which documents to replace", argument="ids")
        if ids is None and not isinstance(texts, str):
            largest = max(self._each([shard.max_numeric_id for shard in self.shards]))
            ids = [str(largest + 1 + i) for i in range(len(texts))]
        return checked(None, texts, ids, metadata)

    def _apply(self, method: str, texts: list[str], ids: list[str], metadata: list[dict],
               progress: Progress | None) -> int:
        replaced = 0
        for shard, rows in sorted(self._by_shard(ids).items()):
            result = getattr(self.shards[shard], method)([texts[i] for i in rows], [ids[i] for i in rows],
                                                         [metadata[i] for i in rows], progress)
            replaced += result if method == "upsert" else 0
            self._changed.add(shard)
        return replaced

    def add(self, texts: Sequence[str] | pd.DataFrame, ids: Sequence[str] | None = None,
            metadata: Sequence[dict] | None = None, progress: Progress | None = None,
            text_column: str | None = None, id_column: str | None = None) -> list[str]:
        """``SearchIndex.add``, each document to the shard that owns its id.
        Example: ``idx.add(["新问题"], ids=["q-201"])``."""
        texts, ids, metadata = self._checked(texts, ids, metadata, text_column, id_column)
        existing = self._existing(ids)
        taken = next((i for i in ids if i in existing), None)
        if taken is not None:
            raise InputError(f"document id {taken!r} already exists; use upsert to replace it", argument="ids")
        self._apply("add", texts, ids, metadata, progress)
        return ids

    def upsert(self, texts: Sequence[str] | pd.DataFrame, ids: Sequence[str] | None = None,
               metadata: Sequence[dict] | None = None, progress: Progress | None = None,
               text_column: str | None = None, id_column: str | None = None) -> int:
        """``SearchIndex.upsert``, each document to the shard that owns its id.
        Example: ``idx.upsert(["改过的问题"], ids=["q-17"])``."""
        texts, ids, metadata = self._checked(texts, ids, metadata, text_column, id_column, upsert=True)
        return self._apply("upsert", texts, ids, metadata, progress)

    def remove(self, ids: Sequence[str]) -> int:
        """``SearchIndex.remove``: all or nothing across the shards. Example: ``idx.remove(["faq-001"])``."""
        if isinstance(ids, str):
            raise InputError("remove takes a list of ids", argument="ids")
        ids = list(dict.fromkeys(str(i) for i in ids))
        existing = self._existing(ids)
        missing = next((i for i in ids if i not in existing), None)
        if missing is not None:
            raise NotFoundError(f"no document with id {missing!r}; nothing was removed", argument="ids")
        removed = 0
        for shard, rows in sorted(self._by_shard(ids).items()):
            removed += self.shards[shard].remove([ids[i] for i in rows])
            self._changed.add(shard)
        return removed

    def compact(self, lexical: bool = False) -> int:
        """``SearchIndex.compact`` of every shard (IVF shards keep the shared quantiser);
        ``lexical``: also give each shard the lexical part it lacks. Example: ``idx.compact(); idx.save(idx.path)``."""
        dropped = 0
        for i, shard in enumerate(self.shards):
            gains = lexical and not shard.has_lexical
            n = shard.compact(lexical) if lexical else shard.compact()
            dropped += n
            if n or gains:  # a shard given its lexical part has changed too
                self._changed.add(i)
        return dropped

    def save(self, path: str | Path) -> None:
        """Commit every shard changed since loading as its next generation (each shard on its
        own, as a write on a cluster commits on the shard that owns the id). Saving elsewhere
        than the folder it was loaded from is not offered: copy the folder instead.
        Example: ``idx.save("indexes/all")``."""
        if Path(path).resolve() != self.path:
            raise InputError(f"{path}: a sharded index is saved into the folder it was loaded from ({self.path})",
                             path=Path(path))
        for shard in sorted(self._changed):
            self.shards[shard].save(self.path / self._map["folders"][shard])
        self._changed.clear()

    # -- search ------------------------------------------------------------------------
    def search(self, query_text: str, k: int = 10, where: Where | None = None, min_match: float | None = None,
               mode: str = "dense", fusion: Fusion | None = None) -> list[Hit]:
        """``SearchIndex.search`` over every shard. Example: ``idx.search("退款多久到账", k=5)``."""
        return self.search_batch([query_text], k, where, min_match=min_match, mode=mode, fusion=fusion)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, where: Where | None = None,
                     observe: Observe | None = None, min_match: float | None = None, mode: str = "dense",
                     fusion: Fusion | None = None) -> list[list[Hit]]:
        """``SearchIndex.search_batch`` over every shard: one index's hits (module docstring).
        Example: ``idx.search_batch(["退款多久到账", "怎么开发票"], k=5, where={"topic": "退款"})``."""
        request = Request.checked(queries, k, where, min_match, mode, self.encoder, self.dense_only)
        return self.answer(request, observe, fusion)

    def answer(self, request: Request, observe: Observe | None = None,
               fusion: Fusion | None = None) -> list[list[Hit]]:
        """The query encoded once; dense: each shard's best ``k``, merged by the exact score, ties
        by id; lexical and hybrid: every shard's candidates by the summed BM25 counts, fused
        (module docstring). Example:
        ``idx.answer(Request.checked(["退款"], 5, None, None, "dense", idx.encoder, idx.dense_only))``."""
        started = time.perf_counter()
        encoded = self.encoder.encode(request.queries)
        if observe is not None:
            observe("encode", time.perf_counter() - started)
        queries = range(len(request.queries))
        if request.mode == "dense":
            answers = _known(self._each([partial(shard.answer, request, observe, encoded=encoded)
                                         for shard in self.shards]))
            return [merge([found[q] for found in answers], request.k) for q in queries]
        counts = self._each([partial(shard.lexical_statistics, request.queries) for shard in self.shards])
        statistics = [sum((c[q] for c in counts[1:]), counts[0][q]) for q in queries]
        gathered = _known(self._each([partial(shard.candidate_hits, request, observe, encoded, statistics)
                                      for shard in self.shards]))
        fusion = fusion_for(request.mode, fusion, self.encoder)
        return [likely(fused([hit for found in gathered for hit in found[q]], request.k * self.rerank_factor, fusion,
                             request.k), request.min_match) for q in queries]

    def count(self, where: Where | None = None) -> int:
        """``SearchIndex.count`` summed over the shards; a field is unknown only if no shard's
        documents have it. Example: ``idx.count({"topic": "退款"})``."""
        return sum(_known(self._each([partial(shard.count, where) for shard in self.shards])))

    def _each(self, calls: list[Callable[[], T]]) -> list[T | UnknownFieldError]:
        """Each call's result, at once on the pool when ``parallel``, else in turn; an
        ``UnknownFieldError`` is kept in its place (``_known``), any other error raised."""
        def run(call: Callable[[], T]) -> T | UnknownFieldError:
            try:
                return call()
            except UnknownFieldError as e:  # a field other shards' documents may have
                return e

        return list(self._pool.map(run, calls)) if self._pool is not None and len(calls) > 1 else [
            run(call) for call in calls]

    def search_frame(self, queries: Sequence[str], k: int = 10, where: Where | None = None,
                     min_match: float | None = None, mode: str = "dense") -> pd.DataFrame:
        """``SearchIndex.search_frame`` over every shard. Example: ``idx.search_frame(["退款多久到账"], k=3)``."""
        from . import frames

        return frames.hits_frame(queries, self.search_batch(queries, k, where, min_match=min_match, mode=mode))


def _known(results: list[T | UnknownFieldError]) -> list[T]:
    """The results of the shards whose documents have the filter's fields; a field is unknown
    only where no shard's documents have it."""
    known = [r for r in results if not isinstance(r, UnknownFieldError)]
    if not known and results:
        raise results[0]
    return known


def merge(lists: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """The best ``k`` of several shards' hits by exact score, ties by id, ranked afresh."""
    best = sorted((hit for hits in lists for hit in hits), key=lambda hit: (-hit.score, hit.id))[:k]
    return [replace(hit, rank=rank) for rank, hit in enumerate(best, 1)]
