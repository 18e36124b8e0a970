"""FAISS index kinds under the L1 metric, and how ``auto`` chooses between them.

========  =====================================  ==============================================
kind      FAISS                                  when
========  =====================================  ==============================================
flat      ``IndexFlat(d, METRIC_L1)``: exact     ``auto`` below ``AUTO_FLAT_MAX_DOCS`` documents
hnsw      ``IndexHNSWFlat(d, M, METRIC_L1)``     ``auto`` from ``AUTO_FLAT_MAX_DOCS`` documents
========  =====================================  ==============================================

Why the threshold: an exact L1 scan costs about 8 ms a query at 1M × 64-d on this
project's 2-core reference machine, under 1 ms below 100k, where the exact index is both
fast enough and needs no tuning. Above it HNSW answers in well under a millisecond.
Only kinds whose L1 support was verified are offered: FAISS's SQ/PQ encodings and
IndexRefine reject or silently ignore METRIC_L1 (HNSW+SQ8 with L1 even aborts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import faiss
import numpy as np

from .errors import InputError

KINDS = ("flat", "hnsw")
AUTO_FLAT_MAX_DOCS = 100_000
ADD_CHUNK = 10_000


@dataclass(frozen=True)
class IndexSpec:
    """The index kind and its parameters, recorded in the manifest."""

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"index kind {self.kind!r} is not one of auto, {', '.join(KINDS)}")
        if min(self.hnsw_m, self.ef_construction, self.ef_search) < 1:
            raise InputError("hnsw_m, ef_construction and ef_search must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> IndexSpec:
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) - known:
            raise ValueError(f"unknown index settings: {d!r}")
        return cls(**d)


def resolve_kind(kind: str, n_docs: int) -> str:
    """``auto`` → flat or hnsw by corpus size; other kinds pass through (validated)."""
    if kind == "auto":
        return "flat" if n_docs < AUTO_FLAT_MAX_DOCS else "hnsw"
    if kind not in KINDS:
        raise InputError(f"index kind {kind!r} is not one of auto, {', '.join(KINDS)}")
    return kind


def create(spec: IndexSpec, dim: int) -> faiss.Index:
    if spec.kind == "flat":
        return faiss.IndexFlat(dim, faiss.METRIC_L1)
    index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_L1)
    index.hnsw.efConstruction = spec.ef_construction
    return index


def add(index: faiss.Index, vectors: np.ndarray, progress: Callable[[int], None] | None = None) -> None:
    """Append vectors (their FAISS labels continue from ``index.ntotal``), in chunks for progress."""
    for start in range(0, len(vectors), ADD_CHUNK):
        chunk = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)
        index.add(chunk)
        if progress:
            progress(len(chunk))


def candidates(index: faiss.Index, spec: IndexSpec, queries: np.ndarray, n: int) -> np.ndarray:
    """(len(queries), n) positions of the nearest stored vectors by L1; -1 where fewer were found."""
    if spec.kind == "hnsw":
        index.hnsw.efSearch = max(spec.ef_search, n)
    _, positions = index.search(np.ascontiguousarray(queries, dtype=np.float32), n)
    return positions


def check(index: faiss.Index, spec: IndexSpec, rows: int, dim: int) -> str | None:
    """Why a loaded FAISS index does not match its manifest, or None if it does."""
    expected = faiss.IndexFlat if spec.kind == "flat" else faiss.IndexHNSWFlat
    if not isinstance(index, expected):
        return f"the FAISS file holds a {type(index).__name__}, the manifest says {spec.kind}"
    if index.metric_type != faiss.METRIC_L1:
        return "the FAISS index does not use the L1 metric"
    if index.ntotal != rows or index.d != dim:
        return f"the FAISS index holds {index.ntotal} × {index.d}-d vectors, the manifest says {rows} × {dim}"
    return None
