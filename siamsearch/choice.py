"""``kind="auto"``: which index kind suits a corpus, and memory budgets as text.

In the spirit of autofaiss: exact below ``AUTO_FLAT_MAX_DOCS`` documents, where a flat scan
is already under a millisecond; HNSW up to ``AUTO_HNSW_MAX_DOCS``, the fastest per query;
IVF beyond that, because HNSW's build time (186 s of graph building at 1M on 2 cores,
growing faster than linearly; not measured at 10M) and its extra 268 B per document stop
paying off there, while IVF built 10M in 20 min and answers in about 6 ms.
With a memory budget, the first kind in that order that fits is taken, then the smaller
ones (ivf, then flat); if not even flat fits, there is no L1 kind that can, and the user
is told how much is needed. ``docs/benchmarks.md`` has the measurements behind the
thresholds and the kinds' defaults (recall@10 ≥ 0.99 after the exact re-rank on real
encodings).
"""

from __future__ import annotations

from .errors import InputError
from .kinds import HNSW, Flat, IndexKind, make, parameter_names

AUTO_FLAT_MAX_DOCS = 100_000
AUTO_HNSW_MAX_DOCS = 2_000_000


def choose_kind(n_docs: int, dim: int, max_memory: int | None = None, hnsw_m: int = HNSW.hnsw_m) -> str:
    """``auto``: the kind for ``n_docs`` documents, within ``max_memory`` bytes if given."""
    preferred = "flat" if n_docs < AUTO_FLAT_MAX_DOCS else "hnsw" if n_docs <= AUTO_HNSW_MAX_DOCS else "ivf"
    if max_memory is None:
        return preferred
    order = {"flat": ["flat"], "hnsw": ["hnsw", "ivf", "flat"], "ivf": ["ivf", "flat"]}[preferred]
    for name in order:
        kind: IndexKind = make(name, **({"hnsw_m": hnsw_m} if name == "hnsw" else {}))
        if n_docs * kind.bytes_per_document(dim) <= max_memory:
            return name
    need = n_docs * Flat().bytes_per_document(dim)
    raise InputError(f"{n_docs:,} documents need at least {format_bytes(need)} in memory under the L1 metric "
                     f"(FAISS cannot compress L1 indexes), more than max_memory {format_bytes(max_memory)}; "
                     "raise the budget or split the corpus", argument="max_memory")


def check_options(kind: str, rerank_factor: int, params: dict) -> None:
    """Refuse a build's options before anything is encoded: the rerank factor, and parameters
    that no kind (with ``auto``) or not this kind takes."""
    if isinstance(rerank_factor, bool) or not isinstance(rerank_factor, int) or rerank_factor < 1:
        raise InputError(f"rerank factor must be a whole number of at least 1, got {rerank_factor!r}",
                         argument="rerank_factor")
    if kind != "auto":
        make(kind, **params)
        return
    unknown = sorted(set(params) - parameter_names())
    if unknown:
        raise InputError(f"{unknown[0]} is not a parameter of any index kind", argument=unknown[0])


def resolve(kind: str, n_docs: int, dim: int, max_memory: int | None, params: dict) -> IndexKind:
    """The kind a build of ``n_docs`` documents uses: ``auto``'s choice keeping the parameters
    that kind takes, with those left to the corpus size filled in."""
    if kind == "auto":
        kind = choose_kind(n_docs, dim, max_memory, params.get("hnsw_m", HNSW.hnsw_m))
        params = {k: v for k, v in params.items() if k in parameter_names(kind)}
    return make(kind, **params).for_corpus(n_docs)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_bytes(text: str) -> int:
    """'512M', '2G', '1.5GiB', '800000000' → bytes (powers of 1024), for a memory budget."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (s[:-1], s[-1]) if s and s[-1] in units else (s, "")
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = -1
    if not value > 0:
        raise InputError(f"memory size {text!r} is not understood; write e.g. 512M, 2G or 1.5GiB",
                         argument="max_memory")
    return int(value)
