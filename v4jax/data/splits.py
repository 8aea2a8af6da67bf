"""The original study's train / test / validation split of vim-1, and K-fold helpers.

Kay et al. 2008 fit on the 1,750 training images and report prediction accuracy on the 120
validation images. Following the study's practice of holding out the end of the training
set for model selection, ``study_split`` keeps the last 250 training images as a test set and
fits on the first 1,500.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from v4jax._validation import check_positive_int
from v4jax.solvers.engine.folds import Folds, contiguous_folds

STUDY_TEST_SIZE = 250


@dataclasses.dataclass(frozen=True)
class Vim1Split:
    """Index arrays (int64) of one split.

    Attributes:
      fit: indices into the training images used for fitting (first n_train - n_test).
      test: indices into the training images held out for testing / model selection.
      validation: indices into the validation images (all of them).
    """

    fit: np.ndarray
    test: np.ndarray
    validation: np.ndarray


def study_split(n_train: int = 1750, n_val: int = 120, n_test: int = STUDY_TEST_SIZE) -> Vim1Split:
    """The study's split: fit on the first ``n_train - n_test`` training images, test on the
    last ``n_test``, and keep the ``n_val`` validation images apart.

    Example:
      >>> split = study_split()
      >>> split.fit.size, split.test.size, split.validation.size
      (1500, 250, 120)
    """
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val")
    n_test = check_positive_int(n_test, "n_test")
    if n_test >= n_train:
        raise ValueError(
            f"n_test={n_test} must be smaller than n_train={n_train} so that images remain "
            "for fitting."
        )
    return Vim1Split(
        fit=np.arange(n_train - n_test, dtype=np.int64),
        test=np.arange(n_train - n_test, n_train, dtype=np.int64),
        validation=np.arange(n_val, dtype=np.int64),
    )


def fit_folds(n_folds: int, split: Vim1Split | None = None) -> Folds:
    """Contiguous K folds over the fitting images of ``split`` (default ``study_split()``).

    Returns:
      List of (train, test) int64 index arrays into the training images (not into
      ``split.fit``): each fold's indices are taken from ``split.fit``.
    """
    split = study_split() if split is None else split
    return [
        (split.fit[train], split.fit[test])
        for train, test in contiguous_folds(split.fit.size, n_folds)
    ]
