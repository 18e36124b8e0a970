"""A convolutional encoder: character n-gram detectors of several widths, max-pooled over
the text, then a linear projection to the vector.

Why a second family: it composes characters as local n-grams (widths 1-3 cover most Chinese
words) instead of reading them in order, so every position is computed at once. Training
and encoding are matrix products over the whole batch rather than a loop over time: on a
CPU that is where the recipe's BiLSTM spends its time (docs/benchmarks.md, "Encoder
architectures", has the measured figures).

Padding: positions past a text's end are zeroed before and after each convolution, and a
convolution's window reads zeros beyond the ends as Keras's ``padding="same"`` does, so a
text's vector does not depend on how far its batch is padded. The ReLU outputs are ≥ 0, so
the max over the zeroed positions is the max over the text's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import Architecture


@dataclass(frozen=True)
class CNN(Architecture):
    """Convolutions of ``widths`` characters, ``filters`` each, ReLU, max over the text,
    concatenated, then a linear layer to ``output_dim``."""

    name = "cnn"
    summary = "character n-gram convolutions, max-pooled (widths=1,2,3 filters=256 output_dim=128)"
    masks_padding = False

    widths: tuple[int, ...] = (1, 2, 3)
    filters: int = 256
    output_dim: int = 128

    def describe(self, embedding_dim: int) -> str:
        widths = ", ".join(map(str, self.widths))
        return (f"{embedding_dim}-d vectors → convolutions of {widths} characters × {self.filters}, max-pooled → "
                f"{len(self.widths) * self.filters} → linear → {self.output_dim}-d")

    def build(self, ids, embedded, dropout: float):
        from keras import layers, ops

        mask = ops.expand_dims(ops.cast(ops.not_equal(ids, 0), embedded.dtype), -1)  # (batch, length, 1)
        x = embedded * mask
        pooled = []
        for width in self.widths:
            conv = layers.Conv1D(self.filters, width, padding="same", activation="relu", name=f"conv_{width}")(x)
            pooled.append(ops.max(conv * mask, axis=1))
        x = layers.Concatenate()(pooled) if len(pooled) > 1 else pooled[0]
        x = layers.Dropout(dropout)(x)
        return layers.Dense(self.output_dim, name="projection")(x)

    def onnx(self, model, to_numpy) -> tuple[list, dict]:
        """Each convolution as one MatMul per offset of its window over the zero-padded text,
        summed: onnxruntime's MatMul computes a row the same whatever the batch's shape, so a
        text's vector does not depend on its batch, bit for bit (its Conv does, in the last bit)."""
        from onnx import TensorProto, helper

        from ..export import CHARS, EMBEDDINGS, INPUT, OUTPUT

        constants = {"last_axis": np.array([-1], np.int64), "time_axis": np.array([1], np.int64)}
        nodes = [
            helper.make_node("Cast", [CHARS], ["mask"], to=TensorProto.FLOAT),  # (batch, length)
            helper.make_node("Unsqueeze", ["mask", "last_axis"], ["mask_t"]),  # (batch, length, 1)
            helper.make_node("Gather", [EMBEDDINGS, INPUT], ["x"]),  # (batch, length, dim)
            helper.make_node("Mul", ["x", "mask_t"], ["x_masked"]),
        ]
        pooled = []
        for width in self.widths:
            kernel, bias = (to_numpy(v).astype(np.float32) for v in model.get_layer(f"conv_{width}").weights)
            before = (width - 1) // 2  # Keras's (TensorFlow's) "same": the extra zero goes after the text
            after = width - 1 - before
            constants[f"pads{width}"] = np.array([0, before, 0, 0, after, 0], np.int64)
            nodes.append(helper.make_node("Pad", ["x_masked", f"pads{width}"], [f"x_pad{width}"]))
            parts = []
            for j in range(width):  # offset j of the window reads position t - before + j
                constants[f"W{width}_{j}"] = kernel[j]  # (dim, filters)
                constants[f"from{width}_{j}"] = np.array([j], np.int64)
                constants[f"to{width}_{j}"] = np.array([j - (width - 1) if j < width - 1 else 2**62], np.int64)
                nodes += [helper.make_node("Slice", [f"x_pad{width}", f"from{width}_{j}", f"to{width}_{j}",
                                                     "time_axis"], [f"x{width}_{j}"]),
                          helper.make_node("MatMul", [f"x{width}_{j}", f"W{width}_{j}"], [f"part{width}_{j}"])]
                parts.append(f"part{width}_{j}")
            constants[f"B{width}"] = bias
            nodes += [helper.make_node("Sum", parts + [f"B{width}"], [f"conv{width}"]),
                      helper.make_node("Relu", [f"conv{width}"], [f"relu{width}"]),
                      helper.make_node("Mul", [f"relu{width}", "mask_t"], [f"relu{width}_masked"]),
                      helper.make_node("ReduceMax", [f"relu{width}_masked"], [f"pool{width}"], axes=[1], keepdims=0)]
            pooled.append(f"pool{width}")
        nodes.append(helper.make_node("Concat", pooled, ["features"], axis=1))
        kernel, bias = (to_numpy(v).astype(np.float32) for v in model.get_layer("projection").weights)
        constants.update({"projection_w": kernel, "projection_b": bias})
        nodes += [helper.make_node("MatMul", ["features", "projection_w"], ["projected"]),
                  helper.make_node("Add", ["projected", "projection_b"], [OUTPUT])]
        return nodes, constants
