"""Folds and per-voxel metrics against scikit-learn and numpy references."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import KFold, LeaveOneGroupOut

from v4jax import make_folds, pearson_columns, r2_columns, ridge_cv
from v4jax.metrics import SCORES, neg_mean_squared_error_columns, score_columns


@pytest.mark.parametrize("n_samples,n_folds", [(10, 3), (1750, 5), (23, 7)])
def test_int_cv_equals_sklearn_kfold_without_shuffling(n_samples, n_folds):
    ours = make_folds(n_folds, n_samples)
    theirs = list(KFold(n_folds).split(np.zeros((n_samples, 1))))
    assert len(ours) == len(theirs)
    for (train, test), (train_ref, test_ref) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(train, train_ref)
        np.testing.assert_array_equal(test, test_ref)


def test_leave_one_run_out_index_lists_are_kept():
    runs = np.repeat(np.arange(4), 5)
    folds = make_folds(list(LeaveOneGroupOut().split(runs, groups=runs)), 20)
    assert [sorted(set(runs[test])) for _, test in folds] == [[0], [1], [2], [3]]


@pytest.mark.parametrize(
    "cv,message",
    [
        ([(np.arange(5), np.arange(5, 10))], "at least 2 folds"),
        ([(np.arange(6), np.arange(5, 10)), (np.arange(5), np.arange(5, 10))], "both"),
        ([(np.arange(5), np.arange(5, 11)), (np.arange(5), np.arange(5, 10))], "outside"),
        ("five", "cv must be"),
    ],
)
def test_bad_folds_are_refused(cv, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make_folds(cv, 10)


def test_r2_and_pearson_equal_references_over_batched_predictions():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((30, 6))
    predictions = truth + rng.standard_normal((4, 30, 6))
    r2 = np.asarray(r2_columns(truth, predictions))
    pearson = np.asarray(pearson_columns(truth, predictions))
    for index in range(4):
        np.testing.assert_allclose(
            r2[index], r2_score(truth, predictions[index], multioutput="raw_values"), rtol=1e-12
        )
        expected = [np.corrcoef(truth[:, j], predictions[index, :, j])[0, 1] for j in range(6)]
        np.testing.assert_allclose(pearson[index], expected, rtol=1e-12)


def test_constant_columns_score_zero():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((20, 3))
    truth[:, 1] = 0.1
    prediction = rng.standard_normal((20, 3))
    prediction[:, 2] = -4.0
    np.testing.assert_array_equal(np.asarray(r2_columns(truth, prediction))[1], 0.0)
    pearson = np.asarray(pearson_columns(truth, prediction))
    np.testing.assert_array_equal(pearson[1:], 0.0)
    assert np.isfinite(pearson).all()


def test_neg_mean_squared_error_equals_sklearn_over_batched_predictions():
    rng = np.random.default_rng(2)
    truth = rng.standard_normal((30, 6))
    predictions = truth + rng.standard_normal((4, 30, 6))
    scores = np.asarray(neg_mean_squared_error_columns(truth, predictions))
    assert scores.shape == (4, 6)
    np.testing.assert_array_equal(
        np.asarray(score_columns(truth, predictions, "neg_mean_squared_error")), scores
    )
    assert "neg_mean_squared_error" in SCORES
    for index in range(4):
        expected = -mean_squared_error(truth, predictions[index], multioutput="raw_values")
        np.testing.assert_allclose(scores[index], expected, rtol=1e-12)


def test_ridge_cv_neg_mean_squared_error_picks_the_alphas_of_a_sklearn_loop():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 30))
    noise = np.array([0.1, 1.0, 5.0, 20.0])
    Y = X @ rng.standard_normal((30, 4)) + rng.standard_normal((50, 4)) * noise
    alphas = np.logspace(-3, 4, 15)
    result = ridge_cv(X, Y, alphas, cv=5, score="neg_mean_squared_error")
    brute = np.zeros((alphas.size, 4))
    for index, alpha in enumerate(alphas):
        for train, test in KFold(5).split(X):
            model = Ridge(alpha=alpha).fit(X[train], Y[train])
            errors = mean_squared_error(Y[test], model.predict(X[test]), multioutput="raw_values")
            brute[index] -= errors / 5
    np.testing.assert_allclose(np.asarray(result.cv_scores), brute, rtol=1e-8)
    np.testing.assert_array_equal(result.best_alphas, alphas[np.argmax(brute, axis=0)])
    assert len(set(np.asarray(result.best_alphas).tolist())) > 1
