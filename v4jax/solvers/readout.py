"""Factorised spatial x feature read-out of a conv feature map, fitted for all voxels at once.

Each voxel v has a spatial map ``s_v`` over the feature map's cells (H x W), channel weights
``w_v`` (C) and a bias ``b_v``; its prediction for image n is

    y[n, v] = sum_{h, w} s_v[h, w] sum_c F[n, h, w, c] w_v[c] + b_v,

with H * W + C + 1 parameters per voxel instead of H * W * C. The spatial map is either a
Gaussian receptive field (``spatial="gaussian"``: centre and log-size, the map normalised to
sum 1 as a softmax over cells) or a free map (``spatial="free"``) penalised by its squared L2
norm and the graph-Laplacian smoothness ``sᵀ L s`` (sum of squared differences between
neighbouring cells). Channel weights carry an L2 penalty.

Fitting (:func:`fit_readout`):

1. A held-out split (``heldout_fraction`` of the images, drawn with ``key``) is set aside;
   channels are standardised and responses z-scored on the training split.
2. Initialisation (``init``): by default (``"fwrf"``) from :func:`v4jax.fwrf_cv` on the training
   split, the closed-form feature-weighted receptive field with its default grid (every cell
   centre x 3 sizes x 5 alphas, 5-fold): each voxel starts from its field, channel weights
   and intercept, and (for Gaussian maps without a ``penalties`` grid) keeps its own weight
   penalty ``alpha / n_train``, so Adam only refines the fwRF optimum. ``"grid"`` is the
   former coarse grid search: for Gaussian sizes ``init_sizes`` and centres on a grid of
   cells, ridge (three penalties) on the pooled map, chosen by held-out correlation.
3. Every combination of the penalty grids is trained for every voxel at once (a voxel x penalty
   pair is one independent problem) with full-batch Adam (optax) on the training split; the
   held-out error is checked every ``eval_every`` steps, each pair keeps its best parameters,
   and training stops when no pair improved for ``patience`` checks (early stopping).
4. Each voxel keeps the penalties with the lowest held-out error (selection on the held-out
   split), and the parameters are mapped back to the original feature and response units.

Voxels are processed in batches (``voxel_batch_size``) to bound memory; the loss is a sum of
per-voxel terms and Adam is elementwise, so a voxel's fit does not depend on the others. The
whole fit is a deterministic function of the inputs and ``key``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from v4jax import _validation
from v4jax.metrics import pearson_columns

SPATIAL_MODELS = ("gaussian", "free")
DEFAULT_PENALTIES = {
    "gaussian": {"weight": (1e-3, 1e-2, 1e-1)},
    "free": {"weight": (1e-2,), "map": (1e-3,), "smoothness": (1e-3, 1e-2, 1e-1)},
}
INIT_RIDGE_PENALTIES = (1e-2, 1e-1, 1.0)
INITS = ("fwrf", "grid")
# Adam steps at most: from the grid search, and from fwRF's closed-form optimum (refining only).
MAX_STEPS = {"grid": 600, "fwrf": 80}
MIN_LOG_SIZE = float(np.log(0.2))
Params = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class ReadoutResult:
    """A fitted factorised read-out (V voxels, feature map H x W x C).

    Attributes:
      spatial_maps: (V, H, W) spatial maps ``s_v`` (Gaussian maps sum to 1).
      rf_centres: (V, 2) receptive-field centre (row, column) in feature-map cells: the
        Gaussian's centre, or a free map's centre of mass of ``|s_v|``.
      rf_sizes: (V,) Gaussian sigma in cells (free maps: the same from the second moment).
      channel_weights: (V, C) channel weights in the units of the input features.
      bias: (V,) bias in the units of the responses.
      spatial: "gaussian" or "free".
      penalties: name -> (V,) the penalties chosen for each voxel.
      penalty_grid: name -> the grid each penalty was chosen from (with fwRF's per-voxel
        weight penalties: their distinct values).
      heldout_r: (V,) Pearson r of the chosen model on the held-out split.
      best_step: (V,) Adam step of the chosen parameters (0: the grid-search initialisation).
      init_centres: (V, 2) centres from the grid search. init_sizes: (V,) their sizes.
      init_r: (V,) held-out r of the grid-search initialisation.
      train_index, heldout_index: the images (rows of the inputs) of the two splits.
      history: one dict per voxel batch with ``step``, ``train_loss`` and ``heldout_mse``
        (means over the batch's voxel x penalty pairs, z-scored units) at every check.
    """

    spatial_maps: np.ndarray
    rf_centres: np.ndarray
    rf_sizes: np.ndarray
    channel_weights: np.ndarray
    bias: np.ndarray
    spatial: str
    penalties: dict[str, np.ndarray]
    penalty_grid: dict[str, tuple[float, ...]]
    heldout_r: np.ndarray
    best_step: np.ndarray
    init_centres: np.ndarray
    init_sizes: np.ndarray
    init_r: np.ndarray
    train_index: np.ndarray
    heldout_index: np.ndarray
    history: tuple[dict[str, np.ndarray], ...]


# -- the model -----------------------------------------------------------------------------------


def gaussian_maps(
    centres: jax.Array, log_sizes: jax.Array, map_shape: tuple[int, int]
) -> jax.Array:
    """Isotropic Gaussian maps normalised to sum 1 (a softmax over cells, stable for any size).

    Args:
      centres: (V, 2) (row, column) in cells. log_sizes: (V,) log of sigma in cells.
      map_shape: (H, W).

    Returns:
      (V, H * W) maps, cells in row-major order.
    """
    rows = jnp.arange(map_shape[0], dtype=centres.dtype)
    columns = jnp.arange(map_shape[1], dtype=centres.dtype)
    squared = (rows[None, :, None] - centres[:, 0, None, None]) ** 2 + (
        columns[None, None, :] - centres[:, 1, None, None]
    ) ** 2
    logits = -squared.reshape(centres.shape[0], -1) / (2 * jnp.exp(2 * log_sizes))[:, None]
    return jax.nn.softmax(logits, axis=1)


def spatial_maps(params: Params, map_shape: tuple[int, int]) -> jax.Array:
    """(V, H * W) spatial maps of either parametrisation (``"centre"`` or ``"map"`` params)."""
    if "map" in params:
        return params["map"].reshape(params["map"].shape[0], -1)
    log_sizes = jnp.maximum(params["log_size"], MIN_LOG_SIZE)
    return gaussian_maps(params["centre"], log_sizes, map_shape)


def readout_predict(params: Params, features: jax.Array, map_shape: tuple[int, int]) -> jax.Array:
    """(N, V) predictions of a batch of voxels from (N, H * W, C) features.

    The smaller of the two feature axes is kept in the intermediate: with fewer channels than
    cells the cells are pooled first ((N, C, V)), otherwise the channels are mixed first
    ((N, H * W, V)). Both cost N * H * W * C * V multiply-adds.
    """
    n_images, n_cells, n_channels = features.shape
    maps = spatial_maps(params, map_shape)
    if n_channels < n_cells:
        pooled = jnp.einsum("nkc,vk->ncv", features, maps)
        return jnp.einsum("ncv,vc->nv", pooled, params["weights"]) + params["bias"]
    mixed = features.reshape(-1, n_channels) @ params["weights"].T
    return jnp.einsum("nkv,vk->nv", mixed.reshape(n_images, n_cells, -1), maps) + params["bias"]


def readout_loss(
    params: Params,
    features: jax.Array,
    Y: jax.Array,
    penalties: dict[str, jax.Array],
    map_shape: tuple[int, int],
) -> jax.Array:
    """Per-voxel training objective: mean squared error plus penalties.

    Args:
      params: ``weights`` (V, C), ``bias`` (V,), and either ``centre`` (V, 2) and ``log_size``
        (V,) (Gaussian) or ``map`` (V, H, W) (free).
      features: (N, H * W, C). Y: (N, V).
      penalties: ``weight`` (V,), and for free maps ``map`` (V,) and ``smoothness`` (V,).
      map_shape: (H, W).

    Returns:
      (V,) ``mean_n (Y - pred)² + weight ||w||² [+ map ||s||² + smoothness sᵀ L s]``.
    """
    residual = Y - readout_predict(params, features, map_shape)
    loss = jnp.mean(residual**2, axis=0) + penalties["weight"] * jnp.sum(params["weights"] ** 2, 1)
    if "map" in params:
        maps = params["map"]
        edges = jnp.sum(jnp.diff(maps, axis=1) ** 2, axis=(1, 2)) + jnp.sum(
            jnp.diff(maps, axis=2) ** 2, axis=(1, 2)
        )
        loss = loss + penalties["map"] * jnp.sum(maps**2, axis=(1, 2))
        loss = loss + penalties["smoothness"] * edges
    return loss


# -- public entry points ------------------------------------------------------------------------


def fit_readout(
    features: Any,
    Y: Any,
    *,
    key: Any,
    spatial: str = "gaussian",
    init: str = "fwrf",
    penalties: dict[str, Sequence[float]] | None = None,
    heldout_fraction: float = 0.15,
    learning_rate: float = 0.03,
    max_steps: int | None = None,
    eval_every: int = 10,
    patience: int = 5,
    init_sizes: Sequence[float] | None = None,
    init_stride: int | None = None,
    voxel_batch_size: int = 64,
    progress: bool | None = None,
) -> ReadoutResult:
    """Fit the factorised read-out for every voxel (see the module docstring for the method).

    Args:
      features: (N, H, W, C) feature maps, one per image (numpy or JAX).
      Y: (N, V) responses (or (N,)); no NaN (drop or impute such voxels first).
      key: ``jax.random.key`` that draws the held-out split (the only randomness).
      spatial: "gaussian" (centre + log-size) or "free" (a map per voxel).
      init: "fwrf" (start from :func:`v4jax.fwrf_cv` on the training split) or "grid" (the
        coarse grid search; see the module docstring).
      penalties: grids per penalty name (``weight``; free maps also ``map`` and
        ``smoothness``); every combination is tried per voxel. Default: for Gaussian maps
        started from fwRF, each voxel's own fwRF penalty (``alpha / n_train``, one per voxel);
        otherwise ``DEFAULT_PENALTIES``.
      heldout_fraction: fraction of images held out for early stopping and penalty choice.
      learning_rate: Adam step size (parameters are in cells and z-scored units).
      max_steps: most Adam steps (default ``MAX_STEPS[init]``: 80 from fwRF, 600 from the
        grid). eval_every: steps between held-out checks.
      patience: checks without improvement of any voxel before stopping.
      init_sizes: Gaussian sigmas (cells) of the initial grid search; default 4 values
        log-spaced from 0.5 to max(H, W) / 4.
      init_stride: spacing (cells) of the grid of initial centres; default ceil(max(H, W) / 8).
      voxel_batch_size: voxels fitted together (each with every penalty combination).
      progress: show a progress bar over voxel batches (default: more than one batch).

    Returns:
      :class:`ReadoutResult` (numpy arrays; float32, or float64 when JAX x64 is on and the
      inputs are float64).

    Example:
      >>> result = fit_readout(conv3, Y, key=jax.random.key(0))
      >>> predict_readout(result, conv3_val).shape
      (n_val, n_voxels)
    """
    features = _check_features(features, "features")
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    _validation.check_same_samples(features, Y, ("features", "Y"))
    _validation.check_choice(spatial, "spatial", SPATIAL_MODELS)
    _validation.check_choice(init, "init", INITS)
    key = _check_key(key)
    per_voxel_penalty = init == "fwrf" and spatial == "gaussian" and penalties is None
    grid = _penalty_grid(spatial, penalties)
    _check_fraction(heldout_fraction)
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
    max_steps = _validation.check_positive_int(
        MAX_STEPS[init] if max_steps is None else max_steps, "max_steps"
    )
    eval_every = _validation.check_positive_int(eval_every, "eval_every")
    patience = _validation.check_positive_int(patience, "patience")
    voxel_batch_size = _validation.check_positive_int(voxel_batch_size, "voxel_batch_size")
    n_images, height, width, n_channels = features.shape
    map_shape = (height, width)
    sizes = _init_sizes(init_sizes, map_shape)
    stride = (
        int(np.ceil(max(map_shape) / 8))
        if init_stride is None
        else _validation.check_positive_int(init_stride, "init_stride")
    )
    dtype = _validation.compute_dtype(features, Y)

    train_index, heldout_index = _split(key, n_images, heldout_fraction)
    F = jnp.asarray(features, dtype=dtype).reshape(n_images, height * width, n_channels)
    channel_mean = jnp.mean(F[train_index], axis=(0, 1))
    channel_std = jnp.std(F[train_index], axis=(0, 1))
    channel_std = jnp.where(channel_std > 0, channel_std, 1.0)
    F = (F - channel_mean) / channel_std
    Y = jnp.asarray(Y, dtype=dtype)
    y_mean = jnp.mean(Y[train_index], axis=0)
    y_std = jnp.std(Y[train_index], axis=0)
    y_std = jnp.where(y_std > 0, y_std, 1.0)
    Z = (Y - y_mean) / y_std
    F_train, F_held = F[train_index], F[heldout_index]
    Z_train, Z_held = Z[train_index], Z[heldout_index]

    if init == "fwrf":
        initial = _fwrf_init(F_train, F_held, Z_train, Z_held, map_shape)
        if per_voxel_penalty:
            grid = {"weight": tuple(float(v) for v in np.unique(initial.penalty))}
    else:
        initial = _grid_search_init(F_train, F_held, Z_train, Z_held, map_shape, sizes, stride)
    combos = list(itertools.product(*grid.values()))
    n_combos = 1 if per_voxel_penalty else len(combos)
    combo_values = jnp.asarray(np.array(combos, dtype=np.float64).T, dtype=dtype)

    n_voxels = Y.shape[1]
    starts = range(0, n_voxels, voxel_batch_size)
    show = progress if progress is not None else len(starts) > 1
    chosen_parts: list[Params] = []
    chosen_combo, heldout_mse, best_step, history = [], [], [], []
    for start in tqdm(starts, desc="readout voxel batches", disable=not show):
        voxels = np.arange(start, min(start + voxel_batch_size, n_voxels))
        # Pair p = combo * n_batch + voxel: each voxel repeated once per penalty combination.
        if per_voxel_penalty:
            pairs = voxels
            pair_penalties = {"weight": jnp.asarray(initial.penalty[voxels], dtype=dtype)}
        else:
            pairs = np.tile(voxels, n_combos)
            pair_penalties = {
                name: jnp.repeat(combo_values[i], voxels.size) for i, name in enumerate(grid)
            }
        params = _initial_params(initial, pairs, spatial, map_shape)
        fitted = _train(
            params, float(learning_rate), pair_penalties, F_train, Z_train[:, pairs], F_held,
            Z_held[:, pairs], map_shape, max_steps, eval_every, patience,
        )  # fmt: skip
        errors = fitted.heldout_mse.reshape(n_combos, voxels.size)
        best = jnp.argmin(errors, axis=0)
        rows = best * voxels.size + jnp.arange(voxels.size)
        chosen_parts.append(jax.tree.map(lambda leaf, rows=rows: leaf[rows], fitted.params))
        chosen_combo.append(best)
        heldout_mse.append(errors[best, jnp.arange(voxels.size)])
        best_step.append(fitted.best_step[rows])
        history.append(fitted.history)

    chosen = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *chosen_parts)
    chosen_combo = np.asarray(jnp.concatenate(chosen_combo))
    if per_voxel_penalty:
        chosen_penalties = {"weight": np.asarray(initial.penalty, dtype=np.float64)}
    else:
        chosen_penalties = {
            name: np.asarray(np.array(combos)[chosen_combo, i], dtype=np.float64)
            for i, name in enumerate(grid)
        }
    maps = spatial_maps(chosen, map_shape)
    heldout_pred = readout_predict(chosen, F_held, map_shape)
    heldout_r = pearson_columns(Z_held, heldout_pred)
    weights = chosen["weights"] / channel_std * y_std[:, None]
    offset = jnp.einsum("vk,vc,c->v", maps, chosen["weights"], channel_mean / channel_std)
    bias = y_mean + y_std * (chosen["bias"] - offset)
    centres, rf_sizes = _map_geometry(chosen, maps, map_shape)
    return ReadoutResult(
        spatial_maps=np.asarray(maps).reshape(n_voxels, height, width),
        rf_centres=centres,
        rf_sizes=rf_sizes,
        channel_weights=np.asarray(weights),
        bias=np.asarray(bias),
        spatial=spatial,
        penalties=chosen_penalties,
        penalty_grid={name: tuple(values) for name, values in grid.items()},
        heldout_r=np.asarray(heldout_r),
        best_step=np.asarray(jnp.concatenate(best_step)),
        init_centres=np.asarray(initial.centres),
        init_sizes=np.asarray(initial.sizes),
        init_r=np.asarray(initial.r),
        train_index=np.asarray(train_index),
        heldout_index=np.asarray(heldout_index),
        history=tuple(history),
    )


def predict_readout(
    result: ReadoutResult, features: Any, *, voxel_batch_size: int = 256
) -> jax.Array:
    """Predictions of a fitted read-out.

    Args:
      result: from :func:`fit_readout`.
      features: (N, H, W, C) feature maps of the same layer as the fit.
      voxel_batch_size: voxels predicted together (bounds memory).

    Returns:
      (N, V) predicted responses.
    """
    features = _check_features(features, "features")
    expected = (*result.spatial_maps.shape[1:], result.channel_weights.shape[1])
    if tuple(features.shape[1:]) != expected:
        raise ValueError(
            f"features have maps of shape {tuple(features.shape[1:])} but the read-out was "
            f"fitted on {expected} (H, W, C); pass features of the same layer and size."
        )
    voxel_batch_size = _validation.check_positive_int(voxel_batch_size, "voxel_batch_size")
    dtype = _validation.compute_dtype(features, result.channel_weights)
    n_images = features.shape[0]
    F = jnp.asarray(features, dtype=dtype).reshape(n_images, -1, expected[2])
    n_voxels = result.bias.shape[0]
    parts = []
    for start in range(0, n_voxels, voxel_batch_size):
        batch = slice(start, start + voxel_batch_size)
        params = {
            "map": jnp.asarray(result.spatial_maps[batch], dtype=dtype),
            "weights": jnp.asarray(result.channel_weights[batch], dtype=dtype),
            "bias": jnp.asarray(result.bias[batch], dtype=dtype),
        }
        parts.append(_predict_jit(params, F, expected[:2]))
    return jnp.concatenate(parts, axis=1)


class FactorisedReadout:
    """Estimator-style wrapper: ``fit(features, Y)`` then ``predict(features)``.

    Keyword arguments are those of :func:`fit_readout` (``seed`` gives the key); the fitted
    :class:`ReadoutResult` is ``result_``.
    """

    def __init__(self, *, seed: int = 0, **fit_options: Any) -> None:
        self.seed = seed
        self.fit_options = fit_options

    def fit(self, features: Any, Y: Any) -> FactorisedReadout:
        """Fit on (N, H, W, C) features and (N, V) responses; returns self."""
        self.result_ = fit_readout(features, Y, key=jax.random.key(self.seed), **self.fit_options)
        return self

    def predict(self, features: Any) -> np.ndarray:
        """(N, V) predictions for (N, H, W, C) features."""
        if not hasattr(self, "result_"):
            raise ValueError("this FactorisedReadout is not fitted yet; call fit first.")
        return np.asarray(predict_readout(self.result_, features))


# -- initialisation by grid search ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Init:
    centres: jax.Array
    sizes: jax.Array
    weights: jax.Array
    bias: jax.Array
    r: jax.Array
    penalty: np.ndarray | None = None


def _fwrf_init(
    F_train: jax.Array,
    F_held: jax.Array,
    Z_train: jax.Array,
    Z_held: jax.Array,
    map_shape: tuple[int, int],
) -> _Init:
    """Each voxel's fwRF optimum on the training split (its default grid, 5-fold), with its
    weight penalty in the read-out's units (``alpha / n_train``: the loss is a mean)."""
    from v4jax.solvers.fwrf import fwrf_cv

    n_train, _, n_channels = F_train.shape
    maps = F_train.reshape(n_train, *map_shape, n_channels)
    result = fwrf_cv(maps, Z_train, cv=5)
    dtype = F_train.dtype
    centres = jnp.asarray(result.centres, dtype=dtype)
    sizes = jnp.asarray(result.sizes, dtype=dtype)
    weights = jnp.asarray(np.asarray(result.coef).T, dtype=dtype)
    bias = jnp.asarray(np.asarray(result.intercept), dtype=dtype)
    params = {"centre": centres, "log_size": jnp.log(sizes), "weights": weights, "bias": bias}
    r = pearson_columns(Z_held, _predict_jit(params, F_held, map_shape))
    penalty = np.asarray(result.best_alphas, dtype=np.float64) / n_train
    return _Init(centres, sizes, weights, bias, r, penalty)


def _grid_search_init(
    F_train: jax.Array,
    F_held: jax.Array,
    Z_train: jax.Array,
    Z_held: jax.Array,
    map_shape: tuple[int, int],
    sizes: np.ndarray,
    stride: int,
) -> _Init:
    """Best (centre, size, ridge weights) per voxel over a grid, by held-out correlation."""
    dtype = F_train.dtype
    rows = np.arange((map_shape[0] - 1) % stride // 2, map_shape[0], stride)
    columns = np.arange((map_shape[1] - 1) % stride // 2, map_shape[1], stride)
    grid_centres = np.stack(np.meshgrid(rows, columns, indexing="ij"), -1).reshape(-1, 2)
    n_voxels = Z_train.shape[1]
    n_channels = F_train.shape[2]
    best_r = jnp.full(n_voxels, -jnp.inf, dtype=dtype)
    best_weights = jnp.zeros((n_voxels, n_channels), dtype=dtype)
    best_bias = jnp.zeros(n_voxels, dtype=dtype)
    best_centre = jnp.zeros((n_voxels, 2), dtype=dtype)
    best_size = jnp.zeros(n_voxels, dtype=dtype)
    centres = jnp.asarray(grid_centres, dtype=dtype)
    ridge_penalties = jnp.asarray(INIT_RIDGE_PENALTIES, dtype=dtype)
    for size in sizes:
        log_sizes = jnp.full(len(grid_centres), np.log(size), dtype=dtype)
        pooling = gaussian_maps(centres, log_sizes, map_shape)
        r, weights, bias, index = _pooled_ridge(
            pooling, F_train, F_held, Z_train, Z_held, ridge_penalties
        )
        better = r > best_r
        best_r = jnp.where(better, r, best_r)
        best_weights = jnp.where(better[:, None], weights, best_weights)
        best_bias = jnp.where(better, bias, best_bias)
        best_centre = jnp.where(better[:, None], centres[index], best_centre)
        best_size = jnp.where(better, jnp.asarray(size, dtype=dtype), best_size)
    return _Init(best_centre, best_size, best_weights, best_bias, best_r)


@jax.jit
def _pooled_ridge(
    pooling: jax.Array,
    F_train: jax.Array,
    F_held: jax.Array,
    Z_train: jax.Array,
    Z_held: jax.Array,
    ridge_penalties: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Ridge on Gaussian-pooled features at every grid centre, every voxel.

    ``pooling`` is (J, H * W). For each centre j the design is the pooled (N, C) features;
    ridge penalties are relative to the mean eigenvalue of its Gram matrix. Returns each
    voxel's best held-out r (V,), its weights (V, C), bias (V,) and the centre index (V,).
    """

    def one_centre(row: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        X = jnp.einsum("k,nkc->nc", row, F_train)
        X_held = jnp.einsum("k,nkc->nc", row, F_held)
        mean = jnp.mean(X, axis=0)
        X = X - mean
        eigenvalues, eigenvectors = jnp.linalg.eigh(X.T @ X)
        eigenvalues = jnp.maximum(eigenvalues, 0.0)
        alphas = ridge_penalties * jnp.mean(eigenvalues)
        projected = eigenvectors.T @ (X.T @ Z_train)
        factors = 1.0 / (eigenvalues[None, :] + alphas[:, None])
        weights = jnp.einsum("ck,ak,kv->avc", eigenvectors, factors, projected)
        predictions = jnp.einsum("nc,avc->anv", X_held - mean, weights)
        r = pearson_columns(Z_held, predictions)
        best = jnp.argmax(r, axis=0)
        voxels = jnp.arange(r.shape[1])
        chosen = weights[best, voxels]
        return r[best, voxels], chosen, -(chosen @ mean)

    r, weights, bias = jax.lax.map(one_centre, pooling)
    index = jnp.argmax(r, axis=0)
    voxels = jnp.arange(r.shape[1])
    return r[index, voxels], weights[index, voxels], bias[index, voxels], index


def _initial_params(
    init: _Init, pairs: np.ndarray, spatial: str, map_shape: tuple[int, int]
) -> Params:
    """Parameters of every (voxel, penalty) pair, started from the grid-search optimum."""
    params = {"weights": init.weights[pairs], "bias": init.bias[pairs]}
    log_sizes = jnp.log(init.sizes[pairs])
    if spatial == "gaussian":
        params["centre"] = init.centres[pairs]
        params["log_size"] = log_sizes
    else:
        maps = gaussian_maps(init.centres[pairs], log_sizes, map_shape)
        params["map"] = maps.reshape(len(pairs), *map_shape)
    return params


# -- training -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Fitted:
    params: Params
    heldout_mse: jax.Array
    best_step: jax.Array
    history: dict[str, np.ndarray]


def _train(
    params: Params,
    learning_rate: float,
    penalties: dict[str, jax.Array],
    F_train: jax.Array,
    Z_train: jax.Array,
    F_held: jax.Array,
    Z_held: jax.Array,
    map_shape: tuple[int, int],
    max_steps: int,
    eval_every: int,
    patience: int,
) -> _Fitted:
    """Adam with per-pair early stopping on the held-out mean squared error."""
    state = optax.adam(learning_rate).init(params)
    best_params = params
    best_mse = _heldout_mse(params, F_held, Z_held, map_shape)
    best_step = jnp.zeros(best_mse.shape, dtype=jnp.int32)
    stale = 0
    steps, train_losses, heldout_means = [0], [np.nan], [float(jnp.mean(best_mse))]
    step = 0
    while step < max_steps and stale < patience:
        n_steps = min(eval_every, max_steps - step)
        params, state, train_loss = _adam_steps(
            params, state, learning_rate, penalties, F_train, Z_train, map_shape, n_steps
        )
        step += n_steps
        mse = _heldout_mse(params, F_held, Z_held, map_shape)
        improved = mse < best_mse
        best_params = _keep_improved(improved, params, best_params)
        best_mse = jnp.where(improved, mse, best_mse)
        best_step = jnp.where(improved, step, best_step)
        stale = 0 if bool(jnp.any(improved)) else stale + 1
        steps.append(step)
        train_losses.append(float(train_loss))
        heldout_means.append(float(jnp.mean(mse)))
    history = {
        "step": np.asarray(steps),
        "train_loss": np.asarray(train_losses),
        "heldout_mse": np.asarray(heldout_means),
    }
    return _Fitted(best_params, best_mse, best_step, history)


@functools.partial(jax.jit, static_argnames=("learning_rate", "map_shape", "n_steps"))
def _adam_steps(
    params: Params,
    state: optax.OptState,
    learning_rate: float,
    penalties: dict[str, jax.Array],
    features: jax.Array,
    Z: jax.Array,
    map_shape: tuple[int, int],
    n_steps: int,
) -> tuple[Params, optax.OptState, jax.Array]:
    """``n_steps`` full-batch Adam steps; returns the mean per-pair loss of the last one."""
    optimizer = optax.adam(learning_rate)

    def total_loss(current: Params) -> jax.Array:
        return jnp.sum(readout_loss(current, features, Z, penalties, map_shape))

    def step(carry, _):
        current, opt_state = carry
        loss, grads = jax.value_and_grad(total_loss)(current)
        updates, opt_state = optimizer.update(grads, opt_state, current)
        return (optax.apply_updates(current, updates), opt_state), loss

    (params, state), losses = jax.lax.scan(step, (params, state), None, length=n_steps)
    return params, state, losses[-1] / Z.shape[1]


@jax.jit
def _keep_improved(improved: jax.Array, new: Params, old: Params) -> Params:
    """Per pair (leading axis), the new parameters where ``improved``, else the old ones."""
    return jax.tree.map(
        lambda a, b: jnp.where(improved.reshape(-1, *(1,) * (a.ndim - 1)), a, b), new, old
    )


@functools.partial(jax.jit, static_argnames="map_shape")
def _heldout_mse(
    params: Params, features: jax.Array, Z: jax.Array, map_shape: tuple[int, int]
) -> jax.Array:
    return jnp.mean((Z - readout_predict(params, features, map_shape)) ** 2, axis=0)


@functools.partial(jax.jit, static_argnames="map_shape")
def _predict_jit(params: Params, features: jax.Array, map_shape: tuple[int, int]) -> jax.Array:
    return readout_predict(params, features, map_shape)


# -- helpers ------------------------------------------------------------------------------------


def _map_geometry(
    params: Params, maps: jax.Array, map_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(V, 2) centres and (V,) sizes in cells."""
    if "centre" in params:
        sizes = jnp.exp(jnp.maximum(params["log_size"], MIN_LOG_SIZE))
        return np.asarray(params["centre"]), np.asarray(sizes)
    rows, columns = np.meshgrid(np.arange(map_shape[0]), np.arange(map_shape[1]), indexing="ij")
    cells = jnp.asarray(np.stack([rows.ravel(), columns.ravel()], 1), dtype=maps.dtype)
    mass = jnp.abs(maps)
    mass = mass / jnp.maximum(jnp.sum(mass, axis=1, keepdims=True), jnp.finfo(maps.dtype).tiny)
    centres = mass @ cells
    spread = jnp.sum(mass * jnp.sum((cells[None] - centres[:, None]) ** 2, axis=2), axis=1)
    return np.asarray(centres), np.asarray(jnp.sqrt(spread / 2))


def _split(key: jax.Array, n_images: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_held = max(2, round(fraction * n_images))
    if n_images - n_held < 2:
        raise ValueError(
            f"{n_images} images are too few for a training and a held-out split; "
            "the read-out needs at least 4 images (more in practice)."
        )
    order = np.asarray(jax.random.permutation(key, n_images))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def _check_features(features: Any, name: str) -> Any:
    if isinstance(features, (str, bytes)) or features is None:
        raise TypeError(f"{name} must be an array of feature maps, got {type(features).__name__}.")
    if not isinstance(features, (np.ndarray, jax.Array)):
        features = np.asarray(features)
    _validation.check_numeric_dtype(features, name)
    if features.ndim != 4:
        raise ValueError(
            f"{name} must be feature maps of shape (N, H, W, C), got shape "
            f"{tuple(features.shape)}; for a (N, C, H, W) layout transpose with (0, 2, 3, 1)."
        )
    if min(features.shape) == 0:
        raise ValueError(f"{name} is empty (shape {tuple(features.shape)}).")
    _validation.check_all_finite(features, name)
    return features


def _check_key(key: Any) -> jax.Array:
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, (np.ndarray, jax.Array)) and key.dtype == np.uint32 and key.shape == (2,):
        return jnp.asarray(key)
    raise TypeError(
        f"key must be a JAX random key such as jax.random.key(0), got {type(key).__name__}."
    )


def _check_fraction(fraction: float) -> None:
    if not (isinstance(fraction, (float, int)) and 0 < fraction < 1):
        raise ValueError(f"heldout_fraction must be between 0 and 1, got {fraction!r}.")


def _penalty_grid(spatial: str, penalties: dict[str, Sequence[float]] | None) -> dict[str, tuple]:
    defaults = DEFAULT_PENALTIES[spatial]
    given = dict(penalties or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown penalties {unknown} for spatial={spatial!r}; use {sorted(defaults)}."
        )
    grid = {}
    for name, default in defaults.items():
        values = np.atleast_1d(np.asarray(given.get(name, default), dtype=np.float64))
        if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values) & (values >= 0)):
            raise ValueError(
                f"penalty {name!r} must be a non-empty list of finite non-negative numbers, "
                f"got {given.get(name)!r}."
            )
        grid[name] = tuple(float(v) for v in values)
    return grid


def _init_sizes(sizes: Sequence[float] | None, map_shape: tuple[int, int]) -> np.ndarray:
    if sizes is None:
        return np.geomspace(0.5, max(max(map_shape) / 4, 0.5), 4)
    values = np.atleast_1d(np.asarray(sizes, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"init_sizes must be positive sigmas in cells, got {sizes!r}.")
    return values
