"""Evaluation plots (``siamsearch evaluate --plot``): what the numbers of ``evaluation.py`` look like.

Pairs: the score distributions of positive and negative pairs with the decision threshold
(scores on a log axis: exp(-L1) spans orders of magnitude), and the ROC curve of the model and
of each baseline. Retrieval: recall@k for k = 1…100 of each system. matplotlib is an optional
extra (``siamsearch[plot]``); the PNG is written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .data import is_graded, is_positive
from .errors import InputError
from .storage import write_bytes_atomic

PLOT_EXTRA = "plot"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or opened
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(f"plots need matplotlib; install it with pip install 'siamsearch[{PLOT_EXTRA}]'",
                         argument="plot") from None
    return plt


def check_plot_path(path: str | Path) -> None:
    """Refuse, before any work, a plot that could not be written: matplotlib missing (naming
    the extra) or a file name that is not a .png."""
    _pyplot()
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"{path}: plots are written as PNG; name a .png file", path=path, argument="plot")


def _save(figure, path: str | Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(Path(path), buffer.getvalue())


def pair_plot(path: str | Path, scores: Mapping[str, np.ndarray], labels: np.ndarray, threshold: float,
              title: str = "") -> None:
    """Score distributions of the first system's positive and negative pairs with ``threshold``,
    and every system's ROC curve (``scores``: system name → a score per pair; binary labels)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    check_plot_path(path)
    plt = _pyplot()
    actual = is_positive(labels)
    if is_graded(labels) or actual.all() or not actual.any():
        raise InputError("plots of pairs need 0 and 1 labels, both of them", argument="plot")
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    name, first = next(iter(scores.items()))
    floor = max(float(np.min(first[first > 0])) if np.any(first > 0) else 1e-12, 1e-12)
    bins = np.geomspace(floor, max(float(first.max()), floor * 10), 50)
    left.hist(np.maximum(first[actual], floor), bins=bins, alpha=0.6, label=f"same meaning ({actual.sum():,})")
    left.hist(np.maximum(first[~actual], floor), bins=bins, alpha=0.6, label=f"different ({(~actual).sum():,})")
    left.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    left.set(xscale="log", xlabel=f"score exp(-L1), {name}", ylabel="pairs", title="Scores by gold label")
    left.legend()
    for system, values in scores.items():
        fpr, tpr, _ = roc_curve(actual, values)
        right.plot(fpr, tpr, label=f"{system} (AUC {roc_auc_score(actual, values):.3f})")
    right.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    right.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    right.legend(loc="lower right", fontsize=8)
    if title:
        figure.suptitle(title)
    _save(figure, path)
    plt.close(figure)


def recall_plot(path: str | Path, curves: Mapping[str, Sequence[float]], title: str = "") -> None:
    """recall@k for k = 1, 2, … of each system (``curves``: name → recall at k = 1 … len)."""
    check_plot_path(path)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    for system, curve in curves.items():
        axes.plot(np.arange(1, len(curve) + 1), curve, label=system)
    axes.set(xscale="log", xlabel="k", ylabel="recall@k (a relevant document in the top k)", ylim=(0, 1),
             title=title or "Retrieval: recall@k")
    axes.legend(loc="lower right", fontsize=8)
    _save(figure, path)
    plt.close(figure)
