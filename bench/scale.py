"""Scale benchmark: streamed builds in one process and on Ray, against the in-memory build.

    python bench/scale.py --size 10000000 --memory-size 2000000      # writes docs/benchmarks.md
    python bench/scale.py --size 100000 --memory-size 30000 --no-write    # a quick look

Every build runs in its own process, one after another, so that each peak is its own:

* at ``--memory-size``, three builds of one corpus side by side: ``memory``
  (``read_corpus`` + ``SearchIndex.build`` + ``save``, the build before issue 23), ``stream``
  (``build.build_index`` in this process) and ``ray`` (the same on a local Ray cluster of 2
  CPUs with 2 encoding actors; the memory of every Ray process, workers, raylet and GCS, is
  sampled every 0.5 s beside the driver's own high-water mark);
* at ``--size``, the streamed and the Ray build side by side, and with ``--memory-at-size``
  the in-memory build too (it needs ~1 KiB of memory a document).

Then the streamed index is opened memory-mapped: 1,000 queries one at a time (p50, p99), and
recall@10 of 200 of them against an exact L1 search of the same vectors. The corpus is
``corpus.py``'s (real ../shared sentences, then generated ones), written once to
``bench/.work/scale/``; queries are ``search.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from corpus import corpus, real_sentences  # noqa: E402
from report import add_output_options, cpu_model, machine, publish, render  # noqa: E402
from search import peak_rss, percentiles, queries  # noqa: E402

WORK = HERE / ".work" / "scale"
RECALL_QUERIES = 200


def corpus_size(path: Path) -> int:
    """The documents in ``corpus_file``'s file ``path``, from its name."""
    return int(path.stem.split("-")[1])


def corpus_file(size: int) -> Path:
    """``corpus.py``'s corpus of ``size`` documents as a text file: the first lines of a larger
    one already written (generating 10M takes ~8 minutes on one core), else generated."""
    path = WORK / f"corpus-{size}.txt"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        larger = sorted((p for p in WORK.glob("corpus-*.txt") if corpus_size(p) > size), key=corpus_size)
        with open(tmp, "w", encoding="utf-8") as f:
            if larger:
                with open(larger[0], encoding="utf-8") as source:
                    f.writelines(line for _, line in zip(range(size), source))
            else:
                f.write("\n".join(corpus(size, real=real_sentences())) + "\n")
        tmp.rename(path)
    return path


class RaySampler:
    """The largest resident memory seen for each Ray process (by pid), sampled every 0.5 s."""

    def __init__(self):
        self.peaks: dict[int, tuple[str, int]] = {}
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            now = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == os.getpid():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if "ray" not in cmd:
                        continue
                    rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text()
                               .splitlines() if line.startswith("VmRSS:"))
                except (OSError, StopIteration):
                    continue
                name = cmd.split()[0].rsplit("/", 1)[-1][:60]
                now += rss
                if rss > self.peaks.get(int(pid), ("", 0))[1]:
                    self.peaks[int(pid)] = (name, rss)
            self.total = max(self.total, now)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        workers = [rss for name, rss in self.peaks.values() if name.startswith("ray::")]
        return {"ray_worker_peak_bytes": max(workers, default=0), "ray_workers": len(workers),
                "ray_processes_peak_sum_bytes": self.total,
                "ray_processes": sorted(((n, r) for n, r in self.peaks.values()), key=lambda x: -x[1])[:8]}


def arm(name: str, corpus_path: Path, out: Path) -> dict:
    """One build in this (fresh) process."""
    from siamsearch import Encoder, SearchIndex
    from siamsearch.build import build_index, make_engine
    from siamsearch.data import read_corpus

    encoder = Encoder.load()
    stages: dict[str, float] = {}

    def progress(stage: str, n: int, total: int) -> None:
        stages.setdefault(stage, time.perf_counter())

    result: dict = {"arm": name}
    started = time.perf_counter()
    if name == "memory":
        docs = read_corpus(corpus_path)
        index = SearchIndex.build(docs.texts, encoder, ids=docs.ids, kind="ivf", progress=progress)
        index.save(out)
        result["documents"] = len(index)
    elif name == "stream":
        result["documents"] = build_index(corpus_path, out, encoder, kind="ivf", progress=progress).documents
    else:
        import logging

        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        result["ray_start_s"] = time.perf_counter() - started
        sampler = RaySampler()
        built = build_index(corpus_path, out, encoder, kind="ivf", progress=progress,
                            engine=make_engine("ray", workers=2))
        result.update(sampler.stop())
        result["documents"] = built.documents
        ray.shutdown()
    result["build_s"] = time.perf_counter() - started
    result["encode_s"] = stages.get("index", time.perf_counter()) - started  # reading and encoding, to the index stage
    result["driver_peak_rss_bytes"] = peak_rss()
    result["files"] = json.loads((out / "manifest.json").read_text())["files"]
    return result


def rows_digest(path: Path) -> str:
    """SHA-256 of an index's document rows in position order (the SQLite file's bytes depend on
    how the rows were batched into transactions; its rows must not)."""
    import hashlib
    import sqlite3

    generation = json.loads((path / "manifest.json").read_text())["generation"]
    digest = hashlib.sha256()
    with sqlite3.connect(path / f"gen-{generation:06d}" / "documents.sqlite") as conn:
        for row in conn.execute("SELECT * FROM documents ORDER BY position"):
            digest.update(repr(row).encode())
    return digest.hexdigest()


def same_build(a: str, b: str) -> bool:
    """Two builds of one corpus against each other: FAISS file, vectors and document rows."""
    files = [json.loads((WORK / name / "manifest.json").read_text())["files"] for name in (a, b)]
    return rows_digest(WORK / a) == rows_digest(WORK / b) and all(
        files[0][f] == files[1][f] for f in ("index.faiss", "vectors.npy"))


def query_stats(path: Path, real: list[str]) -> dict:
    import faiss

    from siamsearch import SearchIndex

    index = SearchIndex.load(path, mmap=True)
    qs = queries(real)
    for q in qs[:50]:
        index.search(q, 10)
    latencies, hits = [], []
    for q in qs:
        t = time.perf_counter()
        hits.append(index.search(q, 10))
        latencies.append(time.perf_counter() - t)
    result = {f"search_{k}": v for k, v in percentiles(latencies).items()}
    qv = index.encoder.encode(qs[:RECALL_QUERIES])
    exact = faiss.IndexFlat(index.encoder.dim, faiss.METRIC_L1)
    for start in range(0, index.rows, 1_000_000):
        exact.add(np.ascontiguousarray(index.vectors[start : start + 1_000_000]))
    _, truth = exact.search(qv, 10)
    # the exact neighbours' ids: a fresh build has no tombstones, so the i-th document is row i
    assert index.tombstones == 0
    wanted = set(truth.ravel().tolist())
    id_of = {row: doc.id for row, doc in enumerate(index) if row in wanted}
    found = [{h.id for h in row} for row in hits[:RECALL_QUERIES]]
    result["recall_at_10"] = float(np.mean([len(a & {id_of[r] for r in t.tolist()}) / 10
                                            for a, t in zip(found, truth)]))
    result["recall_queries"] = RECALL_QUERIES
    result["kind"] = index.spec.to_dict()
    return result


def run_arm(name: str, corpus_path: Path, out: Path) -> dict:
    """One build in a fresh process; its result is kept in bench/.work/scale/ so that a run
    that was stopped resumes after the builds it finished (delete the file to redo one)."""
    import shutil

    saved = WORK / f"arm-{out.name}.json"
    if saved.exists() and (out / "manifest.json").exists():
        kept = json.loads(saved.read_text())
        if kept["documents"] == corpus_size(corpus_path):  # not a build of another size
            return {**kept, "resumed": True}
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--arm", name, "--corpus", str(corpus_path), "--out", str(out)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"arm {name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({k: v for k, v in result.items() if k != "files"}), file=sys.stderr, flush=True)
    saved.write_text(json.dumps(result))
    return result


def gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def markdown(r: dict) -> str:
    m, s, rs, big, ray, q = r["memory"], r["stream_small"], r["ray_small"], r["stream"], r["ray"], r["queries"]

    def same(key: str) -> str:
        return "**identical**" if r[key] else "**different**"

    mb = r.get("memory_big")
    first = mb or big  # the time ratios' baseline at --size
    resumed = [f"{a['arm']} {a['documents']:,}" for a in (m, s, rs, big, ray, mb) if a and a.get("resumed")]

    def row(name: str, a: dict, ratio: str, memory: str) -> str:
        return (f"| {name} | {a['documents']:,} | {a['build_s']:.0f} | {a['documents'] / a['build_s']:,.0f} | "
                f"{memory} | {ratio} |")

    def ray_memory(a: dict) -> str:
        return (f"driver {gib(a['driver_peak_rss_bytes'])}, largest worker {gib(a['ray_worker_peak_bytes'])}, "
                f"all Ray processes at once {gib(a['ray_processes_peak_sum_bytes'])}")

    ray_name = "Ray, 2 encoding actors, local 2-CPU cluster"
    return "\n".join([
        "<!-- scale-benchmarks:start (written by bench/scale.py; do not edit by hand) -->",
        "## Scale: streamed builds, one process and Ray (issue 23)",
        "",
        f"Command: `{r['command']}` ({r['date']}; {r['cpu']}; {r['machine']}). Each build in its own process, "
        "one after another; kind ivf with its defaults for the size; the shipped model; corpora from "
        "`bench/corpus.py`.",
        "",
        "| build | documents | build s | docs/s | peak RSS | time ratio |",
        "|---|---:|---:|---:|---:|---:|",
        row("in memory (`SearchIndex.build` + `save`)", m, "1.00", gib(m["driver_peak_rss_bytes"])),
        row("streamed, one process", s, f"{s['build_s'] / m['build_s']:.2f}", gib(s["driver_peak_rss_bytes"])),
        row(ray_name, rs, f"{rs['build_s'] / m['build_s']:.2f}", ray_memory(rs)),
        *([row("in memory (`SearchIndex.build` + `save`)", mb, "1.00", gib(mb["driver_peak_rss_bytes"]))]
          if mb else []),
        row("streamed, one process", big, f"{big['build_s'] / first['build_s']:.2f}",
            gib(big["driver_peak_rss_bytes"])),
        row(ray_name, ray, f"{ray['build_s'] / first['build_s']:.2f}", ray_memory(ray)),
        "",
        f"Time ratios are to the first build of the same corpus; Ray's time against the streamed build's: "
        f"**{rs['build_s'] / s['build_s']:.2f}×** ({m['documents']:,}), **{ray['build_s'] / big['build_s']:.2f}×** "
        f"({big['documents']:,}). A Ray build includes starting the cluster "
        f"({rs['ray_start_s']:.1f} s, {ray['ray_start_s']:.1f} s). Against the streamed build of the same corpus "
        f"(index.faiss and vectors.npy by SHA-256, the documents row by row), the in-memory build is "
        f"{same('memory_equals_stream')}, and the Ray builds are {same('ray_small_equals_stream')} "
        f"({m['documents']:,}) and {same('ray_equals_stream')} ({big['documents']:,})"
        + (f"; the in-memory build of {big['documents']:,} is {same('memory_big_equals_stream')}." if mb else ".")
        + (f" Builds kept from earlier runs of this command (each build's result is kept in "
           f"bench/.work/scale/arm-*.json, so a stopped run resumes after the builds it finished): "
           f"{', '.join(resumed)}." if resumed else ""),
        "",
        f"Queries on the streamed {big['documents']:,}-document index (`{json.dumps(q['kind'])}`), memory-mapped, "
        f"one at a time: p50 **{q['search_p50_ms']:.2f} ms**, p99 {q['search_p99_ms']:.2f} ms; recall@10 "
        f"**{q['recall_at_10']:.4f}** over {q['recall_queries']} queries against an exact L1 search of the same "
        "vectors.",
        "<!-- scale-benchmarks:end -->",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--memory-size", type=int, default=2_000_000,
                        help="size of the in-memory, streamed and Ray builds side by side (the in-memory build "
                             "peaks near 1.3 KiB a document); --size is the streamed build alone")
    parser.add_argument("--arm", choices=["memory", "stream", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory-at-size", action="store_true",
                        help="also build --size in memory, beside its streamed and Ray builds")
    add_output_options(parser, "scale")
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, args.corpus, args.out)))
        return
    if args.render:
        render("scale", markdown)
        return
    from datetime import datetime, timezone

    real = real_sentences()
    small, big = corpus_file(args.memory_size), corpus_file(args.size)
    results = {"command": "python bench/scale.py " + " ".join(sys.argv[1:]),
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
               "machine": machine()}
    results["memory"] = run_arm("memory", small, WORK / "memory")
    results["stream_small"] = run_arm("stream", small, WORK / "stream-small")
    results["ray_small"] = run_arm("ray", small, WORK / "ray-small")
    results["stream"] = run_arm("stream", big, WORK / "stream")
    results["ray"] = run_arm("ray", big, WORK / "ray")
    if args.memory_at_size:
        results["memory_big"] = run_arm("memory", big, WORK / "memory-big")
        results["memory_big_equals_stream"] = same_build("memory-big", "stream")
    results["memory_equals_stream"] = same_build("memory", "stream-small")
    results["ray_small_equals_stream"] = same_build("ray-small", "stream-small")
    results["ray_equals_stream"] = same_build("ray", "stream")
    results["queries"] = query_stats(WORK / "stream", real)
    publish("scale", results, markdown, not args.no_write)


if __name__ == "__main__":
    main()
