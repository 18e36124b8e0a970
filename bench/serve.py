"""HTTP service benchmark: ``siamsearch serve`` against in-process ``search_batch``, side by side.

    python bench/serve.py                      # 1M documents, writes docs/benchmarks.md
    python bench/serve.py --size 20000 --seconds 3 --no-write   # a quick look

One index (IVF, generated corpus of ``corpus.py``, built once under bench/.work/serve/) is
queried in this order, in one run:

1. in process: ``SearchIndex.search_batch`` on batches of 32 queries (the API's best
   throughput), and ``search`` one query at a time;
2. over HTTP: ``siamsearch serve`` in its own process, the load tool wrk (C; Debian's
   ``wrk`` package) keeping 1, 8 and 32 requests in flight (``POST /v1/search``, one query
   each, the same 1,000 queries) for ``--seconds`` each;
3. at 8 and 32 clients, ``ROUNDS`` pairs of windows of ``--seconds``/2 each: one without a
   writer, then one while a writer ``PUT``s 10 new documents and waits for the commit,
   starting one a second (or as soon as the previous one is committed, if later). A row with
   the writer gives the medians over its windows, and its p99 ratio is the median of each
   pair's ratio, so both sides of a ratio see the machine in the same minute. Every read's
   generation is checked against the generations the writer saw committed.

The client runs on the same 2 cores as the server, so HTTP numbers include its cost; wrk
was chosen over an httpx asyncio client because at 32 connections the Python client itself
used most of a core (httpx: 325 requests/s, wrk: 945 on the same 20k-document server).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from corpus import corpus, real_sentences  # noqa: E402
from report import add_output_options, cpu_model, machine, publish, render  # noqa: E402
from search import queries as benchmark_queries  # noqa: E402

from tests.serving import start, stop  # noqa: E402

WORK = HERE / ".work" / "serve"
TOKEN = "bench-write-token-0123456789"
CLIENTS = (1, 8, 32)
WRITER_CLIENTS = (8, 32)
ROUNDS = 3  # pairs of windows (without, then with the writer) per writer row


def build(size: int) -> tuple[Path, float | None]:
    from siamsearch import Encoder, SearchIndex

    path = WORK / f"ivf-{size}"
    if (path / "manifest.json").exists():
        return path, None
    started = time.perf_counter()
    texts = corpus(size)
    index = SearchIndex.build(texts, Encoder.load(), kind="ivf",
                              metadata=[{"topic": f"t{i % 20}"} for i in range(size)])
    index.save(path)
    return path, time.perf_counter() - started


def in_process(path: Path, queries: list[str]) -> dict:
    from siamsearch import SearchIndex

    index = SearchIndex.load(path, mmap=True)  # as the service loads it
    index.search_batch(queries[:64], 10)  # warm
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        for i in range(0, len(queries), 32):
            index.search_batch(queries[i : i + 32], 10)
        rounds.append(len(queries) / (time.perf_counter() - started))
    one = []
    for q in queries[:300]:
        started = time.perf_counter()
        index.search(q, 10)
        one.append(time.perf_counter() - started)
    ms = 1000 * np.array(one)
    return {"batch32_qps": max(rounds), "single_qps": len(one) / sum(one),
            "single_p50_ms": float(np.percentile(ms, 50)), "single_p99_ms": float(np.percentile(ms, 99))}


WRK_SCRIPT = r"""
local bodies, i = {}, 0
generations = {}  -- a global: done() reads each thread's copy with thread:get
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
function request()
  i = i + 1
  return wrk.format("POST", "/v1/search", {["Content-Type"] = "application/json"}, bodies[(i % #bodies) + 1])
end
function response(status, headers, body)
  local g = body:match('"generation":(%d+)}$')
  if g then generations[g] = true end
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local seen = {}
  for _, thread in ipairs(threads) do
    for g, _ in pairs(thread:get("generations")) do seen[#seen + 1] = g end
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %s\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status,
    0, 0, table.concat(seen, ",")))
end
"""


def load(url: str, bodies: Path, clients: int, seconds: float) -> dict:
    """wrk keeping ``clients`` requests in flight for ``seconds``: QPS, latency percentiles,
    errors (socket errors and non-2xx answers) and the generations the answers came from."""
    script = WORK / "search.lua"
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(["wrk", "-t", "1", "-c", str(clients), "-d", f"{max(1, round(seconds))}s", "--timeout", "30s",
                          "-s", str(script), url, "--", str(bodies)], capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    fields = line.split()
    requests, duration_us, p50_us, p99_us, socket_errors, status_errors = map(int, fields[1:7])
    generations = sorted(int(g) for g in fields[9].split(",")) if len(fields) > 9 and fields[9] else []
    return {"clients": clients, "requests": requests, "qps": requests / (duration_us / 1e6),
            "p50_ms": p50_us / 1000, "p99_ms": p99_us / 1000, "errors": socket_errors + status_errors,
            "generations": generations}


class Writer(threading.Thread):
    """PUTs 10 new documents, one batch a second (or back to back when a commit takes longer).
    Their ids are new to the index (``tag``), so the run adds rows without leaving tombstones,
    which would make every later search fetch more candidates."""

    def __init__(self, url: str, tag: str):
        super().__init__(daemon=True)
        self.url, self.tag, self.stopping = url, tag, threading.Event()
        self.committed: list[int] = []
        self.seconds: list[float] = []
        self.errors: list[str] = []
        self.elapsed = 0.0  # seconds from the first request to the end of the last

    def run(self) -> None:
        n, began = 0, time.perf_counter()
        with httpx.Client(base_url=self.url, timeout=300) as http:
            while not self.stopping.is_set():
                started = time.perf_counter()
                docs = [{"id": f"w{self.tag}-{n}-{i}", "text": f"写入的第{n}批第{i}个问题",
                         "metadata": {"topic": "new"}} for i in range(10)]
                response = http.put("/v1/documents", json={"documents": docs},
                                    headers={"Authorization": f"Bearer {TOKEN}"})
                self.seconds.append(time.perf_counter() - started)
                if response.status_code == 200:
                    self.committed.append(response.json()["generation"])
                else:
                    self.errors.append(f"{response.status_code} {response.text[:200]}")
                n += 1
                self.stopping.wait(max(0.0, 1.0 - (time.perf_counter() - started)))
        self.elapsed = time.perf_counter() - began


def committed_files(path: Path) -> dict[str, int]:
    """Bytes of each data file of the committed generation (its manifest's entries)."""
    return {name: entry["bytes"] for name, entry in json.loads((path / "manifest.json").read_text())["files"].items()}


def writer_round(url: str, bodies: Path, clients: int, seconds: float) -> tuple[dict, dict, Writer]:
    """One window without the writer, then one with it, back to back: the pair sees the same
    state of the machine, whose speed drifts over minutes (in-process throughput measured 210 to
    549 queries/s within one hour on 2026-12-03)."""
    quiet = load(url, bodies, clients, seconds)
    writer = Writer(url, f"{time.time_ns()}")
    writer.start()
    time.sleep(0.2)
    busy = load(url, bodies, clients, seconds)
    writer.stopping.set()
    writer.join()
    return quiet, busy, writer


def over_http(path: Path, queries: list[str], seconds: float, workers: int) -> dict:
    token = WORK / "token"
    token.write_text(TOKEN)
    bodies = WORK / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"query": q, "k": 10}, ensure_ascii=False) + "\n" for q in queries))
    process, url = start(path, token, workers)
    try:
        load(url, bodies, 8, 2.0)  # warm: page in the index, fill the caches
        plain = [load(url, bodies, c, seconds) for c in CLIENTS]
        initial = httpx.get(f"{url}/readyz").json()["generation"]
        writing = []
        for c in WRITER_CLIENTS:
            rounds = [writer_round(url, bodies, c, seconds / 2) for _ in range(ROUNDS)]
            quiet, busy = [q for q, _, _ in rounds], [b for _, b, _ in rounds]
            writers = [w for _, _, w in rounds]
            committed = [g for w in writers for g in w.committed]
            known = {initial, *committed, *(g for w in writing for g in w["writer_generations"])}
            generations = sorted({g for b in busy for g in b["generations"]})
            commit_seconds = [x for w in writers for x in w.seconds]
            writing.append({
                "clients": c, "requests": sum(b["requests"] for b in busy),
                "qps": statistics.median(b["qps"] for b in busy),
                "p50_ms": statistics.median(b["p50_ms"] for b in busy),
                "p99_ms": statistics.median(b["p99_ms"] for b in busy),
                "quiet_p99_ms": [q["p99_ms"] for q in quiet], "busy_p99_ms": [b["p99_ms"] for b in busy],
                "quiet_qps": [q["qps"] for q in quiet], "busy_qps": [b["qps"] for b in busy],
                "p99_ratio": statistics.median(b["p99_ms"] / q["p99_ms"] for q, b in zip(quiet, busy)),
                "errors": sum(b["errors"] for b in busy), "generations": generations,
                "writer_commits": len(committed), "writer_seconds": sum(w.elapsed for w in writers),
                "writer_errors": [e for w in writers for e in w.errors][:3],
                "commit_seconds_median": statistics.median(commit_seconds) if commit_seconds else None,
                "writer_generations": committed, "uncommitted_reads": sorted(set(generations) - known),
                "files_bytes": committed_files(path)})
    finally:
        stop(process, signal.SIGTERM)
    return {"workers": workers, "plain": plain, "writing": writing}


def markdown(results: dict) -> str:
    ip = results["in_process"]
    lines = [
        f"<!-- {'serve' if results['size'] == 1_000_000 else 'serve-' + str(results['size'])}-benchmarks:start "
        "(written by bench/serve.py; do not edit by hand) -->",
        f"## The HTTP service (`siamsearch serve`) against the Python API, side by side: {results['size']:,} "
        "documents",
        "",
        f"Command: `python bench/serve.py --size {results['size']} --seconds {results['seconds']}` on "
        f"{results['date']}, {results['cpu']}; {results['machine']}. Index: {results['size']:,} generated "
        f"documents, {results['kind']}, loaded memory-mapped by both sides. Client: wrk on the same 2 cores as "
        "the server, one query per `POST /v1/search`, k = 10.",
        "",
        f"In process: `search_batch` on batches of 32: **{ip['batch32_qps']:,.0f} queries/s**; `search` one at a "
        f"time: {ip['single_qps']:,.0f} queries/s (p50 {ip['single_p50_ms']:.2f} ms, "
        f"p99 {ip['single_p99_ms']:.2f} ms).",
        "",
        "| workers | clients | writer | QPS | × in-process batch | p50 ms | p99 ms | errors | commits (median s) | "
        "uncommitted reads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["http"]:
        for r in run["plain"] + run["writing"]:
            writer = "writer_commits" in r
            commits = (f"{r['writer_commits']} ({r['commit_seconds_median']:.2f})" if writer else "")
            p99 = f"{r['p99_ms']:.1f}" + (f" ({r['p99_ratio']:.2f}×)" if writer else "")
            lines.append(f"| {run['workers']} | {r['clients']} | {'yes' if writer else 'no'} | {r['qps']:,.0f} | "
                         f"{r['qps'] / ip['batch32_qps']:.2f} | {r['p50_ms']:.1f} | {p99} | {r['errors']} | "
                         f"{commits} | {len(r['uncommitted_reads']) if writer else ''} |")
    best = max(run_best["qps"] for run in results["http"] for run_best in run["plain"])
    writing = [r for run in results["http"] for r in run["writing"]]
    ratios = [r["p99_ratio"] for r in writing]
    rate = sum(r["writer_commits"] for r in writing) / sum(r["writer_seconds"] for r in writing)
    files = writing[-1]["files_bytes"]
    lines += [
        "",
        f"- HTTP at saturation against in-process `search_batch`: **{best / ip['batch32_qps']:.2f}×** (target ≥ 0.5×).",
        f"- With the writer: {sum(r['errors'] for r in writing)} errors, "
        f"{sum(len(r['uncommitted_reads']) for r in writing)} reads of an uncommitted generation (every generation "
        f"a read came from had been acknowledged to the writer, or was the initial one); p99 "
        f"{min(ratios):.2f}–{max(ratios):.2f}× the windows without the writer just before them (median of "
        f"{ROUNDS} pairs a row; target ≤ 2×).",
        f"- The writer asked for a commit every second and got {rate:.2f} a second, each taking a median of "
        f"{statistics.median(r['commit_seconds_median'] for r in writing):.2f} s (the PUT's round trip: encoding, "
        "committing with fsync, opening the new generation).",
        f"- What a commit writes (format 4, indexes/README.md): the base files of the generation it loaded are "
        f"hard-linked ({sum(v for n, v in files.items() if not n.startswith('delta')) / 2**20:,.0f} MiB at the "
        f"end of the run), and only the delta since the base is written "
        f"({sum(v for n, v in files.items() if n.startswith('delta')) / 2**10:,.0f} KiB at the end of the run).",
        f"<!-- {'serve' if results['size'] == 1_000_000 else 'serve-' + str(results['size'])}-benchmarks:end -->", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", default="1,2", help="server processes to try, comma-separated")
    add_output_options(parser, "serve")
    args = parser.parse_args()
    name = "serve" if args.size == 1_000_000 else f"serve-{args.size}"  # one section per size
    if args.render:
        render(name, markdown)
        return
    if shutil.which("wrk") is None:
        sys.exit("bench/serve.py needs the load tool wrk: apt-get install wrk")
    WORK.mkdir(parents=True, exist_ok=True)
    path, build_seconds = build(args.size)
    queries = benchmark_queries(real_sentences())
    results = {"size": args.size, "seconds": args.seconds, "kind": json.loads((path / "manifest.json").read_text())
               ["index"], "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "machine": machine(),
               "build_seconds": build_seconds, "in_process": in_process(path, queries)}
    print(json.dumps(results["in_process"]), flush=True)
    results["http"] = []
    for workers in map(int, args.workers.split(",")):
        results["http"].append(over_http(path, queries, args.seconds, workers))
        print(json.dumps(results["http"][-1])[:2000], flush=True)
    publish(name, results, markdown, not args.no_write)
    print(markdown(results))


if __name__ == "__main__":
    main()
