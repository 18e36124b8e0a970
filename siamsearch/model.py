"""The Keras networks: the shared character encoder and the Siamese head around it.

Encoder: ids → Embedding (the character vectors, frozen unless fine-tuned) → the
architecture's layers (``architectures``; the recipe's: BiLSTM(128, sequences) → Dropout →
BiLSTM(32) → Dropout → 64-d). Siamese: the same encoder on both sides, then
``ManhattanSimilarity`` = exp(-Σ|left - right|). The network is rebuilt from
``EncoderConfig`` and only weights are stored, so loading a model never runs stored code.

Import this module after ``keras_runtime.load()``, which sets up TensorFlow for training
(importing it first gives TensorFlow's defaults and its start-up noise on stderr).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
from keras import layers, ops

from .architectures import EMBEDDING_LAYER, EncoderConfig
from .model_folder import WEIGHTS


def build_encoder(config: EncoderConfig) -> keras.Model:
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = layers.Embedding(config.vocab_size, config.embedding_dim, mask_zero=config.architecture.masks_padding,
                         trainable=False, name=EMBEDDING_LAYER)(ids)
    return keras.Model(ids, config.architecture.build(ids, x, config.dropout), name="encoder")


def keras_encoder(config: EncoderConfig, weights: bytes) -> keras.Model:
    """The encoder of ``config`` with these weights (an ``encoder.weights.h5`` file's bytes)."""
    model = build_encoder(config)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / WEIGHTS).write_bytes(weights)
        model.load_weights(Path(tmp) / WEIGHTS)
    return model


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
