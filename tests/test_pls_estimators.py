"""PLSRegression and PLS1CV estimators: scikit-learn's contract and agreement with sklearn."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cross_decomposition import PLSRegression as SklearnPLSRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import estimator_checks_generator

from v4jax.solvers.estimators import PLS1CV, PLSRegression
from v4jax.solvers.pls import pls1_cv


def relative_error(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def make_problem(n_samples=60, n_features=15, n_targets=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) * rng.uniform(0.5, 3, n_features) + 2
    Y = X @ rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features)
    return X, Y + rng.standard_normal((n_samples, n_targets)) * 0.5


# Checks that fit on new shapes each pay a JIT compilation; these run by default, the others in
# the slow run, so every scikit-learn check runs. The check data have few features (e.g. 1 to 5),
# below the default 25 components / grid: both estimators cap the count there with a
# UserWarning (documented), so every check applies.
QUICK_CHECKS = {
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimators_unfitted",
    "check_estimators_empty_data_messages",
    "check_estimators_nan_inf",
    "check_fit2d_1sample",
    "check_complex_data",
    "check_regressor_multioutput",
    "check_fit2d_predict1d",
}


def _check_name(check):
    return getattr(check, "func", check).__name__


def contract_cases():
    for estimator in (PLSRegression(), PLS1CV(n_components=(1, 2, 3), cv=3)):
        for case in estimator_checks_generator(estimator, mark="skip"):
            estimator_, check = case.values if hasattr(case, "values") else case
            name = _check_name(check)
            marks = () if name in QUICK_CHECKS else (pytest.mark.slow,)
            yield pytest.param(
                estimator_, check, id=f"{type(estimator_).__name__}-{name}", marks=marks
            )


@pytest.mark.parametrize("estimator,check", list(contract_cases()))
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


@pytest.mark.parametrize("scale", [False, True])
def test_pls_regression_attributes_equal_sklearn(scale):
    X, Y = make_problem()
    model = PLSRegression(n_components=6, scale=scale).fit(X, Y)
    reference = SklearnPLSRegression(n_components=6, scale=scale).fit(X, Y)
    for name in (
        "coef_",
        "x_weights_",
        "x_loadings_",
        "x_scores_",
        "y_weights_",
        "y_loadings_",
        "y_scores_",
        "x_rotations_",
    ):
        assert relative_error(getattr(model, name), getattr(reference, name)) <= 1e-10, name
    assert model.coef_.shape == (3, 15)
    assert relative_error(model.predict(X), reference.predict(X)) <= 1e-10
    standard = (X - model.x_mean_) / model.x_std_
    assert relative_error(standard @ model.x_rotations_, reference.transform(X)) <= 1e-10
    np.testing.assert_array_equal(model.n_iter_, reference.n_iter_)


def test_pls_regression_one_dimensional_target_and_cap_warning():
    X, Y = make_problem(n_features=4)
    y = Y[:, 0]
    with pytest.warns(UserWarning, match="n_components=25 exceeds"):
        model = PLSRegression().fit(X, y)
    reference = SklearnPLSRegression(n_components=4, scale=False).fit(X, y)
    assert model.n_components_ == 4
    assert model.coef_.shape == (4,)
    assert np.ndim(model.intercept_) == 0
    assert relative_error(model.predict(X), reference.predict(X)) <= 1e-10


def test_pls1cv_equals_pure_function_with_sklearn_layout():
    X, Y = make_problem(n_features=30, n_targets=4, seed=1)
    model = PLS1CV(n_components=range(1, 9), cv=4, scoring="pearson").fit(X, Y)
    result = pls1_cv(X, Y, range(1, 9), cv=4, score="pearson")
    np.testing.assert_allclose(model.coef_, np.asarray(result.coef).T, rtol=1e-12)
    np.testing.assert_array_equal(model.best_n_components_, result.best_n_components)
    np.testing.assert_allclose(model.cv_scores_, result.cv_scores)
    np.testing.assert_allclose(model.predict(X), X @ model.coef_.T + model.intercept_)
    refit = [
        SklearnPLSRegression(n_components=int(k), scale=False).fit(X, Y[:, j]).predict(X)
        for j, k in enumerate(model.best_n_components_)
    ]
    assert relative_error(model.predict(X), np.stack(refit, axis=1)) <= 1e-10


def test_pls1cv_drops_grid_values_above_the_cap_with_a_warning():
    X, Y = make_problem(n_features=3, n_targets=2, seed=2)
    with pytest.warns(UserWarning, match="exceeds min"):
        model = PLS1CV(cv=3).fit(X, Y[:, 0])
    np.testing.assert_array_equal(model.n_components_grid_, [1, 2, 3])
    assert model.cv_scores_.shape == (3, 1)
    assert np.ndim(model.best_n_components_) == 0


def test_usable_in_a_pipeline_and_clonable():
    X, Y = make_problem(seed=3)
    pipeline = make_pipeline(StandardScaler(), PLSRegression(n_components=5)).fit(X, Y)
    assert pipeline.score(X, Y) > 0.5
    copy = clone(pipeline)
    assert copy.get_params()["plsregression__n_components"] == 5
    with pytest.raises(Exception, match="not fitted"):
        copy.predict(X)
