"""ridge_cv and ridge_path against scikit-learn Ridge and float64 numpy references."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, LeaveOneOut, ShuffleSplit

from v4jax import make_folds, ridge_cv, ridge_path
from v4jax.solvers.ridge import heldout_predictions, prepare_ridge

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
        ShuffleSplit(3, test_size=15, train_size=30, random_state=0),
        [(np.arange(10, 45), np.arange(45, 60)), (np.arange(30), np.arange(30, 45))],
    ],
    ids=["splitter", "index-list", "not-complements-splitter", "not-complements-list"],
)
def test_cv_forms_equal_brute_force_on_the_same_folds(cv):
    X, Y = make_problem(60, 30, seed=6)
    folds = make_folds(cv, len(X))
    result = ridge_cv(X, Y, ALPHAS, cv=folds)
    expected = sklearn_fold_scores(X, Y, ALPHAS, folds, "r2")
    assert np.max(np.abs(np.asarray(result.cv_scores) - expected)) <= 1e-10


@pytest.mark.slow
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


@pytest.mark.parametrize("offset", [0.2, 1e3])
def test_float32_kernel_predictions_are_accurate_whether_or_not_the_design_is_centred(offset):
    # A small offset predicts without centring the design; a large one centres it.
    X, Y = make_problem(40, 120, seed=21, offset=offset)
    X_new = make_problem(9, 120, seed=22, offset=offset)[0]
    result = ridge_cv(X.astype(np.float32), Y.astype(np.float32), ALPHAS, cv=4)
    expected = np.stack(
        [
            Ridge(alpha=alpha).fit(X, Y[:, j]).predict(X_new)
            for j, alpha in enumerate(np.asarray(result.best_alphas, dtype=np.float64))
        ],
        axis=1,
    )
    assert relative_error(result.predict(X_new.astype(np.float32)), expected) <= 1e-4


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
        np.asarray(result.on_edge),
        np.isin(np.asarray(result.best_index), [0, len(ALPHAS) - 1]),
    )
    assert bool(result.on_edge[0])


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


def brute_force_heldout(X, Y, alphas, folds, fit_intercept=True):
    """(n_alphas, n_samples, n_targets) scikit-learn Ridge refitted on every fold."""
    expected = np.zeros((len(alphas), *Y.shape))
    for train, test in folds:
        for index, alpha in enumerate(alphas):
            model = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X[train], Y[train])
            expected[index, test] = model.predict(X[test])
    return expected


CV_FORMS = {
    "kfold": lambda n: 5,
    "loo": lambda n: "loo",
    "groups": lambda n: list(LeaveOneGroupOut().split(np.zeros(n), groups=np.arange(n) % 7)),
}


@pytest.mark.parametrize(
    "fit_intercept",
    [True, pytest.param(False, marks=pytest.mark.slow)],
    ids=["intercept", "no-intercept"],
)
@pytest.mark.parametrize("cv_form", CV_FORMS, ids=CV_FORMS.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-8), (np.float32, 1e-4)])
def test_one_decomposition_heldout_predictions_equal_sklearn_refits(
    shape, cv_form, fit_intercept, dtype, tolerance
):
    X, Y = make_problem(*shape, seed=21, offset=3.0)
    cv = CV_FORMS[cv_form](len(X))
    folds = list(LeaveOneOut().split(X)) if cv == "loo" else make_folds(cv, len(X))
    decomposition = prepare_ridge(X.astype(dtype), cv, fit_intercept=fit_intercept)
    assert decomposition.fold_bases is None  # the single-decomposition route
    predictions = heldout_predictions(decomposition, Y.astype(dtype), ALPHAS)
    assert predictions.dtype == dtype
    expected = brute_force_heldout(X, Y, ALPHAS, folds, fit_intercept)
    assert relative_error(predictions, expected) <= tolerance


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("score", ["r2", "pearson"])
def test_loo_scores_the_pooled_heldout_predictions_and_picks_brute_force_alphas(shape, score):
    X, Y = make_problem(*shape, seed=22)
    result = ridge_cv(X, Y, ALPHAS, cv="loo", score=score)
    pooled = brute_force_heldout(X, Y, ALPHAS, list(LeaveOneOut().split(X)))
    if score == "r2":
        expected = np.stack([r2_score(Y, p, multioutput="raw_values") for p in pooled])
    else:
        expected = np.stack(
            [[np.corrcoef(Y[:, j], p[:, j])[0, 1] for j in range(Y.shape[1])] for p in pooled]
        )
    assert np.max(np.abs(np.asarray(result.cv_scores) - expected)) <= 1e-10
    best = ALPHAS[np.argmax(expected, axis=0)]
    np.testing.assert_array_equal(np.asarray(result.best_alphas), best)
    refits = [Ridge(alpha=a).fit(X, Y[:, j]) for j, a in enumerate(best)]
    assert relative_error(result.coef, np.stack([m.coef_ for m in refits], axis=1)) <= 1e-8
    intercepts = [m.intercept_ for m in refits]
    assert relative_error(result.intercept, intercepts) <= 1e-8


def test_loo_alphas_equal_sklearn_ridgecv_alpha_per_target():
    from sklearn.linear_model import RidgeCV as SklearnRidgeCV

    X, Y = make_problem(70, 200, n_targets=12, seed=23)
    ours = ridge_cv(X, Y, ALPHAS, cv="loo", score="r2")
    reference = SklearnRidgeCV(alphas=ALPHAS, alpha_per_target=True, scoring="r2").fit(X, Y)
    np.testing.assert_array_equal(np.asarray(ours.best_alphas), reference.alpha_)


@pytest.mark.parametrize("splitter", [GroupKFold(4), LeaveOneGroupOut()])
def test_grouped_folds_equal_brute_force_in_both_dtypes(splitter):
    X, Y = make_problem(48, 90, seed=24)
    groups = np.repeat(np.arange(8), 6)
    folds = list(splitter.split(X, groups=groups))
    expected = sklearn_fold_scores(X, Y, ALPHAS, folds, "r2")
    for dtype, tolerance in [(np.float64, 1e-10), (np.float32, 2e-4)]:
        result = ridge_cv(X.astype(dtype), Y.astype(dtype), ALPHAS, cv=folds)
        assert np.max(np.abs(np.asarray(result.cv_scores, dtype=np.float64) - expected)) <= (
            tolerance
        )
    np.testing.assert_array_equal(
        np.asarray(ridge_cv(X, Y, ALPHAS, cv=folds).best_alphas),
        ALPHAS[np.argmax(expected, axis=0)],
    )


def test_leave_one_out_needs_three_samples_and_other_strings_are_refused():
    X, Y = make_problem(40, 5, seed=25)
    with pytest.raises(ValueError, match="'loo' for leave-one-out"):
        ridge_cv(X, Y, ALPHAS, cv="kfold")
    with pytest.raises(ValueError, match="at least 3 samples"):
        ridge_cv(X[:2], Y[:2], ALPHAS, cv="loo")


def test_heldout_predictions_refuse_folds_that_leave_samples_out():
    X, Y = make_problem(40, 60, seed=26)
    decomposition = prepare_ridge(X, ShuffleSplit(2, test_size=10, train_size=20, random_state=0))
    assert decomposition.fold_bases is not None  # the per-fold route
    with pytest.raises(ValueError, match="partition the samples"):
        heldout_predictions(decomposition, Y, ALPHAS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_large_designs_are_checked_for_nan_and_inf_by_their_column_sums(bad):
    from v4jax._validation import check_all_finite

    X = np.random.default_rng(23).random((1100, 1000), dtype=np.float32)
    check_all_finite(X, "X")
    X[700, 321] = bad
    with pytest.raises(ValueError, match=r"first at index \(700, 321\)"):
        check_all_finite(X, "X")
    # Column sums that overflow are not mistaken for non-finite values.
    check_all_finite(np.full((1100, 1000), 3e35, dtype=np.float32), "X")
