"""Partial least squares regression: multi-target PLS2 and per-voxel PLS1 over a component grid.

PLS2 (:func:`pls2_fit`, :func:`pls2_cv`) follows scikit-learn's ``PLSRegression`` definition
exactly: NIPALS with its power-iteration inner loop (same start, update, stopping rule and
``max_iter``), regression-mode deflation of X and Y, the ``svd_flip`` sign convention on the X
weights, and ``coef = W (PᵀW)⁻¹ Qᵀ`` rescaled to the original units.

* primal (n_features <= n_samples): the algorithm on the centred (scaled) design itself.
* dual / kernel (n_features > n_samples): the same iterations in sample space. Every X weight
  is ``w = X_kᵀ a`` for a sample-space vector ``a``, the deflated design is ``X_k = D_k X`` with
  ``D_k`` projecting out the earlier scores, so the whole loop only needs the (n, n) kernel
  ``K_k = X_k X_kᵀ`` (deflated as ``D K D``); the weights and loadings ``W = Xᵀ A``,
  ``P = Xᵀ T diag(1/tᵀt)`` are formed once at the end, streaming feature blocks. The sign of a
  component does not change later components, so the ``svd_flip`` signs are applied then.

PLS1 (:func:`pls1_path`, :func:`pls1_cv`) fits an independent single-target PLS to every
target (voxel), all at once. For one target, NIPALS-PLS1 is a Krylov recursion: with the
response residual ``r_k`` (``r_1 = y``), the weight is ``w_k ∝ Xᵀ r_k``, the raw score is
``s_k = X w_k``, the score ``t_k`` is ``s_k`` orthogonalised against the earlier scores, and
``r_{k+1} = r_k - t_k (t_kᵀ r_k) / t_kᵀ t_k``. Stacking ``S = Q R`` (``Q`` orthonormal scores,
``R`` upper triangular, built by Gram-Schmidt, applied twice for float32 stability), the test
prediction with k components is ``ȳ + Σ_{j<=k} (X_test W R⁻¹)_j (Qᵀ y)_j``: every component
count comes from the same recursion, as cumulative sums. The targets run as the columns of
batched matrix products (``Xᵀ r`` and ``X w``, or ``K r`` on the kernel path, where the fold's
kernel is computed once and shared by every batch), in batches with bounded memory.

Components whose score vanishes (the response residual is already zero, or the design has no
rank left, e.g. ``n_components >= n_samples``) are set to zero with a warning instead of
dividing by zero, so nothing turns into NaN; scikit-learn stops early in the same situation.

Everything else comes from the solver engine (:mod:`v4jax.solvers.engine`): the streamed
kernels and transpose products (:mod:`~v4jax.solvers.engine.kernels`), the per-target runner
that shards PLS1's targets over devices (:mod:`~v4jax.solvers.engine.runner`), and the result
protocol (:mod:`~v4jax.solvers.engine.result`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from v4jax import _validation
from v4jax.metrics import SCORES, score_columns
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.kernels import (
    DEFAULT_FEATURE_BLOCK,
    CentredGram,
    centred_gram,
    feature_block,
    recentre,
    transpose_product,
)
from v4jax.solvers.engine.result import grid_edge
from v4jax.solvers.engine.runner import run_per_target
from v4jax.solvers.engine.sharding import replicate, voxel_mesh

SOLVERS = ("auto", "primal", "dual")
DEFAULT_TARGET_BATCH = 512
# Squared norms below FLOOR * eps² times the reference squared norm count as rounding noise.
_VANISHING_FLOOR = 1e4
# On the kernel path, squared norms below KERNEL_FLOOR * eps times the kernel's trace.
_KERNEL_FLOOR = 100.0


def _linear_prediction(X: Any, coef: jax.Array, intercept: jax.Array) -> jax.Array:
    """(n, n_targets) ``X @ coef + intercept`` for (n, n_features) ``X``."""
    X = _validation.as_2d_float(X, "X")
    if X.shape[1] != coef.shape[0]:
        raise ValueError(
            f"X has {X.shape[1]} features but the PLS was fitted on {coef.shape[0]}; pass "
            "features of the same layer, flattened the same way."
        )
    return jnp.asarray(X, dtype=coef.dtype) @ coef + intercept


@dataclasses.dataclass(frozen=True)
class PLS2Result:
    """Result of :func:`pls2_fit` (attributes named as scikit-learn's ``PLSRegression``).

    Attributes:
      x_weights: (n_features, n_components). y_weights: (n_targets, n_components).
      x_loadings: (n_features, n_components). y_loadings: (n_targets, n_components).
      x_scores: (n_samples, n_components). y_scores: (n_samples, n_components).
      x_rotations: (n_features, n_components) ``W (PᵀW)⁻¹``, maps standardised X to scores.
      coef: (n_features, n_targets) coefficients in the original units.
      intercept: (n_targets,) so that ``predict(X) = X @ coef + intercept`` (scikit-learn
        instead stores ``y_mean`` as ``intercept_`` and subtracts ``x_mean`` inside predict;
        the predictions are the same).
      x_mean, x_std: (n_features,). y_mean, y_std: (n_targets,). Stds are 1 unless ``scale``.
      n_iter: (n_components,) power-method iterations per component (0 for a dropped one).
      n_active: components actually fitted (fewer than asked when the residual vanished).
      solver: "primal" or "dual".
    """

    x_weights: jax.Array
    y_weights: jax.Array
    x_loadings: jax.Array
    y_loadings: jax.Array
    x_scores: jax.Array
    y_scores: jax.Array
    x_rotations: jax.Array
    coef: jax.Array
    intercept: jax.Array
    x_mean: jax.Array
    x_std: jax.Array
    y_mean: jax.Array
    y_std: jax.Array
    n_iter: jax.Array
    n_active: int
    solver: str

    def predict(self, X: Any) -> jax.Array:
        """(n, n_targets) predictions ``X @ coef + intercept`` for (n, n_features) ``X``."""
        return _linear_prediction(X, self.coef, self.intercept)


@dataclasses.dataclass(frozen=True)
class PLS2CVResult:
    """Result of :func:`pls2_cv`; a :class:`~v4jax.solvers.engine.result.CrossValidatedResult`.

    Attributes:
      grid: (n_grid,) the component counts scored, sorted.
      cv_scores: (n_grid, n_targets) held-out score per component count, averaged over folds.
      best_index: (n_targets,) index of ``best_n_components`` in ``grid``, the same for every
        target (PLS2 shares its components between targets, so there is one count).
      on_edge: (n_targets,) True where that count is the first or last of the grid.
      best_n_components: the count with the best score averaged over targets.
      fit: :class:`PLS2Result` refitted on all samples with ``best_n_components``.
      score: "r2" or "pearson".
      coef, intercept: the refit's (n_features, n_targets) and (n_targets,).
    """

    grid: np.ndarray
    cv_scores: jax.Array
    best_index: jax.Array
    on_edge: jax.Array
    best_n_components: int
    fit: PLS2Result
    score: str

    @property
    def coef(self) -> jax.Array:
        return self.fit.coef

    @property
    def intercept(self) -> jax.Array:
        return self.fit.intercept

    def predict(self, X: Any) -> jax.Array:
        """(n, n_targets) predictions ``X @ coef + intercept`` for (n, n_features) ``X``."""
        return self.fit.predict(X)


@dataclasses.dataclass(frozen=True)
class PLS1CVResult:
    """Result of :func:`pls1_cv`; a :class:`~v4jax.solvers.engine.result.CrossValidatedResult`.

    Attributes:
      grid: (n_grid,) the component counts scored, sorted.
      cv_scores: (n_grid, n_targets) held-out score averaged over folds.
      best_index: (n_targets,) index of each target's count in ``grid``.
      on_edge: (n_targets,) True where that count is the first or last of the grid.
      best_n_components: (n_targets,) the count with the best mean held-out score, per target.
      coef: (n_features, n_targets) refitted on all samples with each target's own count.
      intercept: (n_targets,) so that ``predict(X) = X @ coef + intercept``.
      solver: "primal" or "dual". score: "r2" or "pearson".
    """

    grid: np.ndarray
    cv_scores: jax.Array
    best_index: jax.Array
    on_edge: jax.Array
    best_n_components: jax.Array
    coef: jax.Array
    intercept: jax.Array
    solver: str
    score: str

    def predict(self, X: Any) -> jax.Array:
        """(n, n_targets) predictions ``X @ coef + intercept`` for (n, n_features) ``X``."""
        return _linear_prediction(X, self.coef, self.intercept)


# -- public API ---------------------------------------------------------------------------------


def pls2_fit(
    X: Any,
    Y: Any,
    n_components: int,
    *,
    scale: bool = False,
    max_iter: int = 500,
    tol: float = 1e-6,
    solver: str = "auto",
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
) -> PLS2Result:
    """Multi-target PLS regression, equal to scikit-learn's ``PLSRegression``.

    Args:
      X: (n_samples, n_features) design (numpy stays on the host on the dual path and is
        streamed to the device in feature blocks).
      Y: (n_samples, n_targets) or (n_samples,) responses.
      n_components: number of components, 1 <= n_components <= min(n_samples, n_features).
      scale: divide X and Y columns by their standard deviation (ddof=1), as scikit-learn.
      max_iter, tol: power-method limits, as scikit-learn (stop when ``‖w - w_old‖² < tol``).
      solver: "auto" (dual when n_features > n_samples), "primal" or "dual".
      feature_block_size: features per block when streaming X on the dual path.

    Returns:
      :class:`PLS2Result`; float32, or float64 when JAX x64 is on and inputs are float64.

    Example:
      >>> result = pls2_fit(X, Y, 25)
      >>> prediction = result.predict(X_new)
    """
    X, Y, dtype, solver = _check_pls_inputs(X, Y, solver)
    n_samples, n_features = X.shape
    limit = min(n_samples, n_features)
    n_components = _check_component_count(
        n_components, limit, f"min(n_samples, n_features) = {limit}"
    )
    max_iter = _validation.check_positive_int(max_iter, "max_iter")
    tol = _check_tolerance(tol)
    Y_device = jnp.asarray(Y, dtype=dtype)
    if solver == "primal":
        fit = _pls2_primal_fit(
            jnp.asarray(X, dtype=dtype), Y_device, n_components, max_iter, tol, scale
        )
    else:
        stream = _Stream(dtype, feature_block_size, _single_device_mesh())
        fit = _pls2_dual_fit(X, Y_device, n_components, max_iter, tol, scale, stream)
    components = fit.components
    n_active = int(jnp.sum(components.active))
    _warn_dropped_components(n_active, n_components, "PLS2")
    _warn_unconverged(components.n_iter, max_iter)
    rotations, coef, intercept = _pls2_coefficients(fit)
    return PLS2Result(
        x_weights=fit.weights,
        y_weights=components.y_weights,
        x_loadings=fit.loadings,
        y_loadings=components.y_loadings,
        x_scores=components.x_scores,
        y_scores=components.y_scores,
        x_rotations=rotations,
        coef=coef,
        intercept=intercept,
        x_mean=fit.x.mean,
        x_std=fit.x.std,
        y_mean=fit.y.mean,
        y_std=fit.y.std,
        n_iter=components.n_iter,
        n_active=n_active,
        solver=solver,
    )


def pls2_cv(
    X: Any,
    Y: Any,
    n_components: Any,
    *,
    cv: Any = 5,
    score: str = "r2",
    scale: bool = False,
    max_iter: int = 500,
    tol: float = 1e-6,
    solver: str = "auto",
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
    progress: bool = False,
) -> PLS2CVResult:
    """Cross-validated PLS2: every component count of the grid scored from one fit per fold.

    PLS2 with k components is the first k components of a fit with more (NIPALS is
    sequential, and the rotations ``W (PᵀW)⁻¹`` are nested because ``PᵀW`` is upper
    triangular), so each fold fits ``max(n_components)`` components once.

    Args:
      X: (n_samples, n_features). Y: (n_samples, n_targets) or (n_samples,).
      n_components: grid of component counts (an int K means 1..K).
      cv: int (contiguous folds), scikit-learn splitter, or list of (train, test) indices.
      score: "r2" or "pearson". scale, max_iter, tol, solver, feature_block_size: as
        :func:`pls2_fit`. progress: progress bar over folds.

    Returns:
      :class:`PLS2CVResult` with ``cv_scores`` (n_grid, n_targets) and the refit at the count
      with the best score averaged over targets.
    """
    X, Y, dtype, solver = _check_pls_inputs(X, Y, solver)
    _validation.check_choice(score, "score", SCORES)
    grid = as_component_grid(n_components)
    folds = make_folds(cv, X.shape[0])
    n_components_max = _check_grid_against_folds(grid, folds, X.shape[1])
    max_iter = _validation.check_positive_int(max_iter, "max_iter")
    tol = _check_tolerance(tol)
    Y_device = jnp.asarray(Y, dtype=dtype)
    stream = _Stream(dtype, feature_block_size, _single_device_mesh())
    design = _design_on_mesh(X, solver, stream)
    shared = _shared_kernel(design, solver, scale, stream, progress=False)
    fold_scores = []
    for train, test in tqdm(folds, desc="PLS2 folds", disable=not progress):
        fold = _fold_design(design, train, test, scale, solver, stream, shared)
        predictions = _pls2_fold_predictions(
            fold, Y_device[train], n_components_max, max_iter, tol, scale, solver == "dual"
        )
        fold_scores.append(score_columns(Y_device[test], predictions[grid - 1], score))
    cv_scores = jnp.mean(jnp.stack(fold_scores), axis=0)
    best_position = int(jnp.argmax(jnp.mean(cv_scores, axis=1)))
    best = int(grid[best_position])
    fit = pls2_fit(
        X,
        Y,
        best,
        scale=scale,
        max_iter=max_iter,
        tol=tol,
        solver=solver,
        feature_block_size=feature_block_size,
    )
    best_index = jnp.full(Y.shape[1], best_position)
    return PLS2CVResult(
        grid=grid,
        cv_scores=cv_scores,
        best_index=best_index,
        on_edge=grid_edge(best_index, grid.size),
        best_n_components=best,
        fit=fit,
        score=score,
    )


def pls1_path(
    X_train: Any,
    Y_train: Any,
    X_test: Any,
    n_components: Any,
    *,
    scale: bool = False,
    solver: str = "auto",
) -> jax.Array:
    """Held-out predictions of an independent PLS1 per target, for every component count.

    Equal to fitting scikit-learn's ``PLSRegression(n_components=k, scale=scale)`` on each
    target column alone, for every k of the grid, from one Krylov recursion.

    Args:
      X_train: (n_train, n_features). Y_train: (n_train, n_targets) or (n_train,).
      X_test: (n_test, n_features).
      n_components: grid of component counts (an int K means 1..K).
      scale: standardise X on the training set (the response scale does not change PLS1).
      solver: "auto" (kernel form when n_features > n_train), "primal" or "dual".

    Returns:
      (n_grid, n_test, n_targets) predictions.
    """
    X_train, Y_train, dtype, solver = _check_pls_inputs(
        X_train, Y_train, solver, ("X_train", "Y_train")
    )
    X_test = _validation.as_2d_float(X_test, "X_test")
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X_test has {X_test.shape[1]} features but X_train has {X_train.shape[1]}."
        )
    dtype = _validation.compute_dtype(X_train, Y_train, X_test)
    grid = as_component_grid(n_components)
    n_train = X_train.shape[0]
    limit = min(n_train, X_train.shape[1])
    n_components_max = _check_component_count(
        int(grid.max()), limit, f"min(n_train, n_features) = {limit}"
    )
    stream = _Stream(dtype, DEFAULT_FEATURE_BLOCK, _single_device_mesh())
    stacked = np.concatenate([np.asarray(X_train), np.asarray(X_test)])
    train, test = np.arange(n_train), np.arange(n_train, stacked.shape[0])
    stacked = _design_on_mesh(stacked, solver, stream)
    shared = _shared_kernel(stacked, solver, scale, stream, progress=False)
    design = _fold_design(stacked, train, test, scale, solver, stream, shared)
    Y_train = jnp.asarray(Y_train, dtype=dtype)
    predictions = _pls1_predictions(design, Y_train, n_components_max, solver == "dual")
    return predictions[grid - 1]


def pls1_cv(
    X: Any,
    Y: Any,
    n_components: Any = 25,
    *,
    cv: Any = 5,
    score: str = "r2",
    scale: bool = False,
    solver: str = "auto",
    target_batch_size: int | None = DEFAULT_TARGET_BATCH,
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
    progress: bool | None = None,
    devices: Sequence[jax.Device] | None = None,
    dtype: Any = None,
) -> PLS1CVResult:
    """Cross-validated PLS1 per target: one single-target PLS per voxel, count chosen per voxel.

    Each fold runs one batched Krylov recursion to ``max(n_components)`` components; every count
    of the grid is scored from it. The fold kernels (dual path) or standardised designs (primal
    path) are computed once and shared by all target batches. The refit on all samples uses each
    target's own best count.

    Args:
      X: (n_samples, n_features) design (numpy stays on the host on the dual path and is
        streamed to the device in feature blocks).
      Y: (n_samples, n_targets) or (n_samples,) responses.
      n_components: grid of component counts (an int K means 1..K), each at most
        min(smallest training fold, n_features).
      cv: int (contiguous folds, no shuffling), scikit-learn splitter, or list of (train, test).
      score: "r2" or "pearson", the held-out score that selects the count.
      scale: standardise X per training set, as scikit-learn's ``scale=True`` (X and Y are always
        centred, as in scikit-learn).
      solver: "auto" (kernel form when n_features > n_samples), "primal" or "dual".
      target_batch_size: targets per batch (bounds memory); None for all at once.
      feature_block_size: features per block when building kernels and coefficients.
      progress: progress bar over the kernel's feature blocks (default: when many).
      devices: devices to shard the targets over (None: all local devices). The designs and
        kernels are replicated; per-target outputs come back sharded over the voxel axis (see
        :mod:`v4jax.solvers.engine.sharding`; for several hosts pass ``jax.devices()``).
      dtype: compute dtype, "float32" or "float64"; None (default): float64 when JAX's x64 mode
        is on and the inputs are float64, else float32. "float64" upcasts float32 inputs on the
        device (needs x64 mode).

    Returns:
      :class:`PLS1CVResult`.

    Example:
      >>> result = pls1_cv(X, Y, range(1, 26), cv=5)
      >>> result.best_n_components.shape, result.coef.shape
      ((n_targets,), (n_features, n_targets))
    """
    X, Y, dtype, solver = _check_pls_inputs(X, Y, solver, dtype=dtype)
    _validation.check_choice(score, "score", SCORES)
    grid = as_component_grid(n_components)
    _check_grid_against_folds(grid, make_folds(cv, X.shape[0]), X.shape[1])
    decomposition = prepare_pls1(
        X,
        cv,
        scale=scale,
        solver=solver,
        feature_block_size=feature_block_size,
        progress=progress,
        devices=devices,
        dtype=dtype,
    )
    return pls1_cv_targets(decomposition, Y, grid, score=score, target_batch_size=target_batch_size)


@dataclasses.dataclass(frozen=True)
class PLS1Decomposition:
    """Everything :func:`pls1_cv` computes from the design alone, reusable for any targets.

    Build it once with :func:`prepare_pls1` and pass it to :func:`pls1_cv_targets` for every
    component grid and every block of voxels.

    Attributes:
      solver: "primal" or "dual". scale: whether X is standardised per training set.
      folds: ((train indices), (test indices)) per fold, as tuples (hashable).
      designs: one ``_FoldDesign`` per fold (standardised designs, or centred kernels).
      full: the design (or kernel) of all samples, for the refit.
      x_mean, x_std: (n_features,) moments of all samples (std is 1 without ``scale``).
      design: the design as given (dual path: streamed again for the coefficients), else None.
      dtype: compute dtype. feature_block_size: features per streamed block.
      mesh: the one-axis "voxels" mesh everything is replicated on.
      n_samples, n_features: the design's shape.
      max_components: the largest count any grid may ask for (smallest training fold, or
        n_features when that is smaller).
    """

    solver: str
    scale: bool
    folds: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    designs: tuple[Any, ...]
    full: Any
    x_mean: jax.Array
    x_std: jax.Array
    design: Any
    dtype: np.dtype
    feature_block_size: int
    mesh: Any
    n_samples: int
    n_features: int
    max_components: int


def prepare_pls1(
    X: Any,
    cv: Any = 5,
    *,
    scale: bool = False,
    solver: str = "auto",
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
    progress: bool | None = None,
    devices: Sequence[jax.Device] | None = None,
    dtype: Any = None,
) -> PLS1Decomposition:
    """Standardise (or kernelise) the design once per fold and on all samples, for any targets.

    Args:
      X: (n_samples, n_features) design (numpy stays on the host on the dual path).
      cv: int (contiguous folds), scikit-learn splitter, or list of (train, test) index arrays.
      scale, solver, feature_block_size, progress, devices: as :func:`pls1_cv`.
      dtype: compute dtype, "float32" or "float64" (default: float64 when x64 is on and X is
        float64, else float32).

    Returns:
      :class:`PLS1Decomposition`, replicated on every device of the voxel mesh.

    Example:
      >>> decomposition = prepare_pls1(X, cv=5)
      >>> for columns in voxel_blocks:
      ...     result = pls1_cv_targets(decomposition, Y[:, columns], range(1, 26))
    """
    X = _validation.as_2d_float(X, "X")
    _validation.check_choice(solver, "solver", SOLVERS)
    feature_block_size = _validation.check_positive_int(feature_block_size, "feature_block_size")
    n_samples, n_features = X.shape
    if n_samples < 2:
        raise ValueError(f"X has {n_samples} sample; PLS needs at least 2 samples to centre it.")
    if solver == "auto":
        solver = "dual" if n_features > n_samples else "primal"
    dtype = _validation.resolve_dtype(dtype, X)
    folds = make_folds(cv, n_samples)
    stream = _Stream(dtype, feature_block_size, voxel_mesh(devices))
    X = _design_on_mesh(X, solver, stream)
    shared = _shared_kernel(X, solver, scale, stream, progress=progress)
    designs = tuple(
        _fold_design(X, train, test, scale, solver, stream, shared) for train, test in folds
    )
    everything = np.arange(n_samples)
    if shared is None:
        x_moments = _column_moments(X, everything, scale, stream)
    else:
        x_moments = _Moments(shared.mean, jnp.ones_like(shared.mean))
    full = _fold_design(
        X, everything, everything[:1], scale, solver, stream, shared, moments=x_moments
    )
    return PLS1Decomposition(
        solver=solver,
        scale=scale,
        folds=tuple((tuple(train.tolist()), tuple(test.tolist())) for train, test in folds),
        designs=designs,
        full=full,
        x_mean=x_moments.mean,
        x_std=x_moments.std,
        design=X if solver == "dual" else None,
        dtype=dtype,
        feature_block_size=feature_block_size,
        mesh=stream.mesh,
        n_samples=n_samples,
        n_features=n_features,
        max_components=min(min(len(train) for train, _ in folds), n_features),
    )


def pls1_cv_targets(
    decomposition: PLS1Decomposition,
    Y: Any,
    n_components: Any = 25,
    *,
    score: str = "r2",
    target_batch_size: int | None = DEFAULT_TARGET_BATCH,
) -> PLS1CVResult:
    """Cross-validated PLS1 for the targets ``Y`` on a prepared design.

    The per-target phase of :func:`pls1_cv`: one batched Krylov recursion per fold scores every
    count of the grid, each target keeps its best count and is refitted, through the engine's
    per-target runner over the decomposition's voxel mesh (no cross-device communication).

    Args:
      decomposition: from :func:`prepare_pls1`.
      Y: (n_samples, n_targets) or (n_samples,) responses, in the design's sample order.
      n_components: grid of component counts (an int K means 1..K).
      score: "r2" or "pearson". target_batch_size: targets per device batch (None: all).

    Returns:
      :class:`PLS1CVResult` with per-target arrays sharded over the voxel axis.
    """
    if not isinstance(decomposition, PLS1Decomposition):
        raise TypeError(
            "decomposition must come from prepare_pls1(X, cv, ...), got "
            f"{type(decomposition).__name__}."
        )
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    d = decomposition
    if Y.shape[0] != d.n_samples:
        raise ValueError(
            f"Y has {Y.shape[0]} samples but the prepared design has {d.n_samples}; they must "
            "have one row per stimulus, in the same order."
        )
    _validation.check_choice(score, "score", SCORES)
    grid = as_component_grid(n_components)
    n_components_max = _check_component_count(
        int(grid.max()),
        d.max_components,
        f"min(smallest training fold, n_features) = {d.max_components}",
    )
    settings = _PLS1Settings(
        folds=d.folds,
        grid=tuple(grid.tolist()),
        n_components=n_components_max,
        dual=d.solver == "dual",
        score=score,
    )
    cv_scores, best_index, basis_coef, y_mean = run_per_target(
        _pls1_batch,
        _PLS1Shared(d.designs, d.full),
        Y,
        mesh=d.mesh,
        dtype=d.dtype,
        out_ndims=_PLS1_OUTPUT_NDIMS,
        settings=settings,
        target_batch_size=target_batch_size,
    )
    if settings.dual:
        basis_coef = transpose_product(
            d.design,
            basis_coef,
            d.x_mean,
            std=d.x_std,
            dtype=d.dtype,
            block=d.feature_block_size,
            mesh=d.mesh,
        )
    coef = basis_coef / d.x_std[:, None]
    return PLS1CVResult(
        grid=grid,
        cv_scores=cv_scores,
        best_index=best_index,
        on_edge=grid_edge(best_index, grid.size),
        best_n_components=replicate(grid, d.mesh, np.int64)[best_index],
        coef=coef,
        intercept=y_mean - d.x_mean @ coef,
        solver=d.solver,
        score=score,
    )


# -- PLS1 per-target phase (the engine runner's batch function) ---------------------------------


class _PLS1Shared(NamedTuple):
    """What every PLS1 target batch reads, replicated: one ``_FoldDesign`` per fold, and the
    design (or kernel) of all samples for the refit."""

    designs: tuple[Any, ...]
    full: Any


class _PLS1Settings(NamedTuple):
    """The static settings of :func:`_pls1_batch` (hashable: they key the compiled program).

    folds: ((train indices), (test indices)) per fold. grid: the sorted component counts.
    n_components: the recursion's depth, max(grid). dual: kernel path. score: "r2" or "pearson".
    """

    folds: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    grid: tuple[int, ...]
    n_components: int
    dual: bool
    score: str


# Dimensions of _pls1_batch's outputs: cv_scores, best_index, basis coefficients, y_mean.
_PLS1_OUTPUT_NDIMS = (2, 1, 2, 1)


def _pls1_batch(
    shared: _PLS1Shared,
    Y: jax.Array,
    folds: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...],
    grid: tuple[int, ...],
    n_components: int,
    dual: bool,
    score: str,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Score, select and refit one batch of targets (the runner's batch function).

    Args:
      shared: :class:`_PLS1Shared`. Y: (n_samples, b) the batch's responses.
      folds, grid, n_components, dual, score: the fields of :class:`_PLS1Settings`.

    Returns:
      cv_scores (n_grid, b) averaged over folds, best_index (b,) into ``grid``, coefficients
      in the basis space (m, b) (standardised features, or training samples on the dual path)
      and response means (b,).
    """
    counts = np.asarray(grid)
    fold_scores = [
        _pls1_fold_scores(
            design,
            Y[np.asarray(train)],
            Y[np.asarray(test)],
            jnp.asarray(counts - 1),
            n_components,
            dual,
            score,
        )
        for design, (train, test) in zip(shared.designs, folds, strict=True)
    ]
    cv_scores = jnp.mean(jnp.stack(fold_scores), axis=0)
    best_index = jnp.argmax(cv_scores, axis=0)
    basis_coef, y_mean = _pls1_refit(
        shared.full.train, Y, jnp.asarray(counts)[best_index], n_components, dual
    )
    return cv_scores, best_index, basis_coef, y_mean


# -- PLS2 NIPALS cores ----------------------------------------------------------------------------


class _PLS2Components(NamedTuple):
    """Per-component outputs of a NIPALS fit (columns: components).

    ``weights`` is (n_features, K) X weights on the primal path, and (n_samples, K) sample-space
    vectors ``A`` with ``W = Xᵀ A`` on the dual path (signs not yet flipped there).
    """

    weights: jax.Array
    x_scores: jax.Array
    y_weights: jax.Array
    y_scores: jax.Array
    y_loadings: jax.Array
    n_iter: jax.Array
    active: jax.Array


def _prepare_residual(Y: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """scikit-learn's start: zero near-zero columns, start from the first non-constant one."""
    Y = jnp.where(jnp.all(jnp.abs(Y) < 10 * eps, axis=0), 0.0, Y)
    usable = jnp.any(jnp.abs(Y) > eps, axis=0)
    alive = jnp.any(usable)
    start = jnp.where(alive, Y[:, jnp.argmax(usable)], 1.0)
    return Y, start, alive


def _safe(values: jax.Array) -> jax.Array:
    return jnp.where(values != 0, values, 1.0)


def _y_step(Y: jax.Array, scores: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Y weights from X scores and the next Y score, as scikit-learn's power method."""
    y_weights = Y.T @ scores / _safe(scores @ scores)
    return y_weights, Y @ y_weights / (y_weights @ y_weights + eps)


@functools.partial(jax.jit, static_argnames="n_components")
def _pls2_dual(
    kernel: jax.Array, Y: jax.Array, n_components: int, max_iter: int, tol: float
) -> _PLS2Components:
    """NIPALS on the (n, n) kernel of the standardised design; ``w_k = X_kᵀ a_k``."""
    n_samples, n_targets = Y.shape
    eps = jnp.finfo(Y.dtype).eps
    floor = _VANISHING_FLOOR * eps**2 * jnp.trace(kernel)
    outputs = _empty_components(n_samples, n_samples, n_targets, n_components, Y.dtype)

    def component(k, carry):
        K, Y_k, alive, out = carry
        Y_k, start, y_alive = _prepare_residual(Y_k, eps)

        def power_step(state):
            iteration, _, u, a_old, _, _, _ = state
            uu = u @ u
            Ku = K @ u
            factor = 1.0 / (uu * (jnp.sqrt(jnp.maximum(u @ Ku, 0.0)) / uu + eps))
            a, scores = u * factor, Ku * factor
            y_weights, u = _y_step(Y_k, scores, eps)
            change = a - a_old
            converged = (n_targets == 1) | ((iteration > 0) & (change @ (K @ change) < tol))
            return iteration + 1, converged, u, a, a, scores, y_weights

        zeros_n = jnp.zeros(n_samples, Y.dtype)
        state = (0, False, start, zeros_n, zeros_n, zeros_n, jnp.zeros(n_targets, Y.dtype))
        iteration, _, _, _, a, scores, y_weights = jax.lax.while_loop(
            lambda s: (~s[1]) & (s[0] < max_iter), power_step, state
        )
        squared = scores @ scores
        # ‖X_kᵀu‖² / ‖u‖² = 1 / ‖a‖² at the kernel's rounding level: no rank left in X_k.
        rank_left = (a @ a) * jnp.trace(kernel) * _KERNEL_FLOOR * eps < 1.0
        active = alive & y_alive & rank_left & (squared > floor)
        a, scores, y_weights = (jnp.where(active, v, 0.0) for v in (a, scores, y_weights))
        squared = jnp.where(active, squared, 1.0)
        y_scores = Y_k @ y_weights / _safe(y_weights @ y_weights)
        y_loadings = Y_k.T @ scores / squared
        kernel_scores = K @ scores
        K = (
            K
            - jnp.outer(scores, kernel_scores) / squared
            - jnp.outer(kernel_scores, scores) / squared
            + jnp.outer(scores, scores) * (scores @ kernel_scores) / squared**2
        )
        Y_k = Y_k - jnp.outer(scores, y_loadings)
        out = _store_component(
            out,
            k,
            a,
            scores,
            y_weights,
            y_scores,
            y_loadings,
            jnp.where(active, iteration, 0),
            active,
        )
        return K, Y_k, active, out

    _, _, _, outputs = jax.lax.fori_loop(
        0, n_components, component, (kernel, Y, jnp.array(True), outputs)
    )
    return outputs


@functools.partial(jax.jit, static_argnames="n_components")
def _pls2_primal(
    X: jax.Array, Y: jax.Array, n_components: int, max_iter: int, tol: float
) -> tuple[_PLS2Components, jax.Array, jax.Array]:
    """scikit-learn's NIPALS on the standardised design; returns components, W and P."""
    n_samples, n_features = X.shape
    n_targets = Y.shape[1]
    eps = jnp.finfo(Y.dtype).eps
    floor = _VANISHING_FLOOR * eps**2 * jnp.sum(X**2)
    outputs = _empty_components(n_features, n_samples, n_targets, n_components, Y.dtype)
    loadings = jnp.zeros((n_features, n_components), Y.dtype)

    def component(k, carry):
        X_k, Y_k, alive, out, loadings = carry
        Y_k, start, y_alive = _prepare_residual(Y_k, eps)

        def power_step(state):
            iteration, _, u, w_old, _, _, _ = state
            w = X_k.T @ u / (u @ u)
            w = w / (jnp.sqrt(w @ w) + eps)
            scores = X_k @ w
            y_weights, u = _y_step(Y_k, scores, eps)
            change = w - w_old
            converged = (n_targets == 1) | (change @ change < tol)
            return iteration + 1, converged, u, w, w, scores, y_weights

        w_old = jnp.full(n_features, 100.0, Y.dtype)
        state = (
            0,
            False,
            start,
            w_old,
            w_old,
            jnp.zeros(n_samples, Y.dtype),
            jnp.zeros(n_targets, Y.dtype),
        )
        iteration, _, _, _, w, scores, y_weights = jax.lax.while_loop(
            lambda s: (~s[1]) & (s[0] < max_iter), power_step, state
        )
        squared = scores @ scores
        active = alive & y_alive & (squared > floor)
        sign = _svd_flip_signs(w[:, None])[0]
        w, scores, y_weights = (jnp.where(active, v * sign, 0.0) for v in (w, scores, y_weights))
        squared = jnp.where(active, squared, 1.0)
        y_scores = Y_k @ y_weights / _safe(y_weights @ y_weights)
        x_loadings = X_k.T @ scores / squared
        y_loadings = Y_k.T @ scores / squared
        X_k = X_k - jnp.outer(scores, x_loadings)
        Y_k = Y_k - jnp.outer(scores, y_loadings)
        out = _store_component(
            out,
            k,
            w,
            scores,
            y_weights,
            y_scores,
            y_loadings,
            jnp.where(active, iteration, 0),
            active,
        )
        return X_k, Y_k, active, out, loadings.at[:, k].set(x_loadings)

    _, _, _, outputs, loadings = jax.lax.fori_loop(
        0, n_components, component, (X, Y, jnp.array(True), outputs, loadings)
    )
    return outputs, outputs.weights, loadings


def _empty_components(
    n_weight_rows: int, n_samples: int, n_targets: int, n_components: int, dtype: Any
) -> _PLS2Components:
    return _PLS2Components(
        weights=jnp.zeros((n_weight_rows, n_components), dtype),
        x_scores=jnp.zeros((n_samples, n_components), dtype),
        y_weights=jnp.zeros((n_targets, n_components), dtype),
        y_scores=jnp.zeros((n_samples, n_components), dtype),
        y_loadings=jnp.zeros((n_targets, n_components), dtype),
        n_iter=jnp.zeros(n_components, jnp.int32),
        active=jnp.zeros(n_components, bool),
    )


def _store_component(out: _PLS2Components, k: Any, *columns: jax.Array) -> _PLS2Components:
    return _PLS2Components(
        *(
            stored.at[..., k].set(jnp.asarray(column, stored.dtype))
            for stored, column in zip(out, columns, strict=True)
        )
    )


@jax.jit
def _dual_weights_and_loadings(
    fit: _PLS2Components, products: jax.Array
) -> tuple[_PLS2Components, jax.Array, jax.Array]:
    """X weights ``Xᵀ A`` and loadings ``Xᵀ T / tᵀt`` from their products, with svd_flip signs."""
    n_components = fit.x_scores.shape[1]
    weights = products[:, :n_components]
    loadings = products[:, n_components:] / _safe_square_norms(fit.x_scores)
    signs = _svd_flip_signs(weights)
    return _flip(fit, signs), weights * signs, loadings * signs


class _PLS2Fit(NamedTuple):
    """A NIPALS fit in the standardised space, with the moments that standardised it.

    components: :class:`_PLS2Components` (signs flipped; on the dual path ``weights`` still
      holds the sample-space vectors ``A``). weights: (n_features, K) X weights ``W``.
    loadings: (n_features, K) X loadings ``P``. x: moments of X, (n_features,) each.
    y: moments of Y, (n_targets,) each.
    """

    components: _PLS2Components
    weights: jax.Array
    loadings: jax.Array
    x: _Moments
    y: _Moments


@functools.partial(jax.jit, static_argnames=("n_components", "scale"))
def _pls2_primal_fit(
    X: jax.Array, Y: jax.Array, n_components: int, max_iter: int, tol: float, scale: bool
) -> _PLS2Fit:
    """Standardise, then NIPALS on the (n_samples, n_features) design."""
    X_standard, x_moments = _standardised(X, scale)
    Y_standard, y_moments = _standardised(Y, scale)
    components, weights, loadings = _pls2_primal(
        X_standard, Y_standard, n_components, max_iter, tol
    )
    return _PLS2Fit(components, weights, loadings, x_moments, y_moments)


def _pls2_dual_fit(
    X: Any, Y: jax.Array, n_components: int, max_iter: int, tol: float, scale: bool, stream: _Stream
) -> _PLS2Fit:
    """NIPALS on the kernel of the standardised design, then ``W`` and ``P`` streamed from X."""
    x_moments = _column_moments(X, np.arange(X.shape[0]), scale, stream)
    Y_standard, y_moments = _standardised(Y, scale)
    kernel = centred_gram(
        X, mean=x_moments.mean, std=x_moments.std, progress=False, **stream._asdict()
    ).kernel
    components = _pls2_dual(kernel, Y_standard, n_components, max_iter, tol)
    products = transpose_product(
        X,
        jnp.concatenate([components.weights, components.x_scores], axis=1),
        x_moments.mean,
        std=x_moments.std,
        **stream._asdict(),
    )
    components, weights, loadings = _dual_weights_and_loadings(components, products)
    return _PLS2Fit(components, weights, loadings, x_moments, y_moments)


@jax.jit
def _pls2_coefficients(fit: _PLS2Fit) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rotations ``W (PᵀW)⁻¹`` (n_features, K), coefficients in original units
    (n_features, n_targets) and intercepts (n_targets,)."""
    components = fit.components
    rotations = fit.weights @ _inverse_unit_triangle(
        fit.loadings.T @ fit.weights, components.active
    )
    coef = (rotations @ components.y_loadings.T) * fit.y.std / fit.x.std[:, None]
    return rotations, coef, fit.y.mean - fit.x.mean @ coef


@functools.partial(jax.jit, static_argnames=("n_components", "scale", "dual"))
def _pls2_fold_predictions(
    design: _FoldDesign,
    Y_train: jax.Array,
    n_components: int,
    max_iter: int,
    tol: float,
    scale: bool,
    dual: bool,
) -> jax.Array:
    """(K, n_test, n_targets) held-out predictions of one K-component fit, for 1..K components."""
    Y_standard, y_moments = _standardised(Y_train, scale)
    if dual:
        fit = _pls2_dual(design.train, Y_standard, n_components, max_iter, tol)
        cross = (fit.x_scores.T @ design.train @ fit.weights) / _safe_square_norms(fit.x_scores).T
        test_scores = design.test @ fit.weights @ _inverse_unit_triangle(cross, fit.active)
    else:
        fit, weights, loadings = _pls2_primal(design.train, Y_standard, n_components, max_iter, tol)
        rotations = weights @ _inverse_unit_triangle(loadings.T @ weights, fit.active)
        test_scores = design.test @ rotations
    y_loadings = fit.y_loadings * y_moments.std[:, None]
    return _cumulative_predictions(test_scores, y_loadings, y_moments.mean)


def _svd_flip_signs(weights: jax.Array) -> jax.Array:
    """(K,) sign of each column's largest-magnitude entry (scikit-learn's ``_svd_flip_1d``)."""
    largest = jnp.argmax(jnp.abs(weights), axis=0)
    signs = jnp.sign(weights[largest, jnp.arange(weights.shape[1])])
    return jnp.where(signs == 0, 1.0, signs).astype(weights.dtype)


def _flip(fit: _PLS2Components, signs: jax.Array) -> _PLS2Components:
    return fit._replace(
        weights=fit.weights * signs,
        x_scores=fit.x_scores * signs,
        y_weights=fit.y_weights * signs,
        y_scores=fit.y_scores * signs,
        y_loadings=fit.y_loadings * signs,
    )


def _safe_square_norms(columns: jax.Array) -> jax.Array:
    """(1, K) squared column norms, 1 where a column is zero (a dropped component)."""
    return _safe(jnp.sum(columns**2, axis=0, keepdims=True))


def _inverse_unit_triangle(cross: jax.Array, active: jax.Array) -> jax.Array:
    """Inverse of ``PᵀW`` (upper triangular, unit diagonal for fitted components).

    Dropped components get an identity row and column (their W and P columns are zero), which
    is what the pseudo-inverse scikit-learn uses gives them.
    """
    both = active[:, None] & active[None, :]
    upper = jnp.triu(jnp.where(both, cross, 0.0)) + jnp.diag(jnp.where(active, 0.0, 1.0))
    return solve_triangular(upper, jnp.eye(upper.shape[0], dtype=upper.dtype), lower=False)


def _cumulative_predictions(
    test_scores: jax.Array, y_loadings: jax.Array, y_mean: jax.Array
) -> jax.Array:
    """(K, n_test, n_targets) predictions with 1..K components: cumulative rank-one terms."""
    terms = test_scores.T[:, :, None] * y_loadings.T[:, None, :]
    return jnp.cumsum(terms, axis=0) + y_mean


# -- PLS1 batched Krylov recursion ----------------------------------------------------------------


class _FoldDesign(NamedTuple):
    """A training/test pair of designs, standardised on the training set.

    Primal: ``train`` (n_train, n_features) and ``test`` (n_test, n_features).
    Dual: ``train`` the (n_train, n_train) kernel and ``test`` the (n_test, n_train) kernel.
    """

    train: jax.Array
    test: jax.Array


class _Krylov(NamedTuple):
    """One batched PLS1 recursion.

    basis: (K, m, b) unit X weights (primal, m = n_features) or sample vectors ``a`` with
      ``w = Xᵀ a`` (dual, m = n_train). inverse: (b, K, K) inverse of the upper triangular R
      with ``S = Q R``. projections: (K, b) ``Qᵀ y``. y_mean: (b,).
    """

    basis: jax.Array
    inverse: jax.Array
    projections: jax.Array
    y_mean: jax.Array


class _KrylovState(NamedTuple):
    """The recursion's carry after k components (b targets, m basis rows, K components).

    residual: (n_samples, b) response residuals. scores: (K, n_samples, b) unit scores ``Q``.
    basis: (K, m, b) unit weights. triangle: (K, K, b) ``R``. projections: (K, b) ``Qᵀ y``.
    """

    residual: jax.Array
    scores: jax.Array
    basis: jax.Array
    triangle: jax.Array
    projections: jax.Array


def _pls1_recursion(train: jax.Array, Y: jax.Array, n_components: int, dual: bool) -> _Krylov:
    """Batched NIPALS-PLS1 (one independent PLS per column of Y) as a Krylov recursion.

    Args:
      train: (n_samples, n_features) standardised design, or (n_samples, n_samples) centred
        kernel when ``dual``. Y: (n_samples, b) responses. n_components: K.
    """
    n_samples, n_targets = Y.shape
    dtype = Y.dtype
    eps = jnp.finfo(dtype).eps
    y_mean = jnp.mean(Y, axis=0)
    residual = Y - y_mean
    y_power = jnp.sum(residual**2, axis=0)
    trace = jnp.trace(train) if dual else jnp.sum(train**2)
    basis_rows = n_samples if dual else train.shape[1]
    # The kernel's own rounding (relative eps) hides directions whose squared norm is below it;
    # the design's rounding hides those below eps².
    weight_floor = _KERNEL_FLOOR * eps if dual else _VANISHING_FLOOR * eps**2
    # zeros_like(Y) keeps Y's type under shard_map (varying over the voxel axis), as the loop
    # carry must.
    initial = _KrylovState(
        residual=residual,
        scores=jnp.zeros_like(Y, shape=(n_components, n_samples, n_targets)),
        basis=jnp.zeros_like(Y, shape=(n_components, basis_rows, n_targets)),
        triangle=jnp.zeros_like(Y, shape=(n_components, n_components, n_targets)),
        projections=jnp.zeros_like(Y, shape=(n_components, n_targets)),
    )

    def orthogonalise(vectors, scores):
        coefficients = jnp.einsum("knb,nb->kb", scores, vectors)
        return vectors - jnp.einsum("knb,kb->nb", scores, coefficients), coefficients

    def step(k, state: _KrylovState) -> _KrylovState:
        residual = state.residual
        residual_power = jnp.sum(residual**2, axis=0)
        if dual:
            direction = residual
            raw = train @ residual
            weight_power = jnp.sum(residual * raw, axis=0)
        else:
            direction = train.T @ residual
            weight_power = jnp.sum(direction**2, axis=0)
        usable = (residual_power > _VANISHING_FLOOR * eps**2 * y_power) & (
            weight_power > weight_floor * trace * residual_power
        )
        inverse_norm = jnp.where(usable, jax.lax.rsqrt(jnp.where(usable, weight_power, 1.0)), 0.0)
        direction = direction * inverse_norm
        raw = raw * inverse_norm if dual else train @ direction
        raw_power = jnp.sum(raw**2, axis=0)
        orthogonal, first = orthogonalise(raw, state.scores)
        orthogonal, second = orthogonalise(orthogonal, state.scores)
        score_power = jnp.sum(orthogonal**2, axis=0)
        usable = usable & (score_power > _VANISHING_FLOOR * eps**2 * raw_power)
        score_norm = jnp.sqrt(jnp.where(usable, score_power, 1.0))
        unit_score = jnp.where(usable, orthogonal / score_norm, 0.0)
        column = jnp.where(usable, first + second, 0.0)
        column = column + jax.nn.one_hot(k, n_components, dtype=dtype)[:, None] * score_norm
        scores = state.scores.at[k].set(unit_score)
        residual, coefficients = orthogonalise(residual, scores)
        return _KrylovState(
            residual=residual,
            scores=scores,
            basis=state.basis.at[k].set(jnp.where(usable, direction, 0.0)),
            triangle=state.triangle.at[:, k].set(column),
            projections=state.projections.at[k].set(coefficients[k]),
        )

    final = jax.lax.fori_loop(0, n_components, step, initial)
    identity = jnp.eye(n_components, dtype=dtype)
    inverse = jax.vmap(lambda upper: solve_triangular(upper, identity, lower=False))(
        jnp.moveaxis(final.triangle, -1, 0)
    )
    return _Krylov(final.basis, inverse, final.projections, y_mean)


def _pls1_design_predictions(test: jax.Array, krylov: _Krylov) -> jax.Array:
    """(K, n_test, b) predictions with 1..K components."""
    test_basis = jnp.einsum("mr,krb->kmb", test, krylov.basis)
    test_scores = jnp.einsum("kmb,bkj->jmb", test_basis, krylov.inverse)
    return jnp.cumsum(test_scores * krylov.projections[:, None, :], axis=0) + krylov.y_mean


@functools.partial(jax.jit, static_argnames=("n_components", "dual"))
def _pls1_predictions(
    design: _FoldDesign, Y_train: jax.Array, n_components: int, dual: bool
) -> jax.Array:
    krylov = _pls1_recursion(design.train, Y_train, n_components, dual)
    return _pls1_design_predictions(design.test, krylov)


@functools.partial(jax.jit, static_argnames=("n_components", "dual", "score"))
def _pls1_fold_scores(
    design: _FoldDesign,
    Y_train: jax.Array,
    Y_test: jax.Array,
    grid_index: jax.Array,
    n_components: int,
    dual: bool,
    score: str,
) -> jax.Array:
    """(n_grid, b) held-out score of every count of the grid on one fold."""
    predictions = _pls1_predictions(design, Y_train, n_components, dual)
    return score_columns(Y_test, predictions[grid_index], score)


@functools.partial(jax.jit, static_argnames=("n_components", "dual"))
def _pls1_refit(
    train: jax.Array, Y: jax.Array, counts: jax.Array, n_components: int, dual: bool
) -> tuple[jax.Array, jax.Array]:
    """Coefficients in the basis space (m, b) with each target's count, and the Y means."""
    krylov = _pls1_recursion(train, Y, n_components, dual)
    kept = jnp.arange(n_components)[:, None] < counts[None, :]
    coefficients = jnp.einsum("bkj,jb->kb", krylov.inverse, krylov.projections * kept)
    return jnp.einsum("kmb,kb->mb", krylov.basis, coefficients), krylov.y_mean


# -- designs, kernels and moments ---------------------------------------------------------------


class _Moments(NamedTuple):
    """(n_columns,) column means and standard deviations (ddof=1; ones without ``scale``)."""

    mean: jax.Array
    std: jax.Array


class _Stream(NamedTuple):
    """How the design is streamed through the engine's kernels: the compute dtype, features
    per block, and the mesh the products are replicated on (``**stream._asdict()``)."""

    dtype: np.dtype
    block: int
    mesh: Any


def _single_device_mesh() -> Any:
    """The voxel mesh of the first local device, for the fits that are not sharded."""
    return voxel_mesh(jax.local_devices()[:1])


def _design_on_mesh(X: Any, solver: str, stream: _Stream) -> Any:
    """The design replicated on the mesh on the primal path; left as given (streamed) on the
    dual path."""
    return replicate(X, stream.mesh, stream.dtype) if solver == "primal" else X


@functools.partial(jax.jit, static_argnames="scale")
def _moments(values: jax.Array, scale: bool) -> _Moments:
    """Column moments of (n_rows, n_columns) ``values``, as scikit-learn's PLS standardises.

    A column whose deviation is at rounding level (constant) gets a standard deviation of 1, as
    scikit-learn gives exactly constant columns.
    """
    mean = jnp.mean(values, axis=0)
    if not scale:
        return _Moments(mean, jnp.ones_like(mean))
    n_rows = values.shape[0]
    std = jnp.sqrt(jnp.sum((values - mean) ** 2, axis=0) / max(n_rows - 1, 1))
    eps = jnp.finfo(values.dtype).eps
    constant = std <= 10 * np.sqrt(n_rows) * eps * jnp.max(jnp.abs(values), axis=0)
    return _Moments(mean, jnp.where(constant, 1.0, std))


@functools.partial(jax.jit, static_argnames="scale")
def _standardised(values: jax.Array, scale: bool) -> tuple[jax.Array, _Moments]:
    """``(values - mean) / std`` on the columns' own :func:`_moments`, and those moments."""
    moments = _moments(values, scale)
    return (values - moments.mean) / moments.std, moments


@functools.partial(jax.jit, static_argnames="scale")
def _block_moments(X_block: jax.Array, rows: jax.Array, scale: bool) -> _Moments:
    return _moments(X_block[rows], scale)


def _column_moments(X: Any, rows: np.ndarray, scale: bool, stream: _Stream) -> _Moments:
    """:func:`_moments` of X's ``rows``, streaming feature blocks: (n_features,) each."""
    rows = jnp.asarray(rows)
    blocks = [
        _block_moments(
            feature_block(X, start, stream.block, stream.dtype, stream.mesh), rows, scale
        )
        for start in range(0, X.shape[1], stream.block)
    ]
    return _Moments(*(jnp.concatenate(parts) for parts in zip(*blocks, strict=True)))


def _shared_kernel(
    X: Any, solver: str, scale: bool, stream: _Stream, *, progress: bool | None
) -> CentredGram | None:
    """The kernel centred on all samples, which every fold re-centres (dual path without
    scaling: a fold's kernel then needs no pass over the design), or None."""
    if solver != "dual" or scale:
        return None
    return centred_gram(X, progress=progress, **stream._asdict())


def _fold_design(
    X: Any,
    train: np.ndarray,
    test: np.ndarray,
    scale: bool,
    solver: str,
    stream: _Stream,
    shared: CentredGram | None,
    *,
    moments: _Moments | None = None,
) -> _FoldDesign:
    """Designs of one fold, centred (and scaled) on its training samples.

    Args:
      X: (n_samples, n_features) design, replicated on the mesh on the primal path.
      train, test: the fold's sample indices. scale, solver: as :func:`pls1_cv`.
      stream: how the design is streamed. shared: :func:`_shared_kernel`'s kernel, or None.
      moments: the training samples' moments when already known (dual path with scaling).

    Returns:
      Primal: the standardised (n_train, n_features) and (n_test, n_features) designs. Dual:
      the (n_train, n_train) and (n_test, n_train) kernels centred on the training mean.
    """
    if solver == "primal":
        return _primal_design(X, jnp.asarray(train), jnp.asarray(test), scale)
    if shared is None:
        moments = _column_moments(X, train, scale, stream) if moments is None else moments
        gram = centred_gram(
            X, mean=moments.mean, std=moments.std, progress=False, **stream._asdict()
        )
    else:
        gram = shared
    return _FoldDesign(*recentre(gram.kernel, jnp.asarray(train), jnp.asarray(test)))


@functools.partial(jax.jit, static_argnames="scale")
def _primal_design(X: jax.Array, train: jax.Array, test: jax.Array, scale: bool) -> _FoldDesign:
    standard_train, moments = _standardised(X[train], scale)
    return _FoldDesign(standard_train, (X[test] - moments.mean) / moments.std)


# -- checks and warnings ------------------------------------------------------------------------


def _check_pls_inputs(
    X: Any, Y: Any, solver: str, names: tuple[str, str] = ("X", "Y"), dtype: Any = None
) -> tuple[Any, Any, np.dtype, str]:
    X = _validation.as_2d_float(X, names[0])
    Y = _validation.as_2d_float(Y, names[1], allow_1d=True)
    _validation.check_same_samples(X, Y, names)
    _validation.check_choice(solver, "solver", SOLVERS)
    if X.shape[0] < 2:
        raise ValueError(
            f"{names[0]} has {X.shape[0]} sample; PLS needs at least 2 samples to centre the data."
        )
    if solver == "auto":
        solver = "dual" if X.shape[1] > X.shape[0] else "primal"
    return X, Y, _validation.resolve_dtype(dtype, X, Y), solver


def _check_component_count(value: Any, limit: int, description: str) -> int:
    count = _validation.check_positive_int(value, "n_components")
    if count > limit:
        raise ValueError(
            f"n_components={count} exceeds {description}: PLS cannot extract more components "
            "than there are samples or features. Reduce n_components."
        )
    return count


def as_component_grid(n_components: Any) -> np.ndarray:
    """Sorted unique (n_grid,) int64 component counts; an int K means 1..K."""
    if isinstance(n_components, (int, np.integer)) and not isinstance(n_components, bool):
        count = _validation.check_positive_int(n_components, "n_components")
        return np.arange(1, count + 1)
    values = np.atleast_1d(
        np.asarray(list(n_components) if isinstance(n_components, range) else n_components)
    )
    if (
        values.ndim != 1
        or values.size == 0
        or values.dtype.kind not in "iuf"
        or not np.all(np.isfinite(values))
        or np.any(values != np.round(values))
        or np.any(values < 1)
    ):
        raise ValueError(
            f"n_components must be a positive int or a 1-D grid of positive ints, got "
            f"{n_components!r}; for example range(1, 26)."
        )
    return np.unique(values.astype(np.int64))


def _check_grid_against_folds(grid: np.ndarray, folds: list, n_features: int) -> int:
    smallest = min(len(train) for train, _ in folds)
    return _check_component_count(
        int(grid.max()),
        min(smallest, n_features),
        f"min(smallest training fold = {smallest} samples, n_features = {n_features})",
    )


def _check_tolerance(tol: Any) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}.")
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite non-negative number, got {tol!r}.")
    return float(tol)


def _warn_dropped_components(n_active: int, n_components: int, name: str) -> None:
    if n_active < n_components:
        warnings.warn(
            f"{name}: only {n_active} of {n_components} components could be fitted (the Y "
            "residual or the X residual vanished, e.g. n_components >= the rank of the centred "
            "X); the others are set to zero.",
            stacklevel=3,
        )


def _warn_unconverged(n_iter: jax.Array, max_iter: int) -> None:
    if bool(jnp.any(n_iter >= max_iter)):
        warnings.warn(
            f"PLS2 power method reached max_iter={max_iter} for some component; increase "
            "max_iter or tol.",
            ConvergenceWarning,
            stacklevel=3,
        )
