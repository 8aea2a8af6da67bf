"""Numerical robustness of ridge_cv and pls1_cv on hard designs, against float64 references.

References are computed in float64 from the very inputs the engines received (float32 inputs are
rounded first), so the comparison measures the engine's own rounding, not the input's. Ridge is
checked against an augmented least-squares solve (numpy ``lstsq``), PLS against scikit-learn's
``PLSRegression`` fitted per target. Tolerances (relative Frobenius error of the coefficients):
float64 1e-9, float32 5e-4 (see ``docs/reliability.md`` for every measured value).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression as SklearnPLS
from sklearn.linear_model import Ridge

from v4jax import pls1_cv, ridge_cv
from v4jax.solvers.diagnostics import (
    ConditioningWarning,
    check_conditioning,
    condition_message,
    conditioning,
)

TOLERANCE = {np.float64: 1e-9, np.float32: 5e-4}
N_SAMPLES, N_FEATURES = 60, 20


def relative_error(actual, reference) -> float:
    actual = np.asarray(actual, np.float64)
    reference = np.asarray(reference, np.float64)
    return float(np.linalg.norm(actual - reference) / np.linalg.norm(reference))


def ridge_reference(X, Y, alpha: float) -> np.ndarray:
    """(p, t) float64 ridge coefficients with intercept: lstsq of [Xc; sqrt(a) I] b = [Yc; 0]."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    design = np.vstack([Xc, np.sqrt(alpha) * np.eye(X.shape[1])])
    target = np.vstack([Yc, np.zeros((X.shape[1], Y.shape[1]))])
    return np.linalg.lstsq(design, target, rcond=None)[0]


def pls_reference(X, Y, n_components: int) -> np.ndarray:
    """(p, t) scikit-learn PLS1 coefficients, one single-target model per column, float64."""
    X = np.asarray(X, np.float64)
    columns = [
        SklearnPLS(n_components=n_components, scale=False).fit(X, np.asarray(y, np.float64))
        for y in np.asarray(Y).T
    ]
    return np.column_stack([model.coef_.ravel() for model in columns])


def hard_designs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (X, Y): fresh seeded data with the pathologies of real feature matrices."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES))
    Y = X @ rng.standard_normal((N_FEATURES, 3)) + rng.standard_normal((N_SAMPLES, 3))
    zero_variance = X.copy()
    zero_variance[:, 3] = 7.0
    wide = rng.standard_normal((30, 500))
    wide_Y = wide @ rng.standard_normal((500, 2)) * 0.05 + rng.standard_normal((30, 2))
    tall = rng.standard_normal((2000, 10))
    tall_Y = tall @ rng.standard_normal((10, 2)) + rng.standard_normal((2000, 2))
    return {
        "plain": (X, Y),
        "offset 1e4": (X + 1e4, Y),
        "scale 1e6": (X * 1e6, Y),
        "duplicate columns": (np.hstack([X, X[:, :5]]), Y),
        "zero-variance column": (zero_variance, Y),
        "n << p": (wide, wide_Y),
        "n >> p": (tall, tall_Y),
    }


DESIGNS = hard_designs()
# (design, alpha): alphas from 1e-12 to 1e12, scaled with the design where it is rescaled.
RIDGE_CASES = [
    ("plain", 1e-12),
    ("plain", 1e12),
    ("offset 1e4", 1.0),
    ("scale 1e6", 1.0),
    ("duplicate columns", 1e-3),
    ("zero-variance column", 1e-3),
    ("n << p", 1e-3),
    ("n >> p", 1e-3),
]


def ridge_params():
    for name, alpha in RIDGE_CASES:
        for solver in ("primal", "dual"):
            if solver == "dual" and DESIGNS[name][0].shape[0] > 200:
                continue  # the dual path is for n_features > n_samples
            for dtype in (np.float64, np.float32):
                label = f"{name} a={alpha:g}-{solver}-{np.dtype(dtype).name}"
                yield pytest.param(name, alpha, solver, dtype, id=label)


@pytest.mark.parametrize(("name", "alpha", "solver", "dtype"), list(ridge_params()))
def test_ridge_on_hard_designs_matches_float64_lstsq(name, alpha, solver, dtype):
    X, Y = (values.astype(dtype) for values in DESIGNS[name])
    result = ridge_cv(X, Y, [alpha], cv=3, solver=solver)
    coef = np.asarray(result.coef)
    assert np.all(np.isfinite(coef)) and np.all(np.isfinite(np.asarray(result.cv_scores)))
    reference = ridge_reference(X, Y, alpha)
    centred = X.astype(np.float64) - X.astype(np.float64).mean(axis=0)
    predictions, expected = centred @ coef, centred @ reference
    # Predictions are the identifiable quantity; coefficients too, except along exactly
    # duplicated columns, where the split between the copies is set by rounding in float32.
    assert relative_error(predictions, expected) < TOLERANCE[dtype]
    if not (name == "duplicate columns" and dtype == np.float32):
        assert relative_error(coef, reference) < TOLERANCE[dtype]


def test_float32_dual_keeps_kernel_directions_under_the_rounding_floor_when_alpha_damps_them():
    """Low-rank features (as conv3's): most kernel eigenvalues sit under n * eps * lam_max. With
    alpha = 10x that floor, dropping them (as a pseudo-inverse) biased predictions by 1.6e-2
    (and the demo's conv3 ridge by 0.2); keeping them, the float32 fit is within 1e-3."""
    rng = np.random.default_rng(3)
    n, p = 200, 3000
    latent = rng.standard_normal((n, 16))
    X = latent @ rng.standard_normal((16, p)) / 4 + rng.standard_normal((n, p)) * 0.02 + 0.5
    Y = latent @ rng.standard_normal((16, 4)) + rng.standard_normal((n, 4))
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    spectrum = kernel_spectrum(X)
    floor = n * np.finfo(np.float32).eps * spectrum.max()
    assert np.mean(spectrum < floor) > 0.5
    alpha = 10 * floor
    coef = ridge_cv(X, Y, [alpha], cv=3, solver="dual").coef
    centred = X.astype(np.float64) - X.astype(np.float64).mean(axis=0)
    expected = centred @ ridge_reference(X, Y, alpha)
    assert relative_error(centred @ np.asarray(coef, np.float64), expected) < 1e-3


def test_ridge_scale_equivariance_huge_features():
    """coef(c X, c² alpha) = coef(X, alpha) / c for c = 1e6, in float64 and float32."""
    X, Y = DESIGNS["plain"]
    for dtype, tolerance in TOLERANCE.items():
        small = ridge_cv(X.astype(dtype), Y.astype(dtype), [3.0], cv=3)
        huge = ridge_cv((X * 1e6).astype(dtype), Y.astype(dtype), [3.0e12], cv=3)
        assert relative_error(np.asarray(huge.coef) * 1e6, small.coef) < tolerance


def test_ridge_zero_variance_column_and_duplicates_get_the_minimum_norm_split():
    X, Y = DESIGNS["zero-variance column"]
    coef = np.asarray(ridge_cv(X, Y, [1e-3], cv=3, solver="primal").coef)
    assert np.abs(coef[3]).max() < 1e-12 * np.abs(coef).max()
    X, Y = DESIGNS["duplicate columns"]
    coef = np.asarray(ridge_cv(X, Y, [1e-3], cv=3, solver="dual").coef)
    np.testing.assert_allclose(coef[:5], coef[N_FEATURES:], rtol=1e-9)


def test_ridge_zero_variance_targets_give_zero_coefficients_and_zero_scores():
    X, _ = DESIGNS["plain"]
    Y = np.column_stack([np.full(N_SAMPLES, 5.0), X[:, 0] + 0.1 * X[:, 1]])
    for dtype in TOLERANCE:
        result = ridge_cv(X.astype(dtype), Y.astype(dtype), np.logspace(-12, 12, 7), cv=3)
        coef, intercept = np.asarray(result.coef), np.asarray(result.intercept)
        assert np.abs(coef[:, 0]).max() < 1e-5
        assert intercept[0] == pytest.approx(5.0, rel=1e-6)
        # A constant held-out target has no defined score: 0 for every alpha, never NaN.
        np.testing.assert_array_equal(np.asarray(result.cv_scores)[:, 0], 0.0)
        assert np.asarray(result.cv_scores)[:, 1].max() > 0.9


def test_ridge_alpha_grid_1e_minus12_to_1e12_scores_match_numpy_cv():
    """Every alpha of a 25-decade grid gets a finite score equal to a float64 numpy CV loop."""
    X, Y = DESIGNS["plain"]
    alphas = np.logspace(-12, 12, 9)
    result = ridge_cv(X, Y, alphas, cv=3)
    folds = np.array_split(np.arange(N_SAMPLES), 3)
    expected = np.zeros((alphas.size, Y.shape[1]))
    for test in folds:
        train = np.setdiff1d(np.arange(N_SAMPLES), test)
        for index, alpha in enumerate(alphas):
            coef = ridge_reference(X[train], Y[train], alpha)
            prediction = (X[test] - X[train].mean(0)) @ coef + Y[train].mean(0)
            residual = ((Y[test] - prediction) ** 2).sum(0)
            total = ((Y[test] - Y[test].mean(0)) ** 2).sum(0)
            expected[index] += (1 - residual / total) / len(folds)
    np.testing.assert_allclose(np.asarray(result.cv_scores), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(result.best_index), expected.argmax(0))


PLS_CASES = [
    "offset 1e4",
    "scale 1e6",
    "duplicate columns",
    "zero-variance column",
    "n << p",
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("name", PLS_CASES)
def test_pls1_on_hard_designs_matches_sklearn(name, solver, dtype):
    X, Y = (values.astype(dtype) for values in DESIGNS[name])
    result = pls1_cv(X, Y, [4], cv=3, solver=solver)
    coef = np.asarray(result.coef)
    assert np.all(np.isfinite(coef))
    assert relative_error(coef, pls_reference(X, Y, 4)) < TOLERANCE[dtype]


def test_pls1_zero_variance_target_is_finite_and_zero():
    X, _ = DESIGNS["plain"]
    Y = np.column_stack([np.full(N_SAMPLES, -2.0), X[:, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PLS may warn that the constant target has no components
        result = pls1_cv(X, Y, [1, 2, 3], cv=3)
    coef = np.asarray(result.coef)
    assert np.all(np.isfinite(coef))
    assert np.abs(coef[:, 0]).max() < 1e-12
    assert np.asarray(result.intercept)[0] == pytest.approx(-2.0)


# -- when float32 (or even float64) cannot be trusted: the diagnostics ---------------------------


def graded_design() -> tuple[np.ndarray, np.ndarray]:
    """Columns scaled from 1 down to 1e-7: condition number ~1e7 (kernel ~1e14)."""
    X, Y = DESIGNS["plain"]
    return X @ np.diag(np.logspace(0, -7, N_FEATURES)), Y


def kernel_spectrum(X) -> np.ndarray:
    Xc = np.asarray(X, np.float64) - np.asarray(X, np.float64).mean(0)
    return np.linalg.eigvalsh(Xc @ Xc.T)


DUAL_CASES = [  # (design, dtype, alpha)
    ("plain", np.float32, 1.0),
    ("n << p", np.float32, 1e-3),
    ("graded", np.float64, 1e-2),
    ("graded", np.float64, 1e-10),
    ("graded", np.float32, 1e-2),
    ("graded", np.float32, 1e-10),
]


def test_conditioning_bound_tracks_the_dual_paths_measured_error():
    """Every dual solve off by more than 1e-2 is flagged; unflagged ones are within their bound
    (normwise, so it can be conservative: graded float32 at alpha 1e-2 is within 1.2e-4 of the
    reference, under its bound 4.9e-3); where it flags, the bound is within a factor 60 of the
    measured error."""
    flagged = []
    for name, dtype, alpha in DUAL_CASES:
        X, Y = graded_design() if name == "graded" else DESIGNS[name]
        X, Y = X.astype(dtype), Y.astype(dtype)
        coef = ridge_cv(X, Y, [alpha], cv=3, solver="dual").coef
        error = relative_error(coef, ridge_reference(X, Y, alpha))
        measured = conditioning(kernel_spectrum(X), [alpha], dtype, kind="eigen")
        if error > 1e-2:
            assert not measured.trustworthy, (name, dtype, alpha, error, measured)
        if measured.trustworthy:
            assert error <= measured.error_bound, (name, dtype, alpha, error, measured)
        else:
            assert measured.error_bound / 60 <= error <= 60 * measured.error_bound
        flagged.append(not measured.trustworthy)
    assert flagged == [False, False, False, False, False, True]


def test_check_conditioning_warns_with_the_measured_numbers():
    X, _ = graded_design()
    spectrum = kernel_spectrum(X.astype(np.float32))
    with pytest.warns(ConditioningWarning, match=r"float32: condition number .* smallest alpha"):
        measured = check_conditioning(spectrum, [1e-10, 1.0], np.float32)
    assert not measured.trustworthy and measured.alpha == 1e-10
    assert "float64" in condition_message(measured)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_conditioning(spectrum, [1e3], np.float64).trustworthy


def test_conditioning_of_singular_values_equals_that_of_their_squares():
    s = np.logspace(0, -5, 30)
    singular = conditioning(s, [1e-6], np.float64, kind="singular")
    assert singular.condition_number == pytest.approx((1 + 1e-6) / (1e-10 + 1e-6))


def test_conditioning_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind="):
        conditioning([1.0], [1.0], np.float32, kind="svd")
    with pytest.raises(ValueError, match="spectrum"):
        conditioning([np.nan], [1.0], np.float32)
    with pytest.raises(TypeError, match="floating dtype"):
        conditioning([1.0], [1.0], np.int32)
    with pytest.raises(ValueError, match="alphas"):
        conditioning([1.0], [0.0], np.float32)


def test_ridge_cv_warns_when_float32_dual_solve_cannot_be_trusted():
    X, Y = graded_design()
    with pytest.warns(ConditioningWarning, match=r"condition number .* float64"):
        ridge_cv(X.astype(np.float32), Y.astype(np.float32), [1e-10], cv=3, solver="dual")
    # The check is on the alphas the targets chose: a grid starting high enough is quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        ridge_cv(X.astype(np.float32), Y.astype(np.float32), [1e3], cv=3, solver="dual")


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_ridge_cv_stays_quiet_on_a_well_conditioned_design(solver):
    X, Y = DESIGNS["plain"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        ridge_cv(X.astype(np.float32), Y.astype(np.float32), [1e-2, 1.0], cv=3, solver=solver)


def test_ridge_cv_dtype_float64_upcasts_float32_inputs():
    X, Y = graded_design()
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    # At alpha 1e-10 the float32 dual solve is off by ~1 (flagged), float64 by ~4e-5.
    reference = ridge_reference(X32, Y32, 1e-10)
    upcast = ridge_cv(X32, Y32, [1e-10], cv=3, solver="dual", dtype="float64")
    assert upcast.coef.dtype == np.float64
    assert relative_error(upcast.coef, reference) < 1e-3
    with pytest.warns(ConditioningWarning):
        plain = ridge_cv(X32, Y32, [1e-10], cv=3, solver="dual")
    assert plain.coef.dtype == np.float32
    assert relative_error(plain.coef, reference) > 10 * relative_error(upcast.coef, reference)


def test_pls1_cv_and_banded_dtype_float64_equal_the_float64_fit():
    from v4jax import banded_ridge_cv

    X, Y = DESIGNS["plain"]
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    X64, Y64 = X32.astype(np.float64), Y32.astype(np.float64)
    pls_upcast = pls1_cv(X32, Y32, [1, 2, 3], cv=3, dtype="float64")
    pls_reference = pls1_cv(X64, Y64, [1, 2, 3], cv=3)
    assert pls_upcast.coef.dtype == np.float64
    assert relative_error(pls_upcast.coef, pls_reference.coef) < 1e-12
    bands = [X32[:, :10], X32[:, 10:]]
    banded_upcast = banded_ridge_cv(bands, Y32, [0.1, 10.0], cv=3, ratios=[1.0], dtype="float64")
    banded_reference = banded_ridge_cv(
        [band.astype(np.float64) for band in bands], Y64, [0.1, 10.0], cv=3, ratios=[1.0]
    )
    assert banded_upcast.coef.dtype == np.float64
    assert relative_error(banded_upcast.coef, banded_reference.coef) < 1e-12


@pytest.mark.parametrize(
    ("dtype", "message"),
    [("float16", "dtype='float16' is not supported"), ("int32", "is not supported"),
     ("double precision", "is not supported")],
)  # fmt: skip
def test_unsupported_compute_dtype_is_refused(dtype, message):
    X, Y = DESIGNS["plain"]
    with pytest.raises(ValueError, match=message):
        ridge_cv(X, Y, [1.0], cv=3, dtype=dtype)
    with pytest.raises(ValueError, match=message):
        pls1_cv(X, Y, [1], cv=3, dtype=dtype)


def test_float64_without_x64_mode_says_how_to_enable_it():
    import jax

    X, Y = DESIGNS["plain"]
    with jax.enable_x64(False), pytest.raises(ValueError, match="jax_enable_x64"):
        ridge_cv(X.astype(np.float32), Y.astype(np.float32), [1.0], cv=3, dtype="float64")


# -- alpha-grid diagnostics -------------------------------------------------------------------


def test_grid_edge_is_flagged_per_voxel_and_counted_in_the_summary_table():
    from v4jax.pipeline.report import format_table

    X, Y = DESIGNS["plain"]
    noise = np.random.default_rng(1).standard_normal((N_SAMPLES, 1))
    result = ridge_cv(X, np.column_stack([Y[:, 0], noise]), np.logspace(-6, -3, 4), cv=3)
    # On a grid that is too low, both the signal and the noise-only voxel sit on an edge.
    np.testing.assert_array_equal(np.asarray(result.on_edge), [True, True])
    assert int(np.asarray(result.best_index)[1]) == 3
    row = {
        "subject": 1, "roi": "V4", "arm": "plain", "method": "ridge", "n_voxels": 40,
        "median_val_r": 0.3, "mean_val_r": 0.3, "median_test_r": 0.3,
        "roi_average_val_r2": 0.5, "n_on_edge": 12, "fraction_on_edge": 0.3,
        "median_r_over_ceiling": None,
    }  # fmt: skip
    assert "12 (30.0%)" in format_table([row]).splitlines()[2]


@pytest.mark.parametrize("alpha", [1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_float32_duplicated_columns_match_float64_sklearn_or_warn(solver, alpha):
    """Rank-deficient float32 design at tiny alpha: the primal path cuts singular values at
    rounding level as the dual path does (it erred by 16x the coefficients at 1e-6 before)."""
    rng = np.random.default_rng(40)
    base = rng.standard_normal((200, 30))
    X = np.hstack([base, base[:, :10]])
    Y = X @ rng.standard_normal((40, 3)) + 0.1 * rng.standard_normal((200, 3))
    expected = Ridge(alpha=alpha).fit(X, Y).coef_.T
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ridge_cv(X.astype(np.float32), Y.astype(np.float32), [alpha], cv=4, solver=solver)
        coef = np.asarray(result.coef, dtype=np.float64)
    error = np.linalg.norm(coef - expected) / np.linalg.norm(expected)
    warned = any(issubclass(w.category, ConditioningWarning) for w in caught)
    assert error <= 1e-5 or warned, f"{solver} alpha {alpha}: error {error:.1e} without a warning"
