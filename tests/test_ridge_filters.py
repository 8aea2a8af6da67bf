"""Shared filters: every alpha's held-out residuals through fewer products, to the dtype's
rounding (v4jax.solvers.ridge.shared_filters)."""

import numpy as np
import pytest
from sklearn.model_selection import LeaveOneOut
from test_ridge import CV_FORMS, brute_force_heldout, make_problem, relative_error

from v4jax import make_folds, ridge_cv
from v4jax.solvers import ridge
from v4jax.solvers.ridge import filter_count, heldout_predictions, prepare_ridge, shared_filters

# Grids reaching far beyond the kernel spectra of these problems, where a few filters span every
# alpha's factors: 7 of 17 (float32, n<p); 2 and 5 of 12 (both ends only, float32 and float64).
WIDE = np.logspace(-6, 10, 17)
ENDS = np.concatenate([np.logspace(-9, -6, 6), np.logspace(9, 12, 6)])
CASES = {
    "float64-n>p": (np.float64, 1e-8, (80, 25), ENDS),
    "float32-n>p": (np.float32, 1e-4, (80, 25), ENDS),
    "float32-n<p": (np.float32, 1e-4, (50, 140), WIDE),
}


@pytest.mark.parametrize(
    "dtype, tolerance",
    [(np.float32, np.finfo(np.float32).eps), (np.float64, 1e-14)],  # float64: the SVD's rounding
)
def test_shared_filters_span_every_alphas_factors_to_the_dtype_rounding(dtype, tolerance):
    eigenvalues = np.sort(np.random.default_rng(31).uniform(1.0, 1e3, 400))
    alphas = np.concatenate([np.logspace(-12, -8, 10), np.logspace(8, 12, 10)])
    factors = alphas[:, None] / (eigenvalues[None, :] + alphas[:, None])
    mixing, filters = shared_filters(factors, dtype)
    assert filters.shape[0] <= ridge.MAX_FILTER_FRACTION * len(alphas)
    assert mixing.shape == (len(alphas), filters.shape[0])
    errors = np.linalg.norm(mixing @ filters - factors, axis=1)
    row_errors = errors / np.linalg.norm(factors, axis=1)
    assert np.max(row_errors) <= tolerance


def test_grids_inside_a_wide_spectrum_keep_one_product_per_alpha():
    eigenvalues = np.logspace(-3, 6, 200)
    alphas = np.logspace(-2, 5, 8)
    assert shared_filters(alphas[:, None] / (eigenvalues + alphas[:, None]), np.float32) is None


@pytest.mark.parametrize("cv_form", CV_FORMS, ids=CV_FORMS.keys())
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_heldout_predictions_through_shared_filters_equal_sklearn_refits(case, cv_form):
    dtype, tolerance, shape, alphas = case
    X, Y = make_problem(*shape, seed=21, offset=3.0)
    cv = CV_FORMS[cv_form](len(X))
    decomposition = prepare_ridge(X.astype(dtype), cv)
    assert filter_count(decomposition, alphas) < 0.75 * len(alphas)  # the filtered route
    predictions = heldout_predictions(decomposition, Y.astype(dtype), alphas)
    folds = list(LeaveOneOut().split(X)) if cv == "loo" else make_folds(cv, len(X))
    expected = brute_force_heldout(X, Y, alphas, folds)
    assert relative_error(predictions, expected) <= tolerance


@pytest.mark.parametrize("cv", [5, "loo"])
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_fits_through_shared_filters_equal_one_product_per_alpha(dtype, tolerance, cv, monkeypatch):
    X, Y = make_problem(50, 140, n_targets=9, seed=32, offset=1.0)
    X, Y, X_new = X.astype(dtype), Y.astype(dtype), X[:7].astype(dtype) + 0.5
    alphas = WIDE if dtype == np.float32 else ENDS
    assert filter_count(prepare_ridge(X, cv), alphas) < len(alphas)
    filtered = ridge_cv(X, Y, alphas, cv=cv)
    monkeypatch.setattr(ridge, "_basis_filters", lambda decomposition, alphas: None)
    direct = ridge_cv(X, Y, alphas, cv=cv)
    assert relative_error(filtered.cv_scores, direct.cv_scores) <= tolerance
    # Far-out alphas tie to rounding (near-interpolation or near-mean fits): each target's
    # choice must be a best one on the direct route's scores.
    scores = np.asarray(direct.cv_scores, dtype=np.float64)
    chosen = np.take_along_axis(scores, np.asarray(filtered.best_index)[None], axis=0)[0]
    assert np.all(chosen >= scores.max(axis=0) - tolerance * np.abs(scores).max(axis=0))
    assert relative_error(filtered.predict(X_new), direct.predict(X_new)) <= tolerance


def test_float32_decompositions_count_filters_from_float64_factors():
    # The count comes from float64 factors of the decomposition's eigenvalues.
    X, _ = make_problem(50, 140, seed=21, offset=3.0)
    decomposition = prepare_ridge(X.astype(np.float32), "loo")
    eigenvalues = np.asarray(decomposition.basis.eigenvalues, dtype=np.float64)
    exact = WIDE[:, None] / (eigenvalues + WIDE[:, None])
    _, filters = shared_filters(exact, np.float32)
    assert filter_count(decomposition, WIDE) == filters.shape[0]


def test_grids_where_a_direction_is_dropped_keep_one_product_per_alpha():
    rng = np.random.default_rng(33)
    X = rng.standard_normal((50, 6)) @ rng.standard_normal((6, 140))  # kernel of rank 6
    decomposition = prepare_ridge(X.astype(np.float32), "loo")
    eigenvalues = np.asarray(decomposition.basis.eigenvalues, dtype=np.float64)
    assert shared_filters(ENDS[:, None] / (eigenvalues + ENDS[:, None]), np.float32) is not None
    assert filter_count(decomposition, ENDS) == len(ENDS)
