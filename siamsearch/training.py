"""Training the Siamese network on labelled pairs (the MaLSTM recipe).

Recipe: character vocabulary from the training pairs; frozen 300-d character vectors
(gensim CBOW trained on the training sentences unless a file is given); shared BiLSTM
encoder; exp(-L1) head; binary cross-entropy; Nadam (learning rate 0.002, the Keras 2
default the recipe ran with); 20 epochs; batch 512.

Speed: batches are bucketed by length (pairs sorted by their longer side, with random
tie-breaking, re-drawn every epoch, and batch order shuffled), so a batch is padded only
to its own longest sentence instead of the corpus maximum. The training step is traced
once for variable shapes and not XLA-compiled (XLA recompiles for every length).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import Pairs
from .encoder import Encoder, EncoderConfig
from .errors import InputError
from .evaluation import pair_metrics
from .model import EMBEDDING_LAYER, build_encoder, build_siamese, keras, tf
from .scoring import exp_neg_l1
from .text import Vocabulary, pad
from .vectors import WORD2VEC_SETTINGS, embedding_matrix, load_vectors, train_char_vectors

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict], None]
"""Called after each epoch with (epoch number from 1, total epochs, metrics incl. ``seconds``)."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 512
    max_length: int = 100
    seed: int = 0
    learning_rate: float = 0.002
    embedding_dim: int = 300

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "embedding_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1")
        if self.learning_rate <= 0:
            raise InputError("learning-rate must be positive")


def _bucketed(left: list[list[int]], right: list[list[int]], labels: np.ndarray, batch_size: int,
              rng: np.random.Generator | None) -> tf.data.Dataset:
    """Length-bucketed batches; with ``rng``, re-shuffled each time the dataset is iterated."""
    lengths = np.maximum([len(r) for r in left], [len(r) for r in right])

    def batches():
        if rng is None:
            order = np.argsort(lengths, kind="stable")
        else:
            order = np.lexsort((rng.random(len(lengths)), lengths))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if rng is not None:
            rng.shuffle(chunks)
        for b in chunks:
            yield (pad([left[i] for i in b]), pad([right[i] for i in b])), labels[b]

    ids = tf.TensorSpec([None, None], tf.int32)
    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=((ids, ids), tf.TensorSpec([None], tf.float32)))
    return dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(len(labels) / batch_size))).prefetch(2)


class _EpochReporter(keras.callbacks.Callback):
    def __init__(self, epochs: int, history: list[dict], on_epoch_end: EpochCallback | None):
        super().__init__()
        self.epochs, self.history, self.on_epoch_end_fn = epochs, history, on_epoch_end
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                  "seconds": round(time.perf_counter() - self.started, 2)}
        self.history.append(record)
        if self.on_epoch_end_fn:
            self.on_epoch_end_fn(epoch + 1, self.epochs, record)


def train(pairs: Pairs, valid: Pairs | None = None, config: TrainConfig = TrainConfig(),
          vectors: str | Path | None = None, on_epoch_end: EpochCallback | None = None) -> Encoder:
    """Train the Siamese network and return its shared encoder (save it with ``Encoder.save``)."""
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    if vectors is None:
        log.info("training %s-d character vectors with gensim on %s sentences",
                 config.embedding_dim, f"{2 * len(pairs):,}")
        kv = train_char_vectors(pairs.left + pairs.right, config.embedding_dim, config.seed)
        vectors_source = {"trained": "gensim Word2Vec", "dim": config.embedding_dim, **WORD2VEC_SETTINGS}
    else:
        kv = load_vectors(vectors)
        vectors_source = {"file": Path(vectors).name, "dim": kv.vector_size, "rows": len(kv)}

    enc_config = EncoderConfig(vocab_size=len(vocab), embedding_dim=kv.vector_size, max_length=config.max_length)
    model = build_encoder(enc_config)
    model.get_layer(EMBEDDING_LAYER).set_weights([embedding_matrix(vocab, kv, config.seed)])
    siamese = build_siamese(model)
    siamese.compile(optimizer=keras.optimizers.Nadam(config.learning_rate), loss="binary_crossentropy",
                    metrics=[keras.metrics.BinaryAccuracy(name="accuracy")], jit_compile=False)

    def ids(texts: list[str]) -> list[list[int]]:
        return [vocab.ids(t, config.max_length) for t in texts]

    rng = np.random.default_rng(config.seed)
    train_data = _bucketed(ids(pairs.left), ids(pairs.right), pairs.labels, config.batch_size, rng)
    valid_data = None if valid is None else _bucketed(
        ids(valid.left), ids(valid.right), valid.labels, config.batch_size, None)
    history: list[dict] = []
    siamese.fit(train_data, validation_data=valid_data, epochs=config.epochs, verbose=0, shuffle=False,
                callbacks=[_EpochReporter(config.epochs, history, on_epoch_end)])

    encoder = Encoder.from_keras(model, vocab, enc_config, history=history)
    if valid is not None:
        scores = exp_neg_l1(encoder.encode(valid.left), encoder.encode(valid.right))
        encoder.metrics["valid"] = {"file": Path(valid.source).name, **pair_metrics(scores, valid.labels)}
    encoder.training = {
        "settings": asdict(config),
        "pairs": {"file": Path(pairs.source).name, "n": len(pairs)},
        "valid": None if valid is None else {"file": Path(valid.source).name, "n": len(valid)},
        "vectors": vectors_source,
        "optimizer": "Nadam",
        "loss": "binary_crossentropy",
        "seconds": round(time.perf_counter() - started, 1),
    }
    return encoder
