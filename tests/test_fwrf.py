"""fwRF: pooled designs vs float64 numpy, one candidate vs ridge_cv, every candidate vs a
per-fold numpy ridge, field recovery, multi-layer pooling, predictions and bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from v4jax import fwrf_cv, pooled_designs, ridge_cv
from v4jax.metrics import r2_columns
from v4jax.pipeline.fwrf_figure import plot_receptive_fields


def _numpy_fields(candidates, layer_shape, first_shape):
    """(G, H, W) Gaussian fields in float64, written independently of the module."""
    rows = (np.arange(layer_shape[0]) + 0.5) * first_shape[0] / layer_shape[0] - 0.5
    columns = (np.arange(layer_shape[1]) + 0.5) * first_shape[1] / layer_shape[1] - 0.5
    squared = (rows[None, :, None] - candidates[:, 0, None, None]) ** 2 + (
        columns[None, None, :] - candidates[:, 1, None, None]
    ) ** 2
    fields = np.exp(-squared / (2 * candidates[:, 2, None, None] ** 2))
    return fields / fields.sum(axis=(1, 2), keepdims=True)


def _candidates(centres, sizes):
    return np.array([(r, c, s) for r, c in centres for s in sizes], dtype=np.float64)


def _fwrf_problem(seed=0, n_images=300, shape=(6, 6), n_channels=5, n_voxels=12, snr=4.0):
    """Spatially correlated maps with a large offset and responses from known fields."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n_images, shape[0] + 1, shape[1] + 1, n_channels))
    maps = raw[:, 1:, 1:] + 0.5 * raw[:, :-1, 1:] + 3.0
    centres = rng.uniform(0.5, np.array(shape) - 1.5, (n_voxels, 2))
    sizes = rng.uniform(0.6, 1.2, n_voxels)
    fields = _numpy_fields(np.column_stack([centres, sizes]), shape, shape)
    weights = rng.standard_normal((n_voxels, n_channels))
    signal = np.einsum("nhwc,vhw,vc->nv", maps, fields, weights)
    noise = rng.standard_normal(signal.shape) * signal.std(axis=0) / np.sqrt(snr)
    return maps, signal + noise + 1.5, centres


def test_pooled_designs_equal_float64_einsum():
    rng = np.random.default_rng(1)
    first = rng.standard_normal((9, 6, 5, 4)) + 2.0
    second = rng.standard_normal((9, 3, 4, 3))
    centres, sizes = np.array([[0.0, 0.0], [2.5, 3.2], [5.0, 1.0]]), np.array([0.7, 1.9])
    candidates = _candidates(centres, sizes)
    expected = np.concatenate(
        [
            np.einsum("nhwc,ghw->gnc", first, _numpy_fields(candidates, (6, 5), (6, 5))),
            np.einsum("nhwc,ghw->gnc", second, _numpy_fields(candidates, (3, 4), (6, 5))),
        ],
        axis=2,
    )
    actual = np.asarray(pooled_designs([first, second], centres, sizes))
    assert np.linalg.norm(actual - expected) <= 1e-12 * np.linalg.norm(expected)
    single = np.asarray(pooled_designs(first.astype(np.float32), centres, sizes))
    assert single.dtype == np.float32
    assert np.linalg.norm(single - expected[..., :4]) <= 1e-5 * np.linalg.norm(expected[..., :4])


@pytest.mark.parametrize("score", ["r2", pytest.param("pearson", marks=pytest.mark.slow)])
def test_single_candidate_equals_ridge_cv_on_the_pooled_design(score):
    maps, Y, _ = _fwrf_problem(seed=2, n_images=120, n_voxels=7)
    centre, size = np.array([[2.3, 3.1]]), np.array([1.1])
    alphas = np.logspace(-2, 3, 6)
    result = fwrf_cv(
        maps, Y, centres=centre, sizes=size, alphas=alphas, relative_alphas=False, score=score,
        cv=3,
    )  # fmt: skip
    design = np.asarray(pooled_designs(maps, centre, size))[0]
    reference = ridge_cv(design, Y, alphas, cv=3, score=score)
    scale = np.linalg.norm(np.asarray(reference.cv_scores))
    assert (
        np.linalg.norm(np.asarray(result.cv_scores) - np.asarray(reference.cv_scores))
        <= 1e-10 * scale
    )
    np.testing.assert_array_equal(result.best_index, reference.best_index)
    coef_error = np.linalg.norm(np.asarray(result.coef) - np.asarray(reference.coef))
    assert coef_error <= 1e-9 * np.linalg.norm(np.asarray(reference.coef))
    np.testing.assert_allclose(result.intercept, reference.intercept, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(result.on_edge, reference.on_edge)
    new = np.random.default_rng(3).standard_normal((4, *maps.shape[1:]))
    expected = reference.predict(np.asarray(pooled_designs(new, centre, size))[0])
    np.testing.assert_allclose(result.predict(new), expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="fitted on"):
        result.predict(new[:, :2])


def _numpy_fold_scores(design, Y, alphas, folds):
    """(A, T) mean held-out R² of ridge refitted per fold, float64 numpy, from scratch."""
    total = 0.0
    for train, test in folds:
        X_mean, y_mean = design[train].mean(0), Y[train].mean(0)
        Xc, Yc = design[train] - X_mean, Y[train] - y_mean
        fold = []
        for alpha in alphas:
            coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(Xc.shape[1]), Xc.T @ Yc)
            fold.append(np.asarray(r2_columns(Y[test], (design[test] - X_mean) @ coef + y_mean)))
        total = total + np.stack(fold)
    return total / len(folds)


def test_every_candidate_and_alpha_matches_numpy_ridge_per_fold():
    maps, Y, _ = _fwrf_problem(seed=4, n_images=90, shape=(4, 5), n_channels=3, n_voxels=5)
    centres, sizes = np.array([[0.5, 1.0], [2.0, 3.5], [3.0, 0.0]]), np.array([0.8, 1.6])
    alphas = np.array([1e-3, 1e-1, 10.0])
    folds = [(np.setdiff1d(np.arange(90), t), t) for t in np.array_split(np.arange(90), 3)]
    result = fwrf_cv(maps, Y, centres=centres, sizes=sizes, alphas=alphas, cv=folds,
                     candidate_batch_size=4)  # fmt: skip
    designs = np.asarray(pooled_designs(maps, centres, sizes))
    for g, design in enumerate(designs):
        centred = design - design.mean(0)
        scale = np.trace(centred.T @ centred) / design.shape[1]
        expected = _numpy_fold_scores(design, Y, alphas * scale, folds)
        actual = np.asarray(result.cv_scores[g * 3 : g * 3 + 3])
        assert np.linalg.norm(actual - expected) <= 1e-10 * np.linalg.norm(expected)
        np.testing.assert_allclose(result.alpha_values[g], alphas * scale, rtol=1e-12)
    best = np.asarray(result.best_index)
    np.testing.assert_array_equal(result.grid[best, :2], result.centres)
    np.testing.assert_array_equal(result.grid[best, 2], result.sizes)


@pytest.mark.slow
def test_recovers_fields_and_predicts_float32():
    maps, Y, centres = _fwrf_problem(seed=5, n_images=400, shape=(7, 7), n_voxels=10)
    maps, Y = maps.astype(np.float32), Y.astype(np.float32)
    result = fwrf_cv(maps[:340], Y[:340], sizes=[0.6, 1.0, 1.6], target_batch_size=4)
    errors = np.linalg.norm(result.centres - centres, axis=1)
    assert np.median(errors) <= 0.6
    assert result.cv_scores.shape == (49 * 3 * 5, 10)
    assert result.coef.dtype == np.float32 and result.channel_weights.shape == (10, 5)
    prediction = np.asarray(result.predict(maps[340:]))
    assert float(np.mean(np.asarray(r2_columns(Y[340:], prediction)))) > 0.5
    flat = np.asarray(result.predict(maps[340:].reshape(60, -1)))
    np.testing.assert_allclose(flat, prediction, rtol=1e-6, atol=1e-5)


@pytest.mark.slow
def test_two_layers_pool_the_same_field():
    maps, Y, _ = _fwrf_problem(seed=6, n_images=80, shape=(6, 6), n_voxels=4)
    coarse = maps.reshape(80, 3, 2, 3, 2, 5).mean(axis=(2, 4))[..., :2]
    centres, sizes = np.array([[1.0, 4.0], [3.5, 2.0]]), np.array([1.2])
    result = fwrf_cv([maps, coarse], Y, centres=centres, sizes=sizes, alphas=[0.1, 1.0])
    design = np.asarray(pooled_designs([maps, coarse], centres, sizes))
    assert design.shape == (2, 80, 7) and result.coef.shape == (7, 4)
    best = np.asarray(result.best_index) // 2
    new_maps, new_coarse = maps[:5] * 0.5, coarse[:5] - 1.0
    new_design = np.asarray(pooled_designs([new_maps, new_coarse], centres, sizes))
    expected = np.einsum("tnc,ct->nt", new_design[best], np.asarray(result.coef))
    np.testing.assert_allclose(
        result.predict([new_maps, new_coarse]), expected + np.asarray(result.intercept),
        rtol=1e-10, atol=1e-10,
    )  # fmt: skip


@pytest.mark.slow
def test_shards_targets_over_devices():
    maps, Y, _ = _fwrf_problem(seed=7, n_images=60, shape=(4, 4), n_voxels=9)
    options = {"centres": [[1.0, 1.0], [2.0, 3.0]], "sizes": [1.0], "alphas": [0.1, 1.0]}
    one = fwrf_cv(maps, Y, devices=jax.devices()[:1], **options)
    every = fwrf_cv(maps, Y, devices=jax.devices(), **options)
    np.testing.assert_allclose(every.cv_scores, one.cv_scores, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(every.coef, one.coef, rtol=1e-10, atol=1e-12)


def test_bad_input_messages():
    maps, Y, _ = _fwrf_problem(n_images=30, shape=(3, 3), n_voxels=2)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        fwrf_cv(maps.reshape(30, -1), Y)
    with pytest.raises(ValueError, match="maps has 30 samples but Y has 29"):
        fwrf_cv(maps, Y[:-1])
    with pytest.raises(ValueError, match="maps\\[1\\] has 29 images"):
        fwrf_cv([maps, maps[:-1]], Y)
    with pytest.raises(ValueError, match="centres must be"):
        fwrf_cv(maps, Y, centres=[1.0, 2.0])
    with pytest.raises(ValueError, match="sizes must be positive"):
        fwrf_cv(maps, Y, sizes=[0.0])
    with pytest.raises(ValueError, match="complement"):
        fwrf_cv(
            maps, Y, cv=[(np.arange(10), np.arange(10, 20)), (np.arange(20), np.arange(20, 30))]
        )
    bad = Y.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="Y contains 1 NaN"):
        fwrf_cv(maps, bad)


@pytest.mark.slow
def test_synthetic_vim1_recovers_fields_and_beats_flat_ridge():
    """Acceptance: synthetic vim-1 (Gaussian RF x channel ground truth), 1,750 training images."""
    from v4jax import pearson_columns
    from v4jax.data import filter_bank_features, simulate_vim1

    sim = simulate_vim1(
        n_train=1750, n_val=120, n_voxels=400, subjects=(1,), seed=3,
        all_nan_fraction=0.0, partial_nan_fraction=0.0,
    )  # fmt: skip
    images = np.concatenate([sim.stim_train, sim.stim_val])
    features = ((filter_bank_features(images) - sim.feature_mean) / sim.feature_std).astype(
        np.float32
    )
    train, val = features[:1750], features[1750:]
    truth = sim.subjects[1]
    signal = truth.signal_mask
    result = fwrf_cv(train, truth.resp_train)
    errors = np.linalg.norm(result.centres - truth.rf_centre_cells, axis=1)
    fwrf_r = np.asarray(pearson_columns(truth.resp_val, result.predict(val)))
    flat = train.reshape(1750, -1)
    ridge = ridge_cv(flat, truth.resp_train, np.logspace(-1, 6, 15))
    ridge_r = np.asarray(pearson_columns(truth.resp_val, ridge.predict(val.reshape(120, -1))))
    print(
        f"\nsignal voxels {signal.sum()}: median RF centre error {np.median(errors[signal]):.3f} "
        f"cells; validation r fwRF {fwrf_r[signal].mean():.4f} vs flat ridge "
        f"{ridge_r[signal].mean():.4f} (ceiling {truth.noise_ceiling_r[signal].mean():.4f})"
    )
    assert signal.sum() >= 60
    assert np.median(errors[signal]) <= 0.6
    assert fwrf_r[signal].mean() > ridge_r[signal].mean()
    assert np.median(fwrf_r[signal] - ridge_r[signal]) > 0


def test_receptive_field_figure_is_written(tmp_path):
    rng = np.random.default_rng(8)
    centres = rng.uniform(0, 12, (30, 2))
    sizes = rng.uniform(0.5, 2.5, 30)
    labels = np.array(["V1", "V4", "LO"])[rng.integers(0, 3, 30)]
    for suffix in ("png", "pdf"):
        path = plot_receptive_fields(centres, sizes, labels, (13, 13), tmp_path / f"rf.{suffix}")
        assert path.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rf.pdf", "rf.png"]
    with pytest.raises(ValueError, match="one entry per voxel"):
        plot_receptive_fields(centres, sizes[:-1], labels, (13, 13), tmp_path / "bad.png")
