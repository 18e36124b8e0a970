"""What a model directory or an index folder is, for ``siamsearch info`` and for people.

``describe(path)`` opens the folder the way the rest of siamsearch does (so a damaged one is
reported, with the same one-line errors, rather than summarised) and returns plain data:
what it is, its fingerprint, how the model was trained and how it measured, the index's kind,
parameters, documents, rows, tombstones and generations, and the bytes on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from .encoder import Encoder
from .errors import InputError
from .model_folder import CONFIG, is_model_dir
from .shipped import CARD, model_path, shipped_models


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def describe_model(path: str | Path) -> dict:
    """A model directory: fingerprint, architecture, vocabulary, threshold, training record and metrics."""
    path = Path(path)
    return _model(Encoder.load(path), path)  # loading verifies fingerprint and checksums


def _model(encoder: Encoder, path: Path) -> dict:
    config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    training = encoder.training or {}
    return {
        "what": "model",
        "path": str(path),
        "fingerprint": encoder.fingerprint,
        "siamsearch_version": config.get("siamsearch_version"),
        "encoder": encoder.config.to_dict(),
        "network": encoder.config.architecture.describe(encoder.config.embedding_dim),
        "characters": len(encoder.vocab.chars),
        "threshold": encoder.threshold,
        "calibration": None if encoder.calibration is None else encoder.calibration.to_dict(),
        "training": {key: training.get(key) for key in ("pairs", "valid", "epoch_kept", "seconds", "teacher", "init",
                                                        "settings") if training.get(key) is not None},
        "epochs_run": len(encoder.history),
        "metrics": encoder.metrics,
        "bytes": _bytes(path),
    }


def describe_index(path: str | Path) -> dict:
    """An index folder: the committed generation, kind and parameters, counts, generations on disk,
    sizes, and its encoder (as ``describe_model`` says it, from the copy the index carries)."""
    from .index_folder import ENCODER_DIR, MANIFEST, generations
    from .search import SearchIndex

    path = Path(path)
    index = SearchIndex.load(path, mmap=True)  # verifies the manifest and the committed files
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    generation_dir = path / f"gen-{index.generation:06d}"
    return {
        "what": "index",
        "path": str(path),
        "generation": index.generation,
        "created": manifest["created"],
        "siamsearch_version": manifest["siamsearch_version"],
        "index": index.spec.to_dict(),
        "rerank_factor": index.rerank_factor,
        "documents": len(index),
        "rows": index.rows,
        "tombstones": index.tombstones,
        "lexical": index.has_lexical,
        "generations_on_disk": sorted(generations(path)),
        "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
        "bytes": _bytes(path),
        "generation_bytes": _bytes(generation_dir),
        "encoder": _model(index.encoder, generation_dir / ENCODER_DIR),  # the copy the index loaded
    }


def describe_sharded(path: str | Path) -> dict:
    """A sharded index (``shards.py``): its map, and each shard as ``describe_index`` says it."""
    from .shard_map import read_map

    path = Path(path)
    found = read_map(path)
    shards = [describe_index(path / folder) for folder in found["folders"]]
    return {
        "what": "sharded index",
        "path": str(path),
        "created": found["created"],
        "siamsearch_version": found["siamsearch_version"],
        "shards": found["shards"],
        "placement": found["placement"],
        "index": shards[0]["index"],
        "documents": sum(s["documents"] for s in shards),
        "lexical": all(s["lexical"] for s in shards),
        "bytes": _bytes(path),
        "per_shard": [{k: s[k] for k in ("path", "generation", "documents", "rows", "tombstones", "bytes")}
                      for s in shards],
        "encoder": shards[0]["encoder"],
    }


def describe_shipped() -> list[dict]:
    """Every shipped model as ``describe_model`` says it, with its name and its card's headline
    (the card's ``**Headline**:`` line: what it was trained on and its figures).
    Example: ``[m["name"] for m in describe_shipped()]`` → ``['default', 'bq']``."""
    found = []
    for name, path in shipped_models().items():
        card = (path / CARD).read_text(encoding="utf-8") if (path / CARD).is_file() else ""
        headline = next((line.split(":", 1)[1].strip() for line in card.splitlines()
                         if line.startswith("**Headline**:")), None)
        found.append({"name": name, "headline": headline, **describe_model(path)})
    return found


def describe(path: str | Path) -> dict:
    """``describe_index``, ``describe_sharded`` or ``describe_model``, whichever ``path`` is (a
    shipped model's name too); an InputError if none."""
    from .index_folder import is_index
    from .shard_map import is_sharded

    path = model_path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory", path=path)
    if path.is_dir() and is_sharded(path):
        return describe_sharded(path)
    if path.is_dir() and is_index(path):
        return describe_index(path)
    if path.is_dir() and is_model_dir(path):
        return describe_model(path)
    raise InputError(f"{path}: neither a siamsearch model directory nor an index folder; give a folder that "
                     "training or an index build wrote", path=path)
