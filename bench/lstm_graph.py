"""Can the encoder's ONNX graph encode faster, exactly? A probe for issue 21's "encoding ≥ 10×
the teacher" (today ~5.5-6.4×).

    python bench/lstm_graph.py            # prints two tables; writes nothing

Where the time goes: onnxruntime's fused ``LSTM`` op, one thread, a batch of 64 sentences of
20 characters, with the shipped layer sizes and with a 16-wide input (what is left is the
recurrence; the difference is the input projection, one GEMM over every time step).

The rewrite tried: the first layer's input is a character's 300-d vector, so its input
projection (plus bias) depends on the character alone and can be a table, vocabulary × 4·units
per direction, looked up instead of multiplied. ONNX's ``LSTM`` op always multiplies its input,
so the first layer becomes a ``Scan`` over time (both directions in one batched ``MatMul`` a
step; the backward direction reads each sentence reversed within its length, with
``ReverseSequence``, as ``sequence_lens`` does); the second layer stays the fused op. The
table is either stored in the graph (``stored``) or computed when the session loads, by
onnxruntime's constant folding (``folded``). Compared with the shipped graph in one process:
sentences/s over 4,000 STS-B and BQ test sentences (length-sorted batches as ``Encoder.encode``
makes them, one thread; the median of five passes, the graphs' order rotating), the largest
difference of any vector, session load time (the first load of a process pays more) and one query.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from siamsearch import Encoder
from siamsearch.data import read_pairs
from siamsearch.encoder import inference_session as session  # the product's own session settings
from siamsearch.text import length_sorted_batches, pad

sys.path.insert(0, str(Path(__file__).resolve().parent))
from general_data import DATA, require_data  # noqa: E402

FLOAT = TensorProto.FLOAT


def lstm_ms(inputs: int, units: int, batch: int = 64, steps: int = 20, runs: int = 50) -> float:
    """Milliseconds one bidirectional fused LSTM op takes for a (steps, batch, inputs) input."""
    rng = np.random.default_rng(0)
    weights = {"W": rng.normal(0, 0.1, (2, 4 * units, inputs)), "R": rng.normal(0, 0.1, (2, 4 * units, units)),
               "B": np.zeros((2, 8 * units))}
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "L"], ["Y"], direction="bidirectional", hidden_size=units)
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("x", FLOAT, [steps, batch, inputs]),
                         helper.make_tensor_value_info("L", TensorProto.INT32, [batch])],
        [helper.make_tensor_value_info("Y", FLOAT, None)],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()])
    run = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    feed = {"x": rng.normal(size=(steps, batch, inputs)).astype(np.float32), "L": np.full(batch, steps, np.int32)}
    for _ in range(5):
        run.run(None, feed)
    started = time.perf_counter()
    for _ in range(runs):
        run.run(None, feed)
    return (time.perf_counter() - started) / runs * 1000


def _step(units: int) -> onnx.GraphProto:
    """One time step of both directions: states (2, batch, units), gates (2, batch, 4·units)."""
    nodes = [
        helper.make_node("MatMul", ["h", "R1t"], ["hr"]),
        helper.make_node("Add", ["gates", "hr"], ["g"]),
        helper.make_node("Split", ["g", "sigmoid_tanh"], ["g_iof", "g_c"], axis=2),
        helper.make_node("Sigmoid", ["g_iof"], ["iof"]),
        helper.make_node("Split", ["iof", "thirds"], ["i", "o", "f"], axis=2),  # ONNX's gate order: i, o, f, c
        helper.make_node("Tanh", ["g_c"], ["c_in"]),
        helper.make_node("Mul", ["f", "c"], ["fc"]),
        helper.make_node("Mul", ["i", "c_in"], ["ic"]),
        helper.make_node("Add", ["fc", "ic"], ["c_new"]),
        helper.make_node("Tanh", ["c_new"], ["c_act"]),
        helper.make_node("Mul", ["o", "c_act"], ["h_new"]),
        helper.make_node("Where", ["is_char", "c_new", "c"], ["c_out"]),  # past a sentence's end: state kept
        helper.make_node("Where", ["is_char", "h_new", "h"], ["h_out"]),
        helper.make_node("Mul", ["h_new", "is_char_f"], ["y"]),
    ]
    state = [2, None, units]
    return helper.make_graph(
        nodes, "step",
        [helper.make_tensor_value_info("h", FLOAT, state), helper.make_tensor_value_info("c", FLOAT, state),
         helper.make_tensor_value_info("gates", FLOAT, [2, None, 4 * units]),
         helper.make_tensor_value_info("is_char", TensorProto.BOOL, [1, None, 1]),
         helper.make_tensor_value_info("is_char_f", FLOAT, [1, None, 1])],
        [helper.make_tensor_value_info("h_out", FLOAT, state), helper.make_tensor_value_info("c_out", FLOAT, state),
         helper.make_tensor_value_info("y", FLOAT, state)])


def table_graph(shipped: bytes, folded: bool) -> bytes:
    """The shipped encoder with its first layer as a gate table and a ``Scan``."""
    w = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(shipped).graph.initializer}
    units = w["R1"].shape[-1]
    bias = w["B1"][:, : 4 * units] + w["B1"][:, 4 * units :]  # (2, 4·units): input and recurrent biases
    consts = {"R1t": np.ascontiguousarray(w["R1"].transpose(0, 2, 1)), "W2": w["W2"], "R2": w["R2"], "B2": w["B2"],
              "sigmoid_tanh": np.array([3 * units, units], np.int64), "thirds": np.array([units] * 3, np.int64),
              "pad_id": np.array(0, np.int32), "time_axis": np.array([1], np.int64),
              "halves": np.array([1, 1], np.int64),
              "ax0": np.array([0], np.int64), "ax1": np.array([1], np.int64), "ax2": np.array([2], np.int64),
              "first": np.array([0], np.int64), "two": np.array([2], np.int64), "units": np.array([units], np.int64),
              "out_shape": np.array([0, 2 * w["R2"].shape[-1]], np.int64)}
    if folded:
        consts.update(embeddings=w["embeddings"], W1t=np.ascontiguousarray(w["W1"].transpose(0, 2, 1)),
                      b1=bias[:, None, :])
        nodes = [helper.make_node("Unsqueeze", ["embeddings", "ax0"], ["e"]),
                 helper.make_node("MatMul", ["e", "W1t"], ["eW"]), helper.make_node("Add", ["eW", "b1"], ["table"])]
    else:
        consts["table"] = (w["embeddings"][None].astype(np.float64) @ w["W1"].transpose(0, 2, 1)
                           + bias[:, None, :]).astype(np.float32)
        nodes = []
    nodes += [
        helper.make_node("Split", ["table", "halves"], ["table_f1", "table_b1"], axis=0),
        helper.make_node("Squeeze", ["table_f1", "ax0"], ["table_f"]),
        helper.make_node("Squeeze", ["table_b1", "ax0"], ["table_b"]),
        helper.make_node("Equal", ["ids", "pad_id"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["is_char"]),
        helper.make_node("Cast", ["is_char"], ["is_char_int"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", ["is_char_int", "time_axis"], ["lengths"], keepdims=0),
        helper.make_node("Cast", ["lengths"], ["lengths64"], to=TensorProto.INT64),
        helper.make_node("Transpose", ["ids"], ["ids_t"], perm=[1, 0]),
        helper.make_node("ReverseSequence", ["ids_t", "lengths64"], ["ids_t_rev"], batch_axis=1, time_axis=0),
        helper.make_node("Gather", ["table_f", "ids_t"], ["gates_f"]),
        helper.make_node("Gather", ["table_b", "ids_t_rev"], ["gates_b"]),
        helper.make_node("Unsqueeze", ["gates_f", "ax1"], ["gates_f1"]),
        helper.make_node("Unsqueeze", ["gates_b", "ax1"], ["gates_b1"]),
        helper.make_node("Concat", ["gates_f1", "gates_b1"], ["gates"], axis=1),  # (time, 2, batch, 4·units)
        helper.make_node("Transpose", ["is_char"], ["mask_t"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["mask_t", "ax2"], ["mask_t2"]),
        helper.make_node("Unsqueeze", ["mask_t2", "ax1"], ["mask"]),  # (time, 1, batch, 1)
        helper.make_node("Cast", ["mask"], ["mask_f"], to=FLOAT),
        helper.make_node("Shape", ["ids"], ["ids_shape"]),
        helper.make_node("Gather", ["ids_shape", "first"], ["batch"]),
        helper.make_node("Concat", ["two", "batch", "units"], ["state_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["state_shape"], ["zeros"], value=helper.make_tensor("v", FLOAT, [1], [0])),
        helper.make_node("Scan", ["zeros", "zeros", "gates", "mask", "mask_f"], ["h_last", "c_last", "Y1"],
                         body=_step(units), num_scan_inputs=3),
        helper.make_node("Split", ["Y1", "halves"], ["Y1_f1", "Y1_b1"], axis=1),
        helper.make_node("Squeeze", ["Y1_f1", "ax1"], ["Y1_f"]),
        helper.make_node("Squeeze", ["Y1_b1", "ax1"], ["Y1_b_rev"]),
        helper.make_node("ReverseSequence", ["Y1_b_rev", "lengths64"], ["Y1_b"], batch_axis=1, time_axis=0),
        helper.make_node("Concat", ["Y1_f", "Y1_b"], ["x2"], axis=2),
        helper.make_node("LSTM", ["x2", "W2", "R2", "B2", "lengths"], ["Y2", "Y2_h"], direction="bidirectional",
                         hidden_size=w["R2"].shape[-1]),
        helper.make_node("Transpose", ["Y2_h"], ["Y2_h_t"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["Y2_h_t", "out_shape"], ["vectors"]),
    ]
    graph = helper.make_graph(
        nodes, "encoder_gate_table", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "length"])],
        [helper.make_tensor_value_info("vectors", FLOAT, ["batch", 2 * w["R2"].shape[-1]])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def compare(encoder: Encoder, sentences: list[str], rounds: int = 5) -> list[dict]:
    """Each graph's figures; encoding is timed in ``rounds`` passes, the graphs in a rotating
    order (the first pass of a process runs slower), and the median pass is kept."""
    rows = [encoder.vocab.ids(s, encoder.config.max_length) for s in sentences]
    batches = [pad([rows[i] for i in b]) for b in length_sorted_batches(rows, 64)]
    one = pad([rows[0]])
    graphs = {"shipped (fused LSTM ×2)": encoder.onnx_model,
              "gate table stored + Scan": table_graph(encoder.onnx_model, False),
              "gate table folded at load + Scan": table_graph(encoder.onnx_model, True)}
    runs, out = {}, {}
    for name, model in graphs.items():
        started = time.perf_counter()
        runs[name] = session(model)
        out[name] = {"graph": name, "bytes": len(model), "load_ms": (time.perf_counter() - started) * 1000}
        runs[name].run(None, {"ids": batches[0]})
    rates: dict[str, list[float]] = {name: [] for name in graphs}
    for n in range(rounds):
        names = list(graphs)[n % len(graphs):] + list(graphs)[: n % len(graphs)]
        for name in names:
            started = time.perf_counter()
            vectors = [runs[name].run(None, {"ids": b})[0] for b in batches]
            rates[name].append(len(sentences) / (time.perf_counter() - started))
            out[name]["vectors"] = vectors
    reference = out[next(iter(graphs))]["vectors"]
    for name, run in runs.items():
        for _ in range(20):
            run.run(None, {"ids": one})
        started = time.perf_counter()
        for _ in range(200):
            run.run(None, {"ids": one})
        vectors = out[name].pop("vectors")
        query_ms = (time.perf_counter() - started) / 200 * 1000
        out[name].update(per_second=float(np.median(rates[name])), query_ms=query_ms,
                         gap=max(float(np.abs(a - b).max()) for a, b in zip(reference, vectors)))
    return list(out.values())


def main() -> None:
    require_data()
    print("| fused bidirectional LSTM op, batch 64 × 20 steps, 1 thread | ms |\n|---|---:|")
    for inputs, units in ((300, 128), (16, 128), (256, 32), (16, 32)):
        print(f"| {inputs} inputs → {units} units | {lstm_ms(inputs, units):.2f} |")
    encoder = Encoder.load()
    pairs = [read_pairs(DATA / "chinese_sts_b" / "sts-b-test.txt"), read_pairs(DATA / "bq" / "test.tsv")]
    sentences = list(dict.fromkeys(s for p in pairs for s in p.left + p.right))[:4000]
    results = compare(encoder, sentences)
    print("\n| graph | file MB | sentences/s | × shipped | largest difference | session load ms | one query ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['graph']} | {r['bytes'] / 1e6:.1f} | {r['per_second']:,.0f} | "
              f"{r['per_second'] / results[0]['per_second']:.2f} | {r['gap']:.1e} | {r['load_ms']:.0f} | "
              f"{r['query_ms']:.2f} |")


if __name__ == "__main__":
    main()
