"""The solver engine: streamed kernels on both routes, the per-target runner, the result
protocol."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from v4jax import banded_ridge_cv, pls1_cv, pls2_cv, ridge_cv
from v4jax.solvers.engine import kernels
from v4jax.solvers.engine.result import CrossValidatedResult, best_scores, chosen_values
from v4jax.solvers.engine.runner import run_per_target
from v4jax.solvers.engine.sharding import voxel_mesh

ROUTES = ["host-blas", "device"]


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def design(n_samples, n_features, seed, offset=3.0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_samples, n_features)) * rng.uniform(0.5, 2, n_features) + offset


def on_route(X, route):
    X = X if route == "host-blas" else jnp.asarray(X)
    assert kernels.host_blas(X, voxel_mesh(None)) == (route == "host-blas")
    return X


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_one_pass_kernel_equals_float64_numpy_on_both_routes(fit_intercept, route):
    X = design(31, 50, seed=13)
    gram = kernels.centred_gram(
        on_route(X, route), fit_intercept=fit_intercept, dtype=np.float64, block=16
    )
    expected_mean = X.mean(axis=0) if fit_intercept else np.zeros(X.shape[1])
    if fit_intercept:
        assert relative_error(gram.mean, expected_mean) <= 1e-12
    else:
        assert not np.any(np.asarray(gram.mean))
    centred = X - expected_mean
    assert relative_error(gram.kernel, centred @ centred.T) <= 1e-12
    if fit_intercept:
        assert relative_error(gram.design_dot_mean, centred @ expected_mean) <= 1e-12


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_host_kernel_centred_after_raw_products_equals_the_centred_kernel(dtype, tolerance):
    X = np.maximum(design(40, 70, seed=21, offset=0.0), 0.0)  # like ReLU features
    block = 16
    for start in range(0, X.shape[1], block):  # every block takes the raw-product route
        columns = X[:, start : start + block]
        assert 2 * len(X) * np.sum(columns.mean(axis=0) ** 2) <= np.sum(columns**2)
    gram = kernels.centred_gram(X.astype(dtype), dtype=dtype, block=block, raw_products=True)
    centred = X - X.mean(axis=0)
    assert relative_error(gram.kernel, centred @ centred.T) <= tolerance
    assert relative_error(gram.design_dot_mean, centred @ X.mean(axis=0)) <= tolerance
    assert relative_error(gram.mean, X.mean(axis=0)) <= tolerance


def test_raw_products_centre_blocks_far_from_zero_first():
    X = design(40, 70, seed=22, offset=0.0)
    X[:, 30:] += 1e4  # block 0 (columns 0-15) is near zero, blocks 1-4 reach columns 30+
    gram = kernels.centred_gram(X.astype(np.float32), dtype=np.float32, block=16, raw_products=True)
    centred = X - X.mean(axis=0)
    # Centred blocks keep ~4e-4 (the float32 means of 1e4 values); raw products would lose all
    # digits (their rounding, ~6e-8 * 70 * 1e8, exceeds the centred entries: error above 10).
    assert relative_error(gram.kernel, centred @ centred.T) <= 1e-3
    assert relative_error(gram.design_dot_mean, centred @ X.mean(axis=0)) <= 1e-2


@pytest.mark.parametrize("route", ROUTES)
def test_given_means_and_scales_standardise_every_product_on_both_routes(route):
    X = design(23, 40, seed=14)
    X_new = design(6, 40, seed=15)
    rows = np.arange(3, 20)
    mean, std = X[rows].mean(axis=0), X[rows].std(axis=0, ddof=1)
    standard, standard_new = (X - mean) / std, (X_new - mean) / std
    M = np.random.default_rng(16).standard_normal((23, 5))
    X_route = on_route(X, route)
    options = {"std": std, "dtype": np.float64, "block": 7}
    gram = kernels.centred_gram(X_route, mean=mean, **options)
    assert relative_error(gram.kernel, standard @ standard.T) <= 1e-12
    cross = kernels.cross_kernel(X_new, X_route, mean, **options)
    assert relative_error(cross, standard_new @ standard.T) <= 1e-12
    product = kernels.transpose_product(X_route, jnp.asarray(M), mean, **options)
    assert relative_error(product, standard.T @ M) <= 1e-12


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_cross_kernel_without_centring_the_design_equals_the_centred_kernel(dtype, tolerance):
    X = design(40, 70, seed=19, offset=1.0)
    X_new = design(9, 70, seed=20, offset=1.0)
    mean = X.mean(axis=0)
    expected = (X_new - mean) @ (X - mean).T
    cross = kernels.cross_kernel(
        X_new.astype(dtype), X.astype(dtype), mean, dtype=dtype, block=16, centre_design=False
    )
    assert relative_error(cross, expected) <= tolerance


def test_recentred_fold_kernels_equal_kernels_of_the_fold_centred_design():
    X = design(30, 12, seed=17)
    train, test = np.arange(8, 30), np.arange(8)
    centred = X - X.mean(axis=0)
    kernel, test_kernel = kernels.recentre(
        jnp.asarray(centred @ centred.T), jnp.asarray(train), jnp.asarray(test)
    )
    fold_mean = X[train].mean(axis=0)
    assert relative_error(kernel, (X[train] - fold_mean) @ (X[train] - fold_mean).T) <= 1e-12
    assert relative_error(test_kernel, (X[test] - fold_mean) @ (X[train] - fold_mean).T) <= 1e-12


def _scaled_sums(shared, Y, power):
    return ((shared["scale"][:, None] * Y**power).sum(axis=0, keepdims=True), Y[0] * 2.0)


@pytest.mark.parametrize("batch", [None, 1, 3, 64])
@pytest.mark.parametrize("n_devices", [1, 4])
def test_runner_pads_batches_shards_and_trims_without_changing_answers(batch, n_devices):
    rng = np.random.default_rng(18)
    Y = rng.standard_normal((9, 11))
    scale = rng.uniform(1, 2, 9)
    mesh = voxel_mesh(jax.devices()[:n_devices])
    shared = {"scale": jax.device_put(scale, jax.sharding.NamedSharding(mesh, jax.P()))}
    sums, doubled = run_per_target(
        _scaled_sums,
        shared,
        Y,
        mesh=mesh,
        dtype=np.float64,
        out_ndims=(2, 1),
        settings=(3,),
        target_batch_size=batch,
    )
    assert sums.shape == (1, 11) and doubled.shape == (11,)
    np.testing.assert_allclose(sums[0], (scale[:, None] * Y**3).sum(axis=0), rtol=1e-13)
    np.testing.assert_allclose(doubled, 2 * Y[0], rtol=1e-15)


def _protocol_results(X, Y):
    bands = [X[:, :40], X[:, 40:]]
    return {
        "ridge-dual": (ridge_cv(X, Y, np.logspace(-2, 4, 7), cv=4), X),
        "ridge-primal": (ridge_cv(X[:, :20], Y, np.logspace(-2, 4, 7), cv=4), X[:, :20]),
        "ridge-loo": (ridge_cv(X, Y, np.logspace(-2, 4, 7), cv="loo"), X),
        "banded": (banded_ridge_cv(bands, Y, np.logspace(-1, 3, 5), cv=4), X),
        "pls1": (pls1_cv(X, Y, 5, cv=4), X),
        "pls2": (pls2_cv(X, Y, 5, cv=4), X),
    }


def test_every_cross_validated_result_follows_the_protocol():
    X = design(44, 70, seed=19, offset=1.0)
    rng = np.random.default_rng(20)
    Y = X @ rng.standard_normal((70, 6)) / 8 + rng.standard_normal((44, 6))
    X_new = design(9, 70, seed=21, offset=1.0)
    for name, (result, X_fit) in _protocol_results(X, Y).items():
        assert isinstance(result, CrossValidatedResult), name
        n_grid = np.asarray(result.grid).shape[0]
        assert np.asarray(result.cv_scores).shape == (n_grid, 6), name
        best = np.asarray(result.best_index)
        assert best.shape == (6,) and np.all((best >= 0) & (best < n_grid)), name
        assert np.asarray(result.on_edge).shape == (6,), name
        np.testing.assert_allclose(
            best_scores(result), np.asarray(result.cv_scores)[best, np.arange(6)], err_msg=name
        )
        assert len(chosen_values(result)) == 6, name
        new = X_new[:, : X_fit.shape[1]]
        expected = new @ np.asarray(result.coef) + np.asarray(result.intercept)
        assert relative_error(result.predict(new), expected) <= 1e-10, name
        assert relative_error(result.predict(X_fit), X_fit @ result.coef + result.intercept) <= (
            1e-10
        ), name


def test_recorded_grid_keeps_a_one_column_grid_and_reduces_others_to_their_last_column():
    from types import SimpleNamespace

    from v4jax.solvers.engine.result import recorded_grid

    rng = np.random.default_rng(40)
    scores = rng.standard_normal((6, 4))
    grid = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    plain = recorded_grid(
        SimpleNamespace(grid=grid, cv_scores=scores, best_index=np.array([0, 5, 2, 2]))
    )
    np.testing.assert_array_equal(plain.chosen, [1.0, 6.0, 3.0, 3.0])
    np.testing.assert_array_equal(plain.chosen_index, [0, 5, 2, 2])
    # (field, alpha) rows, field-major: alphas 10 and 0.1 in the grid's order.
    grid = np.array([[0, 10.0], [0, 0.1], [1, 10.0], [1, 0.1], [2, 10.0], [2, 0.1]])
    best = np.array([3, 0, 4, 1])
    reduced = recorded_grid(SimpleNamespace(grid=grid, cv_scores=scores, best_index=best))
    np.testing.assert_array_equal(reduced.values, [10.0, 0.1])
    np.testing.assert_array_equal(reduced.cv_scores, [scores[0::2].max(0), scores[1::2].max(0)])
    np.testing.assert_array_equal(reduced.chosen, [0.1, 10.0, 10.0, 0.1])
    np.testing.assert_array_equal(reduced.chosen_index, [1, 0, 0, 1])
