"""Candidate receptive fields of the fwRF model and the pooled designs they give.

A candidate field is an isotropic 2-D Gaussian in visual-field coordinates, given in cells of
the *first* feature map: centre (row, column) and size (sigma). A layer with a different
spatial size sees the same field at its own cell centres: cell ``i`` of an ``H_l``-cell layer
sits at ``(i + 0.5) H_0 / H_l - 0.5`` cells of the first (``H_0``-cell) map. On each layer the
field is normalised to sum 1 over its cells (as :func:`v4jax.data.synthetic.gaussian_rfs`).

The pooled design of candidate ``g`` is ``X_g[n, c] = sum_hw maps[n, h, w, c] g(h, w)``, all
candidates at once as one product ``(N C, H W) @ (H W, G)`` per layer, channels of the layers
concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_SIZES_13 = (0.6, 1.2, 2.4)
REFERENCE_SIDE = 13


def default_centres(map_shape: tuple[int, int]) -> np.ndarray:
    """(H W, 2) every cell centre (row, column) of the first map, row-major."""
    rows, columns = np.meshgrid(np.arange(map_shape[0]), np.arange(map_shape[1]), indexing="ij")
    return np.stack([rows.ravel(), columns.ravel()], axis=1).astype(np.float64)


def default_sizes(map_shape: tuple[int, int]) -> np.ndarray:
    """(3,) sigmas in cells: 0.6, 1.2 and 2.4 cells of a 13-cell map, scaled with the map side."""
    return np.asarray(DEFAULT_SIZES_13) * max(map_shape) / REFERENCE_SIDE


def candidate_grid(centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(G, 3) candidates (row, column, size), centre-major: ``g = centre * n_sizes + size``."""
    n_sizes = sizes.shape[0]
    return np.concatenate(
        [np.repeat(centres, n_sizes, axis=0), np.tile(sizes, centres.shape[0])[:, None]], axis=1
    )


def gaussian_fields(
    candidates: jax.Array, layer_shape: tuple[int, int], first_shape: tuple[int, int]
) -> jax.Array:
    """(H W, G) Gaussian fields on one layer's cells, each summing to 1.

    Args:
      candidates: (G, 3) (row, column, sigma) in cells of the first map.
      layer_shape: (H, W) of the layer. first_shape: (H_0, W_0) of the first map.
    """
    dtype = candidates.dtype
    rows = (jnp.arange(layer_shape[0], dtype=dtype) + 0.5) * first_shape[0] / layer_shape[0] - 0.5
    columns = (jnp.arange(layer_shape[1], dtype=dtype) + 0.5) * first_shape[1] / layer_shape[
        1
    ] - 0.5
    squared = (rows[:, None, None] - candidates[:, 0]) ** 2 + (
        columns[None, :, None] - candidates[:, 1]
    ) ** 2
    logits = -squared.reshape(-1, candidates.shape[0]) / (2 * candidates[:, 2] ** 2)
    return jax.nn.softmax(logits, axis=0)


def channel_major(layer: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N C, H W): the layout the pooling product reads."""
    n_images, height, width, n_channels = layer.shape
    return jnp.transpose(layer, (0, 3, 1, 2)).reshape(n_images * n_channels, height * width)


def pool_layers(
    layers: Sequence[jax.Array],
    layer_shapes: Sequence[tuple[int, int, int]],
    candidates: jax.Array,
) -> jax.Array:
    """(G, N, C_total) pooled designs of every candidate, layers' channels concatenated.

    Args:
      layers: per layer the (N C_l, H_l W_l) channel-major maps (:func:`channel_major`).
      layer_shapes: per layer (H_l, W_l, C_l); the first is the reference map.
      candidates: (G, 3) (row, column, sigma) in cells of the first map.
    """
    first = layer_shapes[0][:2]
    parts = []
    for layer, (height, width, n_channels) in zip(layers, layer_shapes, strict=True):
        fields = gaussian_fields(candidates, (height, width), first)
        pooled = layer @ fields  # (N C_l, G)
        parts.append(pooled.reshape(-1, n_channels, candidates.shape[0]))
    return jnp.transpose(jnp.concatenate(parts, axis=1), (2, 0, 1))
