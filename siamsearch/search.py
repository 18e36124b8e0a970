"""``SearchIndex``: encode a corpus, find candidates with FAISS, rank them by the exact score.

Query: encode → ``k × rerank_factor`` nearest candidates from FAISS (L1) → exact
exp(-Σ|q - d|) against the stored float32 vectors → top ``k``, ties broken by id. The score
of a hit is therefore exactly what the Siamese model predicts for (query, document).

On disk (see ``indexes/README.md``)::

    NAME/
      manifest.json        the commit point: format, generation, fingerprint, kind, counts
      gen-000001/
        index.faiss        FAISS index, METRIC_L1
        vectors.npy        (n, 64) float32 encodings, the exact re-rank source (memory-mapped)
        documents.sqlite   position, id, text, metadata (JSON)
        encoder/           a copy of the model directory the index was built with

A save writes a new generation directory beside the current one, then atomically replaces
``manifest.json`` to point at it, then deletes older generations: an interrupted save
leaves the previous index untouched and loadable. The manifest holds no paths, only a
generation number, so a tampered manifest cannot point outside the folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from . import __version__
from . import index as faiss_index
from .encoder import Encoder
from .errors import IndexDirectoryError, InputError, ModelDirectoryError, SiamsearchError
from .index import IndexSpec
from .scoring import exp_neg_l1
from .storage import fsync_tree, write_json_atomic
from .text import normalize

INDEX_FORMAT = "siamsearch-index"
INDEX_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FAISS_FILE, VECTORS_FILE, DOCUMENTS_FILE, ENCODER_DIR = "index.faiss", "vectors.npy", "documents.sqlite", "encoder"
GENERATION = re.compile(r"gen-(\d{6})")
DEFAULT_RERANK_FACTOR = 4

BuildProgress = Callable[[str, int, int], None]
"""Called with a stage ("encode" or "index"), the documents it just finished, and the total."""


@dataclass(frozen=True)
class Hit:
    """One search result; ``score`` is the Siamese model's prediction for (query, document)."""

    rank: int
    id: str
    text: str
    score: float
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rank": self.rank, "id": self.id, "text": self.text, "score": self.score, "metadata": self.metadata}


class Documents:
    """Documents by position (the FAISS id), in SQLite: in memory while building, a file once saved."""

    SCHEMA = ("CREATE TABLE documents (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
              "text TEXT NOT NULL, metadata TEXT NOT NULL)")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._count = conn.execute("SELECT count(*) FROM documents").fetchone()[0]

    @classmethod
    def create(cls, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict]) -> Documents:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.execute(cls.SCHEMA)
        conn.executemany("INSERT INTO documents VALUES (?, ?, ?, ?)",
                         ((i, d, t, json.dumps(m, ensure_ascii=False)) for i, (d, t, m) in
                          enumerate(zip(ids, texts, metadata))))
        conn.commit()
        return cls(conn)

    @classmethod
    def open(cls, path: Path) -> Documents:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        return cls(conn)

    def save(self, path: Path) -> None:
        with sqlite3.connect(path) as target:
            self.conn.backup(target)
        target.close()

    def __len__(self) -> int:
        return self._count

    def get(self, positions: Sequence[int]) -> dict[int, tuple[str, str, dict]]:
        """position → (id, text, metadata)."""
        marks = ",".join("?" * len(positions))
        rows = self.conn.execute(
            f"SELECT position, id, text, metadata FROM documents WHERE position IN ({marks})",
            [int(p) for p in positions])
        return {p: (i, t, json.loads(m)) for p, i, t, m in rows}


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a whole number of at least 1, got {k!r}")
    return int(k)


class SearchIndex:
    """A searchable corpus: documents, their encodings, a FAISS index and the encoder."""

    def __init__(self, encoder: Encoder, faiss_index_: faiss.Index, vectors: np.ndarray, documents: Documents,
                 spec: IndexSpec, rerank_factor: int = DEFAULT_RERANK_FACTOR):
        self.encoder = encoder
        self.faiss_index = faiss_index_
        self.vectors = vectors
        self.documents = documents
        self.spec = spec
        self.rerank_factor = rerank_factor

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @classmethod
    def build(cls, texts: Sequence[str], encoder: Encoder, ids: Sequence[str] | None = None,
              metadata: Sequence[dict] | None = None, kind: str = "auto",
              rerank_factor: int = DEFAULT_RERANK_FACTOR, progress: BuildProgress | None = None,
              **params: int) -> SearchIndex:
        """Encode ``texts`` and index them. ``ids`` default to "0", "1", …; ``params`` are IndexSpec fields."""
        if isinstance(texts, str):
            raise InputError("texts must be a list of documents, not one string")
        texts = [normalize(t) for t in texts]
        if not texts:
            raise InputError("the corpus is empty: nothing to index")
        ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
        metadata = [{} for _ in texts] if metadata is None else [dict(m) for m in metadata]
        if not len(ids) == len(metadata) == len(texts):
            raise InputError(f"got {len(texts)} texts, {len(ids)} ids and {len(metadata)} metadata records")
        seen: set[str] = set()
        for doc_id, text in zip(ids, texts):
            if not text:
                raise InputError(f"document {doc_id!r} is empty or whitespace only")
            if doc_id in seen:
                raise InputError(f"duplicate document id {doc_id!r}")
            seen.add(doc_id)
        if isinstance(rerank_factor, bool) or not isinstance(rerank_factor, int) or rerank_factor < 1:
            raise InputError(f"rerank factor must be a whole number of at least 1, got {rerank_factor!r}")
        spec = IndexSpec(kind=faiss_index.resolve_kind(kind, len(texts)), **params)

        def report(stage: str) -> Callable[[int], None] | None:
            return None if progress is None else (lambda n: progress(stage, n, len(texts)))

        vectors = encoder.encode(texts, progress=report("encode"))
        built = faiss_index.build(vectors, spec, progress=report("index"))
        return cls(encoder, built, vectors, Documents.create(ids, texts, metadata), spec, rerank_factor)

    # -- search ------------------------------------------------------------------------
    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top-k hits for each query, ranked by exact exp(-L1), ties by id."""
        if isinstance(queries, str):
            raise InputError("search_batch takes a list of queries; use search() for one")
        k = _check_k(k)
        texts = [normalize(q) if isinstance(q, str) else q for q in queries]
        for i, q in enumerate(texts):
            if not isinstance(q, str) or not q:
                raise InputError(f"query #{i + 1} is empty or whitespace only; give some text to search for")
        if not texts:
            return []
        encoded = self.encoder.encode(texts)
        n = min(len(self), k * self.rerank_factor)
        found = faiss_index.candidates(self.faiss_index, self.spec, encoded, n)
        return [self._rerank(q, np.unique(pos[pos >= 0]), k) for q, pos in zip(encoded, found)]

    def _rerank(self, query: np.ndarray, positions: np.ndarray, k: int) -> list[Hit]:
        scores = exp_neg_l1(query, self.vectors[positions])
        docs = self.documents.get(positions)
        ranked = sorted(zip(scores.tolist(), positions.tolist()), key=lambda sp: (-sp[0], docs[sp[1]][0]))[:k]
        return [Hit(rank, *docs[p][:2], score, docs[p][2]) for rank, (score, p) in enumerate(ranked, 1)]

    # -- on disk -----------------------------------------------------------------------
    def manifest(self, generation: int) -> dict:
        return {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "siamsearch_version": __version__,
            "generation": generation,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "encoder_fingerprint": self.encoder.fingerprint,
            "metric": "L1",
            "dimension": self.encoder.dim,
            "index": self.spec.to_dict(),
            "rerank_factor": self.rerank_factor,
            "counts": {"documents": len(self)},
        }

    def save(self, path: str | Path) -> None:
        """Write a new generation and commit it by replacing manifest.json (see module docstring)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: exists and is not a directory; choose another index path")
        existing = _generations(path)
        if path.is_dir() and not existing and not (path / MANIFEST).exists() and any(
                not p.name.startswith(".") for p in path.iterdir()):
            raise InputError(f"{path}: exists and is not a siamsearch index; choose another path or empty it")
        generation = max(existing, default=0) + 1
        final = path / f"gen-{generation:06d}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=path))
            try:
                faiss.write_index(self.faiss_index, str(stage / FAISS_FILE))
                np.save(stage / VECTORS_FILE, np.asarray(self.vectors, dtype=np.float32))
                self.documents.save(stage / DOCUMENTS_FILE)
                (stage / ENCODER_DIR).mkdir()
                self.encoder.write(stage / ENCODER_DIR)
                fsync_tree(stage)
                os.replace(stage, final)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
            write_json_atomic(path / MANIFEST, self.manifest(generation))
        except (OSError, RuntimeError, sqlite3.Error) as e:
            raise SiamsearchError(f"{path}: cannot write the index ({e})") from None
        for old in path.iterdir():  # older generations and leftovers of interrupted saves
            if old != final and (GENERATION.fullmatch(old.name) or old.name.endswith(".tmp")):
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> SearchIndex:
        """Open an index folder. If ``encoder`` is given it must be the one the index was built with."""
        path = Path(path)

        def damaged(why: str) -> IndexDirectoryError:
            return IndexDirectoryError(f"{path}: {why}; rebuild it with 'siamsearch build-index'")

        if not (path / MANIFEST).is_file():
            if not path.exists():
                raise IndexDirectoryError(f"{path}: no such index; build one with 'siamsearch build-index'")
            raise damaged(f"not a siamsearch index ({MANIFEST} is missing)")
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("format") != INDEX_FORMAT:
                raise ValueError("not a siamsearch index manifest")
            if manifest.get("format_version") != INDEX_FORMAT_VERSION:
                raise IndexDirectoryError(
                    f"{path}: index format version {manifest.get('format_version')!r} is not supported by "
                    f"siamsearch {__version__} (expects {INDEX_FORMAT_VERSION}); rebuild the index")
            generation = manifest["generation"]
            if isinstance(generation, bool) or not isinstance(generation, int) or not 0 < generation < 10**6:
                raise ValueError("bad generation")
            spec = IndexSpec.from_dict(manifest["index"])
            fingerprint, dim = str(manifest["encoder_fingerprint"]), int(manifest["dimension"])
            n_docs, rerank_factor = int(manifest["counts"]["documents"]), int(manifest["rerank_factor"])
            if manifest.get("metric") != "L1" or rerank_factor < 1:
                raise ValueError("bad metric or rerank factor")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, InputError) as e:
            raise damaged(f"{MANIFEST} is unreadable or invalid ({e})") from None
        data = path / f"gen-{generation:06d}"
        for name in (FAISS_FILE, VECTORS_FILE, DOCUMENTS_FILE, ENCODER_DIR):
            if not (data / name).exists():
                raise damaged(f"incomplete index, {data.name}/{name} is missing")

        if encoder is not None and encoder.fingerprint != fingerprint:
            raise IndexDirectoryError(
                f"{path}: built with encoder {fingerprint[:12]}, not with the given model "
                f"({encoder.fingerprint[:12]}); rebuild the index with this model, or leave the model out")
        if encoder is None:
            try:
                encoder = Encoder.load(data / ENCODER_DIR)
            except ModelDirectoryError as e:
                raise damaged(f"its encoder copy is damaged ({e})") from None
            if encoder.fingerprint != fingerprint:
                raise damaged("its encoder copy does not match the manifest's fingerprint")
        if encoder.dim != dim:
            raise damaged(f"the manifest says {dim}-d vectors, the encoder makes {encoder.dim}-d")
        try:
            vectors = np.load(data / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
            built = faiss.read_index(str(data / FAISS_FILE))
            documents = Documents.open(data / DOCUMENTS_FILE)
        except (OSError, ValueError, RuntimeError, sqlite3.Error) as e:
            raise damaged(f"a data file cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if vectors.dtype != np.float32 or vectors.shape != (n_docs, dim):
            raise damaged(f"{VECTORS_FILE} holds {vectors.shape} {vectors.dtype}, expected ({n_docs}, {dim}) float32")
        if len(documents) != n_docs:
            raise damaged(f"{DOCUMENTS_FILE} holds {len(documents)} documents, the manifest says {n_docs}")
        problem = faiss_index.check(built, spec, n_docs, dim)
        if problem:
            raise damaged(problem)
        return cls(encoder, built, vectors, documents, spec, rerank_factor)


def _generations(path: Path) -> list[int]:
    if not path.is_dir():
        return []
    return [int(m.group(1)) for p in path.iterdir() if (m := GENERATION.fullmatch(p.name))]
