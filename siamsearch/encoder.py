"""``Encoder``: a trained shared encoder with its vocabulary, and the model directory format.

Model directory (written by ``siamsearch train`` / ``Encoder.save``)::

    config.json          format, version, encoder architecture, fingerprint, training settings
    vocab.json           the characters in id order (ids 0 = padding, 1 = out of vocabulary)
    encoder.weights.h5   Keras weights of the encoder (the frozen character vectors included)
    history.json         per-epoch loss / accuracy / validation accuracy / seconds
    metrics.json         validation metrics at the end of training

The fingerprint is a SHA-256 of the architecture, vocabulary and weights: an index records
it, and loading recomputes it, so a damaged or swapped file is refused rather than served.
Loading rebuilds the architecture from config.json and reads weights only (no stored code).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError, ModelDirectoryError
from .model import EncoderConfig, build_encoder, build_siamese, keras, tf
from .scoring import exp_neg_l1
from .storage import staged_directory, write_json
from .text import Vocabulary, pad

MODEL_FORMAT = "siamsearch-model"
MODEL_FORMAT_VERSION = 1
CONFIG, VOCAB, WEIGHTS, HISTORY, METRICS = (
    "config.json", "vocab.json", "encoder.weights.h5", "history.json", "metrics.json")

Progress = Callable[[int], None]
"""Called with the number of items just finished, for progress bars."""


class Encoder:
    """Text → 64-d float32 vectors whose exp(-L1) similarity is the Siamese model's score."""

    def __init__(self, model: keras.Model, vocab: Vocabulary, config: EncoderConfig,
                 training: dict | None = None, history: list[dict] | None = None,
                 metrics: dict | None = None):
        self.model = model
        self.vocab = vocab
        self.config = config
        self.training = training or {}
        self.history = history or []
        self.metrics = metrics or {}
        self._fingerprint: str | None = None
        self._forward = tf.function(
            lambda ids: self.model(ids, training=False),
            input_signature=[tf.TensorSpec([None, None], tf.int32)],
        )

    @property
    def dim(self) -> int:
        return self.config.output_dim

    @property
    def fingerprint(self) -> str:
        """SHA-256 of architecture + vocabulary + weights (cached: weights are frozen after training)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps(self.config.to_dict(), sort_keys=True).encode())
            h.update(json.dumps(self.vocab.chars, ensure_ascii=False).encode())
            for w in self.model.weights:
                a = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
                h.update(f"{a.dtype}{a.shape}".encode())
                h.update(a.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def encode(self, texts: Sequence[str], batch_size: int = 1024, progress: Progress | None = None) -> np.ndarray:
        """Encode texts in length-sorted batches (little padding, much faster); order is kept."""
        rows = [self.vocab.ids(t, self.config.max_length) for t in texts]
        empty = next((i for i, r in enumerate(rows) if not r), None)
        if empty is not None:
            raise InputError(f"text #{empty + 1} is empty or whitespace only; nothing to encode")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        order = np.argsort([len(r) for r in rows], kind="stable")
        for start in range(0, len(rows), batch_size):
            batch = order[start : start + batch_size]
            out[batch] = self._forward(pad([rows[i] for i in batch])).numpy()
            if progress:
                progress(len(batch))
        return out

    def similarity(self, a: str, b: str) -> float:
        """The Siamese model's score for the pair: exp(-Σ|enc(a) - enc(b)|), in (0, 1]."""
        va, vb = self.encode([a, b])
        return float(exp_neg_l1(va, vb))

    def siamese_model(self) -> keras.Model:
        """The Keras Siamese network around this encoder (shared weights), as trained."""
        return build_siamese(self.model)

    # -- model directory ---------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model directory atomically (a failed save leaves an existing one intact).

        An existing path is replaced only if it is an empty directory or a siamsearch model
        directory: ``--out .`` must never wipe a user's folder.
        """
        path = Path(path)
        check_model_path(path)
        with staged_directory(path) as stage:
            self.write(stage)

    def write(self, directory: Path) -> None:
        """Write the model files into an existing, not yet visible directory."""
        write_json(directory / CONFIG, {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "siamsearch_version": __version__,
            "fingerprint": self.fingerprint,
            "encoder": self.config.to_dict(),
            "training": self.training,
        })
        write_json(directory / VOCAB, {"pad_id": 0, "oov_id": 1, "chars": self.vocab.chars})
        write_json(directory / HISTORY, self.history)
        write_json(directory / METRICS, self.metrics)
        self.model.save_weights(directory / WEIGHTS)

    @classmethod
    def load(cls, path: str | Path) -> Encoder:
        """Load a model directory; refuse one that is incomplete, corrupted or of another format."""
        path = Path(path)
        if not path.is_dir():
            raise ModelDirectoryError(f"{path}: no such model directory; train one with 'siamsearch train'")

        def damaged(why: str) -> ModelDirectoryError:
            return ModelDirectoryError(f"{path}: {why}; train the model again or copy the whole directory")

        for name in (CONFIG, VOCAB, WEIGHTS):
            if not (path / name).is_file():
                raise damaged(f"incomplete model directory, {name} is missing")
        try:
            config_doc = json.loads((path / CONFIG).read_text(encoding="utf-8"))
            vocab_doc = json.loads((path / VOCAB).read_text(encoding="utf-8"))
            extra = {name: json.loads((path / name).read_text(encoding="utf-8"))
                     for name in (HISTORY, METRICS) if (path / name).is_file()}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise damaged(f"unreadable JSON ({e})") from None
        if not isinstance(config_doc, dict) or config_doc.get("format") != MODEL_FORMAT:
            raise damaged(f"{CONFIG} is not a siamsearch model configuration")
        if config_doc.get("format_version") != MODEL_FORMAT_VERSION:
            raise ModelDirectoryError(
                f"{path}: model format version {config_doc.get('format_version')!r} is not supported "
                f"by siamsearch {__version__} (expects {MODEL_FORMAT_VERSION}); upgrade siamsearch or retrain")
        try:
            config = EncoderConfig.from_dict(config_doc["encoder"])
            vocab = Vocabulary(vocab_doc["chars"])
        except (KeyError, TypeError, ValueError) as e:
            raise damaged(f"invalid configuration or vocabulary ({e})") from None
        if config.vocab_size != len(vocab):
            raise damaged(f"{VOCAB} has {len(vocab)} ids but {CONFIG} expects {config.vocab_size}")
        model = build_encoder(config)
        try:
            model.load_weights(path / WEIGHTS)
        except Exception as e:  # h5py and Keras raise many types for a bad weights file
            raise damaged(f"{WEIGHTS} cannot be read ({type(e).__name__})") from None
        encoder = cls(model, vocab, config, config_doc.get("training"), extra.get(HISTORY), extra.get(METRICS))
        if encoder.fingerprint != config_doc.get("fingerprint"):
            raise damaged("weights or vocabulary do not match the fingerprint in config.json")
        return encoder


def check_model_path(path: Path) -> None:
    """Refuse an output path that exists and is neither empty nor a model directory (before hours of training)."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    try:
        is_model = json.loads((path / CONFIG).read_text(encoding="utf-8")).get("format") == MODEL_FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        is_model = False
    if not is_model:
        raise InputError(f"{path}: exists and is not a siamsearch model directory; choose another output path")
