"""Closed-form ridge regression for all targets at once, cross-validated per target.

**One decomposition for every fold and every alpha** (An, Liu & Venkatesh 2007). For ridge
with an unpenalised intercept, the held-out residuals of a group G of samples, refitting on all
the others with their own intercept, are exactly

    e_G = (C_GG)⁻¹ (C Y)_G,    C = I - H,

with ``H`` the hat matrix of the fit on all samples. One decomposition of the centred design
gives ``C`` for every alpha: with an orthonormal basis ``U`` (n_samples, rank) of the centred
design's column space (orthogonal to the constant vector when fitting an intercept) and the
kernel eigenvalues ``lam`` (rank,) along it,

    C = R + U diag(alpha / (lam + alpha)) Uᵀ,

where ``R`` projects onto what ``U`` and the constant leave out (zero on the dual path, whose
``U`` spans all of it). ``U`` comes from one eigendecomposition of the centred kernel
(dual path, n_features > n_samples; the kernel is streamed from the design in feature blocks,
see :mod:`v4jax.solvers.engine.kernels`) or one thin SVD of the centred design (primal path).
K-fold, grouped (leave-one-run-out) and leave-one-out (``cv="loo"``, ``e_i = (C Y)_i / C_ii``,
scored on the pooled held-out predictions) all use it. The refit on all samples is the same
basis: dual coefficients ``a = U diag(1 / (lam + alpha)) Uᵀ Y`` (dual path; the primal
coefficients ``(X - mean)ᵀ a`` are formed only when asked for, and :meth:`RidgeCVResult.predict`
goes through the kernel) or ``coef = V diag(s / (s² + alpha)) Uᵀ Y`` (primal path).

**Shared filters.** The products ``U diag(d_a) Z`` (``Z = Uᵀ Y``) cost ``2 n rank T`` per alpha,
most of the work. The residual factors ``d_a = alpha / (lam + alpha)`` of a grid are often
spanned, to the compute dtype's rounding, by fewer vectors than there are alphas (alphas far
below the spectrum give ``d ≈ alpha / lam``, far above it ``d ≈ 1 - lam / alpha``: a few
functions of ``lam``). :func:`shared_filters` finds them (an SVD of the (n_alphas, rank) factors),
then only the filters' products are formed and each alpha's is their combination.

Folds whose training set is not the complement of their test set (e.g. ``ShuffleSplit``) cannot
use the identity; they take the per-fold route (one decomposition per fold), as does
:func:`ridge_path`.

Float32: directions whose eigenvalue is below the decomposition's rounding floor are treated as
null directions while alpha is small enough for ``1 / (lam + alpha)`` to amplify rounding (see
:func:`_usable`), on both paths; :mod:`v4jax.solvers.diagnostics` warns when the refit at the
smallest alpha any target chose is untrustworthy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from v4jax import _validation
from v4jax.metrics import SCORES, score_columns
from v4jax.solvers.diagnostics import check_conditioning
from v4jax.solvers.engine import kernels
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.kernels import DEFAULT_FEATURE_BLOCK
from v4jax.solvers.engine.result import grid_edge
from v4jax.solvers.engine.runner import DEFAULT_TARGET_BATCH, run_per_target
from v4jax.solvers.engine.sharding import replicate, voxel_mesh

SOLVERS = ("auto", "primal", "dual")
LEAVE_ONE_OUT = "loo"
# Keep even unresolvable directions once alpha exceeds the decomposition's rounding noise by
# this factor (see _usable).
KEEP_ALL_NOISE_FACTOR = 20.0

__all__ = [
    "DEFAULT_FEATURE_BLOCK",
    "DEFAULT_TARGET_BATCH",
    "RidgeCVResult",
    "RidgeDecomposition",
    "filter_count",
    "heldout_predictions",
    "prepare_ridge",
    "prepare_ridge_from_kernel",
    "ridge_cv",
    "ridge_cv_targets",
    "ridge_path",
    "shared_filters",
]


class SpectralBasis(NamedTuple):
    """One decomposition of a centred design: everything the per-target phase needs.

    Attributes:
      vectors: (n_samples, rank) orthonormal basis ``U`` of the centred design's column space.
      eigenvalues: (rank,) kernel eigenvalues along it (``s²`` on the primal path).
      floor: () eigenvalues below it are rounding noise. noise: () the eigenvalues' rounding
        error (see :func:`_usable`).
      right: (n_features, rank) right singular vectors ``V`` (primal path), else (0, rank).
      direction: (n_samples,) unit vector of the intercept's direction, ``sqrt(w) / |sqrt(w)|``
        (``1 / sqrt(n)`` without weights; zeros without intercept). ``U`` is orthogonal to it.
      root_weights: (n_samples,) ``sqrt(sample_weight)``, or None (unweighted). With weights,
        everything is in the rescaled space ``sqrt(w) (X - weighted mean)``.
    """

    vectors: jax.Array
    eigenvalues: jax.Array
    floor: jax.Array
    noise: jax.Array
    right: jax.Array
    direction: jax.Array
    root_weights: jax.Array | None


class _FoldBasis(NamedTuple):
    """The per-fold route's decomposition of one fold (training kernel or training design)."""

    left: jax.Array
    spectrum: jax.Array
    test_design: jax.Array


@dataclasses.dataclass(frozen=True)
class RidgeDecomposition:
    """Everything :func:`ridge_cv` computes from the design alone, reusable for any targets.

    Build it once with :func:`prepare_ridge` (or :func:`prepare_ridge_from_kernel`) and pass it
    to :func:`ridge_cv_targets` for every alpha grid and every block of voxels.

    Attributes:
      solver: "primal" or "dual".
      fit_intercept: whether X and Y are centred (each training set gets its own intercept).
      folds: ((train indices), (test indices)) per fold as tuples, or ``"loo"``.
      basis: the :class:`SpectralBasis` of all samples, replicated on the mesh.
      fold_bases: per-fold decompositions when some fold's training set is not the complement
        of its test set (the per-fold route), else None.
      feature_mean: (n_features,) column means of X (zeros without intercept; empty when built
        from a kernel).
      design_dot_mean: (n_samples,) ``(X - mean) @ mean`` (dual path), else None.
      design: the design as given (dual path: streamed again for coefficients and predictions),
        else None.
      dtype: compute dtype. feature_block_size: features per streamed block.
      mesh: the one-axis "voxels" mesh everything is replicated on.
      n_samples, n_features: the design's shape.
    """

    solver: str
    fit_intercept: bool
    folds: Any
    basis: SpectralBasis
    fold_bases: tuple[_FoldBasis, ...] | None
    feature_mean: jax.Array
    design_dot_mean: jax.Array | None
    design: Any
    dtype: np.dtype
    feature_block_size: int
    mesh: Any
    n_samples: int
    n_features: int


@dataclasses.dataclass(frozen=True)
class RidgeCVResult:
    """Result of :func:`ridge_cv`, following :mod:`v4jax.solvers.engine.result`.

    Attributes:
      grid: (n_alphas,) the alphas, as given (also ``alphas``).
      cv_scores: (n_alphas, n_targets) held-out score averaged over folds (``cv="loo"``: the
        score of the pooled leave-one-out predictions).
      best_index: (n_targets,) index of each target's alpha in ``grid``.
      best_alphas: (n_targets,) the alpha with the best held-out score, per target.
      on_edge: (n_targets,) True where the best alpha is the grid's smallest or largest value:
        the optimum may lie outside the grid, consider widening it.
      coef: (n_features, n_targets) coefficients refitted on all samples with each target's
        alpha (a property: on the dual path formed from ``dual_coef`` on first access, then
        cached; :meth:`predict` does not need it).
      intercept: (n_targets,) intercepts (zeros when ``fit_intercept=False``).
      solver: "primal" or "dual", the path that ran. score: the held-out score's name.
      dual_coef: (n_samples, n_targets) dual coefficients ``a`` with ``coef = (X - mean)ᵀ a``
        (dual path), else None.

    On the dual path the result keeps a reference to the design it was fitted on (not a copy,
    which would double the memory): do not modify that array in place before ``coef`` or
    :meth:`predict` has used it.
    """

    grid: np.ndarray
    cv_scores: jax.Array
    best_index: jax.Array
    best_alphas: jax.Array
    on_edge: jax.Array
    intercept: jax.Array
    solver: str
    score: str
    dual_coef: jax.Array | None
    _primal_coef: jax.Array | None = dataclasses.field(default=None, repr=False)
    _decomposition: RidgeDecomposition | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    _target_mean: jax.Array | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def alphas(self) -> np.ndarray:
        """(n_alphas,) the alpha grid (the result's ``grid``)."""
        return self.grid

    @functools.cached_property
    def coef(self) -> jax.Array:
        """(n_features, n_targets) coefficients (dual path: ``(X - mean)ᵀ dual_coef``, cached)."""
        if self._primal_coef is not None:
            return self._primal_coef
        d = self._decomposition
        if d.design is None:
            raise ValueError(
                "this ridge was fitted on a kernel, not a design, so it has no primal "
                "coefficients; use dual_coef with the design's features."
            )
        return kernels.transpose_product(
            d.design,
            self.dual_coef,
            d.feature_mean,
            dtype=d.dtype,
            block=d.feature_block_size,
            mesh=d.mesh,
        )

    def predict(self, X: Any) -> jax.Array:
        """(n, n_targets) predictions ``X @ coef + intercept`` for (n, n_features) ``X``.

        On the dual path, while ``coef`` has not been formed, this goes through the kernel
        instead, ``(X - mean)(X_fit - mean)ᵀ dual_coef + mean(Y)``: n n_samples n_features +
        n n_samples n_targets multiply-adds rather than n_features n_samples n_targets for the
        coefficients, with the design streamed in feature blocks.
        """
        X = _validation.as_2d_float(X, "X")
        d = self._decomposition
        if self._primal_coef is None and d.design is None:
            raise ValueError(
                "this ridge was fitted on a kernel, not a design, so it cannot predict from "
                "features; predict with the kernel of the new samples and dual_coef."
            )
        if X.shape[1] != d.n_features:
            raise ValueError(
                f"X has {X.shape[1]} features but the ridge was fitted on {d.n_features}; pass "
                "features of the same layer, flattened the same way."
            )
        if self._primal_coef is not None or "coef" in self.__dict__:
            return jnp.asarray(X, dtype=self.coef.dtype) @ self.coef + self.intercept
        kernel = kernels.cross_kernel(
            X,
            d.design,
            d.feature_mean,
            dtype=d.dtype,
            block=d.feature_block_size,
            mesh=d.mesh,
            centre_design=not _small_offset(d),
        )
        return kernel @ self.dual_coef + self._target_mean


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
    sample_weight: Any = None,
) -> RidgeCVResult:
    """Cross-validated ridge regression with an alpha chosen per target.

    Args:
      X: (n_samples, n_features) design (numpy or JAX; numpy stays on the host and is streamed
        to the device in feature blocks on the dual path).
      Y: (n_samples, n_targets) or (n_samples,) responses.
      alphas: (n_alphas,) positive regularisation grid.
      cv: int (contiguous folds, no shuffling), scikit-learn splitter, list of (train, test)
        index arrays (e.g. leave-one-run-out), or ``"loo"`` (leave-one-out, scored on the
        pooled held-out predictions, as scikit-learn's ``RidgeCV``).
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
      sample_weight: (n_samples,) non-negative weights, or None. Every fit minimises the
        weighted squared error (intercept on the weighted mean; an integer weight acts as that
        many copies of the sample) and the held-out scores are weighted the same way. Needs
        folds whose test sets partition the samples (K-fold, groups, ``"loo"``).

    Returns:
      :class:`RidgeCVResult`; arrays in the compute dtype. Warns with a
      :class:`~v4jax.solvers.diagnostics.ConditioningWarning` when the decomposition's
      conditioning makes the refit at the smallest chosen alpha untrustworthy in that dtype.

    Example:
      >>> result = ridge_cv(X, Y, np.logspace(-2, 6, 17), cv=5)
      >>> result.best_alphas.shape, result.predict(X_new).shape
      ((n_targets,), (n_new, n_targets))
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
        sample_weight=sample_weight,
    )
    return ridge_cv_targets(
        decomposition, Y, alphas, score=score, target_batch_size=target_batch_size
    )


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
    sample_weight: Any = None,
) -> RidgeDecomposition:
    """Decompose the design once, for every fold, every alpha and any targets.

    Args:
      X: (n_samples, n_features) design (numpy stays on the host on the dual path).
      cv: as :func:`ridge_cv`.
      fit_intercept, solver, feature_block_size, progress, devices: as :func:`ridge_cv`.
      dtype: compute dtype, "float32" or "float64" (default: float64 when x64 is on and X is
        float64, else float32).
      sample_weight: (n_samples,) non-negative weights or None, as :func:`ridge_cv`.

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
    folds = _fold_key(cv, n_samples)
    dtype = _validation.resolve_dtype(dtype, X)
    if solver == "auto":
        solver = "dual" if n_features > n_samples else "primal"
    mesh = voxel_mesh(devices)
    weights = _validation.check_sample_weight(sample_weight, n_samples)
    if weights is not None and not _folds_partition(folds, n_samples):
        raise ValueError(
            "sample_weight needs folds whose training set is every sample outside the test set "
            "(K-fold, groups or 'loo'); fit these folds without weights."
        )
    root_weights = None if weights is None else replicate(np.sqrt(weights), mesh, dtype)
    if solver == "primal":
        X_device = replicate(X, mesh, dtype)
        if weights is not None and fit_intercept:
            feature_mean = (root_weights**2 @ X_device) / jnp.sum(root_weights**2)
        else:
            feature_mean = kernels.column_mean(X_device, fit_intercept)[0]
        basis = _design_basis(X_device - feature_mean, root_weights, fit_intercept)
        fold_bases = None
        if not _folds_partition(folds, n_samples):
            fold_bases = tuple(
                _primal_fold_basis(X_device[np.asarray(train)], X_device[np.asarray(test)],
                                   fit_intercept)
                for train, test in folds
            )  # fmt: skip
        return RidgeDecomposition(
            solver, fit_intercept, folds, basis, fold_bases, feature_mean, None, None, dtype,
            feature_block_size, mesh, n_samples, n_features,
        )  # fmt: skip
    weighted_mean = None
    if weights is not None and fit_intercept:
        weighted_mean = kernels.weighted_column_mean(X, weights, dtype, feature_block_size)
    gram = kernels.centred_gram(
        X,
        fit_intercept=fit_intercept,
        mean=weighted_mean,
        dtype=dtype,
        block=feature_block_size,
        mesh=mesh,
        progress=progress,
        raw_products=True,
    )
    basis, fold_bases = _decompose_kernel(gram.kernel, folds, fit_intercept, mesh, root_weights)
    return RidgeDecomposition(
        solver, fit_intercept, folds, basis, fold_bases, gram.mean, gram.design_dot_mean, X,
        dtype, feature_block_size, mesh, n_samples, n_features,
    )  # fmt: skip


def prepare_ridge_from_kernel(
    kernel: Any,
    cv: Any = 5,
    *,
    fit_intercept: bool = True,
    devices: Sequence[jax.Device] | None = None,
    dtype: Any = None,
) -> RidgeDecomposition:
    """Decompose a centred linear kernel once (the dual path), for every fold and alpha.

    For solvers that build their own kernels (banded ridge weighs several bands' kernels).
    Results fitted on such a decomposition have ``dual_coef`` and ``intercept`` but no ``coef``
    or ``predict`` (there is no design to stream).

    Args:
      kernel: (n_samples, n_samples) ``(X - mean)(X - mean)ᵀ``, centred on all samples' mean
        when ``fit_intercept`` (then ``kernel @ 1 = 0``).
      cv, fit_intercept, devices, dtype: as :func:`ridge_cv`.

    Returns:
      :class:`RidgeDecomposition` with ``solver="dual"``.
    """
    n_samples = kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != n_samples:
        raise ValueError(f"kernel must be square (n_samples, n_samples), got {kernel.shape}.")
    folds = _fold_key(cv, n_samples)
    dtype = _validation.resolve_dtype(dtype, kernel)
    mesh = voxel_mesh(devices)
    kernel = replicate(kernel, mesh, dtype)
    basis, fold_bases = _decompose_kernel(kernel, folds, fit_intercept, mesh)
    return RidgeDecomposition(
        solver="dual",
        fit_intercept=fit_intercept,
        folds=folds,
        basis=basis,
        fold_bases=fold_bases,
        feature_mean=jnp.zeros(0, dtype=dtype),
        design_dot_mean=None,
        design=None,
        dtype=dtype,
        feature_block_size=DEFAULT_FEATURE_BLOCK,
        mesh=mesh,
        n_samples=n_samples,
        n_features=0,
    )


def _decompose_kernel(
    kernel: jax.Array,
    folds: Any,
    fit_intercept: bool,
    mesh: Any,
    root_weights: jax.Array | None = None,
) -> tuple[SpectralBasis, tuple[_FoldBasis, ...] | None]:
    """The kernel's basis, and per-fold bases where some fold is not a complement."""
    basis = _kernel_basis(kernel, root_weights, fit_intercept)
    if _folds_partition(folds, kernel.shape[0]):
        return basis, None
    fold_bases = tuple(
        _dual_fold_basis(kernel, _indices(train, mesh), _indices(test, mesh), fit_intercept)
        for train, test in folds
    )
    return basis, fold_bases


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
    target's alpha and refits, on the engine's per-target runner (sharded over the
    decomposition's voxel mesh, batched per device).

    Args:
      decomposition: from :func:`prepare_ridge` or :func:`prepare_ridge_from_kernel`.
      Y: (n_samples, n_targets) or (n_samples,) responses, in the design's sample order.
      alphas: (n_alphas,) positive regularisation grid.
      score: "r2" or "pearson". target_batch_size: targets per device batch (None: all).

    Returns:
      :class:`RidgeCVResult` with per-target arrays sharded over the voxel axis. Warns with a
      :class:`~v4jax.solvers.diagnostics.ConditioningWarning` when the refit at the smallest
      alpha any target chose cannot be trusted in the compute dtype.
    """
    d = _check_decomposition(decomposition)
    Y = _check_targets(Y, d)
    alpha_grid = _validation.check_alphas(alphas)
    _validation.check_choice(score, "score", SCORES)
    alphas_device = replicate(alpha_grid, d.mesh, d.dtype)
    if d.fold_bases is None:
        shared = (d.basis, alphas_device, _fold_operators(d, alphas_device))
        batch_function = _one_decomposition_batch
    else:
        shared = (d.basis, alphas_device, d.fold_bases)
        batch_function = _per_fold_batch
    cv_scores, best_index, solution, y_mean = run_per_target(
        batch_function,
        shared,
        Y,
        mesh=d.mesh,
        dtype=d.dtype,
        out_ndims=(2, 1, 2, 1),
        settings=(d.folds, d.fit_intercept, score, d.solver),
        target_batch_size=target_batch_size,
    )
    best_alphas = alphas_device[best_index]
    _check_refit_conditioning(d, best_alphas)
    if d.solver == "primal":
        primal_coef, dual_coef = solution, None
        intercept = y_mean - d.feature_mean @ solution
    else:
        primal_coef, dual_coef = None, solution
        intercept = y_mean if d.design_dot_mean is None else y_mean - d.design_dot_mean @ solution
    return RidgeCVResult(
        grid=alpha_grid,
        cv_scores=cv_scores,
        best_index=best_index,
        best_alphas=best_alphas,
        on_edge=grid_edge(best_index, len(alpha_grid)),
        intercept=intercept,
        solver=d.solver,
        score=score,
        dual_coef=dual_coef,
        _primal_coef=primal_coef,
        _decomposition=d,
        _target_mean=y_mean,
    )


def heldout_predictions(
    decomposition: RidgeDecomposition,
    Y: Any,
    alphas: Any,
) -> jax.Array:
    """(n_alphas, n_samples, n_targets) each sample's prediction by the fit that held it out.

    Every sample is predicted by ridge refitted (with its own intercept) on the training set
    of the fold that tests it, for every alpha: scikit-learn's ``cross_val_predict`` for every
    alpha at once. Needs folds whose test sets partition the samples (K-fold, groups, "loo").
    With sample weights, samples of weight zero get NaN (the weighted identity gives the
    residuals times ``sqrt(w)``).

    Args:
      decomposition: from :func:`prepare_ridge` or :func:`prepare_ridge_from_kernel`.
      Y: (n_samples, n_targets) or (n_samples,) responses. alphas: (n_alphas,) positive grid.
    """
    d = _check_decomposition(decomposition)
    Y = jnp.asarray(_check_targets(Y, d), dtype=d.dtype)
    alpha_grid = jnp.asarray(_validation.check_alphas(alphas), dtype=d.dtype)
    if d.fold_bases is not None or (
        d.folds != LEAVE_ONE_OUT
        and sorted(index for _, test in d.folds for index in test) != list(range(d.n_samples))
    ):
        raise ValueError(
            "held-out predictions need folds whose test sets partition the samples (K-fold, "
            "groups or 'loo'); these folds leave samples out or test some twice."
        )
    residuals = jnp.zeros((len(alpha_grid), *Y.shape), dtype=d.dtype)
    operators = _fold_operators(d, alpha_grid)
    targets = _coordinates(d.basis, Y, d.fit_intercept)
    for rows, residual in _fold_residuals(d.basis, operators, targets, d.folds, d.fit_intercept):
        residuals = residuals.at[:, rows].set(residual)
    if d.basis.root_weights is not None:
        root_weights = d.basis.root_weights[:, None]
        residuals = jnp.where(root_weights > 0, residuals / root_weights, jnp.nan)
    return Y - residuals


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
        basis = _primal_fold_basis(stacked[train], stacked[test], fit_intercept)
    else:
        basis = _dual_fold_basis(stacked @ stacked.T, train, test, fit_intercept)
    Y_train = jnp.asarray(Y_train, dtype=dtype)
    alphas_device = jnp.asarray(alpha_grid, dtype=dtype)
    return _fold_predictions(basis, Y_train, alphas_device, fit_intercept, solver)


# -- the decomposition of all samples -----------------------------------------------------------


def _householder(direction: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The reflection ``H = I - w wᵀ * 2 / (wᵀw)`` whose first column is ``±direction``.

    ``direction`` (n,) is a unit vector; ``w = direction ± e_1`` takes the sign that avoids
    cancellation. The other columns of ``H`` are an orthonormal basis of the vectors orthogonal
    to ``direction``, so bases built through it leave the intercept's direction out exactly.
    Returns (w, 2 / (wᵀw)).
    """
    sign = jnp.where(direction[0] >= 0, 1.0, -1.0).astype(direction.dtype)
    w = direction.at[0].add(sign)
    return w, 2.0 / jnp.dot(w, w)


def _intercept_direction(
    n_samples: int, root_weights: jax.Array | None, fit_intercept: bool, dtype: Any
) -> jax.Array:
    """(n_samples,) unit vector the intercept spans in the (rescaled) sample space, or zeros."""
    if not fit_intercept:
        return jnp.zeros(n_samples, dtype=dtype)
    if root_weights is None:
        return jnp.full(n_samples, 1.0 / np.sqrt(n_samples), dtype=dtype)
    return root_weights / jnp.linalg.norm(root_weights)


def _reflect(w: jax.Array, factor: jax.Array, values: jax.Array) -> jax.Array:
    """``H @ values`` for (n, k) values, in O(n k)."""
    return values - factor * jnp.outer(w, w @ values)


def _rounding(eigenvalues: jax.Array, rank: int, singular: bool) -> tuple[jax.Array, jax.Array]:
    """(floor, noise) of the eigenvalues of a decomposition (see :mod:`..diagnostics`).

    Below ``floor`` a direction cannot be told from a null one: a symmetric eigensolver perturbs
    eigenvalues by about ``sqrt(rank) eps lam_max`` (conservative floor ``rank eps lam_max``); an
    SVD perturbs singular values by about ``eps s_max``, so ``lam = s²`` below
    ``(rank eps s_max)²`` is unresolved. ``noise`` is the size of the error such a direction
    brings into a solution, relative to alpha: ``sqrt(rank) eps lam_max`` on both paths (a
    spurious singular value ``delta ~ eps s_max`` enters the coefficients as ``delta / alpha``
    times a direction of size ``s_max``).
    """
    eps = jnp.finfo(eigenvalues.dtype).eps
    top = jnp.max(eigenvalues)
    noise = np.sqrt(rank) * eps * top
    if singular:
        return (rank * eps) ** 2 * top, noise
    return rank * eps * top, noise


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _kernel_basis(
    kernel: jax.Array, root_weights: jax.Array | None, fit_intercept: bool
) -> SpectralBasis:
    """Eigendecomposition of a centred kernel (rescaled to ``sqrt(w_i w_j) k_ij`` with weights),
    leaving the intercept's direction out."""
    n_samples = kernel.shape[0]
    if root_weights is not None:
        kernel = root_weights[:, None] * kernel * root_weights[None, :]
    direction = _intercept_direction(n_samples, root_weights, fit_intercept, kernel.dtype)
    if fit_intercept:
        w, factor = _householder(direction)
        reflected = _reflect(w, factor, _reflect(w, factor, kernel).T)
        eigenvalues, inner = jnp.linalg.eigh(reflected[1:, 1:])
        padded = jnp.concatenate([jnp.zeros((1, n_samples - 1), kernel.dtype), inner])
        vectors = _reflect(w, factor, padded)
    else:
        eigenvalues, vectors = jnp.linalg.eigh(kernel)
    eigenvalues = jnp.maximum(eigenvalues, 0.0)
    floor, noise = _rounding(eigenvalues, eigenvalues.shape[0], singular=False)
    right = jnp.zeros((0, eigenvalues.shape[0]))
    return SpectralBasis(vectors, eigenvalues, floor, noise, right, direction, root_weights)


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _design_basis(
    centred: jax.Array, root_weights: jax.Array | None, fit_intercept: bool
) -> SpectralBasis:
    """Thin SVD of a centred design (rows times ``sqrt(w)`` with weights), its left vectors
    orthogonal to the intercept's direction."""
    n_samples = centred.shape[0]
    if root_weights is not None:
        centred = root_weights[:, None] * centred
    direction = _intercept_direction(n_samples, root_weights, fit_intercept, centred.dtype)
    if fit_intercept:
        w, factor = _householder(direction)
        inner, s, Vt = jnp.linalg.svd(_reflect(w, factor, centred)[1:], full_matrices=False)
        padded = jnp.concatenate([jnp.zeros((1, inner.shape[1]), centred.dtype), inner])
        vectors = _reflect(w, factor, padded)
    else:
        vectors, s, Vt = jnp.linalg.svd(centred, full_matrices=False)
    eigenvalues = s**2
    floor, noise = _rounding(eigenvalues, eigenvalues.shape[0], singular=True)
    return SpectralBasis(vectors, eigenvalues, floor, noise, Vt.T, direction, root_weights)


def _usable(basis_floor: jax.Array, noise: jax.Array, eigenvalues: jax.Array, alphas: jax.Array):
    """Which directions take part: those above the rounding floor, and all once alpha is large.

    Eigenvalues below ``floor`` are dropped, as a pseudo-inverse does, while alpha is small
    enough for ``1 / (lam + alpha)`` to amplify their rounding. Once
    ``alpha >= KEEP_ALL_NOISE_FACTOR * noise`` the penalty itself damps that rounding and every
    direction is kept: dropping them there would bias the fit by up to
    ``floor / (floor + alpha)`` (measured: 20 % prediction error for float32 conv3 kernels at
    the alpha cross-validation picked; 2e-4 when kept).
    """
    return (eigenvalues > basis_floor) | (alphas >= KEEP_ALL_NOISE_FACTOR * noise)


def _inverse_factors(basis: SpectralBasis, alphas: jax.Array) -> jax.Array:
    """``1 / (lam + alpha)`` per direction (0 for dropped ones); alphas broadcast against lam."""
    lam = basis.eigenvalues
    usable = _usable(basis.floor, basis.noise, lam, alphas)
    return jnp.where(usable, 1.0 / (lam + alphas), 0.0)


def _residual_factors(basis: SpectralBasis, alphas: jax.Array) -> jax.Array:
    """``alpha / (lam + alpha)``, the diagonal of ``C`` along the basis (1 for dropped ones)."""
    lam = basis.eigenvalues
    usable = _usable(basis.floor, basis.noise, lam, alphas)
    return jnp.where(usable, alphas / (lam + alphas), 1.0)


def _has_residual_space(basis: SpectralBasis, fit_intercept: bool) -> bool:
    """Whether the basis leaves part of the sample space out (``R != 0``)."""
    return basis.vectors.shape[1] < basis.vectors.shape[0] - int(fit_intercept)


# -- held-out residuals for every fold and alpha -------------------------------------------------


class _FoldOperator(NamedTuple):
    """What gives one fold's held-out residuals for every alpha, from ``Z = Uᵀ Y_c`` alone.

    ``e_G = inverse @ (mixing @ (scaled_rows @ Z) + (R Y)_G)`` with ``scaled_rows = U_G
    diag(f)`` (n_filters, g, rank) for the filters ``f`` (:func:`shared_filters`; without them
    ``mixing`` is None and ``f`` is every alpha's ``d``) and ``inverse = (C_GG)⁻¹``
    (n_alphas, g, g). Target independent: built once per call. (Forming ``(C_GG)⁻¹ U_G diag(d)``
    instead costs a triangular solve with ``rank`` right-hand sides per fold and alpha: 0.16 s
    per conv3-sized fold against 0.04 s for the inverse.)
    """

    scaled_rows: jax.Array
    inverse: jax.Array
    mixing: jax.Array | None


class _LooOperator(NamedTuple):
    """Leave-one-out's residuals ``e = inverse * (U diag(d) Z + R Y)`` for every alpha.

    ``factors`` (n_alphas, rank) is ``d = alpha / (lam + alpha)``, or with shared filters
    (``mixing`` (n_alphas, n_filters) not None) the (n_filters, rank) filters, ``d_a = mixing[a]
    @ factors``. ``inverse`` (n_alphas, n_samples) is ``1 / C_ii``. Residuals are formed (and
    scored) one alpha at a time: no (n_alphas, n_samples, T) array sits in memory (the filters'
    (n_filters, n_samples, T) products do, at most three quarters of that).
    """

    factors: jax.Array
    inverse: jax.Array
    mixing: jax.Array | None


class _AlphaFilters(NamedTuple):
    """(n_alphas, n_filters) mixing and (n_filters, rank) filters from :func:`shared_filters`."""

    mixing: jax.Array
    filters: jax.Array


# Shared filters are used when their products and mix cost at most this fraction of one product
# per alpha: ``f (rank + n_alphas) <= fraction * n_alphas * rank`` (their (f, n_samples, T)
# products are kept in memory for leave-one-out).
MAX_FILTER_FRACTION = 0.75


def shared_filters(factors: np.ndarray, dtype: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Fewer vectors spanning every alpha's residual factors to the dtype's rounding.

    Args:
      factors: (n_alphas, rank) residual factors ``alpha / (lam + alpha)``, best computed in
        float64 (rounding noise near the truncation would count as filters).
      dtype: the compute dtype; its epsilon sets the truncation.

    Returns:
      (mixing (n_alphas, n_filters), filters (n_filters, rank)) float64 with
      ``factors ≈ mixing @ filters``, or None when they would not save work (more than
      ``MAX_FILTER_FRACTION`` of one product per alpha, counting the mix) or a row is zero or
      not finite. From the SVD ``P S Vᵀ`` of the rows scaled to unit norm (so that small alphas'
      small factors keep their relative accuracy), keeping singular values above ``eps``: a
      row's dropped part is ``sum_{j>k} s_j P_aj v_j``, of norm at most ``s_{k+1} <= eps`` (the
      rows of ``P`` have norm at most 1), i.e. within ``eps`` of the row's norm.
    """
    factors = np.asarray(factors, dtype=np.float64)
    n_alphas, rank = factors.shape
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    if not np.all(np.isfinite(factors)) or np.any(norms == 0):
        return None
    left, singular, right = np.linalg.svd(factors / norms, full_matrices=False)
    n_filters = int(np.sum(singular > np.finfo(dtype).eps))
    if n_filters * (rank + n_alphas) > MAX_FILTER_FRACTION * n_alphas * rank:
        return None
    return norms * left[:, :n_filters] * singular[:n_filters], right[:n_filters]


def filter_count(decomposition: RidgeDecomposition, alphas: Any) -> int:
    """How many ``U diag(f) Z`` products the per-target phase forms per fold: one per alpha, or
    the number of :func:`shared_filters` where they span the grid (for operation counts)."""
    d = _check_decomposition(decomposition)
    alpha_grid = replicate(_validation.check_alphas(alphas), d.mesh, d.dtype)
    filters = None if d.fold_bases is not None else _basis_filters(d, alpha_grid)
    return len(alpha_grid) if filters is None else filters.filters.shape[0]


def _basis_filters(d: RidgeDecomposition, alphas: jax.Array) -> _AlphaFilters | None:
    """:func:`shared_filters` of the decomposition's residual factors, replicated on its mesh.

    The factors are recomputed in float64 on the host from the eigenvalues. None (one product
    per alpha) where some direction is dropped at some alpha: a dropped direction's factor is
    a constant 1, not a function of its eigenvalue, and these ill-conditioned cases stay on the
    route measured in ``docs/reliability.md``.
    """
    usable = _all_usable(d.basis, alphas)
    if not bool(usable.addressable_data(0)):
        return None
    eigenvalues = np.asarray(d.basis.eigenvalues.addressable_data(0), dtype=np.float64)
    grid = np.asarray(alphas.addressable_data(0), dtype=np.float64)[:, None]
    filters = shared_filters(grid / (eigenvalues + grid), d.dtype)
    if filters is None:
        return None
    return _AlphaFilters(*(replicate(part, d.mesh, d.dtype) for part in filters))


@jax.jit
def _all_usable(basis: SpectralBasis, alphas: jax.Array) -> jax.Array:
    """Whether every direction takes part at every alpha (see :func:`_usable`)."""
    return jnp.all(_usable(basis.floor, basis.noise, basis.eigenvalues, alphas[:, None]))


def _fold_operators(
    d: RidgeDecomposition, alphas: jax.Array
) -> tuple[_FoldOperator, ...] | tuple[_LooOperator]:
    """One :class:`_FoldOperator` per fold (one :class:`_LooOperator` with leave-one-out).

    On a CPU mesh of several devices the K-fold inverses are computed once, on the host's first
    device, then replicated: jaxlib's batched LAPACK kernels spread a batch over XLA's shared
    CPU thread pool and wait for it, so every simulated device inverting at once deadlocked
    (all pool threads waiting; seen with 4 devices on 2 cores from about 150 samples).
    """
    filters = _basis_filters(d, alphas)
    if d.folds == LEAVE_ONE_OUT:
        return (_loo_operator(d.basis, alphas, d.fit_intercept, filters),)
    devices = list(d.mesh.devices.flat)
    if len(devices) == 1 or devices[0].platform != "cpu":
        return tuple(
            _kfold_operator(d.basis, alphas, _indices(test, d.mesh), d.fit_intercept, filters)
            for _, test in d.folds
        )
    local = jax.local_devices(backend="cpu")[0]
    basis, local_alphas, local_filters = jax.tree.map(
        lambda value: jax.device_put(np.asarray(value.addressable_data(0)), local),
        (d.basis, alphas, filters),
    )
    operators = []
    for _, test in d.folds:
        test_indices = jax.device_put(np.asarray(test, dtype=np.int32), local)
        operator = _kfold_operator(
            basis, local_alphas, test_indices, d.fit_intercept, local_filters
        )
        operators.append(
            jax.tree.map(lambda part: replicate(np.asarray(part), d.mesh, d.dtype), operator)
        )
    return tuple(operators)


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _loo_operator(
    basis: SpectralBasis,
    alphas: jax.Array,
    fit_intercept: bool,
    filters: _AlphaFilters | None,
) -> _LooOperator:
    """Leave-one-out: ``e_i = (C Y)_i / C_ii`` for every alpha."""
    factors = _residual_factors(basis, alphas[:, None])
    squares = basis.vectors**2
    diagonal = factors @ squares.T
    if _has_residual_space(basis, fit_intercept):
        diagonal = diagonal + (1.0 - jnp.sum(squares, axis=1) - basis.direction**2)
    if filters is None:
        return _LooOperator(factors, 1.0 / diagonal, None)
    return _LooOperator(filters.filters, 1.0 / diagonal, filters.mixing)


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _kfold_operator(
    basis: SpectralBasis,
    alphas: jax.Array,
    test: jax.Array,
    fit_intercept: bool,
    filters: _AlphaFilters | None,
) -> _FoldOperator:
    """For one fold G, ``U_G diag(f)`` (every alpha's ``d``, or the filters) and ``(C_GG)⁻¹``."""
    factors = _residual_factors(basis, alphas[:, None])
    rows = basis.vectors[test]
    scaled = rows[None] * factors[:, None, :]
    block = jnp.matmul(scaled, rows.T)
    if _has_residual_space(basis, fit_intercept):
        complement = jnp.eye(test.shape[0], dtype=rows.dtype) - rows @ rows.T
        direction = basis.direction[test]
        block = block + complement - jnp.outer(direction, direction)
    if filters is None:
        return _FoldOperator(scaled, jnp.linalg.inv(block), None)
    scaled_filters = rows[None] * filters.filters[:, None, :]
    return _FoldOperator(scaled_filters, jnp.linalg.inv(block), filters.mixing)


class _TargetCoordinates(NamedTuple):
    """The targets in the basis, shared by the held-out residuals and the refit.

    Attributes: y_mean (1, T) (weighted with weights; zeros without intercept), centred
    (n_samples, T) (times ``sqrt(w)`` with weights), projected (rank, T) ``Z = Uᵀ Y_c``.
    """

    y_mean: jax.Array
    centred: jax.Array
    projected: jax.Array


def _coordinates(basis: SpectralBasis, Y: jax.Array, fit_intercept: bool) -> _TargetCoordinates:
    if basis.root_weights is None:
        y_mean = kernels.column_mean(Y, fit_intercept)
        centred = Y - y_mean
    else:
        root_weights = basis.root_weights[:, None]
        y_mean = jnp.zeros((1, Y.shape[1]), dtype=Y.dtype)
        if fit_intercept:
            y_mean = jnp.sum(root_weights**2 * Y, axis=0, keepdims=True) / jnp.sum(root_weights**2)
        centred = root_weights * (Y - y_mean)
    return _TargetCoordinates(y_mean, centred, basis.vectors.T @ centred)


def _scored(
    basis: SpectralBasis, Y: jax.Array, residual: jax.Array, rows: Any, score: str
) -> jax.Array:
    """Held-out scores of residuals (..., g, T) of the rows ``rows`` (weighted with weights,
    where the residuals come times ``sqrt(w)``)."""
    if basis.root_weights is None:
        return score_columns(Y[rows], Y[rows] - residual, score)
    root_weights = basis.root_weights[rows][:, None]
    unscaled = jnp.where(
        root_weights > 0, residual / jnp.where(root_weights > 0, root_weights, 1), 0
    )
    return score_columns(Y[rows], Y[rows] - unscaled, score, root_weights[:, 0] ** 2)


def _outside(basis: SpectralBasis, targets: _TargetCoordinates, fit_intercept: bool):
    """``R Y``: the part of the centred targets the basis leaves out (None when there is none)."""
    if _has_residual_space(basis, fit_intercept):
        return targets.centred - basis.vectors @ targets.projected
    return None


def _loo_residual(
    basis: SpectralBasis,
    weights: jax.Array,
    inverse: jax.Array,
    targets: _TargetCoordinates,
    outside: jax.Array | None,
    filtered: jax.Array | None,
) -> jax.Array:
    """(n_samples, T) leave-one-out residuals at one alpha, ``inverse`` (n_samples,) its
    ``1 / C_ii``: from its factors ``weights`` (rank,) when ``filtered`` is None, else from the
    (n_filters, n_samples, T) filtered products and its mixing ``weights`` (n_filters,)."""
    if filtered is None:
        residual = _filtered_product(basis, weights, targets)
    else:
        residual = jnp.tensordot(weights, filtered, axes=1)
    if outside is not None:
        residual = residual + outside
    return inverse[:, None] * residual


def _loo_rows(
    basis: SpectralBasis, operator: _LooOperator, targets: _TargetCoordinates
) -> tuple[tuple[jax.Array, jax.Array], jax.Array | None]:
    """Per-alpha (weights, inverse) rows for :func:`_loo_residual`, and the filtered products
    ``U diag(f) Z`` (n_filters, n_samples, T) when the operator has shared filters."""
    if operator.mixing is None:
        return (operator.factors, operator.inverse), None
    filtered = jax.lax.map(
        lambda factors: _filtered_product(basis, factors, targets), operator.factors
    )
    return (operator.mixing, operator.inverse), filtered


def _filtered_product(
    basis: SpectralBasis, factors: jax.Array, targets: _TargetCoordinates
) -> jax.Array:
    """(n_samples, T) ``U diag(factors) Z`` for (rank,) ``factors``."""
    return basis.vectors @ (factors[:, None] * targets.projected)


def _fold_residuals(
    basis: SpectralBasis,
    operators: tuple[_FoldOperator, ...] | tuple[_LooOperator],
    targets: _TargetCoordinates,
    folds: Any,
    fit_intercept: bool,
) -> list[tuple[np.ndarray, jax.Array]]:
    """Per fold, (test rows, (n_alphas, g, n_targets) held-out residuals ``(C_GG)⁻¹ (C Y)_G``).

    Each fold's ``(C Y)_G`` for every alpha is one product (n_alphas g, rank) @ (rank, T);
    leave-one-out's come one alpha at a time (:func:`_loo_residual`).
    """
    outside = _outside(basis, targets, fit_intercept)
    if folds == LEAVE_ONE_OUT:
        (operator,) = operators
        alpha_rows, filtered = _loo_rows(basis, operator, targets)
        residuals = jax.lax.map(
            lambda row: _loo_residual(basis, *row, targets, outside, filtered), alpha_rows
        )
        return [(np.arange(targets.centred.shape[0]), residuals)]
    residuals = []
    for (_, test), operator in zip(folds, operators, strict=True):
        rows = np.asarray(test)
        n_filters, size, rank = operator.scaled_rows.shape
        residual = operator.scaled_rows.reshape(n_filters * size, rank) @ targets.projected
        residual = residual.reshape(n_filters, size, -1)
        if operator.mixing is not None:
            residual = jnp.einsum("af,fgt->agt", operator.mixing, residual)
        if outside is not None:
            residual = residual + outside[rows]
        residuals.append((rows, operator.inverse @ residual))
    return residuals


def _heldout_scores(
    basis: SpectralBasis,
    operators: tuple[_FoldOperator, ...] | tuple[_LooOperator],
    targets: _TargetCoordinates,
    Y: jax.Array,
    folds: Any,
    fit_intercept: bool,
    score: str,
) -> jax.Array:
    """(n_alphas, T) held-out score of every alpha, averaged over folds.

    Leave-one-out scores each alpha's pooled residuals as they are formed (``lax.map``).
    """
    if folds == LEAVE_ONE_OUT:
        (operator,) = operators
        outside = _outside(basis, targets, fit_intercept)
        alpha_rows, filtered = _loo_rows(basis, operator, targets)

        def alpha_score(row: tuple[jax.Array, jax.Array]) -> jax.Array:
            residual = _loo_residual(basis, *row, targets, outside, filtered)
            return _scored(basis, Y, residual, slice(None), score)

        return jax.lax.map(alpha_score, alpha_rows)
    fold_scores = [
        _scored(basis, Y, residual, rows, score)
        for rows, residual in _fold_residuals(basis, operators, targets, folds, fit_intercept)
    ]
    return jnp.mean(jnp.stack(fold_scores), axis=0)


def _one_decomposition_batch(shared, Y, folds, fit_intercept, score, solver):
    """Per target batch: held-out scores of every alpha, each target's alpha, the refit."""
    basis, alphas, operators = shared
    targets = _coordinates(basis, Y, fit_intercept)
    mean_scores = _heldout_scores(basis, operators, targets, Y, folds, fit_intercept, score)
    best_index = jnp.argmax(mean_scores, axis=0)
    solution = _refit(basis, targets.projected, alphas[best_index], solver)
    return mean_scores, best_index, solution, targets.y_mean[0]


def _refit(
    basis: SpectralBasis, projected: jax.Array, best_alphas: jax.Array, solver: str
) -> jax.Array:
    """Primal coefficients (n_features, T) or dual coefficients (n_samples, T) from ``Z``.

    With weights the dual coefficients of the rescaled problem are multiplied by ``sqrt(w)``,
    so that ``coef = (X - weighted mean)ᵀ dual_coef`` as without weights.
    """
    factors = _inverse_factors(basis, best_alphas[:, None]).T
    if solver == "primal":
        return basis.right @ (jnp.sqrt(basis.eigenvalues)[:, None] * factors * projected)
    dual = basis.vectors @ (factors * projected)
    return dual if basis.root_weights is None else basis.root_weights[:, None] * dual


# -- the per-fold route (folds that are not complements, and ridge_path) -------------------------


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _primal_fold_basis(X_train: jax.Array, X_test: jax.Array, fit_intercept: bool) -> _FoldBasis:
    mean = kernels.column_mean(X_train, fit_intercept)
    U, s, Vt = jnp.linalg.svd(X_train - mean, full_matrices=False)
    return _FoldBasis(U, s**2, (X_test - mean) @ Vt.T / jnp.where(s > 0, s, 1.0))


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _dual_fold_basis(
    gram: jax.Array, train: jax.Array, test: jax.Array, fit_intercept: bool
) -> _FoldBasis:
    if fit_intercept:
        kernel, test_kernel = kernels.recentre(gram, train, test)
    else:
        kernel, test_kernel = gram[train][:, train], gram[test][:, train]
    eigenvalues, eigenvectors = jnp.linalg.eigh(kernel)
    return _FoldBasis(eigenvectors, jnp.maximum(eigenvalues, 0.0), test_kernel @ eigenvectors)


def _fold_predictions(
    basis: _FoldBasis, Y_train: jax.Array, alphas: jax.Array, fit_intercept: bool, solver: str
) -> jax.Array:
    """(n_alphas, n_test, n_targets) held-out predictions of one fold for every alpha.

    Both routes have the form ``test_design diag(lam / (lam + alpha)) leftᵀ Y_c`` (the primal
    test design is divided by ``s``), with the same rounding cut as the one-decomposition route.
    """
    y_mean = kernels.column_mean(Y_train, fit_intercept)
    projected = basis.left.T @ (Y_train - y_mean)
    lam = basis.spectrum
    floor, noise = _rounding(lam, lam.shape[0], singular=solver == "primal")
    usable = _usable(floor, noise, lam, alphas[:, None])
    numerator = lam if solver == "primal" else jnp.ones_like(lam)
    factors = jnp.where(usable, numerator / (lam + alphas[:, None]), 0.0)
    return jnp.einsum("nr,ar,rt->ant", basis.test_design, factors, projected) + y_mean


def _per_fold_batch(shared, Y, folds, fit_intercept, score, solver):
    """Per target batch on the per-fold route: one decomposition per fold."""
    basis, alphas, fold_bases = shared
    fold_scores = []
    for fold_basis, (train, test) in zip(fold_bases, folds, strict=True):
        predictions = _fold_predictions(
            fold_basis, Y[np.asarray(train)], alphas, fit_intercept, solver
        )
        fold_scores.append(score_columns(Y[np.asarray(test)], predictions, score))
    mean_scores = jnp.mean(jnp.stack(fold_scores), axis=0)
    best_index = jnp.argmax(mean_scores, axis=0)
    targets = _coordinates(basis, Y, fit_intercept)
    solution = _refit(basis, targets.projected, alphas[best_index], solver)
    return mean_scores, best_index, solution, targets.y_mean[0]


# -- checks ---------------------------------------------------------------------------------------


def _fold_key(cv: Any, n_samples: int) -> Any:
    """``"loo"`` or the folds as hashable ((train), (test)) tuples."""
    if isinstance(cv, str):
        if cv != LEAVE_ONE_OUT:
            raise ValueError(
                f"cv must be an int, a scikit-learn splitter, a list of (train, test) index "
                f"arrays, or {LEAVE_ONE_OUT!r} for leave-one-out; got {cv!r}."
            )
        if n_samples < 3:
            raise ValueError(f"leave-one-out needs at least 3 samples, got {n_samples}.")
        return LEAVE_ONE_OUT
    return tuple(
        (tuple(train.tolist()), tuple(test.tolist())) for train, test in make_folds(cv, n_samples)
    )


def _folds_partition(folds: Any, n_samples: int) -> bool:
    """Whether every fold trains on exactly the samples it does not test (the identity holds)."""
    if folds == LEAVE_ONE_OUT:
        return True
    everything = set(range(n_samples))
    return all(set(train) == everything - set(test) for train, test in folds)


def _indices(indices: Sequence[int], mesh: Any) -> jax.Array:
    """Sample indices replicated on the mesh, like the arrays they index.

    (Indices left on one device while the decomposition is replicated made XLA's CPU runtime
    deadlock on several simulated devices in float32.)
    """
    return replicate(np.asarray(indices), mesh, np.int32)


def _small_offset(d: RidgeDecomposition) -> bool:
    """Whether the design's mean is small beside its spread: ``n |mean|² <= trace(K)``.

    Then predictions need not centre the design (``cross_kernel(centre_design=False)``): its
    rounding grows by at most ``sqrt(1 + n |mean|² / trace(K)) <= sqrt(2)`` (with weights,
    ``n`` is their sum).
    """
    spread = float(jnp.sum(d.basis.eigenvalues))
    weights = d.n_samples if d.basis.root_weights is None else jnp.sum(d.basis.root_weights**2)
    return float(weights * jnp.sum(d.feature_mean**2)) <= spread


def _check_decomposition(decomposition: Any) -> RidgeDecomposition:
    if not isinstance(decomposition, RidgeDecomposition):
        raise TypeError(
            "decomposition must come from prepare_ridge(X, cv, ...), got "
            f"{type(decomposition).__name__}."
        )
    return decomposition


def _check_targets(Y: Any, d: RidgeDecomposition) -> Any:
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    if Y.shape[0] != d.n_samples:
        raise ValueError(
            f"Y has {Y.shape[0]} samples but the prepared design has "
            f"{d.n_samples}; they must have one row per stimulus, in the same order."
        )
    return Y


def _check_refit_conditioning(decomposition: RidgeDecomposition, best_alphas: jax.Array) -> None:
    """Warn when the refit at the smallest alpha any target chose is untrustworthy.

    Only the spectrum (rank,) and one scalar reach the host; the minimum over the voxel axis is a
    global reduction, so this works for arrays sharded across processes too.
    """
    eigenvalues = np.asarray(decomposition.basis.eigenvalues)
    if decomposition.solver == "primal":
        spectrum, kind = np.sqrt(eigenvalues), "singular"
    else:
        spectrum, kind = eigenvalues, "eigen"
    smallest_chosen = float(jnp.min(best_alphas))
    check_conditioning(spectrum, [smallest_chosen], decomposition.dtype, kind=kind, stacklevel=4)
