"""How hybrid search orders its candidates: a fusion of the model's score and BM25.

Every candidate of a hybrid search (FAISS's and BM25's, ``query.py``) carries both exact
scores: ``score``, the Siamese model's exp(-L1), and ``lexical``, its BM25. A fusion turns
the two into ``rank_score``, what the hits are ordered by (ties by id); the scores
themselves are never changed.

``rrf``
    Reciprocal rank fusion (Cormack et al., 2009; Elasticsearch's default ``k``): each side
    ranks the candidates, and a candidate's ``rank_score`` is Σ 1 / (k + rank) over the sides
    that found it (BM25 finds only candidates with a term in common). Needs no fitting.
``weighted``
    ``weight × dense + (1 − weight) × lexical``, each side min-max normalised over the
    query's candidates (Weaviate's relative score fusion), with ``weight`` fitted on labelled
    pairs (``fit``). 1.0 is dense ranking, 0.0 lexical.

A new fusion is one class here with a ``name``, its settings as dataclass fields, and
``rank_scores``, and an entry in ``FUSIONS``, by which a model's config.json names it
(``fusion_from_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from .errors import ADD_LEXICAL, InputError

MODES = ("dense", "lexical", "hybrid")
"""What a search ranks by: the model's score, BM25 (``lexical.py``), or a fusion of both (``fusion.py``)."""


NO_LEXICAL_PART = ("needs a lexical part, and this index was written without one (by an older siamsearch); "
                   f"{ADD_LEXICAL}")
"""Why an index written before lexical parts existed answers dense searches only."""


def check_mode(mode: str, dense_only: str | None) -> None:
    """``dense_only``: why the index answers dense searches only (``SearchIndex.dense_only``; None: every mode)."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", argument="mode")
    if mode != "dense" and dense_only:
        raise InputError(f"a {mode} search {dense_only}", argument="mode")


@dataclass(frozen=True)
class Fusion:
    name: ClassVar[str]

    def rank_scores(self, dense: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        """One query's candidates' ``rank_score`` from their exact scores (higher ranks first)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The fusion and its settings in a few words, for tables: "rrf k=60", "weighted 0.7"."""
        return " ".join([self.name, *(f"{k}={v}" for k, v in asdict(self).items())])

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1 for the best; equal scores share the better rank, so the order of the input does not matter."""
    ordered = np.sort(scores)[::-1]
    return np.searchsorted(-ordered, -scores, side="left") + 1


@dataclass(frozen=True)
class Reciprocal(Fusion):
    name: ClassVar[str] = "rrf"
    k: int = 60

    def rank_scores(self, dense: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        found = lexical > 0
        out = 1.0 / (self.k + _ranks(dense))
        out[found] += 1.0 / (self.k + _ranks(lexical[found]))
        return out


def _normalised(scores: np.ndarray) -> np.ndarray:
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low) if high > low else (scores > 0).astype(np.float64)


@dataclass(frozen=True)
class Weighted(Fusion):
    name: ClassVar[str] = "weighted"
    weight: float = 0.5

    @property
    def label(self) -> str:
        return f"weighted {self.weight:g}"

    def rank_scores(self, dense: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        return self.weight * _normalised(dense) + (1 - self.weight) * _normalised(lexical)


FUSIONS: dict[str, type[Fusion]] = {f.name: f for f in (Reciprocal, Weighted)}
DEFAULT_FUSION = Reciprocal()
"""What a hybrid search uses when neither the call nor the model names a fusion."""


def fusion_from_dict(settings: dict) -> Fusion:
    """A fusion from its ``to_dict``; an InputError naming what is wrong."""
    settings = dict(settings)
    name = settings.pop("name", None)
    if name not in FUSIONS:
        raise InputError(f"unknown fusion {name!r}; choose one of {', '.join(FUSIONS)}", argument="fusion")
    try:
        fusion = FUSIONS[name](**settings)
    except TypeError as e:
        raise InputError(f"fusion {name!r}: {e}", argument="fusion") from None
    if isinstance(fusion, Weighted) and not 0 <= fusion.weight <= 1:
        raise InputError(f"a weighted fusion's weight is from 0 to 1, got {fusion.weight!r}", argument="fusion")
    if isinstance(fusion, Reciprocal) and not (isinstance(fusion.k, int) and fusion.k >= 1):
        raise InputError(f"reciprocal rank fusion's k is a whole number of at least 1, got {fusion.k!r}",
                         argument="fusion")
    return fusion
