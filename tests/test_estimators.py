"""RidgeCV and BandedRidgeCV: scikit-learn's contract and agreement with the pure solvers."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from v4jax import BandedRidgeCV, RidgeCV, banded_ridge_cv, ridge_cv

ALPHAS = np.logspace(-2, 4, 7)


@parametrize_with_checks([RidgeCV()])
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


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
