"""The model directory on disk: its files, its ``config.json``, reading, writing and checking it.

Layout (written by ``siamsearch train`` / ``Encoder.save``)::

    config.json          format, version, encoder architecture, fingerprint, checksums, training settings
    vocab.json           the characters in id order (ids 0 = padding, 1 = out of vocabulary)
    encoder.onnx         the encoder as an ONNX graph: what encodes documents and queries
    encoder.weights.h5   the same weights for Keras (the Siamese network, further training)
    history.json         per-epoch loss / accuracy / validation accuracy / seconds
    metrics.json         validation metrics at the end of training

config.json's ``threshold`` is the score above which ``Encoder.predict`` calls a pair the same
meaning: chosen on the validation pairs when training ends (the best accuracy there), 0.5
when training had no validation file. It does not change encodings or search.

The fingerprint is a SHA-256 of the architecture, vocabulary and ONNX graph: an index records
it, and ``read`` recomputes it, so a damaged or swapped file is refused rather than served.
Nothing stored is executed: the ONNX graph is data for onnxruntime's fixed operators, and
Keras rebuilds its architecture from config.json and reads weights only.

Why a module of its own: ``Encoder`` encodes, scores and calibrates; what a model directory
holds, and how a damaged one is refused, is this module's alone (as ``index_folder`` is for
indexes), so a second architecture or a new file changes one place.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

from .architectures import EncoderConfig
from .calibration import Calibration
from .errors import TRAIN_MODEL, InputError, ModelDirectoryError
from .fusion import Fusion, fusion_from_dict
from .shipped import model_path, shipped_models
from .storage import check_output_dir, sha256_bytes, staged_directory, write_json, write_json_atomic
from .text import Vocabulary
from .version import __version__

MODEL_FORMAT = "siamsearch-model"
MODEL_FORMAT_VERSION = 2
CONFIG, VOCAB, ONNX, WEIGHTS, HISTORY, METRICS = (
    "config.json", "vocab.json", "encoder.onnx", "encoder.weights.h5", "history.json", "metrics.json")
SAME_MODEL_FILES = (VOCAB, ONNX, WEIGHTS)
"""What the fingerprint and the weights' hash fix: the same for any copy of one model."""
DEFAULT_THRESHOLD = 0.5


class Model(Protocol):
    """What a model directory stores (an ``Encoder`` is one; this module needs no more of it)."""

    config: EncoderConfig
    vocab: Vocabulary
    onnx_model: bytes
    keras_weights: bytes
    fingerprint: str
    weights_sha256: str
    threshold: float
    calibration: Calibration | None
    fusion: Fusion | None
    training: dict
    history: list[dict]
    metrics: dict


def fingerprint(config: EncoderConfig, vocab: Vocabulary, onnx_model: bytes) -> str:
    """SHA-256 of architecture + vocabulary + ONNX graph: everything that decides a vector."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(vocab.chars, ensure_ascii=False).encode())
    h.update(onnx_model)
    return h.hexdigest()


def config_doc(encoder: Model) -> dict:
    """What ``config.json`` holds for ``encoder``."""
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "siamsearch_version": __version__,
        "fingerprint": encoder.fingerprint,
        "weights_sha256": encoder.weights_sha256,
        "encoder": encoder.config.to_dict(),
        "threshold": encoder.threshold,
        **({"calibration": encoder.calibration.to_dict()} if encoder.calibration else {}),
        **({"fusion": encoder.fusion.to_dict()} if encoder.fusion else {}),
        "training": encoder.training,
    }


def save(encoder: Model, path: str | Path) -> None:
    """Write the model directory atomically (a failed save leaves an existing one intact). An
    existing path is replaced only if it is an empty directory or a model directory: saving
    to ``.`` must never wipe a user's folder."""
    path = Path(path)
    check_model_path(path)
    with staged_directory(path) as stage:
        write(encoder, stage)


def save_settings(encoder: Model, path: str | Path) -> None:
    """Rewrite the threshold, calibration and fusion in this model's own directory
    (``config.json``, atomically), leaving every other file there as it is."""
    path = Path(path)
    if _config(path).get("fingerprint") != encoder.fingerprint:
        raise ModelDirectoryError(f"{path}: not the directory of this model (another fingerprint, or none); "
                                  "save the whole model there instead", path=path)
    write_json_atomic(path / CONFIG, config_doc(encoder))


def write(encoder: Model, directory: Path, reuse: Path | None = None) -> None:
    """Write the model files into an existing, not yet visible directory. ``reuse``: a
    directory holding this same model (fingerprint and weights, as its config.json says),
    whose ``SAME_MODEL_FILES`` are hard-linked instead of written again, as an index's next
    generation does with its encoder copy; where they cannot be, they are written."""
    write_json(directory / CONFIG, config_doc(encoder))
    write_json(directory / HISTORY, encoder.history)
    write_json(directory / METRICS, encoder.metrics)
    config = _config(reuse) if reuse is not None else {}
    if config.get("fingerprint") == encoder.fingerprint and config.get("weights_sha256") == encoder.weights_sha256:
        try:
            for name in SAME_MODEL_FILES:
                os.link(reuse / name, directory / name)
            return
        except OSError:  # another file system, or gone: written below
            for name in SAME_MODEL_FILES:
                (directory / name).unlink(missing_ok=True)
    write_json(directory / VOCAB, {"pad_id": 0, "oov_id": 1, "chars": encoder.vocab.chars})
    (directory / ONNX).write_bytes(encoder.onnx_model)
    (directory / WEIGHTS).write_bytes(encoder.keras_weights)


def read(path: str | Path | None = None) -> dict:
    """The arguments of ``Encoder`` (a ``Model``) from a model directory, or a shipped model by name (default: the
    ``default`` one; ``shipped.model_path`` has the rule); a ``ModelDirectoryError`` for one
    that is missing, incomplete, corrupted or of another format."""
    path = model_path(path)
    if not path.is_dir():
        raise ModelDirectoryError(f"{path}: no such model directory, nor a shipped model (those are "
                                  f"{', '.join(shipped_models())}); {TRAIN_MODEL}", path=path)

    def damaged(why: str) -> ModelDirectoryError:
        return ModelDirectoryError.damaged(path, why)

    try:
        doc = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise damaged(f"incomplete model directory, {CONFIG} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(f"unreadable JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        raise damaged(f"{CONFIG} is not a siamsearch model configuration")
    if doc.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path}: model format version {doc.get('format_version')!r} is not supported "
            f"by siamsearch {__version__} (expects {MODEL_FORMAT_VERSION}); retrain it with this version", path=path)
    for name in SAME_MODEL_FILES:
        if not (path / name).is_file():
            raise damaged(f"incomplete model directory, {name} is missing")
    try:
        vocab_doc = json.loads((path / VOCAB).read_text(encoding="utf-8"))
        extra = {name: json.loads((path / name).read_text(encoding="utf-8"))
                 for name in (HISTORY, METRICS) if (path / name).is_file()}
        onnx_model, weights = (path / ONNX).read_bytes(), (path / WEIGHTS).read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(f"unreadable file ({e})") from None
    try:
        config = EncoderConfig.from_dict(doc["encoder"])
        vocab = Vocabulary(vocab_doc["chars"])
    except (KeyError, TypeError, ValueError) as e:
        raise damaged(f"invalid configuration or vocabulary ({e})") from None
    if config.vocab_size != len(vocab):
        raise damaged(f"{VOCAB} has {len(vocab)} ids but {CONFIG} expects {config.vocab_size}")
    if fingerprint(config, vocab, onnx_model) != doc.get("fingerprint"):  # checked before the graph is parsed
        raise damaged(f"{ONNX} or the vocabulary do not match the fingerprint in {CONFIG}")
    if sha256_bytes(weights) != doc.get("weights_sha256"):
        raise damaged(f"{WEIGHTS} does not match its checksum in {CONFIG}")
    threshold = doc.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise damaged(f"threshold {threshold!r} in {CONFIG} is not a score between 0 and 1")
    try:
        calibration = Calibration.from_dict(doc["calibration"]) if "calibration" in doc else None
    except ValueError as e:
        raise damaged(f"invalid calibration in {CONFIG} ({e})") from None
    try:
        fusion = fusion_from_dict(doc["fusion"]) if "fusion" in doc else None
    except (InputError, TypeError) as e:
        raise damaged(f"invalid fusion in {CONFIG} ({e})") from None
    return {"config": config, "vocab": vocab, "onnx_model": onnx_model, "keras_weights": weights,
            "training": doc.get("training"), "history": extra.get(HISTORY), "metrics": extra.get(METRICS),
            "threshold": float(threshold), "calibration": calibration, "fusion": fusion}


def _config(path: Path) -> dict:
    """A directory's config.json as a dict ({} where there is none, or it is not JSON)."""
    try:
        doc = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def is_model_dir(path: Path) -> bool:
    return _config(path).get("format") == MODEL_FORMAT


def check_model_path(path: str | Path) -> None:
    """Refuse an output path that exists and is neither empty nor a model directory (before hours of training)."""
    check_output_dir(Path(path), is_model_dir, "a siamsearch model directory")
