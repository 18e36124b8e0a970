"""Building an index from corpus files of any size, streamed: memory holds a chunk, not the corpus.

``build_index`` writes straight into the staging folder of the index's next generation
(``index_folder.commit``; nothing is visible until the manifest names it, and a failed or
killed build leaves the folder as it was):

1. **read and encode**: an engine yields the corpus's documents a chunk at a time with their
   vectors, in corpus order; the documents go to ``documents.sqlite`` and the vectors are
   appended to ``vectors.npy`` as they come;
2. **index**: the kind is chosen from the count (``kind="auto"``, ``choice.py``) and its FAISS
   file written from the vector file (``IndexKind.write_streamed``): an IVF is trained on
   the same seeded sample as an in-memory build, the engine assigns every row to its list,
   and the lists are written a block at a time.

An engine is where the work runs: ``LocalEngine`` (this process) or ``RayEngine``
(``ray_engine.py``, a Ray cluster), looked up by name in ``ENGINES``; another (Spark, say)
is one class with ``encode``, ``assign`` and ``close``. Every engine reads the files with
``data.stream_corpus`` and encodes with the same encoder, whose vectors do not depend on the
batch they were encoded in, so every engine writes the same index, byte for byte.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from . import index_folder, kinds
from .choice import DEFAULT_RERANK_FACTOR, check_options, resolve
from .data import CORPUS_CHUNK, Corpus, stream_corpus
from .documents import DocumentsFile
from .encoder import Encoder
from .errors import InputError
from .index_folder import DOCUMENTS_FILE, FAISS_FILE, VECTORS_FILE, Contents
from .lexical import LexicalWriter
from .mutations import check_id
from .progress import Progress

ASSIGN_ROWS = 1 << 18  # rows a list assignment takes at once (64 MiB of 64-d vectors)


@dataclass(frozen=True)
class Source:
    """One corpus file and how to read it (picklable: engines hand it to their workers)."""

    path: Path
    text_column: str | None = None
    id_column: str | None = None
    id_prefix: str = ""
    chunk_size: int = CORPUS_CHUNK

    def read(self) -> Iterator[Corpus]:
        return stream_corpus(self.path, self.text_column, self.id_column, self.chunk_size, self.id_prefix)


def corpus_sources(corpus: str | Path | Sequence[str | Path], text_column: str | None = None,
                   id_column: str | None = None, chunk_size: int = CORPUS_CHUNK) -> list[Source]:
    """The files of ``corpus`` (files, and folders read recursively in name order, skipping
    names that start with ``.`` or ``_`` such as Spark's ``_SUCCESS``). With more than one
    file, ids made from line or record numbers are prefixed with the file's name (``a.txt:7``)."""
    paths = [Path(corpus)] if isinstance(corpus, (str, Path)) else [Path(p) for p in corpus]
    if not paths:
        raise InputError("no corpus files given", argument="corpus")
    files: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith((".", "_")) for part in p.relative_to(path).parts))
            if not found:
                raise InputError(f"{path}: the folder holds no corpus files", path=path)
            files += [(p, p.relative_to(path).as_posix()) for p in found]
        else:
            files.append((path, path.name))
    several = len(files) > 1
    return [Source(p, text_column, id_column, f"{name}:" if several else "", chunk_size) for p, name in files]


class VectorFile:
    """``vectors.npy`` written a chunk at a time and read back a block at a time, never mapped
    whole (mapped pages count as the process's memory). The header is written first for 0
    rows and rewritten for the final count: NumPy pads it so that the count can grow in place."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim, self.rows = path, dim, 0
        self._file = open(path, "w+b")  # noqa: SIM115 (closed by finish)
        self._header(0)
        self.offset = self._file.tell()

    def _header(self, rows: int) -> None:
        self._file.seek(0)
        np.lib.format.write_array_header_1_0(
            self._file, {"descr": "<f4", "fortran_order": False, "shape": (rows, self.dim)})

    def append(self, vectors: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        self.rows += len(vectors)

    def finish(self) -> None:
        """Write the final count into the header."""
        self._header(self.rows)
        if self._file.tell() != self.offset:
            raise RuntimeError("the vectors file's header outgrew its room")
        self._file.seek(0, 2)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.rows, rows):
            yield start, self._read(start, min(rows, self.rows - start))

    def _read(self, start: int, count: int) -> np.ndarray:
        self._file.seek(self.offset + 4 * self.dim * start)
        return np.fromfile(self._file, dtype=np.float32, count=count * self.dim).reshape(count, self.dim)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The rows at sorted ``positions``, picked from sequential block reads."""
        out = np.empty((len(positions), self.dim), np.float32)
        if not len(positions):
            return out
        for start, block in self.blocks(kinds.STREAM_BLOCK_ROWS):
            lo, hi = np.searchsorted(positions, [start, start + len(block)])
            out[lo:hi] = block[positions[lo:hi] - start]
            if hi == len(positions):
                break
        return out


class Engine(Protocol):
    """Where a streamed build's work runs."""

    def encode(self, sources: Sequence[Source], encoder: Encoder) -> Iterator[tuple[Corpus, np.ndarray]]:
        """Every chunk of documents of ``sources`` with its vectors, in corpus order."""

    def assign(self, centroids: np.ndarray, vectors: VectorFile) -> np.ndarray:
        """The IVF list (nearest centroid by L1, as FAISS's IVF ``add`` assigns) of every row."""

    def close(self) -> None:
        """Release what the engine started."""


def nearest_centroids(centroids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Each vector's IVF list: FAISS's own assignment, on a flat L1 quantiser of ``centroids``."""
    quantizer = faiss.IndexFlat(centroids.shape[1], faiss.METRIC_L1)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return quantizer.assign(np.ascontiguousarray(vectors, dtype=np.float32), 1).ravel()


class LocalEngine:
    """This process: encoding on ``Encoder.encode``'s threads, assignment on FAISS's."""

    def encode(self, sources: Sequence[Source], encoder: Encoder) -> Iterator[tuple[Corpus, np.ndarray]]:
        for source in sources:
            for chunk in source.read():
                yield chunk, encoder.encode(chunk.texts) if len(chunk) else np.empty((0, encoder.dim), np.float32)

    def assign(self, centroids: np.ndarray, vectors: VectorFile) -> np.ndarray:
        lists = np.empty(vectors.rows, np.int64)
        for start, block in vectors.blocks(ASSIGN_ROWS):
            lists[start : start + len(block)] = nearest_centroids(centroids, block)
        return lists

    def close(self) -> None:
        pass


ENGINES = {"local": "siamsearch.build:LocalEngine", "ray": "siamsearch.ray_engine:RayEngine"}
"""The registry: engine name → its class (imported when asked for, so Ray loads only for ``ray``)."""


def make_engine(name: str, **options: object) -> Engine:
    """The engine ``name`` with its options (``RayEngine``: ``address``, ``workers``)."""
    if name not in ENGINES:
        raise InputError(f"build engine {name!r} is not one of {', '.join(ENGINES)}", argument="engine")
    module, cls = ENGINES[name].split(":")
    return getattr(import_module(module), cls)(**options)


@dataclass(frozen=True)
class Built:
    """What ``build_index`` committed."""

    path: Path
    generation: int
    documents: int
    skipped: int
    kind: kinds.IndexKind
    seconds: float


def build_index(corpus: str | Path | Sequence[str | Path], out: str | Path, encoder: Encoder,
                kind: str = "auto", max_memory: int | None = None, rerank_factor: int = DEFAULT_RERANK_FACTOR,
                text_column: str | None = None, id_column: str | None = None,
                engine: str | Engine = "local", progress: Progress | None = None,
                chunk_size: int = CORPUS_CHUNK, trained: faiss.Index | None = None, **params: int) -> Built:
    """Encode corpus files and commit them as the next generation of the index at ``out``,
    streamed (see the module docstring): peak memory follows ``chunk_size`` and the kind's
    in-memory structure (none for flat and ivf; HNSW's graph), not the corpus. Options are
    ``SearchIndex.build``'s; ``engine`` is ``"local"``, ``"ray"`` or an ``Engine``. Example:
    ``build_index("faq.tsv", "indexes/faq", Encoder.load(), text_column="question")``;
    ``build_index("corpus/", "indexes/all", enc, engine=make_engine("ray", address="auto"))``.
    ``trained``: the empty, trained FAISS index whose quantiser the shards of a sharded index
    share (``shards.build_sharded``)."""
    started = time.perf_counter()
    sources = corpus_sources(corpus, text_column, id_column, chunk_size)
    check_options(kind, rerank_factor, params)
    index_folder.check_index_path(out)
    runner = make_engine(engine) if isinstance(engine, str) else engine

    def write(stage: Path) -> tuple[Contents, int]:
        vectors, documents = VectorFile(stage / VECTORS_FILE, encoder.dim), DocumentsFile(stage / DOCUMENTS_FILE)
        lexical = LexicalWriter(stage)
        skipped = 0
        try:
            for chunk, encoded in runner.encode(sources, encoder):
                _append(documents, chunk)
                lexical.add(chunk.texts)
                vectors.append(encoded)
                skipped += chunk.skipped
                if progress and len(chunk):
                    progress("encode", len(chunk), 0)
            vectors.finish()
            n = vectors.rows
            spec = resolve(kind, n, encoder.dim, max_memory, params)

            def assign(centroids: np.ndarray) -> np.ndarray:
                lists = runner.assign(centroids, vectors)
                if progress:
                    progress("index", n, n)
                return lists

            if progress:
                progress("index", 0, n)  # starts the stage's clock
            spec.write_streamed(str(stage / FAISS_FILE), vectors, assign, trained)
            lexical.finish()
            if progress and spec.name != "ivf":
                progress("index", n, n)
        finally:
            vectors.close()
            documents.close()
        return Contents(spec, n, n, rerank_factor), skipped

    try:
        generation, contents, skipped = index_folder.commit(out, encoder, write)
    finally:
        if isinstance(engine, str):
            runner.close()
    return Built(Path(out), generation, contents.documents, skipped, contents.kind, time.perf_counter() - started)


def _append(documents: DocumentsFile, chunk: Corpus) -> None:
    ids = [check_id(i) for i in chunk.ids]
    taken = documents.append(ids, chunk.texts, chunk.metadata)
    if taken is not None:
        line = chunk.lines[len(ids) - 1 - ids[::-1].index(taken)]
        raise InputError(f"{chunk.source} line {line}: duplicate id {taken!r}", path=Path(chunk.source), line=line)
