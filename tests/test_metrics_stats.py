"""Bootstrap intervals, permutation nulls and the NSD-style noise ceiling against numpy references
and simulations with known answers (fixed seeds; tolerances stated per test)."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import r2_score

from v4jax.metrics import (
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_scores,
    ceiling_normalised,
    noise_ceiling_from_ncsnr,
    noise_ceiling_ncsnr,
    permutation_indices,
    permutation_null,
    permutation_pvalues,
)


def _correlated(rng, n_samples, n_voxels, rho, dtype=np.float64):
    """Pairs (truth, prediction) whose population Pearson correlation is ``rho`` per voxel."""
    truth = rng.standard_normal((n_samples, n_voxels))
    noise = rng.standard_normal((n_samples, n_voxels))
    prediction = rho * truth + np.sqrt(1.0 - rho**2) * noise
    return truth.astype(dtype), prediction.astype(dtype)


def _numpy_score(metric, truth, prediction):
    """Independent float64 reference: np.corrcoef per column, or scikit-learn's r2_score."""
    if metric == "pearson":
        return np.array(
            [np.corrcoef(truth[:, v], prediction[:, v])[0, 1] for v in range(truth.shape[1])]
        )
    return r2_score(truth, prediction, multioutput="raw_values")


def _relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("metric", ["pearson", "r2"])
def test_bootstrap_scores_equal_a_numpy_loop_over_the_same_rows(metric):
    rng = np.random.default_rng(11)
    truth, prediction = _correlated(rng, 40, 7, 0.6)
    rows = bootstrap_indices(40, 60, seed=5)
    expected = np.stack([_numpy_score(metric, truth[r], prediction[r]) for r in rows])
    # batch=7 does not divide 60: the padded last batch must not leak into the result.
    for batch in (None, 7):
        ours = bootstrap_scores(truth, prediction, metric=metric, n_boot=60, seed=5, batch=batch)
        assert ours.shape == (60, 7)
        assert _relative_error(ours, expected) < 1e-10
    low, high = bootstrap_ci(truth, prediction, metric=metric, n_boot=60, seed=5, confidence=0.9)
    np.testing.assert_allclose(low, np.percentile(expected, 5, axis=0), rtol=1e-10)
    np.testing.assert_allclose(high, np.percentile(expected, 95, axis=0), rtol=1e-10)


def test_bootstrap_is_deterministic_per_seed_and_float32_by_default():
    rng = np.random.default_rng(12)
    truth, prediction = _correlated(rng, 50, 5, 0.4, dtype=np.float32)
    first = bootstrap_ci(truth, prediction, n_boot=100, seed=3)
    again = bootstrap_ci(truth, prediction, n_boot=100, seed=3)
    other = bootstrap_ci(truth, prediction, n_boot=100, seed=4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    replicates = bootstrap_scores(truth, prediction, n_boot=100, seed=3)
    assert replicates.dtype == np.float32
    rows = bootstrap_indices(50, 100, seed=3)
    reference = np.stack(
        [_numpy_score("pearson", truth[r].astype(np.float64), prediction[r]) for r in rows]
    )
    assert _relative_error(replicates, reference) < 1e-4


def test_bootstrap_interval_covers_the_true_correlation_about_95_percent_of_the_time():
    # 200 independent voxels with population r = 0.5, 100 images each. Coverage of a 95%
    # interval is Binomial(200, 0.95): mean 190, s.d. 3.1; accept 181..199 (about 3 s.d.).
    # (Percentile intervals for r at n = 100 under-cover slightly, which this tolerates.)
    rng = np.random.default_rng(2024)
    truth, prediction = _correlated(rng, 100, 200, 0.5)
    low, high = bootstrap_ci(truth, prediction, n_boot=1000, seed=7)
    covered = int(np.sum((low <= 0.5) & (0.5 <= high)))
    assert 181 <= covered <= 199, covered
    # The interval width matches the Fisher-z approximation within 15%.
    fisher = np.tanh(np.arctanh(0.5) + np.array([-1, 1]) * 1.96 / np.sqrt(97))
    assert abs(np.median(high - low) / (fisher[1] - fisher[0]) - 1.0) < 0.15


def test_permutation_null_equals_a_numpy_loop_and_pvalues_count_it():
    rng = np.random.default_rng(13)
    truth, prediction = _correlated(rng, 30, 6, 0.3)
    orders = permutation_indices(30, 49, seed=2)
    assert np.array_equal(np.sort(orders, axis=1), np.tile(np.arange(30), (49, 1)))
    expected = np.stack([_numpy_score("pearson", truth, prediction[o]) for o in orders])
    null = permutation_null(truth, prediction, n_permutations=49, seed=2, batch=10)
    assert _relative_error(null, expected) < 1e-10
    observed = _numpy_score("pearson", truth, prediction)
    p = permutation_pvalues(truth, prediction, n_permutations=49, seed=2)
    np.testing.assert_array_equal(p, (np.sum(expected >= observed, axis=0) + 1) / 50)
    p_two = permutation_pvalues(
        truth, prediction, n_permutations=49, seed=2, alternative="two-sided"
    )
    np.testing.assert_array_equal(
        p_two, (np.sum(np.abs(expected) >= np.abs(observed), axis=0) + 1) / 50
    )


def test_permutation_pvalues_are_uniform_under_the_null_and_tiny_for_signal():
    rng = np.random.default_rng(14)
    truth, prediction = _correlated(rng, 60, 400, 0.0)
    p = permutation_pvalues(truth, prediction, n_permutations=199, seed=1)
    # Uniform on {1/200, ..., 1}: KS against U(0, 1) (discreteness costs < 1/200) and the
    # fraction below 0.05 within 3 s.d. of Binomial(400, 0.05) (mean 20, s.d. 4.4).
    assert stats.kstest(p, "uniform").pvalue > 0.001
    assert 7 <= int(np.sum(p <= 0.05)) <= 33
    truth, prediction = _correlated(rng, 60, 50, 0.8)
    strong = permutation_pvalues(truth, prediction, n_permutations=199, seed=1)
    np.testing.assert_array_equal(strong, np.full(50, 1 / 200))


def _repeats(rng, n_repeats, n_images, ncsnr, noise_sd=1.0, offset=0.0):
    """Single trials: image signal with s.d. ncsnr * noise_sd, plus independent trial noise."""
    signal = rng.standard_normal((n_images, ncsnr.size)) * ncsnr * noise_sd
    noise = rng.standard_normal((n_repeats, n_images, ncsnr.size)) * noise_sd
    return signal + noise + offset, signal


def test_ncsnr_recovers_the_simulated_signal_to_noise_ratio():
    rng = np.random.default_rng(15)
    true_ncsnr = np.linspace(0.5, 2.0, 40)
    repeats, _ = _repeats(rng, 3, 2000, true_ncsnr, noise_sd=rng.uniform(0.5, 3, 40), offset=4)
    estimate = noise_ceiling_ncsnr(repeats)
    # Sampling error with 2000 images x 3 repeats is about 2-5% here; allow 12% per voxel.
    relative = np.abs(estimate / true_ncsnr - 1.0)
    assert relative.max() < 0.12, relative.max()
    assert np.median(relative) < 0.04
    # Each voxel's scale and offset do not matter (z-scoring first gives the same NCSNR).
    z = (repeats - repeats.mean(axis=(0, 1))) / repeats.std(axis=(0, 1))
    np.testing.assert_allclose(noise_ceiling_ncsnr(z * 7.0 - 2.0), estimate, rtol=1e-10)


def test_ncsnr_edge_cases_noise_only_noiseless_missing_and_constant():
    rng = np.random.default_rng(16)
    noise_only, _ = _repeats(rng, 2, 3000, np.zeros(20))
    # No signal: the signal-variance estimate scatters around 0 (s.d. about 0.03 here) and
    # is clipped at 0, so about half the voxels are exactly 0 and ncsnr² stays small.
    noise_ncsnr = noise_ceiling_ncsnr(noise_only)
    assert np.mean(noise_ncsnr == 0.0) >= 0.3
    assert np.max(noise_ncsnr**2) < 0.1
    signal = rng.standard_normal((500, 1))
    noiseless = np.broadcast_to(signal, (3, 500, 1))
    assert noise_ceiling_ncsnr(noiseless)[0] == np.inf
    constant = np.ones((3, 500, 1))
    assert np.isnan(noise_ceiling_ncsnr(constant)[0])
    repeats, _ = _repeats(rng, 3, 2000, np.full(10, 1.0))
    full = noise_ceiling_ncsnr(repeats)
    holes = repeats.copy()
    holes[:, rng.random(2000) < 0.1, 3] = np.nan  # missing images of voxel 3
    holes[0, :50, 4] = np.nan  # one missing repeat: those images keep 2 of 3
    holes[:, :, 5] = np.nan  # a voxel with no data
    partial = noise_ceiling_ncsnr(holes)
    assert np.isnan(partial[5])
    kept = np.delete(np.arange(10), 5)
    assert np.max(np.abs(partial[kept] / full[kept] - 1.0)) < 0.05
    np.testing.assert_array_equal(partial[:3], full[:3])


def test_noise_ceiling_is_the_r2_of_a_perfect_model_on_averaged_responses():
    # A prediction equal to the noise-free signal, scored against the mean of k repeats,
    # reaches r² = ncsnr² / (ncsnr² + 1/k); checked by simulation to within 0.02.
    rng = np.random.default_rng(17)
    true_ncsnr = np.array([0.25, 0.5, 1.0, 2.0])
    for k in (1, 3, 13):
        repeats, signal = _repeats(rng, k, 20000, true_ncsnr)
        r2 = _numpy_score("pearson", repeats.mean(axis=0), signal) ** 2
        ceiling = noise_ceiling_from_ncsnr(true_ncsnr, k)
        assert np.max(np.abs(r2 - ceiling)) < 0.02
        # The synthetic generator's convention: snr = k * ncsnr², ceiling = snr / (1 + snr).
        snr = k * true_ncsnr**2
        np.testing.assert_allclose(ceiling, snr / (1 + snr), rtol=1e-12)
    np.testing.assert_array_equal(noise_ceiling_from_ncsnr([np.inf, 0.0], 2), [1.0, 0.0])


def test_ceiling_normalised_divides_and_masks_undefined_ceilings():
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    ceiling = np.array([0.5, 0.4, 0.0, -0.1, np.nan])
    ratio = ceiling_normalised(score, ceiling)
    np.testing.assert_allclose(ratio[:2], [0.2, 0.5], rtol=1e-15)
    assert np.all(np.isnan(ratio[2:]))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: bootstrap_ci(np.ones((10, 3)), np.ones((10, 2))), "shape"),
        (lambda: bootstrap_ci(np.ones((2, 3)), np.ones((2, 3))), "at least 3"),
        (lambda: bootstrap_ci(np.eye(5), np.eye(5), confidence=1.5), "confidence"),
        (lambda: bootstrap_ci(np.eye(5), np.eye(5), metric="spearman"), "metric"),
        (lambda: bootstrap_ci(np.full((5, 2), np.nan), np.eye(5, 2)), "NaN"),
        (lambda: bootstrap_ci(np.eye(5), np.eye(5), n_boot=0), "n_boot"),
        (lambda: permutation_pvalues(np.eye(5), np.eye(5), alternative="less"), "alternative"),
        (lambda: noise_ceiling_ncsnr(np.ones((4, 5))), "3-D"),
        (lambda: noise_ceiling_ncsnr(np.ones((1, 4, 5))), "at least 2 repeats"),
        (lambda: noise_ceiling_from_ncsnr([1.0], 0), "n_averaged"),
        (lambda: noise_ceiling_from_ncsnr([-1.0], 3), ">= 0"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_message(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
