"""Thin scikit-learn estimators over the pure solvers.

Each estimator validates its input once (scikit-learn's ``validate_data`` for the estimator
contract), calls the solver, and stores numpy arrays as fitted attributes, with scikit-learn's
layout: ``coef_`` is (n_targets, n_features), or (n_features,) when ``y`` was 1-D (for
``PLSRegression``, as scikit-learn's, (1, n_features)).
``RidgeCV`` and ``PLSRegression`` are drop-in replacements for scikit-learn's classes of the
same names; ``docs/sklearn-differences.md`` lists where they deliberately differ.

Compute dtype, the same rule as the solvers': float32 and float64 inputs keep their dtype, other
numbers (integers, bools, float16) become float32, and the solvers compute in float64 only when
JAX's x64 mode is on and an input is float64.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    MultiOutputMixin,
    RegressorMixin,
    TransformerMixin,
)
from sklearn.utils import check_array
from sklearn.utils.validation import FLOAT_DTYPES, check_is_fitted, validate_data

from v4jax._validation import check_positive_int as _check_positive_int
from v4jax.solvers.banded import DEFAULT_CONCENTRATION, banded_ridge_cv
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.result import best_scores
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


def _validate_fit_data(
    estimator: BaseEstimator, X: Any, y: Any, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's checks of (X, y), then each array in the dtype the solvers compute in."""
    if y is None:
        raise ValueError(
            f"This {type(estimator).__name__} estimator requires y to be passed, but the target "
            "y is None."
        )
    X, y = validate_data(estimator, X, y, multi_output=True, y_numeric=True, dtype=None, **options)
    return _as_solver_float(X, "X"), _as_solver_float(y, "y")


def _as_solver_float(array: np.ndarray, name: str) -> np.ndarray:
    """float32 and float64 kept; other numbers become float32, the solvers' default (as the
    solvers treat them); strings and objects are converted to float64 as scikit-learn does."""
    if array.dtype in (np.float32, np.float64):
        return array
    if array.dtype.kind in "biuf":
        return array.astype(np.float32)
    return check_array(array, dtype=np.float64, ensure_2d=False, input_name=name)


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

    A drop-in for scikit-learn's ``RidgeCV`` with ``alpha_per_target=True`` (the differences are
    listed in ``docs/sklearn-differences.md``).

    Parameters:
      alphas: regularisation grid (finite, strictly positive real numbers).
      cv: int (contiguous folds, no shuffling), scikit-learn splitter, or list of (train, test).
      fit_intercept: centre X and y on each training set.
      scoring: "r2", "pearson" or "neg_mean_squared_error", the held-out score (averaged over
        folds) that selects alpha, the largest wins (``score=`` of :func:`v4jax.ridge_cv`).
      solver: "auto", "primal" or "dual" (see :func:`v4jax.ridge_cv`).
      target_batch_size: targets per batch (bounds memory).

    Fitted attributes (shapes for 1-D y / (n, 1) y / (n, n_targets) y):
      alpha_: each target's alpha, as scikit-learn: scalar / scalar / (n_targets,).
      best_alphas_: the same values: scalar / (1,) / (n_targets,).
      best_score_: the chosen alpha's held-out score: scalar / (1,) / (n_targets,).
      cv_scores_: (n_alphas, n_targets) held-out score of every alpha.
      coef_: (n_features,) / (n_features,) / (n_targets, n_features).
      intercept_: scalar / (1,) / (n_targets,).
      alpha_on_edge_: (n_targets,) bool, best alpha at the grid's edge.

    Example:
      >>> model = RidgeCV(alphas=np.logspace(-2, 6, 17), cv=5).fit(X_train, Y_train)
      >>> model.score(X_test, Y_test)
    """

    def __init__(
        self,
        alphas: Any = DEFAULT_ALPHAS,
        *,
        fit_intercept: bool = True,
        scoring: str = "r2",
        cv: Any = 5,
        solver: str = "auto",
        target_batch_size: int | None = DEFAULT_TARGET_BATCH,
    ) -> None:
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.cv = cv
        self.solver = solver
        self.target_batch_size = target_batch_size

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> RidgeCV:
        """Fit on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets).

        ``sample_weight`` (n_samples,) weighs every fit's squared error and the held-out scores
        (see :func:`v4jax.ridge_cv`); the caller's array is not modified.
        """
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
            sample_weight=sample_weight,
        )
        y_is_vector = y.ndim == 1
        _store_coefficients(self, result.coef, result.intercept, y_is_vector)
        best = np.asarray(result.best_alphas)
        scores = np.asarray(best_scores(result))
        self.best_alphas_ = best[0] if y_is_vector else best
        self.best_score_ = scores[0] if y_is_vector else scores
        if best.size == 1:
            self.coef_ = self.coef_.reshape(-1)
            self.alpha_ = best[0]
        else:
            self.alpha_ = best
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
      scoring: "r2", "pearson" or "neg_mean_squared_error", the held-out score that selects
        (band weights, alpha).
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


class PLSRegression(
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    RegressorMixin,
    MultiOutputMixin,
    BaseEstimator,
):
    """Multi-target PLS regression (PLS2), a drop-in for scikit-learn's ``PLSRegression``.

    Same NIPALS algorithm, sign convention, methods and fitted attributes as scikit-learn,
    jitted in JAX (on the GPU when there is one), with a kernel (n_samples x n_samples) form
    when there are more features than samples. The defaults are scikit-learn's
    (``n_components=2, scale=True``); Brain-Score's neural-predictivity mapping is
    ``PLSRegression(n_components=25, scale=False)``. The differences from scikit-learn (compute
    dtype, ``solver``, ``copy=False`` in ``fit``) are listed in ``docs/sklearn-differences.md``.

    Parameters:
      n_components: number of components, 1 <= n_components <= min(n_samples, n_features) of
        the training data (``fit`` raises a ``ValueError`` above that, as scikit-learn).
      scale: standardise X and y columns (ddof=1).
      max_iter, tol: power-method limits, as scikit-learn.
      copy: in ``predict`` and ``transform`` (their default), False centres and scales a float
        X in place, as scikit-learn; ``fit`` never modifies X or y (it works on device copies).
      solver: "auto", "primal" or "dual" (see :func:`v4jax.pls2_fit`).

    Fitted attributes (scikit-learn's names and layouts):
      coef_: (n_targets, n_features), (1, n_features) for 1-D y.
      intercept_: (n_targets,) the mean of y: ``predict(X) = (X - _x_mean) @ coef_.T +
        intercept_``.
      x_weights_, x_loadings_, x_rotations_: (n_features, n_components).
      y_weights_, y_loadings_, y_rotations_: (n_targets, n_components).
      x_scores_, y_scores_: (n_samples, n_components).
      n_iter_: list of the power-method iterations of each component.
      _x_mean, _x_std: (n_features,). _y_mean, _y_std: (n_targets,).

    Example:
      >>> model = PLSRegression(n_components=25, scale=False).fit(X_train, Y_train)
      >>> model.score(X_test, Y_test)
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        scale: bool = True,
        max_iter: int = 500,
        tol: float = 1e-6,
        copy: bool = True,
        solver: str = "auto",
    ) -> None:
        self.n_components = n_components
        self.scale = scale
        self.max_iter = max_iter
        self.tol = tol
        self.copy = copy
        self.solver = solver

    def fit(self, X: Any, y: Any) -> PLSRegression:
        """Fit on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets)."""
        n_components = _check_positive_int(self.n_components, "n_components")
        X, y = _validate_fit_data(self, X, y, ensure_min_samples=2)
        limit = min(X.shape)
        if n_components > limit:
            raise ValueError(
                f"`n_components` upper bound is {limit}. Got {n_components} instead. Reduce "
                "`n_components`."
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
        for name in (
            "x_weights",
            "y_weights",
            "x_loadings",
            "y_loadings",
            "x_scores",
            "y_scores",
            "x_rotations",
        ):
            setattr(self, f"{name}_", np.asarray(getattr(result, name)))
        self.y_rotations_ = self.y_weights_ @ scipy.linalg.pinv(
            self.y_loadings_.T @ self.y_weights_, check_finite=False
        )
        self._x_mean, self._x_std = np.asarray(result.x_mean), np.asarray(result.x_std)
        self._y_mean, self._y_std = np.asarray(result.y_mean), np.asarray(result.y_std)
        self.coef_ = np.asarray(result.coef).T
        self.intercept_ = self._y_mean
        self.n_iter_ = [int(count) for count in np.asarray(result.n_iter)[: result.n_active]]
        self._predict_1d = y.ndim == 1
        self._n_features_out = self.x_rotations_.shape[1]
        return self

    def transform(self, X: Any, y: Any = None, copy: bool = True) -> Any:
        """Project X (and y) on the components.

        Args:
          X: (n_samples, n_features). y: optional (n_samples,) or (n_samples, n_targets).
          copy: False centres and scales a float X (and y) in place.

        Returns:
          x_scores (n_samples, n_components), or (x_scores, y_scores) when ``y`` is given.
        """
        check_is_fitted(self)
        X = validate_data(self, X, copy=copy, dtype=FLOAT_DTYPES, reset=False)
        X -= self._x_mean
        X /= self._x_std
        x_scores = X @ self.x_rotations_
        if y is None:
            return x_scores
        y = check_array(y, input_name="y", ensure_2d=False, copy=copy, dtype=FLOAT_DTYPES)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        y -= self._y_mean
        y /= self._y_std
        return x_scores, y @ self.y_rotations_

    def inverse_transform(self, X: Any, y: Any = None) -> Any:
        """Map component scores back to the original space (exact only with all components).

        Args:
          X: (n_samples, n_components) x scores. y: optional (n_samples, n_components) y scores.

        Returns:
          X (n_samples, n_features), or (X, y) with y (n_samples, n_targets) when ``y`` is given.
        """
        check_is_fitted(self)
        X = check_array(X, input_name="X", dtype=FLOAT_DTYPES)
        X_original = X @ self.x_loadings_.T * self._x_std + self._x_mean
        if y is None:
            return X_original
        y = check_array(y, input_name="y", dtype=FLOAT_DTYPES)
        return X_original, y @ self.y_loadings_.T * self._y_std + self._y_mean

    def predict(self, X: Any, copy: bool = True) -> np.ndarray:
        """Predict responses: ``(X - _x_mean) @ coef_.T + intercept_``.

        Args:
          X: (n_samples, n_features). copy: False centres a float X in place.

        Returns:
          (n_samples, n_targets), or (n_samples,) when the model was fitted on a 1-D ``y``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, copy=copy, dtype=FLOAT_DTYPES, reset=False)
        X -= self._x_mean
        prediction = X @ self.coef_.T + self.intercept_
        return prediction.ravel() if self._predict_1d else prediction

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """``fit(X, y).transform(X, y)``: x_scores, or (x_scores, y_scores) when y is given."""
        return self.fit(X, y).transform(X, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True
        tags.target_tags.required = False
        return tags


class PLS1CV(_LinearPredictorMixin, RegressorMixin, BaseEstimator):
    """An independent single-target PLS per target (voxel), component count chosen per target.

    All targets are fitted at once by a batched Krylov recursion (see :func:`v4jax.pls1_cv`);
    every count of the grid is scored from one recursion per fold.

    Parameters:
      n_components: grid of component counts. Counts above min(smallest training fold,
        n_features) are dropped with a ``UserWarning`` (``n_components_grid_`` holds the grid
        used).
      cv: int (contiguous folds, no shuffling), scikit-learn splitter, or list of (train, test).
      scoring: "r2", "pearson" or "neg_mean_squared_error", the held-out score that selects the
        count (``score=`` of :func:`v4jax.pls1_cv`).
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
