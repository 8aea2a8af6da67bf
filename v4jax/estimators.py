"""Thin scikit-learn estimators over the pure solvers.

Each estimator validates its input once (scikit-learn's ``validate_data`` for the estimator
contract), calls the solver, and stores numpy arrays as fitted attributes, with scikit-learn's
layout: ``coef_`` is (n_targets, n_features), or (n_features,) when ``y`` was 1-D.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from v4jax.ridge import DEFAULT_TARGET_BATCH, ridge_cv

DEFAULT_ALPHAS = tuple(np.logspace(-2, 6, 17).tolist())


class _LinearPredictorMixin:
    """``predict`` for estimators with sklearn-layout ``coef_`` and ``intercept_``."""

    def predict(self, X: Any) -> np.ndarray:
        """Predict responses.

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples, n_targets), or (n_samples,) when the model was fitted on a 1-D ``y``.
        """
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        coef = np.asarray(self.coef_, dtype=X.dtype)
        return X @ coef.T + np.asarray(self.intercept_, dtype=X.dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _validate_fit_data(estimator: BaseEstimator, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    return validate_data(
        estimator, X, y, multi_output=True, y_numeric=True, dtype=[np.float64, np.float32]
    )


def _store_coefficients(
    estimator: BaseEstimator, coef: Any, intercept: Any, y_is_vector: bool
) -> None:
    coef = np.asarray(coef).T
    intercept = np.asarray(intercept)
    if y_is_vector:
        coef, intercept = coef[0], intercept[0]
    estimator.coef_ = coef
    estimator.intercept_ = intercept


class RidgeCV(_LinearPredictorMixin, RegressorMixin, BaseEstimator):
    """Ridge regression with a cross-validated alpha per target (all targets at once).

    Parameters:
      alphas: regularisation grid (positive).
      cv: int (contiguous folds, no shuffling), scikit-learn splitter, or list of (train, test).
      fit_intercept: centre X and y on each training set.
      scoring: "r2" or "pearson", the held-out score that selects alpha (``score=`` of
        :func:`v4jax.ridge_cv`; named ``scoring`` here, as in scikit-learn, because ``score`` is
        the estimator's method).
      solver: "auto", "primal" or "dual" (see :func:`v4jax.ridge_cv`).
      target_batch_size: targets per batch (bounds memory).

    Fitted attributes:
      best_alphas_: (n_targets,) or scalar for 1-D y. cv_scores_: (n_alphas, n_targets).
      coef_: (n_targets, n_features) or (n_features,). intercept_: (n_targets,) or scalar.
      alpha_on_edge_: (n_targets,) bool, best alpha at the grid's edge.

    Example:
      >>> model = RidgeCV(alphas=np.logspace(-2, 6, 17), cv=5).fit(X_train, Y_train)
      >>> model.score(X_test, Y_test)
    """

    def __init__(
        self,
        alphas: Any = DEFAULT_ALPHAS,
        cv: Any = 5,
        fit_intercept: bool = True,
        scoring: str = "r2",
        solver: str = "auto",
        target_batch_size: int | None = DEFAULT_TARGET_BATCH,
    ) -> None:
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.solver = solver
        self.target_batch_size = target_batch_size

    def fit(self, X: Any, y: Any) -> RidgeCV:
        """Fit on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets)."""
        X, y = _validate_fit_data(self, X, y)
        result = ridge_cv(
            X,
            y,
            self.alphas,
            cv=self.cv,
            fit_intercept=self.fit_intercept,
            score=self.scoring,
            solver=self.solver,
            target_batch_size=self.target_batch_size,
            progress=False,
        )
        y_is_vector = y.ndim == 1
        _store_coefficients(self, result.coef, result.intercept, y_is_vector)
        best = np.asarray(result.best_alphas)
        self.best_alphas_ = best[0] if y_is_vector else best
        self.cv_scores_ = np.asarray(result.cv_scores)
        self.alpha_on_edge_ = np.asarray(result.alpha_on_edge)
        return self
