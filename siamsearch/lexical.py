"""The lexical index: BM25 over character terms, kept beside FAISS in the same index folder.

Terms are what ``evaluate --baselines`` has always used for Chinese text, which has no word
boundaries: a text's characters and its character bigrams, case-folded, within runs of
non-whitespace ("开通 VIP" → 开, 通, 开通, v, i, p, vi, ip). A term is an int64 key
(``key``), so the index is plain arrays: sorted keys, each key's postings (row, term
frequency) sorted by row, and each row's length in terms. The arrays are ``.npy`` files,
memory-mapped when loaded, written into the generation and checksummed in its manifest
like the FAISS index (``index_folder.py``). Beside the postings lies their transpose, each
row's keys and counts (the **forward** files): the exact BM25 of a candidate then reads its own
~20 terms instead of searching every query key's postings for it, which was most of a lexical
query's time at 1M documents.

BM25 is Lucene's: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), k1 = 1.2, b = 0.75, a query
term counted once however often it occurs. N, df and the mean length are those of the live
documents only (unlike Lucene, which counts deleted documents until a merge), so a
document's BM25 is the same however the index came to hold what it holds: built at once,
streamed, or changed by adds and removes.

Like the vectors, a loaded index keeps its **base** as the files hold it; documents added
since go to a small in-memory **delta** (rebuilt from ``delta.sqlite``'s texts when loaded,
so a save writes nothing lexical unless it writes a new base). A document removed from the
base keeps its postings there, as its vector stays in FAISS, until a new base is written;
its row is **dead**, and its postings are subtracted from the statistics.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

K1, B = 1.2, 0.75
TERMS_FILE, POSTINGS_FILE = "lexical_terms.npy", "lexical_postings.npy"
LENGTHS_FILE, HEADS_FILE = "lexical_lengths.npy", "lexical_heads.npy"
LEXICAL_FILES = (TERMS_FILE, POSTINGS_FILE, LENGTHS_FILE, HEADS_FILE)
FORWARD_FILE, FORWARD_STARTS_FILE = "lexical_forward.npy", "lexical_forward_starts.npy"
FORWARD_FILES = (FORWARD_FILE, FORWARD_STARTS_FILE)
"""Optional: a base written before index format 6 lacks them, and derives them when loaded."""
FORWARD_DTYPE = np.dtype([("term", "<i4"), ("tf", "<u2")])
"""A forward entry: the index of its key in ``Postings.keys`` and its count (6 bytes, packed)."""
HEAD = 4096
"""Postings of a key that candidate generation reads at most: a key in more documents is read
by its ``HEAD`` best (``Postings.heads``), and a character in more documents not at all when
the query has a bigram in the index. A common character's best postings are the shortest
documents that hold it, and they crowded out the documents sharing the query's bigrams: at 1M
documents skipping them raised top-10 recall against an exhaustive BM25 from 0.90 to 0.95
(``bench/hybrid.py``) and cut ``top``'s p50 by a third. Every candidate is then scored
exactly, every term counted."""
EXACT_ROWS = 20_000
"""Filtered rows up to which ``top`` scores every one exactly instead of reading postings."""
RESCORED = 16
"""Candidates scored exactly per hit wanted: the best ``RESCORED × n`` by the weights read."""
HEAD_DTYPE = np.dtype([("row", "<i4"), ("weight", "<f4")])
_UNIGRAM = (1 << 21) - 1  # the second half of a unigram's key: above every code point (≤ 0x10FFFF)
_SPACE = 32


def key(term: str) -> int:
    """A term's key: its first code point × 2²¹ plus the second's (a unigram: plus 2²¹ - 1)."""
    return (ord(term[0]) << 21) | (ord(term[1]) if len(term) > 1 else _UNIGRAM)


def terms(text: str) -> list[str]:
    """A text's terms, in order, repeats kept: "开通" → ["开", "通", "开通"]."""
    runs = text.casefold().split()
    return [*(c for r in runs for c in r), *(r[i : i + 2] for r in runs for i in range(len(r) - 1))]


def _code_points(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The texts' case-folded code points with each run of whitespace as one space and a space
    between texts, and the text each code point belongs to."""
    joined = [" ".join(t.casefold().split()) for t in texts]
    cps = np.frombuffer(" ".join(joined).encode("utf-32-le"), dtype="<u4").astype(np.int64)
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), [len(j) + 1 for j in joined])[: len(cps)]
    return cps, owner


def _keys(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every term occurrence of the texts as (key, the text's index)."""
    cps, owner = _code_points(texts)
    word = cps != _SPACE
    pair = word[:-1] & word[1:]
    keys = np.concatenate([(cps[word] << 21) | _UNIGRAM, (cps[:-1][pair] << 21) | cps[1:][pair]])
    return keys, np.concatenate([owner[word], owner[:-1][pair]])


def query_keys(text: str) -> np.ndarray:
    """A query's distinct keys, sorted."""
    return np.unique(_keys([text])[0])


@dataclass(frozen=True)
class Postings:
    """One immutable part of a lexical index over rows ``first_row`` … ``first_row + len(lengths)``:
    ``keys`` sorted, ``starts[i]:starts[i + 1]`` the postings of ``keys[i]`` (``rows`` ascending,
    ``tfs`` their counts), ``lengths`` each row's terms (0: no document there)."""

    keys: np.ndarray
    starts: np.ndarray
    rows: np.ndarray
    tfs: np.ndarray
    lengths: np.ndarray
    first_row: int = 0
    heads: np.ndarray | None = None
    """Of a key with more than ``HEAD`` postings, the ``HEAD`` with the highest BM25 weight
    (the shortest rows, the most repeats), as (row, weight at this part's mean length), rows
    ascending: ``heads[head_starts[i]:head_starts[i + 1]]``; computed on creation."""
    head_starts: np.ndarray | None = None
    forward_starts: np.ndarray | None = None
    """``forward[forward_starts[r]:forward_starts[r + 1]]``: the keys of row ``first_row + r``
    (their indices in ``keys``, ascending) and their counts, ``FORWARD_DTYPE``; derived from
    the postings when first needed where not given (``by_row``)."""
    forward: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.heads is None:
            heads, head_starts = _heads(self)
            object.__setattr__(self, "heads", heads)
            object.__setattr__(self, "head_starts", head_starts)

    @classmethod
    def empty(cls, first_row: int = 0) -> Postings:
        return cls(np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, np.int32), np.empty(0, np.uint16),
                   np.empty(0, np.int32), first_row)

    @classmethod
    def of(cls, texts: Sequence[str], rows: Sequence[int] | np.ndarray, first_row: int, n_rows: int) -> Postings:
        """The postings of ``texts`` at ``rows`` (ascending, within ``first_row`` … ``+ n_rows``)."""
        rows = np.asarray(rows, np.int64)
        keys, owner = _keys(texts) if len(texts) else (np.empty(0, np.int64), np.empty(0, np.int64))
        lengths = np.zeros(n_rows, np.int32)
        np.add.at(lengths, rows - first_row, np.bincount(owner, minlength=len(texts)).astype(np.int32))
        order = np.lexsort((owner, keys))  # by key, then by row
        keys, owner = keys[order], owner[order]
        new = np.ones(len(keys), bool)
        new[1:] = (keys[1:] != keys[:-1]) | (owner[1:] != owner[:-1])
        first = np.flatnonzero(new)
        tfs = np.diff(np.append(first, len(keys)))
        pair_keys, pair_rows = keys[first], rows[owner[first]]
        distinct = np.ones(len(pair_keys), bool)
        distinct[1:] = pair_keys[1:] != pair_keys[:-1]
        starts = np.append(np.flatnonzero(distinct), len(pair_keys)).astype(np.int64)
        return cls(pair_keys[distinct], starts, pair_rows.astype(np.int32), np.minimum(tfs, 65535).astype(np.uint16),
                   lengths, first_row)

    @cached_property
    def documents(self) -> int:
        return int(np.count_nonzero(self.lengths))

    @cached_property
    def total_length(self) -> int:
        return int(np.asarray(self.lengths).sum(dtype=np.int64))

    @cached_property
    def by_row(self) -> tuple[np.ndarray, np.ndarray]:
        """``(forward_starts, forward)``: as given, or transposed from the postings."""
        if self.forward is not None:
            return self.forward_starts, self.forward
        terms_ = np.repeat(np.arange(len(self.keys), dtype=np.int32), np.diff(self.starts))
        return _forward(terms_, np.asarray(self.rows, np.int64) - self.first_row, self.tfs, len(self.lengths))

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each key, the start and end of its postings (equal where it has none)."""
        i = np.searchsorted(self.keys, keys)
        held = i < len(self.keys)
        held[held] = self.keys[i[held]] == keys[held]
        start = np.where(held, self.starts[np.minimum(i, len(self.keys))], 0)
        end = np.where(held, self.starts[np.minimum(i + 1, len(self.keys))], 0)
        return start, end

    def merged(self, other: Postings) -> Postings:
        """This part followed by ``other``, whose rows all come after this part's."""
        return concatenated([self, other])

    def dead_postings(self, rows: np.ndarray) -> np.ndarray:
        """Which postings belong to ``rows`` (this part's, sorted): one gather through a bitmap,
        linear in the postings however many rows."""
        bitmap = np.zeros(len(self.lengths), bool)
        bitmap[rows - self.first_row] = True
        return bitmap[np.asarray(self.rows, np.int64) - self.first_row]

    def without(self, rows: np.ndarray) -> Postings:
        """The same rows, with these (removed documents) holding nothing."""
        rows = np.asarray(rows, np.int64)
        mine = rows[(rows >= self.first_row) & (rows < self.first_row + len(self.lengths))]
        if not len(mine):
            return self
        gone = self.dead_postings(mine)
        keys = np.repeat(self.keys, np.diff(self.starts))[~gone]
        lengths = np.array(self.lengths)
        lengths[mine - self.first_row] = 0
        return _from_sorted(keys, np.asarray(self.rows)[~gone], np.asarray(self.tfs)[~gone], lengths, self.first_row)

    def kept(self, live: np.ndarray) -> Postings:
        """Only the postings of rows in ``live`` (ascending), renumbered 0 … len(live) - 1."""
        rows = np.asarray(self.rows, np.int64)
        new_row = np.full(self.first_row + len(self.lengths), -1, np.int64)
        new_row[live] = np.arange(len(live))
        keep = new_row[rows] >= 0
        keys = np.repeat(self.keys, np.diff(self.starts))[keep]
        lengths = np.asarray(self.lengths)[live - self.first_row] if len(live) else np.empty(0, np.int32)
        return _from_sorted(keys, new_row[rows[keep]].astype(np.int32), np.asarray(self.tfs)[keep], lengths, 0)

    def write(self, folder: Path) -> None:
        """The ``LEXICAL_FILES``: (terms + 1, 3) int64 key, postings start, heads start (the last
        row: -1, the ends); (postings, 2) int32 row, count; (rows,) int32 lengths; (heads,)
        ``HEAD_DTYPE``; and the ``FORWARD_FILES``: (postings,) ``FORWARD_DTYPE``, (rows + 1,) int64."""
        np.save(folder / TERMS_FILE, _terms_table(self))
        np.save(folder / POSTINGS_FILE, np.stack([self.rows, np.asarray(self.tfs, np.int32)], axis=1).astype(np.int32))
        np.save(folder / LENGTHS_FILE, np.asarray(self.lengths, np.int32))
        np.save(folder / HEADS_FILE, np.asarray(self.heads, HEAD_DTYPE))
        forward_starts, forward = self.by_row
        np.save(folder / FORWARD_STARTS_FILE, forward_starts)
        np.save(folder / FORWARD_FILE, forward)

    @classmethod
    def read(cls, folder: Path, rows: int, forward: bool) -> Postings:
        """The base part of a generation folder, memory-mapped (``forward``: with the
        ``FORWARD_FILES``, which a base written before format 6 lacks); ValueError if it is malformed."""
        terms_, postings, lengths, heads = (np.load(folder / name, mmap_mode="r", allow_pickle=False)
                                            for name in LEXICAL_FILES)
        shapes = (terms_.dtype, terms_.ndim, terms_.shape[-1], postings.dtype, postings.shape[1:], lengths.dtype,
                  lengths.shape, heads.dtype, heads.ndim)
        if shapes != (np.int64, 2, 3, np.int32, (2,), np.int32, (rows,), HEAD_DTYPE, 1) or not len(terms_):
            raise ValueError(f"the lexical files hold {terms_.shape} {terms_.dtype}, {postings.shape} "
                             f"{postings.dtype}, {lengths.shape} {lengths.dtype} and {heads.shape} {heads.dtype}; "
                             f"expected (terms + 1, 3) int64, (postings, 2) int32, ({rows},) int32 and (heads,) "
                             f"{HEAD_DTYPE}")
        starts, head_starts = np.asarray(terms_[:, 1]), np.asarray(terms_[:, 2])
        if starts[0] != 0 or starts[-1] != len(postings) or np.any(np.diff(starts) <= 0) \
                or head_starts[0] != 0 or head_starts[-1] != len(heads) or np.any(np.diff(head_starts) < 0):
            raise ValueError("the lexical term offsets are not increasing to the ends of their files")
        if not forward:
            return cls(np.asarray(terms_[:-1, 0]), starts, postings[:, 0], postings[:, 1], lengths, 0, heads,
                       head_starts)
        by_row, forward_starts = (np.load(folder / name, mmap_mode="r", allow_pickle=False) for name in FORWARD_FILES)
        if by_row.dtype != FORWARD_DTYPE or by_row.shape != (len(postings),) \
                or forward_starts.dtype != np.int64 or forward_starts.shape != (rows + 1,):
            raise ValueError(f"the forward files hold {by_row.shape} {by_row.dtype} and {forward_starts.shape} "
                             f"{forward_starts.dtype}; expected ({len(postings)},) {FORWARD_DTYPE} and "
                             f"({rows + 1},) int64")
        forward_starts = np.asarray(forward_starts)
        if forward_starts[0] != 0 or forward_starts[-1] != len(by_row) or np.any(np.diff(forward_starts) < 0):
            raise ValueError("the lexical forward offsets are not increasing to the end of their file")
        return cls(np.asarray(terms_[:-1, 0]), starts, postings[:, 0], postings[:, 1], lengths, 0, heads, head_starts,
                   forward_starts, by_row)


class LexicalWriter:
    """Writes the lexical files of a streamed build with memory that follows a chunk, not the
    corpus: each chunk's postings go to a scratch file as they come (``add``), with only the
    distinct keys and their counts kept; ``finish`` lays the postings out key by key straight
    into the memory-mapped ``POSTINGS_FILE``, one scratch file at a time, then picks the heads."""

    def __init__(self, folder: Path):
        self.folder, self.scratch = folder, folder / ".lexical-parts"
        self.scratch.mkdir()
        self.keys, self.df = np.empty(0, np.int64), np.empty(0, np.int64)
        self.lengths: list[np.ndarray] = []
        self.rows = 0

    def add(self, texts: Sequence[str]) -> None:
        part = Postings.of(texts, np.arange(self.rows, self.rows + len(texts)), self.rows, len(texts))
        np.save(self.scratch / f"{len(self.lengths)}.keys.npy", np.stack([part.keys, np.diff(part.starts)], axis=1))
        np.save(self.scratch / f"{len(self.lengths)}.postings.npy", np.stack([part.rows, part.tfs.astype(np.int32)], 1))
        keys, inverse = np.unique(np.concatenate([self.keys, part.keys]), return_inverse=True)
        self.df = np.bincount(inverse, np.concatenate([self.df, np.diff(part.starts)]), len(keys)).astype(np.int64)
        self.keys = keys
        self.lengths.append(part.lengths)
        self.rows += len(texts)

    def finish(self) -> None:
        starts = np.zeros(len(self.keys) + 1, np.int64)
        np.cumsum(self.df, out=starts[1:])
        postings = np.lib.format.open_memmap(self.folder / POSTINGS_FILE, "w+", np.int32, (int(starts[-1]), 2))
        cursor = starts[:-1].copy()
        for n in range(len(self.lengths)):  # in row order, so each key's rows stay ascending
            counts = np.load(self.scratch / f"{n}.keys.npy")
            mine = np.searchsorted(self.keys, counts[:, 0])
            offsets = np.repeat(cursor[mine] - np.concatenate([[0], np.cumsum(counts[:, 1])[:-1]]), counts[:, 1])
            postings[offsets + np.arange(len(offsets))] = np.load(self.scratch / f"{n}.postings.npy")
            cursor[mine] += counts[:, 1]
        postings.flush()
        forward_starts = self._write_forward(int(starts[-1]))
        lengths = np.concatenate(self.lengths) if self.lengths else np.empty(0, np.int32)
        part = Postings(self.keys, starts, postings[:, 0], postings[:, 1], lengths)  # picks the heads
        np.save(self.folder / TERMS_FILE, _terms_table(part))
        np.save(self.folder / LENGTHS_FILE, lengths)
        np.save(self.folder / HEADS_FILE, np.asarray(part.heads, HEAD_DTYPE))
        np.save(self.folder / FORWARD_STARTS_FILE, forward_starts)
        del postings, part
        shutil.rmtree(self.scratch)

    def _write_forward(self, total: int) -> np.ndarray:
        """Each chunk's postings transposed into ``FORWARD_FILE``, chunk after chunk (their rows
        follow each other); returns the forward starts."""
        forward = np.lib.format.open_memmap(self.folder / FORWARD_FILE, "w+", FORWARD_DTYPE, (total,))
        starts, written, first_row = [np.zeros(1, np.int64)], 0, 0
        for n, lengths in enumerate(self.lengths):
            counts = np.load(self.scratch / f"{n}.keys.npy")
            chunk = np.load(self.scratch / f"{n}.postings.npy")
            terms_ = np.repeat(np.searchsorted(self.keys, counts[:, 0]).astype(np.int32), counts[:, 1])
            chunk_starts, entries = _forward(terms_, chunk[:, 0].astype(np.int64) - first_row, chunk[:, 1],
                                             len(lengths))
            forward[written : written + len(entries)] = entries
            starts.append(chunk_starts[1:] + written)
            written += len(entries)
            first_row += len(lengths)
        forward.flush()
        del forward
        return np.concatenate(starts)


def _terms_table(part: Postings) -> np.ndarray:
    ends = np.array([[-1, len(part.rows), len(part.heads)]], np.int64)
    return np.concatenate([np.stack([part.keys, part.starts[:-1], part.head_starts[:-1]], axis=1).astype(np.int64),
                           ends])


def _heads(part: Postings) -> tuple[np.ndarray, np.ndarray]:
    """Each long key's ``HEAD`` best postings by weight at this part's mean length."""
    df = np.diff(part.starts)
    long = np.flatnonzero(df > HEAD)
    head_starts = np.zeros(len(part.keys) + 1, np.int64)
    if not len(long):
        return np.empty(0, HEAD_DTYPE), head_starts
    mean_length = max(1.0, part.total_length / max(part.documents, 1))
    head_starts[1:] = np.cumsum(np.where(df > HEAD, HEAD, 0))
    heads = np.empty(len(long) * HEAD, HEAD_DTYPE)
    for n, t in enumerate(long):  # long keys are few (a few thousand at 1M documents)
        s, e = part.starts[t], part.starts[t + 1]
        tf = np.asarray(part.tfs[s:e], np.float64)
        weight = tf / (tf + K1 * (1 - B + B * np.asarray(part.lengths)[np.asarray(part.rows[s:e]) - part.first_row]
                                  / mean_length))
        best = np.sort(np.argpartition(-weight, HEAD - 1)[:HEAD])
        heads["row"][n * HEAD : (n + 1) * HEAD] = part.rows[s:e][best]
        heads["weight"][n * HEAD : (n + 1) * HEAD] = weight[best]
    return heads, head_starts


def _forward(terms_: np.ndarray, rows: np.ndarray, tfs: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Postings (each one's key index, row from 0, count; by key, then row) transposed: by row,
    then key. Returns the starts of each row's entries and the ``FORWARD_DTYPE`` entries."""
    order = np.argsort(rows, kind="stable")  # within a row, the keys stay ascending
    entries = np.empty(len(order), FORWARD_DTYPE)
    entries["term"], entries["tf"] = terms_[order], np.asarray(tfs)[order]
    starts = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=starts[1:])
    return starts, entries


def concatenated(parts: Sequence[Postings]) -> Postings:
    """Parts over consecutive row ranges, in order, as one: one stable sort of their postings
    by key (within a key, rows stay ascending)."""
    first, end = parts[0].first_row, parts[-1].first_row + len(parts[-1].lengths)
    lengths = np.zeros(end - first, np.int32)
    for p in parts:
        lengths[p.first_row - first : p.first_row - first + len(p.lengths)] = p.lengths
    keys = np.concatenate([np.repeat(p.keys, np.diff(p.starts)) for p in parts])
    order = np.argsort(keys, kind="stable")
    return _from_sorted(keys[order], np.concatenate([np.asarray(p.rows) for p in parts])[order],
                        np.concatenate([np.asarray(p.tfs) for p in parts])[order], lengths, first)


def _from_sorted(keys: np.ndarray, rows: np.ndarray, tfs: np.ndarray, lengths: np.ndarray, first_row: int) -> Postings:
    distinct = np.ones(len(keys), bool)
    distinct[1:] = keys[1:] != keys[:-1]
    starts = np.append(np.flatnonzero(distinct), len(keys)).astype(np.int64)
    return Postings(keys[distinct], starts, rows, tfs, lengths, first_row)


@dataclass(frozen=True)
class Statistics:
    """BM25's counts for one query's terms over a set of documents: how many hold each key,
    how many there are, and their total length. Counts of disjoint sets add up to those of
    their union, so shards that score by their summed counts give one index's BM25."""

    keys: np.ndarray
    """The query's distinct keys, sorted (``query_keys``)."""
    df: np.ndarray
    documents: int
    length: int

    def __add__(self, other: Statistics) -> Statistics:
        other = other.checked(self.keys)
        return Statistics(self.keys, self.df + other.df, self.documents + other.documents, self.length + other.length)

    def checked(self, keys: np.ndarray) -> Statistics:
        """These counts, if they are for ``keys`` (another query's would score wrongly)."""
        if not np.array_equal(self.keys, keys):
            raise ValueError("BM25 statistics of another query's terms")
        return self

    @property
    def idf(self) -> np.ndarray:
        return np.log1p((self.documents - self.df + 0.5) / (self.df + 0.5))

    @property
    def mean_length(self) -> float:
        return max(1.0, self.length / max(self.documents, 1))


@dataclass(frozen=True)
class LexicalIndex:
    """BM25 over a base part and a delta part (the rows after the base's)."""

    base: Postings
    delta: Postings
    dead: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """The base's rows whose documents were removed, sorted (see the module docstring)."""

    @classmethod
    def of(cls, texts: Sequence[str]) -> LexicalIndex:
        return cls(Postings.of(texts, np.arange(len(texts)), 0, len(texts)), Postings.empty(len(texts)))

    @classmethod
    def loaded(cls, base: Postings, delta_rows: Sequence[int], delta_texts: Sequence[str], rows: int,
               dead: Sequence[int] = ()) -> LexicalIndex:
        """A loaded base with its ``dead`` rows, and the delta rebuilt from the live delta
        documents (of ``rows`` in all)."""
        first = len(base.lengths)
        return cls(base, Postings.of(delta_texts, delta_rows, first, rows - first), np.asarray(dead, np.int64))

    @cached_property
    def _dead_statistics(self) -> tuple[np.ndarray, int, int]:
        """Each base key's postings in dead rows, the dead documents and their total length:
        what ``_counts`` subtracts (worked out once per state, on its first search)."""
        if not len(self.dead) or not len(self.base.keys):
            return np.zeros(len(self.base.keys), np.int64), 0, 0
        per_key = np.add.reduceat(self.base.dead_postings(self.dead).astype(np.int64), self.base.starts[:-1])
        lengths = np.asarray(self.base.lengths)[self.dead - self.base.first_row]
        return per_key, int(np.count_nonzero(lengths)), int(lengths.sum(dtype=np.int64))

    @property
    def rows(self) -> int:
        return len(self.base.lengths) + len(self.delta.lengths)

    def added(self, texts: Sequence[str], first_row: int, into_delta: bool) -> LexicalIndex:
        """With ``texts`` as the rows from ``first_row``: into the delta (a loaded base stays as its
        files hold it), or folded into the base with the delta (a new base)."""
        new = Postings.of(texts, np.arange(first_row, first_row + len(texts)), first_row, len(texts))
        if into_delta:
            return LexicalIndex(self.base, self.delta.merged(new) if len(self.delta.lengths) else new, self.dead)
        base = concatenated([p for p in (self.folded(), new) if len(p.lengths)] or [new])
        return LexicalIndex(base, Postings.empty(first_row + len(texts)))

    def without(self, rows: Sequence[int]) -> LexicalIndex:
        """Removed documents: dropped from the delta (which a load rebuilds from the live delta
        documents); in the base, dead rows until a new base is written, as their vectors are."""
        rows = np.asarray(rows, np.int64)
        in_base = rows[rows < len(self.base.lengths)]
        return LexicalIndex(self.base, self.delta.without(rows), np.union1d(self.dead, in_base))

    def folded(self) -> Postings:
        """Base and delta as one part, the dead rows' postings dropped: what a new base's files hold."""
        base = self.base.without(self.dead)
        return base if not len(self.delta.lengths) else concatenated([base, self.delta])

    def compacted(self, live: Sequence[int]) -> LexicalIndex:
        """Only the ``live`` rows, renumbered from 0 in order, as ``mutations.compact`` renumbers."""
        base = self.folded().kept(np.asarray(live, np.int64))
        return LexicalIndex(base, Postings.empty(len(base.lengths)))

    def statistics(self, text: str) -> Statistics:
        """What BM25 counts over this index's live documents for ``text``'s terms: several
        indexes' counts summed (``Statistics.__add__``) score each one's documents as one index
        of them all would (``shards.py``)."""
        keys = query_keys(text)
        return self._counts(keys, self._parts(keys))

    def _parts(self, keys: np.ndarray) -> list[tuple[Postings, np.ndarray, np.ndarray]]:
        """Where each part holds each key's postings."""
        return [(p, *p.find(keys)) for p in (self.base, self.delta)]

    def _counts(self, keys: np.ndarray, parts: list[tuple[Postings, np.ndarray, np.ndarray]]) -> Statistics:
        df = sum(end - start for _, start, end in parts)
        dead_df, dead_documents, dead_length = self._dead_statistics
        if dead_documents:
            at = np.minimum(np.searchsorted(self.base.keys, keys), len(self.base.keys) - 1)
            df = df - np.where(self.base.keys[at] == keys, dead_df[at], 0)
        return Statistics(keys, np.asarray(df, np.int64), self.base.documents + self.delta.documents - dead_documents,
                          self.base.total_length + self.delta.total_length - dead_length)

    def _statistics(self, keys: np.ndarray, given: Statistics | None
                    ) -> tuple[np.ndarray, float, list[tuple[Postings, np.ndarray, np.ndarray]]]:
        """Each key's idf and the mean length, over the live documents (or ``given``'s counts,
        for ``keys``), and where each part holds each key's postings."""
        parts = self._parts(keys)
        counts = self._counts(keys, parts) if given is None else given.checked(keys)
        return counts.idf, counts.mean_length, parts

    def scores(self, text: str, rows: np.ndarray, statistics: Statistics | None = None) -> np.ndarray:
        """The exact BM25 of ``text`` for each of ``rows`` (with ``statistics``' counts if given)."""
        keys = query_keys(text)
        return self._scores(keys, *self._statistics(keys, statistics), np.asarray(rows, np.int64))

    @staticmethod
    def _scores(keys: np.ndarray, idf: np.ndarray, mean_length: float, parts: list, rows: np.ndarray) -> np.ndarray:
        """Each row's BM25 from its own forward entries: a row's terms are few, the postings of a
        common query key are hundreds of thousands."""
        out = np.zeros(len(rows))
        for part, starts, ends in parts:
            inside = np.flatnonzero((rows >= part.first_row) & (rows < part.first_row + len(part.lengths)))
            held = ends > starts
            if not len(inside) or not held.any():
                continue
            mine = rows[inside] - part.first_row
            forward_starts, forward = part.by_row
            first, end = forward_starts[mine], forward_starts[mine + 1]
            # a take of the packed entries as three uint16 is ~6× faster than indexing the records
            entries = np.take(np.asarray(forward).view("<u2").reshape(-1, 3), _ranges(first, end), axis=0)
            terms_ = entries[:, 0].astype(np.int64) | (entries[:, 1].astype(np.int64) << 16)
            weight = _scratch("idf", len(part.keys))  # each key's idf where the query holds it, else 0
            held_at = np.searchsorted(part.keys, keys[held])
            weight[held_at] = idf[held]
            try:
                w = weight[np.minimum(terms_, len(weight) - 1)]  # a damaged entry must not raise here
            finally:
                weight[held_at] = 0
            hit = np.flatnonzero(w)
            owner = np.repeat(np.arange(len(mine)), end - first)[hit]
            tf = entries[hit, 2].astype(np.float64)
            norm = K1 * (1 - B + B * np.asarray(part.lengths)[mine] / mean_length)
            out[inside] = np.bincount(owner, w[hit] * tf / (tf + norm[owner]), len(mine))
        return out

    def top(self, text: str, n: int, selected: np.ndarray | None = None,
            statistics: Statistics | None = None) -> tuple[np.ndarray, np.ndarray]:
        """About the ``n`` rows with the highest BM25 for ``text`` and every row tied with the
        ``n``-th (only rows in ``selected``, sorted, if given; only rows with a term in common),
        best first by their exact BM25, equal scores by row; and those scores. ``statistics``:
        the counts to score by (several indexes' summed), else this index's own.

        Like FAISS's candidates, approximate where it must be to stay fast: a key held by more
        than ``HEAD`` documents is read by its ``HEAD`` best postings only (a character, not at
        all when the query has a bigram), and the best ``RESCORED × n`` rows by what was read
        are scored exactly. A key's best postings are its shortest documents, so what is missed
        is a long document that holds only common terms; ``bench/hybrid.py`` measures the
        recall against an exhaustive BM25."""
        keys = query_keys(text)
        if not len(keys) or n <= 0:
            return np.empty(0, np.int64), np.empty(0)
        idf, mean_length, parts = self._statistics(keys, statistics)
        if selected is not None and len(selected) <= EXACT_ROWS:
            rows = np.asarray(selected, np.int64)
            exact = self._scores(keys, idf, mean_length, parts, rows)
            return _ranked(rows[exact > 0], exact[exact > 0], n)
        read = _scratch("read", self.rows)  # what the postings read give each row; > 0: a candidate
        try:
            rows, partial = self._read(keys, idf, mean_length, parts, read)
            weights = read[rows]
        except BaseException:
            read[:] = 0  # never leave a query's sums to the next
            raise
        read[rows] = 0
        if selected is not None:
            inside = np.isin(rows, selected)
            rows, weights = rows[inside], weights[inside]
        if not partial:  # every posting of every key was read: what was read is the exact BM25 (the same sums)
            return _ranked(rows, weights, n)
        if len(rows) > RESCORED * n:
            rows = rows[np.argpartition(-weights, RESCORED * n - 1)[: RESCORED * n]]
        exact = self._scores(keys, idf, mean_length, parts, rows)
        return _ranked(rows, exact, n)


    @staticmethod
    def _read(keys: np.ndarray, idf: np.ndarray, mean_length: float, parts: list,
              read: np.ndarray) -> tuple[np.ndarray, bool]:
        """Adds each key's postings (a long key's ``HEAD`` best; a long character's none when the
        query has a bigram held anywhere) into ``read``; returns the rows touched, ascending,
        and whether a key was read in part or not at all. Every key's postings are gathered at
        once, added with one scatter and made distinct with one sort: a few numpy calls a key
        cost more than the reading itself."""
        touched, weights = [], []
        partial = False
        unigram = (keys & _UNIGRAM) == _UNIGRAM
        skip_characters = any(((ends > starts) & ~unigram).any() for _, starts, ends in parts)
        for part, starts, ends in parts:
            present = np.flatnonzero(ends > starts)
            i = np.searchsorted(part.keys, keys[present])
            head_first, head_end = np.asarray(part.head_starts)[i], np.asarray(part.head_starts)[i + 1]
            long = head_end > head_first  # a long key: its best postings
            if long.any():
                partial = True
                if skip_characters:  # see HEAD
                    unread = long & unigram[present]
                    present, head_first, head_end, long = (present[~unread], head_first[~unread],
                                                           head_end[~unread], long[~unread])
                heads = np.take(np.asarray(part.heads).view("<i4").reshape(-1, 2),
                                _ranges(head_first[long], head_end[long]), axis=0)
                touched.append(heads[:, 0].astype(np.int64))
                weights.append(np.repeat(idf[present[long]], (head_end - head_first)[long])
                               * heads[:, 1].copy().view("<f4"))
            short = present[~long]
            at = _ranges(starts[short], ends[short])
            r = part.rows[at].astype(np.int64)  # distinct within a key (indexing: a take would copy strided columns)
            tf = part.tfs[at].astype(np.float64)
            norm = K1 * (1 - B + B * np.asarray(part.lengths)[r - part.first_row] / mean_length)
            touched.append(r)
            weights.append(np.repeat(idf[short], ends[short] - starts[short]) * tf / (tf + norm))
        rows = np.concatenate(touched)
        np.add.at(read, rows, np.concatenate(weights))
        rows.sort()
        return rows[np.append(True, rows[1:] != rows[:-1])] if len(rows) else rows, partial


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The positions ``starts[0]:ends[0]``, then ``starts[1]:ends[1]``, … as one array."""
    count = ends - starts
    return np.repeat(starts - np.cumsum(count) + count, count) + np.arange(int(count.sum()))


_thread = threading.local()


def _scratch(name: str, size: int) -> np.ndarray:
    """A zeroed float64 array of ``size`` for this thread, kept between queries: a fresh one per
    query costs a page fault for every 512 entries it touches (~2 ms for the rows of 1M
    documents), and its size follows the index, not the query. Its user zeroes what it set."""
    arrays = _thread.__dict__.setdefault("arrays", {})
    if name not in arrays or len(arrays[name]) < size:
        arrays[name] = np.zeros(size)
    return arrays[name][:size]


def _ranked(rows: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best rows and every row tied with the ``n``-th, best first, equal scores by row."""
    order = np.lexsort((rows, -scores))
    if len(order) > n:
        order = order[: np.searchsorted(-scores[order], -scores[order[n - 1]], side="right")]
    return rows[order], scores[order]
