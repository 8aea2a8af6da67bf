"""RidgeCV and BandedRidgeCV: scikit-learn's contract and agreement with the pure solvers."""

import jax
import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.linear_model import RidgeCV as SklearnRidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from v4jax import BandedRidgeCV, PLSRegression, RidgeCV, banded_ridge_cv, pls1_cv, ridge_cv

ALPHAS = np.logspace(-2, 4, 7)


@parametrize_with_checks([RidgeCV()])
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([BandedRidgeCV(ratios=[0.1, 1.0, 10.0])])
def test_banded_sklearn_estimator_contract(estimator, check):
    check(estimator)


def test_estimator_equals_pure_function_with_sklearn_layout():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 80))
    Y = X @ rng.standard_normal((80, 4)) + rng.standard_normal((50, 4))
    model = RidgeCV(alphas=ALPHAS, cv=5, scoring="pearson").fit(X, Y)
    result = ridge_cv(X, Y, ALPHAS, cv=5, score="pearson")
    np.testing.assert_allclose(model.coef_, np.asarray(result.coef).T, rtol=1e-12)
    np.testing.assert_allclose(model.best_alphas_, result.best_alphas)
    np.testing.assert_allclose(model.cv_scores_, result.cv_scores)
    np.testing.assert_allclose(model.predict(X), X @ model.coef_.T + model.intercept_)


def test_one_dimensional_target_matches_sklearn_ridge_with_chosen_alpha():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 8))
    y = X @ rng.standard_normal(8) + rng.standard_normal(60)
    model = RidgeCV(alphas=ALPHAS).fit(X, y)
    reference = Ridge(alpha=model.best_alphas_).fit(X, y)
    assert model.coef_.shape == (8,)
    assert np.ndim(model.best_alphas_) == 0
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.predict(X[:5]), reference.predict(X[:5]), rtol=1e-10)


def test_usable_in_a_pipeline_and_clonable():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((70, 12)) * 5 + 3
    Y = X @ rng.standard_normal((12, 3)) + rng.standard_normal((70, 3))
    pipeline = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS, cv=3)).fit(X, Y)
    assert pipeline.score(X, Y) > 0.5
    copy = clone(pipeline)
    assert copy.get_params()["ridgecv__cv"] == 3
    with pytest.raises(Exception, match="not fitted"):
        copy.predict(X)


@pytest.mark.parametrize(
    "bands", [[10, 30], [slice(0, 10), slice(10, 40)]], ids=["sizes", "slices"]
)
def test_banded_estimator_equals_pure_function(bands):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 40))
    Y = X @ rng.standard_normal((40, 3)) + rng.standard_normal((50, 3))
    model = BandedRidgeCV(bands=bands, alphas=ALPHAS, ratios=[0.1, 1.0, 10.0]).fit(X, Y)
    result = banded_ridge_cv([X[:, :10], X[:, 10:]], Y, ALPHAS, ratios=[0.1, 1.0, 10.0])
    np.testing.assert_allclose(model.coef_, np.asarray(result.coef).T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.band_scales_, result.band_scales)
    np.testing.assert_allclose(model.best_alphas_, result.best_alphas)
    np.testing.assert_allclose(model.cv_scores_, result.cv_scores, rtol=1e-9)
    np.testing.assert_allclose(model.predict(X), np.asarray(result.predict(X)), rtol=1e-9)
    with pytest.raises(ValueError, match="sum to 39"):
        BandedRidgeCV(bands=[10, 29]).fit(X, Y)


def make_ridge_problem(n_targets, seed=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((60, 20)) * rng.uniform(0.5, 3, 20) + 1
    noise = rng.uniform(0.5, 4, n_targets)
    Y = X @ rng.standard_normal((20, n_targets)) + rng.standard_normal((60, n_targets)) * noise
    return X, Y


@pytest.mark.parametrize("scoring", ["r2", "neg_mean_squared_error"])
@pytest.mark.parametrize("y_shape", ["1-D", "one column"])
def test_single_target_equals_sklearn_ridgecv(scoring, y_shape):
    X, Y = make_ridge_problem(1)
    y = Y[:, 0] if y_shape == "1-D" else Y
    model = RidgeCV(alphas=ALPHAS, cv=5, scoring=scoring).fit(X, y)
    reference = SklearnRidgeCV(alphas=ALPHAS, cv=KFold(5), scoring=scoring).fit(X, y)
    assert model.alpha_ == reference.alpha_
    assert np.ndim(model.alpha_) == 0
    np.testing.assert_allclose(np.ravel(model.best_score_), reference.best_score_, rtol=1e-8)
    assert model.coef_.shape == reference.coef_.shape == (20,)
    assert np.shape(model.intercept_) == np.shape(reference.intercept_)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-8)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-8)
    assert model.predict(X).shape == reference.predict(X).shape
    np.testing.assert_allclose(model.predict(X), reference.predict(X), rtol=1e-8)


def test_best_score_per_target_equals_sklearn_ridgecv_per_column():
    X, Y = make_ridge_problem(3)
    model = RidgeCV(alphas=ALPHAS, cv=5, scoring="neg_mean_squared_error").fit(X, Y)
    assert model.alpha_.shape == model.best_score_.shape == (3,)
    np.testing.assert_array_equal(model.alpha_, model.best_alphas_)
    columns = np.arange(3)
    np.testing.assert_array_equal(
        model.best_score_, model.cv_scores_[np.searchsorted(ALPHAS, model.alpha_), columns]
    )
    for j in columns:
        reference = SklearnRidgeCV(ALPHAS, cv=KFold(5), scoring="neg_mean_squared_error")
        reference.fit(X, Y[:, j])
        assert model.alpha_[j] == reference.alpha_
        np.testing.assert_allclose(model.best_score_[j], reference.best_score_, rtol=1e-8)
        np.testing.assert_allclose(model.coef_[j], reference.coef_, rtol=1e-8)


def test_sample_weight_fits_equal_sklearn_ridge_with_weights_and_the_input_is_kept():
    X, Y = make_ridge_problem(2)
    weights = np.random.default_rng(30).uniform(0.2, 3.0, len(X))
    given = weights.copy()
    model = RidgeCV(alphas=ALPHAS, cv=4).fit(X, Y, sample_weight=weights)
    assert np.array_equal(weights, given)
    for j, alpha in enumerate(model.alpha_):
        expected = Ridge(alpha=float(alpha)).fit(X, Y[:, j], sample_weight=weights)
        assert np.linalg.norm(model.coef_[j] - expected.coef_) <= 1e-4 * np.linalg.norm(
            expected.coef_
        )
        assert abs(model.intercept_[j] - expected.intercept_) <= 1e-4 * (
            1 + abs(expected.intercept_)
        )


def test_alphas_must_be_numbers_as_in_sklearn():
    X, Y = make_ridge_problem(1)
    alphas = (1, 1.0, "1")
    with pytest.raises(TypeError, match=r"alphas\[2\]"):
        SklearnRidgeCV(alphas=alphas, cv=3).fit(X, Y)
    with pytest.raises(TypeError, match=r"alphas\[2\] is '1' \(str\)"):
        RidgeCV(alphas=alphas, cv=3).fit(X, Y)
    with pytest.raises(TypeError, match=r"alphas\[2\] is '1' \(str\)"):
        ridge_cv(X, Y, alphas, cv=3)


def test_integer_inputs_compute_in_the_same_dtype_as_the_solver():
    """One rule for both: float64 only with x64 on and a float64 input; integers -> float32."""
    assert jax.config.jax_enable_x64
    X, Y = make_ridge_problem(2)
    X_int, Y_int = np.round(X * 10).astype(np.int64), np.round(Y * 10).astype(np.int32)
    model = RidgeCV(alphas=ALPHAS, cv=3).fit(X_int, Y_int)
    result = ridge_cv(X_int, Y_int, ALPHAS, cv=3)
    assert model.coef_.dtype == np.asarray(result.coef).dtype == np.float32
    np.testing.assert_array_equal(model.coef_, np.asarray(result.coef).T)
    np.testing.assert_array_equal(model.alpha_, result.best_alphas)
    mixed = RidgeCV(alphas=ALPHAS, cv=3).fit(X_int, Y)
    assert mixed.coef_.dtype == np.asarray(ridge_cv(X_int, Y, ALPHAS, cv=3).coef).dtype
    assert mixed.coef_.dtype == np.float64


def test_sparse_input_is_refused_with_how_to_convert():
    X, Y = make_ridge_problem(2)
    sparse = scipy.sparse.csr_matrix(X)
    for solve in (
        lambda: ridge_cv(sparse, Y, ALPHAS),
        lambda: pls1_cv(sparse, Y, [1, 2]),
    ):
        with pytest.raises(ValueError, match=r"sparse input is not supported.*X\.toarray\(\)"):
            solve()
    # The estimators refuse it in scikit-learn's validation, with scikit-learn's own TypeError
    # (as scikit-learn's dense-only estimators, PLSRegression among them).
    for estimator in (RidgeCV(alphas=ALPHAS), PLSRegression()):
        with pytest.raises(TypeError, match=r"dense data is required.*toarray"):
            estimator.fit(sparse, Y)
