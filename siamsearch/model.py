"""The Keras networks: the shared character encoder and the Siamese head around it.

Encoder: ids → frozen Embedding(300, padding masked) → BiLSTM(128, sequences) → Dropout
→ BiLSTM(32) → Dropout → 64-d vector. Siamese: the same encoder on both sides, then
``ManhattanSimilarity`` = exp(-Σ|left - right|). The architecture is rebuilt from
``EncoderConfig`` and only weights are stored, so loading a model never runs stored code.

``encoder_forward`` computes the same encoder from the same weights in the way training
on a CPU needs it fast (see its docstring); the Keras model stays what is saved and exported.

Import this module after ``keras_runtime.load()``, which sets up TensorFlow for training
(importing it first gives TensorFlow's defaults and its start-up noise on stderr).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from .architecture import EMBEDDING_LAYER, LSTM_LAYERS, EncoderConfig


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


def _lstm_steps(gates, mask, recurrent_kernel):
    """Keras's LSTM cell over time-major input gates (x·W + b, [T, B, 4u], gates i, f, c, o):
    each step adds h·U, then c = σ(f)·c + σ(i)·tanh(c̃) and h = σ(o)·tanh(c); where ``mask``
    ([T, B, 1]) is False, h and c carry over unchanged, as Keras's masking does. Returns h at
    every step, [T, B, u]."""
    units = recurrent_kernel.shape[0]
    zeros = tf.zeros([tf.shape(gates)[1], units], gates.dtype)

    def step(carry, inputs):
        h, c = carry
        z, m = inputs
        i, f, g, o = tf.split(z + tf.matmul(h, recurrent_kernel), 4, axis=1)
        c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h_new = tf.sigmoid(o) * tf.tanh(c_new)
        return tf.where(m, h_new, h), tf.where(m, c_new, c)

    return tf.scan(step, (gates, mask), initializer=(zeros, zeros))[0]


def encoder_forward(encoder: keras.Model, ids, training: bool = False):
    """``encoder(ids, training=training)`` from the same weights, computed faster for training.

    Why: Keras runs each LSTM's input projection x·W inside its loop over time, one small
    matmul a step. Here the first BiLSTM's input projection is a table (character vectors ·
    W + b, one row per character) gathered by id, whose gradient into W is a product with
    the vectors instead of one a step; the second BiLSTM's is one matmul over all steps; and
    everything stays time-major, without Keras's per-layer transposes. A training step of
    the recipe measured 1.25-1.3x faster on a 2-core CPU (docs/benchmarks.md). The table
    costs vocabulary × vector size × gates per step, so it pays while the vocabulary is
    smaller than a batch's padded characters (BQ: 1.5 k characters, batches of ~10 k). The
    outputs equal the Keras model's within float rounding (tests/test_training.py). Dropout
    draws the same number of masks from the same seeds, laid out time-major.

    With a GPU it returns ``encoder(ids)`` itself: Keras's LSTMs then run cuDNN's fused
    kernel, which a loop of small steps is not expected to beat (not measured here: the
    numbers above are from a CPU).
    """
    if tf.config.list_logical_devices("GPU"):
        return encoder(ids, training=training)
    vectors = encoder.get_layer(EMBEDDING_LAYER).embeddings
    first, second = (encoder.get_layer(name) for name in LSTM_LAYERS)
    dropouts = [layer for layer in encoder.layers if isinstance(layer, layers.Dropout)]
    ids = tf.transpose(tf.convert_to_tensor(ids, tf.int32))  # [T, B]
    mask = (ids > 0)[:, :, None]
    reversed_ids, reversed_mask = tf.reverse(ids, [0]), tf.reverse(mask, [0])

    def table(cell):
        return tf.matmul(vectors, cell.kernel) + cell.bias

    fwd, bwd = first.forward_layer.cell, first.backward_layer.cell
    forward = _lstm_steps(tf.gather(table(fwd), ids), mask, fwd.recurrent_kernel)
    backward = tf.reverse(_lstm_steps(tf.gather(table(bwd), reversed_ids), reversed_mask, bwd.recurrent_kernel), [0])
    # Keras zeroes a sequence's masked steps; the second BiLSTM skips them either way
    states = dropouts[0](tf.concat([forward, backward], -1), training=training)

    fwd, bwd = second.forward_layer.cell, second.backward_layer.cell
    forward = _lstm_steps(tf.einsum("tbd,dk->tbk", states, fwd.kernel) + fwd.bias, mask, fwd.recurrent_kernel)
    backward = _lstm_steps(tf.einsum("tbd,dk->tbk", tf.reverse(states, [0]), bwd.kernel) + bwd.bias,
                           reversed_mask, bwd.recurrent_kernel)
    return dropouts[1](tf.concat([forward[-1], backward[-1]], -1), training=training)
