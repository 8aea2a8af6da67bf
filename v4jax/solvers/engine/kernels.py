"""Streamed products of the design, shared by every solver.

Designs can be far wider than memory allows to copy (conv3: 1,750 x 64,896), so every product
streams the features in blocks, each centred (and optionally scaled) on its own column
statistics before it is multiplied (no cancellation from large feature offsets; ridge's kernel
multiplies blocks near zero as they are and centres their product exactly, see
:func:`_host_gram_of_own_means`):

* :func:`centred_gram`: the (n, n) kernel ``(X - mean)(X - mean)ᵀ``, with ``(X - mean) @ mean``
  and the column means, in one pass;
* :func:`cross_kernel`: the (n_new, n) kernel of new samples against the design;
* :func:`transpose_product`: ``((X - mean) / std)ᵀ M`` for an (n, m) ``M`` (coefficients from
  dual coefficients, PLS weights), with ``M`` sharded over voxels;
* :func:`recentre`: a fold's training and test kernels centred on its training mean, from the
  full kernel's entries only.

Two routes, chosen by :func:`host_blas` and tested separately: a host (numpy) design on a
CPU-only mesh is multiplied by the host's BLAS (``A @ A.T`` is a syrk, half the multiply-adds of
a general product: 1.7x faster than XLA's CPU dot for the conv3 kernel on 2 cores); anything
else (a JAX array, or any accelerator) streams replicated blocks through jitted device products.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from v4jax.solvers.engine.sharding import replicate, voxel_mesh

DEFAULT_FEATURE_BLOCK = 8192


class CentredGram(NamedTuple):
    """What one streaming pass over the design gives, replicated on the mesh.

    Attributes:
      kernel: (n_samples, n_samples) ``Z Zᵀ`` with ``Z = (X - mean) / std``.
      design_dot_mean: (n_samples,) ``Z @ mean`` (gives intercepts without primal coefficients).
      mean: (n_features,) the column means used (zeros without intercept).
    """

    kernel: jax.Array
    design_dot_mean: jax.Array
    mean: jax.Array


def host_blas(X: Any, mesh: Any) -> bool:
    """Whether products go through the host's BLAS: X is not a JAX array, the mesh is CPU only."""
    return not isinstance(X, jax.Array) and all(
        device.platform == "cpu" for device in mesh.devices.flat
    )


def feature_block(X: Any, start: int, block: int, dtype: Any, mesh: Any) -> jax.Array:
    """Columns ``start:start + block`` of X, replicated over ``mesh`` in ``dtype``."""
    return replicate(X[:, start : start + block], mesh, dtype)


def column_mean(values: jax.Array, fit_intercept: bool) -> jax.Array:
    """(1, n_columns) column means, or zeros without intercept."""
    if fit_intercept:
        return jnp.mean(values, axis=0, keepdims=True)
    return jnp.zeros((1, values.shape[1]), dtype=values.dtype)


def weighted_column_mean(X: Any, weights: np.ndarray, dtype: Any, block: int) -> np.ndarray:
    """(n_features,) ``weights @ X / sum(weights)``, streaming feature blocks on the host.

    Args:
      X: (n_samples, n_features) design (numpy, JAX or anything column-sliceable).
      weights: (n_samples,) non-negative sample weights, not all zero.
      dtype: compute dtype. block: features per block.
    """
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    weights = weights.astype(dtype)
    means = [
        weights @ np.asarray(X[:, start : start + block], dtype=dtype)
        for start in range(0, X.shape[1], block)
    ]
    return (np.concatenate(means) / total).astype(dtype)


def centred_gram(
    X: Any,
    *,
    fit_intercept: bool = True,
    mean: Any = None,
    std: Any = None,
    dtype: Any = np.float32,
    block: int = DEFAULT_FEATURE_BLOCK,
    mesh: Any = None,
    progress: bool | None = None,
    raw_products: bool = False,
) -> CentredGram:
    """Kernel of the centred (and scaled) design, in one streaming pass over feature blocks.

    Args:
      X: (n_samples, n_features) design, numpy, JAX or anything column-sliceable.
      fit_intercept: centre the columns (on ``mean``, or on each block's own column means over
        all samples when ``mean`` is None); without it ``mean`` is zero.
      mean: (n_features,) column means to centre on (e.g. a fold's training means), or None.
      std: (n_features,) column scales to divide by after centring, or None (no scaling).
      dtype: compute dtype. block: features per streamed block.
      mesh: the voxel mesh the outputs are replicated on (None: all local devices).
      progress: show a progress bar over the blocks (None: when there are more than 8).
      raw_products: on the host route, centred on the design's own means without scales,
        multiply blocks near zero as they are and centre their products exactly afterwards
        (:func:`_host_gram_of_own_means`: 11 % faster for conv3, slightly more rounding).
        Ridge takes it (its eigensolver's own rounding is larger); PLS, whose many-component
        Krylov fits amplify kernel rounding, does not.

    Returns:
      :class:`CentredGram` (kernel, design_dot_mean, mean), replicated on ``mesh``.
    """
    mesh = voxel_mesh(None) if mesh is None else mesh
    starts = range(0, X.shape[1], block)
    show = progress if progress is not None else len(starts) > 8
    bar = functools.partial(tqdm, desc="kernel feature blocks", total=len(starts), disable=not show)
    n_samples = X.shape[0]
    if host_blas(X, mesh):
        if raw_products and fit_intercept and mean is None and std is None:
            outputs = _host_gram_of_own_means(X, dtype, block, bar)
        else:
            outputs = _host_gram(X, mean, std, fit_intercept, dtype, block, bar)
        return CentredGram(*(replicate(array, mesh, dtype) for array in outputs))
    kernel = replicate(np.zeros((n_samples, n_samples)), mesh, dtype)
    design_dot_mean = replicate(np.zeros(n_samples), mesh, dtype)
    means = []
    for start in bar(starts):
        X_block = feature_block(X, start, block, dtype, mesh)
        stop = start + X_block.shape[1]
        mean_block = None if mean is None else jnp.asarray(mean[start:stop], dtype=dtype)
        std_block = None if std is None else jnp.asarray(std[start:stop], dtype=dtype)
        kernel, design_dot_mean, mean_block = _accumulate_gram(
            kernel, design_dot_mean, X_block, mean_block, std_block, fit_intercept
        )
        means.append(mean_block)
    return CentredGram(kernel, design_dot_mean, jnp.concatenate(means))


def _host_gram(
    X: Any, mean: Any, std: Any, fit_intercept: bool, dtype: Any, block: int, bar: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host route: centre (and scale) every block, then add its syrk."""
    n_samples = X.shape[0]
    kernel = np.zeros((n_samples, n_samples), dtype=dtype)
    design_dot_mean = np.zeros(n_samples, dtype=dtype)
    means = []
    host_mean = None if mean is None else _host(mean, dtype)
    host_std = None if std is None else _host(std, dtype)
    blocks = host_centred_blocks(X, host_mean, fit_intercept, dtype, block, std=host_std)
    for _, centred, mean_block in bar(blocks):
        kernel += centred @ centred.T  # numpy calls BLAS syrk for a product with its transpose
        design_dot_mean += centred @ mean_block
        means.append(mean_block)
    return kernel, design_dot_mean, np.concatenate(means)


def _host_gram_of_own_means(
    X: Any, dtype: Any, block: int, bar: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host route centred on the design's own means, mostly without centring a copy.

    Each block's raw syrk ``G = X_b X_bᵀ`` is used as it is (no centring pass: 0.85 s instead
    of 0.96 s for the conv3-shaped kernel on 2 cores) when the block's offset is small,
    ``2 n |m_b|² <= trace(G)`` (i.e. ``n |m_b|² <= trace`` of its centred kernel), and is
    centred exactly afterwards: ``(X_b - 1 m_bᵀ)(X_b - 1 m_bᵀ)ᵀ = G - a_b 1ᵀ - 1 a_bᵀ + |m_b|²``
    with ``a_b = X_b m_b``. The bound keeps the raw entries within twice the centred kernel's
    scale, but raw sums do not cancel as centred ones do, so rounding grows: on the
    benchmark's non-negative conv3-like float32 design the kernel is 9e-7 from float64
    (centred blocks: 7e-8), still below a float32 eigensolver's backward error
    (``sqrt(n) eps |K|``, 2.5e-6 there); leave-one-out ridge scores are 9.6e-7 from float64
    (centred blocks: 8.9e-7). A block far from zero (the bound fails, e.g. features offset by
    1e4) is centred and multiplied again, as in :func:`_host_gram`, and every later block is
    centred first without trying the raw product (a design far from zero wastes one block's
    syrk, not one per block).
    """
    n_samples = X.shape[0]
    ones = np.ones(n_samples, dtype=dtype)
    kernel = np.zeros((n_samples, n_samples), dtype=dtype)
    raw_dot_mean = np.zeros(n_samples, dtype=dtype)  # sum over raw blocks of X_b m_b
    raw_mean_norm = 0.0  # sum over raw blocks of |m_b|²
    design_dot_mean = np.zeros(n_samples, dtype=dtype)  # centred blocks' (X_b - m_b) m_b
    means = []
    buffer = np.empty((n_samples, min(block, X.shape[1])), dtype=dtype)
    near_zero = True  # until a block is not
    for start in bar(range(0, X.shape[1], block)):
        X_block = np.asarray(X[:, start : start + block], dtype=dtype)
        mean_block = (ones @ X_block) / n_samples
        means.append(mean_block)
        if near_zero:
            gram = X_block @ X_block.T  # syrk
            mean_norm = mean_block @ mean_block
            near_zero = bool(2 * n_samples * mean_norm <= np.trace(gram))
            if near_zero:
                kernel += gram
                raw_dot_mean += X_block @ mean_block
                raw_mean_norm += mean_norm
                continue
        centred = np.subtract(X_block, mean_block, out=buffer[:, : X_block.shape[1]])
        kernel += centred @ centred.T
        design_dot_mean += centred @ mean_block
    kernel -= raw_dot_mean[:, None] + raw_dot_mean[None, :]  # one sum: stays symmetric
    kernel += raw_mean_norm
    design_dot_mean += raw_dot_mean - raw_mean_norm
    return kernel, design_dot_mean, np.concatenate(means)


@functools.partial(jax.jit, static_argnames="fit_intercept", donate_argnums=(0, 1))
def _accumulate_gram(
    kernel: jax.Array,
    design_dot_mean: jax.Array,
    X_block: jax.Array,
    mean_block: jax.Array | None,
    std_block: jax.Array | None,
    fit_intercept: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Add one feature block, centred (and scaled), to the kernel (device route)."""
    if mean_block is None:
        mean_block = column_mean(X_block, fit_intercept)[0]
    centred = _standardise(X_block, mean_block, std_block)
    return kernel + centred @ centred.T, design_dot_mean + centred @ mean_block, mean_block


def host_centred_blocks(
    X: Any,
    mean: np.ndarray | None,
    fit_intercept: bool,
    dtype: Any,
    block: int,
    *,
    std: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first column, centred (n_samples, width) block, its (width,) means) of X.

    The means are ``mean``'s, or (when None) each block's own column means (zeros without
    intercept), summed by a BLAS gemv: 6x faster than a float64 numpy mean on conv3 blocks and
    within 8e-7 of it in float32. Blocks are divided by ``std`` when given. Every block is
    centred into one reused buffer (fresh 57 MB blocks page-faulted: 1.6 s vs 1.3 s for the
    conv3 kernel), so a yielded block is valid only until the next one.
    """
    buffer = np.empty((X.shape[0], min(block, X.shape[1])), dtype=dtype)
    ones = np.ones(X.shape[0], dtype=dtype)
    for start in range(0, X.shape[1], block):
        X_block = np.asarray(X[:, start : start + block], dtype=dtype)
        width = X_block.shape[1]
        if mean is not None:
            mean_block = mean[start : start + width]
        elif fit_intercept:
            mean_block = (ones @ X_block) / X.shape[0]
        else:
            mean_block = np.zeros(width, dtype=dtype)
        centred = np.subtract(X_block, mean_block, out=buffer[:, :width])
        if std is not None:
            np.divide(centred, std[start : start + width], out=centred)
        yield start, centred, mean_block


def cross_kernel(
    X_new: Any,
    X: Any,
    mean: Any,
    *,
    std: Any = None,
    dtype: Any = np.float32,
    block: int = DEFAULT_FEATURE_BLOCK,
    mesh: Any = None,
    centre_design: bool = True,
) -> jax.Array:
    """(n_new, n_samples) kernel ``Z_new Zᵀ`` with ``Z = (X - mean) / std``, streaming blocks.

    Args:
      X_new: (n_new, n_features) new samples. X: (n_samples, n_features) the design.
      mean: (n_features,) the design's column means. std: (n_features,) scales or None.
      dtype, block, mesh: as :func:`centred_gram`.
      centre_design: False (host route, ``std`` None) reads the design's blocks as they are,
        ``Z_new Zᵀ = Z_new Xᵀ - (Z_new mean) 1ᵀ``, saving a centring pass over the whole
        design (a third of the conv3 prediction's time). Its rounding grows with the design's
        offset ``|mean| / rms |x - mean|``: callers choose it only where that ratio is small.
    """
    mesh = voxel_mesh(None) if mesh is None else mesh
    if host_blas(X, mesh):
        host_mean = _host(mean, dtype)
        host_std = None if std is None else _host(std, dtype)
        kernel = np.zeros((X_new.shape[0], X.shape[0]), dtype=dtype)
        if not centre_design and host_std is None:
            new_dot_mean = np.zeros(X_new.shape[0], dtype=dtype)
            for start in range(0, X.shape[1], block):
                X_block = np.asarray(X[:, start : start + block], dtype=dtype)
                mean_block = host_mean[start : start + X_block.shape[1]]
                X_new_block = np.asarray(X_new[:, start : start + block], dtype=dtype) - mean_block
                kernel += X_new_block @ X_block.T
                new_dot_mean += X_new_block @ mean_block
            kernel -= new_dot_mean[:, None]
            return replicate(kernel, mesh, dtype)
        blocks = host_centred_blocks(X, host_mean, True, dtype, block, std=host_std)
        for start, centred, mean_block in blocks:
            width = centred.shape[1]
            X_new_block = np.asarray(X_new[:, start : start + width], dtype=dtype) - mean_block
            if host_std is not None:
                X_new_block /= host_std[start : start + width]
            kernel += X_new_block @ centred.T
        return replicate(kernel, mesh, dtype)
    kernel = replicate(np.zeros((X_new.shape[0], X.shape[0])), mesh, dtype)
    for start in range(0, X.shape[1], block):
        X_block = feature_block(X, start, block, dtype, mesh)
        stop = start + X_block.shape[1]
        std_block = None if std is None else jnp.asarray(std[start:stop], dtype=dtype)
        kernel = _accumulate_cross_kernel(
            kernel,
            feature_block(X_new, start, block, dtype, mesh),
            X_block,
            jnp.asarray(mean[start:stop], dtype=dtype),
            std_block,
        )
    return kernel


@functools.partial(jax.jit, donate_argnums=0)
def _accumulate_cross_kernel(
    kernel: jax.Array,
    X_new_block: jax.Array,
    X_block: jax.Array,
    mean_block: jax.Array,
    std_block: jax.Array | None,
) -> jax.Array:
    new = _standardise(X_new_block, mean_block, std_block)
    return kernel + new @ _standardise(X_block, mean_block, std_block).T


def transpose_product(
    X: Any,
    M: jax.Array,
    mean: Any,
    *,
    std: Any = None,
    dtype: Any = np.float32,
    block: int = DEFAULT_FEATURE_BLOCK,
    mesh: Any = None,
) -> jax.Array:
    """(n_features, m) ``((X - mean) / std)ᵀ M``, streaming replicated feature blocks.

    Args:
      X: (n_samples, n_features) design. M: (n_samples, m), e.g. dual coefficients sharded over
        the voxel mesh (each device then computes its own voxels' columns).
      mean: (n_features,) column means. std: (n_features,) scales or None.
      dtype, block, mesh: as :func:`centred_gram`.

    Centring each block before the product (rather than ``Xᵀ M - mean ⊗ sum(M)``) avoids the
    cancellation that loses float32 digits when features sit far from zero.
    """
    mesh = voxel_mesh(None) if mesh is None else mesh
    blocks = []
    for start in range(0, X.shape[1], block):
        X_block = feature_block(X, start, block, dtype, mesh)
        stop = start + X_block.shape[1]
        std_block = None if std is None else jnp.asarray(std[start:stop], dtype=dtype)
        mean_block = jnp.asarray(mean[start:stop], dtype=dtype)
        blocks.append(_transpose_product(X_block, M, mean_block, std_block))
    return jnp.concatenate(blocks)


@jax.jit
def _transpose_product(
    X_block: jax.Array, M: jax.Array, mean_block: jax.Array, std_block: jax.Array | None
) -> jax.Array:
    return _standardise(X_block, mean_block, std_block).T @ M


@jax.jit
def recentre(gram: jax.Array, train: jax.Array, test: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(n_train, n_train) and (n_test, n_train) kernels centred on the training mean m.

    From kernel entries only: (x_i - m)·(x_j - m) = k_ij - x_i·m - x_j·m + m·m, with
    x_i·m = mean over training j of k_ij.
    """
    kernel = gram[train][:, train]
    test_kernel = gram[test][:, train]
    train_dot_mean = jnp.mean(kernel, axis=1)
    mean_dot_mean = jnp.mean(train_dot_mean)
    kernel = kernel - train_dot_mean[:, None] - train_dot_mean[None, :] + mean_dot_mean
    test_dot_mean = jnp.mean(test_kernel, axis=1)
    test_kernel = test_kernel - test_dot_mean[:, None] - train_dot_mean[None, :] + mean_dot_mean
    return kernel, test_kernel


def _standardise(values: jax.Array, mean: jax.Array, std: jax.Array | None) -> jax.Array:
    centred = values - mean
    return centred if std is None else centred / std


def _host(values: Any, dtype: Any) -> np.ndarray:
    """A replicated JAX (or host) vector as a host array (every device holds all of it)."""
    if isinstance(values, jax.Array):
        values = values.addressable_data(0)
    return np.asarray(values, dtype=dtype).reshape(-1)
