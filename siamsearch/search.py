"""``SearchIndex``: encode a corpus, find candidates with FAISS, rank them by the exact score.

Query: encode → ``k × rerank_factor`` nearest candidates from FAISS (L1), plus one for each
tombstone → drop tombstones → exact exp(-Σ|q - d|) against the stored float32 vectors →
top ``k``, ties broken by id. The score of a hit is therefore exactly what the Siamese
model predicts for (query, document).

Changes (``add``, ``upsert``, ``remove``, ``compact``) happen in memory and become durable
with ``save``. Vectors are append-only: a removed or replaced document leaves a tombstone
(its row stays in FAISS, which cannot delete from HNSW, and is filtered before re-ranking)
until ``compact`` rebuilds FAISS from the live vectors, without re-encoding.

On disk (see ``indexes/README.md``)::

    NAME/
      manifest.json        the commit point: format, generation, fingerprint, kind, counts
      .lock                writers hold it (flock) while they commit
      gen-000007/
        readers.lock       readers hold it (shared flock) while they open this generation
        index.faiss        FAISS index, METRIC_L1
        vectors.npy        (rows, 64) float32 encodings, the exact re-rank source (memory-mapped)
        documents.sqlite   position, id, text, metadata (JSON) of the live documents
        encoder/           a copy of the model directory the index was built with

A save writes the next generation beside the current one, then atomically replaces
``manifest.json`` to point at it, then deletes older generations that no reader is opening
(those are left to the next save). An interrupted save leaves the committed index
untouched. The manifest is validated against ``MANIFEST_SCHEMA`` and holds no paths, only a
generation number, so a tampered manifest cannot point outside the folder.
"""

from __future__ import annotations

import hashlib
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
import jsonschema
import numpy as np

from . import __version__
from . import index as faiss_index
from .documents import Documents
from .encoder import Encoder
from .errors import IndexDirectoryError, InputError, ModelDirectoryError, SiamsearchError
from .index import IndexSpec
from .scoring import exp_neg_l1
from .storage import fsync_tree, reader_lock, remove_unless_read, write_json_atomic, writer_lock
from .text import normalize

INDEX_FORMAT = "siamsearch-index"
INDEX_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
FAISS_FILE, VECTORS_FILE, DOCUMENTS_FILE, ENCODER_DIR = "index.faiss", "vectors.npy", "documents.sqlite", "encoder"
READERS_LOCK = "readers.lock"
GENERATION = re.compile(r"gen-(\d{6})")
DEFAULT_RERANK_FACTOR = 4
LOAD_ATTEMPTS = 10  # a reader retries if a generation is removed between reading the manifest and locking it
VERIFY_ALL_MAX_BYTES = 256 << 20  # memory-mapped opens hash the data files up to this size (~0.2 s), else check sizes

_COUNT = {"type": "integer", "minimum": 0}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
HASHED_FILES = (FAISS_FILE, VECTORS_FILE, DOCUMENTS_FILE)
MANIFEST_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "format_version", "siamsearch_version", "generation", "created", "encoder_fingerprint",
                 "metric", "dimension", "index", "rerank_factor", "counts", "files"],
    "properties": {
        "format": {"const": INDEX_FORMAT},
        "format_version": {"const": INDEX_FORMAT_VERSION},
        "siamsearch_version": {"type": "string"},
        "generation": {"type": "integer", "minimum": 1, "maximum": 999_999},
        "created": {"type": "string"},
        "encoder_fingerprint": _SHA256,
        "metric": {"const": "L1"},
        "dimension": {"type": "integer", "minimum": 1},
        "index": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe"],
            "properties": {"kind": {"enum": list(faiss_index.KINDS)}, "hnsw_m": {"type": "integer", "minimum": 2},
                           "ef_construction": {"type": "integer", "minimum": 1},
                           "ef_search": {"type": "integer", "minimum": 1},
                           "nlist": {"type": "integer", "minimum": 0}, "nprobe": {"type": "integer", "minimum": 0}},
        },
        "rerank_factor": {"type": "integer", "minimum": 1},
        "counts": {"type": "object", "additionalProperties": False, "required": ["documents", "rows"],
                   "properties": {"documents": _COUNT, "rows": _COUNT}},
        "files": {"type": "object", "additionalProperties": False, "required": list(HASHED_FILES),
                  "properties": {name: {"type": "object", "additionalProperties": False, "required": ["sha256", "bytes"],
                                        "properties": {"sha256": _SHA256, "bytes": _COUNT}}
                                 for name in HASHED_FILES}},
    },
}

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


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a whole number of at least 1, got {k!r}")
    return int(k)


def _check_id(doc_id: object) -> str:
    doc_id = str(doc_id)
    if not doc_id.strip() or any(c in doc_id for c in "\t\n\r\x00"):
        raise InputError(f"document id {doc_id!r} is blank or holds a tab, line break or NUL; ids must be one line")
    return doc_id


class SearchIndex:
    """A searchable corpus: documents, their encodings, a FAISS index and the encoder."""

    def __init__(self, encoder: Encoder, faiss_index_: faiss.Index | None, vectors: np.ndarray,
                 documents: Documents, spec: IndexSpec, rerank_factor: int = DEFAULT_RERANK_FACTOR,
                 origin: tuple[Path, int] | None = None, mapped: bool = False):
        self.encoder = encoder
        self.faiss_index = faiss_index_  # None until the first documents arrive (IVF trains on them)
        self._mapped = mapped  # FAISS data memory-mapped from a file: copied to memory before a change
        self.vectors = vectors
        self.documents = documents
        self.spec = spec
        self.rerank_factor = rerank_factor
        self._origin = origin  # (directory, generation) this state was loaded from or saved to

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def generation(self) -> int | None:
        """The committed generation this state was loaded from or last saved as (None: never saved)."""
        return None if self._origin is None else self._origin[1]

    @property
    def rows(self) -> int:
        """Vectors held, tombstones included."""
        return 0 if self.faiss_index is None else int(self.faiss_index.ntotal)

    @property
    def tombstones(self) -> int:
        return self.rows - len(self)

    @classmethod
    def build(cls, texts: Sequence[str], encoder: Encoder, ids: Sequence[str] | None = None,
              metadata: Sequence[dict] | None = None, kind: str = "auto", max_memory: int | None = None,
              rerank_factor: int = DEFAULT_RERANK_FACTOR, progress: BuildProgress | None = None,
              **params: int) -> SearchIndex:
        """Encode ``texts`` and index them. ``ids`` default to "0", "1", …; ``params`` are IndexSpec
        fields; ``kind="auto"`` chooses from the corpus size and ``max_memory`` (bytes, see index.py)."""
        if isinstance(texts, str):
            raise InputError("texts must be a list of documents, not one string")
        if not texts:
            raise InputError("the corpus is empty: nothing to index")
        if isinstance(rerank_factor, bool) or not isinstance(rerank_factor, int) or rerank_factor < 1:
            raise InputError(f"rerank factor must be a whole number of at least 1, got {rerank_factor!r}")
        if kind == "auto":
            kind = faiss_index.choose_kind(len(texts), encoder.dim, max_memory, params.get("hnsw_m", IndexSpec.hnsw_m))
        spec = IndexSpec(kind=kind, **params).for_corpus(len(texts))
        index = cls(encoder, None, np.empty((0, encoder.dim), np.float32), Documents.create(), spec, rerank_factor)
        index.add(texts, ids, metadata, progress)
        return index

    # -- changes -------------------------------------------------------------------------
    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict] | None = None,
            progress: BuildProgress | None = None) -> list[str]:
        """Add new documents; an id that already exists is an error (see ``upsert``). Returns the ids."""
        texts, ids, metadata = self._checked(texts, ids, metadata)
        taken = self.documents.positions(ids)
        if taken:
            raise InputError(f"document id {next(iter(taken))!r} already exists; use upsert to replace it")
        self._append(texts, ids, metadata, {}, progress)
        return ids

    def upsert(self, texts: Sequence[str], ids: Sequence[str], metadata: Sequence[dict] | None = None,
               progress: BuildProgress | None = None) -> int:
        """Add documents, replacing those whose id exists. Returns how many were replaced."""
        if ids is None:
            raise InputError("upsert needs ids: they say which documents to replace")
        texts, ids, metadata = self._checked(texts, ids, metadata)
        replaced = self.documents.positions(ids)
        self._append(texts, ids, metadata, replaced, progress)
        return len(replaced)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id; an unknown id is an error and then nothing is removed."""
        if isinstance(ids, str):
            raise InputError("remove takes a list of ids")
        ids = [str(i) for i in ids]
        found = self.documents.positions(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise InputError(f"no document with id {missing[0]!r}; nothing was removed")
        self.documents.delete(list(found.values()))
        return len(found)

    def compact(self) -> int:
        """Drop tombstones: rebuild FAISS from the live vectors (no re-encoding). Returns how many."""
        dropped = self.tombstones
        live = self.documents.live_positions()
        vectors = np.asarray(self.vectors[live], dtype=np.float32)
        rebuilt = faiss_index.emptied(self.faiss_index)  # IVF keeps its centroids: nothing to retrain
        faiss_index.add(rebuilt, vectors)
        self.documents.renumber()
        self.faiss_index, self.vectors, self._mapped = rebuilt, vectors, False
        return dropped

    def _checked(self, texts: Sequence[str], ids: Sequence[str] | None,
                 metadata: Sequence[dict] | None) -> tuple[list[str], list[str], list[dict]]:
        if isinstance(texts, str):
            raise InputError("texts must be a list of documents, not one string")
        texts = [normalize(t) if isinstance(t, str) else t for t in texts]
        if ids is None:
            first = self.documents.max_numeric_id() + 1
            ids = [str(first + i) for i in range(len(texts))]
        ids = [_check_id(i) for i in ids]
        metadata = [{} for _ in texts] if metadata is None else [dict(m) for m in metadata]
        if not len(ids) == len(metadata) == len(texts):
            raise InputError(f"got {len(texts)} texts, {len(ids)} ids and {len(metadata)} metadata records")
        seen: set[str] = set()
        for doc_id, text in zip(ids, texts):
            if not isinstance(text, str) or not text:
                raise InputError(f"document {doc_id!r} is empty or whitespace only")
            if doc_id in seen:
                raise InputError(f"duplicate document id {doc_id!r}")
            seen.add(doc_id)
        return texts, ids, metadata

    def _append(self, texts: list[str], ids: list[str], metadata: list[dict], replaced: dict[str, int],
                progress: BuildProgress | None) -> None:
        """Encode first (the step that can fail or be interrupted), then change state."""

        def report(stage: str) -> Callable[[int], None] | None:
            return None if progress is None else (lambda n: progress(stage, n, len(texts)))

        vectors = self.encoder.encode(texts, progress=report("encode"))
        start = self.rows
        if self.faiss_index is None:
            self.faiss_index = faiss_index.create(self.spec, self.encoder.dim, vectors)
        elif self._mapped:
            self.faiss_index, self._mapped = faiss_index.in_memory(self.faiss_index), False
        faiss_index.add(self.faiss_index, vectors, progress=report("index"))
        self.vectors = vectors if start == 0 else np.concatenate([np.asarray(self.vectors, np.float32), vectors])
        self.documents.delete(list(replaced.values()))
        self.documents.insert(start, ids, texts, metadata)

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
        if not texts or not len(self):
            return [[] for _ in texts]
        encoded = self.encoder.encode(texts)
        n = min(self.rows, k * self.rerank_factor + self.tombstones)
        found = faiss_index.candidates(self.faiss_index, self.spec, encoded, n)
        return [self._rerank(q, np.unique(pos[pos >= 0]), k) for q, pos in zip(encoded, found)]

    def _rerank(self, query: np.ndarray, positions: np.ndarray, k: int) -> list[Hit]:
        """Score every candidate exactly, then read documents best-first only as far as needed:
        the first ``k`` live ones plus every candidate tied with the last (ties go by id)."""
        scores = exp_neg_l1(query, self.vectors[positions])
        order = np.argsort(-scores, kind="stable")
        end = min(k, len(order))
        while True:
            while end < len(order) and scores[order[end]] == scores[order[end - 1]]:
                end += 1
            docs = self.documents.get(positions[order[:end]])
            if len(docs) >= k or end == len(order):
                break
            end = min(len(order), end + k - len(docs) + self.tombstones)
        ranked = sorted(((scores[i], int(positions[i])) for i in order[:end] if int(positions[i]) in docs),
                        key=lambda sp: (-sp[0], docs[sp[1]][0]))[:k]
        return [Hit(rank, *docs[p][:2], float(score), docs[p][2]) for rank, (score, p) in enumerate(ranked, 1)]

    # -- on disk -----------------------------------------------------------------------
    def manifest(self, generation: int, files: dict[str, dict]) -> dict:
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
            "counts": {"documents": len(self), "rows": self.rows},
            "files": files,
        }

    def save(self, path: str | Path) -> None:
        """Commit this state as the next generation of ``path`` (see the module docstring).

        If this index was loaded from ``path`` and another writer has committed since, the
        save is refused rather than silently undoing that writer's changes.
        """
        path = Path(path)
        check_index_path(path)
        with writer_lock(path):
            committed = _committed_generation(path)
            if self._origin is not None and self._origin[0] == path.resolve() and committed != self._origin[1]:
                raise IndexDirectoryError(
                    f"{path}: another writer changed it since it was loaded (generation {self._origin[1]} → "
                    f"{committed}); load it again and repeat the change")
            generation = max([*_generations(path), committed or 0]) + 1
            final = path / f"gen-{generation:06d}"
            try:
                stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=path))
                try:
                    faiss_index.write(self.faiss_index, str(stage / FAISS_FILE))
                    np.save(stage / VECTORS_FILE, np.asarray(self.vectors, dtype=np.float32))
                    self.documents.save(stage / DOCUMENTS_FILE)
                    (stage / READERS_LOCK).touch()
                    (stage / ENCODER_DIR).mkdir()
                    self.encoder.write(stage / ENCODER_DIR)
                    fsync_tree(stage)
                    files = {name: {"sha256": _sha256(stage / name), "bytes": (stage / name).stat().st_size}
                             for name in HASHED_FILES}
                    os.replace(stage, final)
                finally:
                    shutil.rmtree(stage, ignore_errors=True)
                write_json_atomic(path / MANIFEST, self.manifest(generation, files))
            except (OSError, RuntimeError, sqlite3.Error) as e:
                raise SiamsearchError(f"{path}: cannot write the index ({e})") from None
            self._origin = (path.resolve(), generation)
            for old in path.iterdir():  # older generations and leftovers of interrupted saves
                if GENERATION.fullmatch(old.name) and old != final:
                    remove_unless_read(old, READERS_LOCK)
                elif old.name.endswith(".tmp"):
                    shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None, mmap: bool = False) -> SearchIndex:
        """Open an index folder. If ``encoder`` is given it must be the one the index was built with.

        Every data file's size is checked against the manifest, and its SHA-256 too unless
        ``mmap`` is set and the files exceed ``VERIFY_ALL_MAX_BYTES``: ``mmap`` leaves the FAISS
        data on disk (paged in as searches touch it), so opening a large index does not read
        and hash gigabytes first. A mapped index can still be
        changed; it is copied into memory first.
        """
        path = Path(path)
        for _ in range(LOAD_ATTEMPTS):
            manifest = _read_manifest(path)
            data = path / f"gen-{manifest['generation']:06d}"
            try:
                with reader_lock(data / READERS_LOCK):
                    return cls._open(path, manifest, encoder, mmap)
            except FileNotFoundError:
                if _committed_generation(path) == manifest["generation"]:
                    raise _damaged(path)(f"incomplete index, {data.name}/{READERS_LOCK} is missing") from None
                # else a writer committed and removed this generation before we locked it: retry
        raise IndexDirectoryError(f"{path}: it changed {LOAD_ATTEMPTS} times while being opened; try again")

    @classmethod
    def _open(cls, path: Path, manifest: dict, encoder: Encoder | None, mmap: bool) -> SearchIndex:
        damaged = _damaged(path)
        generation, fingerprint, dim = manifest["generation"], manifest["encoder_fingerprint"], manifest["dimension"]
        n_docs, rows = manifest["counts"]["documents"], manifest["counts"]["rows"]
        data = path / f"gen-{generation:06d}"
        if encoder is not None and encoder.fingerprint != fingerprint:
            raise IndexDirectoryError(
                f"{path}: built with encoder {fingerprint[:12]}, not with the given model "
                f"({encoder.fingerprint[:12]}); rebuild the index with this model, or leave the model out")
        for name in (FAISS_FILE, VECTORS_FILE, DOCUMENTS_FILE, ENCODER_DIR):
            if not (data / name).exists():
                raise damaged(f"incomplete index, {data.name}/{name} is missing")
        files = manifest["files"]
        for name, expected in files.items():
            if (data / name).stat().st_size != expected["bytes"]:
                raise damaged(f"{data.name}/{name} is {(data / name).stat().st_size:,} bytes, "
                              f"the manifest says {expected['bytes']:,}")
        if not mmap or sum(f["bytes"] for f in files.values()) <= VERIFY_ALL_MAX_BYTES:
            for name, expected in files.items():  # catches corrupted and swapped files
                if _sha256(data / name) != expected["sha256"]:
                    raise damaged(f"{data.name}/{name} does not match the checksum in {MANIFEST}")
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
            built = faiss_index.read(str(data / FAISS_FILE), mmap)
            documents = Documents.open(data / DOCUMENTS_FILE)
            top = documents.max_position()
        except (OSError, ValueError, RuntimeError, sqlite3.Error) as e:
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise damaged(f"a data file cannot be read ({first_line})") from None
        if vectors.dtype != np.float32 or vectors.shape != (rows, dim):
            raise damaged(f"{VECTORS_FILE} holds {vectors.shape} {vectors.dtype}, expected ({rows}, {dim}) float32")
        if len(documents) != n_docs or top >= rows:
            raise damaged(f"{DOCUMENTS_FILE} holds {len(documents)} documents up to row {top}, "
                          f"the manifest says {n_docs} in {rows} rows")
        spec = IndexSpec.from_dict(manifest["index"])
        problem = faiss_index.check(built, spec, rows, dim)
        if problem:
            raise damaged(problem)
        return cls(encoder, built, vectors, documents, spec, manifest["rerank_factor"], (path.resolve(), generation),
                   mapped=mmap)


def check_index_path(path: Path) -> None:
    """Refuse an index path that exists and is neither empty nor an index (before encoding a corpus)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory; choose another index path")
    if path.is_dir() and not (path / MANIFEST).exists() and not _generations(path) and any(
            not p.name.startswith(".") for p in path.iterdir()):
        raise InputError(f"{path}: exists and is not a siamsearch index; choose another path or empty it")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _damaged(path: Path) -> Callable[[str], IndexDirectoryError]:
    return lambda why: IndexDirectoryError(f"{path}: {why}; rebuild it with 'siamsearch build-index'")


def _read_manifest(path: Path) -> dict:
    if not (path / MANIFEST).is_file():
        if not path.exists():
            raise IndexDirectoryError(f"{path}: no such index; build one with 'siamsearch build-index'")
        raise _damaged(path)(f"not a siamsearch index ({MANIFEST} is missing)")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(path)(f"{MANIFEST} is unreadable ({e})") from None
    if isinstance(manifest, dict) and manifest.get("format") == INDEX_FORMAT and \
            manifest.get("format_version") != INDEX_FORMAT_VERSION:
        raise IndexDirectoryError(
            f"{path}: index format version {manifest.get('format_version')!r} is not supported by "
            f"siamsearch {__version__} (expects {INDEX_FORMAT_VERSION}); rebuild the index")
    try:
        jsonschema.validate(manifest, MANIFEST_SCHEMA)
    except jsonschema.ValidationError as e:
        where = "/".join(map(str, e.absolute_path)) or "top level"
        raise _damaged(path)(f"{MANIFEST} is invalid at {where}: {e.message[:200]}") from None
    return manifest


def _committed_generation(path: Path) -> int | None:
    try:
        return int(json.loads((path / MANIFEST).read_text(encoding="utf-8"))["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _generations(path: Path) -> list[int]:
    if not path.is_dir():
        return []
    return [int(m.group(1)) for p in path.iterdir() if (m := GENERATION.fullmatch(p.name))]
