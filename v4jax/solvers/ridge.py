"""Closed-form ridge regression for all targets at once, cross-validated per target.

The engine does one decomposition per fold and then evaluates every alpha for every target in
batched array expressions:

* primal (n_features <= n_samples): thin SVD of the centred training design,
  ``X_c = U diag(s) Vᵀ``; predictions for alpha are
  ``(X_test - mean) V diag(s / (s² + alpha)) Uᵀ Y_c``.
* dual (n_features > n_samples): eigendecomposition of the centred linear kernel,
  ``K_c = Q diag(lam) Qᵀ``; predictions are ``K_test,c Q diag(1 / (lam + alpha)) Qᵀ Y_c``.
  The kernel of all samples is computed once, streaming the features in blocks centred on their
  overall mean (no cancellation from large offsets; only the blocks on and below the diagonal
  are multiplied, the kernel being symmetric), and every fold's kernel, re-centred on its
  training mean, is taken from it, so the large design matrix is never copied. The refit keeps
  the dual coefficients ``a`` (n_samples, n_targets); the primal ``coef = (X - mean)ᵀ a``
  (2 n p t FLOPs, n_features x n_targets in memory) is formed only when first asked for, and
  :meth:`RidgeCVResult.predict` predicts through the kernel without it.

Both have the form ``prediction(alpha) = A diag(d(alpha)) B`` with ``A`` (n_test, rank),
``B = basisᵀ Y_c`` (rank, n_targets); only ``B`` depends on the targets, so targets are processed
in batches with bounded memory and the decompositions are reused for every batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec
from tqdm.auto import tqdm

from v4jax import _validation
from v4jax.metrics import SCORES, score_columns
from v4jax.solvers.diagnostics import check_conditioning
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.sharding import (
    VOXEL_AXIS,
    padded_voxel_count,
    replicate,
    shard_columns,
    trim_voxels,
    voxel_mesh,
)

SOLVERS = ("auto", "primal", "dual")
DEFAULT_TARGET_BATCH = 2048
DEFAULT_FEATURE_BLOCK = 8192
# Dual path: keep even unresolvable kernel directions once alpha exceeds the eigensolver's noise
# (sqrt(n) * eps * lam_max) by this factor (see _dual_factors).
KEEP_ALL_NOISE_FACTOR = 20.0


class SpectralBasis(NamedTuple):
    """One fold's decomposition, everything the per-target phase needs.

    Attributes:
      left: (n_train, rank) left singular vectors (primal) or kernel eigenvectors (dual).
      spectrum: (rank,) singular values (primal) or kernel eigenvalues (dual).
      test_design: (n_test, rank) ``(X_test - mean) V`` (primal) or ``K_test,c Q`` (dual).
    """

    left: jax.Array
    spectrum: jax.Array
    test_design: jax.Array


class _DualDesign(NamedTuple):
    """What the dual path's lazy coefficients and kernel predictions need from the fit."""

    X: Any
    feature_mean: jax.Array
    dual_padded: jax.Array
    target_mean_padded: jax.Array
    n_targets: int
    dtype: np.dtype
    feature_block_size: int
    mesh: Any


@dataclasses.dataclass(frozen=True)
class RidgeCVResult:
    """Result of :func:`ridge_cv`.

    Attributes:
      best_alphas: (n_targets,) the alpha with the best mean held-out score, per target.
      cv_scores: (n_alphas, n_targets) held-out score averaged over folds.
      coef: (n_features, n_targets) coefficients refitted on all samples with each target's alpha
        (a property: on the dual path it is computed from ``dual_coef`` on first access, then
        cached; :meth:`predict` does not need it).
      intercept: (n_targets,) intercepts (zeros when ``fit_intercept=False``).
      alphas: (n_alphas,) the grid, as given.
      best_alpha_index: (n_targets,) index of each target's alpha in ``alphas``.
      alpha_on_edge: (n_targets,) True where the best alpha is the grid's smallest or largest
        value: the optimum may lie outside the grid, consider widening it.
      solver: "primal" or "dual", the path that ran.
      score: "r2" or "pearson".
      dual_coef: (n_samples, n_targets) dual coefficients ``a`` with
        ``coef = (X - mean)ᵀ a`` (dual path), else None.

    On the dual path the result keeps a reference to the design it was fitted on (not a copy,
    which would double the memory): do not modify that array in place before ``coef`` or
    :meth:`predict` has used it.
    """

    best_alphas: jax.Array
    cv_scores: jax.Array
    intercept: jax.Array
    alphas: np.ndarray
    best_alpha_index: jax.Array
    alpha_on_edge: jax.Array
    solver: str
    score: str
    dual_coef: jax.Array | None
    _primal_coef: jax.Array | None = dataclasses.field(default=None, repr=False)
    _dual_design: _DualDesign | None = dataclasses.field(default=None, repr=False, compare=False)

    @functools.cached_property
    def coef(self) -> jax.Array:
        """(n_features, n_targets) coefficients (dual path: ``(X - mean)ᵀ dual_coef``, cached)."""
        if self._primal_coef is not None:
            return self._primal_coef
        d = self._dual_design
        coef = _dual_to_primal(
            d.X, d.dual_padded, d.feature_mean, d.dtype, d.feature_block_size, d.mesh
        )
        return trim_voxels(coef, d.n_targets)

    def predict(self, X: Any) -> jax.Array:
        """(n, n_targets) predictions ``X @ coef + intercept`` for (n, n_features) ``X``.

        On the dual path, while ``coef`` has not been formed, this goes through the kernel
        instead, ``(X - mean)(X_fit - mean)ᵀ dual_coef + mean(Y)``: n n_samples n_features +
        n n_samples n_targets multiply-adds rather than n_features n_samples n_targets for the
        coefficients, with the design streamed in feature blocks.
        """
        X = _validation.as_2d_float(X, "X")
        if self._primal_coef is not None:
            expected = self._primal_coef.shape[0]
        else:
            expected = self._dual_design.X.shape[1]
        if X.shape[1] != expected:
            raise ValueError(
                f"X has {X.shape[1]} features but the ridge was fitted on {expected}; pass "
                "features of the same layer, flattened the same way."
            )
        if self._primal_coef is not None or "coef" in self.__dict__:
            dtype = self.coef.dtype
            return jnp.asarray(X, dtype=dtype) @ self.coef + self.intercept
        d = self._dual_design
        kernel = _cross_kernel(X, d.X, d.feature_mean, d.dtype, d.feature_block_size, d.mesh)
        return trim_voxels(kernel @ d.dual_padded + d.target_mean_padded, d.n_targets)


def ridge_cv(
    X: Any,
    Y: Any,
    alphas: Any,
    *,
    cv: Any = 5,
    fit_intercept: bool = True,
    score: str = "r2",
    solver: str = "auto",
    target_batch_size: int | None = DEFAULT_TARGET_BATCH,
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
    progress: bool | None = None,
    devices: Sequence[jax.Device] | None = None,
    dtype: Any = None,
) -> RidgeCVResult:
    """Cross-validated ridge regression with an alpha chosen per target.

    Args:
      X: (n_samples, n_features) design (numpy or JAX; numpy stays on the host and is streamed
        to the device in feature blocks on the dual path).
      Y: (n_samples, n_targets) or (n_samples,) responses.
      alphas: (n_alphas,) positive regularisation grid.
      cv: int (contiguous folds, no shuffling), scikit-learn splitter, or list of
        (train, test) index arrays.
      fit_intercept: centre X and Y on each training set (as scikit-learn does).
      score: "r2" or "pearson", the held-out score that selects alpha.
      solver: "auto" (dual when n_features > n_samples), "primal" (SVD of X) or "dual"
        (eigendecomposition of the linear kernel).
      target_batch_size: targets processed together (bounds memory); None for all at once.
      feature_block_size: features per block when building the kernel and the coefficients.
      progress: show a progress bar over the kernel's feature blocks (default: when many).
      devices: devices to shard the voxels over (None: all local devices). The design and
        decompositions are replicated; per-voxel outputs come back sharded over the voxel axis
        (see :mod:`v4jax.solvers.engine.sharding`; for several hosts pass ``jax.devices()``).
      dtype: compute dtype, "float32" or "float64"; None (default) computes in float64 when
        JAX's x64 mode is on and the inputs are float64, else float32. "float64" upcasts
        float32 inputs on the device (needs x64 mode): use it when a
        :class:`~v4jax.solvers.diagnostics.ConditioningWarning` says float32 cannot be trusted.

    Returns:
      :class:`RidgeCVResult`; arrays in the compute dtype. Warns with a
      :class:`~v4jax.solvers.diagnostics.ConditioningWarning` when the decomposition's conditioning
      makes the refit at the smallest chosen alpha untrustworthy in that dtype.

    Example:
      >>> result = ridge_cv(X, Y, np.logspace(-2, 6, 17), cv=5)
      >>> result.best_alphas.shape, result.coef.shape
      ((n_targets,), (n_features, n_targets))
    """
    X = _validation.as_2d_float(X, "X")
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    _validation.check_same_samples(X, Y)
    _validation.check_alphas(alphas)
    _validation.check_choice(score, "score", SCORES)
    decomposition = prepare_ridge(
        X,
        cv,
        fit_intercept=fit_intercept,
        solver=solver,
        feature_block_size=feature_block_size,
        progress=progress,
        devices=devices,
        dtype=_validation.resolve_dtype(dtype, X, Y),
    )
    return ridge_cv_targets(
        decomposition, Y, alphas, score=score, target_batch_size=target_batch_size
    )


@dataclasses.dataclass(frozen=True)
class RidgeDecomposition:
    """Everything :func:`ridge_cv` computes from the design alone, reusable for any targets.

    Build it once with :func:`prepare_ridge` and pass it to :func:`ridge_cv_targets` for every
    alpha grid and every block of voxels: the fold decompositions are never recomputed.

    Attributes:
      solver: "primal" or "dual".
      fit_intercept: whether X and Y are centred on each training set.
      folds: ((train indices), (test indices)) per fold, as tuples (hashable).
      fold_bases: one :class:`SpectralBasis` per fold, replicated on the mesh.
      full: the decomposition of all samples used for the refit.
      feature_mean: (n_features,) column means of X (dual path; zeros without intercept).
      design_dot_mean: (n_samples,) ``(X - mean) @ mean`` (dual path; gives the intercepts
        without the primal coefficients), else None.
      design: the design as given (dual path: streamed again for the coefficients), else None.
      dtype: compute dtype. feature_block_size: features per streamed block.
      mesh: the one-axis "voxels" mesh the decomposition is replicated on.
      n_samples, n_features: the design's shape.
    """

    solver: str
    fit_intercept: bool
    folds: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    fold_bases: tuple[SpectralBasis, ...]
    full: Any
    feature_mean: jax.Array
    design_dot_mean: jax.Array | None
    design: Any
    dtype: np.dtype
    feature_block_size: int
    mesh: Any
    n_samples: int
    n_features: int


def prepare_ridge(
    X: Any,
    cv: Any = 5,
    *,
    fit_intercept: bool = True,
    solver: str = "auto",
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
    progress: bool | None = None,
    devices: Sequence[jax.Device] | None = None,
    dtype: Any = None,
) -> RidgeDecomposition:
    """Decompose the design once per fold (and once on all samples), for any targets.

    Args:
      X: (n_samples, n_features) design (numpy stays on the host on the dual path).
      cv: int (contiguous folds), scikit-learn splitter, or list of (train, test) index arrays.
      fit_intercept, solver, feature_block_size, progress, devices: as :func:`ridge_cv`.
      dtype: compute dtype, "float32" or "float64" (default: float64 when x64 is on and X is
        float64, else float32).

    Returns:
      :class:`RidgeDecomposition`, replicated on every device of the voxel mesh.

    Example:
      >>> decomposition = prepare_ridge(X, cv=5)
      >>> for columns in voxel_blocks:
      ...     result = ridge_cv_targets(decomposition, Y[:, columns], alphas)
    """
    X = _validation.as_2d_float(X, "X")
    _validation.check_choice(solver, "solver", SOLVERS)
    feature_block_size = _validation.check_positive_int(feature_block_size, "feature_block_size")
    n_samples, n_features = X.shape
    folds = make_folds(cv, n_samples)
    dtype = _validation.resolve_dtype(dtype, X)
    if solver == "auto":
        solver = "dual" if n_features > n_samples else "primal"
    mesh = voxel_mesh(devices)
    if solver == "primal":
        X_device = replicate(X, mesh, dtype)
        fold_bases = tuple(
            _primal_basis(X_device[train], X_device[test], fit_intercept) for train, test in folds
        )
        full = _primal_full(X_device, fit_intercept)
        feature_mean = full.mean
        design_dot_mean = design = None
    else:
        gram, design_dot_mean, feature_mean = _centred_gram(
            X, fit_intercept, dtype, feature_block_size, mesh, progress
        )
        fold_bases = tuple(
            _dual_basis(gram, jnp.asarray(train), jnp.asarray(test), fit_intercept)
            for train, test in folds
        )
        full = _dual_full(gram, fit_intercept)
        design = X
    return RidgeDecomposition(
        solver=solver,
        fit_intercept=fit_intercept,
        folds=tuple((tuple(train.tolist()), tuple(test.tolist())) for train, test in folds),
        fold_bases=fold_bases,
        full=full,
        feature_mean=feature_mean,
        design_dot_mean=design_dot_mean,
        design=design,
        dtype=dtype,
        feature_block_size=feature_block_size,
        mesh=mesh,
        n_samples=n_samples,
        n_features=n_features,
    )


def ridge_cv_targets(
    decomposition: RidgeDecomposition,
    Y: Any,
    alphas: Any,
    *,
    score: str = "r2",
    target_batch_size: int | None = DEFAULT_TARGET_BATCH,
) -> RidgeCVResult:
    """Cross-validated ridge for the targets ``Y`` on a prepared design.

    The per-voxel phase of :func:`ridge_cv`: scores every alpha on every fold, picks each
    target's alpha and refits, under ``shard_map`` over the decomposition's voxel mesh.

    Args:
      decomposition: from :func:`prepare_ridge`.
      Y: (n_samples, n_targets) or (n_samples,) responses, in the design's sample order.
      alphas: (n_alphas,) positive regularisation grid.
      score: "r2" or "pearson". target_batch_size: targets per device batch (None: all).

    Returns:
      :class:`RidgeCVResult` with per-target arrays sharded over the voxel axis. Warns with a
      :class:`~v4jax.solvers.diagnostics.ConditioningWarning` when the refit at the smallest
      alpha any target chose cannot be trusted in the compute dtype (see
      :mod:`v4jax.solvers.diagnostics`).
    """
    if not isinstance(decomposition, RidgeDecomposition):
        raise TypeError(
            "decomposition must come from prepare_ridge(X, cv, ...), got "
            f"{type(decomposition).__name__}."
        )
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    if Y.shape[0] != decomposition.n_samples:
        raise ValueError(
            f"Y has {Y.shape[0]} samples but the prepared design has "
            f"{decomposition.n_samples}; they must have one row per stimulus, in the same order."
        )
    alpha_grid = _validation.check_alphas(alphas)
    _validation.check_choice(score, "score", SCORES)
    target_batch_size = _validation.check_positive_int(
        target_batch_size, "target_batch_size", allow_none=True
    )
    d = decomposition
    n_targets = Y.shape[1]
    n_padded, batch = padded_voxel_count(
        n_targets, d.mesh.size, n_targets if target_batch_size is None else target_batch_size
    )
    per_voxel = _per_voxel_program(d.mesh, d.folds, d.fit_intercept, score, d.solver, batch)
    alphas_device = replicate(alpha_grid, d.mesh, d.dtype)
    Y_sharded = shard_columns(Y, d.mesh, n_padded, d.dtype)
    cv_scores, best_alpha_index, solution, y_mean = per_voxel(
        d.fold_bases, d.full, alphas_device, Y_sharded
    )
    best_alpha_index = trim_voxels(best_alpha_index, n_targets)
    best_alphas = alphas_device[best_alpha_index]
    _check_refit_conditioning(d, best_alphas)
    if d.solver == "primal":
        primal_coef, dual_coef, dual_design = trim_voxels(solution, n_targets), None, None
        intercept = y_mean - d.feature_mean @ solution
    else:
        primal_coef, dual_coef = None, trim_voxels(solution, n_targets)
        intercept = y_mean - d.design_dot_mean @ solution
        dual_design = _DualDesign(
            d.design, d.feature_mean, solution, y_mean, n_targets, d.dtype, d.feature_block_size,
            d.mesh,
        )  # fmt: skip
    return RidgeCVResult(
        best_alphas=best_alphas,
        cv_scores=trim_voxels(cv_scores, n_targets),
        intercept=trim_voxels(intercept, n_targets),
        alphas=alpha_grid,
        best_alpha_index=best_alpha_index,
        alpha_on_edge=(best_alpha_index == 0) | (best_alpha_index == len(alpha_grid) - 1),
        solver=d.solver,
        score=score,
        dual_coef=dual_coef,
        _primal_coef=primal_coef,
        _dual_design=dual_design,
    )


def _check_refit_conditioning(decomposition: RidgeDecomposition, best_alphas: jax.Array) -> None:
    """Warn when the refit at the smallest alpha any target chose is untrustworthy.

    Only the spectrum (rank,) and one scalar reach the host; the minimum over the voxel axis is a
    global reduction, so this works for arrays sharded across processes too.
    """
    full = decomposition.full
    spectrum, kind = (
        (full.s, "singular") if decomposition.solver == "primal" else (full.eigenvalues, "eigen")
    )
    smallest_chosen = float(jnp.min(best_alphas))
    check_conditioning(
        np.asarray(spectrum), [smallest_chosen], decomposition.dtype, kind=kind, stacklevel=4
    )


@functools.lru_cache(maxsize=32)
def _per_voxel_program(
    mesh: Any,
    fold_key: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...],
    fit_intercept: bool,
    score: str,
    solver: str,
    batch: int,
):
    """The jitted per-voxel phase: each device scores, selects and refits its own voxels.

    Runs under ``shard_map`` over the voxel axis (no cross-device communication); within a
    device, voxels go through ``lax.map`` in batches of ``batch`` so memory stays bounded.
    Returns cv_scores (n_alphas, V), best index (V,), the refit solution (primal
    coefficients (p, V) or dual coefficients (n, V)) and the response means (V,). Cached per
    (mesh, folds, settings), so repeated fits reuse the compiled program.
    """
    folds = [(np.asarray(train), np.asarray(test)) for train, test in fold_key]

    def one_batch(fold_bases, full, alphas, Y):
        fold_scores = [
            _fold_scores(basis, Y[train], Y[test], alphas, fit_intercept, score, solver)
            for basis, (train, test) in zip(fold_bases, folds, strict=True)
        ]
        mean_scores = jnp.mean(jnp.stack(fold_scores), axis=0)
        best_index = jnp.argmax(mean_scores, axis=0)
        if solver == "primal":
            solution, y_mean = _primal_solution(full, Y, alphas[best_index], fit_intercept)
        else:
            solution, y_mean = _dual_coefficients(full, Y, alphas[best_index], fit_intercept)
        return mean_scores, best_index, solution, y_mean

    def on_device(fold_bases, full, alphas, Y_local):
        n_samples, n_local = Y_local.shape
        batches = Y_local.reshape(n_samples, n_local // batch, batch).transpose(1, 0, 2)
        scores, best, solution, y_mean = jax.lax.map(
            lambda Y: one_batch(fold_bases, full, alphas, Y), batches
        )
        return (
            scores.transpose(1, 0, 2).reshape(scores.shape[1], n_local),
            best.reshape(n_local),
            solution.transpose(1, 0, 2).reshape(solution.shape[1], n_local),
            y_mean.reshape(n_local),
        )

    voxels = PartitionSpec(None, VOXEL_AXIS)
    return jax.jit(
        jax.shard_map(
            on_device,
            mesh=mesh,
            in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec(), voxels),
            out_specs=(voxels, PartitionSpec(VOXEL_AXIS), voxels, PartitionSpec(VOXEL_AXIS)),
        )
    )


def ridge_path(
    X_train: Any,
    Y_train: Any,
    X_test: Any,
    alphas: Any,
    *,
    fit_intercept: bool = True,
    solver: str = "auto",
    dtype: Any = None,
) -> jax.Array:
    """Predictions on ``X_test`` of ridge fitted on the training set, for every alpha.

    The same decompositions as :func:`ridge_cv` use for each fold.

    Args:
      X_train: (n_train, n_features). Y_train: (n_train, n_targets) or (n_train,).
      X_test: (n_test, n_features). alphas: (n_alphas,).
      fit_intercept, solver, dtype: as :func:`ridge_cv`.

    Returns:
      (n_alphas, n_test, n_targets) predictions.
    """
    X_train = _validation.as_2d_float(X_train, "X_train")
    Y_train = _validation.as_2d_float(Y_train, "Y_train", allow_1d=True)
    X_test = _validation.as_2d_float(X_test, "X_test")
    _validation.check_same_samples(X_train, Y_train, ("X_train", "Y_train"))
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X_test has {X_test.shape[1]} features but X_train has {X_train.shape[1]}."
        )
    alpha_grid = _validation.check_alphas(alphas)
    _validation.check_choice(solver, "solver", SOLVERS)
    dtype = _validation.resolve_dtype(dtype, X_train, Y_train, X_test)
    n_train, n_features = X_train.shape
    if solver == "auto":
        solver = "dual" if n_features > n_train else "primal"
    stacked = jnp.concatenate([jnp.asarray(X_train, dtype=dtype), jnp.asarray(X_test, dtype=dtype)])
    train = jnp.arange(n_train)
    test = jnp.arange(n_train, stacked.shape[0])
    if solver == "primal":
        basis = _primal_basis(stacked[train], stacked[test], fit_intercept)
    else:
        basis = _dual_basis(stacked @ stacked.T, train, test, fit_intercept)
    Y_train = jnp.asarray(Y_train, dtype=dtype)
    return _predictions(basis, Y_train, jnp.asarray(alpha_grid, dtype=dtype), fit_intercept, solver)


# -- per-fold decompositions (target independent) ------------------------------------------------


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _primal_basis(X_train: jax.Array, X_test: jax.Array, fit_intercept: bool) -> SpectralBasis:
    mean = _column_mean(X_train, fit_intercept)
    U, s, Vt = jnp.linalg.svd(X_train - mean, full_matrices=False)
    return SpectralBasis(U, s, (X_test - mean) @ Vt.T)


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _dual_basis(
    gram: jax.Array, train: jax.Array, test: jax.Array, fit_intercept: bool
) -> SpectralBasis:
    kernel = gram[train][:, train]
    test_kernel = gram[test][:, train]
    if fit_intercept:
        # Centre both kernels on the training mean m using only kernel entries:
        # (x_i - m)·(x_j - m) = k_ij - x_i·m - x_j·m + m·m, with x_i·m = mean_j k_ij.
        train_dot_mean = jnp.mean(kernel, axis=1)
        mean_dot_mean = jnp.mean(train_dot_mean)
        kernel = kernel - train_dot_mean[:, None] - train_dot_mean[None, :] + mean_dot_mean
        test_dot_mean = jnp.mean(test_kernel, axis=1)
        test_kernel = test_kernel - test_dot_mean[:, None] - train_dot_mean[None, :] + mean_dot_mean
    eigenvalues, eigenvectors = jnp.linalg.eigh(kernel)
    return SpectralBasis(eigenvectors, jnp.maximum(eigenvalues, 0.0), test_kernel @ eigenvectors)


def _dual_factors(eigenvalues: jax.Array, alphas: jax.Array) -> jax.Array:
    """``1 / (lam + alpha)`` per eigenvalue, dropping unresolvable directions only when needed.

    A symmetric eigensolver's eigenvalues carry an absolute error of about
    ``noise = sqrt(n) * eps * lam_max``; the engine's conservative bound on it is
    ``floor = n * eps * lam_max``. Eigenvalues below ``floor`` are dropped, as a pseudo-inverse
    does, while ``alpha`` is small enough for ``1 / (lam + alpha)`` to amplify rounding. Once
    ``alpha >= KEEP_ALL_NOISE_FACTOR * noise`` the penalty itself damps that rounding and every
    direction is kept: dropping them there would bias the fit by up to
    ``floor / (floor + alpha)`` (measured: 20 % prediction error for float32 conv3 kernels at
    the alpha cross-validation picked; 2e-4 when kept).

    Args:
      eigenvalues: (rank,) or (rank, 1) non-negative kernel eigenvalues.
      alphas: alphas broadcastable against ``eigenvalues`` (e.g. (n_alphas, 1) or (1, V)).
    """
    rank = eigenvalues.shape[0]
    scale = jnp.max(eigenvalues) * jnp.finfo(eigenvalues.dtype).eps
    floor = rank * scale
    noise = float(np.sqrt(rank)) * scale
    usable = (eigenvalues > floor) | (alphas >= KEEP_ALL_NOISE_FACTOR * noise)
    return jnp.where(usable, 1.0 / (eigenvalues + alphas), 0.0)


def _filter_factors(spectrum: jax.Array, alphas: jax.Array, solver: str) -> jax.Array:
    """(n_alphas, rank) the diagonal d(alpha) of each path."""
    alphas = alphas[:, None]
    if solver == "primal":
        return spectrum / (spectrum**2 + alphas)
    return _dual_factors(spectrum, alphas)


# -- per-target phase ---------------------------------------------------------------------------


def _predictions(
    basis: SpectralBasis, Y_train: jax.Array, alphas: jax.Array, fit_intercept: bool, solver: str
) -> jax.Array:
    """(n_alphas, n_test, n_targets) held-out predictions for every alpha."""
    y_mean = _column_mean(Y_train, fit_intercept)
    projected = basis.left.T @ (Y_train - y_mean)
    factors = _filter_factors(basis.spectrum, alphas, solver)
    return jnp.einsum("nr,ar,rt->ant", basis.test_design, factors, projected) + y_mean


@functools.partial(jax.jit, static_argnames=("fit_intercept", "score", "solver"))
def _fold_scores(
    basis: SpectralBasis,
    Y_train: jax.Array,
    Y_test: jax.Array,
    alphas: jax.Array,
    fit_intercept: bool,
    score: str,
    solver: str,
) -> jax.Array:
    """(n_alphas, n_targets) held-out score of every alpha on one fold."""
    predictions = _predictions(basis, Y_train, alphas, fit_intercept, solver)
    return score_columns(Y_test, predictions, score)


# -- refit on all samples -----------------------------------------------------------------------


class _PrimalFull(NamedTuple):
    U: jax.Array
    s: jax.Array
    Vt: jax.Array
    mean: jax.Array


class _DualFull(NamedTuple):
    eigenvectors: jax.Array
    eigenvalues: jax.Array


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _primal_full(X: jax.Array, fit_intercept: bool) -> _PrimalFull:
    mean = _column_mean(X, fit_intercept)
    U, s, Vt = jnp.linalg.svd(X - mean, full_matrices=False)
    return _PrimalFull(U, s, Vt, mean[0])


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _dual_full(gram: jax.Array, fit_intercept: bool) -> _DualFull:
    everything = jnp.arange(gram.shape[0])
    basis = _dual_basis(gram, everything, everything[:1], fit_intercept)
    return _DualFull(basis.left, basis.spectrum)


def _primal_solution(
    full: _PrimalFull, Y: jax.Array, best_alphas: jax.Array, fit_intercept: bool
) -> tuple[jax.Array, jax.Array]:
    """(n_features, n_targets) coefficients and (n_targets,) response means."""
    y_mean = _column_mean(Y, fit_intercept)[0]
    projected = full.U.T @ (Y - y_mean)
    factors = full.s[:, None] / (full.s[:, None] ** 2 + best_alphas[None, :])
    return full.Vt.T @ (factors * projected), y_mean


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _dual_coefficients(
    full: _DualFull, Y: jax.Array, best_alphas: jax.Array, fit_intercept: bool
) -> tuple[jax.Array, jax.Array]:
    """(n_samples, n_targets) dual coefficients and (n_targets,) response means."""
    y_mean = _column_mean(Y, fit_intercept)[0]
    projected = full.eigenvectors.T @ (Y - y_mean)
    factors = _dual_factors(full.eigenvalues[:, None], best_alphas[None, :])
    return full.eigenvectors @ (factors * projected), y_mean


def _dual_to_primal(
    X: Any,
    dual: jax.Array,
    feature_mean: jax.Array,
    dtype: np.dtype,
    feature_block_size: int,
    mesh: Any,
) -> jax.Array:
    """(n_features, V) coefficients (X - mean)ᵀ dual, streaming replicated feature blocks.

    ``dual`` is sharded over voxels, so each device computes its own voxels' coefficients.
    """
    blocks = []
    for start in range(0, X.shape[1], feature_block_size):
        X_block = replicate(X[:, start : start + feature_block_size], mesh, dtype)
        mean_block = feature_mean[start : start + X_block.shape[1]]
        blocks.append(_centred_transpose_product(X_block, dual, mean_block))
    return jnp.concatenate(blocks)


@jax.jit
def _centred_transpose_product(
    X_block: jax.Array, dual: jax.Array, mean_block: jax.Array
) -> jax.Array:
    """(X_block - mean)ᵀ dual, centring the block first.

    Centring before the product (rather than ``X_blockᵀ dual - mean ⊗ sum(dual)``) avoids the
    cancellation that loses float32 digits when features sit far from zero.
    """
    return (X_block - mean_block).T @ dual


# -- shared pieces ------------------------------------------------------------------------------


def _centred_gram(
    X: Any,
    fit_intercept: bool,
    dtype: np.dtype,
    block: int,
    mesh: Any = None,
    progress: bool | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Kernel of the centred design, in one streaming pass over feature blocks.

    Each block is centred on its own column means (a feature's mean needs only its column), so
    one pass gives the (n_samples, n_samples) kernel (X - mean)(X - mean)ᵀ, the (n_samples,)
    vector (X - mean) @ mean and the (n_features,) means (zeros without intercept), all
    replicated on the mesh. A host array on a CPU-only mesh is multiplied by the host's BLAS
    (see :func:`_host_blas`), anything else on the devices.
    """
    mesh = voxel_mesh(None) if mesh is None else mesh
    starts = range(0, X.shape[1], block)
    show = progress if progress is not None else len(starts) > 8
    progress_bar = functools.partial(
        tqdm, desc="kernel feature blocks", total=len(starts), disable=not show
    )
    if _host_blas(X, mesh):
        n_samples = X.shape[0]
        gram = np.zeros((n_samples, n_samples), dtype=dtype)
        design_dot_mean = np.zeros(n_samples, dtype=dtype)
        means = []
        blocks = _host_centred_blocks(X, None, fit_intercept, dtype, block)
        for _, centred, mean_block in progress_bar(blocks):
            gram += centred @ centred.T  # numpy calls BLAS syrk for a product with its transpose
            design_dot_mean += centred @ mean_block
            means.append(mean_block)
        outputs = (gram, design_dot_mean, np.concatenate(means))
        return tuple(replicate(array, mesh, dtype) for array in outputs)
    gram = replicate(np.zeros((X.shape[0], X.shape[0])), mesh, dtype)
    design_dot_mean = replicate(np.zeros(X.shape[0]), mesh, dtype)
    means = []
    for start in progress_bar(starts):
        X_block = replicate(X[:, start : start + block], mesh, dtype)
        gram, design_dot_mean, mean_block = _accumulate_gram(
            gram, design_dot_mean, X_block, fit_intercept
        )
        means.append(mean_block)
    return gram, design_dot_mean, jnp.concatenate(means)


@functools.partial(jax.jit, static_argnames="fit_intercept", donate_argnums=(0, 1))
def _accumulate_gram(
    gram: jax.Array, design_dot_mean: jax.Array, X_block: jax.Array, fit_intercept: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Add one feature block, centred on its column means, to the kernel (device path)."""
    mean_block = _column_mean(X_block, fit_intercept)[0]
    centred = X_block - mean_block
    return gram + centred @ centred.T, design_dot_mean + centred @ mean_block, mean_block


def _host_blas(X: Any, mesh: Any) -> bool:
    """Whether kernels are built by the host's BLAS: X is not a JAX array, the mesh is CPU only.

    There numpy's ``A @ A.T`` is a BLAS syrk, half the multiply-adds of a general product
    (measured 1.7x faster than XLA's CPU dot for the conv3 kernel, 1750 x 64,896, on 2 cores).
    """
    return not isinstance(X, jax.Array) and all(
        device.platform == "cpu" for device in mesh.devices.flat
    )


def _host_centred_blocks(
    X: Any, mean: np.ndarray | None, fit_intercept: bool, dtype: np.dtype, block: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first column, centred (n_samples, width) block, its (width,) means) of X.

    The means are ``mean``'s, or (when None) each block's own column means (zeros without
    intercept), summed by a BLAS gemv: 6x faster than a float64 numpy mean on conv3 blocks and
    within 8e-7 of it in float32. Every block is centred into one reused buffer: fresh 57 MB
    blocks page-faulted (1.6 s vs 1.3 s for the conv3 kernel), so a yielded block is valid only
    until the next one.
    """
    buffer = np.empty((X.shape[0], min(block, X.shape[1])), dtype=dtype)
    ones = np.ones(X.shape[0], dtype=dtype)
    for start in range(0, X.shape[1], block):
        X_block = np.asarray(X[:, start : start + block], dtype=dtype)
        if mean is not None:
            mean_block = mean[start : start + X_block.shape[1]]
        elif fit_intercept:
            mean_block = (ones @ X_block) / X.shape[0]
        else:
            mean_block = np.zeros(X_block.shape[1], dtype=dtype)
        centred = np.subtract(X_block, mean_block, out=buffer[:, : X_block.shape[1]])
        yield start, centred, mean_block


def _cross_kernel(
    X_new: Any, X: Any, mean: jax.Array, dtype: np.dtype, block: int, mesh: Any
) -> jax.Array:
    """(n_new, n_samples) kernel (X_new - mean)(X - mean)ᵀ, streaming feature blocks of both."""
    if _host_blas(X, mesh):
        mean = np.asarray(mean.addressable_data(0))  # replicated: every device holds all of it
        kernel = np.zeros((X_new.shape[0], X.shape[0]), dtype=dtype)
        for start, centred, mean_block in _host_centred_blocks(X, mean, True, dtype, block):
            X_new_block = np.asarray(X_new[:, start : start + block], dtype=dtype) - mean_block
            kernel += X_new_block @ centred.T
        return replicate(kernel, mesh, dtype)
    kernel = replicate(np.zeros((X_new.shape[0], X.shape[0])), mesh, dtype)
    for start in range(0, X.shape[1], block):
        stop = min(start + block, X.shape[1])
        kernel = _accumulate_cross_kernel(
            kernel,
            replicate(X_new[:, start:stop], mesh, dtype),
            replicate(X[:, start:stop], mesh, dtype),
            mean[start:stop],
        )
    return kernel


@functools.partial(jax.jit, donate_argnums=0)
def _accumulate_cross_kernel(
    kernel: jax.Array, X_new_block: jax.Array, X_block: jax.Array, mean_block: jax.Array
) -> jax.Array:
    return kernel + (X_new_block - mean_block) @ (X_block - mean_block).T


def _column_mean(values: jax.Array, fit_intercept: bool) -> jax.Array:
    if fit_intercept:
        return jnp.mean(values, axis=0, keepdims=True)
    return jnp.zeros((1, values.shape[1]), dtype=values.dtype)
