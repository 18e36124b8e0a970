"""Benchmark corpora: the real sentences of ../shared/data, and generated ones like them.

BQ has about 35,000 distinct sentences; the index benchmarks need up to 10 million. The
extra sentences come from a character trigram model fitted on every distinct sentence of
../shared/data (BQ, AFQMC, ATEC, PAWS-X, STS-B): each sentence starts from the
beginning-of-sentence context and draws the next character, or the end, with the
frequencies seen after the previous two characters. Generated text therefore keeps the
real character distribution, the local character order and the length distribution
(short customer questions, median ~12 characters), which are what the encoder's speed and
the geometry of its vectors depend on. It is nonsense at the sentence level; that does
not matter for speed, memory or recall against an exact search.

Generation is seeded and vectorised (all sentences advance one character per NumPy step),
runs at benchmark time, and its output is never written into the repository: the data's
licences are research-only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# (file, zero-based columns holding sentences, header lines to skip)
SOURCES = [
    ("bq/train.tsv", (0, 1), 0), ("bq/dev.tsv", (0, 1), 0), ("bq/test.tsv", (0, 1), 0),
    ("afqmc/train.txt", (0, 1), 0), ("afqmc/dev.txt", (0, 1), 0), ("afqmc/test.txt", (0, 1), 0),
    ("atec/atec_nlp_sim_train.csv", (1, 2), 0),
    ("pawsx_zh/dev_2k.tsv", (1, 2), 1), ("pawsx_zh/test_2k.tsv", (1, 2), 1),
    ("chinese_sts_b/sts-b-train.txt", (0, 1), 0), ("chinese_sts_b/sts-b-dev.txt", (0, 1), 0),
    ("chinese_sts_b/sts-b-test.txt", (0, 1), 0),
]
MAX_CHARS = 100
SAMPLE_CHUNK = 200_000


def real_sentences(shared: Path = SHARED) -> list[str]:
    """Every distinct sentence of ../shared/data, in first-seen order."""
    if not (shared / "bq" / "train.tsv").is_file():
        raise SystemExit(f"the benchmarks need the research data in {shared} (not shipped with siamsearch)")
    seen: dict[str, None] = {}
    for name, columns, header in SOURCES:
        lines = (shared / name).read_text(encoding="utf-8-sig").splitlines()[header:]
        for line in lines:
            fields = line.rstrip("\r").split("\t")
            for c in columns:
                if c < len(fields) and fields[c].strip():
                    seen.setdefault(fields[c].strip(), None)
    return list(seen)


class TrigramSampler:
    """Character trigram model with end-of-sentence, sampled many sentences at a time."""

    def __init__(self, sentences: list[str]):
        chars = sorted({c for s in sentences for c in s})
        self.chars = np.array(["", "", *chars])  # 0 = boundary (start / end), 1 unused
        code = {c: i + 2 for i, c in enumerate(chars)}
        self.base = len(self.chars)
        keys, nexts = [], []
        for s in sentences:
            ids = [0, 0, *(code[c] for c in s[:MAX_CHARS]), 0]
            for a, b, c in zip(ids, ids[1:], ids[2:]):
                keys.append(a * self.base + b)
                nexts.append(c)
        keys, nexts = np.array(keys, np.int64), np.array(nexts, np.int64)
        pairs, counts = np.unique(keys * self.base + nexts, return_counts=True)
        context, following = pairs // self.base, pairs % self.base
        self.contexts, starts = np.unique(context, return_index=True)
        totals = np.add.reduceat(counts, starts)
        segment = np.repeat(np.arange(len(self.contexts)), np.diff(np.append(starts, len(counts))))
        cumulative = np.cumsum(counts) - np.repeat(np.cumsum(totals) - totals, np.diff(np.append(starts, len(counts))))
        # segment i's cumulative probabilities lie in (i, i + 1]: one searchsorted samples every context at once
        self.table = segment + cumulative / totals[segment]
        self.following = following

    def sample(self, n: int, seed: int) -> list[str]:
        """``n`` sentences, generated ``SAMPLE_CHUNK`` at a time so memory stays small."""
        rng = np.random.default_rng(seed)
        out: list[str] = []
        while len(out) < n:
            out += self._sample(min(SAMPLE_CHUNK, n - len(out)), rng)
        return out

    def _sample(self, n: int, rng: np.random.Generator) -> list[str]:
        out = np.zeros((n, MAX_CHARS), np.int32)
        prev2, prev1 = np.zeros(n, np.int64), np.zeros(n, np.int64)
        active = np.arange(n)
        for t in range(MAX_CHARS):
            ctx = np.searchsorted(self.contexts, prev2[active] * self.base + prev1[active])
            draw = np.searchsorted(self.table, ctx + 1 - rng.random(len(active)))  # u in (0, 1]
            nxt = self.following[draw]
            out[active, t] = nxt
            keep = nxt != 0
            prev2[active], prev1[active] = prev1[active], nxt
            active = active[keep]
            if not len(active):
                break
        return ["".join(self.chars[row[: np.argmin(np.append(row, 0) != 0)]]) for row in out]


def corpus(n: int, seed: int = 0, real: list[str] | None = None) -> list[str]:
    """``n`` distinct sentences: the real ones first, then generated ones (seeded)."""
    real = real_sentences() if real is None else real
    texts = dict.fromkeys(real[:n])
    sampler = TrigramSampler(real)
    round_ = 0
    while len(texts) < n:
        want = int((n - len(texts)) * 1.1) + 100
        texts.update(dict.fromkeys(s for s in sampler.sample(want, seed * 1000 + round_) if s.strip()))
        round_ += 1
    return list(texts)[:n]
