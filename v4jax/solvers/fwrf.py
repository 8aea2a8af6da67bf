"""Feature-weighted receptive fields (fwRF; St-Yves & Naselaris 2018), closed form, every voxel.

Each voxel pools every feature map with one isotropic 2-D Gaussian field (centre, size) shared
by all channels and layers, and a ridge regression over the pooled channels predicts it:

    y[n, v] = sum_c X_g[n, c] coef[c, v] + intercept[v],   X_g[n, c] = sum_hw maps[n,h,w,c] g(h,w).

The field is chosen from a grid of candidates and the penalty from a grid of alphas, per voxel,
by K-fold cross-validation; every fit is closed form (:mod:`v4jax.solvers.fwrf_grid` builds the
candidates and the pooled designs).

**Cost.** For each candidate the pooled design (N x C) is centred once; per fold ``k`` (test rows
``t``) the training Gram ``S_k = S - X_tᵀ X_t - n_k m_k m_kᵀ`` (a downdate of the full Gram, no
pass over the training rows) is eigendecomposed once, ``S_k = Q diag(lam) Qᵀ``; with the test
rows in that basis, ``V = (X_t - m_k) Q`` (n_t x C), the held-out predictions of every voxel and
alpha are ``V diag(1 / (lam + alpha)) (Qᵀ B_k)``, ``B_k = X_kᵀ Y_k`` formed from the per-fold
products ``X_tᵀ Y_t`` (whose sum is ``Xᵀ Y``). Per candidate that is ``2 N C T`` multiply-adds
for ``Xᵀ Y``, ``2 K C² T`` for the ``Qᵀ B_k``, and ``2 N C T`` per alpha for the held-out
predictions of all folds together (what forming them costs in any method),
and K eigendecompositions of C x C (on a CPU in the host's LAPACK, one matrix per thread:
jaxlib's CPU ``eigh``, ``cholesky`` and triangular solves ran 5-50x slower here). The refit on
all images factorises only the (candidate, alpha) pairs some voxel chose.

**Alphas are relative** by default (``relative_alphas=True``): candidate g's penalty is
``alpha * mean eigenvalue`` of its centred pooled Gram on all images (``trace(S_g) / C``), so one
grid suits small fields (large pooled variance) and large ones; ``relative_alphas=False`` uses
the alphas as given (then ``fwrf_cv`` with one candidate equals :func:`v4jax.ridge_cv` on the
pooled design).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from v4jax import _validation
from v4jax.metrics import SCORES, score_columns
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.result import grid_edge
from v4jax.solvers.engine.runner import DEFAULT_TARGET_BATCH, run_per_target
from v4jax.solvers.engine.sharding import replicated, voxel_mesh
from v4jax.solvers.fwrf_grid import (
    candidate_grid,
    channel_major,
    default_centres,
    default_sizes,
    gaussian_fields,
    pool_layers,
)

DEFAULT_RELATIVE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0)
DEFAULT_CANDIDATE_BATCH = 16
DEFAULT_PREDICT_BATCH = 256

__all__ = ["FwRFCVResult", "fwrf_cv", "pooled_designs"]


@dataclasses.dataclass(frozen=True)
class FwRFCVResult:
    """Result of :func:`fwrf_cv`, following :mod:`v4jax.solvers.engine.result`.

    G candidate fields, A alphas, T targets, C channels (all layers, concatenated in order).

    Attributes:
      grid: (G * A, 4) one row per (candidate, alpha) pair, candidate-major (row ``g * A + a``):
        field centre row, centre column, size (sigma), all in cells of the first map, then the
        alpha as given (relative to the candidate's mean Gram eigenvalue unless
        ``relative_alphas=False``).
      cv_scores: (G * A, T) held-out score averaged over folds, in the rows of ``grid``.
      best_index: (T,) each target's row of ``grid``.
      on_edge: (T,) True where the chosen alpha is the alpha grid's smallest or largest value.
      coef: (C, T) channel weights on the pooled design of each target's field (original units).
      intercept: (T,) intercepts.
      centres: (T, 2) chosen field centres (row, column) in cells of the first map.
      sizes: (T,) chosen field sizes (Gaussian sigma) in cells of the first map.
      best_alphas: (T,) the penalty each target's refit used (absolute).
      candidates: (G, 3) the candidate fields (row, column, size).
      alphas: (A,) the alpha grid as given. alpha_values: (G, A) the absolute penalties.
      layer_shapes: per layer (H, W, C) of the maps fitted on. score: the held-out score's name.
    """

    grid: np.ndarray
    cv_scores: jax.Array
    best_index: jax.Array
    on_edge: jax.Array
    coef: jax.Array
    intercept: jax.Array
    centres: np.ndarray
    sizes: np.ndarray
    best_alphas: jax.Array
    candidates: np.ndarray
    alphas: np.ndarray
    alpha_values: np.ndarray
    layer_shapes: tuple[tuple[int, int, int], ...]
    score: str

    @property
    def channel_weights(self) -> jax.Array:
        """(T, C) channel weights per target (``coef`` transposed)."""
        return self.coef.T

    def predict(self, maps: Any, *, target_batch_size: int = DEFAULT_PREDICT_BATCH) -> jax.Array:
        """(n, T) predictions for new maps of the same layers.

        Args:
          maps: one (n, H, W, C) array, a list of them (the fitted layers, in order), or the
            layers flattened and concatenated as (n, sum_l H_l W_l C_l) (the study's designs).
          target_batch_size: targets predicted together (bounds memory).
        """
        layers = _flattened_layers(maps, self.layer_shapes)
        target_batch_size = _validation.check_positive_int(target_batch_size, "target_batch_size")
        dtype = self.coef.dtype
        device_layers = [jnp.asarray(layer, dtype=dtype) for layer in layers]
        fields_of_target = jnp.asarray(np.column_stack([self.centres, self.sizes]), dtype=dtype)
        coef = jnp.asarray(self.coef)
        intercept = jnp.asarray(self.intercept)
        parts = []
        for start in range(0, coef.shape[1], target_batch_size):
            batch = slice(start, start + target_batch_size)
            parts.append(
                _predict_batch(
                    device_layers, self.layer_shapes, fields_of_target[batch], coef[:, batch]
                )
                + intercept[batch]
            )
        return jnp.concatenate(parts, axis=1)


def fwrf_cv(
    maps: Any,
    Y: Any,
    *,
    centres: Any = None,
    sizes: Any = None,
    alphas: Any = None,
    cv: Any = 5,
    score: str = "r2",
    relative_alphas: bool = True,
    candidate_batch_size: int = DEFAULT_CANDIDATE_BATCH,
    target_batch_size: int | None = DEFAULT_TARGET_BATCH,
    devices: Sequence[jax.Device] | None = None,
    dtype: Any = None,
) -> FwRFCVResult:
    """Feature-weighted receptive fields for every target, cross-validated per target.

    Args:
      maps: (N, H, W, C) feature maps, or a list of them (layers of different spatial sizes,
        pooled by the same field in visual-field coordinates, channels concatenated).
      Y: (N, T) or (N,) responses, no NaN.
      centres: (n_centres, 2) candidate centres (row, column) in cells of the first map;
        default every cell centre of the first map (13 x 13 = 169 for conv3).
      sizes: (n_sizes,) candidate Gaussian sigmas in cells of the first map; default 0.6, 1.2
        and 2.4 cells for a 13-cell map (scaled with the first map's side). Every centre is
        tried with every size (G = n_centres n_sizes; default 507 for 13 x 13).
      alphas: (A,) positive penalties; default 1e-2 .. 1e2, 5 values (relative, see
        ``relative_alphas``).
      cv: int (contiguous folds) or a list of (train, test) index pairs / a scikit-learn
        splitter whose training sets are the complements of their test sets.
      score: "r2", "pearson" or "neg_mean_squared_error", the held-out score that selects.
      relative_alphas: scale each candidate's alphas by the mean eigenvalue of its centred
        pooled Gram on all images (default), or use them as given.
      candidate_batch_size: candidates pooled and decomposed together (bounds memory: about
        ``candidate_batch_size * (A N C + K C² + A N T_batch)`` numbers).
      target_batch_size: targets per device batch (None: all of a device's at once).
      devices: devices to shard the targets over (None: all local devices).
      dtype: "float32" or "float64"; None: float64 when JAX's x64 mode is on and the inputs
        are float64, else float32.

    Returns:
      :class:`FwRFCVResult`.

    Example:
      >>> result = fwrf_cv(conv3_train, Y_train)  # (1750, 13, 13, 384), (1750, 1550)
      >>> result.centres.shape, result.predict(conv3_val).shape
      ((1550, 2), (120, 1550))
    """
    layers, layer_shapes = _check_maps(maps)
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    _validation.check_same_samples(layers[0], Y, ("maps", "Y"))
    _validation.check_choice(score, "score", SCORES)
    first = layer_shapes[0][:2]
    centres = default_centres(first) if centres is None else _check_centres(centres)
    sizes = default_sizes(first) if sizes is None else _check_sizes(sizes)
    alphas = _validation.check_alphas(DEFAULT_RELATIVE_ALPHAS if alphas is None else alphas)
    candidate_batch_size = _validation.check_positive_int(
        candidate_batch_size, "candidate_batch_size"
    )
    n_samples = Y.shape[0]
    tests = _partition_tests(cv, n_samples)
    dtype = _validation.resolve_dtype(dtype, *layers, Y)
    mesh = voxel_mesh(devices)
    home = mesh.devices.flat[0]
    candidates = candidate_grid(centres, sizes)
    n_candidates, n_alphas = candidates.shape[0], alphas.shape[0]
    batch = min(candidate_batch_size, n_candidates)

    device_layers = [
        channel_major(jax.device_put(jnp.asarray(layer, dtype=dtype), home)) for layer in layers
    ]
    alphas_device = jax.device_put(jnp.asarray(alphas, dtype=dtype), home)
    scores, grams, means, alpha_values = [], [], [], []
    best_score, best_products = None, None
    for start in range(0, n_candidates, batch):
        stop = min(start + batch, n_candidates)
        rows = np.r_[np.arange(start, stop), np.full(batch - (stop - start), stop - 1)]
        prepared = _prepare_candidates(
            device_layers,
            layer_shapes,
            jax.device_put(jnp.asarray(candidates[rows], dtype=dtype), home),
            alphas_device,
            tests,
            relative_alphas,
        )
        shared = jax.device_put(prepared.shared, replicated(mesh))
        batch_scores, products = run_per_target(
            _score_batch,
            shared,
            Y,
            mesh=mesh,
            dtype=dtype,
            out_ndims=(2, 2),
            settings=(tests, score),
            target_batch_size=target_batch_size,
        )
        batch_scores = batch_scores[: (stop - start) * n_alphas]
        local_best = jnp.max(batch_scores, axis=0)
        if best_score is None:
            best_score, best_products = local_best, products
        else:
            better = local_best > best_score
            best_score = jnp.where(better, local_best, best_score)
            best_products = jnp.where(better[None], products, best_products)
        scores.append(batch_scores)
        grams.append(np.asarray(prepared.grams[: stop - start]))
        means.append(prepared.means[: stop - start])
        alpha_values.append(prepared.alpha_values[: stop - start])

    cv_scores = jnp.concatenate(scores)
    best_index = jnp.argmax(cv_scores, axis=0)
    alpha_table = np.concatenate([np.asarray(part) for part in alpha_values])
    best_host = np.asarray(best_index)
    coef = _host_refit(
        np.concatenate([np.asarray(part) for part in grams]),
        alpha_table,
        np.asarray(best_products),
        best_host,
    )
    coef = jax.device_put(coef, home)
    chosen = candidates[best_host // n_alphas]
    means_table = np.concatenate([np.asarray(part) for part in means])
    y_mean = np.mean(np.asarray(Y, dtype=np.float64), axis=0).astype(dtype)
    intercept = y_mean - jnp.einsum("tc,ct->t", means_table[best_host // n_alphas], coef)
    return FwRFCVResult(
        grid=np.column_stack(
            [np.repeat(candidates, n_alphas, axis=0), np.tile(alphas, n_candidates)]
        ),
        cv_scores=cv_scores,
        best_index=best_index,
        on_edge=grid_edge(best_index % n_alphas, n_alphas),
        coef=coef,
        intercept=intercept,
        centres=chosen[:, :2],
        sizes=chosen[:, 2],
        best_alphas=jnp.asarray(alpha_table[best_host // n_alphas, best_host % n_alphas]),
        candidates=candidates,
        alphas=alphas,
        alpha_values=alpha_table,
        layer_shapes=layer_shapes,
        score=score,
    )


def pooled_designs(maps: Any, centres: Any, sizes: Any, *, dtype: Any = None) -> jax.Array:
    """(G, N, C) pooled designs of candidates (every centre x every size), layers concatenated.

    Args:
      maps: (N, H, W, C) feature maps or a list of them (as :func:`fwrf_cv`).
      centres: (n_centres, 2) (row, column) in cells of the first map.
      sizes: (n_sizes,) Gaussian sigmas in cells of the first map.
      dtype: compute dtype (default as :func:`fwrf_cv`).
    """
    layers, layer_shapes = _check_maps(maps)
    candidates = candidate_grid(_check_centres(centres), _check_sizes(sizes))
    dtype = _validation.resolve_dtype(dtype, *layers)
    device_layers = [channel_major(jnp.asarray(layer, dtype=dtype)) for layer in layers]
    return _pool(device_layers, layer_shapes, jnp.asarray(candidates, dtype=dtype))


# -- the candidate phase (target independent) ---------------------------------------------------


class _Prepared(NamedTuple):
    """One batch of candidates: what every target batch reads, and what the refit needs.

    shared: (designs (b, N, C) centred, per fold (V diag(1 / (lam + alpha)) (b, A, n_t, C), Qᵀ
    (b, C, C)), training means (K, b, C)). grams: (b, C, C) centred Grams on all images.
    means: (b, C) design means.
    alpha_values: (b, A) absolute penalties.
    """

    shared: tuple
    grams: jax.Array
    means: jax.Array
    alpha_values: jax.Array


@functools.partial(jax.jit, static_argnames="layer_shapes")
def _pool(layers, layer_shapes, candidates):
    return pool_layers(layers, layer_shapes, candidates)


def _prepare_candidates(
    layers: list[jax.Array],
    layer_shapes: tuple[tuple[int, int, int], ...],
    candidates: jax.Array,
    alphas: jax.Array,
    tests: tuple[tuple[int, ...], ...],
    relative: bool,
) -> _Prepared:
    """Pool, centre and decompose a batch of candidates for every fold and alpha.

    The fold Grams' eigendecompositions run in the host's LAPACK on a CPU device (jaxlib's
    batched CPU ``eigh`` took 30-700 ms per 384 x 384 matrix on the 2-core machine, LAPACK's
    ``syevd`` 13-22 ms), in the device's own ``eigh`` elsewhere.
    """
    designs, means, grams, alpha_values, train_means, train_grams = _fold_grams(
        layers, layer_shapes, candidates, alphas, tests, relative
    )
    if candidates.devices().pop().platform == "cpu":
        eigenvalues, eigenvectors = host_eigh(np.asarray(train_grams))
    else:
        eigenvalues, eigenvectors = jnp.linalg.eigh(train_grams)
    bases = _heldout_bases(
        designs, train_means, jnp.asarray(eigenvalues), jnp.asarray(eigenvectors), alpha_values,
        tests,
    )  # fmt: skip
    return _Prepared((designs, bases, train_means), grams, means, alpha_values)


@functools.partial(jax.jit, static_argnames=("layer_shapes", "tests", "relative"))
def _fold_grams(layers, layer_shapes, candidates, alphas, tests, relative):
    """Centred pooled designs (b, N, C), their means (b, C), Grams (b, C, C), absolute alphas
    (b, A), and per fold the training means (K, b, C) and centred training Grams (b, K, C, C)
    (downdates of the full Gram: ``S - X_tᵀ X_t - n_k m_k m_kᵀ``)."""
    designs = pool_layers(layers, layer_shapes, candidates)
    means = jnp.mean(designs, axis=1)
    designs = designs - means[:, None]
    n_samples, n_channels = designs.shape[1:]
    grams = jnp.einsum("bnc,bnd->bcd", designs, designs)
    scale = jnp.trace(grams, axis1=1, axis2=2) / n_channels if relative else jnp.ones(1)
    alpha_values = jnp.broadcast_to(scale[:, None] * alphas, (designs.shape[0], alphas.size))
    train_means, train_grams = [], []
    for test in tests:
        test_rows = designs[:, np.asarray(test)]
        n_train = n_samples - len(test)
        train_mean = -jnp.sum(test_rows, axis=1) / n_train
        train_grams.append(
            grams
            - jnp.einsum("bnc,bnd->bcd", test_rows, test_rows)
            - n_train * train_mean[:, :, None] * train_mean[:, None, :]
        )
        train_means.append(train_mean)
    return designs, means, grams, alpha_values, jnp.stack(train_means), jnp.stack(train_grams, 1)


@functools.partial(jax.jit, static_argnames="tests")
def _heldout_bases(designs, train_means, eigenvalues, eigenvectors, alpha_values, tests):
    """Per fold: the centred test rows in the eigenbasis scaled for every alpha,
    ``V diag(1 / (lam + alpha))`` with ``V = (X_t - m_k) Q`` (b, A, n_t, C), and ``Qᵀ`` (b, C, C):
    the held-out predictions are ``V diag(1 / (lam + alpha)) (Qᵀ B_k)``. (Materialised here: a
    scaling fused into the per-target product made XLA's CPU emit a slow loop, 4x slower.)"""
    bases = []
    for fold, test in enumerate(tests):
        vectors = eigenvectors[:, fold]
        projected = (designs[:, np.asarray(test)] - train_means[fold][:, None]) @ vectors
        factors = 1.0 / (jnp.maximum(eigenvalues[:, fold], 0.0)[:, None] + alpha_values[..., None])
        bases.append((projected[:, None] * factors[:, :, None, :], jnp.swapaxes(vectors, 1, 2)))
    return tuple(bases)


def host_eigh(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (..., C) and eigenvectors (..., C, C) of symmetric matrices, LAPACK ``syevd``.

    One matrix per thread, each with a single BLAS thread (``syevd`` on a 384 x 384 matrix ran
    3x slower with two BLAS threads than with one on the 2-core machine).
    """
    routine = lapack.dsyevd if matrices.dtype == np.float64 else lapack.ssyevd
    flat = matrices.reshape(-1, *matrices.shape[-2:])

    def decompose(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eigenvalues, eigenvectors, info = routine(matrix, compute_v=1, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"LAPACK syevd failed to converge (info={info}).")
        return eigenvalues, eigenvectors

    with threadpool_limits(1), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(decompose, flat))
    eigenvalues = np.stack([values for values, _ in results])
    eigenvectors = np.stack([vectors for _, vectors in results])
    return (
        eigenvalues.reshape(matrices.shape[:-1]),
        eigenvectors.reshape(matrices.shape),
    )


def _host_refit(
    grams: np.ndarray, alpha_table: np.ndarray, products: np.ndarray, best_index: np.ndarray
) -> np.ndarray:
    """(C, T) coefficients ``(S_g + alpha I)⁻¹ X_gᵀ y_c`` at each target's (candidate, alpha).

    One Cholesky factorisation per distinct pair chosen, in the host's LAPACK, its targets
    solved together.
    """
    n_alphas = alpha_table.shape[1]
    pairs, inverse = np.unique(best_index, return_inverse=True)
    coef = np.empty_like(products)
    identity = np.eye(grams.shape[-1], dtype=grams.dtype)

    def solve(number: int) -> None:
        candidate, alpha = divmod(int(pairs[number]), n_alphas)
        columns = np.flatnonzero(inverse == number)
        system = grams[candidate] + alpha_table[candidate, alpha] * identity
        factor = scipy.linalg.cho_factor(system, lower=True, check_finite=False)
        coef[:, columns] = scipy.linalg.cho_solve(factor, products[:, columns], check_finite=False)

    with threadpool_limits(1), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(solve, range(pairs.size)))
    return coef


# -- the per-target phase -----------------------------------------------------------------------


def _score_batch(shared, Y, tests, score):
    """Held-out scores (b A, T) of every candidate and alpha, and ``X_gᵀ Y_c`` (C, T) of each
    target's best candidate in the batch."""
    designs, bases, train_means = shared
    n_candidates, n_samples, _ = designs.shape
    n_alphas = bases[0][0].shape[1]
    centred = Y - jnp.mean(Y, axis=0)
    parts = [
        jnp.einsum("bnc,nt->bct", designs[:, np.asarray(test)], centred[np.asarray(test)])
        for test in tests
    ]
    products = functools.reduce(jnp.add, parts)
    total = 0.0
    for test, basis, train_mean, part in zip(tests, bases, train_means, parts, strict=True):
        scaled, transposed_vectors = basis
        rows = np.asarray(test)
        n_train = n_samples - rows.size
        y_train_mean = -jnp.sum(centred[rows], axis=0) / n_train
        train_products = products - part - n_train * train_mean[:, :, None] * y_train_mean
        coordinates = transposed_vectors @ train_products
        predictions = jnp.einsum("banj,bjt->bant", scaled, coordinates) + y_train_mean
        total = total + score_columns(centred[rows], predictions, score)
    scores = (total / len(tests)).reshape(n_candidates * n_alphas, -1)
    best_candidate = jnp.argmax(scores, axis=0) // n_alphas
    best_products = jnp.take_along_axis(products, best_candidate[None, None], axis=0)[0]
    return scores, best_products


@functools.partial(jax.jit, static_argnames="layer_shapes")
def _predict_batch(layers, layer_shapes, fields_of_target, coef):
    """(n, t) ``sum_hw field_t(hw) sum_c maps[n, hw, c] coef[c, t]`` over the layers."""
    first = layer_shapes[0][:2]
    total, offset = 0.0, 0
    for layer, (height, width, n_channels) in zip(layers, layer_shapes, strict=True):
        fields = gaussian_fields(fields_of_target, (height, width), first)
        mixed = layer.reshape(-1, n_channels) @ coef[offset : offset + n_channels]
        mixed = mixed.reshape(layer.shape[0], height * width, -1)
        total = total + jnp.einsum("nkt,kt->nt", mixed, fields)
        offset += n_channels
    return total


# -- checks --------------------------------------------------------------------------------------


def _check_maps(maps: Any) -> tuple[list[Any], tuple[tuple[int, int, int], ...]]:
    layers = list(maps) if isinstance(maps, (list, tuple)) else [maps]
    if not layers:
        raise ValueError("maps is an empty list; pass (N, H, W, C) feature maps.")
    checked = []
    for index, layer in enumerate(layers):
        name = "maps" if len(layers) == 1 else f"maps[{index}]"
        if not isinstance(layer, (np.ndarray, jax.Array)):
            layer = np.asarray(layer)
        _validation.check_numeric_dtype(layer, name)
        if layer.ndim != 4 or min(layer.shape) == 0:
            raise ValueError(
                f"{name} must be non-empty feature maps (N, H, W, C), got shape "
                f"{tuple(layer.shape)}; for a (N, C, H, W) layout transpose with (0, 2, 3, 1)."
            )
        _validation.check_all_finite(layer, name)
        if layer.shape[0] != layers[0].shape[0]:
            raise ValueError(
                f"{name} has {layer.shape[0]} images but maps[0] has {layers[0].shape[0]}; "
                "every layer needs one map per stimulus, in the same order."
            )
        checked.append(layer)
    return checked, tuple(tuple(int(d) for d in layer.shape[1:]) for layer in checked)


def _flattened_layers(maps: Any, layer_shapes: tuple[tuple[int, int, int], ...]) -> list[Any]:
    """The layers as (n, H, W, C) arrays from any of the forms ``predict`` accepts."""
    sizes = [int(np.prod(shape)) for shape in layer_shapes]
    if not isinstance(maps, (list, tuple)) and np.ndim(maps) == 2:
        if maps.shape[1] != sum(sizes):
            raise ValueError(
                f"flattened maps have {maps.shape[1]} columns but the fitted layers "
                f"{list(layer_shapes)} have {sum(sizes)}; pass the same layers."
            )
        bounds = np.cumsum([0, *sizes])
        maps = [
            maps[:, bounds[i] : bounds[i + 1]].reshape(-1, *shape)
            for i, shape in enumerate(layer_shapes)
        ]
    layers, shapes = _check_maps(maps)
    if shapes != layer_shapes:
        raise ValueError(
            f"maps have layer shapes {list(shapes)} but the fwRF was fitted on "
            f"{list(layer_shapes)} (H, W, C); pass the same layers, in the same order."
        )
    return layers


def _check_centres(centres: Any) -> np.ndarray:
    values = np.asarray(centres, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != 2 or values.shape[0] == 0:
        raise ValueError(
            f"centres must be (n_centres, 2) (row, column) in cells, got shape {values.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("centres contain NaN or inf; give finite (row, column) cells.")
    return values


def _check_sizes(sizes: Any) -> np.ndarray:
    values = np.atleast_1d(np.asarray(sizes, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"sizes must be positive Gaussian sigmas in cells, got {sizes!r}.")
    return values


def _partition_tests(cv: Any, n_samples: int) -> tuple[tuple[int, ...], ...]:
    """The folds' test rows, checking each training set is the complement of its test set."""
    if isinstance(cv, str):
        raise ValueError(
            f"cv={cv!r} is not supported by fwrf_cv; use an int (K folds) or (train, test) pairs."
        )
    folds = make_folds(cv, n_samples)
    everything = np.arange(n_samples)
    for number, (train, test) in enumerate(folds):
        if not np.array_equal(np.sort(np.concatenate([train, test])), everything):
            raise ValueError(
                f"fold {number}'s training set is not the complement of its test set; fwrf_cv "
                "derives each fold from the full-data products, so every fold must train on "
                "all the other samples (KFold, GroupKFold, leave-one-run-out)."
            )
    return tuple(tuple(int(i) for i in test) for _, test in folds)
