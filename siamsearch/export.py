"""The trained Keras encoder → an ONNX graph that onnxruntime runs without TensorFlow.

Why: importing TensorFlow costs about 2.7 s and one ``model.predict`` call 44 ms, so a
query path built on Keras can never answer a cold ``siamsearch query`` in half a second.
The encoder is small and fixed (Embedding → BiLSTM → BiLSTM), so it is written here as
ONNX's native operators: ``Gather`` for the character vectors and one fused ``LSTM`` op
per bidirectional layer, with ``sequence_lens`` doing what Keras's padding mask does
(the backward direction starts at each sentence's last real character). onnxruntime
runs that in about 0.1 ms for one sentence, and the outputs equal Keras's within 1e-6.

The generic converters (``keras.Model.export(format="onnx")``, tf2onnx) were measured on
the reference machine at 2.5 ms for one sentence, and they need a tf2onnx release that
matches the installed TensorFlow; the graph here needs only the ``onnx`` package.

Weight layout: Keras keeps each LSTM's gates in the order (input, forget, cell, output)
in one (input_dim, 4·units) kernel; ONNX wants (input, output, forget, cell) with the
matrices transposed, and a separate recurrent bias, which Keras does not have (zeros).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_OPSET = 17
INPUT, OUTPUT = "ids", "vectors"


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


def encoder_to_onnx(model, embedding_layer: str, lstm_layers: tuple[str, str], to_numpy) -> bytes:
    """Serialise the Keras encoder (``model.build_encoder``'s layers) as an ONNX model.

    Input ``ids``: (batch, length) int32, right-padded with 0. Output ``vectors``:
    (batch, 2·units) float32. Dropout is the identity at inference and has no node.
    """
    embeddings = to_numpy(model.get_layer(embedding_layer).embeddings).astype(np.float32)
    constants = {
        "embeddings": embeddings,
        "pad_id": np.array(0, np.int32),
        "time_axis": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Equal", [INPUT, "pad_id"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["is_char"]),
        helper.make_node("Cast", ["is_char"], ["is_char_int"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", ["is_char_int", "time_axis"], ["lengths"], keepdims=0),
        helper.make_node("Transpose", [INPUT], ["ids_time_major"], perm=[1, 0]),
        helper.make_node("Gather", ["embeddings", "ids_time_major"], ["x1"]),  # (time, batch, 300)
    ]
    first, second = (model.get_layer(name) for name in lstm_layers)
    for n, layer in ((1, first), (2, second)):
        w, r, b = _lstm_weights(layer, to_numpy)
        constants.update({f"W{n}": w, f"R{n}": r, f"B{n}": b})
        nodes.append(helper.make_node("LSTM", [f"x{n}", f"W{n}", f"R{n}", f"B{n}", "lengths"], [f"Y{n}", f"Y{n}_h"],
                                      direction="bidirectional", hidden_size=r.shape[-1]))
        if n == 1:  # Y1: (time, direction, batch, units) → (time, batch, [forward | backward]) as Keras concatenates
            constants["seq_shape"] = np.array([0, 0, 2 * r.shape[-1]], np.int64)
            nodes += [helper.make_node("Transpose", ["Y1"], ["Y1_t"], perm=[0, 2, 1, 3]),
                      helper.make_node("Reshape", ["Y1_t", "seq_shape"], ["x2"])]
    units = second.forward_layer.units
    constants["out_shape"] = np.array([0, 2 * units], np.int64)
    nodes += [  # Y2_h: (direction, batch, units) → (batch, [forward | backward])
        helper.make_node("Transpose", ["Y2_h"], ["Y2_h_t"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["Y2_h_t", "out_shape"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes, "siamsearch_encoder",
        [helper.make_tensor_value_info(INPUT, TensorProto.INT32, ["batch", "length"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 2 * units])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                                   producer_name="siamsearch")
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()
