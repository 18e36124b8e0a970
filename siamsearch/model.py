"""The Keras networks: the shared character encoder and the Siamese head around it.

Encoder: ids → frozen Embedding(300, padding masked) → BiLSTM(128, sequences) → Dropout
→ BiLSTM(32) → Dropout → 64-d vector. Siamese: the same encoder on both sides, then
``ManhattanSimilarity`` = exp(-Σ|left - right|). The architecture is rebuilt from
``EncoderConfig`` and only weights are stored, so loading a model never runs stored code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .encoder import EncoderConfig

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide C++ log lines; real failures still raise


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """TensorFlow 2.21's C++ runtime writes start-up notices (the oneDNN line, the absl
    preamble) straight to file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL says; a CLI whose
    errors are one line cannot print four lines of noise first. Only the import is silenced:
    a failing import still raises its Python exception after stderr is restored."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import keras
    import tensorflow as tf
    from keras import layers, ops


def _configure_threads() -> None:
    """Many ops side by side, one thread each: measured fastest for these small LSTM matmuls.

    Applies only if the caller has not configured TensorFlow's thread pools already;
    TF_NUM_INTEROP_THREADS / TF_NUM_INTRAOP_THREADS override the defaults.
    """
    threading = tf.config.threading
    try:
        if threading.get_inter_op_parallelism_threads() == 0:
            threading.set_inter_op_parallelism_threads(int(os.environ.get("TF_NUM_INTEROP_THREADS", os.cpu_count() or 2)))
        if threading.get_intra_op_parallelism_threads() == 0:
            threading.set_intra_op_parallelism_threads(int(os.environ.get("TF_NUM_INTRAOP_THREADS", 1)))
    except RuntimeError:  # TensorFlow is already running: keep its settings
        pass


_configure_threads()

EMBEDDING_LAYER = "char_embedding"
LSTM_LAYERS = ("bilstm_1", "bilstm_2")


def build_encoder(config: EncoderConfig) -> keras.Model:
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = layers.Embedding(config.vocab_size, config.embedding_dim, mask_zero=True, trainable=False,
                         name=EMBEDDING_LAYER)(ids)
    x = layers.Bidirectional(layers.LSTM(config.lstm_units[0], return_sequences=True), name=LSTM_LAYERS[0])(x)
    x = layers.Dropout(config.dropout)(x)
    x = layers.Bidirectional(layers.LSTM(config.lstm_units[1]), name=LSTM_LAYERS[1])(x)
    x = layers.Dropout(config.dropout)(x)
    return keras.Model(ids, x, name="encoder")


@keras.saving.register_keras_serializable(package="siamsearch")
class ManhattanSimilarity(layers.Layer):
    """exp(-Σ|a - b|): 1 for identical encodings, towards 0 as they move apart."""

    def call(self, a, b):
        return ops.exp(-ops.sum(ops.abs(a - b), axis=-1))


def build_siamese(encoder: keras.Model) -> keras.Model:
    """Both sides share ``encoder`` (the same weights), so training one trains the search encoder."""
    left = keras.Input(shape=(None,), dtype="int32", name="left")
    right = keras.Input(shape=(None,), dtype="int32", name="right")
    score = ManhattanSimilarity(name="similarity")(encoder(left), encoder(right))
    return keras.Model([left, right], score, name="siamese")
