"""Writing benchmark results into docs/benchmarks.md: one marked section per benchmark script."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(name: str, section: str) -> None:
    """Replace the ``<!-- NAME:start … NAME:end -->`` section of docs/benchmarks.md (or append it).
    ``section`` must start and end with those markers."""
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start", f"<!-- {name}:end -->\n"
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text, encoding="utf-8")


def cpu_model() -> str:
    """The CPU's model name (Linux), which benchmarks record beside their date: the machine kind changes under us."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine() -> str:
    import faiss
    import onnxruntime

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {memory:.0f} GiB, no GPU used, Python "
            f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, faiss {faiss.__version__}")


def provenance() -> dict:
    """Where and when a benchmark ran: its command line, the date, CPU, machine and commit."""
    import subprocess
    import sys
    import time

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": cpu_model(), "machine": machine(), "commit": commit}


RESULTS = Path(__file__).resolve().parent / "results"


def add_output_options(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--no-write", action="store_true", help="keep the results in bench/results/; leave docs/ alone")
    parser.add_argument("--render", action="store_true", help=f"rewrite docs/ from bench/results/{name}.json")


def render(name: str, markdown: Callable[[dict], str]) -> None:
    """Rewrite the ``NAME-benchmarks`` section from the last saved results."""
    write_section(f"{name}-benchmarks", markdown(json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))))


def publish(name: str, results: dict, markdown: Callable[[dict], str], write: bool) -> None:
    """Save the results as bench/results/NAME.json and, with ``write``, rewrite their docs section."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    if write:
        render(name, markdown)
