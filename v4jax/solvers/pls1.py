"""Per-voxel PLS1 over a component grid: an independent single-target PLS for every target.

For one target, NIPALS-PLS1 with k components is the projection of the centred response ``y``
on the Krylov space ``span{K y, ..., K^k y}`` of the (training) kernel ``K = X Xᵀ``.

* dual path (n_features > n_samples): in the eigenbasis of the fold's kernel,
  ``K = U diag(λ) Uᵀ`` and ``z = Uᵀ y``, the Krylov space is spanned by ``x ∘ Π_j ∘ z``
  (j < k), with ``x = λ / max λ`` and ``Π_j`` reference polynomials of degree j orthonormal
  for the weights ``x²`` (computed once per fold). The Gram matrices of every target's basis,
  (K, K) each, come from ONE matrix product over all targets, ``(x² Π_j Π_l) · z²``; a
  column-by-column Cholesky factorisation of each then gives every count's fit
  (cumulative sums), and the held-out predictions of every count for every target are one
  GEMM per fold: ``K_test U`` times the stacked ``Π_j ∘ z``. Per target the recursion costs
  O(n k²) in place of O(n² k); the eigendecompositions are computed once per fold in
  :func:`prepare_pls1`, for every target.
* primal path (n_features <= n_samples): the Krylov recursion on the standardised design
  (``w_k ∝ Xᵀ r_k``, scores orthogonalised by Gram-Schmidt, applied twice), already cheap there.

Float32: the reference polynomials keep each target's Gram matrix well conditioned (median
condition number ~1e2 measured on conv3-like data, 1,400 x 8,000, 200 targets, 25
components); the fitted values with every count agree with a float64 NIPALS in the same
eigenbasis to 2e-5 (relative norm), and the tests hold scikit-learn equality at 1e-3 in
float32 and 1e-8 in float64.

Components whose score vanishes (the response residual is already zero, or the kernel has no
rank left, e.g. ``n_components >= n_samples``) are set to zero instead of dividing by zero,
so nothing turns into NaN; scikit-learn stops early in the same situation.

Everything else comes from the solver engine (:mod:`v4jax.solvers.engine`): the streamed
kernels and transpose products, the per-target runner that shards the targets over devices,
and the result protocol.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from v4jax import _validation
from v4jax.metrics import SCORES, score_columns
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.kernels import (
    DEFAULT_FEATURE_BLOCK,
    transpose_product,
)
from v4jax.solvers.engine.result import grid_edge
from v4jax.solvers.engine.runner import run_per_target
from v4jax.solvers.engine.sharding import replicate, voxel_mesh
from v4jax.solvers.pls_common import (
    _KERNEL_FLOOR,
    _VANISHING_FLOOR,
    DEFAULT_TARGET_BATCH,
    SOLVERS,
    _check_component_count,
    _check_grid_against_folds,
    _check_pls_inputs,
    _column_moments,
    _design_on_mesh,
    _fold_design,
    _FoldDesign,
    _linear_prediction,
    _Moments,
    _shared_kernel,
    _single_device_mesh,
    _Stream,
    as_component_grid,
)


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
    design = _pls1_fold(_fold_design(stacked, train, test, scale, solver, stream, shared), solver)
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

    Each fold fits every count 1..``max(n_components)`` for a batch of targets at once (dual
    path: one Gram-matrix GEMM and one prediction GEMM in the fold kernel's eigenbasis; primal
    path: one batched Krylov recursion); every count of the grid is scored from it. The fold
    kernels' eigendecompositions (dual path) or standardised designs (primal path) are computed
    once and shared by all target batches. The refit on all samples uses each target's own best
    count.

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
      designs: one per fold: the ``_SpectralFold`` of its centred kernels (dual path), or its
        standardised ``_FoldDesign`` (primal path).
      full: the same for all samples, for the refit.
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
        _pls1_fold(_fold_design(X, train, test, scale, solver, stream, shared), solver)
        for train, test in folds
    )
    everything = np.arange(n_samples)
    if shared is None:
        x_moments = _column_moments(X, everything, scale, stream)
    else:
        x_moments = _Moments(shared.mean, jnp.ones_like(shared.mean))
    full = _pls1_fold(
        _fold_design(
            X, everything, everything[:1], scale, solver, stream, shared, moments=x_moments
        ),
        solver,
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

    The per-target phase of :func:`pls1_cv`: one batched fit of every count per fold scores
    every count of the grid, each target keeps its best count and is refitted, through the engine's
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


class _PLS1Shared(NamedTuple):
    """What every PLS1 target batch reads, replicated: one ``_SpectralFold`` (dual) or
    ``_FoldDesign`` (primal) per fold, and the same for all samples, for the refit."""

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
        shared.full, Y, jnp.asarray(counts)[best_index], n_components, dual
    )
    return cv_scores, best_index, basis_coef, y_mean


class _Krylov(NamedTuple):
    """One batched PLS1 recursion.

    basis: (K, m, b) unit X weights (m = n_features). inverse: (b, K, K) inverse of the upper
      triangular R with ``S = Q R``. projections: (K, b) ``Qᵀ y``. y_mean: (b,).
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


def _pls1_recursion(train: jax.Array, Y: jax.Array, n_components: int) -> _Krylov:
    """Batched NIPALS-PLS1 (one independent PLS per column of Y) as a Krylov recursion on the
    design (primal path; the dual path works on the kernel's eigenbasis instead).

    Args:
      train: (n_samples, n_features) standardised design. Y: (n_samples, b) responses.
      n_components: K.
    """
    n_samples, n_targets = Y.shape
    dtype = Y.dtype
    eps = jnp.finfo(dtype).eps
    y_mean = jnp.mean(Y, axis=0)
    residual = Y - y_mean
    y_power = jnp.sum(residual**2, axis=0)
    trace = jnp.sum(train**2)
    basis_rows = train.shape[1]
    # The design's rounding hides directions whose squared norm is below eps² of its own.
    weight_floor = _VANISHING_FLOOR * eps**2
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
        direction = train.T @ residual
        weight_power = jnp.sum(direction**2, axis=0)
        usable = (residual_power > _VANISHING_FLOOR * eps**2 * y_power) & (
            weight_power > weight_floor * trace * residual_power
        )
        inverse_norm = jnp.where(usable, jax.lax.rsqrt(jnp.where(usable, weight_power, 1.0)), 0.0)
        direction = direction * inverse_norm
        raw = train @ direction
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
    if dual:
        return _spectral_predictions(design, Y_train, n_components)
    krylov = _pls1_recursion(design.train, Y_train, n_components)
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
    full: Any, Y: jax.Array, counts: jax.Array, n_components: int, dual: bool
) -> tuple[jax.Array, jax.Array]:
    """Coefficients in the basis space (m, b) with each target's count, and the Y means.

    ``full`` is the all-sample :class:`_SpectralFold` (dual) or :class:`_FoldDesign` (primal).
    """
    if dual:
        return _spectral_refit(full, Y, counts, n_components)
    krylov = _pls1_recursion(full.train, Y, n_components)
    kept = jnp.arange(n_components)[:, None] < counts[None, :]
    coefficients = jnp.einsum("bkj,jb->kb", krylov.inverse, krylov.projections * kept)
    return jnp.einsum("kmb,kb->mb", krylov.basis, coefficients), krylov.y_mean


class _SpectralFold(NamedTuple):
    """A fold's training kernel ``K = U diag(values) Uᵀ`` and its test kernel in that basis.

    values: (n_train,) eigenvalues, rounding-level ones set to 0. vectors: (n_train, n_train)
    ``U``. test: (n_test, n_train) ``K_test U``.
    """

    values: jax.Array
    vectors: jax.Array
    test: jax.Array


@jax.jit
def _spectral_fold(kernel: jax.Array, test_kernel: jax.Array) -> _SpectralFold:
    """:class:`_SpectralFold` of a centred (n_train, n_train) kernel and (n_test, n_train) test
    kernel. Eigenvalues at or below the kernel's rounding level (``_KERNEL_FLOOR * eps *
    trace``) are null directions, as the recursion's weight test treats them."""
    values, vectors = jnp.linalg.eigh(kernel)
    values = jnp.maximum(values, 0.0)
    eps = jnp.finfo(kernel.dtype).eps
    values = jnp.where(values > _KERNEL_FLOOR * eps * jnp.sum(values), values, 0.0)
    return _SpectralFold(values, vectors, test_kernel @ vectors)


class _KrylovGram(NamedTuple):
    """Every count's PLS1 fit of a batch of targets, in polynomial coordinates.

    With ``x = values / max(values)`` and reference polynomials ``Π`` (orthonormal for the
    weights ``x²`` on the eigenvalues), target v's Krylov space ``span{K y, ..., K^k y}`` is
    spanned by ``x ∘ Π_j ∘ z`` (j < k, ``z = Uᵀ y``), and its dual coefficients with k
    components are ``(Π c_k) ∘ z / max(values)``.

    polynomials: (n, K) ``Π``. coefficients: (K, K, b) ``c_k`` for k = 1..K (first axis).
    projected: (n, b) ``z``. y_mean: (b,). scale: () ``max(values)`` (1 when all vanish).
    """

    polynomials: jax.Array
    coefficients: jax.Array
    projected: jax.Array
    y_mean: jax.Array
    scale: jax.Array


def _reference_polynomials(x: jax.Array, n_components: int) -> jax.Array:
    """(n, K) values at ``x`` of the polynomials of degree 0..K-1 orthonormal for the weights
    ``x²`` (Stieltjes with full reorthogonalisation, twice). Once the Krylov space of the
    weights is exhausted (fewer distinct non-zero eigenvalues than K) the columns are zero."""
    weights = x**2
    eps = jnp.finfo(x.dtype).eps

    def step(j, carry):
        columns, candidate = carry
        raw_power = jnp.sum(weights * candidate**2)
        for _pass in range(2):  # columns not yet set are zero
            candidate = candidate - columns @ (columns.T @ (weights * candidate))
        power = jnp.sum(weights * candidate**2)
        usable = power > _VANISHING_FLOOR * eps**2 * raw_power
        column = jnp.where(usable, candidate * jax.lax.rsqrt(jnp.where(usable, power, 1.0)), 0.0)
        return columns.at[:, j].set(column), x * column

    columns = jnp.zeros((x.shape[0], n_components), x.dtype)
    return jax.lax.fori_loop(0, n_components, step, (columns, jnp.ones_like(x)))[0]


class _Cholesky(NamedTuple):
    """The column-by-column Cholesky carry of :func:`_krylov_gram` (b targets, K columns).

    lower: (K, K, b) ``L`` with ``B = L Lᵀ`` (dropped and future columns zero). inverse:
    (K, K, b) the upper triangular ``L⁻ᵀ``, whose columns are the orthonormal directions'
    coordinates. explained: (b,) squared norm of the fit so far. coefficients: (K, K, b) the
    fit's coordinates with 1..K components (first axis).
    """

    lower: jax.Array
    inverse: jax.Array
    explained: jax.Array
    coefficients: jax.Array


def _krylov_gram(
    fold_values: jax.Array, U: jax.Array, Y: jax.Array, n_components: int
) -> _KrylovGram:
    """:class:`_KrylovGram` of (n, b) responses ``Y`` on a kernel ``U diag(values) Uᵀ``.

    The Gram matrix of each target's Krylov basis (and the basis's products with ``z``) are
    one GEMM for the whole batch, (K², n) x (n, b); a Cholesky factorisation of each (K, K)
    Gram matrix, column by column, then orthonormalises the basis in coordinates: the k-th
    count's fit is the projection of ``z`` on the first k orthonormal directions. A direction
    whose Cholesky pivot is at rounding level of its own squared norm, or met when the
    response residual has vanished, is dropped (zero), as the NIPALS recursion drops it.
    """
    dtype = Y.dtype
    eps = jnp.finfo(dtype).eps
    y_mean = jnp.mean(Y, axis=0)
    projected = U.T @ (Y - y_mean)
    top = jnp.max(fold_values)
    scale = jnp.where(top > 0, top, 1.0)
    x = fold_values / scale
    polynomials = _reference_polynomials(x, n_components)
    basis = x[:, None] * polynomials
    squares = projected**2
    products = basis.T @ squares  # (K, b): ⟨x ∘ Π_j ∘ z, z⟩
    pair_weights = (basis[:, :, None] * basis[:, None, :]).reshape(x.shape[0], -1)
    gram = (pair_weights.T @ squares).reshape(n_components, n_components, -1)
    y_power = jnp.sum(squares, axis=0)
    rows = jnp.arange(n_components)[:, None]

    def step(j, state: _Cholesky) -> _Cholesky:
        previous = state.lower[j]  # (K, b): row j of L, zero from column j on
        column = gram[:, j] - jnp.einsum("kib,ib->kb", state.lower, previous)
        pivot = column[j]
        usable = (pivot > _VANISHING_FLOOR * eps**2 * gram[j, j]) & (
            y_power - state.explained > _VANISHING_FLOOR * eps**2 * y_power
        )
        root = jnp.sqrt(jnp.where(usable, pivot, 1.0))
        lower = state.lower.at[:, j].set(jnp.where(usable & (rows >= j), column / root, 0.0))
        # The new orthonormal direction's coordinates: (e_j - Σ_i L_ji (L⁻ᵀ)_{:, i}) / L_jj.
        direction = (rows == j) - jnp.einsum("kib,ib->kb", state.inverse, previous)
        direction = jnp.where(usable, direction / root, 0.0)
        projection = jnp.sum(direction * products, axis=0)
        fit = state.coefficients[j - 1] * (j > 0) + direction * projection
        return _Cholesky(
            lower=lower,
            inverse=state.inverse.at[:, j].set(direction),
            explained=state.explained + projection**2,
            coefficients=state.coefficients.at[j].set(fit),
        )

    zeros = jnp.zeros_like(gram)
    initial = _Cholesky(zeros, zeros, jnp.zeros_like(y_power), zeros)
    final = jax.lax.fori_loop(0, n_components, step, initial)
    return _KrylovGram(polynomials, final.coefficients, projected, y_mean, scale)


def _pls1_fold(design: _FoldDesign, solver: str) -> Any:
    """What PLS1 keeps of a fold: the :class:`_SpectralFold` of its kernels (dual path), or the
    standardised designs themselves (primal path)."""
    return _spectral_fold(*design) if solver == "dual" else design


def _spectral_predictions(fold: _SpectralFold, Y_train: jax.Array, n_components: int) -> jax.Array:
    """(K, n_test, b) held-out predictions with 1..K components, from one batched GEMM."""
    fit = _krylov_gram(fold.values, fold.vectors, Y_train, n_components)
    weighted = fit.polynomials[:, :, None] * fit.projected[:, None, :]  # (n, K, b)
    n_samples, _, n_targets = weighted.shape
    test_terms = (fold.test @ weighted.reshape(n_samples, -1)).reshape(-1, n_components, n_targets)
    return jnp.einsum("tjb,kjb->ktb", test_terms, fit.coefficients) / fit.scale + fit.y_mean


def _spectral_refit(
    fold: _SpectralFold, Y: jax.Array, counts: jax.Array, n_components: int
) -> tuple[jax.Array, jax.Array]:
    """(n, b) dual coefficients in sample space with each target's count, and the Y means."""
    fit = _krylov_gram(fold.values, fold.vectors, Y, n_components)
    chosen = jnp.take_along_axis(fit.coefficients, (counts - 1)[None, None, :], axis=0)[0]
    eigen_coefficients = (fit.polynomials @ chosen) * fit.projected / fit.scale
    return fold.vectors @ eigen_coefficients, fit.y_mean
