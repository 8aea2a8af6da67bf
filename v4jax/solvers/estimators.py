"""Thin scikit-learn estimators over the pure solvers.

Each estimator validates its input once (scikit-learn's ``validate_data`` for the estimator
contract), calls the solver, and stores numpy arrays as fitted attributes, with scikit-learn's
layout: ``coef_`` is (n_targets, n_features), or (n_features,) when ``y`` was 1-D.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from v4jax._validation import check_positive_int as _check_positive_int
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.pls import DEFAULT_TARGET_BATCH as DEFAULT_PLS_TARGET_BATCH
from v4jax.solvers.pls import as_component_grid, pls1_cv, pls2_fit
from v4jax.solvers.ridge import DEFAULT_TARGET_BATCH, ridge_cv

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


DEFAULT_PLS_COMPONENTS = tuple(range(1, 26))


def _cap_components(requested: int, limit: int, description: str) -> int:
    """``requested`` capped at ``limit``, with a warning when it had to be lowered."""
    if requested > limit:
        warnings.warn(
            f"n_components={requested} exceeds {description} = {limit}; using {limit} components.",
            UserWarning,
            stacklevel=3,
        )
        return limit
    return requested


class PLSRegression(_LinearPredictorMixin, RegressorMixin, BaseEstimator):
    """Multi-target PLS regression (PLS2), equal to scikit-learn's ``PLSRegression``.

    Same NIPALS algorithm, sign convention and attributes as scikit-learn, jitted in JAX (on the
    GPU when there is one), with a kernel (n_samples x n_samples) form when there are more
    features than samples. Brain-Score's neural-predictivity mapping is
    ``PLSRegression(n_components=25, scale=False)``, this class's default.

    Parameters:
      n_components: number of components. When it exceeds min(n_samples, n_features) of the
        training data, it is capped there with a ``UserWarning`` (``n_components_`` holds the
        count used); scikit-learn raises instead.
      scale: standardise X and y columns (ddof=1).
      max_iter, tol: power-method limits, as scikit-learn.
      solver: "auto", "primal" or "dual" (see :func:`v4jax.pls2_fit`).

    Fitted attributes (scikit-learn's names and layouts):
      coef_: (n_targets, n_features) or (n_features,) for 1-D y.
      intercept_: (n_targets,) or scalar, so that ``predict(X) = X @ coef_.T + intercept_``
        (scikit-learn stores the y mean there and centres X inside ``predict``; the predictions
        are identical).
      x_weights_, x_loadings_, x_rotations_: (n_features, n_components_).
      y_weights_, y_loadings_: (n_targets, n_components_).
      x_scores_, y_scores_: (n_samples, n_components_).
      x_mean_, x_std_: (n_features,). y_mean_, y_std_: (n_targets,).
      n_iter_: (n_components_,) power-method iterations. n_components_: components used.

    Example:
      >>> model = PLSRegression(n_components=25).fit(X_train, Y_train)
      >>> model.score(X_test, Y_test)
    """

    def __init__(
        self,
        n_components: int = 25,
        scale: bool = False,
        max_iter: int = 500,
        tol: float = 1e-6,
        solver: str = "auto",
    ) -> None:
        self.n_components = n_components
        self.scale = scale
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver

    def fit(self, X: Any, y: Any) -> PLSRegression:
        """Fit on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets)."""
        X, y = _validate_fit_data(self, X, y)
        n_components = _check_positive_int(self.n_components, "n_components")
        n_components = _cap_components(
            n_components, min(X.shape), "min(n_samples, n_features) of the training data"
        )
        result = pls2_fit(
            X,
            y,
            n_components,
            scale=self.scale,
            max_iter=self.max_iter,
            tol=self.tol,
            solver=self.solver,
        )
        _store_coefficients(self, result.coef, result.intercept, y.ndim == 1)
        for name in (
            "x_weights",
            "y_weights",
            "x_loadings",
            "y_loadings",
            "x_scores",
            "y_scores",
            "x_rotations",
            "x_mean",
            "x_std",
            "y_mean",
            "y_std",
            "n_iter",
        ):
            setattr(self, f"{name}_", np.asarray(getattr(result, name)))
        self.n_components_ = n_components
        return self


class PLS1CV(_LinearPredictorMixin, RegressorMixin, BaseEstimator):
    """An independent single-target PLS per target (voxel), component count chosen per target.

    All targets are fitted at once by a batched Krylov recursion (see :func:`v4jax.pls1_cv`);
    every count of the grid is scored from one recursion per fold.

    Parameters:
      n_components: grid of component counts. Counts above min(smallest training fold,
        n_features) are dropped with a ``UserWarning`` (``n_components_grid_`` holds the grid
        used).
      cv: int (contiguous folds, no shuffling), scikit-learn splitter, or list of (train, test).
      scoring: "r2" or "pearson", the held-out score that selects the count (``score=`` of
        :func:`v4jax.pls1_cv`).
      scale: standardise X per training set (as scikit-learn's ``scale=True``).
      solver: "auto", "primal" or "dual". target_batch_size: targets per batch.

    Fitted attributes:
      best_n_components_: (n_targets,) or scalar for 1-D y. cv_scores_: (n_grid, n_targets).
      coef_: (n_targets, n_features) or (n_features,). intercept_: (n_targets,) or scalar.
      n_components_grid_: (n_grid,) the grid used.

    Example:
      >>> model = PLS1CV(n_components=range(1, 26), cv=5).fit(X_train, Y_train)
      >>> model.best_n_components_
    """

    def __init__(
        self,
        n_components: Any = DEFAULT_PLS_COMPONENTS,
        cv: Any = 5,
        scoring: str = "r2",
        scale: bool = False,
        solver: str = "auto",
        target_batch_size: int | None = DEFAULT_PLS_TARGET_BATCH,
    ) -> None:
        self.n_components = n_components
        self.cv = cv
        self.scoring = scoring
        self.scale = scale
        self.solver = solver
        self.target_batch_size = target_batch_size

    def fit(self, X: Any, y: Any) -> PLS1CV:
        """Fit on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets)."""
        X, y = _validate_fit_data(self, X, y)
        grid = as_component_grid(self.n_components)
        folds = make_folds(self.cv, X.shape[0])
        smallest = min(len(train) for train, _ in folds)
        limit = min(smallest, X.shape[1])
        highest = _cap_components(int(grid.max()), limit, "min(smallest training fold, n_features)")
        grid = grid[grid <= highest] if np.any(grid <= highest) else np.array([highest])
        result = pls1_cv(
            X,
            y,
            grid,
            cv=folds,
            score=self.scoring,
            scale=self.scale,
            solver=self.solver,
            target_batch_size=self.target_batch_size,
            progress=False,
        )
        y_is_vector = y.ndim == 1
        _store_coefficients(self, result.coef, result.intercept, y_is_vector)
        best = np.asarray(result.best_n_components)
        self.best_n_components_ = best[0] if y_is_vector else best
        self.cv_scores_ = np.asarray(result.cv_scores)
        self.n_components_grid_ = grid
        return self
