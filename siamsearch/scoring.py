"""The similarity of the product: exp(-Σ|a - b|), exp of the negative Manhattan distance.

It is the Siamese head's formula (``model.ManhattanSimilarity``) in NumPy, computed in
float64 from the float32 encodings, so query scores match the Keras model within 1e-5.
Kept free of TensorFlow so the query path can use it without importing Keras.
"""

from __future__ import annotations

import numpy as np


def exp_neg_l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """exp(-Σ|a - b|) over the last axis, broadcasting (e.g. one query against many rows)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.exp(-np.abs(diff).sum(axis=-1))
