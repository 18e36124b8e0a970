"""The shard map of a sharded index (``shards.py``): its format, checked on every load, and
where a document lives (``shard_of``). ``indexes/README.md`` documents the fields."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import IndexDirectoryError, InputError
from .storage import sha256_file, write_bytes_atomic
from .version import __version__

if TYPE_CHECKING:
    import jsonschema

    from .encoder import Encoder
    from .kinds import IndexKind

SHARD_MAP = "shards.json"
QUANTISER_FILE = "quantiser.npy"
SHARDS_FORMAT = "siamsearch-shards"
SHARDS_FORMAT_VERSION = 1
PLACEMENT = "blake2b-64(id) mod shards"
"""How a document's shard is chosen (``shard_of``); recorded in the map, so a later placement
rule cannot silently misread an older index."""
MAX_SHARDS = 4096

_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "siamsearch_version", "created", "shards", "placement", "folders",
                 "encoder_fingerprint", "index", "documents", "quantiser", "checksum"],
    "properties": {
        "format": {"const": SHARDS_FORMAT},
        "format_version": {"const": SHARDS_FORMAT_VERSION},
        "shards": {"type": "integer", "minimum": 1, "maximum": MAX_SHARDS},
        "placement": {"const": PLACEMENT},
        "folders": {"type": "array", "items": {"type": "string", "pattern": r"^shard-\d{3,4}$"}},
        "encoder_fingerprint": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "index": {"type": "object"},
        "documents": {"type": "integer", "minimum": 0},
        "quantiser": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["sha256", "bytes"]}]},
        "checksum": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}


@cache
def _validator() -> jsonschema.protocols.Validator:
    import jsonschema

    return jsonschema.validators.validator_for(_SCHEMA)(_SCHEMA)


def shard_of(doc_id: str, shards: int) -> int:
    """The shard that holds ``doc_id``: stable across processes, machines and versions (unlike
    Python's ``hash``), and spread evenly whatever the ids look like."""
    digest = hashlib.blake2b(str(doc_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def folder_name(shard: int) -> str:
    return f"shard-{shard:03d}"


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` holds a sharded index (a shard map)."""
    return (Path(path) / SHARD_MAP).is_file()


def _checksum(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def read_map(path: str | Path) -> dict:
    """The shard map of ``path``, validated and its checksum verified; else one line saying what is wrong."""
    path = Path(path)
    try:
        found = json.loads((path / SHARD_MAP).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexDirectoryError.damaged(path, f"{SHARD_MAP} is unreadable ({type(e).__name__})") from None
    problem = next(iter(_validator().iter_errors(found)), None)
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "its top level"
        raise IndexDirectoryError.damaged(path, f"{SHARD_MAP} is not a shard map ({where}: {problem.message})")
    if _checksum({k: v for k, v in found.items() if k != "checksum"}) != found["checksum"]:
        raise IndexDirectoryError.damaged(path, f"{SHARD_MAP} does not match its checksum")
    if found["folders"] != [folder_name(i) for i in range(found["shards"])]:
        raise IndexDirectoryError.damaged(path, f"{SHARD_MAP} names other folders than its {found['shards']} shards")
    quantiser, file = found["quantiser"], path / QUANTISER_FILE
    if quantiser is not None and not (file.is_file() and file.stat().st_size == quantiser["bytes"]
                                      and sha256_file(file) == quantiser["sha256"]):
        raise IndexDirectoryError.damaged(path, f"{QUANTISER_FILE} is missing or does not match {SHARD_MAP}")
    return found


def write_map(path: Path, shards: int, encoder: Encoder, kind: IndexKind, documents: int,
               quantiser: np.ndarray | None) -> None:
    if quantiser is not None:
        np.save(path / QUANTISER_FILE, quantiser)
    fields = {
        "format": SHARDS_FORMAT, "format_version": SHARDS_FORMAT_VERSION, "siamsearch_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "shards": shards,
        "placement": PLACEMENT, "folders": [folder_name(i) for i in range(shards)],
        "encoder_fingerprint": encoder.fingerprint, "index": kind.to_dict(), "documents": documents,
        "quantiser": None if quantiser is None else {"sha256": sha256_file(path / QUANTISER_FILE),
                                                     "bytes": (path / QUANTISER_FILE).stat().st_size},
    }
    write_bytes_atomic(path / SHARD_MAP, (json.dumps({**fields, "checksum": _checksum(fields)}, ensure_ascii=False,
                                                     indent=2) + "\n").encode("utf-8"))


def check_shards(shards: int) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise InputError(f"shards must be a whole number from 1 to {MAX_SHARDS}, not {shards!r}", argument="shards")
    return shards
