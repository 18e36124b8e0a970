"""Text → character ids.

Every character is a token (no lower-casing, no word segmentation): the MaLSTM recipe
works on characters, which suits Chinese customer questions and needs no tokenizer.

Rules, applied identically to training pairs, documents and queries:

* ``normalize`` strips surrounding whitespace and drops U+FEFF (byte-order marks that
  leak into the middle of real files; they are never content).
* id 0 is padding (masked by the encoder), id 1 is the out-of-vocabulary id: a character
  that was not seen in the training pairs maps to 1, so it still occupies a time step and
  is encoded with the OOV vector (the mean of all character vectors, see ``vectors.py``)
  instead of being silently dropped.
* Texts longer than ``max_length`` characters keep their first ``max_length`` characters.
* A vocabulary never admits a character that normalisation removes on its own (spaces,
  U+3000, U+2006, U+FEFF: ``is_blank(c)``). Between words such a character is read as the
  unknown character. A model saved before this rule may hold some: they keep their ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

PAD_ID = 0
OOV_ID = 1
RESERVED = 2


def normalize(text: str) -> str:
    """The canonical form of a text: no BOM characters, no surrounding whitespace."""
    return text.replace("\ufeff", "").strip()


def is_blank(text: object) -> bool:
    """Whether ``text`` is no text to encode: not a string, or nothing left once normalized."""
    return not isinstance(text, str) or not normalize(text)


def char_counts(texts: Iterable[str]) -> Counter:
    """How often each character a vocabulary may hold occurs in ``texts`` (normalised)."""
    counts = Counter(c for t in texts for c in normalize(t))
    for c in [c for c in counts if is_blank(c)]:
        del counts[c]
    return counts


def first_blank(texts: Iterable[object]) -> int | None:
    """The position of the first blank text (``is_blank``), or None."""
    return next((i for i, t in enumerate(texts) if is_blank(t)), None)


class Vocabulary:
    """Characters ↔ ids, fitted on training sentences."""

    def __init__(self, chars: Sequence[str]):
        self.chars: list[str] = list(chars)
        self._ids = {c: i + RESERVED for i, c in enumerate(self.chars)}
        if len(self._ids) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("a vocabulary holds distinct single characters")

    @classmethod
    def fit(cls, texts: Iterable[str]) -> Vocabulary:
        """Most frequent characters first (ties by code point), so ids are deterministic."""
        counts = char_counts(texts)
        return cls(sorted(counts, key=lambda c: (-counts[c], c)))

    def id_of(self, char: str) -> int:
        """The id of one vocabulary character (KeyError for another): unlike ``ids``, no
        normalisation, which would turn a space held by an older vocabulary into nothing."""
        return self._ids[char]

    def __len__(self) -> int:
        """Number of ids, padding and OOV included (the embedding matrix's row count)."""
        return len(self.chars) + RESERVED

    def __contains__(self, char: object) -> bool:
        return char in self._ids

    def ids(self, text: str, max_length: int) -> list[int]:
        return [self._ids.get(c, OOV_ID) for c in normalize(text)[:max_length]]


def pad(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """A (len(rows), longest) int32 matrix of ids, right-padded with PAD_ID."""
    out = np.zeros((len(rows), max((len(r) for r in rows), default=0)), dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def length_sorted_batches(rows: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Indices of ``rows`` in batches of similar length (a stable sort by length), so that
    padding each batch to its own longest row wastes little."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
