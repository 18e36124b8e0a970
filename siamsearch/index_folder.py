"""The index folder on disk: manifest schema, generations, save, load and verification.

Layout (``indexes/README.md`` documents it field by field)::

    NAME/
      manifest.json        the commit point: format, generation, fingerprint, kind, counts
      .lock                writers hold it (flock) while they commit
      gen-000007/
        readers.lock       readers hold it (shared flock) while they open this generation
        index.faiss        FAISS index, METRIC_L1                                          ┐ the base:
        vectors.npy        (base rows, 64) float32 encodings, the exact re-rank source     │ hard links to an
        documents.sqlite   position, id, text, metadata (JSON) of the base's documents     │ older generation's
        lexical_*.npy      BM25 over the base's rows: terms, postings, lengths, heads,    ┘ (lexical.py)
                           and the postings by row (forward, forward_starts)
        delta.npy          (rows added since the base, 64) float32, searched exactly       ┐ optional: the
        delta.sqlite       documents added since the base; base positions removed since    ┘ change since the base
        encoder/           a copy of the model directory the index was built with

A save writes the next generation in a staging folder beside the current one
(``storage.staged_directory``), then atomically replaces ``manifest.json`` to point at it,
then deletes older generations that no reader is opening (those are left to the next save).
A save of an index loaded from the folder links the base files it loaded, which are never
written again, and writes only the delta: a commit costs the change, not the index
(``mutations.DELTA_MAX_ROWS`` bounds the delta; beyond it the save writes a new base).
An interrupted save leaves the committed index untouched. The manifest is validated against
``MANIFEST_SCHEMA``, its ``index`` settings by their kind, and it holds no paths, only a
generation number, so a tampered manifest cannot point outside the folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import faiss
import jsonschema
import numpy as np

from . import kinds, model_folder
from .documents import Documents
from .encoder import Encoder
from .errors import BUILD_INDEX, ConflictError, IndexDirectoryError, InputError, ModelDirectoryError, SiamsearchError
from .lexical import FORWARD_FILE, FORWARD_FILES, LEXICAL_FILES, LexicalIndex, Postings
from .state import BaseFiles, IndexState
from .storage import (
    check_output_dir,
    reader_lock,
    remove_unless_read,
    sha256_file,
    staged_directory,
    write_json_atomic,
    writer_lock,
)
from .version import __version__

T = TypeVar("T")

INDEX_FORMAT = "siamsearch-index"
INDEX_FORMAT_VERSION = 6
READABLE_FORMAT_VERSIONS = (2, 3, 4, 5, 6)
"""Version 2 recorded every kind's parameters for every kind; 3 only the kind's own; 4 added the delta
files; 5 the lexical files (older versions open for dense search only); 6 the lexical forward files
(a base written before derives them in memory when loaded; ``compact`` writes them)."""
MANIFEST = "manifest.json"
FAISS_FILE, VECTORS_FILE, DOCUMENTS_FILE, ENCODER_DIR = "index.faiss", "vectors.npy", "documents.sqlite", "encoder"
DELTA_VECTORS_FILE, DELTA_DOCUMENTS_FILE = "delta.npy", "delta.sqlite"
READERS_LOCK = "readers.lock"
GENERATION = re.compile(r"gen-(\d{6})")
LOAD_ATTEMPTS = 10  # a reader retries if a generation is removed between reading the manifest and locking it
VERIFY_ALL_MAX_BYTES = 256 << 20  # memory-mapped opens hash the data files up to this size (~0.2 s), else check sizes

_COUNT = {"type": "integer", "minimum": 0}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
BASE_FILES = (FAISS_FILE, VECTORS_FILE, DOCUMENTS_FILE)
DELTA_FILES = (DELTA_VECTORS_FILE, DELTA_DOCUMENTS_FILE)
HASHED_FILES = BASE_FILES + LEXICAL_FILES + FORWARD_FILES + DELTA_FILES
MANIFEST_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "format_version", "siamsearch_version", "generation", "created", "encoder_fingerprint",
                 "metric", "dimension", "index", "rerank_factor", "counts", "files"],
    "properties": {
        "format": {"const": INDEX_FORMAT},
        "format_version": {"enum": list(READABLE_FORMAT_VERSIONS)},
        "siamsearch_version": {"type": "string"},
        "generation": {"type": "integer", "minimum": 1, "maximum": 999_999},
        "created": {"type": "string"},
        "encoder_fingerprint": _SHA256,
        "metric": {"const": "L1"},
        "dimension": {"type": "integer", "minimum": 1},
        # the kind's name and settings are checked by the registry (kinds.from_dict), not here
        "index": {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string"}}},
        "rerank_factor": {"type": "integer", "minimum": 1},
        "counts": {"type": "object", "additionalProperties": False, "required": ["documents", "rows"],
                   "properties": {"documents": _COUNT, "rows": _COUNT}},
        "files": {"type": "object", "additionalProperties": False, "required": list(BASE_FILES),
                  "dependentRequired": {DELTA_VECTORS_FILE: [DELTA_DOCUMENTS_FILE],
                                        DELTA_DOCUMENTS_FILE: [DELTA_VECTORS_FILE],
                                        **{name: list(LEXICAL_FILES) for name in LEXICAL_FILES},
                                        **{name: [*LEXICAL_FILES, *FORWARD_FILES] for name in FORWARD_FILES}},
                  "properties": {name: {"type": "object", "additionalProperties": False,
                                        "required": ["sha256", "bytes"],
                                        "properties": {"sha256": _SHA256, "bytes": _COUNT}}
                                 for name in HASHED_FILES}},
    },
}
"""The manifest's shape; the ``index`` settings beyond ``kind`` are validated by the kind."""
_MANIFEST_VALIDATOR = jsonschema.validators.validator_for(MANIFEST_SCHEMA)(MANIFEST_SCHEMA)
"""Made once: ``jsonschema.validate`` checks the schema itself on every call (17.6 ms against 0.35 ms a
manifest, measured 2026-12-02), which held a loading reader long enough for a fast writer to
commit and remove the generation it had read, again and again (tests/test_durability.py)."""


@dataclass(frozen=True)
class Contents:
    """What a written generation holds, for its manifest."""

    kind: kinds.IndexKind
    documents: int
    rows: int
    rerank_factor: int
    linked: dict = field(default_factory=dict)
    """Manifest entries of files linked from an older generation: known, so not hashed again."""


def manifest(contents: Contents, encoder: Encoder, generation: int, files: dict[str, dict]) -> dict:
    return {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "siamsearch_version": __version__,
        "generation": generation,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder_fingerprint": encoder.fingerprint,
        "metric": "L1",
        "dimension": encoder.dim,
        "index": contents.kind.to_dict(),
        "rerank_factor": contents.rerank_factor,
        "counts": {"documents": contents.documents, "rows": contents.rows},
        "files": files,
    }


def is_index(path: Path) -> bool:
    """Whether ``path`` holds a siamsearch index (committed, or with generations left by a save)."""
    return (path / MANIFEST).exists() or bool(generations(path))


def check_index_path(path: str | Path) -> None:
    """Refuse an index path that exists and is neither empty nor an index (before encoding a corpus)."""
    check_output_dir(Path(path), is_index, "a siamsearch index", ignore_hidden=True)


def save(state: IndexState, encoder: Encoder, path: str | Path, loaded_generation: int | None) -> int:
    """Commit ``state`` as the next generation of ``path``; returns its number.

    ``loaded_generation``: the generation of ``path`` this state was loaded from (None: not
    loaded from there). If another writer has committed since, the save is refused rather
    than silently undoing that writer's changes. A state with a base links its files and
    writes the delta; then the state's base lies in the new generation (``rebase``).
    """
    def write(stage: Path) -> tuple[Contents, bool]:
        linked = state.base is not None and _link(state.base, stage)
        if linked:
            if len(state.delta) or state.documents.delta_count:
                np.save(stage / DELTA_VECTORS_FILE, state.delta)
                state.documents.save_delta(stage / DELTA_DOCUMENTS_FILE)
        else:  # a new base: a base that could not be linked is written with its delta as one
            state.kind.write(state.faiss_with_delta(), str(stage / FAISS_FILE))
            np.save(stage / VECTORS_FILE, np.asarray(state.all_vectors(), dtype=np.float32))
            state.documents.save(stage / DOCUMENTS_FILE)
            if state.lexical is not None:
                state.lexical.folded().write(stage)
        return Contents(state.kind, len(state), state.rows, state.rerank_factor,
                        state.base.files if linked else {}), linked

    check_index_path(path)
    reuse = state.base.directory / ENCODER_DIR if state.base is not None else None
    generation, _, linked = commit(path, encoder, write, loaded_generation, reuse)
    if linked:  # the same base files, now under the new generation's names (the old may be gone)
        state.rebase(Path(path) / f"gen-{generation:06d}")
    return generation


def _link(base: BaseFiles, stage: Path) -> bool:
    """Hard-link the base files into the staged generation; False (nothing linked) where they
    cannot be (another file system, or the generation was removed meanwhile)."""
    try:
        for name in base.files:
            os.link(base.directory / name, stage / name)
        return True
    except OSError:
        for name in base.files:
            (stage / name).unlink(missing_ok=True)
        return False


def commit(path: str | Path, encoder: Encoder, write: Callable[[Path], tuple[Contents, T]],
           loaded_generation: int | None = None, reuse_encoder: Path | None = None) -> tuple[int, Contents, T]:
    """Commit the next generation of ``path``, whose data files ``write(stage)`` writes into a
    staging folder (``BASE_FILES``, and ``DELTA_FILES`` or none; the encoder is copied here,
    its large files linked from ``reuse_encoder`` when that holds the same model); returns its
    number, the ``Contents`` ``write`` returned and what it returned beside them (what the
    write did, for its caller). The writer lock is held throughout, so a long write (a
    streamed build) keeps other writers out, and nothing is visible until the manifest is
    replaced. See ``save``
    for ``loaded_generation``. The caller has checked the path (``check_index_path``)."""
    path = Path(path)
    with writer_lock(path):
        committed = committed_generation(path)
        if loaded_generation is not None and committed != loaded_generation:
            raise ConflictError(
                f"{path}: another writer changed it since it was loaded (generation {loaded_generation} → "
                f"{committed}); load it again and repeat the change", path=path)
        generation = max([*generations(path), committed or 0]) + 1
        final = path / f"gen-{generation:06d}"
        with staged_directory(final) as stage:
            try:
                contents, result = write(stage)
                (stage / READERS_LOCK).touch()
                (stage / ENCODER_DIR).mkdir()
                model_folder.write(encoder, stage / ENCODER_DIR, reuse_encoder)
                files = {name: contents.linked.get(name) or {"sha256": sha256_file(stage / name),
                                                              "bytes": (stage / name).stat().st_size}
                         for name in HASHED_FILES if (stage / name).exists()}
            except (OSError, RuntimeError, sqlite3.Error) as e:
                raise SiamsearchError(f"{path}: cannot write the index ({e})", path=path) from None
        write_json_atomic(path / MANIFEST, manifest(contents, encoder, generation, files))
        for old in path.iterdir():  # older generations and leftovers of interrupted saves
            if GENERATION.fullmatch(old.name) and old != final:
                remove_unless_read(old, READERS_LOCK)
            elif old.name.endswith(".tmp"):
                shutil.rmtree(old, ignore_errors=True)
    return generation, contents, result


def load(path: str | Path, encoder: Encoder | None = None, mmap: bool = False) -> tuple[IndexState, Encoder, int]:
    """Open the committed generation of an index folder: its state, its encoder and its number.

    If ``encoder`` is given it must be the one the index was built with. Every data file's
    size is checked against the manifest, and its SHA-256 too unless ``mmap`` is set and the
    files exceed ``VERIFY_ALL_MAX_BYTES``: ``mmap`` leaves the FAISS data on disk (paged in as
    searches touch it), so opening a large index does not read and hash gigabytes first.
    """
    path = Path(path)
    for _ in range(LOAD_ATTEMPTS):
        found = _read_manifest(path)
        data = path / f"gen-{found['generation']:06d}"
        try:
            with reader_lock(data / READERS_LOCK):
                return _open(path, found, encoder, mmap)
        except FileNotFoundError:
            if committed_generation(path) == found["generation"]:
                raise IndexDirectoryError.damaged(path, f"incomplete index, {data.name}/{READERS_LOCK} is missing") \
                    from None
            # else a writer committed and removed this generation before we locked it: retry
    raise IndexDirectoryError(f"{path}: it changed {LOAD_ATTEMPTS} times while being opened; try again", path=path)


def _open(path: Path, found: dict, encoder: Encoder | None, mmap: bool) -> tuple[IndexState, Encoder, int]:
    def damaged(why: str) -> IndexDirectoryError:
        return IndexDirectoryError.damaged(path, why)

    generation, fingerprint, dim = found["generation"], found["encoder_fingerprint"], found["dimension"]
    n_docs, rows = found["counts"]["documents"], found["counts"]["rows"]
    data = path / f"gen-{generation:06d}"
    if encoder is not None and encoder.fingerprint != fingerprint:
        raise IndexDirectoryError(
            f"{path}: built with encoder {fingerprint[:12]}, not with the given model "
            f"({encoder.fingerprint[:12]}); rebuild the index with this model, or leave the model out",
            path=path, argument="encoder")
    files = found["files"]
    for name in (*BASE_FILES, *(n for n in (*LEXICAL_FILES, *FORWARD_FILES, *DELTA_FILES) if n in files), ENCODER_DIR):
        if not (data / name).exists():
            raise damaged(f"incomplete index, {data.name}/{name} is missing")
    for name, expected in files.items():
        if (data / name).stat().st_size != expected["bytes"]:
            raise damaged(f"{data.name}/{name} is {(data / name).stat().st_size:,} bytes, "
                          f"the manifest says {expected['bytes']:,}")
    verify_all = not mmap or sum(f["bytes"] for f in files.values()) <= VERIFY_ALL_MAX_BYTES
    if verify_all:
        for name, expected in files.items():  # catches corrupted and swapped files
            if sha256_file(data / name) != expected["sha256"]:
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
    kind = _kind_of(found, path)
    has_delta = DELTA_VECTORS_FILE in files
    try:
        vectors = np.load(data / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
        delta = np.load(data / DELTA_VECTORS_FILE, allow_pickle=False) if has_delta else np.empty((0, dim), np.float32)
        built = kind.read(str(data / FAISS_FILE), mmap)
        # counting a large table's rows costs ~15 ms at 1M, on every generation a server opens: a large
        # memory-mapped open checks sizes only, and takes the count from the manifest as well
        documents = Documents.open(data / DOCUMENTS_FILE, data / DELTA_DOCUMENTS_FILE if has_delta else None,
                                   count=None if verify_all else n_docs)
        top = documents.max_position()
    except (OSError, ValueError, RuntimeError, sqlite3.Error) as e:
        raise damaged(f"a data file cannot be read ({_first_line(e)})") from None
    for name, array in ((VECTORS_FILE, vectors), (DELTA_VECTORS_FILE, delta)):
        if array.dtype != np.float32 or array.ndim != 2 or array.shape[1] != dim:
            raise damaged(f"{name} holds {array.shape} {array.dtype}, expected (rows, {dim}) float32")
    if len(vectors) + len(delta) != rows:
        raise damaged(f"{VECTORS_FILE} and {DELTA_VECTORS_FILE} hold {len(vectors)} + {len(delta)} rows, "
                      f"the manifest says {rows}" if has_delta else
                      f"{VECTORS_FILE} holds {vectors.shape} {vectors.dtype}, expected ({rows}, {dim}) float32")
    if len(documents) != n_docs or top >= rows:
        raise damaged(f"{DOCUMENTS_FILE} holds {len(documents)} documents up to row {top}, "
                      f"the manifest says {n_docs} in {rows} rows")
    problem = kind.check(built, len(vectors), dim)
    if problem:
        raise damaged(problem)
    lexical = None
    if LEXICAL_FILES[0] in files:
        try:
            delta_rows, delta_texts = documents.delta_texts()
            dead = []
            if len(vectors) > n_docs - len(delta_rows):  # removed documents' postings are still in the base
                alive = np.zeros(len(vectors), bool)
                alive[[p for p in documents.live_positions() if p < len(vectors)]] = True
                dead = np.flatnonzero(~alive)
            lexical = LexicalIndex.loaded(Postings.read(data, len(vectors), FORWARD_FILE in files), delta_rows,
                                          delta_texts, rows, dead)
        except (OSError, ValueError, sqlite3.Error) as e:
            raise damaged(f"its lexical index cannot be read ({_first_line(e)})") from None
    base = BaseFiles(data, {name: files[name] for name in (*BASE_FILES, *LEXICAL_FILES, *FORWARD_FILES)
                            if name in files})
    state = IndexState(kind, built, vectors, documents, found["rerank_factor"], mapped=mmap, delta=delta, base=base,
                       lexical=lexical)
    return state, encoder, generation


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _kind_of(found: dict, path: Path) -> kinds.IndexKind:
    """The manifest's kind; a version 2 manifest's settings of other kinds are dropped."""
    settings = dict(found["index"])
    if found["format_version"] == 2:
        own = kinds.parameter_names(settings["kind"])
        settings = {k: v for k, v in settings.items() if k in own or k == "kind"}
    try:
        return kinds.from_dict(settings)
    except InputError as e:
        raise IndexDirectoryError.damaged(path, f"{MANIFEST} has invalid index settings ({e})") from None


def _read_manifest(path: Path) -> dict:
    if not (path / MANIFEST).is_file():
        if not path.exists():
            raise IndexDirectoryError(f"{path}: no such index; {BUILD_INDEX}", path=path)
        raise IndexDirectoryError.damaged(path, f"not a siamsearch index ({MANIFEST} is missing)")
    try:
        found = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexDirectoryError.damaged(path, f"{MANIFEST} is unreadable ({e})") from None
    if isinstance(found, dict) and found.get("format") == INDEX_FORMAT and \
            found.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise IndexDirectoryError(
            f"{path}: index format version {found.get('format_version')!r} is not supported by "
            f"siamsearch {__version__} (reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))}); rebuild the index",
            path=path)
    e = jsonschema.exceptions.best_match(_MANIFEST_VALIDATOR.iter_errors(found))  # as jsonschema.validate picks
    if e is not None:
        where = "/".join(map(str, e.absolute_path)) or "top level"
        raise IndexDirectoryError.damaged(path, f"{MANIFEST} is invalid at {where}: {e.message[:200]}") from None
    return found


def trained_faiss(path: str | Path) -> faiss.Index:
    """An empty FAISS index with the committed generation's training (IVF's centroids): what
    the other shards of a sharded index are built around (``shards.build_sharded``)."""
    path = Path(path)
    found = _read_manifest(path)
    kind = _kind_of(found, path)
    return kind.emptied(kind.read(str(path / f"gen-{found['generation']:06d}" / FAISS_FILE), mmap=True))


def committed_generation(path: str | Path) -> int | None:
    """The generation ``path``'s manifest names now (None: no readable manifest). Cheap: one
    small file read, so a server can poll it to learn of another process's commit."""
    try:
        return int(json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def generations(path: Path) -> list[int]:
    if not path.is_dir():
        return []
    return [int(m.group(1)) for p in path.iterdir() if (m := GENERATION.fullmatch(p.name))]
