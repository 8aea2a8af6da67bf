"""PLS2 and per-target PLS1 against scikit-learn's PLSRegression (fits, folds, choices, errors)."""

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression
from sklearn.metrics import r2_score

from v4jax import make_folds
from v4jax.solvers.engine.result import CrossValidatedResult
from v4jax.solvers.pls import pls1_cv, pls1_path, pls2_cv, pls2_fit

SHAPES = {"n>p": (70, 30), "n<p": (45, 120)}
TOLERANCE = {np.float64: 1e-6, np.float32: 1e-3}
ATTRIBUTES = ("x_weights", "x_loadings", "x_scores", "y_weights", "y_loadings", "x_rotations")


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def make_problem(n_samples, n_features, n_targets=4, seed=0):
    """Features with a decaying spectrum and offsets (as network features), noisy linear targets."""
    rng = np.random.default_rng(seed)
    spectrum = 3.0 / np.sqrt(np.arange(1, n_features + 1))
    X = rng.standard_normal((n_samples, n_features)) * spectrum[rng.permutation(n_features)] + 1.5
    weights = rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features)
    noise = rng.standard_normal((n_samples, n_targets)) * rng.uniform(0.2, 2.0, n_targets)
    return X, X @ weights + noise + rng.standard_normal(n_targets)


# -- PLS2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pls2_with_25_components_equals_sklearn(shape, scale, dtype):
    X, Y = make_problem(*shape)
    result = pls2_fit(X.astype(dtype), Y.astype(dtype), 25, scale=scale)
    reference = PLSRegression(n_components=25, scale=scale).fit(X, Y)
    assert result.coef.dtype == dtype
    assert result.solver == ("dual" if shape[1] > shape[0] else "primal")
    tolerance = TOLERANCE[dtype]
    assert relative_error(result.coef, reference.coef_.T) <= tolerance
    prediction = X @ np.asarray(result.coef, np.float64) + np.asarray(result.intercept)
    assert relative_error(prediction, reference.predict(X)) <= tolerance
    if dtype == np.float64:
        for name in ATTRIBUTES:
            assert relative_error(getattr(result, name), getattr(reference, f"{name}_")) <= 1e-6
        np.testing.assert_array_equal(result.n_iter, reference.n_iter_)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_pls2_with_one_component_equals_sklearn(shape):
    X, Y = make_problem(*shape, seed=1)
    result = pls2_fit(X, Y, 1)
    reference = PLSRegression(n_components=1, scale=False).fit(X, Y)
    assert relative_error(result.coef, reference.coef_.T) <= 1e-10
    assert relative_error(result.x_weights, reference.x_weights_) <= 1e-10


@pytest.mark.slow
def test_pls2_cv_scores_every_count_like_a_sklearn_loop():
    X, Y = make_problem(*SHAPES["n<p"], seed=2)
    grid = [1, 2, 4, 7, 12]
    result = pls2_cv(X, Y, grid, cv=4)
    expected = np.zeros((len(grid), Y.shape[1]))
    for train, test in make_folds(4, len(X)):
        for index, k in enumerate(grid):
            prediction = PLSRegression(n_components=k, scale=False).fit(X[train], Y[train])
            expected[index] += r2_score(
                Y[test], prediction.predict(X[test]), multioutput="raw_values"
            )
    expected /= 4
    assert np.max(np.abs(np.asarray(result.cv_scores) - expected)) <= 1e-10
    assert result.best_n_components == grid[int(np.argmax(expected.mean(axis=1)))]
    assert result.fit.coef.shape == (X.shape[1], Y.shape[1])


# -- PLS1 ---------------------------------------------------------------------------------------


def sklearn_pls1_predictions(X_train, Y_train, X_test, counts, scale=False):
    """(n_counts, n_test, n_targets): one scikit-learn PLS per target and count."""
    return np.stack(
        [
            np.stack(
                [
                    PLSRegression(n_components=k, scale=scale)
                    .fit(X_train, Y_train[:, j])
                    .predict(X_test)
                    for j in range(Y_train.shape[1])
                ],
                axis=1,
            )
            for k in counts
        ]
    )


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pls1_path_equals_sklearn_per_target_for_every_count_up_to_25(shape, dtype):
    X, Y = make_problem(*shape, seed=3)
    train, test = make_folds(5, len(X))[1]
    counts = np.arange(1, 26)
    predictions = pls1_path(
        X[train].astype(dtype), Y[train].astype(dtype), X[test].astype(dtype), counts
    )
    assert predictions.shape == (25, len(test), Y.shape[1])
    assert predictions.dtype == dtype
    expected = sklearn_pls1_predictions(X[train], Y[train], X[test], counts)
    errors = [relative_error(predictions[k], expected[k]) for k in range(25)]
    assert max(errors) <= TOLERANCE[dtype], errors


@pytest.mark.slow
def test_pls1_path_with_scaling_equals_sklearn():
    X, Y = make_problem(*SHAPES["n<p"], seed=4)
    counts = [1, 3, 10]
    predictions = pls1_path(X[:35], Y[:35], X[35:], counts, scale=True)
    expected = sklearn_pls1_predictions(X[:35], Y[:35], X[35:], counts, scale=True)
    assert relative_error(predictions, expected) <= 1e-8


@pytest.mark.parametrize(
    "shape,score",
    [(SHAPES["n<p"], "r2"), pytest.param(SHAPES["n>p"], "pearson", marks=pytest.mark.slow)],
    ids=["dual", "primal"],
)
def test_pls1_cv_scores_choices_and_refit_equal_a_sklearn_loop(shape, score):
    X, Y = make_problem(*shape, n_targets=5, seed=5)
    grid = [1, 2, 3, 5, 8, 13, 21]
    folds = make_folds(4, len(X))
    result = pls1_cv(X, Y, grid, cv=folds, score=score, target_batch_size=3)
    expected = np.zeros((len(grid), Y.shape[1]))
    for train, test in folds:
        predictions = sklearn_pls1_predictions(X[train], Y[train], X[test], grid)
        for index in range(len(grid)):
            for j in range(Y.shape[1]):
                truth, guess = Y[test, j], predictions[index, :, j]
                if score == "r2":
                    expected[index, j] += r2_score(truth, guess) / len(folds)
                else:
                    expected[index, j] += np.corrcoef(truth, guess)[0, 1] / len(folds)
    assert np.max(np.abs(np.asarray(result.cv_scores) - expected)) <= 1e-8
    best = np.asarray(grid)[np.argmax(expected, axis=0)]
    np.testing.assert_array_equal(result.best_n_components, best)
    refits = [
        PLSRegression(n_components=int(k), scale=False).fit(X, Y[:, j]) for j, k in enumerate(best)
    ]
    assert relative_error(result.coef, np.stack([m.coef_[0] for m in refits], axis=1)) <= 1e-8
    prediction = X @ np.asarray(result.coef) + np.asarray(result.intercept)
    assert relative_error(prediction, np.stack([m.predict(X) for m in refits], axis=1)) <= 1e-8


# -- result protocol ----------------------------------------------------------------------------


def make_protocol_problem(n_samples, n_features, seed=12):
    """Three targets: a spread-out signal, a five-feature signal, pure noise (chooses 1)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) + 0.5
    weights = np.zeros((n_features, 3))
    weights[:, 0] = rng.standard_normal(n_features) * 3 / np.sqrt(n_features)
    weights[:5, 1] = 1.0
    Y = X @ weights + rng.standard_normal((n_samples, 3)) * np.array([0.3, 0.3, 1.0])
    X_new = rng.standard_normal((15, n_features)) + 0.5
    return X, Y, X_new


def assert_follows_the_protocol(result, X_new, n_grid, n_targets):
    assert isinstance(result, CrossValidatedResult)
    assert np.asarray(result.grid).shape == (n_grid,)
    assert result.cv_scores.shape == (n_grid, n_targets)
    assert result.best_index.shape == result.on_edge.shape == (n_targets,)
    best_index = np.asarray(result.best_index)
    np.testing.assert_array_equal(result.on_edge, (best_index == 0) | (best_index == n_grid - 1))
    expected = X_new @ np.asarray(result.coef) + np.asarray(result.intercept)
    np.testing.assert_allclose(np.asarray(result.predict(X_new)), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="X has 4 features but the PLS was fitted on"):
        result.predict(X_new[:, :4])


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_pls1_cv_result_follows_the_protocol_and_predicts_as_sklearn(shape):
    X, Y, X_new = make_protocol_problem(*shape)
    result = pls1_cv(X, Y, range(1, 16), cv=4)
    assert_follows_the_protocol(result, X_new, 15, 3)
    np.testing.assert_array_equal(result.grid, np.arange(1, 16))
    best = np.asarray(result.grid)[np.asarray(result.best_index)]
    np.testing.assert_array_equal(result.best_n_components, best)
    on_edge = np.asarray(result.on_edge)
    assert on_edge.any() and not on_edge.all(), best
    expected = np.stack(
        [
            PLSRegression(n_components=int(k), scale=False).fit(X, Y[:, j]).predict(X_new)
            for j, k in enumerate(best)
        ],
        axis=1,
    )
    assert relative_error(result.predict(X_new), expected) <= 1e-8


@pytest.mark.parametrize(
    "grid,on_edge", [(range(1, 9), False), ([2, 3, 4], True)], ids=["inside", "edge"]
)
def test_pls2_cv_result_follows_the_protocol(grid, on_edge):
    X, Y, X_new = make_protocol_problem(*SHAPES["n>p"])
    result = pls2_cv(X, Y, grid, cv=4)
    assert_follows_the_protocol(result, X_new, len(grid), 3)
    np.testing.assert_array_equal(result.grid, np.asarray(list(grid)))
    best_index = int(np.argmax(np.asarray(result.cv_scores).mean(axis=1)))
    assert result.best_n_components == result.grid[best_index]
    np.testing.assert_array_equal(result.best_index, [best_index] * 3)
    np.testing.assert_array_equal(result.on_edge, [on_edge] * 3)
    np.testing.assert_array_equal(result.coef, result.fit.coef)
    np.testing.assert_array_equal(result.intercept, result.fit.intercept)
    np.testing.assert_array_equal(result.predict(X_new), result.fit.predict(X_new))
    reference = PLSRegression(n_components=result.best_n_components, scale=False).fit(X, Y)
    assert relative_error(result.predict(X_new), reference.predict(X_new)) <= 1e-8


# -- bad input ----------------------------------------------------------------------------------


def test_more_components_than_samples_or_features_is_a_clear_error():
    X, Y = make_problem(20, 8, seed=6)
    with pytest.raises(ValueError, match=r"n_components=9 exceeds min\(n_samples, n_features\)"):
        pls2_fit(X, Y, 9)
    with pytest.raises(ValueError, match="n_components=16 exceeds min"):
        pls1_path(X[:15], Y[:15], X[15:], 16)
    with pytest.raises(ValueError, match="smallest training fold"):
        pls1_cv(X, Y, [1, 17], cv=5)
    with pytest.raises(ValueError, match="smallest training fold"):
        pls2_cv(X, Y, 17, cv=5)


@pytest.mark.parametrize("bad", [0, -2, [1, 2.5], [], [[1, 2]], "3", [True]])
def test_invalid_component_grids_are_rejected(bad):
    X, Y = make_problem(20, 8, seed=7)
    with pytest.raises((ValueError, TypeError), match="n_components"):
        pls1_cv(X, Y, bad, cv=3)


def test_components_beyond_the_rank_are_dropped_with_a_warning_never_nan():
    X, Y = make_problem(12, 30, seed=8)  # centred X has rank 11
    with pytest.warns(UserWarning, match="only 11 of 12 components"):
        result = pls2_fit(X, Y, 12)
    assert np.all(np.isfinite(np.asarray(result.coef)))
    reference = PLSRegression(n_components=11, scale=False).fit(X, Y)
    assert (
        relative_error(X @ np.asarray(result.coef) + result.intercept, reference.predict(X)) <= 1e-8
    )
    predictions = np.asarray(pls1_path(X, Y, X[:3] + 0.1, 12))
    assert np.all(np.isfinite(predictions))
    np.testing.assert_allclose(predictions[11], predictions[10], rtol=1e-8)


def test_constant_target_scores_zero_and_gets_zero_coefficients():
    X, Y = make_problem(30, 50, seed=9)
    Y[:, 1] = 4.0
    result = pls1_cv(X, Y, [1, 2, 3], cv=3)
    assert np.all(np.isfinite(np.asarray(result.cv_scores)))
    np.testing.assert_array_equal(np.asarray(result.cv_scores)[:, 1], 0.0)
    np.testing.assert_array_equal(np.asarray(result.coef)[:, 1], 0.0)
    np.testing.assert_allclose(result.intercept[1], 4.0)


@pytest.mark.parametrize("function", ["pls2_fit", "pls1_cv"])
def test_nan_shape_and_sample_errors_name_the_problem(function):
    fit = {"pls2_fit": lambda X, Y: pls2_fit(X, Y, 2), "pls1_cv": lambda X, Y: pls1_cv(X, Y, 2)}[
        function
    ]
    X, Y = make_problem(20, 8, seed=10)
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 NaN"):
        fit(X_nan, Y)
    with pytest.raises(ValueError, match="X has 20 samples but Y has 19"):
        fit(X, Y[:19])
    with pytest.raises(ValueError, match="must be 2-D"):
        fit(X[None], Y)
    with pytest.raises(ValueError, match=r"at least 2 samples|n_samples = 1"):
        fit(X[:1], Y[:1])
