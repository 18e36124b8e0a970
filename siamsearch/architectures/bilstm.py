"""The MaLSTM recipe's encoder: stacked bidirectional LSTMs over the characters, the last
one's final states (forward | backward) as the vector.

Recipe: BiLSTM(128, sequences) → Dropout → BiLSTM(32) → Dropout → 64-d. ``lstm_units``
sets the layers (one or more) and their widths; the vector has 2 × the last width.

ONNX: one fused ``LSTM`` op per layer with ``sequence_lens`` doing what Keras's padding mask
does (the backward direction starts at each sentence's last real character); onnxruntime
runs it in about 0.1 ms for one sentence, and the outputs equal Keras's within 1e-6. The
generic converters (``keras.Model.export(format="onnx")``, tf2onnx) were measured at 2.5 ms
for one sentence and need a tf2onnx release that matches the installed TensorFlow.
Weight layout: Keras keeps each LSTM's gates in the order (input, forget, cell, output) in
one (input_dim, 4·units) kernel; ONNX wants (input, output, forget, cell) with the matrices
transposed, and a separate recurrent bias, which Keras does not have (zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import EMBEDDING_LAYER, Architecture


def _onnx_gates(a: np.ndarray, axis: int) -> np.ndarray:
    i, f, c, o = np.split(a, 4, axis=axis)
    return np.concatenate([i, o, f, c], axis=axis)


def _lstm_weights(bidirectional, to_numpy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, R, B) of one Keras ``Bidirectional(LSTM)`` in ONNX's layout, forward direction first."""
    w, r, b = [], [], []
    for layer in (bidirectional.forward_layer, bidirectional.backward_layer):
        cell = layer.cell
        kernel, recurrent, bias = (to_numpy(v).astype(np.float32)
                                   for v in (cell.kernel, cell.recurrent_kernel, cell.bias))
        w.append(_onnx_gates(kernel, 1).T)
        r.append(_onnx_gates(recurrent, 1).T)
        b.append(np.concatenate([_onnx_gates(bias, 0), np.zeros_like(bias)]))
    return np.stack(w), np.stack(r), np.stack(b)


def _lstm_steps(gates, mask, recurrent_kernel):
    """Keras's LSTM cell over time-major input gates (x·W + b, [T, B, 4u], gates i, f, c, o):
    each step adds h·U, then c = σ(f)·c + σ(i)·tanh(c̃) and h = σ(o)·tanh(c); where ``mask``
    ([T, B, 1]) is False, h and c carry over unchanged, as Keras's masking does. Returns h at
    every step, [T, B, u]."""
    import tensorflow as tf

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


@dataclass(frozen=True)
class BiLSTM(Architecture):
    """Stacked BiLSTMs: reads the characters in order, both ways (the recipe, ``(128, 32)``)."""

    name = "bilstm"
    summary = "stacked bidirectional LSTMs, the MaLSTM recipe's (lstm_units=128,32: a 64-d vector)"

    lstm_units: tuple[int, ...] = (128, 32)

    @property
    def output_dim(self) -> int:
        return 2 * self.lstm_units[-1]

    @property
    def layer_names(self) -> list[str]:
        return [f"bilstm_{n}" for n in range(1, len(self.lstm_units) + 1)]

    def describe(self, embedding_dim: int) -> str:
        return " → ".join([f"{embedding_dim}-d vectors", *(f"BiLSTM {u}" for u in self.lstm_units),
                           f"{self.output_dim}-d"])

    def build(self, ids, embedded, dropout: float):
        from keras import layers

        x = embedded
        for n, (units, name) in enumerate(zip(self.lstm_units, self.layer_names), 1):
            last = n == len(self.lstm_units)
            x = layers.Bidirectional(layers.LSTM(units, return_sequences=not last), name=name)(x)
            x = layers.Dropout(dropout)(x)
        return x

    def forward(self, model, ids, training: bool = False):
        """``model(ids, training=training)`` from the same weights, computed faster for training.

        Why: Keras runs each LSTM's input projection x·W inside its loop over time, one small
        matmul a step. Here the first BiLSTM's input projection is a table (character vectors
        · W + b, one row per character) gathered by id, whose gradient into W is a product
        with the vectors instead of one a step; each later BiLSTM's is one matmul over all
        steps; and everything stays time-major, without Keras's per-layer transposes. A
        training step of the recipe measured 1.25-1.3x faster on a 2-core CPU
        (docs/benchmarks.md). The table costs vocabulary × vector size × gates per step, so it
        pays while the vocabulary is smaller than a batch's padded characters (BQ: 1.5 k
        characters, batches of ~10 k). The outputs equal the Keras model's within float
        rounding (tests/test_training.py). Dropout draws the same number of masks from the
        same seeds, laid out time-major.

        With a GPU it returns ``model(ids)`` itself: Keras's LSTMs then run cuDNN's fused
        kernel, which a loop of small steps is not expected to beat (not measured here).
        """
        import tensorflow as tf
        from keras import layers

        if tf.config.list_logical_devices("GPU"):
            return model(ids, training=training)
        vectors = model.get_layer(EMBEDDING_LAYER).embeddings
        dropouts = [layer for layer in model.layers if isinstance(layer, layers.Dropout)]
        ids = tf.transpose(tf.convert_to_tensor(ids, tf.int32))  # [T, B]
        mask = (ids > 0)[:, :, None]
        reversed_mask = tf.reverse(mask, [0])
        states = None
        for n, name in enumerate(self.layer_names):
            fwd, bwd = model.get_layer(name).forward_layer.cell, model.get_layer(name).backward_layer.cell
            if n == 0:  # the input projection as a table of the characters, gathered by id
                gates_f = tf.gather(tf.matmul(vectors, fwd.kernel) + fwd.bias, ids)
                gates_b = tf.gather(tf.matmul(vectors, bwd.kernel) + bwd.bias, tf.reverse(ids, [0]))
            else:
                gates_f = tf.einsum("tbd,dk->tbk", states, fwd.kernel) + fwd.bias
                gates_b = tf.einsum("tbd,dk->tbk", tf.reverse(states, [0]), bwd.kernel) + bwd.bias
            forward = _lstm_steps(gates_f, mask, fwd.recurrent_kernel)
            backward = _lstm_steps(gates_b, reversed_mask, bwd.recurrent_kernel)
            if n == len(self.layer_names) - 1:
                return dropouts[n](tf.concat([forward[-1], backward[-1]], -1), training=training)
            # Keras zeroes a sequence's masked steps; the next BiLSTM skips them either way
            states = dropouts[n](tf.concat([forward, tf.reverse(backward, [0])], -1), training=training)
        raise AssertionError("a BiLSTM has at least one layer")

    def onnx(self, model, to_numpy) -> tuple[list, dict]:
        from onnx import TensorProto, helper

        from ..export import CHARS, EMBEDDINGS, INPUT, OUTPUT

        constants = {"time_axis": np.array([1], np.int64)}
        nodes = [
            helper.make_node("Cast", [CHARS], ["is_char_int"], to=TensorProto.INT32),
            helper.make_node("ReduceSum", ["is_char_int", "time_axis"], ["lengths"], keepdims=0),
            helper.make_node("Transpose", [INPUT], ["ids_time_major"], perm=[1, 0]),
            helper.make_node("Gather", [EMBEDDINGS, "ids_time_major"], ["x1"]),  # (time, batch, dim)
        ]
        last = len(self.layer_names)
        for n, name in enumerate(self.layer_names, 1):
            w, r, b = _lstm_weights(model.get_layer(name), to_numpy)
            constants.update({f"W{n}": w, f"R{n}": r, f"B{n}": b})
            nodes.append(helper.make_node("LSTM", [f"x{n}", f"W{n}", f"R{n}", f"B{n}", "lengths"],
                                          [f"Y{n}", f"Y{n}_h"], direction="bidirectional", hidden_size=r.shape[-1]))
            if n < last:  # Y: (time, direction, batch, units) → (time, batch, [forward | backward])
                constants[f"seq_shape{n}"] = np.array([0, 0, 2 * r.shape[-1]], np.int64)
                nodes += [helper.make_node("Transpose", [f"Y{n}"], [f"Y{n}_t"], perm=[0, 2, 1, 3]),
                          helper.make_node("Reshape", [f"Y{n}_t", f"seq_shape{n}"], [f"x{n + 1}"])]
        constants["out_shape"] = np.array([0, self.output_dim], np.int64)
        nodes += [  # Y_h: (direction, batch, units) → (batch, [forward | backward])
            helper.make_node("Transpose", [f"Y{last}_h"], ["Y_h_t"], perm=[1, 0, 2]),
            helper.make_node("Reshape", ["Y_h_t", "out_shape"], [OUTPUT]),
        ]
        return nodes, constants
