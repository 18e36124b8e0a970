"""The trained Keras encoder → an ONNX graph that onnxruntime runs without TensorFlow.

Why: importing TensorFlow costs about 2.7 s and one ``model.predict`` call 44 ms, so a
query path built on Keras can never answer a cold ``siamsearch query`` in half a second.
Each architecture writes its own layers as ONNX's native operators
(``Architecture.onnx``); this module adds what they share (the ids, the character vectors,
which positions hold a character) and checks the graph. The result needs only the ``onnx``
package to write and onnxruntime to run; ``from_keras`` wraps it as an ``Encoder`` and
compares it with Keras.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .architectures import EMBEDDING_LAYER, EncoderConfig
from .encoder import Encoder
from .errors import SiamsearchError
from .model_folder import WEIGHTS
from .text import Vocabulary, pad

EXPORT_TOLERANCE = 1e-5

ONNX_OPSET = 17
INPUT, OUTPUT = "ids", "vectors"
"""The graph's input, (batch, length) int32 ids right-padded with 0, and its (batch, dim) output."""
EMBEDDINGS, CHARS = "embeddings", "is_char"
"""Shared by every architecture's nodes: the character vectors (rows by id) and a (batch,
length) bool that is True where a position holds a character, not padding."""


def encoder_to_onnx(model, config: EncoderConfig, to_numpy) -> bytes:
    """Serialise the Keras encoder (``model.build_encoder(config)``) as an ONNX model.
    Dropout is the identity at inference and has no node."""
    constants = {EMBEDDINGS: to_numpy(model.get_layer(EMBEDDING_LAYER).embeddings).astype(np.float32),
                 "pad_id": np.array(0, np.int32)}
    nodes = [helper.make_node("Equal", [INPUT, "pad_id"], ["is_pad"]),
             helper.make_node("Not", ["is_pad"], [CHARS])]
    own_nodes, own_constants = config.architecture.onnx(model, to_numpy)
    graph = helper.make_graph(
        nodes + own_nodes, "siamsearch_encoder",
        [helper.make_tensor_value_info(INPUT, TensorProto.INT32, ["batch", "length"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", config.output_dim])],
        [numpy_helper.from_array(value, name) for name, value in {**constants, **own_constants}.items()],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                                   producer_name="siamsearch")
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


def from_keras(model, vocab: Vocabulary, config: EncoderConfig, **info) -> Encoder:
    """Wrap a trained Keras encoder: export its ONNX graph and check it computes the same
    vectors (within ``EXPORT_TOLERANCE``). What ``train`` does at its end."""
    from .keras_runtime import load

    to_numpy = load().ops.convert_to_numpy
    onnx_model = encoder_to_onnx(model, config, to_numpy)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_weights(Path(tmp) / WEIGHTS)
        weights = (Path(tmp) / WEIGHTS).read_bytes()
    encoder = Encoder(config, vocab, onnx_model, weights, **info)
    probe = probe_ids(config)
    gap = float(np.abs(encoder.run(probe) - to_numpy(model(probe, training=False))).max())
    if not gap <= EXPORT_TOLERANCE:
        raise SiamsearchError(f"the ONNX export differs from the Keras encoder by {gap:.2g}; please report this")
    return encoder


def probe_ids(config: EncoderConfig) -> np.ndarray:
    """A fixed batch of id rows of assorted lengths, for comparing two encoder implementations."""
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, config.vocab_size, size=n).tolist() for n in (1, 2, 5, 9, 17, 33, config.max_length)]
    return pad(rows)
