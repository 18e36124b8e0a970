"""FAISS index kinds under the L1 metric: one class per kind, behind one small interface.

Only kinds whose L1 support was verified are offered: FAISS's SQ/PQ encodings, IVF-PQ and
IndexRefine reject or silently ignore METRIC_L1 (HNSW+SQ8 with L1 even aborts), so every
kind here keeps the full float32 vectors, and memory is about 256 bytes per document
plus the kind's own structure:

======  ====================================  =========================  ==========================
kind    FAISS                                 RAM per document (64-d)    answers
======  ====================================  =========================  ==========================
flat    ``IndexFlat(d, METRIC_L1)``           4·d = 256 B                exactly; time grows with n
hnsw    ``IndexHNSWFlat(d, M, METRIC_L1)``    4·d + 8·M + 12 ≈ 524 B     approximately, ~log n time
ivf     ``IndexIVFFlat(.., nlist, L1)``        4·d + 8 = 264 B            approximately, scans nprobe
                                                                         of nlist lists
======  ====================================  =========================  ==========================

A kind is a frozen dataclass whose fields are its parameters (build and search ones alike),
validated when it is made; the index manifest records ``{"kind": name, **parameters}`` and
``from_dict`` reads it back through the same validation. A kind holds no FAISS object: it
creates, fills, searches, reads and writes the ``faiss.Index`` it is handed, so one kind
object can serve any number of threads. Search parameters go to FAISS with each call
(``SearchParametersHNSW`` / ``SearchParametersIVF``), never set on the shared index, and
nothing process-wide (such as FAISS's OpenMP thread count) changes on the query path.

A new kind is one subclass of ``IndexKind`` and one entry in ``KINDS``; every kind runs
through the same checks in ``tests/test_kinds.py``. Which kind ``auto`` picks is
``choice.py``'s business.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from typing import BinaryIO, ClassVar, Protocol

import faiss
import numpy as np

from .errors import InputError

ADD_CHUNK = 10_000
IVF_TRAIN_PER_LIST = 64  # training points per list: k-means is stable from ~40 (FAISS warns below 39)
IVF_SEED = 1234
STREAM_BLOCK_ROWS = 1 << 20  # vectors held at once while a FAISS file is written from a vector file


class VectorSource(Protocol):
    """Vectors on disk that a streamed build reads back a block at a time (``build.VectorFile``)."""

    rows: int
    dim: int

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) for every ``rows`` rows, in order."""

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The rows at sorted ``positions``."""


Assign = Callable[[np.ndarray], np.ndarray]
"""Given an IVF's centroids, the list of every row of the vectors being built (an engine's work)."""


@lru_cache(maxsize=256)
def _hnsw_parameters(ef_search: int) -> faiss.SearchParameters:
    """Made once per value (a FAISS parameters object costs ~9 µs to build; searches only read it)."""
    return faiss.SearchParametersHNSW(efSearch=ef_search)


@lru_cache(maxsize=256)
def _ivf_parameters(nprobe: int) -> faiss.SearchParameters:
    return faiss.SearchParametersIVF(nprobe=nprobe)


def parameter(default: int, minimum: int, help: str) -> int:
    """A kind's parameter: a whole number of at least ``minimum``, validated when the kind is
    made; ``help`` says what it does (the CLI's option help, ``{default}`` filled in)."""
    return field(default=default, metadata={"minimum": minimum, "help": help})


@dataclass(frozen=True)
class Parameter:
    """One parameter of a kind, as the edges (the CLI's options) offer it."""

    kind: str
    name: str
    default: int
    minimum: int
    help: str


@dataclass(frozen=True)
class IndexKind:
    """The interface every kind implements; the base class has what most kinds share."""

    name: ClassVar[str]
    faiss_class: ClassVar[type]
    fourcc: ClassVar[bytes]  # the first four bytes of FAISS's file for this kind
    mmap_flag: ClassVar[int] = faiss.IO_FLAG_MMAP_IFC  # how FAISS maps this kind's data (``read``)
    auto_up_to: ClassVar[int | None] = None
    """The largest corpus ``kind="auto"`` gives this kind, in the registry's order (None: any
    size); ``choice.py`` reads it."""

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def parameters(cls) -> list[Parameter]:
        """The kind's parameters (its dataclass fields), with their defaults, minimums and help."""
        return [Parameter(cls.name, f.name, f.default, f.metadata["minimum"], f.metadata["help"]) for f in fields(cls)]

    def validate(self) -> None:
        """Raise an ``InputError`` naming the parameter if one is not a whole number within range."""
        for p in self.parameters():
            value = getattr(self, p.name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < p.minimum:
                raise InputError(f"{p.name} of a {self.name} index must be a whole number of at least {p.minimum}, "
                                 f"got {value!r}", argument=p.name)

    def to_dict(self) -> dict:
        """What the manifest records: the kind's name and its parameters."""
        return {"kind": self.name, **asdict(self)}

    def for_corpus(self, n_docs: int) -> IndexKind:
        """This kind with the parameters left to the corpus size filled in (most have none)."""
        return self

    def bytes_per_document(self, dim: int) -> int:
        """RAM the FAISS structure needs per document (see the module table)."""
        return 4 * dim

    def create(self, dim: int, training: np.ndarray) -> faiss.Index:
        """An empty index, trained on ``training`` where the kind needs it."""
        raise NotImplementedError

    def add(self, index: faiss.Index, vectors: np.ndarray, progress: Callable[[int], None] | None = None) -> None:
        """Append vectors (their FAISS labels continue from ``index.ntotal``), in chunks for progress."""
        for start in range(0, len(vectors), ADD_CHUNK):
            chunk = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)
            index.add(chunk)
            if progress:
                progress(len(chunk))

    def training_positions(self, rows: int) -> np.ndarray | None:
        """The sorted rows ``create`` trains on when given ``rows`` vectors (None: all, or no training)."""
        return None

    def write_streamed(self, path: str, vectors: VectorSource, assign: Assign,
                       trained: faiss.Index | None = None) -> None:
        """Write the FAISS file of every row of ``vectors``, read a block at a time. This default
        builds the index in memory, as kinds whose structure lives in memory must (HNSW's graph);
        ``Flat`` and ``IVF`` write their file directly, holding one block. ``trained``: an empty
        index of this kind whose training (IVF's centroids) is used instead of training on
        ``vectors``, so that the shards of one index share one quantiser (``shards.py``)."""
        if trained is None:
            positions = self.training_positions(vectors.rows)
            training = np.empty((0, vectors.dim), np.float32) if positions is None else vectors.take(positions)
            index = self.create(vectors.dim, training)
        else:
            index = self.emptied(trained)
        for _, block in vectors.blocks(STREAM_BLOCK_ROWS):
            self.add(index, block)
        self.write(index, path)

    def search_parameters(self, n: int, selector: faiss.IDSelector | None = None) -> faiss.SearchParameters | None:
        """FAISS's per-call parameters for fetching ``n`` candidates among the positions
        ``selector`` admits (None: the kind has none and every position is admitted)."""
        return None if selector is None else faiss.SearchParameters(sel=selector)

    def search(self, index: faiss.Index, queries: np.ndarray, n: int,
               selector: faiss.IDSelector | None = None) -> np.ndarray:
        """(len(queries), n) positions of the nearest stored vectors by L1 (among those ``selector``
        admits); -1 where fewer were found. Safe from many threads on one index: nothing is set on it."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return index.search(queries, n, params=self.search_parameters(n, selector))[1]

    def read(self, path: str, mmap: bool) -> faiss.Index:
        """Read an index file; with ``mmap`` its vectors stay on disk and are paged in as
        searches touch them, so a large index opens in milliseconds."""
        with open(path, "rb") as f:  # another kind's file is refused before FAISS parses it with these flags
            if f.read(4) != self.fourcc:
                raise ValueError(f"the FAISS file holds no {self.name} index")
        return faiss.read_index(path, self.mmap_flag if mmap else 0)

    def write(self, index: faiss.Index, path: str) -> None:
        faiss.write_index(index, path)

    def in_memory(self, index: faiss.Index) -> faiss.Index:
        """A private in-memory copy of a memory-mapped index, which FAISS cannot grow in place
        (adding to a mapped flat index aborts the process)."""
        return faiss.deserialize_index(faiss.serialize_index(index))

    def emptied(self, index: faiss.Index) -> faiss.Index:
        """An empty index like ``index``, without retraining (for ``compact``)."""
        return self.create(index.d, np.empty((0, index.d), np.float32))

    def check(self, index: faiss.Index, rows: int, dim: int) -> str | None:
        """Why a loaded FAISS index does not match its manifest, or None if it does."""
        if not isinstance(index, self.faiss_class):
            return f"the FAISS file holds a {type(index).__name__}, the manifest says {self.name}"
        if index.metric_type != faiss.METRIC_L1:
            return "the FAISS index does not use the L1 metric"
        if index.ntotal != rows or index.d != dim:
            return f"the FAISS index holds {index.ntotal} × {index.d}-d vectors, the manifest says {rows} × {dim}"
        return None


@dataclass(frozen=True)
class Flat(IndexKind):
    """Exact: every query scans every vector."""

    name: ClassVar[str] = "flat"
    faiss_class: ClassVar[type] = faiss.IndexFlat
    fourcc: ClassVar[bytes] = b"IxFl"
    auto_up_to: ClassVar[int | None] = 99_999  # a flat scan of 100,000 64-d vectors is ~1 ms (choice.py)

    def create(self, dim: int, training: np.ndarray) -> faiss.Index:
        return faiss.IndexFlat(dim, faiss.METRIC_L1)

    def write_streamed(self, path: str, vectors: VectorSource, assign: Assign,
                       trained: faiss.Index | None = None) -> None:
        """FAISS's flat file is its header and then the vectors as one length-prefixed array:
        the header of an empty index that says ``rows``, then the blocks as they are read."""
        with open(path, "wb") as f:
            _head(f, self.create(vectors.dim, np.empty((0, vectors.dim), np.float32)), vectors.rows,
                  struct.pack("<Q", 0))
            f.write(struct.pack("<Q", vectors.rows * vectors.dim))
            for _, block in vectors.blocks(STREAM_BLOCK_ROWS):
                f.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())


@dataclass(frozen=True)
class HNSW(IndexKind):
    """A navigable small-world graph: the fastest queries, 8·M + 12 bytes a document more."""

    name: ClassVar[str] = "hnsw"
    faiss_class: ClassVar[type] = faiss.IndexHNSWFlat
    fourcc: ClassVar[bytes] = b"IHNf"
    auto_up_to: ClassVar[int | None] = 2_000_000  # beyond it the graph's build time and memory stop paying off
    hnsw_m: int = parameter(32, 2, "graph neighbours per node. [default: {default}]")
    ef_construction: int = parameter(200, 1, "search depth while building. [default: {default}]")
    ef_search: int = parameter(192, 1, "search depth per query (at least k × rerank factor: raised to the "
                                       "candidates fetched when they are more). [default: {default}]")

    def bytes_per_document(self, dim: int) -> int:
        return 4 * dim + 8 * self.hnsw_m + 12

    def create(self, dim: int, training: np.ndarray) -> faiss.Index:
        index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_L1)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def search_parameters(self, n: int, selector: faiss.IDSelector | None = None) -> faiss.SearchParameters:
        ef_search = max(self.ef_search, n)
        if selector is None:
            return _hnsw_parameters(ef_search)
        return faiss.SearchParametersHNSW(efSearch=ef_search, sel=selector)


@dataclass(frozen=True)
class IVF(IndexKind):
    """Inverted lists around k-means centroids: each query scans ``nprobe`` of ``nlist`` lists."""

    name: ClassVar[str] = "ivf"
    faiss_class: ClassVar[type] = faiss.IndexIVFFlat
    fourcc: ClassVar[bytes] = b"IwFl"
    mmap_flag: ClassVar[int] = faiss.IO_FLAG_MMAP  # the inverted lists
    nlist: int = parameter(0, 0, "number of lists; default (0) ≈ 4·√documents.")
    nprobe: int = parameter(0, 0, "lists scanned per query; default (0) nlist/32.")

    def for_corpus(self, n_docs: int) -> IVF:
        """Fill in the parameters left at 0: nlist ≈ 4·√n (at most one list per
        ``IVF_TRAIN_PER_LIST`` documents, so k-means has enough points), nprobe = nlist / 32
        (at least 16): recall@10 0.9987 at 1M (nlist 4000, nprobe 125) and 0.9990 at 10M after
        the re-rank, on the recipe model's encodings (docs/benchmarks.md)."""
        nlist = self.nlist or max(1, min(int(4 * math.sqrt(n_docs)), n_docs // IVF_TRAIN_PER_LIST))
        return replace(self, nlist=nlist, nprobe=self.nprobe or min(nlist, max(16, nlist // 32)))

    def bytes_per_document(self, dim: int) -> int:
        return 4 * dim + 8

    def create(self, dim: int, training: np.ndarray) -> faiss.Index:
        """Trained on a seeded sample of ``training`` (at most ``IVF_TRAIN_PER_LIST`` points a list)."""
        if len(training) < self.nlist:
            raise InputError(f"an ivf index with {self.nlist} lists needs at least {self.nlist} documents to train on",
                             argument="nlist")
        index = self._untrained(faiss.IndexFlat(dim, faiss.METRIC_L1), dim)
        index.cp.seed = IVF_SEED
        index.cp.min_points_per_centroid = 1  # tiny corpora: one list, no FAISS warning on stderr
        positions = self.training_positions(len(training))
        sample = training if positions is None else training[positions]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        return index

    def training_positions(self, rows: int) -> np.ndarray | None:
        """A seeded sample of ``IVF_TRAIN_PER_LIST`` rows a list, when there are more."""
        if rows <= self.nlist * IVF_TRAIN_PER_LIST:
            return None
        return np.sort(np.random.default_rng(IVF_SEED).choice(rows, self.nlist * IVF_TRAIN_PER_LIST, replace=False))

    def write_streamed(self, path: str, vectors: VectorSource, assign: Assign,
                       trained: faiss.Index | None = None) -> None:
        """The same file as ``create`` + ``add`` + ``write`` (byte for byte; tests/test_build.py),
        holding one block of vectors: trained on the same sample, every row's list from
        ``assign`` (the part of adding that costs, and that an engine can spread), then
        FAISS's array-lists layout: the header of the trained, empty index, the list sizes,
        and each list's vectors and positions in position order. The list sizes fix where
        every list lies in the file, so one pass over the vectors in position order writes
        each block's share of every list where it belongs (``os.pwrite``): the time grows
        with the corpus, not with the corpus times its blocks."""
        if trained is None:
            positions = self.training_positions(vectors.rows)
            index = self.create(vectors.dim, vectors.take(np.arange(vectors.rows) if positions is None else positions))
        elif trained.nlist != self.nlist:
            raise ValueError(f"the shared quantiser has {trained.nlist} lists, this index {self.nlist}")
        else:
            index = self.emptied(trained)
        lists = assign(index.quantizer.reconstruct_n(0, self.nlist))
        sizes = np.bincount(lists, minlength=self.nlist).astype(np.uint64)
        code_size = 4 * vectors.dim
        with open(path, "wb") as f:
            _head(f, index, vectors.rows, b"ilar" + struct.pack("<QQ", self.nlist, code_size) + b"sprs" +
                  struct.pack("<Q", 0))
            f.write(b"ilar" + struct.pack("<QQ", self.nlist, code_size))
            non_empty = np.flatnonzero(sizes)
            if len(non_empty) > self.nlist // 2:  # FAISS's own rule for the two layouts
                f.write(b"full" + struct.pack("<Q", self.nlist) + sizes.tobytes())
            else:
                pairs = np.column_stack([non_empty, sizes[non_empty]]).astype(np.uint64).ravel()
                f.write(b"sprs" + struct.pack("<Q", len(pairs)) + pairs.tobytes())
            f.flush()
            list_bytes = sizes.astype(np.int64) * (code_size + 8)  # a list: its vectors, then its positions
            starts = f.tell() + np.cumsum(list_bytes) - list_bytes
            f.truncate(f.tell() + int(list_bytes.sum()))
            written = np.zeros(self.nlist, np.int64)  # rows of each list written so far
            for first, block in vectors.blocks(STREAM_BLOCK_ROWS):
                block_lists = lists[first : first + len(block)]
                by_list = np.argsort(block_lists, kind="stable")  # grouped by list, in position order within
                grouped = np.ascontiguousarray(block[by_list], dtype=np.float32)
                ids = (by_list + first).astype(np.int64)
                counts = np.bincount(block_lists, minlength=self.nlist)
                end = 0
                for lst in np.flatnonzero(counts):
                    begin, end = end, end + int(counts[lst])
                    before = int(written[lst])
                    os.pwrite(f.fileno(), grouped[begin:end].tobytes(), int(starts[lst]) + code_size * before)
                    os.pwrite(f.fileno(), ids[begin:end].tobytes(),
                              int(starts[lst]) + code_size * int(sizes[lst]) + 8 * before)
                    written[lst] += end - begin

    def _untrained(self, quantizer: faiss.Index, dim: int) -> faiss.IndexIVFFlat:
        return faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_L1)

    def search_parameters(self, n: int, selector: faiss.IDSelector | None = None) -> faiss.SearchParameters:
        if selector is None:
            return _ivf_parameters(self.nprobe)
        return faiss.SearchParametersIVF(nprobe=self.nprobe, sel=selector)

    def search(self, index: faiss.Index, queries: np.ndarray, n: int,
               selector: faiss.IDSelector | None = None) -> np.ndarray:
        """One query runs on one OpenMP thread (``one_thread_for_one_query``): FAISS's coarse
        search of a single query over the flat L1 centroids costs more on two threads than it
        saves (1M documents, 4,000 lists: 0.14 ms on one thread, 4.1 ms on two while another
        process kept the cores busy, on 2026-12-01)."""
        with one_thread_for_one_query(len(queries)):
            return super().search(index, queries, n, selector)

    def read(self, path: str, mmap: bool) -> faiss.Index:
        """With ``mmap`` the lists stay on disk; FAISS's 32 prefetch threads per search made
        mapped queries 3× slower (0.59 vs 1.97 ms at 1M), so they are turned off."""
        index = super().read(path, mmap)
        if mmap:
            faiss.downcast_InvertedLists(index.invlists).prefetch_nthread = 0
        return index

    def write(self, index: faiss.Index, path: str) -> None:
        """A memory-mapped index is written from an in-memory copy: FAISS would otherwise
        write a reference to its (unnamed) mapping instead of the lists."""
        if not isinstance(faiss.downcast_InvertedLists(index.invlists), faiss.ArrayInvertedLists):
            index = self.in_memory(index)
        faiss.write_index(index, path)

    def in_memory(self, index: faiss.Index) -> faiss.Index:
        """Mapped lists are read-only: copy them list by list into an index with the same centroids."""
        copy = self.emptied(index)
        for n in range(index.nlist):
            size = index.invlists.list_size(n)
            if size:
                copy.invlists.add_entries(n, size, index.invlists.get_ids(n), index.invlists.get_codes(n))
        copy.ntotal = index.ntotal
        return copy

    def emptied(self, index: faiss.Index) -> faiss.Index:
        """IVF keeps its trained centroids: nothing to retrain."""
        quantizer = faiss.IndexFlat(index.d, faiss.METRIC_L1)
        quantizer.add(index.quantizer.reconstruct_n(0, index.nlist))
        return self._untrained(quantizer, index.d)

    def check(self, index: faiss.Index, rows: int, dim: int) -> str | None:
        problem = super().check(index, rows, dim)
        if problem is None and index.nlist != self.nlist:
            return f"the FAISS index has {index.nlist} lists, the manifest says {self.nlist}"
        return problem


@contextmanager
def one_thread_for_one_query(queries: int) -> Iterator[None]:
    """Run FAISS on one OpenMP thread while it answers a single query: splitting one query's
    work across the cores costs more than it saves whenever they are busy. ``omp_set_num_threads``
    sets the calling thread's own setting (libgomp, which faiss-cpu ships, keeps it per thread;
    tests/test_kinds.py checks another thread is unaffected), so this changes nothing for other
    threads searching at the same time."""
    if queries != 1:
        yield
        return
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def exact_search(vectors: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
    """(len(queries), n) rows of ``vectors`` nearest by L1, exactly, without an index (FAISS's
    ``knn``): for a few thousand rows, such as a loaded index's delta. A single query on one
    thread: on two busy cores it measured a p99 of 8 ms against 0.05 ms (500 rows, 2026-12-03)."""
    with one_thread_for_one_query(len(queries)):
        return faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), vectors, n, metric=faiss.METRIC_L1)[1]


def _head(f: BinaryIO, empty: faiss.Index, rows: int, empty_tail: bytes) -> None:
    """Write FAISS's serialisation of ``empty`` as if it held ``rows`` vectors, up to the data
    that follows (whose empty form, ``empty_tail``, ends the file; checked, so that a FAISS
    that lays its files out otherwise fails here rather than writing a wrong index)."""
    empty.ntotal = rows
    head = faiss.serialize_index(empty).tobytes()
    empty.ntotal = 0
    if not head.endswith(empty_tail):
        raise RuntimeError(f"this FAISS ({faiss.__version__}) lays out {type(empty).__name__} files in a way "
                           "siamsearch cannot stream; build the index in memory (SearchIndex.build)")
    f.write(head[: len(head) - len(empty_tail)])


KINDS: dict[str, type[IndexKind]] = {kind.name: kind for kind in (Flat, HNSW, IVF)}
"""The registry: every kind siamsearch can build and open, by name."""


def parameter_names(name: str | None = None) -> set[str]:
    """The parameters kind ``name`` takes; without a name, every parameter some kind takes."""
    chosen = KINDS.values() if name is None else [KINDS[name]]
    return {f.name for kind in chosen for f in fields(kind)}


def make(name: str, **params: int) -> IndexKind:
    """The kind ``name`` with ``params``; a parameter of another kind is an error."""
    if name not in KINDS:
        raise InputError(f"index kind {name!r} is not one of auto, {', '.join(KINDS)}", argument="kind")
    own = parameter_names(name)
    for argument in params:
        if argument not in own:
            takes = f"takes {', '.join(sorted(own))}" if own else "takes no parameters"
            raise InputError(f"{argument} is not a parameter of a {name} index (it {takes})", argument=argument)
    return KINDS[name](**params)


def from_dict(d: dict) -> IndexKind:
    """The kind a manifest records (``IndexKind.to_dict``); raises InputError if it is not valid."""
    if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
        raise InputError(f"index settings {d!r} name no kind")
    params = dict(d)
    return make(params.pop("kind"), **params)


def all_parameters() -> list[Parameter]:
    """Every registered kind's parameters, kind by kind (the CLI makes an option of each name once)."""
    return [p for kind in KINDS.values() for p in kind.parameters()]
