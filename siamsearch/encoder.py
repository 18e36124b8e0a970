"""``Encoder``: a trained shared encoder with its vocabulary, and the model directory format.

Model directory (written by ``siamsearch train`` / ``Encoder.save``)::

    config.json          format, version, encoder architecture, fingerprint, checksums, training settings
    vocab.json           the characters in id order (ids 0 = padding, 1 = out of vocabulary)
    encoder.onnx         the encoder as an ONNX graph: what encodes documents and queries
    encoder.weights.h5   the same weights for Keras (the Siamese network, further training)
    history.json         per-epoch loss / accuracy / validation accuracy / seconds
    metrics.json         validation metrics at the end of training

config.json's ``threshold`` is the score above which ``predict`` calls a pair the same
meaning: chosen on the validation pairs when training ends (the best accuracy there),
0.5 when training had no validation file. It does not change encodings or search.

Encoding runs the ONNX graph with onnxruntime, so loading a model, building an index and
answering queries never import TensorFlow (see ``export.py`` for why and how). The ONNX
graph is written from the Keras weights when training ends and checked against Keras
there; ``keras_model()`` / ``siamese_model()`` rebuild the Keras side when wanted.

The fingerprint is a SHA-256 of the architecture, vocabulary and ONNX graph: an index
records it, and loading recomputes it, so a damaged or swapped file is refused rather than
served. Nothing stored is executed: the ONNX graph is data for onnxruntime's fixed
operators, and Keras rebuilds its architecture from config.json and reads weights only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime

from .architectures import EncoderConfig
from .calibration import Calibration
from .calibration import fit as calibrate_fit
from .errors import TRAIN_MODEL, InputError, ModelDirectoryError, SiamsearchError
from .fusion import Fusion, fusion_from_dict
from .scoring import exp_neg_l1
from .shipped import model_path, shipped_models
from .storage import check_output_dir, sha256_bytes, staged_directory, write_json, write_json_atomic
from .system import available_cpus
from .text import Vocabulary, first_blank, length_sorted_batches, pad
from .version import __version__

if TYPE_CHECKING:
    from .data import Pairs

MODEL_FORMAT = "siamsearch-model"
MODEL_FORMAT_VERSION = 2
CONFIG, VOCAB, ONNX, WEIGHTS, HISTORY, METRICS = (
    "config.json", "vocab.json", "encoder.onnx", "encoder.weights.h5", "history.json", "metrics.json")
SAME_MODEL_FILES = (VOCAB, ONNX, WEIGHTS)
"""What the fingerprint and the weights' hash fix: the same for any copy of one model."""
ENCODE_BATCH = 64  # measured fastest per thread for onnxruntime's LSTM on 2 cores (16 to 128 are within 10%)
ENCODE_CHUNK = 100_000
EXPORT_TOLERANCE = 1e-5
DEFAULT_THRESHOLD = 0.5
DEFAULT_MODEL = model_path()
"""The model shipped with siamsearch as its default (see its MODEL_CARD.md): what ``Encoder.load()``
opens without a path; ``shipped.shipped_models()`` lists every shipped model."""

Progress = Callable[[int], None]
"""Called with the number of items just finished, for progress bars."""


def _session(onnx_model: bytes) -> onnxruntime.InferenceSession:
    """One thread per session: ``encode`` runs batches on several threads instead, which
    measured 1.2× faster on 2 cores than one session using both cores for each batch
    (29,700 vs 24,400 BQ sentences/s at batch 64)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def fingerprint(config: EncoderConfig, vocab: Vocabulary, onnx_model: bytes) -> str:
    """SHA-256 of architecture + vocabulary + ONNX graph: everything that decides a vector."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(vocab.chars, ensure_ascii=False).encode())
    h.update(onnx_model)
    return h.hexdigest()


class Encoder:
    """Text → 64-d float32 vectors whose exp(-L1) similarity is the Siamese model's score.

    An encoder pickles as its bytes (graph, weights, vocabulary, settings) and rebuilds its
    onnxruntime session on the other side, so it can be handed to another process (a server
    worker, a Ray actor). ``encode`` is safe from many threads at once.

    Example: ``enc = Encoder.load(); enc.similarity("怎么退货", "如何退货")``.
    """

    def __init__(self, config: EncoderConfig, vocab: Vocabulary, onnx_model: bytes, keras_weights: bytes,
                 training: dict | None = None, history: list[dict] | None = None, metrics: dict | None = None,
                 threshold: float = DEFAULT_THRESHOLD, calibration: Calibration | None = None,
                 fusion: Fusion | None = None):
        self.config = config
        self.threshold = threshold
        self.calibration = calibration
        self.fusion = fusion
        """How a hybrid search with this model orders its hits, fitted on labelled pairs (``fusion.py``)."""
        self.vocab = vocab
        self.onnx_model = onnx_model
        self.keras_weights = keras_weights
        self.training = training or {}
        self.history = history or []
        self.metrics = metrics or {}
        self.fingerprint = fingerprint(config, vocab, onnx_model)
        self._session = _session(onnx_model)

    def __repr__(self) -> str:
        return (f"Encoder(fingerprint={self.fingerprint[:12]!r}, characters={len(self.vocab.chars):,}, "
                f"dim={self.dim}, threshold={self.threshold:.4g})")

    def __reduce__(self):
        return Encoder, (self.config, self.vocab, self.onnx_model, self.keras_weights, self.training, self.history,
                         self.metrics, self.threshold, self.calibration, self.fusion)

    @classmethod
    def from_keras(cls, model, vocab: Vocabulary, config: EncoderConfig, **info) -> Encoder:
        """Wrap a trained Keras encoder: export its ONNX graph and check it computes the same vectors.
        Example: ``Encoder.from_keras(keras_encoder, vocab, config)`` (what ``train`` does at its end)."""
        from .export import encoder_to_onnx
        from .keras_runtime import load

        to_numpy = load().ops.convert_to_numpy
        onnx_model = encoder_to_onnx(model, config, to_numpy)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_weights(Path(tmp) / WEIGHTS)
            weights = (Path(tmp) / WEIGHTS).read_bytes()
        encoder = cls(config, vocab, onnx_model, weights, **info)
        probe = probe_ids(config)
        gap = float(np.abs(encoder.run(probe) - to_numpy(model(probe, training=False))).max())
        if not gap <= EXPORT_TOLERANCE:
            raise SiamsearchError(f"the ONNX export differs from the Keras encoder by {gap:.2g}; please report this")
        return encoder

    @property
    def dim(self) -> int:
        return self.config.output_dim

    def run(self, ids: np.ndarray) -> np.ndarray:
        """The encodings of a padded (batch, length) id matrix (``text.pad``), as the graph computes them.

        Example: ``enc.run(pad([enc.vocab.ids("怎么退货", enc.config.max_length)]))``."""
        return self._session.run(None, {"ids": ids})[0]

    def encode(self, texts: Sequence[str], batch_size: int = ENCODE_BATCH, progress: Progress | None = None,
               threads: int | None = None) -> np.ndarray:
        """Encode texts in length-sorted batches (little padding) on ``threads`` threads
        (default: one per CPU this process may use, ``available_cpus``); the order of ``texts``
        is kept. A text's vector does not depend on the batch it was encoded in (bit for bit).
        Texts become ids ``ENCODE_CHUNK`` at a time, so memory stays flat however many there are.

        Example: ``enc.encode(["怎么退货", "如何退款"])`` → a (2, 64) float32 array."""
        empty = first_blank(texts)
        if empty is not None:
            raise InputError(f"text #{empty + 1} is empty or whitespace only; nothing to encode", argument="texts")
        max_length = self.config.max_length
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 1:  # one query: no sorting, no thread hand-off
            out[:] = self.run(pad([self.vocab.ids(texts[0], max_length)]))
            return out
        workers = max(1, min(threads or available_cpus(), -(-len(texts) // batch_size)))
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(texts), ENCODE_CHUNK):
                rows = [self.vocab.ids(t, max_length) for t in texts[start : start + ENCODE_CHUNK]]
                batches = length_sorted_batches(rows, batch_size)
                encoded = pool.map(lambda b, rows=rows: self.run(pad([rows[i] for i in b])), batches)
                for batch, vectors in zip(batches, encoded):
                    out[start + batch] = vectors
                    if progress:
                        progress(len(batch))
        return out

    def similarity(self, a: str, b: str) -> float:
        """The Siamese model's score for the pair: exp(-Σ|enc(a) - enc(b)|), in (0, 1].

        Example: ``enc.similarity("怎么退货", "如何退货")``."""
        va, vb = self.encode([a, b])
        return float(exp_neg_l1(va, vb))

    def pair_scores(self, pairs: Pairs) -> np.ndarray:
        """The Siamese score of every pair, each distinct sentence encoded once (a vector does not
        depend on what it is encoded with). Example: ``enc.pair_scores(read_pairs("dev.tsv"))``."""
        texts, left, right = pairs.distinct()
        vectors = self.encode(texts)
        return exp_neg_l1(vectors[left], vectors[right])

    def match(self, a: str, b: str) -> float | None:
        """The calibrated probability that the pair means the same (``calibration.py``); None
        for a model saved without a calibration. Example: ``enc.match("怎么退货", "如何退货")``."""
        if self.calibration is None:
            return None
        return float(self.calibration(self.similarity(a, b)))

    def calibrate(self, pairs: Pairs, held_out: bool = True, scores: np.ndarray | None = None) -> Calibration:
        """Fit the match probability on labelled pairs (0/1), replacing the current one;
        ``save_settings`` (or ``save``) keeps it. ``held_out``: the pairs were not trained on
        (recorded with the fit); ``scores``: their ``pair_scores``, when already computed.
        Example: ``enc.calibrate(read_pairs("my_domain_dev.tsv")); enc.save_settings("models/faq")``."""
        if pairs.graded:
            raise InputError(f"{pairs.source}: calibration needs 0/1 labels, not graded scores", argument="pairs")
        scores = self.pair_scores(pairs) if scores is None else scores
        self.calibration = calibrate_fit(scores, pairs.labels, {"file": Path(str(pairs.source)).name,
                                                                "held_out": held_out})
        return self.calibration

    def predict(self, a: str, b: str) -> bool:
        """Whether the model calls the pair the same meaning: ``similarity >= threshold``.

        Example: ``enc.predict("怎么退货", "如何退货")`` → True or False."""
        return self.similarity(a, b) >= self.threshold

    def keras_model(self):
        """The Keras encoder with these weights (loads TensorFlow, ``keras_runtime.load``).

        Example: ``enc.keras_model().summary()``."""
        from .keras_runtime import load

        load()
        from .model import build_encoder

        model = build_encoder(self.config)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / WEIGHTS).write_bytes(self.keras_weights)
            model.load_weights(Path(tmp) / WEIGHTS)
        return model

    def siamese_model(self):
        """The Keras Siamese network around this encoder (shared weights), as trained.

        Example: ``enc.siamese_model().predict([ids_a, ids_b])`` (padded id rows)."""
        encoder = self.keras_model()  # loads TensorFlow first (keras_runtime.load)
        from .model import build_siamese

        return build_siamese(encoder)

    # -- model directory ---------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model directory atomically (a failed save leaves an existing one intact).

        An existing path is replaced only if it is an empty directory or a siamsearch model
        directory: saving to ``.`` must never wipe a user's folder.
        Example: ``enc.save("models/faq")``.
        """
        path = Path(path)
        check_model_path(path)
        with staged_directory(path) as stage:
            self.write(stage)

    @functools.cached_property
    def weights_sha256(self) -> str:
        return sha256_bytes(self.keras_weights)

    def _config_doc(self) -> dict:
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "siamsearch_version": __version__,
            "fingerprint": self.fingerprint,
            "weights_sha256": self.weights_sha256,
            "encoder": self.config.to_dict(),
            "threshold": self.threshold,
            **({"calibration": self.calibration.to_dict()} if self.calibration else {}),
            **({"fusion": self.fusion.to_dict()} if self.fusion else {}),
            "training": self.training,
        }

    def save_settings(self, path: str | Path) -> None:
        """Rewrite the threshold and calibration in this model's own directory (``config.json``,
        atomically), leaving every other file there as it is. Example, after ``calibrate``:
        ``enc.save_settings("models/faq")``."""
        path = Path(path)
        if not is_model_dir(path) or json.loads((path / CONFIG).read_text(encoding="utf-8")).get(
                "fingerprint") != self.fingerprint:
            raise ModelDirectoryError(f"{path}: not the directory of this model (another fingerprint, or none); "
                                      "save the whole model there instead", path=path)
        write_json_atomic(path / CONFIG, self._config_doc())

    def write(self, directory: Path, reuse: Path | None = None) -> None:
        """Write the model files into an existing, not yet visible directory. ``reuse``: a
        directory holding this same model (fingerprint and weights, as its config.json says),
        whose vocabulary, graph and weights (``SAME_MODEL_FILES``) are hard-linked instead of
        written again, as an index's next generation does with its encoder copy; where they
        cannot be, they are written.

        Example: ``enc.write(staging_dir)`` (``save`` stages and swaps it in)."""
        write_json(directory / CONFIG, self._config_doc())
        write_json(directory / HISTORY, self.history)
        write_json(directory / METRICS, self.metrics)
        if reuse is not None and self._same_model(reuse):
            try:
                for name in SAME_MODEL_FILES:
                    os.link(reuse / name, directory / name)
                return
            except OSError:  # another file system, or gone: written below
                for name in SAME_MODEL_FILES:
                    (directory / name).unlink(missing_ok=True)
        write_json(directory / VOCAB, {"pad_id": 0, "oov_id": 1, "chars": self.vocab.chars})
        (directory / ONNX).write_bytes(self.onnx_model)
        (directory / WEIGHTS).write_bytes(self.keras_weights)

    def _same_model(self, directory: Path) -> bool:
        try:
            config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and config.get("fingerprint") == self.fingerprint and \
            config.get("weights_sha256") == self.weights_sha256

    @classmethod
    def load(cls, path: str | Path | None = None) -> Encoder:
        """Load a model directory, or a shipped model by name (default: the ``default`` one;
        ``shipped.model_path`` has the rule); refuse one that is incomplete, corrupted or of
        another format. Example: ``Encoder.load()`` (the shipped default), ``Encoder.load("bq")``
        (the shipped BQ specialist), ``Encoder.load("models/faq")``."""
        path = model_path(path)
        if not path.is_dir():
            raise ModelDirectoryError(f"{path}: no such model directory, nor a shipped model (those are "
                                      f"{', '.join(shipped_models())}); {TRAIN_MODEL}", path=path)

        def damaged(why: str) -> ModelDirectoryError:
            return ModelDirectoryError.damaged(path, why)

        try:
            config_doc = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise damaged(f"incomplete model directory, {CONFIG} is missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise damaged(f"unreadable JSON ({e})") from None
        if not isinstance(config_doc, dict) or config_doc.get("format") != MODEL_FORMAT:
            raise damaged(f"{CONFIG} is not a siamsearch model configuration")
        if config_doc.get("format_version") != MODEL_FORMAT_VERSION:
            raise ModelDirectoryError(
                f"{path}: model format version {config_doc.get('format_version')!r} is not supported "
                f"by siamsearch {__version__} (expects {MODEL_FORMAT_VERSION}); retrain it with this version",
                path=path)
        for name in (VOCAB, ONNX, WEIGHTS):
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
            config = EncoderConfig.from_dict(config_doc["encoder"])
            vocab = Vocabulary(vocab_doc["chars"])
        except (KeyError, TypeError, ValueError) as e:
            raise damaged(f"invalid configuration or vocabulary ({e})") from None
        if config.vocab_size != len(vocab):
            raise damaged(f"{VOCAB} has {len(vocab)} ids but {CONFIG} expects {config.vocab_size}")
        if fingerprint(config, vocab, onnx_model) != config_doc.get("fingerprint"):  # checked before parsing
            raise damaged(f"{ONNX} or the vocabulary do not match the fingerprint in {CONFIG}")
        if sha256_bytes(weights) != config_doc.get("weights_sha256"):
            raise damaged(f"{WEIGHTS} does not match its checksum in {CONFIG}")
        threshold = config_doc.get("threshold", DEFAULT_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise damaged(f"threshold {threshold!r} in {CONFIG} is not a score between 0 and 1")
        try:
            calibration = (Calibration.from_dict(config_doc["calibration"]) if "calibration" in config_doc else None)
        except ValueError as e:
            raise damaged(f"invalid calibration in {CONFIG} ({e})") from None
        try:
            fusion = fusion_from_dict(config_doc["fusion"]) if "fusion" in config_doc else None
        except (InputError, TypeError) as e:
            raise damaged(f"invalid fusion in {CONFIG} ({e})") from None
        info = {"training": config_doc.get("training"), "history": extra.get(HISTORY), "metrics": extra.get(METRICS),
                "threshold": float(threshold), "calibration": calibration, "fusion": fusion}
        try:
            return cls(config, vocab, onnx_model, weights, **info)
        except Exception as e:  # onnxruntime raises its own types for a graph it cannot load
            raise damaged(f"{ONNX} cannot be loaded ({type(e).__name__})") from None


def probe_ids(config: EncoderConfig) -> np.ndarray:
    """A fixed batch of id rows of assorted lengths, for comparing two encoder implementations."""
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, config.vocab_size, size=n).tolist() for n in (1, 2, 5, 9, 17, 33, config.max_length)]
    return pad(rows)


def is_model_dir(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text(encoding="utf-8")).get("format") == MODEL_FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def check_model_path(path: str | Path) -> None:
    """Refuse an output path that exists and is neither empty nor a model directory (before hours of training)."""
    check_output_dir(Path(path), is_model_dir, "a siamsearch model directory")
