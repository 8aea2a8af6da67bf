"""ridge_cv with sample weights against scikit-learn Ridge fitted with the same weights."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import LeaveOneGroupOut, LeaveOneOut, ShuffleSplit

from v4jax import RidgeCV, make_folds, ridge_cv
from v4jax.metrics import pearson_columns, r2_columns
from v4jax.solvers.ridge import heldout_predictions, prepare_ridge

ALPHAS = np.logspace(-2, 4, 7)
SHAPES = {"n>p": (60, 20), "n<p": (40, 110)}
CV_FORMS = {
    "kfold": lambda n: 4,
    "loo": lambda n: "loo",
    "groups": lambda n: list(LeaveOneGroupOut().split(np.zeros(n), groups=np.arange(n) % 5)),
}


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def make_problem(n_samples, n_features, n_targets=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) * rng.uniform(0.5, 2, n_features) + 1.5
    coef = rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features)
    Y = X @ coef + rng.standard_normal((n_samples, n_targets)) * rng.uniform(0.3, 2, n_targets)
    weights = rng.uniform(0.1, 4.0, n_samples)
    weights[rng.choice(n_samples, 3, replace=False)] = 0.0  # zero weights take part too
    return X, Y + 2.0, weights


def cases(default, *axes):
    """Every combination of the axes' (id, value) pairs; those not in ``default`` run as slow."""
    combos = [[]]
    for axis in axes:
        combos = [[*combo, item] for combo in combos for item in axis]
    return [
        pytest.param(
            *[value for _, value in combo],
            id="-".join(name for name, _ in combo),
            marks=() if tuple(name for name, _ in combo) in default else pytest.mark.slow,
        )
        for combo in combos
    ]


SHAPE_AXIS = list(SHAPES.items())
CV_AXIS = [(name, name) for name in CV_FORMS]


def folds_of(cv, n_samples):
    return (
        list(LeaveOneOut().split(np.zeros(n_samples))) if cv == "loo" else make_folds(cv, n_samples)
    )


def brute_force(X, Y, weights, alphas, folds, fit_intercept=True):
    """(n_alphas, n_samples, T) weighted scikit-learn refits on every fold."""
    expected = np.zeros((len(alphas), *Y.shape))
    for train, test in folds:
        for index, alpha in enumerate(alphas):
            model = Ridge(alpha=alpha, fit_intercept=fit_intercept)
            model.fit(X[train], Y[train], sample_weight=weights[train])
            expected[index, test] = model.predict(X[test])
    return expected


@pytest.mark.parametrize(
    "shape, cv_form, fit_intercept, dtype, tolerance",
    [
        pytest.param(*case.values[:3], *case.values[3], id=case.id, marks=case.marks)
        for case in cases(
            {
                ("n<p", "kfold", "intercept", "float64"),
                ("n<p", "loo", "intercept", "float32"),
                ("n>p", "groups", "no-intercept", "float32"),
            },
            SHAPE_AXIS,
            CV_AXIS,
            [("intercept", True), ("no-intercept", False)],
            [("float64", (np.float64, 1e-8)), ("float32", (np.float32, 1e-4))],
        )
    ],
)
def test_weighted_heldout_predictions_equal_weighted_sklearn_refits(
    shape, cv_form, fit_intercept, dtype, tolerance
):
    X, Y, weights = make_problem(*shape, seed=1)
    cv = CV_FORMS[cv_form](len(X))
    decomposition = prepare_ridge(
        X.astype(dtype), cv, fit_intercept=fit_intercept, sample_weight=weights
    )
    predictions = np.asarray(heldout_predictions(decomposition, Y.astype(dtype), ALPHAS))
    expected = brute_force(X, Y, weights, ALPHAS, folds_of(cv, len(X)), fit_intercept)
    weighted = weights > 0
    assert np.all(np.isnan(predictions[:, ~weighted]))  # not recoverable: said, not invented
    assert relative_error(predictions[:, weighted], expected[:, weighted]) <= tolerance


@pytest.mark.parametrize(
    "shape, cv_form, score",
    cases(
        {("n>p", "kfold", "r2"), ("n<p", "loo", "r2"), ("n<p", "groups", "pearson")},
        SHAPE_AXIS,
        CV_AXIS,
        [("r2", "r2"), ("pearson", "pearson")],
    ),
)
def test_weighted_scores_alphas_and_refit_equal_brute_force(shape, cv_form, score):
    X, Y, weights = make_problem(*shape, seed=2)
    cv = CV_FORMS[cv_form](len(X))
    folds = folds_of(cv, len(X))
    result = ridge_cv(X, Y, ALPHAS, cv=cv, score=score, sample_weight=weights)
    pooled = cv == "loo"
    groups = [np.arange(len(X))] if pooled else [test for _, test in folds]
    heldout = brute_force(X, Y, weights, ALPHAS, folds)
    columns = r2_columns if score == "r2" else pearson_columns
    expected = np.mean(
        [np.asarray(columns(Y[rows], heldout[:, rows], weights[rows])) for rows in groups], axis=0
    )
    assert np.max(np.abs(np.asarray(result.cv_scores) - expected)) <= 1e-9
    best = ALPHAS[np.argmax(expected, axis=0)]
    np.testing.assert_array_equal(np.asarray(result.best_alphas), best)
    refits = [Ridge(alpha=a).fit(X, Y[:, j], sample_weight=weights) for j, a in enumerate(best)]
    assert relative_error(result.coef, np.stack([m.coef_ for m in refits], axis=1)) <= 1e-8
    assert relative_error(result.intercept, [m.intercept_ for m in refits]) <= 1e-8
    X_new = make_problem(7, X.shape[1], seed=3)[0]
    expected_new = np.stack([m.predict(X_new) for m in refits], axis=1)
    assert relative_error(result.predict(X_new), expected_new) <= 1e-8


def test_weighted_r2_equals_sklearn_r2_score_with_weights():
    rng = np.random.default_rng(4)
    y, prediction = rng.standard_normal((30, 3)), rng.standard_normal((30, 3))
    weights = rng.uniform(0, 2, 30)
    expected = r2_score(y, prediction, sample_weight=weights, multioutput="raw_values")
    assert np.max(np.abs(np.asarray(r2_columns(y, prediction, weights)) - expected)) <= 1e-12


def test_integer_weights_act_as_repeated_samples_under_leave_one_out_of_groups():
    X, Y, _ = make_problem(30, 12, seed=5)
    counts = np.random.default_rng(6).integers(1, 4, len(X))
    groups = np.arange(len(X)) % 3
    repeated = np.repeat(np.arange(len(X)), counts)
    weighted = ridge_cv(
        X, Y, ALPHAS, cv=list(LeaveOneGroupOut().split(X, groups=groups)), sample_weight=counts
    )
    copies = ridge_cv(
        X[repeated],
        Y[repeated],
        ALPHAS,
        cv=list(LeaveOneGroupOut().split(X[repeated], groups=groups[repeated])),
    )
    assert np.max(np.abs(np.asarray(weighted.cv_scores) - np.asarray(copies.cv_scores))) <= 1e-9
    assert relative_error(weighted.coef, copies.coef) <= 1e-9


def test_unit_weights_change_nothing():
    X, Y, _ = make_problem(40, 90, seed=7)
    plain = ridge_cv(X, Y, ALPHAS, cv=4)
    unit = ridge_cv(X, Y, ALPHAS, cv=4, sample_weight=np.ones(len(X)))
    assert np.max(np.abs(np.asarray(plain.cv_scores) - np.asarray(unit.cv_scores))) <= 1e-12
    assert relative_error(unit.coef, plain.coef) <= 1e-12


@pytest.mark.parametrize(
    "sample_weight, message",
    [
        (np.ones(5), r"one weight per sample \(20,\)"),
        (-np.ones(20), "negative"),
        (np.zeros(20), "zero for every sample"),
        (np.r_[np.ones(19), np.nan], "NaN"),
    ],
)
def test_bad_weights_are_refused_by_name(sample_weight, message):
    X, Y, _ = make_problem(20, 5, seed=8)
    with pytest.raises(ValueError, match=message):
        ridge_cv(X, Y, ALPHAS, cv=4, sample_weight=sample_weight)


def test_weights_with_folds_that_are_not_complements_are_refused():
    X, Y, weights = make_problem(20, 5, seed=9)
    splitter = ShuffleSplit(n_splits=3, train_size=0.5, test_size=0.2, random_state=0)
    with pytest.raises(ValueError, match="sample_weight needs folds"):
        ridge_cv(X, Y, ALPHAS, cv=splitter, sample_weight=weights)


def test_estimator_scalar_weight_scales_the_loss_against_the_penalty_as_sklearn():
    # A weight c on every sample is ridge with alpha / c, as in scikit-learn.
    X, Y, _ = make_problem(30, 8, seed=10)
    scaled = RidgeCV(alphas=ALPHAS, cv=3).fit(X, Y, sample_weight=2.5)
    plain = RidgeCV(alphas=ALPHAS / 2.5, cv=3).fit(X, Y)
    assert relative_error(scaled.coef_, plain.coef_) <= 1e-5
    np.testing.assert_allclose(scaled.alpha_ / 2.5, plain.alpha_, rtol=1e-12)
