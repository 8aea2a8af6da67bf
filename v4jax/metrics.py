"""Per-voxel accuracy metrics, vectorised over targets (and any leading batch axes).

Conventions: samples on axis -2, targets (voxels) on axis -1. A target that is constant over
the samples scored has no defined R² or correlation; it scores 0, never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

SCORES = ("r2", "pearson")


def r2_columns(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Coefficient of determination per target, as scikit-learn's ``r2_score``.

    Args:
      y_true: (..., n_samples, n_targets).
      y_pred: (..., n_samples, n_targets), broadcastable against ``y_true``.

    Returns:
      (..., n_targets): 1 - SS_res / SS_tot, with SS_tot about ``y_true``'s own mean; 0 for a
      constant ``y_true``.
    """
    y_true = jnp.asarray(y_true)
    y_pred = jnp.asarray(y_pred)
    residual = jnp.sum((y_true - y_pred) ** 2, axis=-2)
    total = jnp.sum((y_true - jnp.mean(y_true, axis=-2, keepdims=True)) ** 2, axis=-2)
    defined = total > _constant_floor(y_true)
    return jnp.where(defined, 1.0 - residual / jnp.where(defined, total, 1.0), 0.0)


def pearson_columns(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Pearson correlation per target between truth and prediction.

    Args:
      y_true: (..., n_samples, n_targets).
      y_pred: (..., n_samples, n_targets), broadcastable against ``y_true``.

    Returns:
      (..., n_targets) correlations in [-1, 1]; 0 where either side is constant.
    """
    y_true = jnp.asarray(y_true)
    y_pred = jnp.asarray(y_pred)
    true_centred = y_true - jnp.mean(y_true, axis=-2, keepdims=True)
    pred_centred = y_pred - jnp.mean(y_pred, axis=-2, keepdims=True)
    covariance = jnp.sum(true_centred * pred_centred, axis=-2)
    true_power = jnp.sum(true_centred**2, axis=-2)
    pred_power = jnp.sum(pred_centred**2, axis=-2)
    defined = (true_power > _constant_floor(y_true)) & (pred_power > _constant_floor(y_pred))
    denominator = jnp.sqrt(jnp.where(defined, true_power * pred_power, 1.0))
    return jnp.where(defined, covariance / denominator, 0.0)


def score_columns(y_true: ArrayLike, y_pred: ArrayLike, score: str) -> jax.Array:
    """Dispatch to :func:`r2_columns` (``"r2"``) or :func:`pearson_columns` (``"pearson"``)."""
    if score == "r2":
        return r2_columns(y_true, y_pred)
    if score == "pearson":
        return pearson_columns(y_true, y_pred)
    raise ValueError(f"score={score!r} is not supported; choose one of {list(SCORES)}.")


def _constant_floor(values: jax.Array) -> jax.Array:
    """Sum of squares below which a column counts as constant (rounding noise of its mean)."""
    dtype = values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else jnp.float32
    scale = jnp.max(jnp.abs(values), axis=-2)
    return values.shape[-2] * (16 * jnp.finfo(dtype).eps * scale) ** 2
