"""Writing benchmark results into docs/benchmarks.md: one marked section per benchmark script."""

from __future__ import annotations

import os
import platform
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


def machine() -> str:
    import faiss
    import onnxruntime

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {memory:.0f} GiB, no GPU used, Python "
            f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, faiss {faiss.__version__}")
