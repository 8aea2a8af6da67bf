"""Cross-validation folds: one normalised form for every ``cv`` argument."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

Folds = list[tuple[np.ndarray, np.ndarray]]

MIN_TEST_SAMPLES = 2
MIN_TRAIN_SAMPLES = 2


def contiguous_folds(n_samples: int, n_folds: int) -> Folds:
    """K contiguous folds without shuffling (as scikit-learn ``KFold(shuffle=False)``).

    The first ``n_samples % n_folds`` folds hold one sample more than the others.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"cv must be at least 2 folds, got {n_folds!r}.")
    if n_folds > n_samples:
        raise ValueError(
            f"cv={n_folds} folds need at least {n_folds} samples, got n_samples = {n_samples}; "
            "use fewer folds or more samples."
        )
    sizes = np.full(n_folds, n_samples // n_folds)
    sizes[: n_samples % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    indices = np.arange(n_samples)
    return [
        (np.concatenate([indices[:start], indices[stop:]]), indices[start:stop])
        for start, stop in itertools.pairwise(bounds)
    ]


def make_folds(cv: Any, n_samples: int) -> Folds:
    """Normalise ``cv`` into a list of (train_indices, test_indices).

    Args:
      cv: an int (contiguous K folds, no shuffling), a scikit-learn splitter (anything with
        ``split``), or an iterable of (train, test) index arrays (e.g. leave-one-run-out).
      n_samples: number of samples the indices refer to.

    Returns:
      List of (train, test) pairs of int64 index arrays.

    Raises:
      ValueError: fewer than 2 folds, indices out of range, overlapping train and test, or a
        fold with fewer than 2 test or train samples (its score would be undefined).
    """
    if isinstance(cv, (str, bytes, float, bool)) or cv is None:
        raise TypeError(
            "cv must be an int, a scikit-learn splitter or a list of (train, test) index "
            f"arrays, got {cv!r}."
        )
    if isinstance(cv, (int, np.integer)):
        folds = contiguous_folds(n_samples, int(cv))
    elif hasattr(cv, "split"):
        folds = list(cv.split(np.zeros((n_samples, 1))))
    else:
        try:
            folds = [(train, test) for train, test in cv]
        except (TypeError, ValueError):
            raise TypeError(
                "cv must be an int, a scikit-learn splitter or a list of (train, test) index "
                f"arrays, got {type(cv).__name__}."
            ) from None
    if len(folds) < 2:
        raise ValueError(f"cv must give at least 2 folds, got {len(folds)}.")
    checked = []
    for number, (train, test) in enumerate(folds):
        train = _as_indices(train, n_samples, f"fold {number} train")
        test = _as_indices(test, n_samples, f"fold {number} test")
        if test.size < MIN_TEST_SAMPLES or train.size < MIN_TRAIN_SAMPLES:
            raise ValueError(
                f"fold {number} is too small ({train.size} train, {test.size} test samples); "
                f"each fold needs at least {MIN_TRAIN_SAMPLES} train and {MIN_TEST_SAMPLES} "
                "test samples for a held-out score; use fewer folds."
            )
        if np.intersect1d(train, test).size:
            raise ValueError(f"fold {number} uses some samples both for training and testing.")
        checked.append((train, test))
    return checked


def _as_indices(indices: Any, n_samples: int, name: str) -> np.ndarray:
    values = np.asarray(indices)
    if values.dtype == np.bool_:
        if values.shape != (n_samples,):
            raise ValueError(
                f"{name} is a boolean mask of shape {values.shape}, expected ({n_samples},)."
            )
        return np.flatnonzero(values)
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be a 1-D array of integer sample indices.")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= n_samples):
        raise ValueError(f"{name} has indices outside [0, {n_samples}).")
    return values
