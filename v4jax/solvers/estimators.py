"""Thin scikit-learn estimators over the pure solvers.

Each estimator validates its input once (scikit-learn's ``validate_data`` for the estimator
contract), calls the solver, and stores numpy arrays as fitted attributes, with scikit-learn's
layout: ``coef_`` is (n_targets, n_features), or (n_features,) when ``y`` was 1-D.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from v4jax._validation import check_positive_int as _check_positive_int
from v4jax.solvers.banded import DEFAULT_CONCENTRATION, banded_ridge_cv
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
        self.alpha_on_edge_ = np.asarray(result.on_edge)
        return self


class BandedRidgeCV(_LinearPredictorMixin, RegressorMixin, BaseEstimator):
    """Banded ridge: one penalty per feature band, band weights and alpha chosen per target.

    The columns of X are split into bands (e.g. the features of two layers side by side), and
    :func:`v4jax.banded_ridge_cv` chooses per target a band weighting and an overall alpha.

    Parameters:
      bands: how the columns of X split into bands: None (one band, plain ridge), a sequence of
        band sizes (ints summing to n_features, bands side by side in that order) or a sequence
        of column slices (columns in no band get a zero coefficient).
      alphas: grid of the overall penalty (positive).
      cv: int (contiguous folds, no shuffling), scikit-learn splitter, or list of (train, test).
      fit_intercept: centre X and y on each training set.
      scoring: "r2" or "pearson", the held-out score that selects (band weights, alpha).
      ratios, n_iter, band_weights, concentration, seed: the candidate band weights, as
        :func:`v4jax.banded_ridge_cv` (default: its ratio grid).
      target_batch_size: targets per batch (bounds memory).

    Fitted attributes:
      best_alphas_: (n_targets,) or scalar for 1-D y, each target's overall alpha.
      band_scales_: (n_bands, n_targets) or (n_bands,), the chosen band weights.
      best_band_alphas_: like ``band_scales_``, the per-band penalties.
      cv_scores_: (n_candidates * n_alphas, n_targets), rows as ``grid_``.
      grid_: (n_candidates * n_alphas, n_bands + 1) band weights and alpha of each row.
      coef_: (n_targets, n_features) or (n_features,). intercept_: (n_targets,) or scalar.
      alpha_on_edge_: (n_targets,) bool, chosen alpha at the alpha grid's edge.

    Example:
      >>> model = BandedRidgeCV(bands=[n_conv2, n_conv3]).fit(X_train, Y_train)
      >>> model.band_scales_
    """

    def __init__(
        self,
        bands: Any = None,
        alphas: Any = DEFAULT_ALPHAS,
        cv: Any = 5,
        fit_intercept: bool = True,
        scoring: str = "r2",
        ratios: Any = None,
        n_iter: int | None = None,
        band_weights: Any = None,
        concentration: float = DEFAULT_CONCENTRATION,
        seed: int = 0,
        target_batch_size: int | None = DEFAULT_TARGET_BATCH,
    ) -> None:
        self.bands = bands
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.ratios = ratios
        self.n_iter = n_iter
        self.band_weights = band_weights
        self.concentration = concentration
        self.seed = seed
        self.target_batch_size = target_batch_size

    def fit(self, X: Any, y: Any) -> BandedRidgeCV:
        """Fit on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets)."""
        X, y = _validate_fit_data(self, X, y)
        columns = _band_columns(self.bands, X.shape[1])
        result = banded_ridge_cv(
            [X[:, band] for band in columns],
            y,
            self.alphas,
            cv=self.cv,
            fit_intercept=self.fit_intercept,
            score=self.scoring,
            ratios=self.ratios,
            n_iter=self.n_iter,
            band_weights=self.band_weights,
            concentration=self.concentration,
            seed=self.seed,
            target_batch_size=self.target_batch_size,
            progress=False,
        )
        band_coef = np.asarray(result.coef)
        coef = np.zeros((X.shape[1], band_coef.shape[1]), dtype=band_coef.dtype)
        for band, rows in zip(columns, result.band_slices, strict=True):
            coef[band] += band_coef[rows]
        y_is_vector = y.ndim == 1
        _store_coefficients(self, coef, result.intercept, y_is_vector)
        for name in ("best_alphas", "band_scales", "best_band_alphas"):
            value = np.asarray(getattr(result, name))
            setattr(self, f"{name}_", value[..., 0] if y_is_vector else value)
        self.cv_scores_ = np.asarray(result.cv_scores)
        self.grid_ = result.grid
        self.alpha_on_edge_ = np.asarray(result.on_edge)
        return self


def _band_columns(bands: Any, n_features: int) -> list[np.ndarray]:
    """The column indices of each band, from None, band sizes or column slices."""
    if bands is None:
        return [np.arange(n_features)]
    bands = list(bands)
    if not bands:
        raise ValueError("bands is empty; pass None for one band, band sizes or column slices.")
    if all(isinstance(band, slice) for band in bands):
        columns = [np.arange(n_features)[band] for band in bands]
        if any(column.size == 0 for column in columns):
            raise ValueError(f"bands {bands} select no column of X's {n_features} for some band.")
        return columns
    sizes = [_check_positive_int(size, "band size") for size in bands]
    if sum(sizes) != n_features:
        raise ValueError(
            f"band sizes {sizes} sum to {sum(sizes)} but X has {n_features} features; the "
            "sizes must cover X's columns, bands side by side."
        )
    starts = np.cumsum([0, *sizes])
    return [np.arange(start, stop) for start, stop in itertools.pairwise(starts)]


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
