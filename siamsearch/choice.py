"""``kind="auto"``: which index kind suits a corpus, and memory budgets as text.

In the spirit of autofaiss, the registry's kinds in order, each up to its ``auto_up_to``
documents: exact below 100,000, where a flat scan is already under a millisecond; HNSW up
to 2,000,000, the fastest per query; IVF beyond that, because HNSW's build time (186 s of
graph building at 1M on 2 cores, growing faster than linearly; not measured at 10M) and its
extra 268 B per document stop paying off there, while IVF built 10M in 20 min and answers
in about 6 ms. With a memory budget, the first kind in that order that fits is taken, then
the kinds that need less memory per document, most first (ivf, then flat); if not even flat
fits, there is no L1 kind that can, and the user is told how much is needed.
``docs/benchmarks.md`` has the measurements behind the thresholds and the kinds' defaults
(recall@10 ≥ 0.99 after the exact re-rank on real
encodings).
"""

from __future__ import annotations

from .errors import InputError
from .kinds import KINDS, IndexKind, make, parameter_names

DEFAULT_RERANK_FACTOR = 4
"""Candidates FAISS fetches per result for the exact re-rank, unless a build says otherwise."""


def choose_kind(n_docs: int, dim: int, max_memory: int | None = None, params: dict | None = None) -> str:
    """``auto``: the kind for ``n_docs`` documents, within ``max_memory`` bytes if given (each
    kind sized with those of ``params`` it takes)."""
    params = params or {}
    sized = [make(name, **{k: v for k, v in params.items() if k in parameter_names(name)}) for name in KINDS]
    preferred = next(kind for kind in sized if kind.auto_up_to is None or n_docs <= kind.auto_up_to)
    if max_memory is None:
        return preferred.name
    smaller = sorted((kind for kind in sized if kind.bytes_per_document(dim) < preferred.bytes_per_document(dim)),
                     key=lambda kind: -kind.bytes_per_document(dim))
    for kind in [preferred, *smaller]:
        if n_docs * kind.bytes_per_document(dim) <= max_memory:
            return kind.name
    need = n_docs * min(kind.bytes_per_document(dim) for kind in sized)
    raise InputError(f"{n_docs:,} documents need at least {format_bytes(need)} in memory under the L1 metric "
                     f"(FAISS cannot compress L1 indexes), more than max_memory {format_bytes(max_memory)}; "
                     "raise the budget or split the corpus", argument="max_memory")


def auto_rule() -> str:
    """What ``auto`` picks, in words, from the registry: "flat up to 99,999 documents, …" (up
    to the first kind without a limit; auto never reaches those after it)."""
    words = []
    for kind in KINDS.values():
        if kind.auto_up_to is None:
            return ", ".join([*words, f"{kind.name} above"])
        words.append(f"{kind.name} up to {kind.auto_up_to:,} documents")
    return ", ".join(words)


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
        kind = choose_kind(n_docs, dim, max_memory, params)
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
