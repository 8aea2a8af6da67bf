"""The study's vim-1 split and K folds over the fitting images."""

from __future__ import annotations

import numpy as np
import pytest

from v4jax.data import fit_folds, study_split


def test_study_split_holds_out_the_last_250_training_images():
    split = study_split()
    np.testing.assert_array_equal(split.fit, np.arange(1500))
    np.testing.assert_array_equal(split.test, np.arange(1500, 1750))
    np.testing.assert_array_equal(split.validation, np.arange(120))
    assert split.fit.dtype == np.int64


def test_small_split_and_bad_sizes():
    split = study_split(n_train=30, n_val=5, n_test=10)
    assert (split.fit.size, split.test.size, split.validation.size) == (20, 10, 5)
    with pytest.raises(ValueError, match="smaller than n_train"):
        study_split(n_train=250)
    with pytest.raises(ValueError, match="n_val"):
        study_split(n_val=0)


def test_fit_folds_partition_the_fitting_images_only():
    folds = fit_folds(5)
    assert len(folds) == 5
    tests = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(tests, np.arange(1500))
    for train, test in folds:
        assert test.size == 300 and np.intersect1d(train, test).size == 0
        assert np.union1d(train, test).size == 1500
        assert train.max() < 1500
    small = fit_folds(3, study_split(n_train=40, n_val=4, n_test=10))
    np.testing.assert_array_equal(small[1][1], np.arange(10, 20))
