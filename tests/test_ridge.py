"""ridge_cv and ridge_path against scikit-learn Ridge and float64 numpy references."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold

from v4jax import make_folds, ridge_cv, ridge_path

ALPHAS = np.logspace(-2, 4, 7)
SHAPES = {"n>p": (80, 25), "n<p": (50, 140)}


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def make_problem(n_samples, n_features, n_targets=6, seed=0, offset=2.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) + offset
    weights = rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features)
    noise = rng.standard_normal((n_samples, n_targets)) * rng.uniform(0.3, 3.0, n_targets)
    return X, X @ weights + noise + rng.standard_normal(n_targets)


def sklearn_fold_scores(X, Y, alphas, folds, score):
    scores = np.zeros((len(alphas), Y.shape[1]))
    for train, test in folds:
        for index, alpha in enumerate(alphas):
            prediction = Ridge(alpha=alpha).fit(X[train], Y[train]).predict(X[test])
            if score == "r2":
                scores[index] += r2_score(Y[test], prediction, multioutput="raw_values")
            else:
                scores[index] += [
                    np.corrcoef(Y[test][:, j], prediction[:, j])[0, 1] for j in range(Y.shape[1])
                ]
    return scores / len(folds)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-8), (np.float32, 1e-4)])
def test_path_predictions_equal_sklearn_ridge_on_every_fold(shape, dtype, tolerance):
    X, Y = make_problem(*shape)
    for train, test in make_folds(4, len(X)):
        predictions = ridge_path(
            X[train].astype(dtype), Y[train].astype(dtype), X[test].astype(dtype), ALPHAS
        )
        assert predictions.dtype == dtype
        expected = np.stack(
            [Ridge(alpha=alpha).fit(X[train], Y[train]).predict(X[test]) for alpha in ALPHAS]
        )
        assert relative_error(predictions, expected) <= tolerance


@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_both_solvers_agree_whatever_the_shape(shape, solver):
    X, Y = make_problem(*shape, seed=3)
    expected = np.stack([Ridge(alpha=a).fit(X[:40], Y[:40]).predict(X[40:]) for a in ALPHAS])
    predictions = ridge_path(X[:40], Y[:40], X[40:], ALPHAS, solver=solver)
    assert relative_error(predictions, expected) <= 1e-8


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("score", ["r2", "pearson"])
def test_best_alphas_and_refit_equal_brute_force_sklearn(shape, score):
    X, Y = make_problem(*shape, seed=1)
    folds = make_folds(5, len(X))
    result = ridge_cv(X, Y, ALPHAS, cv=5, score=score)
    expected_scores = sklearn_fold_scores(X, Y, ALPHAS, folds, score)
    assert np.max(np.abs(np.asarray(result.cv_scores) - expected_scores)) <= 1e-10
    expected_alphas = ALPHAS[np.argmax(expected_scores, axis=0)]
    np.testing.assert_array_equal(np.asarray(result.best_alphas), expected_alphas)
    refits = [Ridge(alpha=a).fit(X, Y[:, j]) for j, a in enumerate(expected_alphas)]
    expected_coef = np.stack([model.coef_ for model in refits], axis=1)
    expected_intercept = np.array([model.intercept_ for model in refits])
    assert relative_error(result.coef, expected_coef) <= 1e-8
    assert relative_error(result.intercept, expected_intercept) <= 1e-8


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_predict_equals_sklearn_and_the_dual_path_forms_coef_only_when_asked(
    shape, dtype, tolerance
):
    X, Y = make_problem(*shape, seed=11, offset=5.0)
    X_new = make_problem(7, shape[1], seed=12, offset=5.0)[0]
    result = ridge_cv(X.astype(dtype), Y.astype(dtype), ALPHAS, cv=4, feature_block_size=33)
    kernel_route = result.predict(X_new.astype(dtype))
    assert kernel_route.dtype == dtype
    expected = np.stack(
        [
            Ridge(alpha=alpha).fit(X, Y[:, j]).predict(X_new)
            for j, alpha in enumerate(np.asarray(result.best_alphas, dtype=np.float64))
        ],
        axis=1,
    )
    assert relative_error(kernel_route, expected) <= tolerance
    if result.solver == "dual":
        assert "coef" not in vars(result)
        assert result.dual_coef.shape == (len(X), Y.shape[1])
        coef = result.coef
        assert "coef" in vars(result) and result.coef is coef
        coef_route = result.predict(X_new.astype(dtype))
        assert relative_error(coef_route, expected) <= tolerance
    else:
        assert result.dual_coef is None
    with pytest.raises(ValueError, match=f"fitted on {shape[1]}"):
        result.predict(X_new[:, :-1])


@pytest.mark.parametrize("route", ["host-blas", "device"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_one_pass_kernel_equals_float64_numpy_on_both_routes(fit_intercept, route):
    from v4jax.solvers.engine.sharding import voxel_mesh
    from v4jax.solvers.ridge import _centred_gram, _host_blas

    X = make_problem(31, 50, seed=13, offset=3.0)[0]
    X = X if route == "host-blas" else jax.numpy.asarray(X)
    assert _host_blas(X, voxel_mesh(None)) == (route == "host-blas")
    gram, design_dot_mean, mean = _centred_gram(X, fit_intercept, np.float64, 16)
    X = np.asarray(X)
    expected_mean = X.mean(axis=0) if fit_intercept else np.zeros(X.shape[1])
    assert relative_error(mean, expected_mean) <= 1e-12 if fit_intercept else not np.any(mean)
    centred = X - expected_mean
    assert relative_error(gram, centred @ centred.T) <= 1e-12
    if fit_intercept:
        assert relative_error(design_dot_mean, centred @ expected_mean) <= 1e-12


def test_host_and_device_arrays_give_the_same_fit_and_predictions():
    X, Y = make_problem(40, 120, seed=14)
    X_new = make_problem(5, 120, seed=15)[0]
    host = ridge_cv(X, Y, ALPHAS, cv=4, feature_block_size=50)
    device = ridge_cv(jax.numpy.asarray(X), Y, ALPHAS, cv=4, feature_block_size=50)
    np.testing.assert_array_equal(np.asarray(host.best_alphas), device.best_alphas)
    for name in ("cv_scores", "dual_coef", "intercept", "coef"):
        assert relative_error(getattr(host, name), getattr(device, name)) <= 1e-10
    assert relative_error(host.predict(X_new), device.predict(jax.numpy.asarray(X_new))) <= 1e-10


def test_float32_cross_validation_matches_float64_reference():
    X, Y = make_problem(60, 200, seed=4)
    result = ridge_cv(X.astype(np.float32), Y.astype(np.float32), ALPHAS, cv=3)
    assert result.coef.dtype == np.float32
    expected = sklearn_fold_scores(X, Y, ALPHAS, make_folds(3, len(X)), "r2")
    assert relative_error(result.cv_scores, expected) <= 1e-4


def test_without_intercept_equals_sklearn_without_intercept():
    X, Y = make_problem(45, 90, seed=5)
    result = ridge_cv(X, Y, ALPHAS, cv=3, fit_intercept=False)
    expected = np.stack(
        [
            Ridge(alpha=a, fit_intercept=False).fit(X, Y[:, j]).coef_
            for j, a in enumerate(np.asarray(result.best_alphas))
        ],
        axis=1,
    )
    assert relative_error(result.coef, expected) <= 1e-8
    np.testing.assert_array_equal(np.asarray(result.intercept), 0.0)


@pytest.mark.parametrize(
    "cv",
    [
        KFold(4, shuffle=True, random_state=0),
        [(np.arange(20, 60), np.arange(20)), (np.arange(40), np.arange(40, 60))],
    ],
    ids=["splitter", "index-list"],
)
def test_cv_forms_equal_brute_force_on_the_same_folds(cv):
    X, Y = make_problem(60, 30, seed=6)
    folds = make_folds(cv, len(X))
    result = ridge_cv(X, Y, ALPHAS, cv=folds)
    expected = sklearn_fold_scores(X, Y, ALPHAS, folds, "r2")
    assert np.max(np.abs(np.asarray(result.cv_scores) - expected)) <= 1e-10


def test_jit_and_eager_and_batched_and_unbatched_targets_are_identical():
    X, Y = make_problem(24, 40, n_targets=11, seed=7)
    one_device = jax.devices()[:1]
    folds = make_folds(2, len(X))
    reference = ridge_cv(X, Y, ALPHAS, cv=folds, target_batch_size=None, devices=one_device)
    batched = ridge_cv(X, Y, ALPHAS, cv=folds, target_batch_size=3, devices=one_device)
    with jax.disable_jit():  # eager dispatch is slow: one batch, two folds keep it short
        eager = ridge_cv(X, Y, ALPHAS, cv=folds, target_batch_size=None, devices=one_device)
    for other in (batched, eager):
        np.testing.assert_array_equal(np.asarray(other.best_alphas), reference.best_alphas)
        np.testing.assert_allclose(other.cv_scores, reference.cv_scores, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(other.coef, reference.coef, rtol=1e-10, atol=1e-12)


def test_large_feature_offset_stays_accurate_in_float32():
    X, Y = make_problem(50, 300, seed=8, offset=1e3)
    result = ridge_cv(X.astype(np.float32), Y.astype(np.float32), ALPHAS, cv=3)
    expected = sklearn_fold_scores(X, Y, ALPHAS, make_folds(3, len(X)), "r2")
    assert relative_error(result.cv_scores, expected) <= 1e-3


def test_feature_blocks_do_not_change_the_answer():
    X, Y = make_problem(30, 100, seed=9)
    whole = ridge_cv(X, Y, ALPHAS, cv=3, feature_block_size=1000)
    blocked = ridge_cv(X, Y, ALPHAS, cv=3, feature_block_size=7)
    np.testing.assert_allclose(blocked.coef, whole.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(blocked.intercept, whole.intercept, rtol=1e-10, atol=1e-12)


def test_constant_target_scores_zero_not_nan():
    X, Y = make_problem(40, 10, seed=10)
    Y[:, 2] = 3.7
    for score in ("r2", "pearson"):
        result = ridge_cv(X, Y, ALPHAS, cv=4, score=score)
        scores = np.asarray(result.cv_scores)
        assert np.all(np.isfinite(scores))
        np.testing.assert_array_equal(scores[:, 2], 0.0)
        assert np.all(np.isfinite(result.coef))


def test_edge_alphas_are_flagged():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((60, 5))
    Y = np.column_stack([X @ rng.standard_normal(5), rng.standard_normal(60)])
    result = ridge_cv(X, Y, ALPHAS, cv=3)
    np.testing.assert_array_equal(
        np.asarray(result.alpha_on_edge),
        np.isin(np.asarray(result.best_alpha_index), [0, len(ALPHAS) - 1]),
    )
    assert bool(result.alpha_on_edge[0])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"Y": np.ones((39, 2))}, "samples"),
        ({"X": np.full((40, 5), np.nan)}, "NaN"),
        ({"Y": np.full((40, 2), np.inf)}, "inf"),
        ({"alphas": []}, "non-empty"),
        ({"alphas": [1.0, -1.0]}, "strictly positive"),
        ({"alphas": [0.0]}, "strictly positive"),
        ({"cv": 1}, "at least 2 folds"),
        ({"cv": 50}, "n_samples = 40"),
        ({"cv": 30}, "too small"),
        ({"cv": [(np.arange(39), np.arange(39, 40)), (np.arange(1, 40), np.arange(1))]}, "small"),
        ({"score": "mse"}, "score"),
        ({"X": np.ones((40, 5, 2))}, "2-D"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_problem(kwargs, message):
    rng = np.random.default_rng(12)
    arguments = {
        "X": rng.standard_normal((40, 5)),
        "Y": rng.standard_normal((40, 2)),
        "alphas": ALPHAS,
        "cv": 4,
    }
    arguments.update(kwargs)
    X, Y, alphas = arguments.pop("X"), arguments.pop("Y"), arguments.pop("alphas")
    with pytest.raises(ValueError, match=message):
        ridge_cv(X, Y, alphas, **arguments)


def test_wrong_dtype_raises_type_error():
    with pytest.raises(TypeError, match="bool"):
        ridge_cv(np.ones((10, 3), dtype=bool), np.ones(10), ALPHAS, cv=2)
