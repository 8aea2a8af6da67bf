"""The spectral PLS1 (dual path) and the one-loop PLS2 against independent references."""

import warnings

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression

from v4jax.solvers.pls import pls1_path, pls2_fit


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def conv_like_problem(n_samples, n_features, n_targets, seed):
    """Non-negative features with shared latent factors (a conv-layer spectrum: a few large
    eigenvalues over a bulk) and noisy targets on the factors."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_samples, 8))
    X = np.maximum(
        latent @ rng.standard_normal((8, n_features))
        + rng.standard_normal((n_samples, n_features)),
        0.0,
    )
    Y = latent @ rng.standard_normal((8, n_targets)) + rng.standard_normal((n_samples, n_targets))
    return X, Y


def nipals_pls1_predictions(X_train, y_train, X_test, n_components):
    """(n_components, n_test) float64 NIPALS-PLS1 predictions (the textbook recursion)."""
    x_mean, y_mean = X_train.mean(0), y_train.mean()
    X_k, y_k = X_train - x_mean, y_train - y_mean
    weights, loadings, y_loadings = [], [], []
    for _ in range(n_components):
        w = X_k.T @ y_k
        w /= np.linalg.norm(w)
        t = X_k @ w
        p, c = X_k.T @ t / (t @ t), y_k @ t / (t @ t)
        X_k, y_k = X_k - np.outer(t, p), y_k - t * c
        weights.append(w), loadings.append(p), y_loadings.append(c)
    W, P = np.array(weights).T, np.array(loadings).T
    rotations = W @ np.linalg.inv(P.T @ W)
    terms = ((X_test - x_mean) @ rotations) * np.array(y_loadings)
    return np.cumsum(terms, axis=1).T + y_mean


@pytest.mark.parametrize(
    "dtype,tolerance",
    [pytest.param(np.float64, 1e-9, marks=pytest.mark.slow), (np.float32, 1e-3)],
    ids=["float64", "float32"],
)
def test_spectral_pls1_equals_textbook_nipals_for_every_count_on_a_conv_like_design(
    dtype, tolerance
):
    # 25 components on a kernel with a few dominant eigenvalues: the case where a plain
    # Lanczos recursion in float32 loses orthogonality.
    X, Y = conv_like_problem(90, 400, 3, seed=21)
    predictions = pls1_path(X[:70].astype(dtype), Y[:70].astype(dtype), X[70:].astype(dtype), 25)
    for target in range(Y.shape[1]):
        expected = nipals_pls1_predictions(X[:70], Y[:70, target], X[70:], 25)
        errors = [relative_error(predictions[k, :, target], expected[k]) for k in range(25)]
        assert max(errors) <= tolerance, errors


@pytest.mark.parametrize(
    "shape", [pytest.param((60, 20), marks=pytest.mark.slow), (40, 90)], ids=["primal", "dual"]
)
def test_pls2_unconverged_components_follow_sklearns_power_iteration(shape):
    # max_iter=3 stops every component's power iteration early: the weights are then the
    # third iterate of scikit-learn's trajectory, not the converged direction.
    X, Y = conv_like_problem(*shape, n_targets=5, seed=22)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn that the power method did not converge
        result = pls2_fit(X, Y, 4, max_iter=3)
        reference = PLSRegression(n_components=4, scale=False, max_iter=3).fit(X, Y)
    np.testing.assert_array_equal(result.n_iter, reference.n_iter_)
    assert relative_error(result.x_weights, reference.x_weights_) <= 1e-8
    assert relative_error(result.coef, reference.coef_.T) <= 1e-8
