"""Warm query latency of two commits side by side: one process, one index folder, query by query.

    python bench/compare_commits.py --base c840cbb --index bench/.work/hnsw-1m --index bench/.work/ivf-1m

Why in one process: on this machine separate processes measured the same commit 2.4-5.1 ms
at p50 from one run to the next, so a ratio of two processes' p50 said more about the run
than about the code. Here the base commit's package is checked out (a git worktree under
bench/.work/) and imported under another name, ``siamsearch_base`` (the package uses only
relative imports), beside the working tree's ``siamsearch``. Both open the same index folder
memory-mapped, as ``siamsearch query`` does (so they share the page cache), are warmed with
50 queries each, and then answer bench/search.py's 1,000 generated queries alternately, the order
of the pair swapping every query, so that whatever the machine does meanwhile falls on both.
Both must return the same hits. Reported: p50 and p99 of each, the ratio new/base of each,
and the median of the per-query ratios. The index folders must be readable by both commits
(build them with the older one).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from report import machine  # noqa: E402

WARM = 50


def base_package(commit: str):
    """The base commit's ``siamsearch`` package, imported as ``siamsearch_base``."""
    tree = HERE / ".work" / f"base-{commit[:12]}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
    packages = HERE / ".work" / f"packages-{commit[:12]}"
    if not (packages / "siamsearch_base").exists():
        shutil.copytree(tree / "siamsearch", packages / "siamsearch_base")
    sys.path.insert(0, str(packages))
    return importlib.import_module("siamsearch_base")


def compare(base_index, new_index, queries: list[str]) -> dict:
    for q in queries[:WARM]:
        base_index.search(q, 10)
        new_index.search(q, 10)
    seconds = {"base": [], "new": []}
    indexes = {"base": base_index, "new": new_index}
    for n, q in enumerate(queries):
        hits = {}
        for name in (("base", "new") if n % 2 == 0 else ("new", "base")):
            t = time.perf_counter()
            hits[name] = indexes[name].search(q, 10)
            seconds[name].append(time.perf_counter() - t)
        assert [(h.id, h.score) for h in hits["base"]] == [(h.id, h.score) for h in hits["new"]], q
    ms = {name: np.array(s) * 1000 for name, s in seconds.items()}
    out = {f"{name}_{p}_ms": float(np.percentile(v, int(p[1:]))) for name, v in ms.items() for p in ("p50", "p99")}
    out.update({"p50_ratio": out["new_p50_ms"] / out["base_p50_ms"],
                "p99_ratio": out["new_p99_ms"] / out["base_p99_ms"],
                "median_paired_ratio": float(np.median(ms["new"] / ms["base"])), "queries": len(queries)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--index", action="append", required=True, type=Path, help="an index folder (repeatable)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the queries per index")
    args = parser.parse_args()
    from corpus import real_sentences
    from search import queries as bench_queries

    import siamsearch

    base = base_package(args.base)
    queries = bench_queries(real_sentences())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; base {args.base} "
          f"({Path(base.__file__).parent}), new {Path(siamsearch.__file__).parent}", flush=True)
    for index in args.index:
        old, new = base.SearchIndex.load(index, mmap=True), siamsearch.SearchIndex.load(index, mmap=True)
        for repeat in range(args.repeats):
            r = compare(old, new, queries)
            print(json.dumps({"index": index.name, "kind": new.kind, "documents": len(new), "pass": repeat + 1,
                              **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}}), flush=True)


if __name__ == "__main__":
    main()
