"""Sharded serving benchmark: one process on the unsharded index beside the shards on Ray Serve.

    python bench/cluster.py                               # 2M documents in 4 (and 2) shards, docs/benchmarks.md
    python bench/cluster.py --size 20000 --seconds 3 --no-write   # a quick look
    python bench/cluster.py --size 200000 --shards 4 --mode hybrid   # hybrid search over shards

One generated corpus (``corpus.py``; ids ``d0`` …) is built once under bench/.work/cluster/
as one index (kind chosen by size, as ``build-index`` chooses) and as sharded indexes of the
same kind and parameters (``--shards``). Then, in one run, each is served and loaded by wrk
(``serve.py``'s load: 1, 8 and 32 requests in flight, ``POST /v1/search``, k 10, the same
queries) for ``--seconds`` each:

1. ``siamsearch serve`` on the unsharded index (the baseline);
2. ``siamsearch serve`` on each sharded folder (one process searching its shards in turn);
3. ``cluster.deploy`` on a local Ray cluster (this machine, one node): a deployment of one
   replica per shard and one coordinator, behind Serve's HTTP proxy.

Before loading, 200 queries' top 10 from each setup are compared with an exact search
(FAISS's brute-force L1 over the unsharded index's vectors): recall@10; with ``--mode lexical``
or ``hybrid`` (the searches' ``mode``), with the unsharded index's answer in that mode
instead (its own candidate searches are approximate too: agreement@10). The cluster's
answers are also checked against the one-process search of the same shards (same ids, scores
within 1e-6): approximate kinds (HNSW) find other candidates in N graphs than in one, so a
sharded HNSW index agrees with its own shards in one process, not with the unsharded index.
Memory: the resident set of each server process after its load (shard replicas and the
coordinator on the cluster), read from /proc. Everything runs on the same 2 cores, wrk
included, so the cluster's extra hops (proxy → coordinator → shards, each a process) are
paid on the cores that search: this measures their cost, not the cluster's scaling, which
needs more machines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
import serve as serve_bench  # noqa: E402
from corpus import corpus, real_sentences  # noqa: E402
from report import add_output_options, cpu_model, machine, publish, render  # noqa: E402
from search import queries as benchmark_queries  # noqa: E402

from tests.serving import free_port, start, stop  # noqa: E402

WORK = HERE / ".work" / "cluster"
CLIENTS = (1, 8, 32)
CHECKED = 200


def corpus_file(size: int) -> Path:
    path = WORK / f"corpus-{size}.tsv"
    if not path.exists():
        texts = corpus(size)
        partial = path.with_suffix(".partial")
        with partial.open("w", encoding="utf-8") as out:
            out.write("id\ttext\n")
            out.writelines(f"d{i}\t{t}\n" for i, t in enumerate(texts))
        partial.rename(path)
    return path


def build(size: int, shards: list[int]) -> dict:
    """The unsharded index and each sharded one, built unless already there; their build seconds."""
    from siamsearch import Encoder
    from siamsearch.build import build_index
    from siamsearch.shards import build_sharded

    encoder, source, seconds = Encoder.load(), corpus_file(size), {}
    one = WORK / f"one-{size}"
    if not (one / "manifest.json").exists():
        seconds["one"] = build_index(source, one, encoder).seconds
    spec = json.loads((one / "manifest.json").read_text())["index"]
    for n in shards:
        path = WORK / f"shards{n}-{size}"
        if not (path / "shards.json").exists():
            params = {k: v for k, v in spec.items() if k != "kind"}
            seconds[f"shards{n}"] = build_sharded(source, path, encoder, n, kind=spec["kind"], **params).seconds
    return {"kind": spec, "build_seconds": seconds}


def top10(url: str, queries: list[str], mode: str) -> list[list[tuple[str, float]]]:
    found = []
    with httpx.Client(timeout=120) as client:
        for start_at in range(0, len(queries), 50):
            body = {"queries": queries[start_at:start_at + 50], "k": 10, "mode": mode}
            results = client.post(url.rstrip("/") + "/v1/search/batch", json=body).json()["results"]
            found += [[(h["id"], h["score"]) for h in r["hits"]] for r in results]
    return found


def exact_top10(path: Path, queries: list[str]) -> list[set[str]]:
    """The exact top 10 ids by L1 over every vector (ids are ``d`` + the corpus line, as built)."""
    from siamsearch import SearchIndex
    from siamsearch.kinds import exact_search

    index = SearchIndex.load(path, mmap=True)
    rows = exact_search(np.asarray(index.vectors), index.encoder.encode(queries), 10)
    return [{f"d{r}" for r in row} for row in rows]


def recall(found: list[list[tuple[str, float]]], exact: list[set[str]]) -> float:
    return float(np.mean([len({i for i, _ in hits} & want) / len(want) for hits, want in zip(found, exact)]))


def same(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> bool:
    return all([i for i, _ in x] == [i for i, _ in y] and np.allclose([s for _, s in x], [s for _, s in y], atol=1e-6,
                                                                        rtol=0) for x, y in zip(a, b))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def titled(title: str) -> list[int]:
    """Processes whose command line holds ``title`` (Ray titles each actor's process by its class)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if title.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def measure(url: str, bodies: Path, seconds: float) -> list[dict]:
    serve_bench.load(url, bodies, 8, 2.0)  # warm: page in the index
    return [serve_bench.load(url, bodies, c, seconds) for c in CLIENTS]


def one_process(path: Path, bodies: Path, seconds: float, queries: list[str], mode: str) -> tuple[dict, list]:
    process, url = start(path)
    try:
        answers = top10(url, queries, mode)
        rows = measure(url + "/", bodies, seconds)
        memory = rss_mib(process.pid)
    finally:
        stop(process, signal.SIGTERM)
    return {"rows": rows, "rss_mib": memory}, answers


def on_ray(path: Path, bodies: Path, seconds: float, queries: list[str], port: int,
           mode: str) -> tuple[dict, list]:
    import ray

    from siamsearch.cluster import deploy, undeploy
    from siamsearch.service import Settings

    started = time.perf_counter()
    served = deploy(Settings(str(path)), port=port, replica_cpus=0)
    ready_s = time.perf_counter() - started
    try:
        answers = top10(served.url, queries, mode)
        rows = measure(served.url, bodies, seconds)
        shards = {n: sum(rss_mib(p) for p in titled(f"ServeReplica:siamsearch:shard-{n:03d}"))
                  for n in range(served.shards)}
        coordinator = sum(rss_mib(p) for p in titled("ServeReplica:siamsearch:coordinator"))
    finally:
        undeploy()
    assert ray.is_initialized()
    return {"rows": rows, "deploy_seconds": ready_s, "shard_rss_mib": list(shards.values()),
            "coordinator_rss_mib": coordinator}, answers


def markdown(results: dict) -> str:
    name, mode = results.get("name", "cluster"), results.get("mode", "dense")
    scored = "recall@10" if mode == "dense" else "agreement@10 with unsharded"
    lines = [
        f"<!-- {name}-benchmarks:start (written by bench/cluster.py; edit the script, not this section) -->",
        "## Sharded serving: one process beside the shards on Ray Serve"
        + ("" if mode == "dense" else f", {mode} search"),
        "",
        f"{results['date']}, {results['cpu']}; {results['machine']}. `{results['command']}`: "
        f"{results['size']:,} generated documents (`bench/corpus.py`), kind {results['kind']['kind']} ("
        + ", ".join(f"{k} {v}" for k, v in results["kind"].items() if k != "kind") + "), k 10, wrk "
        f"for {results['seconds']} s per row; the client, the servers and Ray share the same 2 cores. "
        "Ratios are to the one-process unsharded row at the same number of clients, in the same run.",
        "",
        "| setup | shards | clients | queries/s | p50 ms | p99 ms | errors | QPS ratio | p50 ratio | "
        f"{scored} | = one process, same shards |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = {r["clients"]: r for r in results["setups"][0]["rows"]}
    for setup in results["setups"]:
        for row in setup["rows"]:
            b = base[row["clients"]]
            lines.append(f"| {setup['name']} | {setup['shards']} | {row['clients']} | {row['qps']:,.0f} | "
                         f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} | {row['qps'] / b['qps']:.2f} | "
                         f"{row['p50_ms'] / b['p50_ms']:.2f} | {setup['recall']:.3f} | "
                         f"{'—' if setup['same'] is None else 'yes' if setup['same'] else '**no**'} |")
    lines += ["", "Memory (resident, after the load):", ""]
    for setup in results["setups"]:
        if "shard_rss_mib" in setup:
            per = ", ".join(f"{m:,.0f}" for m in setup["shard_rss_mib"])
            lines.append(f"- {setup['name']}, {setup['shards']} shards: shard replicas {per} MiB, coordinator "
                         f"{setup['coordinator_rss_mib']:,.0f} MiB (deployed in {setup['deploy_seconds']:.0f} s)")
        else:
            lines.append(f"- {setup['name']}, {setup['shards']} shard(s): {setup['rss_mib']:,.0f} MiB")
    builds = ", ".join(f"{k} {v:,.0f} s" for k, v in results["build_seconds"].items()) or "reused from earlier runs"
    lines += ["", f"Builds: {builds}.", "", f"<!-- {name}-benchmarks:end -->", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2_000_000)
    parser.add_argument("--shards", default="4,2", help="shard counts, comma-separated")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--mode", default="dense", choices=("dense", "lexical", "hybrid"), help="the searches' mode")
    add_output_options(parser, "cluster")
    args = parser.parse_args()
    name = "-".join(["cluster", *([args.mode] if args.mode != "dense" else []),
                     *([str(args.size)] if args.size != 2_000_000 else [])])
    if args.render:
        render(name, markdown)
        return
    if shutil.which("wrk") is None:
        sys.exit("bench/cluster.py needs the load tool wrk: apt-get install wrk")
    WORK.mkdir(parents=True, exist_ok=True)
    serve_bench.WORK.mkdir(parents=True, exist_ok=True)
    shards = [int(n) for n in args.shards.split(",")]
    built = build(args.size, shards)
    print(json.dumps(built), flush=True)
    queries = benchmark_queries(real_sentences())
    bodies = WORK / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"query": q, "k": 10, "mode": args.mode}, ensure_ascii=False) + "\n"
                              for q in queries))
    checked = queries[:CHECKED]
    results = {"name": name, "mode": args.mode, "size": args.size, "seconds": args.seconds, "kind": built["kind"],
               "date": time.strftime("%Y-%m-%d"),
               "cpu": cpu_model(), "machine": machine(), "command": "python bench/cluster.py " + " ".join(sys.argv[1:]),
               "build_seconds": built["build_seconds"], "setups": []}
    one, answers = one_process(WORK / f"one-{args.size}", bodies, args.seconds, checked, args.mode)
    reference = exact_top10(WORK / f"one-{args.size}", checked) if args.mode == "dense" else [
        {i for i, _ in hits} for hits in answers]
    results["setups"].append({"name": "one process, unsharded", "shards": 1, "same": None,
                              "recall": recall(answers, reference), **one})
    print(json.dumps(results["setups"][-1]), flush=True)
    in_process = {}
    for n in shards:
        found, in_process[n] = one_process(WORK / f"shards{n}-{args.size}", bodies, args.seconds, checked, args.mode)
        results["setups"].append({"name": "one process, sharded", "shards": n, "same": None,
                                  "recall": recall(in_process[n], reference), **found})
        print(json.dumps(results["setups"][-1]), flush=True)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read as ray is imported: keeps it on 127.0.0.1
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             _node_ip_address="127.0.0.1")
    port = free_port()  # Serve keeps the address it first started with
    try:
        for n in shards:
            found, answers = on_ray(WORK / f"shards{n}-{args.size}", bodies, args.seconds, checked, port, args.mode)
            results["setups"].append({"name": "Ray Serve", "shards": n, "same": same(answers, in_process[n]),
                                      "recall": recall(answers, reference), **found})
            print(json.dumps(results["setups"][-1]), flush=True)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    publish(name, results, markdown, not args.no_write)
    print(markdown(results))


if __name__ == "__main__":
    main()
