"""FAISS index kinds under the L1 metric, their parameters, and how ``auto`` chooses one.

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

``auto`` (``choose_kind``), in the spirit of autofaiss: exact below ``AUTO_FLAT_MAX_DOCS``
documents, where a flat scan is already under a millisecond; HNSW up to
``AUTO_HNSW_MAX_DOCS``, the fastest per query; IVF beyond that, because HNSW's build
time (186 s of graph building at 1M on 2 cores, growing faster than linearly; not
measured at 10M) and its extra 268 B per document stop paying off there, while IVF
built 10M in 20 min and answers in about 6 ms.
With a memory budget, the first kind in that order that fits is taken, then the smaller
ones (ivf, then flat); if not even flat fits, there is no L1 kind that can, and the user
is told how much is needed. ``docs/benchmarks.md`` has the measurements behind the
thresholds and the defaults (recall@10 ≥ 0.99 after the exact re-rank on real encodings).

Search parameters (``ef_search``, ``nprobe``) are recorded with the build parameters in
the index manifest; ``0`` for ``nlist``/``nprobe`` means "choose from the corpus size".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import faiss
import numpy as np

from .errors import InputError

KINDS = ("flat", "hnsw", "ivf")
AUTO_FLAT_MAX_DOCS = 100_000
AUTO_HNSW_MAX_DOCS = 2_000_000
ADD_CHUNK = 10_000
IVF_TRAIN_PER_LIST = 64  # training points per list: k-means is stable from ~40 (FAISS warns below 39)
IVF_SEED = 1234


@dataclass(frozen=True)
class IndexSpec:
    """The index kind and its parameters, recorded in the manifest."""

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 192
    nlist: int = 0
    nprobe: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"index kind {self.kind!r} is not one of auto, {', '.join(KINDS)}")
        if min(self.hnsw_m, self.ef_construction, self.ef_search) < 1 or min(self.nlist, self.nprobe) < 0:
            raise InputError("hnsw-m, ef-construction and ef-search must be at least 1; nlist and nprobe at least 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> IndexSpec:
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) - known:
            raise ValueError(f"unknown index settings: {d!r}")
        return cls(**d)

    def for_corpus(self, n_docs: int) -> IndexSpec:
        """Fill in the size-dependent IVF parameters left at 0: nlist ≈ 4·√n (at most one
        list per ``IVF_TRAIN_PER_LIST`` documents, so k-means has enough points), nprobe =
        nlist / 32 (at least 16): recall@10 0.9987 at 1M (nlist 4000, nprobe 125) and 0.9990
        at 10M after the re-rank, on the recipe model's encodings (docs/benchmarks.md)."""
        if self.kind != "ivf":
            return self
        nlist = self.nlist or max(1, min(int(4 * math.sqrt(n_docs)), n_docs // IVF_TRAIN_PER_LIST))
        return replace(self, nlist=nlist, nprobe=self.nprobe or min(nlist, max(16, nlist // 32)))

    def bytes_per_document(self, dim: int) -> int:
        """RAM the FAISS structure needs per document (see the module table)."""
        return 4 * dim + {"flat": 0, "hnsw": 8 * self.hnsw_m + 12, "ivf": 8}[self.kind]


def choose_kind(n_docs: int, dim: int, max_memory: int | None = None, hnsw_m: int = IndexSpec.hnsw_m) -> str:
    """``auto``: the kind for ``n_docs`` documents, within ``max_memory`` bytes if given."""
    preferred = "flat" if n_docs < AUTO_FLAT_MAX_DOCS else "hnsw" if n_docs <= AUTO_HNSW_MAX_DOCS else "ivf"
    if max_memory is None:
        return preferred
    order = {"flat": ["flat"], "hnsw": ["hnsw", "ivf", "flat"], "ivf": ["ivf", "flat"]}[preferred]
    for kind in order:
        if n_docs * IndexSpec(kind, hnsw_m=hnsw_m).bytes_per_document(dim) <= max_memory:
            return kind
    need = n_docs * IndexSpec("flat").bytes_per_document(dim)
    raise InputError(f"{n_docs:,} documents need at least {format_bytes(need)} in memory under the L1 metric "
                     f"(FAISS cannot compress L1 indexes), more than --max-memory {format_bytes(max_memory)}; "
                     "raise the budget or split the corpus")


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_bytes(text: str) -> int:
    """'512M', '2G', '1.5GiB', '800000000' → bytes (powers of 1024), for ``--max-memory``."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (s[:-1], s[-1]) if s and s[-1] in units else (s, "")
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = -1
    if not value > 0:
        raise InputError(f"memory size {text!r} is not understood; write e.g. 512M, 2G or 1.5GiB")
    return int(value)


def create(spec: IndexSpec, dim: int, training: np.ndarray | None = None) -> faiss.Index:
    """An empty index; IVF is trained first on (a seeded sample of) ``training``."""
    if spec.kind == "flat":
        return faiss.IndexFlat(dim, faiss.METRIC_L1)
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_L1)
        index.hnsw.efConstruction = spec.ef_construction
        return index
    if training is None or len(training) < spec.nlist:
        raise InputError(f"an ivf index with {spec.nlist} lists needs at least {spec.nlist} documents to train on")
    index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, faiss.METRIC_L1), dim, spec.nlist, faiss.METRIC_L1)
    index.cp.seed = IVF_SEED
    index.cp.min_points_per_centroid = 1  # tiny corpora: one list, no FAISS warning on stderr
    rng = np.random.default_rng(IVF_SEED)
    sample = training if len(training) <= spec.nlist * IVF_TRAIN_PER_LIST else \
        training[np.sort(rng.choice(len(training), spec.nlist * IVF_TRAIN_PER_LIST, replace=False))]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def add(index: faiss.Index, vectors: np.ndarray, progress: Callable[[int], None] | None = None) -> None:
    """Append vectors (their FAISS labels continue from ``index.ntotal``), in chunks for progress."""
    for start in range(0, len(vectors), ADD_CHUNK):
        chunk = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)
        index.add(chunk)
        if progress:
            progress(len(chunk))


def candidates(index: faiss.Index, spec: IndexSpec, queries: np.ndarray, n: int) -> np.ndarray:
    """(len(queries), n) positions of the nearest stored vectors by L1; -1 where fewer were found."""
    if spec.kind == "hnsw":
        index.hnsw.efSearch = max(spec.ef_search, n)
    elif spec.kind == "ivf":
        index.nprobe = spec.nprobe
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if spec.kind != "ivf" or len(queries) > 1:
        return index.search(queries, n)[1]
    threads = faiss.omp_get_max_threads()  # one IVF query: OpenMP over its lists costs more than it saves
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, n)[1]
    finally:
        faiss.omp_set_num_threads(threads)


def read(path: str, mmap: bool) -> faiss.Index:
    """Read an index file; with ``mmap`` its vectors (flat, hnsw) or lists (ivf) stay on disk
    and are paged in as searches touch them, so a large index opens in milliseconds."""
    if not mmap:
        return faiss.read_index(path)
    with open(path, "rb") as f:
        is_ivf = f.read(4) == b"IwFl"  # FAISS's fourcc for IndexIVFFlat
    index = faiss.read_index(path, faiss.IO_FLAG_MMAP if is_ivf else faiss.IO_FLAG_MMAP_IFC)
    if is_ivf:  # its 32 prefetch threads per search made mapped queries 3× slower (0.59 vs 1.97 ms at 1M)
        faiss.downcast_InvertedLists(index.invlists).prefetch_nthread = 0
    return index


def write(index: faiss.Index, path: str) -> None:
    """Write an index file. A memory-mapped IVF index is written from an in-memory copy:
    FAISS would otherwise write a reference to its (unnamed) mapping instead of the lists."""
    if isinstance(index, faiss.IndexIVFFlat) and not isinstance(
            faiss.downcast_InvertedLists(index.invlists), faiss.ArrayInvertedLists):
        index = in_memory(index)
    faiss.write_index(index, path)


def in_memory(index: faiss.Index) -> faiss.Index:
    """A private in-memory copy of a memory-mapped index, which FAISS cannot grow in place
    (adding to a mapped flat index aborts the process; mapped IVF lists are read-only)."""
    if not isinstance(index, faiss.IndexIVFFlat):
        return faiss.deserialize_index(faiss.serialize_index(index))
    copy = emptied(index)
    for n in range(index.nlist):
        size = index.invlists.list_size(n)
        if size:
            copy.invlists.add_entries(n, size, index.invlists.get_ids(n), index.invlists.get_codes(n))
    copy.ntotal = index.ntotal
    return copy


def emptied(index: faiss.Index) -> faiss.Index:
    """An empty index of the same kind and parameters; IVF keeps its trained centroids."""
    if isinstance(index, faiss.IndexIVFFlat):
        quantizer = faiss.IndexFlat(index.d, faiss.METRIC_L1)
        quantizer.add(index.quantizer.reconstruct_n(0, index.nlist))
        return faiss.IndexIVFFlat(quantizer, index.d, index.nlist, faiss.METRIC_L1)
    if isinstance(index, faiss.IndexHNSWFlat):
        empty = faiss.IndexHNSWFlat(index.d, index.hnsw.nb_neighbors(1), faiss.METRIC_L1)
        empty.hnsw.efConstruction = index.hnsw.efConstruction
        return empty
    return faiss.IndexFlat(index.d, faiss.METRIC_L1)


def check(index: faiss.Index, spec: IndexSpec, rows: int, dim: int) -> str | None:
    """Why a loaded FAISS index does not match its manifest, or None if it does."""
    expected = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}[spec.kind]
    if not isinstance(index, expected):
        return f"the FAISS file holds a {type(index).__name__}, the manifest says {spec.kind}"
    if index.metric_type != faiss.METRIC_L1:
        return "the FAISS index does not use the L1 metric"
    if index.ntotal != rows or index.d != dim:
        return f"the FAISS index holds {index.ntotal} × {index.d}-d vectors, the manifest says {rows} × {dim}"
    if spec.kind == "ivf" and index.nlist != spec.nlist:
        return f"the FAISS index has {index.nlist} lists, the manifest says {spec.nlist}"
    return None
