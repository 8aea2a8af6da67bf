"""PLSRegression and PLS1CV estimators: scikit-learn's contract and agreement with sklearn."""

import jax
import numpy as np
import pytest
import scipy.sparse
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
# the slow run, so every scikit-learn check runs. PLSRegression has scikit-learn's defaults
# (2 components); PLS1CV's grid is capped at the check data's few features with a UserWarning.
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


FITTED_ARRAYS = (
    "coef_",
    "intercept_",
    "x_weights_",
    "x_loadings_",
    "x_scores_",
    "x_rotations_",
    "y_weights_",
    "y_loadings_",
    "y_scores_",
    "y_rotations_",
    "_x_mean",
    "_x_std",
    "_y_mean",
    "_y_std",
)


def assert_fitted_like_sklearn(model, reference, rtol=1e-8):
    for name in FITTED_ARRAYS:
        ours, theirs = getattr(model, name), getattr(reference, name)
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-12, err_msg=name)
    assert model.n_iter_ == reference.n_iter_
    assert isinstance(model.n_iter_, list)
    assert model.n_features_in_ == reference.n_features_in_


@pytest.mark.parametrize("y_shape", ["2-D", "1-D", "one column"])
@pytest.mark.parametrize("scale", [False, True])
def test_pls_regression_attributes_equal_sklearn(scale, y_shape):
    X, Y = make_problem()
    y = {"2-D": Y, "1-D": Y[:, 0], "one column": Y[:, :1]}[y_shape]
    model = PLSRegression(n_components=6, scale=scale).fit(X, y)
    reference = SklearnPLSRegression(n_components=6, scale=scale).fit(X, y)
    assert_fitted_like_sklearn(model, reference)
    assert model.coef_.shape == (y.reshape(len(y), -1).shape[1], 15)
    prediction = model.predict(X)
    assert prediction.shape == reference.predict(X).shape == y.shape
    np.testing.assert_allclose(prediction, reference.predict(X), rtol=1e-8)
    np.testing.assert_allclose(model.intercept_, y.reshape(len(y), -1).mean(axis=0), rtol=1e-12)
    centred = (X - model._x_mean) @ model.coef_.T + model.intercept_
    np.testing.assert_allclose(prediction, centred.reshape(prediction.shape), rtol=1e-12)


def test_defaults_are_sklearns_and_brain_score_is_one_argument_away():
    ours = PLSRegression().get_params()
    assert ours.pop("solver") == "auto"
    assert ours == SklearnPLSRegression().get_params()
    X, Y = make_problem(n_samples=40, n_features=60, n_targets=4, seed=5)
    assert_fitted_like_sklearn(PLSRegression().fit(X, Y), SklearnPLSRegression().fit(X, Y))
    brain_score = PLSRegression(n_components=25, scale=False).fit(X, Y)
    reference = SklearnPLSRegression(n_components=25, scale=False).fit(X, Y)
    assert_fitted_like_sklearn(brain_score, reference, rtol=1e-6)


@pytest.mark.parametrize("y_shape", ["2-D", "1-D"])
def test_transform_inverse_transform_and_fit_transform_equal_sklearn(y_shape):
    X, Y = make_problem(seed=6)
    y = Y if y_shape == "2-D" else Y[:, 0]
    X_new, Y_new = make_problem(n_samples=7, seed=7)
    y_new = Y_new if y_shape == "2-D" else Y_new[:, 0]
    model = PLSRegression(n_components=4).fit(X, y)
    reference = SklearnPLSRegression(n_components=4).fit(X, y)
    np.testing.assert_allclose(model.transform(X_new), reference.transform(X_new), rtol=1e-8)
    for ours, theirs in zip(
        model.transform(X_new, y_new), reference.transform(X_new, y_new), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    scores = reference.transform(X_new, y_new)
    np.testing.assert_allclose(
        model.inverse_transform(scores[0]), reference.inverse_transform(scores[0]), rtol=1e-8
    )
    for ours, theirs in zip(
        model.inverse_transform(*scores), reference.inverse_transform(*scores), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    fitted = PLSRegression(n_components=4).fit_transform(X, y)
    expected = SklearnPLSRegression(n_components=4).fit_transform(X, y)
    for ours, theirs in zip(fitted, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    np.testing.assert_allclose(fitted[0], model.x_scores_, rtol=1e-8)


def test_feature_names_and_set_output_as_sklearn():
    pandas = pytest.importorskip("pandas")
    X, Y = make_problem(seed=8)
    frame = pandas.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    model = PLSRegression(n_components=3).set_output(transform="pandas").fit(frame, Y)
    reference = SklearnPLSRegression(n_components=3).set_output(transform="pandas")
    reference.fit(frame, Y)
    np.testing.assert_array_equal(model.get_feature_names_out(), reference.get_feature_names_out())
    np.testing.assert_array_equal(model.feature_names_in_, reference.feature_names_in_)
    ours, theirs = model.transform(frame), reference.transform(frame)
    assert isinstance(ours, pandas.DataFrame)
    assert (
        list(ours.columns)
        == list(theirs.columns)
        == ["plsregression0", "plsregression1", "plsregression2"]
    )
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-8)


def test_copy_false_works_in_place_in_predict_and_transform_as_sklearn():
    X, Y = make_problem(seed=9)
    model = PLSRegression(n_components=3, copy=False).fit(X, Y)
    reference = SklearnPLSRegression(n_components=3, copy=False).fit(X.copy(), Y.copy())
    assert model.get_params()["copy"] is False
    ours, theirs = X.copy(), X.copy()
    np.testing.assert_allclose(
        model.predict(ours, copy=False), reference.predict(theirs, copy=False), rtol=1e-8
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    assert not np.allclose(ours, X)
    ours, theirs = X.copy(), X.copy()
    np.testing.assert_allclose(
        model.transform(ours, copy=False), reference.transform(theirs, copy=False), rtol=1e-8
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    untouched = X.copy()
    model.predict(untouched)
    model.transform(untouched)
    np.testing.assert_array_equal(untouched, X)


def test_too_many_components_raise_as_sklearn():
    X, Y = make_problem(n_features=4)
    with pytest.raises(ValueError, match=r"upper bound is 4\. Got 5") as theirs:
        SklearnPLSRegression(n_components=5).fit(X, Y)
    with pytest.raises(ValueError) as ours:
        PLSRegression(n_components=5).fit(X, Y)
    assert str(ours.value) == str(theirs.value)


def test_integer_and_sparse_inputs_follow_the_solver_rules():
    X, Y = make_problem(seed=10)
    X_int = np.round(X * 10).astype(np.int64)
    model = PLSRegression(n_components=3).fit(X_int, Y.astype(np.float32))
    assert model.coef_.dtype == np.float32
    assert PLSRegression(n_components=3).fit(X_int, Y).coef_.dtype == (
        np.float64 if jax.config.jax_enable_x64 else np.float32
    )
    with pytest.raises(TypeError, match="toarray"):
        PLSRegression().fit(scipy.sparse.csr_matrix(X), Y)


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
