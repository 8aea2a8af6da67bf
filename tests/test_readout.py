"""Factorised read-out: model vs numpy, gradients vs finite differences, determinism, recovery."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from v4jax import pearson_columns, ridge_cv
from v4jax.solvers.readout import (
    FactorisedReadout,
    fit_readout,
    gaussian_maps,
    predict_readout,
    readout_loss,
    readout_predict,
)


def _numpy_gaussian(centres, sizes, shape):
    """Gaussian maps summing to 1, written independently of the module (float64)."""
    rows = np.arange(shape[0])[None, :, None]
    columns = np.arange(shape[1])[None, None, :]
    squared = (rows - centres[:, 0, None, None]) ** 2 + (columns - centres[:, 1, None, None]) ** 2
    maps = np.exp(-squared / (2 * sizes[:, None, None] ** 2))
    return maps / maps.sum(axis=(1, 2), keepdims=True)


def _factorised_problem(seed=0, n_images=400, shape=(8, 8), n_channels=6, n_voxels=24, snr=2.0):
    """Features with spatial correlation and a factorised ground truth (as make_synthetic_vim1)."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n_images, shape[0] + 2, shape[1] + 2, n_channels))
    features = (raw[:, 1:-1, 1:-1] + 0.5 * (raw[:, :-2, 1:-1] + raw[:, 1:-1, :-2])).astype(
        np.float32
    )
    centres = rng.uniform(0.5, np.array(shape) - 1.5, (n_voxels, 2))
    sizes = rng.uniform(0.6, 1.5, n_voxels)
    weights = rng.standard_normal((n_voxels, n_channels))
    maps = _numpy_gaussian(centres, sizes, shape)
    signal = np.einsum("nhwc,vhw,vc->nv", features.astype(np.float64), maps, weights)
    noise = rng.standard_normal(signal.shape) * signal.std(axis=0) / np.sqrt(snr)
    return features, (signal + noise + 2.0).astype(np.float32), signal, centres


def _random_params(rng, spatial, n_voxels, shape, n_channels):
    params = {
        "weights": rng.standard_normal((n_voxels, n_channels)),
        "bias": rng.standard_normal(n_voxels),
    }
    if spatial == "gaussian":
        params["centre"] = rng.uniform(0, shape[0] - 1, (n_voxels, 2))
        params["log_size"] = rng.uniform(-0.5, 1.0, n_voxels)
    else:
        params["map"] = rng.standard_normal((n_voxels, *shape))
    return {name: jnp.asarray(value, dtype=jnp.float64) for name, value in params.items()}


@pytest.mark.parametrize(("shape", "n_channels"), [((5, 4), 3), ((3, 3), 12)])
def test_prediction_matches_numpy(shape, n_channels):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((7, *shape, n_channels))
    params = _random_params(rng, "gaussian", 4, shape, n_channels)
    maps = _numpy_gaussian(
        np.asarray(params["centre"]), np.exp(np.asarray(params["log_size"])), shape
    )
    expected = np.einsum(
        "nhwc,vhw,vc->nv", features, maps, np.asarray(params["weights"])
    ) + np.asarray(params["bias"])
    flat = jnp.asarray(features.reshape(7, -1, n_channels))
    actual = readout_predict(params, flat, shape)
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        gaussian_maps(params["centre"], params["log_size"], shape).reshape(4, *shape),
        maps,
        rtol=1e-10,
        atol=1e-14,
    )


@pytest.mark.parametrize("spatial", ["gaussian", "free"])
def test_loss_gradient_matches_finite_differences(spatial):
    rng = np.random.default_rng(2)
    shape, n_channels, n_voxels = (4, 5), 3, 3
    features = jnp.asarray(rng.standard_normal((11, shape[0] * shape[1], n_channels)))
    Y = jnp.asarray(rng.standard_normal((11, n_voxels)))
    params = _random_params(rng, spatial, n_voxels, shape, n_channels)
    penalties = {name: jnp.asarray(rng.uniform(0.01, 0.5, n_voxels)) for name in
                 ("weight", "map", "smoothness")}  # fmt: skip

    def total(p):
        return jnp.sum(readout_loss(p, features, Y, penalties, shape))

    gradient = jax.grad(total)(params)
    step = 1e-6
    for _ in range(6):
        direction = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()}
        plus = total({k: params[k] + step * direction[k] for k in params})
        minus = total({k: params[k] - step * direction[k] for k in params})
        numeric = (plus - minus) / (2 * step)
        analytic = sum(jnp.vdot(gradient[k], direction[k]) for k in params)
        assert abs(float(numeric - analytic)) <= 1e-7 * max(1.0, abs(float(analytic)))
    # One coordinate of each parameter, in isolation.
    for name, value in params.items():
        bumped = value.reshape(-1).at[1].add(step).reshape(value.shape)
        lowered = value.reshape(-1).at[1].add(-step).reshape(value.shape)
        numeric = (total({**params, name: bumped}) - total({**params, name: lowered})) / (2 * step)
        assert abs(float(numeric - gradient[name].reshape(-1)[1])) < 1e-7


def test_smoothness_penalty_is_the_graph_laplacian_quadratic_form():
    rng = np.random.default_rng(3)
    shape = (3, 4)
    params = _random_params(rng, "free", 1, shape, 2)
    features = jnp.zeros((2, 12, 2))
    Y = jnp.zeros((2, 1))
    zero = jnp.zeros(1)
    loss = readout_loss(params, features, Y, {"weight": zero, "map": zero, "smoothness":
                        jnp.ones(1)}, shape)  # fmt: skip
    adjacency = np.zeros((12, 12))
    for h in range(3):
        for w in range(4):
            for dh, dw in ((0, 1), (1, 0)):
                if h + dh < 3 and w + dw < 4:
                    i, j = h * 4 + w, (h + dh) * 4 + w + dw
                    adjacency[i, j] = adjacency[j, i] = 1
    laplacian = np.diag(adjacency.sum(1)) - adjacency
    s = np.asarray(params["map"]).reshape(-1)
    bias = float(params["bias"][0])
    np.testing.assert_allclose(loss[0], s @ laplacian @ s + bias**2, rtol=1e-12)


@pytest.mark.slow
def test_training_is_deterministic_for_a_fixed_key():
    features, Y, _, _ = _factorised_problem(n_images=160, n_voxels=6)
    options = {"max_steps": 40, "eval_every": 10, "progress": False}
    first = fit_readout(features, Y, key=jax.random.key(4), **options)
    second = fit_readout(features, Y, key=jax.random.key(4), **options)
    for name in ("spatial_maps", "channel_weights", "bias", "rf_centres", "heldout_index"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    other = fit_readout(features, Y, key=jax.random.key(5), **options)
    assert not np.array_equal(first.heldout_index, other.heldout_index)


@pytest.mark.slow
def test_recovers_centres_and_beats_ridge_small():
    """Fast version of the acceptance check (the slow test runs the vim-1 sized set)."""
    features, Y, signal, centres = _factorised_problem(n_images=420, n_voxels=16)
    train, test = slice(0, 340), slice(340, None)
    result = fit_readout(
        features[train], Y[train], key=jax.random.key(0), max_steps=300, progress=False
    )
    errors = np.linalg.norm(result.rf_centres - centres, axis=1)
    assert np.median(errors) < 0.5
    readout_r = pearson_columns(Y[test], predict_readout(result, features[test]))
    flat = features.reshape(len(features), -1)
    ridge = ridge_cv(flat[train], Y[train], np.logspace(-1, 5, 13))
    ridge_r = pearson_columns(Y[test], flat[test] @ ridge.coef + ridge.intercept)
    assert float(jnp.mean(readout_r)) > float(jnp.mean(ridge_r)) + 0.02
    # Predictions in original units follow the truth's offset and scale.
    truth_r = pearson_columns(signal[test], predict_readout(result, features[test]))
    assert float(jnp.min(truth_r)) > 0.8
    assert set(result.penalties) == {"weight"}
    assert result.history[0]["step"][0] == 0


@pytest.mark.slow
def test_free_maps_fit_and_predict():
    features, Y, _, centres = _factorised_problem(n_images=400, n_voxels=8, snr=5.0)
    model = FactorisedReadout(seed=1, spatial="free", max_steps=150, progress=False)
    model.fit(features[:340], Y[:340])
    errors = np.linalg.norm(model.result_.rf_centres - centres, axis=1)
    assert np.median(errors) < 1.0
    r = pearson_columns(Y[340:], model.predict(features[340:]))
    assert float(jnp.mean(r)) > 0.6
    assert set(model.result_.penalties) == {"weight", "map", "smoothness"}


def test_bad_input_messages():
    features, Y, _, _ = _factorised_problem(n_images=40, n_voxels=2)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        fit_readout(features.reshape(40, -1), Y, key=key)
    with pytest.raises(ValueError, match="features has 40 samples but Y has 39"):
        fit_readout(features, Y[:-1], key=key)
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        fit_readout(features, Y, key=0)
    with pytest.raises(ValueError, match="spatial='round'"):
        fit_readout(features, Y, key=key, spatial="round")
    with pytest.raises(ValueError, match="unknown penalties"):
        fit_readout(features, Y, key=key, penalties={"smoothness": [1.0]})
    bad = Y.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="Y contains 1 NaN"):
        fit_readout(features, bad, key=key)
    with pytest.raises(ValueError, match="fitted on"):
        fake = fit_readout(features, Y, key=key, init="grid", max_steps=1, progress=False)
        predict_readout(fake, features[:, :4])
    with pytest.raises(ValueError, match="not fitted"):
        FactorisedReadout().predict(features)


@pytest.mark.slow
def test_synthetic_vim1_recovery_and_ridge_comparison():
    """Acceptance: synthetic vim-1 (factorised ground truth), 1,750 training images."""
    from v4jax.data import filter_bank_features, simulate_vim1

    sim = simulate_vim1(
        n_train=1750, n_val=120, n_voxels=150, subjects=(1,), seed=1, signal_fraction=1.0,
        all_nan_fraction=0.0, partial_nan_fraction=0.0,
    )  # fmt: skip
    images = np.concatenate([sim.stim_train, sim.stim_val])
    features = ((filter_bank_features(images) - sim.feature_mean) / sim.feature_std).astype(
        np.float32
    )
    train, val = features[:1750], features[1750:]
    truth = sim.subjects[1]
    signal = truth.signal_mask
    result = fit_readout(train, truth.resp_train, key=jax.random.key(0), progress=False)
    errors = np.linalg.norm(result.rf_centres - truth.rf_centre_cells, axis=1)
    readout_r = np.asarray(pearson_columns(truth.resp_val, predict_readout(result, val)))
    ridge = ridge_cv(train.reshape(1750, -1), truth.resp_train, np.logspace(-1, 6, 15))
    ridge_pred = val.reshape(120, -1) @ ridge.coef + ridge.intercept
    ridge_r = np.asarray(pearson_columns(truth.resp_val, ridge_pred))
    print(
        f"\nsignal voxels {signal.sum()}: median RF centre error {np.median(errors[signal]):.3f} "
        f"cells; validation r readout {readout_r[signal].mean():.4f} vs ridge "
        f"{ridge_r[signal].mean():.4f} (ceiling {truth.noise_ceiling_r[signal].mean():.4f})"
    )
    assert signal.sum() >= 30
    assert np.median(errors[signal]) < 1.0
    assert readout_r[signal].mean() > ridge_r[signal].mean()
    assert np.median(readout_r[signal] - ridge_r[signal]) > 0


@pytest.mark.slow
def test_starts_from_fwrf_and_only_refines():
    """init="fwrf": the start is fwrf_cv's answer on the standardised training split."""
    from v4jax import fwrf_cv

    features, Y, _, centres = _factorised_problem(seed=6, n_images=200, n_voxels=5, snr=4.0)
    result = fit_readout(features, Y, key=jax.random.key(1), max_steps=20, progress=False)
    train = result.train_index
    F = features.reshape(200, -1, 6).astype(np.float64)
    mean, std = F[train].mean(axis=(0, 1)), F[train].std(axis=(0, 1))
    Z = (Y[train] - Y[train].mean(0)) / Y[train].std(0)
    maps = ((F[train] - mean) / std).reshape(len(train), 8, 8, 6)
    reference = fwrf_cv(maps.astype(np.float32), Z.astype(np.float32))
    np.testing.assert_allclose(result.init_centres, reference.centres)
    np.testing.assert_allclose(result.init_sizes, reference.sizes, rtol=1e-6)
    expected_penalty = np.asarray(reference.best_alphas) / len(train)
    np.testing.assert_allclose(result.penalties["weight"], expected_penalty, rtol=1e-4)
    assert set(result.penalty_grid["weight"]) == set(result.penalties["weight"].tolist())
    assert np.mean(result.heldout_r) >= np.mean(result.init_r) - 0.02  # refines, keeps the best
    assert np.median(np.linalg.norm(result.rf_centres - centres, axis=1)) < 0.6
    assert result.history[0]["step"][-1] <= 20
