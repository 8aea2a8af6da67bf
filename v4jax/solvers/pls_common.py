"""What the PLS solvers share (:mod:`v4jax.solvers.pls1`, :mod:`v4jax.solvers.pls2`).

Input checks and component grids, scikit-learn's standardisation moments, the fold designs
(standardised designs, or kernels centred on the training samples, streamed through the
engine's kernels), the rounding floors below which a component counts as vanished, and the
warnings for dropped components and unconverged power iterations.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from v4jax import _validation
from v4jax.solvers.engine.kernels import (
    CentredGram,
    centred_gram,
    feature_block,
    recentre,
)
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


class _FoldDesign(NamedTuple):
    """A training/test pair of designs, standardised on the training set.

    Primal: ``train`` (n_train, n_features) and ``test`` (n_test, n_features).
    Dual: ``train`` the (n_train, n_train) kernel and ``test`` the (n_test, n_train) kernel.
    """

    train: jax.Array
    test: jax.Array


def _safe(values: jax.Array) -> jax.Array:
    return jnp.where(values != 0, values, 1.0)


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
