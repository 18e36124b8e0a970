"""Training batches: pairs as rows into their distinct sentences' ids, bucketed by length.

Batches are bucketed by length (pairs sorted by their longer side, ties re-drawn every
epoch, batch order shuffled), so a batch is padded only to its own longest sentence instead
of the corpus maximum, and a sentence that occurs several times in a batch is encoded once.
NumPy only: the training step (``trainer.py``) turns a batch into tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .data import Pairs, paraphrase_groups
from .text import OOV_ID, Vocabulary, pad


@dataclass(frozen=True)
class PairIds:
    """Pairs as rows into their distinct sentences' ids, with what batching sorts by, and
    each paraphrase group's hard negatives (empty unless asked for)."""

    ids: list[list[int]]
    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    """Each distinct sentence's paraphrase group (``data.paraphrase_groups``)."""
    lengths: np.ndarray
    """Each pair's longer side's length: what a batch of it is padded to."""
    longer_side: np.ndarray
    hard_keys: np.ndarray
    """Each paraphrase group's hard negatives (empty unless asked for), sorted by the key
    group << 32 | length, so that a group's negatives up to a length are one range of it ..."""
    hard_sentences: np.ndarray
    """... and the sentences themselves, in the same order."""

    @classmethod
    def of(cls, pairs: Pairs, vocab: Vocabulary, max_length: int, negatives: Pairs | None = None) -> PairIds:
        """``negatives``: labelled pairs whose negative pairs give each group its hard negatives:
        the sentences labelled "not the same" as any member of the group. Their sentences come
        after ``pairs``' own, so that ``pairs``' rows and batches are the same as without them."""
        texts, left, right = pairs.distinct()
        groups = paraphrase_groups(texts, pairs)
        negative = [] if negatives is None else [
            (x, y) for x, y, positive in zip(negatives.left, negatives.right, negatives.positive) if not positive]
        where = {t: i for i, t in enumerate(texts)}
        for t in dict.fromkeys(t for pair in negative for t in pair):
            if t not in where:
                where[t] = len(texts)
                texts.append(t)
        groups = np.concatenate([groups, groups.max(initial=-1) + 1 + np.arange(len(texts) - len(groups))])
        ids = [vocab.ids(t, max_length) for t in texts]
        sizes = np.array([len(r) for r in ids])
        ends = np.array([[where[x], where[y]] for x, y in negative], np.int64).reshape(-1, 2)
        member, other = np.concatenate([ends, ends[:, ::-1]]).T
        keep = groups[member] != groups[other]  # a negative inside a group contradicts its positives: skip it
        keys, sentences = np.unique(np.stack([groups[member[keep]] << 32 | sizes[other[keep]], other[keep]]), axis=1)
        return cls(ids, left, right, pairs.labels, groups, np.maximum(sizes[left], sizes[right]),
                   np.where(sizes[left] >= sizes[right], left, right), keys, sentences)

    def draw_hard_negatives(self, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each pair of ``b``, one hard negative of its group no longer than the batch's longest
        sentence (so the batch is padded no further), drawn at random; none where none is."""
        group = self.groups[self.left[b]].astype(np.int64) << 32
        start = np.searchsorted(self.hard_keys, group)
        count = np.searchsorted(self.hard_keys, group | self.lengths[b].max(), side="right") - start
        has = count > 0
        return self.hard_sentences[start[has] + (rng.random(int(has.sum())) * count[has]).astype(np.int64)]

    def batch(self, b: np.ndarray, hard: np.ndarray | None = None) -> tuple:
        """Pairs ``b`` (and ``hard`` negative sentences) as ((distinct sentences' ids, left rows,
        right rows, left groups, right groups, hard rows, hard groups), labels)."""
        hard = np.zeros(0, np.int64) if hard is None else hard
        distinct, rows = np.unique(np.concatenate([self.left[b], self.right[b], hard]), return_inverse=True)
        rows = rows.astype(np.int32)
        n = len(b)
        return ((pad([self.ids[i] for i in distinct]), rows[:n], rows[n : 2 * n],
                 self.groups[self.left[b]], self.groups[self.right[b]], rows[2 * n :], self.groups[hard]),
                self.labels[b])


def epoch_batches(pairs: PairIds, batch_size: int, rng: np.random.Generator,
                   group_shared: bool = False, hard_negatives: int = 0, char_mask: float = 0.0) -> Iterator[tuple]:
    """One epoch of length-bucketed batches (``PairIds.batch``), in a new random order each call.

    A sentence occurring several times in a batch is encoded once. With ``group_shared``,
    pairs of the same length that share their longer sentence are put in the same batch, so
    more sentences repeat. On BQ's seed split, a random same-length order encodes 1.88M
    padded steps per epoch, 1.43M with ``group_shared``, 2.42M without removing repeats
    (and 16M padding every sentence to the longest, 100).
    Only for the pair loss: the in-batch loss would lose those pairs as negatives.
    With ``hard_negatives`` = k, each pair brings k hard negatives of its group
    (``PairIds.draw_hard_negatives``), drawn anew each epoch.
    (Splitting a batch's sentences into a shorter and a longer half, each padded to its own
    length, saves another 1.2× of padded steps but measured slower: twice the LSTM calls.)
    """
    lengths = pairs.lengths
    if group_shared:  # within a length, pairs sharing their longer sentence, in a new random order
        order = np.lexsort((rng.random(len(lengths)), rng.permutation(len(pairs.ids))[pairs.longer_side], lengths))
    else:
        order = np.lexsort((rng.random(len(lengths)), lengths))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    for b in chunks:
        batch = pairs.batch(b, np.concatenate([pairs.draw_hard_negatives(b, rng) for _ in range(hard_negatives)])
                            if hard_negatives else None)
        if char_mask:
            ids = batch[0][0]
            ids[(ids > 0) & (rng.random(ids.shape) < char_mask)] = OOV_ID
        yield batch


class DistillBatch(NamedTuple):
    """A distillation batch: the distinct sentences' padded ids and the teacher's target
    distribution over the batch for each of them (``teacher_targets``)."""

    ids: np.ndarray
    targets: np.ndarray


def teacher_targets(vectors: np.ndarray, temperature: float) -> np.ndarray:
    """Row i: softmax over j ≠ i of cosine(t_i, t_j) / temperature, from unit-length teacher
    vectors; the diagonal is 0 (a sentence is not its own neighbour)."""
    logits = (vectors @ vectors.T).astype(np.float64) / temperature
    np.fill_diagonal(logits, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class DistillIds:
    """Sentences to distil as ids, their teacher vectors and each one's nearest neighbours by
    the teacher (``teacher.nearest_neighbours``)."""

    ids: list[list[int]]
    teacher: np.ndarray
    neighbours: np.ndarray

    def batches(self, batch_size: int, rng: np.random.Generator, temperature: float,
                char_mask: float = 0.0) -> Iterator[DistillBatch]:
        """One epoch: every sentence is an anchor once, beside one of its teacher neighbours
        drawn at random, so that each batch holds pairs the teacher calls close as well as
        unrelated sentences. Pairs are bucketed by their longer sentence (ties re-drawn) and the
        batch order shuffled: bucketing by the anchor alone padded 2.5× more on the general
        model's data, since a neighbour can be of any length."""
        n, k = len(self.ids), self.neighbours.shape[1]
        lengths = np.array([len(r) for r in self.ids])
        partners = self.neighbours[np.arange(n), rng.integers(0, k, n)] if k else np.zeros(0, np.int64)
        longer = np.maximum(lengths, lengths[partners]) if k else lengths
        order = np.lexsort((rng.random(n), longer))
        half = max(1, batch_size // 2)
        chunks = [order[i : i + half] for i in range(0, n, half)]
        rng.shuffle(chunks)
        for anchors in chunks:
            rows = np.unique(np.concatenate([anchors, partners[anchors]])) if k else anchors
            ids = pad([self.ids[i] for i in rows])
            if char_mask:
                ids[(ids > 0) & (rng.random(ids.shape) < char_mask)] = OOV_ID
            yield DistillBatch(ids, teacher_targets(self.teacher[rows], temperature))

    def batch_count(self, batch_size: int) -> int:
        return -(-len(self.ids) // max(1, batch_size // 2))


def mixed_epoch(pair_batches: Iterator[tuple], pair_count: int, distill_batches: Iterator[DistillBatch],
                distill_count: int, rng: np.random.Generator) -> Iterator[tuple | DistillBatch]:
    """Pair batches and distillation batches interleaved in a random order, so that neither
    objective has the last word in an epoch."""
    kinds = np.concatenate([np.zeros(pair_count, bool), np.ones(distill_count, bool)])
    rng.shuffle(kinds)
    for distill in kinds:
        batch = next(distill_batches if distill else pair_batches, None)
        if batch is not None:
            yield batch
