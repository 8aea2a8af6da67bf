"""Closed-form ridge regression for all targets at once, cross-validated per target.

The engine does one decomposition per fold and then evaluates every alpha for every target in
batched array expressions:

* primal (n_features <= n_samples): thin SVD of the centred training design,
  ``X_c = U diag(s) Vᵀ``; predictions for alpha are
  ``(X_test - mean) V diag(s / (s² + alpha)) Uᵀ Y_c``.
* dual (n_features > n_samples): eigendecomposition of the centred linear kernel,
  ``K_c = Q diag(lam) Qᵀ``; predictions are ``K_test,c Q diag(1 / (lam + alpha)) Qᵀ Y_c``.
  The kernel of all samples is computed once, streaming the features in blocks centred on their
  overall mean (no cancellation from large offsets), and every fold's kernel, re-centred on its
  training mean, is taken from it, so the large design matrix is never copied.

Both have the form ``prediction(alpha) = A diag(d(alpha)) B`` with ``A`` (n_test, rank),
``B = basisᵀ Y_c`` (rank, n_targets); only ``B`` depends on the targets, so targets are processed
in batches with bounded memory and the decompositions are reused for every batch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from v4jax import _validation
from v4jax.cv import make_folds
from v4jax.metrics import SCORES, score_columns

SOLVERS = ("auto", "primal", "dual")
DEFAULT_TARGET_BATCH = 2048
DEFAULT_FEATURE_BLOCK = 8192


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


@dataclasses.dataclass(frozen=True)
class RidgeCVResult:
    """Result of :func:`ridge_cv`.

    Attributes:
      best_alphas: (n_targets,) the alpha with the best mean held-out score, per target.
      cv_scores: (n_alphas, n_targets) held-out score averaged over folds.
      coef: (n_features, n_targets) coefficients refitted on all samples with each target's alpha.
      intercept: (n_targets,) intercepts (zeros when ``fit_intercept=False``).
      alphas: (n_alphas,) the grid, as given.
      best_alpha_index: (n_targets,) index of each target's alpha in ``alphas``.
      alpha_on_edge: (n_targets,) True where the best alpha is the grid's smallest or largest
        value: the optimum may lie outside the grid, consider widening it.
      solver: "primal" or "dual", the path that ran.
      score: "r2" or "pearson".
    """

    best_alphas: jax.Array
    cv_scores: jax.Array
    coef: jax.Array
    intercept: jax.Array
    alphas: np.ndarray
    best_alpha_index: jax.Array
    alpha_on_edge: jax.Array
    solver: str
    score: str


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
      progress: show a progress bar over target batches (default: when there is more than one).

    Returns:
      :class:`RidgeCVResult`; arrays in float32, or float64 when JAX x64 is on and inputs are
      float64.

    Example:
      >>> result = ridge_cv(X, Y, np.logspace(-2, 6, 17), cv=5)
      >>> result.best_alphas.shape, result.coef.shape
      ((n_targets,), (n_features, n_targets))
    """
    X = _validation.as_2d_float(X, "X")
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    _validation.check_same_samples(X, Y)
    alpha_grid = _validation.check_alphas(alphas)
    _validation.check_choice(score, "score", SCORES)
    _validation.check_choice(solver, "solver", SOLVERS)
    target_batch_size = _validation.check_positive_int(
        target_batch_size, "target_batch_size", allow_none=True
    )
    feature_block_size = _validation.check_positive_int(feature_block_size, "feature_block_size")
    n_samples, n_features = X.shape
    n_targets = Y.shape[1]
    folds = make_folds(cv, n_samples)
    dtype = _validation.compute_dtype(X, Y)
    if solver == "auto":
        solver = "dual" if n_features > n_samples else "primal"

    Y_device = jnp.asarray(Y, dtype=dtype)
    alphas_device = jnp.asarray(alpha_grid, dtype=dtype)
    if solver == "primal":
        X_device = jnp.asarray(X, dtype=dtype)
        fold_bases = [
            _primal_basis(X_device[train], X_device[test], fit_intercept) for train, test in folds
        ]
        full = _primal_full(X_device, fit_intercept)
    else:
        feature_mean = _feature_mean(X, dtype, feature_block_size, fit_intercept)
        gram = _centred_gram(X, feature_mean, dtype, feature_block_size)
        fold_bases = [
            _dual_basis(gram, jnp.asarray(train), jnp.asarray(test), fit_intercept)
            for train, test in folds
        ]
        full = _dual_full(gram, fit_intercept)

    batch = n_targets if target_batch_size is None else target_batch_size
    starts = range(0, n_targets, batch)
    show = progress if progress is not None else len(starts) > 1
    score_parts, coef_parts, intercept_parts, index_parts = [], [], [], []
    for start in tqdm(starts, desc="ridge target batches", disable=not show):
        Y_batch = Y_device[:, start : start + batch]
        fold_scores = [
            _fold_scores(
                basis, Y_batch[train], Y_batch[test], alphas_device, fit_intercept, score, solver
            )
            for basis, (train, test) in zip(fold_bases, folds, strict=True)
        ]
        mean_scores = jnp.mean(jnp.stack(fold_scores), axis=0)
        best_index = jnp.argmax(mean_scores, axis=0)
        best = alphas_device[best_index]
        if solver == "primal":
            coef, intercept = _primal_refit(full, X_device, Y_batch, best, fit_intercept)
        else:
            coef, intercept = _dual_refit(
                full, X, Y_batch, best, feature_mean, fit_intercept, dtype, feature_block_size
            )
        score_parts.append(mean_scores)
        coef_parts.append(coef)
        intercept_parts.append(intercept)
        index_parts.append(best_index)

    best_alpha_index = jnp.concatenate(index_parts)
    return RidgeCVResult(
        best_alphas=alphas_device[best_alpha_index],
        cv_scores=jnp.concatenate(score_parts, axis=1),
        coef=jnp.concatenate(coef_parts, axis=1),
        intercept=jnp.concatenate(intercept_parts),
        alphas=alpha_grid,
        best_alpha_index=best_alpha_index,
        alpha_on_edge=(best_alpha_index == 0) | (best_alpha_index == len(alpha_grid) - 1),
        solver=solver,
        score=score,
    )


def ridge_path(
    X_train: Any,
    Y_train: Any,
    X_test: Any,
    alphas: Any,
    *,
    fit_intercept: bool = True,
    solver: str = "auto",
) -> jax.Array:
    """Predictions on ``X_test`` of ridge fitted on the training set, for every alpha.

    The same decompositions as :func:`ridge_cv` use for each fold.

    Args:
      X_train: (n_train, n_features). Y_train: (n_train, n_targets) or (n_train,).
      X_test: (n_test, n_features). alphas: (n_alphas,).

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
    dtype = _validation.compute_dtype(X_train, Y_train, X_test)
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
    return SpectralBasis(
        eigenvectors, _truncate_eigenvalues(eigenvalues), test_kernel @ eigenvectors
    )


def _truncate_eigenvalues(eigenvalues: jax.Array) -> jax.Array:
    """Zero the eigenvalues that rounding alone could produce (as a pseudo-inverse does)."""
    tolerance = (
        jnp.max(jnp.abs(eigenvalues)) * eigenvalues.shape[0] * jnp.finfo(eigenvalues.dtype).eps
    )
    return jnp.where(eigenvalues > tolerance, eigenvalues, 0.0)


def _filter_factors(spectrum: jax.Array, alphas: jax.Array, solver: str) -> jax.Array:
    """(n_alphas, rank) the diagonal d(alpha) of each path."""
    alphas = alphas[:, None]
    if solver == "primal":
        return spectrum / (spectrum**2 + alphas)
    return jnp.where(spectrum > 0, 1.0 / (spectrum + alphas), 0.0)


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


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _primal_refit(
    full: _PrimalFull, X: jax.Array, Y: jax.Array, best_alphas: jax.Array, fit_intercept: bool
) -> tuple[jax.Array, jax.Array]:
    del X
    y_mean = _column_mean(Y, fit_intercept)[0]
    projected = full.U.T @ (Y - y_mean)
    factors = full.s[:, None] / (full.s[:, None] ** 2 + best_alphas[None, :])
    coef = full.Vt.T @ (factors * projected)
    return coef, y_mean - full.mean @ coef


@functools.partial(jax.jit, static_argnames="fit_intercept")
def _dual_coefficients(
    full: _DualFull, Y: jax.Array, best_alphas: jax.Array, fit_intercept: bool
) -> tuple[jax.Array, jax.Array]:
    """(n_samples, n_targets) dual coefficients and (n_targets,) response means."""
    y_mean = _column_mean(Y, fit_intercept)[0]
    projected = full.eigenvectors.T @ (Y - y_mean)
    values = full.eigenvalues[:, None]
    factors = jnp.where(values > 0, 1.0 / (values + best_alphas[None, :]), 0.0)
    return full.eigenvectors @ (factors * projected), y_mean


def _dual_refit(
    full: _DualFull,
    X: Any,
    Y: jax.Array,
    best_alphas: jax.Array,
    feature_mean: jax.Array,
    fit_intercept: bool,
    dtype: np.dtype,
    feature_block_size: int,
) -> tuple[jax.Array, jax.Array]:
    dual, y_mean = _dual_coefficients(full, Y, best_alphas, fit_intercept)
    dual_sum = jnp.sum(dual, axis=0)
    blocks = []
    for start in range(0, X.shape[1], feature_block_size):
        X_block = jnp.asarray(X[:, start : start + feature_block_size], dtype=dtype)
        mean_block = feature_mean[start : start + X_block.shape[1]]
        blocks.append(_centred_transpose_product(X_block, dual, mean_block, dual_sum))
    coef = jnp.concatenate(blocks)
    intercept = y_mean - feature_mean @ coef
    return coef, intercept


@jax.jit
def _centred_transpose_product(
    X_block: jax.Array, dual: jax.Array, mean_block: jax.Array, dual_sum: jax.Array
) -> jax.Array:
    """(X_block - mean)ᵀ dual without forming the centred block."""
    return X_block.T @ dual - mean_block[:, None] * dual_sum[None, :]


# -- shared pieces ------------------------------------------------------------------------------


def _feature_mean(X: Any, dtype: np.dtype, block: int, fit_intercept: bool) -> jax.Array:
    """(n_features,) column means of X (zeros without intercept), streaming feature blocks."""
    if not fit_intercept:
        return jnp.zeros(X.shape[1], dtype=dtype)
    return jnp.concatenate(
        [
            jnp.mean(jnp.asarray(X[:, start : start + block], dtype=dtype), axis=0)
            for start in range(0, X.shape[1], block)
        ]
    )


def _centred_gram(X: Any, mean: jax.Array, dtype: np.dtype, block: int) -> jax.Array:
    """(n_samples, n_samples) kernel (X - mean)(X - mean)ᵀ, streaming feature blocks."""
    n_samples = X.shape[0]
    gram = jnp.zeros((n_samples, n_samples), dtype=dtype)
    for start in range(0, X.shape[1], block):
        X_block = jnp.asarray(X[:, start : start + block], dtype=dtype)
        gram = _accumulate_gram(gram, X_block, mean[start : start + X_block.shape[1]])
    return gram


@functools.partial(jax.jit, donate_argnums=0)
def _accumulate_gram(gram: jax.Array, X_block: jax.Array, mean_block: jax.Array) -> jax.Array:
    centred = X_block - mean_block
    return gram + centred @ centred.T


def _column_mean(values: jax.Array, fit_intercept: bool) -> jax.Array:
    if fit_intercept:
        return jnp.mean(values, axis=0, keepdims=True)
    return jnp.zeros((1, values.shape[1]), dtype=values.dtype)
