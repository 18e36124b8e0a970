"""The query engine: encode → FAISS candidates → exact exp(-L1) re-rank → hits.

``k × rerank_factor`` nearest candidates come from FAISS (L1), plus one for each tombstone;
tombstones are dropped; every candidate is scored exactly, exp(-Σ|q - d|) against the stored
float32 vectors; the top ``k`` are returned, ties broken by id. The score of a hit is
therefore exactly what the Siamese model predicts for (query, document).

With a metadata filter (``filters.py``) the matching documents are selected first; when
they are few (``EXACT_SCAN_MAX``) every one is scored exactly, otherwise FAISS searches only
them (an ``IDSelectorBitmap``), and a query for which FAISS finds fewer than ``k`` of them
(an HNSW graph or IVF lists can miss matches that lie far apart) falls back to scoring all of
them. So ``k`` hits come back whenever ``k`` documents match.

Nothing here changes the state it reads, so any number of threads may search one state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

import faiss
import numpy as np

from .calibration import Calibration
from .documents import Documents
from .encoder import Encoder
from .errors import InputError, UnknownFieldError
from .filters import Where, cache_key, check_where
from .fusion import DEFAULT_FUSION, NO_LEXICAL_PART, Fusion, check_mode
from .kinds import exact_search
from .lexical import Statistics
from .scoring import exp_neg_l1
from .state import IndexState
from .text import first_blank, normalize

EXACT_SCAN_MAX = 20_000
"""Matching documents up to which a filtered search scores them all instead of asking FAISS
(20,000 × 64 floats: ~1 ms a query in NumPy, less than an HNSW search that skips non-matches)."""


@dataclass(frozen=True)
class Hit:
    """One search result; ``score`` is the Siamese model's prediction for (query, document),
    ``match`` the calibrated probability that the two mean the same (``calibration.py``; None
    when the model has no calibration).

    Example: ``hit = idx.search("退款多久到账")[0]; hit.id, hit.score, hit.match``."""

    rank: int
    id: str
    text: str
    score: float
    metadata: dict = field(default_factory=dict)
    match: float | None = None
    lexical: float | None = None
    """The document's BM25 for the query (lexical and hybrid searches; None in dense ones)."""
    rank_score: float | None = None
    """What the hits are ordered by in a lexical (BM25) or hybrid (the fusion's) search."""

    def to_dict(self) -> dict:
        """The hit as plain data. Example: ``json.dumps(hit.to_dict(), ensure_ascii=False)`` (what
        ``query --json`` prints); ``lexical`` and ``rank_score`` only where the mode gives them."""
        ranked = {} if self.rank_score is None else {"lexical": self.lexical, "rank_score": self.rank_score}
        return {"rank": self.rank, "id": self.id, "text": self.text, "score": self.score, "match": self.match,
                **ranked, "metadata": self.metadata}


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a whole number of at least 1, got {k!r}", argument="k")
    return int(k)


MAX_QUERY_CHARS = 1_000
"""The longest query taken, everywhere (library, CLI, HTTP). The model reads only its first
``max_length`` characters (100 for the shipped models); ``read_note`` says so for a longer one."""


def checked_queries(queries: Sequence[str]) -> list[str]:
    """The queries normalized, or an InputError naming the first that is not a list of text
    or is longer than ``MAX_QUERY_CHARS``."""
    if isinstance(queries, str):
        raise InputError("search_batch takes a list of queries; use search() for one", argument="queries")
    blank = first_blank(queries)
    if blank is not None:
        raise InputError(f"query #{blank + 1} is empty or whitespace only; give some text to search for",
                         argument="queries")
    texts = [normalize(q) for q in queries]
    long = next((i for i, t in enumerate(texts) if len(t) > MAX_QUERY_CHARS), None)
    if long is not None:
        raise InputError(f"query #{long + 1} has {len(texts[long]):,} characters; a query may have at most "
                         f"{MAX_QUERY_CHARS:,}", argument="queries")
    return texts


def read_note(query: str, encoder: Encoder) -> str | None:
    """A note for a query longer than the model reads (``max_length``), else None: the rest is
    not part of the search, and a user should know. Example: ``read_note("退" * 300, enc)``."""
    n, reads = len(normalize(query)), encoder.config.max_length
    return f"the model reads the first {reads:,} of this query's {n:,} characters" if n > reads else None


Observe = Callable[[str, float], None]
"""Told each stage's seconds: ``encode`` (with the filter's selection), ``candidates`` (FAISS and BM25), ``rerank``."""


class _Stages:
    __slots__ = ("observe", "started")

    def __init__(self, observe: Observe | None):
        self.observe, self.started = observe, time.perf_counter()

    def done(self, stage: str) -> None:
        if self.observe is not None:
            now = time.perf_counter()
            self.observe(stage, now - self.started)
            self.started = now


def check_min_match(min_match: float | None, encoder: Encoder) -> None:
    if min_match is None:
        return
    if isinstance(min_match, bool) or not isinstance(min_match, (int, float)) or not 0 <= min_match <= 1:
        raise InputError(f"min_match must be a probability from 0 to 1, got {min_match!r}", argument="min_match")
    if encoder.calibration is None:
        raise InputError("this index's model has no match calibration; calibrate the model on labelled pairs and "
                         "rebuild the index, or leave min_match out", argument="min_match")


def check_fields(state: IndexState, checked: dict[str, tuple]) -> None:
    """An ``UnknownFieldError`` when the filter names a field no document has: its empty answer
    would otherwise look like "nothing matched" when the field name is wrong."""
    missing = state.documents.missing_fields(checked)
    if missing:
        names = ", ".join(repr(f) for f in missing)
        raise UnknownFieldError(f"no document has the metadata field{'s' if len(missing) > 1 else ''} {names}; "
                                "check the field name in the filter", argument="where")


def matching(state: IndexState, where: Where | None) -> int:
    """How many live documents a filter keeps (all of them without one)."""
    if where is None:
        return len(state)
    checked = check_where(where)
    selected = state.documents.select(checked)
    if not len(selected):
        check_fields(state, checked)
    return len(selected)


@dataclass(frozen=True)
class Request:
    """A search's arguments, checked (``Request.checked``): each path checks them once, the
    library's ``search_batch`` as it is called, a service's coalescer before a request joins
    a batch (so one bad request cannot fail the others'), and ``search`` takes them as they are."""

    queries: list[str]
    """Normalized."""
    k: int
    where: dict[str, tuple] | None
    """As ``filters.check_where`` returns it."""
    min_match: float | None
    mode: str

    @classmethod
    def checked(cls, queries: Sequence[str], k: int, where: Where | None, min_match: float | None, mode: str,
                encoder: Encoder, dense_only: str | None) -> Request:
        """The request, or an ``InputError`` naming the first argument at fault (``dense_only``:
        the index's, why it answers dense searches only)."""
        k = check_k(k)
        texts = checked_queries(queries)
        checked = None if where is None else check_where(where)
        check_min_match(min_match, encoder)
        check_mode(mode, dense_only)
        return cls(texts, k, checked, min_match, mode)

    def key(self) -> tuple:
        """What requests share to be answered in one batch (all but the queries)."""
        return self.k, None if self.where is None else cache_key(self.where), self.min_match, self.mode

    @staticmethod
    def joined(requests: Sequence[Request]) -> Request:
        """One request for the queries of several that share a ``key``."""
        return replace(requests[0], queries=[q for r in requests for q in r.queries])


def search(state: IndexState, encoder: Encoder, request: Request, observe: Observe | None = None,
           fusion: Fusion | None = None, encoded: np.ndarray | None = None) -> list[list[Hit]]:
    """Top-k hits for each query, ranked by exact exp(-L1), ties by id; with ``where``, among
    the documents whose metadata match it; with ``min_match``, only hits at least that likely
    to mean the same (so fewer than k may come back). ``mode`` "lexical" ranks by BM25,
    "hybrid" by ``fusion`` of both (``pool``). ``encoded``: the queries' vectors, where the
    caller has them (a sharded index encodes once for all its shards)."""
    stages = _Stages(observe)
    found = _gathered(state, encoder, request, stages, encoded, None)
    if found is None:
        return [[] for _ in request.queries]
    encoded, candidates = found
    if request.mode == "dense":
        hits = [rerank(state, q, pos, request.k, encoder.calibration) for q, pos in zip(encoded, candidates)]
    else:
        fusion = fusion_for(request.mode, fusion, encoder)
        hits = [each.ranked(fusion, request.k, encoder.calibration) for each in candidates]
    hits = [likely(ranked, request.min_match) for ranked in hits]
    stages.done("rerank")
    return hits


def fusion_for(mode: str, fusion: Fusion | None, encoder: Encoder) -> Fusion | None:
    """What orders a search's candidates: nothing in lexical mode (BM25 does), else the
    call's fusion, the model's fitted one, or ``DEFAULT_FUSION``."""
    return None if mode == "lexical" else fusion or encoder.fusion or DEFAULT_FUSION


def candidate_hits(state: IndexState, encoder: Encoder, request: Request, encoded: np.ndarray | None = None,
                   statistics: Sequence[Statistics] | None = None) -> list[list[Hit]]:
    """Each query's lexical or hybrid candidates as ``search`` would gather them, every one a
    hit scored exactly by both sides (rank 0, unordered, ``min_match`` not applied), BM25 by
    ``statistics`` (each query's counts over several indexes) if given: what ``fused`` ranks
    when the candidates of several indexes of one corpus are merged (``shards.py``)."""
    found = _gathered(state, encoder, request, _Stages(None), encoded, statistics)
    return [[] for _ in request.queries] if found is None else [p.hits(encoder.calibration) for p in found[1]]


def _gathered(state: IndexState, encoder: Encoder, request: Request, stages: _Stages, encoded: np.ndarray | None,
              statistics: Sequence[Statistics] | None) -> tuple[np.ndarray, list] | None:
    """The queries' vectors and each one's candidates: positions in dense mode, else its
    ``Pool``; None where no document can be found (an empty index, a filter keeping none)."""
    texts, k, checked, mode = request.queries, request.k, request.where, request.mode
    if not texts or not len(state):
        return None
    selected = None if checked is None else state.documents.select(checked)  # timed with the encoding
    if selected is not None and not len(selected):
        check_fields(state, checked)
        return None
    each = [None] * len(texts) if statistics is None else list(statistics)
    reading = _lexical_side(state, texts, k, selected, mode, each)
    try:
        if encoded is None:
            encoded = encoder.encode(texts)
            stages.done("encode")
        candidates = _dense_side(state, encoded, k, selected, mode)
    except BaseException:
        if reading is not None:
            wait([reading])  # nothing may read the state after the caller's lock on it is gone
        raise
    found = [] if reading is None else reading.result()
    stages.done("candidates")
    if mode != "dense":
        candidates = [pool(state, q, text, pos, lexical, k * state.rerank_factor, counts)
                      for q, text, pos, lexical, counts in zip(encoded, texts, candidates, found, each)]
    return encoded, candidates


def _lexical_side(state: IndexState, texts: list[str], k: int, selected: np.ndarray | None, mode: str,
                  statistics: list[Statistics | None]) -> Future | None:
    """Each query's BM25 candidates in lexical and hybrid mode (rows and their BM25, by the
    query's ``statistics``; None in dense mode), ``k × rerank_factor`` plus the tombstones.
    They are read on another thread while this one encodes and asks FAISS: they need no
    vector, and at 1M documents a hybrid search's two sides took about as long as each other."""
    n = k * state.rerank_factor + state.tombstones

    def read() -> list[tuple[np.ndarray, np.ndarray]]:
        return [state.lexical.top(text, n, selected, counts) for text, counts in zip(texts, statistics)]

    return None if mode == "dense" else _side_threads().submit(read)


def _dense_side(state: IndexState, encoded: np.ndarray, k: int, selected: np.ndarray | None,
                mode: str) -> list[np.ndarray]:
    """Each query's dense candidates (positions; none in lexical mode), ``k × rerank_factor``
    plus the tombstones."""
    n = k * state.rerank_factor
    if mode == "lexical":
        candidates = [np.empty(0, np.int64)] * len(encoded)
    elif selected is None:
        candidates = nearest(state, encoded, min(state.rows, n + state.tombstones))
    elif len(selected) <= EXACT_SCAN_MAX:
        candidates = [selected] * len(encoded)
    else:
        in_delta = selected[np.searchsorted(selected, state.base_rows):]  # few: scored exactly
        in_base = selected[: len(selected) - len(in_delta)]
        bitmap = np.zeros(state.base_rows, dtype=bool)
        bitmap[in_base] = True
        bits = np.packbits(bitmap, bitorder="little")  # kept alive here while FAISS reads it
        selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # n counts bytes
        found = state.kind.search(state.faiss_index, encoded, max(1, min(len(in_base), n)), selector)
        candidates = [np.union1d(pos[pos >= 0], in_delta) for pos in found]
        candidates = [pos if len(pos) >= k else selected for pos in candidates]
    return candidates


_side: ThreadPoolExecutor | None = None


def _side_threads() -> ThreadPoolExecutor:
    """The threads lexical and hybrid searches read BM25 on (one a core: more would only wait for one),
    made when first needed and again in a forked child, which inherits none of them."""
    global _side
    if _side is None:
        _side = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="siamsearch-lexical")
    return _side


def _forget_side_threads() -> None:
    global _side
    _side = None


os.register_at_fork(after_in_child=_forget_side_threads)


def pools(state: IndexState, encoder: Encoder, queries: Sequence[str], k: int) -> list[Pool]:
    """Each query's hybrid candidates, scored by both sides, as ``search(mode="hybrid")`` would
    order them for ``k`` hits: what ``fusion_fit`` ranks by every fusion it tries."""
    texts = checked_queries(queries)
    check_mode("hybrid", None if state.lexical is not None else NO_LEXICAL_PART)
    found = _gathered(state, encoder, Request(texts, k, None, None, "hybrid"), _Stages(None), None, None)
    return [Pool.empty() for _ in texts] if found is None else found[1]


@dataclass(frozen=True)
class Pool:
    """One query's lexical or hybrid candidates, each scored exactly by both sides. Their
    texts and metadata are read only for the hits ``ranked`` returns (most candidates are not
    shown, and reading them was most of a hybrid query's time at 1M documents)."""

    positions: np.ndarray
    ids: list[str]
    scores: np.ndarray
    lexical: np.ndarray
    documents: Documents | None = None
    """Where ``ranked`` reads the hits' texts and metadata (None: an empty pool)."""

    @classmethod
    def empty(cls) -> Pool:
        return cls(np.empty(0, np.int64), [], np.empty(0), np.empty(0))

    def order(self, fusion: Fusion | None) -> tuple[list[int], np.ndarray]:
        """The candidates best first by ``fusion`` (by BM25 when None), ties by id; and their rank scores."""
        return _order(self.ids, self.scores, self.lexical, fusion)

    def ranked(self, fusion: Fusion | None, k: int, calibration: Calibration | None) -> list[Hit]:
        best, ranks = self.order(fusion)
        return self._hits(best[:k], calibration, ranks)

    def hits(self, calibration: Calibration | None) -> list[Hit]:
        """Every candidate as a hit, unordered (rank 0, no ``rank_score``), for ``fused``."""
        return self._hits(list(range(len(self.ids))), calibration, None)

    def _hits(self, chosen: list[int], calibration: Calibration | None, ranks: np.ndarray | None) -> list[Hit]:
        """The ``chosen`` candidates as hits, ranked 1, 2, … (0 each without ``ranks``)."""
        found = self.documents.get(self.positions[chosen]) if chosen else {}
        matches = [None] * len(chosen) if calibration is None else calibration(self.scores[chosen]).tolist()
        return [Hit(0 if ranks is None else rank, self.ids[i], found[int(self.positions[i])][1], float(self.scores[i]),
                    found[int(self.positions[i])][2], match, float(self.lexical[i]),
                    None if ranks is None else float(ranks[i]))
                for rank, (i, match) in enumerate(zip(chosen, matches), 1)]


def fused(found: Sequence[Hit], n: int, fusion: Fusion | None, k: int) -> list[Hit]:
    """The ``k`` hits a lexical (``fusion`` None) or hybrid search gives from candidates
    gathered by several indexes of one corpus (``candidate_hits``, BM25 by their summed
    counts): each side's best ``n`` of them all (ties with the ``n``-th kept), as ``pool``
    keeps of one index's, ordered by the fusion, ties by id. Where each index's candidates hold
    its best ``n`` a side, this is the one index's pool, so the same hits and ``rank_score``."""
    scores = np.array([h.score for h in found], np.float64)
    bm25 = np.array([h.lexical for h in found], np.float64)
    side = np.zeros(len(found), bool) if fusion is None else _kept(scores, n)
    has_term = np.flatnonzero(bm25 > 0)  # BM25's side holds only documents with a term in common
    side[has_term[_kept(bm25[has_term], n)]] = True
    chosen = [h for h, kept in zip(found, side) if kept]
    best, ranks = _order([h.id for h in chosen], scores[side], bm25[side], fusion)
    return [replace(chosen[i], rank=rank, rank_score=float(ranks[i])) for rank, i in enumerate(best[:k], 1)]


def _order(ids: list[str], scores: np.ndarray, lexical: np.ndarray,
           fusion: Fusion | None) -> tuple[list[int], np.ndarray]:
    ranks = lexical if fusion is None else fusion.rank_scores(scores, lexical)
    return sorted(range(len(ids)), key=lambda i: (-ranks[i], ids[i])), ranks


def pool(state: IndexState, query: np.ndarray, text: str, dense: np.ndarray, lexical: tuple[np.ndarray, np.ndarray],
         n: int, statistics: Statistics | None = None) -> Pool:
    """The best ``n`` live documents by the model (of the ``dense`` candidates) and the best
    ``n`` by BM25 (``lexical``: rows and their BM25, best first), each side's cut taking every
    document tied with its ``n``-th, all scored exactly by both. Counting only live documents
    on each side keeps the answers those of a fresh build of the same documents, however
    many were removed. ``statistics``: the BM25 counts to score by (``lexical.Statistics``)."""
    rows, bm25 = lexical
    docs = state.documents.ids(np.union1d(dense, rows))
    dense = np.asarray([p for p in dense.tolist() if p in docs], np.int64)
    dense = dense[_kept(exp_neg_l1(query, state.vectors_at(dense)), n)]
    alive = np.asarray([p in docs for p in rows.tolist()], bool)
    rows, bm25 = rows[alive], bm25[alive]
    best = _kept(bm25, n)
    rows, bm25 = rows[best], bm25[best]
    positions = np.union1d(dense, rows)
    if not len(positions):
        return Pool.empty()
    lexical_scores = np.zeros(len(positions))
    lexical_scores[np.searchsorted(positions, rows)] = bm25  # BM25's own candidates come with their exact BM25
    only_dense = ~np.isin(positions, rows)
    if only_dense.any():
        lexical_scores[only_dense] = state.lexical.scores(text, positions[only_dense], statistics)
    return Pool(positions, [docs[int(p)] for p in positions], exp_neg_l1(query, state.vectors_at(positions)),
                lexical_scores, state.documents)


def _kept(scores: np.ndarray, n: int) -> np.ndarray:
    """Which of ``scores`` are the ``n`` highest or tied with the ``n``-th."""
    if len(scores) <= n:
        return np.ones(len(scores), bool)
    return scores >= np.partition(scores, len(scores) - n)[len(scores) - n]


def likely(hits: list[Hit], min_match: float | None) -> list[Hit]:
    """The hits at least ``min_match`` likely to mean the same as the query (in dense mode a
    prefix of the ranking, since match falls as the score does); all of them without one."""
    return hits if min_match is None else [h for h in hits if h.match >= min_match]


def nearest(state: IndexState, queries: np.ndarray, n: int) -> list[np.ndarray]:
    """Each query's ``n`` nearest rows by L1, as sorted positions: from FAISS for the base, and
    exactly from the delta (the rows added since the base was written: ``mutations.DELTA_MAX_ROWS``
    at most)."""
    if state.base_rows:
        found = state.kind.search(state.faiss_index, queries, min(state.base_rows, n))
    else:
        found = np.empty((len(queries), 0), np.int64)
    if len(state.delta):
        found = np.hstack([found, exact_search(state.delta, queries, min(len(state.delta), n)) + state.base_rows])
    return [np.unique(pos[pos >= 0]) for pos in found]


def rerank(state: IndexState, query: np.ndarray, positions: np.ndarray, k: int,
           calibration: Calibration | None = None) -> list[Hit]:
    """Score every candidate exactly, then read documents best-first only as far as needed:
    the first ``k`` live ones plus every candidate tied with the last (ties go by id)."""
    scores = exp_neg_l1(query, state.vectors_at(positions))
    order = np.argsort(-scores, kind="stable")
    end = min(k, len(order))
    while True:
        while end < len(order) and scores[order[end]] == scores[order[end - 1]]:
            end += 1
        docs = state.documents.get(positions[order[:end]])
        if len(docs) >= k or end == len(order):
            break
        end = min(len(order), end + k - len(docs) + state.tombstones)
    ranked = sorted(((scores[i], int(positions[i])) for i in order[:end] if int(positions[i]) in docs),
                    key=lambda sp: (-sp[0], docs[sp[1]][0]))[:k]
    matches = [None] * len(ranked) if calibration is None else calibration([s for s, _ in ranked]).tolist()
    return [Hit(rank, *docs[p][:2], float(score), docs[p][2], match)
            for rank, ((score, p), match) in enumerate(zip(ranked, matches), 1)]
