"""Search benchmarks: encoding throughput, cold start, warm latency, recall and build cost by size.

    python bench/search.py --model models/bq-seed            # everything, writes docs/benchmarks.md
    python bench/search.py --model M --sizes 10000 --kinds flat --no-write   # a quick look

Each (size, kind) runs in its own process so that its peak memory is its own. Corpora
come from ``corpus.py`` (real ../shared/data sentences, then generated ones); queries are
1,000 generated sentences that are not in any corpus. Recall@10 compares the index's
final top 10 (after the exact re-rank) with an exact L1 search of the same vectors.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from corpus import TrigramSampler, corpus, real_sentences  # noqa: E402
from report import machine, write_section  # noqa: E402

QUERY_SEED = 99
N_QUERIES = 1000
WORK = HERE / ".work"
RESULTS = HERE / "results"


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def peak_rss(field: str = "VmHWM") -> int:
    """The process's peak resident memory since the last ``reset_peak_rss`` (``VmRSS``: the current), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    """Start the high-water mark from the current memory (writing 5 to clear_refs, Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def queries(real: list[str]) -> list[str]:
    """Generated sentences that no benchmark corpus holds (another seed, real ones removed)."""
    taken = set(real)
    drawn = [q for q in TrigramSampler(real).sample(3 * N_QUERIES, QUERY_SEED) if q.strip() and q not in taken]
    return list(dict.fromkeys(drawn))[:N_QUERIES]


def run_one(model: Path, size: int, kind: str, params: dict, out: Path) -> dict:
    """Build, save, reopen and query one index; returns its measurements (run in a fresh process)."""
    import faiss

    from siamsearch import Encoder, SearchIndex

    real = real_sentences()
    texts = corpus(size, real=real)
    qs = queries(real)
    encoder = Encoder.load(model)
    marks: dict[str, float] = {}

    def progress(stage: str, n: int, total: int) -> None:
        marks.setdefault(stage, time.perf_counter())
        marks[stage + "_end"] = time.perf_counter()

    gc.collect()
    baseline = peak_rss("VmRSS")  # the corpus generator's arrays are gone; its strings stay, as a user's would
    reset_peak_rss()
    started = time.perf_counter()
    index = SearchIndex.build(texts, encoder, kind=kind, progress=progress, **params)
    built = time.perf_counter()
    path = out / f"{kind}-{size}"
    shutil.rmtree(path, ignore_errors=True)
    index.save(path)
    saved = time.perf_counter()
    build_peak = peak_rss()  # before the measuring below adds its own copies (exact index, NumPy scan)
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and "encoder" not in f.parts)
    result = {
        "size": size, "kind": kind, "spec": index.spec.to_dict(),
        "encode_s": marks["encode_end"] - started,
        "index_s": built - marks["encode_end"],
        "build_s": built - started, "save_s": saved - built,
        "disk_bytes_per_doc": disk / size, "build_peak_rss_bytes": build_peak, "rss_before_build_bytes": baseline,
        "faiss_bytes_per_doc": index.spec.bytes_per_document(encoder.dim),
    }
    del index
    index = SearchIndex.load(path, mmap=True)
    for q in qs[:50]:  # warm up: page in what queries touch
        index.search(q, 10)
    latencies = []
    hits = []
    for q in qs:
        t = time.perf_counter()
        hits.append(index.search(q, 10))
        latencies.append(time.perf_counter() - t)
    result.update({f"search_{k}": v for k, v in percentiles(latencies).items()})
    t = time.perf_counter()
    index.search_batch(qs, 10)
    result["batch_qps"] = len(qs) / (time.perf_counter() - t)

    vectors = np.asarray(index.vectors)
    qv = encoder.encode(qs)
    exact = faiss.IndexFlat(encoder.dim, faiss.METRIC_L1)
    exact.add(vectors)
    _, truth = exact.search(qv, 10)
    ids = [[int(h.id) for h in row] for row in hits]
    result["recall_at_10"] = float(np.mean([len(set(a) & set(t.tolist())) / 10 for a, t in zip(ids, truth)]))

    brute = []
    for q in qv[: 20 if size <= 1_000_000 else 3]:  # what a user would write: a NumPy exp(-L1) scan
        t = time.perf_counter()
        scores = np.exp(-np.abs(vectors - q).sum(axis=1))
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]
        brute.append(time.perf_counter() - t)
    result["numpy_brute_ms"] = 1000 * statistics.median(brute)
    result["peak_rss_bytes"] = peak_rss()
    return result


def encoding_throughput(model: Path) -> dict:
    """ONNX encoder (length-sorted batches, one thread per core) vs Keras model.predict padded to the longest."""
    from siamsearch import Encoder
    from siamsearch.text import pad

    texts = real_sentences()
    encoder = Encoder.load(model)
    encoder.encode(texts[:2000])
    t = time.perf_counter()
    encoder.encode(texts)
    onnx_rate = len(texts) / (time.perf_counter() - t)
    sample = texts[:: max(1, len(texts) // 20_000)][:20_000]
    keras_model = encoder.keras_model()
    padded = pad([encoder.vocab.ids(s, encoder.config.max_length) for s in sample])
    keras_model.predict(padded[:1024], batch_size=1024, verbose=0)
    t = time.perf_counter()
    keras_model.predict(padded, batch_size=1024, verbose=0)
    keras_rate = len(sample) / (time.perf_counter() - t)
    t = time.perf_counter()
    encoder.encode(sample)
    onnx_sample_rate = len(sample) / (time.perf_counter() - t)
    lengths = [len(s) for s in texts]
    return {"sentences": len(texts), "median_chars": float(np.median(lengths)), "onnx_per_s": onnx_rate,
            "sample": len(sample), "padded_to": int(padded.shape[1]), "keras_predict_per_s": keras_rate,
            "onnx_sample_per_s": onnx_sample_rate, "ratio": onnx_sample_rate / keras_rate}


def cold_start(index: Path, repeats: int = 5) -> dict:
    """Wall time of a fresh ``siamsearch query`` process, and of the same with TensorFlow imported first."""
    query = ["query", "--index", str(index), "-k", "10", "我的额度怎么提升"]
    light = [sys.executable, "-m", "siamsearch", *query]
    heavy = [sys.executable, "-c", "import tensorflow, sys; from siamsearch.cli import main; "
             "sys.argv[0] = 'siamsearch'; main()", *query]
    out = {}
    for name, cmd in (("siamsearch_query_s", light), ("with_tensorflow_s", heavy)):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("build_s", "build time (s): encode + index"),
              ("build_peak_rss_bytes", "peak memory while building (GiB)"),
              ("search_p50_ms", "warm query p50 (ms)")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (key, title) in zip(axes, panels):
        for kind in ("flat", "hnsw", "ivf"):
            pts = sorted((r["size"], r[key] / (1 << 30) if key == "build_peak_rss_bytes" else r[key])
                         for r in rows if r["kind"] == kind)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=kind)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("documents")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def describe_model(model: Path) -> str:
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    training = config.get("training") or {}
    pairs, settings = training.get("pairs") or {}, training.get("settings") or {}
    return (f"model `{model.name}` (fingerprint {config['fingerprint'][:12]}): trained on {pairs.get('file', '?')} "
            f"({pairs.get('n', 0):,} pairs), {settings.get('epochs', '?')} epochs")


def markdown(results: dict) -> str:
    enc, cold, rows = results["encoding"], results["cold"], results["rows"]
    one_m = {r["kind"]: r for r in rows if r["size"] == 1_000_000}
    lines = [
        "<!-- search-benchmarks:start (written by bench/search.py; do not edit by hand) -->",
        "## Search: encoding, cold start, latency, recall and build cost",
        "",
        f"Command: `{results['command']}` on {results['machine']}; the whole run took "
        f"{results['seconds'] / 60:.0f} min. Encoder: {results['model']}. Reproduce the model with "
        "`siamsearch train ../shared/data/bq/seed_train.tsv --out models/bq-seed` (the recipe's settings).",
        "",
        "Corpora: every distinct sentence of ../shared/data (183,959), then sentences generated by a seeded "
        "character trigram model fitted on them (`bench/corpus.py`: same characters, local order and length "
        f"distribution; generated at benchmark time, never stored). Queries: {N_QUERIES:,} generated sentences "
        "that are in no corpus. Each size and kind is built in its own process (`SearchIndex.build`: encode + "
        "index, then `save`), reopened memory-mapped as `siamsearch query` does, and queried one at a time "
        "after 50 warm-up queries. Recall@10 compares the final top 10 (after the exact re-rank) with an exact "
        "L1 search of the same vectors. *NumPy scan* is `exp(-|V - q|.sum(1))` + top 10 over the same vectors, "
        "the afternoon alternative. RAM B/doc is the FAISS structure; disk B/doc also counts `vectors.npy` (the "
        "re-rank source) and the SQLite documents. Peak RSS, build, is the process's high-water mark (VmHWM, reset "
        "just before the build) through `SearchIndex.build` and `save`, with the corpus's strings, the encoder "
        "and the libraries already in memory.",
        "",
        "**Encoding throughput** (all distinct sentences of ../shared/data: "
        f"{enc['sentences']:,}, median {enc['median_chars']:.0f} characters): "
        f"ONNX encoder **{enc['onnx_per_s']:,.0f} sentences/s**. Side by side on a {enc['sample']:,}-sentence "
        f"sample: ONNX {enc['onnx_sample_per_s']:,.0f}/s vs Keras `model.predict` padded to the longest sentence "
        f"({enc['padded_to']} ids, batch 1024) {enc['keras_predict_per_s']:,.0f}/s: **{enc['ratio']:.1f}×**.",
        "",
        f"**Cold start**: a fresh `siamsearch query` process on the 100,000-document index answers in "
        f"**{cold['siamsearch_query_s']:.2f} s** wall (median of 5); the same command with TensorFlow imported "
        f"first takes {cold['with_tensorflow_s']:.2f} s "
        f"({cold['with_tensorflow_s'] / cold['siamsearch_query_s']:.1f}×).",
        "",
    ]
    if one_m:
        lines += ["**1M documents** (warm, one query through `SearchIndex.search`: encode + ANN + exact re-rank):", ""]
        for kind, r in one_m.items():
            lines.append(f"- {kind}: p50 {r['search_p50_ms']:.2f} ms, p99 {r['search_p99_ms']:.2f} ms, recall@10 "
                         f"{r['recall_at_10']:.4f}, NumPy brute force {r['numpy_brute_ms']:.1f} ms "
                         f"(**{r['numpy_brute_ms'] / r['search_p50_ms']:.0f}×** slower than p50), "
                         f"built in {r['build_s'] / 60:.1f} min")
        lines.append("")
    lines += [
        "| documents | kind | parameters | encode s | index s | build s | peak RSS, build | RAM B/doc (FAISS) "
        "| disk B/doc "
        "| p50 ms | p99 ms | batch QPS | recall@10 | NumPy scan ms |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["size"], r["kind"])):
        s = r["spec"]
        params = {"flat": "exact", "hnsw": f"M={s['hnsw_m']} efC={s['ef_construction']} efS={s['ef_search']}",
                  "ivf": f"nlist={s['nlist']} nprobe={s['nprobe']}"}[r["kind"]]
        lines.append(
            f"| {r['size']:,} | {r['kind']} | {params} | {r['encode_s']:.1f} | {r['index_s']:.1f} | {r['build_s']:.1f} "
            f"| {r['build_peak_rss_bytes'] / (1 << 30):.2f} GiB | {r['faiss_bytes_per_doc']} "
            f"| {r['disk_bytes_per_doc']:.0f} "
            f"| {r['search_p50_ms']:.2f} | {r['search_p99_ms']:.2f} | {r['batch_qps']:,.0f} | {r['recall_at_10']:.4f} "
            f"| {r['numpy_brute_ms']:.1f} |")
    lines += ["", "![build time, memory and latency by corpus size](search-scaling.png)", "",
              "<!-- search-benchmarks:end -->"]
    return "\n".join(lines) + "\n"


def render(results: dict) -> None:
    plot(results["rows"], ROOT / "docs" / "search-scaling.png")
    write_section("search-benchmarks", markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a siamsearch model directory")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="corpus sizes for all kinds")
    parser.add_argument("--kinds", default="flat,hnsw,ivf")
    parser.add_argument("--ivf-sizes", default="10000000", help="extra sizes for ivf only ('' for none)")
    parser.add_argument("--params", default="{}", help="JSON of IndexSpec fields for every build")
    parser.add_argument("--no-write", action="store_true", help="print results; leave docs/ alone")
    parser.add_argument("--render", action="store_true",
                        help="rewrite docs/ from bench/results/search.json without measuring again")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        render(json.loads((RESULTS / "search.json").read_text(encoding="utf-8")))
        return
    WORK.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    if args.one:
        print(json.dumps(run_one(args.model, int(args.one[0]), args.one[1], json.loads(args.params), WORK)))
        return

    started = time.perf_counter()
    jobs = [(int(n), k) for n in args.sizes.split(",") if n for k in args.kinds.split(",")]
    jobs += [(int(n), "ivf") for n in args.ivf_sizes.split(",") if n]
    enc = encoding_throughput(args.model)
    print(json.dumps(enc), flush=True)
    rows = []
    for size, kind in jobs:
        done = subprocess.run([sys.executable, __file__, "--model", str(args.model), "--params", args.params,
                               "--one", str(size), kind], check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
        if size != 100_000 or kind != "hnsw":
            shutil.rmtree(WORK / f"{kind}-{size}", ignore_errors=True)
    cold = cold_start(WORK / "hnsw-100000") if (WORK / "hnsw-100000").exists() else \
        {"siamsearch_query_s": float("nan"), "with_tensorflow_s": float("nan")}
    print(json.dumps(cold), flush=True)
    results = {
        "encoding": enc, "cold": cold, "rows": rows, "command": "python " + " ".join(sys.argv),
        "seconds": time.perf_counter() - started, "model": describe_model(args.model),
        "machine": machine(),
    }
    (RESULTS / "search.json").write_text(json.dumps(results, indent=1))
    if not args.no_write:
        render(results)


if __name__ == "__main__":
    main()
