"""Banded ridge against ridge_cv (one band) and a brute-force scikit-learn grid (two bands)."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from v4jax import ridge_cv
from v4jax.solvers.banded import band_weight_grid, banded_ridge_cv, dirichlet_band_weights
from v4jax.solvers.diagnostics import ConditioningWarning
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.result import CrossValidatedResult


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


ALPHAS = np.logspace(-1, 3, 5)


def _two_band_problem(seed: int = 0, n_samples: int = 60):
    """Band 0 carries signal for the first half of the targets, band 1 for the second half."""
    rng = np.random.default_rng(seed)
    X0 = rng.standard_normal((n_samples, 12)) + 0.5
    X1 = rng.standard_normal((n_samples, 30)) * 2.0
    n_targets = 8
    W0 = rng.standard_normal((12, n_targets)) * np.r_[np.ones(4), 0.05 * np.ones(4)]
    W1 = rng.standard_normal((30, n_targets)) * np.r_[0.05 * np.ones(4), np.ones(4)]
    Y = X0 @ W0 + X1 @ W1 + rng.standard_normal((n_samples, n_targets)) * 2.0 + 3.0
    return X0, X1, Y


@pytest.mark.parametrize("n_features", [15, 90])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_single_band_equals_ridge_cv(n_features, fit_intercept):
    rng = np.random.default_rng(n_features)
    X = rng.standard_normal((50, n_features)) + 1.0
    Y = X @ rng.standard_normal((n_features, 6)) + rng.standard_normal((50, 6)) * 3.0
    alphas = np.logspace(-2, 4, 13)
    banded = banded_ridge_cv([X], Y, alphas, cv=5, fit_intercept=fit_intercept, progress=False)
    plain = ridge_cv(X, Y, alphas, cv=5, fit_intercept=fit_intercept, solver="dual")
    np.testing.assert_array_equal(banded.best_alpha_index, plain.best_index)
    assert _relative_error(banded.cv_scores_by_candidate[0], plain.cv_scores) < 1e-10
    assert _relative_error(banded.coef, plain.coef) < 1e-10
    if fit_intercept:
        assert _relative_error(banded.intercept, plain.intercept) < 1e-10
    else:
        np.testing.assert_array_equal(banded.intercept, 0.0)
    np.testing.assert_allclose(banded.band_scales, 1.0)
    np.testing.assert_allclose(banded.best_band_alphas[0], plain.best_alphas)
    primal = ridge_cv(X, Y, alphas, cv=5, fit_intercept=fit_intercept, solver="primal")
    assert _relative_error(banded.coef, primal.coef) < 1e-8


def _brute_force(Xs, Y, alphas, candidates, folds, fit_intercept, score):
    """scikit-learn Ridge on the scaled concatenation, every candidate x alpha x fold."""
    n_targets = Y.shape[1]
    scores = np.zeros((len(candidates), len(alphas), n_targets))
    for g, weights in enumerate(candidates):
        design = np.hstack([np.sqrt(w) * X for w, X in zip(weights, Xs, strict=True)])
        for a, alpha in enumerate(alphas):
            for train, test in folds:
                model = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="svd")
                predicted = model.fit(design[train], Y[train]).predict(design[test])
                if score == "r2":
                    fold = r2_score(Y[test], predicted, multioutput="raw_values")
                else:
                    fold = [
                        np.corrcoef(Y[test, t], predicted[:, t])[0, 1] for t in range(n_targets)
                    ]
                scores[g, a] += np.asarray(fold) / len(folds)
    flat = np.argmax(scores.reshape(-1, n_targets), axis=0)
    best_g, best_a = flat // len(alphas), flat % len(alphas)
    coef = np.zeros((sum(X.shape[1] for X in Xs), n_targets))
    intercept = np.zeros(n_targets)
    for t in range(n_targets):
        weights = candidates[best_g[t]]
        design = np.hstack([np.sqrt(w) * X for w, X in zip(weights, Xs, strict=True)])
        model = Ridge(alpha=alphas[best_a[t]], fit_intercept=fit_intercept, solver="svd")
        model.fit(design, Y[:, t])
        scale = np.concatenate(
            [np.full(X.shape[1], np.sqrt(w)) for w, X in zip(weights, Xs, strict=True)]
        )
        coef[:, t] = model.coef_ * scale
        intercept[t] = model.intercept_
    return scores, best_g, best_a, coef, intercept


@pytest.mark.parametrize(("fit_intercept", "score"), [(True, "r2"), (False, "pearson")])
def test_two_bands_equal_brute_force_sklearn(fit_intercept, score):
    X0, X1, Y = _two_band_problem()
    alphas = np.logspace(-1, 3, 7)
    candidates = band_weight_grid(2, np.logspace(-2, 2, 5))
    folds = make_folds(4, Y.shape[0])
    result = banded_ridge_cv(
        [X0, X1], Y, alphas, cv=folds, fit_intercept=fit_intercept, score=score,
        ratios=np.logspace(-2, 2, 5), target_batch_size=3, progress=False,
    )  # fmt: skip
    scores, best_g, best_a, coef, intercept = _brute_force(
        [X0, X1], Y, alphas, candidates, folds, fit_intercept, score
    )
    np.testing.assert_array_equal(result.candidates, candidates)
    assert _relative_error(result.cv_scores_by_candidate, scores) < 1e-8
    np.testing.assert_array_equal(result.best_candidate_index, best_g)
    np.testing.assert_array_equal(result.best_alpha_index, best_a)
    assert _relative_error(result.coef, coef) < 1e-8
    if fit_intercept:
        assert _relative_error(result.intercept, intercept) < 1e-8
    expected_scales = candidates[best_g].T
    np.testing.assert_allclose(result.band_scales, expected_scales, rtol=1e-12)
    np.testing.assert_allclose(
        result.best_band_alphas, alphas[best_a][None, :] / expected_scales, rtol=1e-12
    )
    assert result.band_coef(1).shape == (X1.shape[1], Y.shape[1])


def test_bands_chosen_where_the_signal_is():
    X0, X1, Y = _two_band_problem(seed=3, n_samples=200)
    result = banded_ridge_cv(
        [X0, X1], Y, np.logspace(-1, 4, 6), ratios=np.logspace(-2, 2, 5), progress=False,
    )  # fmt: skip
    scales = np.asarray(result.band_scales)
    assert np.all(scales[0, :4] > scales[1, :4])
    assert np.all(scales[1, 4:] > scales[0, 4:])


def test_random_search_is_seeded_and_starts_with_equal_weights():
    first = dirichlet_band_weights(3, 6, seed=5)
    np.testing.assert_array_equal(first, dirichlet_band_weights(3, 6, seed=5))
    assert not np.array_equal(first, dirichlet_band_weights(3, 6, seed=6))
    np.testing.assert_allclose(first[0], 1 / 3)
    np.testing.assert_allclose(first.sum(axis=1), 1.0)
    X0, X1, Y = _two_band_problem()
    result = banded_ridge_cv([X0, X1], Y, [1.0, 10.0], n_iter=4, seed=2, progress=False)
    np.testing.assert_array_equal(result.candidates, dirichlet_band_weights(2, 4, seed=2))


def test_float32_matches_float64():
    X0, X1, Y = _two_band_problem(seed=1)
    alphas = np.logspace(0, 3, 4)
    double = banded_ridge_cv([X0, X1], Y, alphas, ratios=[0.1, 1.0, 10.0], progress=False)
    single = banded_ridge_cv(
        [X0.astype(np.float32), X1.astype(np.float32)], Y.astype(np.float32), alphas,
        ratios=[0.1, 1.0, 10.0], progress=False,
    )  # fmt: skip
    assert single.coef.dtype == np.float32
    assert double.coef.dtype == np.float64
    same = np.asarray(single.best_candidate_index) == np.asarray(double.best_candidate_index)
    assert (
        _relative_error(np.asarray(single.coef)[:, same], np.asarray(double.coef)[:, same]) < 1e-3
    )


def test_bad_input_messages():
    X0, X1, Y = _two_band_problem()
    with pytest.raises(TypeError, match="list of feature matrices"):
        banded_ridge_cv(X0, Y, [1.0])
    with pytest.raises(ValueError, match="Xs is empty"):
        banded_ridge_cv([], Y, [1.0])
    with pytest.raises(ValueError, match=r"Xs\[0\] has 60 samples but Xs\[1\] has 59"):
        banded_ridge_cv([X0, X1[:-1]], Y, [1.0])
    with pytest.raises(ValueError, match="only one of"):
        banded_ridge_cv([X0, X1], Y, [1.0], ratios=[1.0], n_iter=3)
    with pytest.raises(ValueError, match=r"shape \(n_candidates, 2\)"):
        banded_ridge_cv([X0, X1], Y, [1.0], band_weights=[[1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="strictly positive"):
        banded_ridge_cv([X0, X1], Y, [1.0], band_weights=[[1.0, 0.0]])
    bad = X1.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"Xs\[1\] contains 1 NaN"):
        banded_ridge_cv([X0, bad], Y, [1.0])
    with pytest.raises(ValueError, match="ratios must be"):
        band_weight_grid(2, [-1.0])


def test_sharded_over_four_devices_equals_one_device():
    X0, X1, Y = _two_band_problem(seed=4)
    Y = np.hstack([Y, Y[:, :3] * 0.5])  # 11 targets: padded to whole batches on 4 devices
    arguments = dict(ratios=[0.1, 1.0, 10.0], cv=4, target_batch_size=2, progress=False)
    single = banded_ridge_cv([X0, X1], Y, ALPHAS, devices=jax.devices()[:1], **arguments)
    sharded = banded_ridge_cv([X0, X1], Y, ALPHAS, devices=jax.devices(), **arguments)
    assert len(jax.devices()) == 4
    for name in ("best_index", "best_candidate_index", "best_alpha_index", "on_edge"):
        np.testing.assert_array_equal(getattr(sharded, name), getattr(single, name))
    for name in ("cv_scores", "best_alphas", "band_scales", "intercept", "dual_coef", "coef"):
        np.testing.assert_allclose(
            np.asarray(getattr(sharded, name)), np.asarray(getattr(single, name)),
            rtol=1e-12, atol=1e-12,
        )  # fmt: skip
    assert len(sharded.dual_coef.sharding.device_set) == 4


def _per_band_ridge(Xs, Y, band_alphas):
    """float64 ridge with intercept and penalty alpha_b on band b, each target solved alone."""
    X = np.hstack(Xs)
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    coef = np.zeros((X.shape[1], Y.shape[1]))
    for t in range(Y.shape[1]):
        penalty = np.concatenate(
            [
                np.full(band.shape[1], alpha)
                for band, alpha in zip(Xs, band_alphas[:, t], strict=True)
            ]
        )
        coef[:, t] = np.linalg.solve(Xc.T @ Xc + np.diag(penalty), Xc.T @ Yc[:, t])
    return coef, Y.mean(axis=0) - X.mean(axis=0) @ coef


def test_predict_equals_coef_and_a_per_band_penalty_ridge_reference():
    rng = np.random.default_rng(11)
    Xs = [rng.standard_normal((45, 10)) + 2.0, rng.standard_normal((45, 70)) * 0.5]
    Y = Xs[0] @ rng.standard_normal((10, 5)) + Xs[1] @ rng.standard_normal((70, 5))
    Y += rng.standard_normal(Y.shape) + 1.0
    new = [rng.standard_normal((9, 10)) + 2.0, rng.standard_normal((9, 70)) * 0.5]
    result = banded_ridge_cv(Xs, Y, ALPHAS, ratios=[0.1, 1.0, 10.0], progress=False)
    through_kernel = np.asarray(result.predict(new))
    through_concatenation = np.asarray(result.predict(np.hstack(new)))
    coef, intercept = np.asarray(result.coef), np.asarray(result.intercept)
    expected = np.hstack(new) @ coef + intercept
    np.testing.assert_allclose(through_kernel, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(through_concatenation, expected, rtol=1e-10, atol=1e-10)
    reference_coef, reference_intercept = _per_band_ridge(
        Xs, Y, np.asarray(result.best_alphas)[None, :] / np.asarray(result.band_scales)
    )
    np.testing.assert_allclose(coef, reference_coef, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(
        through_kernel, np.hstack(new) @ reference_coef + reference_intercept, rtol=1e-10
    )


def test_float32_conditioning_warning_on_an_ill_conditioned_band_only():
    rng = np.random.default_rng(12)
    X0 = rng.standard_normal((40, 20)) @ np.diag(np.logspace(0, -7, 20))
    X1 = rng.standard_normal((40, 30))
    Y = X0 @ rng.standard_normal((20, 4)) + rng.standard_normal((40, 4)) * 0.1
    graded = [X0.astype(np.float32), (X1 * 1e-4).astype(np.float32)]
    with pytest.warns(ConditioningWarning, match=r"float32: condition number .* float64"):
        banded_ridge_cv(graded, Y.astype(np.float32), [1e-10], band_weights=[[0.5, 0.5]], cv=3)
    well = [rng.standard_normal((40, 20)).astype(np.float32), X1.astype(np.float32)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        banded_ridge_cv(well, Y.astype(np.float32), [1e-2, 1.0], ratios=[0.5, 2.0], cv=3)


def test_result_follows_the_protocol():
    X0, X1, Y = _two_band_problem(seed=5)
    alphas = np.logspace(-1, 3, 5)
    result = banded_ridge_cv([X0, X1], Y, alphas, ratios=[0.1, 1.0, 10.0], progress=False)
    n_grid, n_targets = 3 * len(alphas), Y.shape[1]
    assert isinstance(result, CrossValidatedResult)
    assert result.grid.shape == (n_grid, 3)
    assert result.cv_scores.shape == (n_grid, n_targets)
    assert result.best_index.shape == result.on_edge.shape == (n_targets,)
    assert result.coef.shape == (42, n_targets) and result.intercept.shape == (n_targets,)
    chosen = result.grid[np.asarray(result.best_index)]
    np.testing.assert_allclose(chosen[:, :2], np.asarray(result.band_scales).T, rtol=1e-12)
    np.testing.assert_allclose(chosen[:, 2], result.best_alphas, rtol=1e-12)
    np.testing.assert_array_equal(
        result.best_index, np.argmax(np.asarray(result.cv_scores), axis=0)
    )
    alpha_index = np.asarray(result.best_alpha_index)
    np.testing.assert_array_equal(
        result.on_edge, (alpha_index == 0) | (alpha_index == len(alphas) - 1)
    )
    np.testing.assert_array_equal(
        result.cv_scores_by_candidate[1],
        np.asarray(result.cv_scores)[len(alphas) : 2 * len(alphas)],
    )
