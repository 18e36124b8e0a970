"""Pair-classification metrics: how well exp(-L1) scores separate same-meaning pairs."""

from __future__ import annotations

import numpy as np


def pair_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall and F1 of ``score >= threshold`` against 0/1 labels."""
    predicted = np.asarray(scores) >= threshold
    actual = np.asarray(labels) >= 0.5
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "n": int(actual.size),
        "threshold": threshold,
        "accuracy": float(np.mean(predicted == actual)) if actual.size else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }
