"""``Encoder``: a trained shared encoder with its vocabulary: it encodes, scores and calibrates.

Encoding runs the ONNX graph with onnxruntime, so loading a model, building an index and
answering queries never import TensorFlow (see ``export.py`` for why and how). The ONNX
graph is written from the Keras weights when training ends and checked against Keras there
(``export.from_keras``); ``keras_model()`` / ``siamese_model()`` rebuild the Keras side when
wanted (``model.py``). The model directory, its files and checks are ``model_folder.py``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime

from . import model_folder
from .architectures import EncoderConfig
from .calibration import Calibration
from .calibration import fit as calibrate_fit
from .errors import InputError, ModelDirectoryError
from .fusion import Fusion
from .model_folder import DEFAULT_THRESHOLD, fingerprint
from .progress import Advance
from .scoring import exp_neg_l1
from .shipped import model_path
from .storage import sha256_bytes
from .system import available_cpus
from .text import Vocabulary, first_blank, length_sorted_batches, pad

if TYPE_CHECKING:
    from .data import Pairs

ENCODE_BATCH = 64  # measured fastest per thread for onnxruntime's LSTM on 2 cores (16 to 128 are within 10%)
ENCODE_CHUNK = 100_000
DEFAULT_MODEL = model_path()
"""The model shipped with siamsearch as its default (see its MODEL_CARD.md): what ``Encoder.load()``
opens without a path; ``shipped.shipped_models()`` lists every shipped model."""



def inference_session(onnx_model: bytes) -> onnxruntime.InferenceSession:
    """One thread per session: ``encode`` runs batches on several threads instead, which
    measured 1.2× faster on 2 cores than one session using both cores for each batch
    (29,700 vs 24,400 BQ sentences/s at batch 64)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


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
        self._session = inference_session(onnx_model)

    def __repr__(self) -> str:
        return (f"Encoder(fingerprint={self.fingerprint[:12]!r}, characters={len(self.vocab.chars):,}, "
                f"dim={self.dim}, threshold={self.threshold:.4g})")

    def __reduce__(self):
        return Encoder, (self.config, self.vocab, self.onnx_model, self.keras_weights, self.training, self.history,
                         self.metrics, self.threshold, self.calibration, self.fusion)

    @property
    def dim(self) -> int:
        return self.config.output_dim

    def run(self, ids: np.ndarray) -> np.ndarray:
        """The encodings of a padded (batch, length) id matrix (``text.pad``), as the graph computes them.

        Example: ``enc.run(pad([enc.vocab.ids("怎么退货", enc.config.max_length)]))``."""
        return self._session.run(None, {"ids": ids})[0]

    def encode(self, texts: Sequence[str], batch_size: int = ENCODE_BATCH, progress: Advance | None = None,
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
        from .model import keras_encoder

        return keras_encoder(self.config, self.keras_weights)

    def siamese_model(self):
        """The Keras Siamese network around this encoder (shared weights), as trained.

        Example: ``enc.siamese_model().predict([ids_a, ids_b])`` (padded id rows)."""
        encoder = self.keras_model()  # loads TensorFlow first (keras_runtime.load)
        from .model import build_siamese

        return build_siamese(encoder)

    @functools.cached_property
    def weights_sha256(self) -> str:
        return sha256_bytes(self.keras_weights)

    # -- the model directory (model_folder.py) -------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model directory atomically (``model_folder.save``). Example: ``enc.save("models/faq")``."""
        model_folder.save(self, path)

    def save_settings(self, path: str | Path) -> None:
        """Rewrite the threshold, calibration and fusion in this model's own directory
        (``config.json``), leaving its other files as they are. Example, after ``calibrate``:
        ``enc.save_settings("models/faq")``."""
        model_folder.save_settings(self, path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Encoder:
        """Load a model directory, or a shipped model by name (default: the ``default`` one;
        ``shipped.model_path`` has the rule); refuse one that is incomplete, corrupted or of
        another format (``model_folder.read``). Example: ``Encoder.load()`` (the shipped
        default), ``Encoder.load("bq")`` (the shipped BQ specialist), ``Encoder.load("models/faq")``."""
        found = model_folder.read(path)
        try:
            return cls(**found)
        except Exception as e:  # onnxruntime raises its own types for a graph it cannot load
            raise ModelDirectoryError.damaged(model_path(path), f"{model_folder.ONNX} cannot be loaded "
                                                                f"({type(e).__name__})") from None
