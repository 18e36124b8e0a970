"""The match probability: the chance that a pair means the same, read off its exact score.

The score, exp(-L1), is the contract but not a probability: the margin objective puts a
confident match at 0.015. A logistic fit on the L1 distance,
``match = 1 / (1 + exp(-(intercept + slope · L1)))``, made on labelled pairs the model did
not train on, turns it into one. It falls as the score falls, so it never changes a ranking.

``train`` fits it on the validation pairs when it ends; without validation pairs it fits it
on (a sample of) the training pairs and records that in ``fitted_on``: expect it to be
over-confident then. ``Encoder.calibrate`` (``siamsearch calibrate``) refits it on other
pairs, e.g. from the domain it will serve, without retraining. ``reliability`` is the check:
on held-out pairs, each bin's mean predicted match should equal its share of matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError

FIT_SAMPLE = 20_000  # pairs a fit uses at most (a two-parameter fit is settled long before)
MIN_L1, MAX_L1 = 0.0, 745.0  # exp(-745) is the smallest positive double: a score of 0 is this far


@dataclass(frozen=True)
class Calibration:
    """``match = expit(intercept + slope · L1)``, fitted on ``fitted_on`` (file, pairs, held_out)."""

    intercept: float
    slope: float
    fitted_on: dict

    def __call__(self, scores: float | np.ndarray) -> np.ndarray:
        """The match probability of exact scores (exp(-L1)), elementwise."""
        distance = -np.log(np.clip(np.asarray(scores, dtype=np.float64), np.exp(-MAX_L1), 1.0))
        return np.exp(-np.logaddexp(0.0, -(self.intercept + self.slope * distance)))  # the logistic, stably

    def to_dict(self) -> dict:
        return {"method": "logistic on L1", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Raises ValueError for anything but a finite, decreasing logistic fit."""
        if not isinstance(d, dict) or d.get("method") != "logistic on L1":
            raise ValueError("unknown calibration method")
        intercept, slope = d.get("intercept"), d.get("slope")
        for value in (intercept, slope):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"calibration coefficient {value!r} is not a finite number")
        if slope > 0:
            raise ValueError("a calibration must not rise with the distance")
        return cls(float(intercept), float(slope), dict(d.get("fitted_on") or {}))


def fit(scores: np.ndarray, labels: Sequence[int], fitted_on: dict, seed: int = 0) -> Calibration:
    """Fit the logistic curve to pairs' exact scores and 0/1 labels (both must occur)."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise InputError("calibration needs pairs of both kinds, matches (1) and non-matches (0)",
                         argument="pairs")
    if len(labels) > FIT_SAMPLE:
        keep = np.random.default_rng(seed).choice(len(labels), FIT_SAMPLE, replace=False)
        scores, labels = np.asarray(scores)[keep], labels[keep]
    distance = -np.log(np.clip(np.asarray(scores, dtype=np.float64), np.exp(-MAX_L1), 1.0))
    model = LogisticRegression(C=1e6, max_iter=1000).fit(distance[:, None], labels)
    return Calibration(float(model.intercept_[0]), float(min(0.0, model.coef_[0, 0])),
                       {**fitted_on, "n": int(min(len(labels), FIT_SAMPLE))})


def reliability(matches: np.ndarray, labels: Sequence[int], bins: int = 10) -> list[dict]:
    """Per equal-width bin of predicted match: pairs, mean predicted match, share of matches."""
    matches, labels = np.asarray(matches, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    which = np.minimum((matches * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            table.append({"from": b / bins, "to": (b + 1) / bins, "pairs": int(inside.sum()),
                          "predicted": float(matches[inside].mean()), "observed": float(labels[inside].mean())})
    return table


def expected_calibration_error(table: list[dict]) -> float:
    """The pairs-weighted mean gap between predicted and observed, over a ``reliability`` table."""
    total = sum(row["pairs"] for row in table)
    return float(sum(row["pairs"] * abs(row["predicted"] - row["observed"]) for row in table) / total) if total else 0.0


def report(calibration: Calibration, scores: np.ndarray, labels: Sequence[int], bins: int = 10) -> dict:
    """How well ``calibration`` fits these labelled pairs: its fit's origin, the expected
    calibration error and the reliability table (``evaluate`` shows it)."""
    table = reliability(calibration(scores), labels, bins)
    return {"fitted_on": calibration.fitted_on, "ece": expected_calibration_error(table), "reliability": table}
