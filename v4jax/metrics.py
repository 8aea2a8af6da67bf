"""Per-voxel accuracy metrics, vectorised over targets (and any leading batch axes).

Conventions: samples on axis -2, targets (voxels) on axis -1. A target that is constant over
the samples scored has no defined R² or correlation; it scores 0, never NaN.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from tqdm.auto import tqdm

from v4jax._validation import (
    as_2d_float,
    check_all_finite,
    check_choice,
    check_numeric_dtype,
    check_positive_int,
    compute_dtype,
)

SCORES = ("r2", "pearson", "neg_mean_squared_error")


def r2_columns(
    y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
) -> jax.Array:
    """Coefficient of determination per target, as scikit-learn's ``r2_score``.

    Args:
      y_true: (..., n_samples, n_targets).
      y_pred: (..., n_samples, n_targets), broadcastable against ``y_true``.
      sample_weight: (n_samples,) non-negative weights, or None (all equal).

    Returns:
      (..., n_targets): 1 - SS_res / SS_tot, with SS_tot about ``y_true``'s own (weighted)
      mean and both sums weighted; 0 for a constant ``y_true``.

    Raises:
      TypeError for non-real dtypes; ValueError for fewer than 2 axes, empty or
      non-broadcastable shapes, and NaN/inf in concrete (not traced) inputs.
    """
    y_true, y_pred = _score_pair(y_true, y_pred)
    weights = _sample_weights(sample_weight, y_true)
    residual = _weighted_sum((y_true - y_pred) ** 2, weights)
    total = _weighted_sum((y_true - _weighted_mean(y_true, weights)) ** 2, weights)
    defined = total > _constant_floor(y_true, weights)
    return jnp.where(defined, 1.0 - residual / jnp.where(defined, total, 1.0), 0.0)


def pearson_columns(
    y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
) -> jax.Array:
    """Pearson correlation per target between truth and prediction.

    Args:
      y_true: (..., n_samples, n_targets).
      y_pred: (..., n_samples, n_targets), broadcastable against ``y_true``.
      sample_weight: (n_samples,) non-negative weights (a weighted correlation), or None.

    Returns:
      (..., n_targets) correlations in [-1, 1]; 0 where either side is constant.

    Raises:
      As :func:`r2_columns`.
    """
    y_true, y_pred = _score_pair(y_true, y_pred)
    weights = _sample_weights(sample_weight, y_true)
    true_centred = y_true - _weighted_mean(y_true, weights)
    pred_centred = y_pred - _weighted_mean(y_pred, weights)
    covariance = _weighted_sum(true_centred * pred_centred, weights)
    true_power = _weighted_sum(true_centred**2, weights)
    pred_power = _weighted_sum(pred_centred**2, weights)
    defined = (true_power > _constant_floor(y_true, weights)) & (
        pred_power > _constant_floor(y_pred, weights)
    )
    denominator = jnp.sqrt(jnp.where(defined, true_power * pred_power, 1.0))
    return jnp.where(defined, covariance / denominator, 0.0)


def neg_mean_squared_error_columns(
    y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
) -> jax.Array:
    """Negated mean squared error per target, as scikit-learn's ``neg_mean_squared_error``.

    Args:
      y_true: (..., n_samples, n_targets).
      y_pred: (..., n_samples, n_targets), broadcastable against ``y_true``.
      sample_weight: (n_samples,) non-negative weights (a weighted mean), or None.

    Returns:
      (..., n_targets): ``-mean((y_true - y_pred) ** 2)`` over the samples (higher is better,
      so that it selects hyperparameters by its maximum like the other scores).

    Raises:
      As :func:`r2_columns`.
    """
    y_true, y_pred = _score_pair(y_true, y_pred)
    weights = _sample_weights(sample_weight, y_true)
    return -_weighted_mean((y_true - y_pred) ** 2, weights)[..., 0, :]


def _sample_weights(sample_weight: ArrayLike | None, y_true: jax.Array) -> jax.Array | None:
    """(n_samples, 1) weights in ``y_true``'s dtype, or None."""
    if sample_weight is None:
        return None
    weights = jnp.asarray(sample_weight, dtype=y_true.dtype)
    if weights.shape != (y_true.shape[-2],):
        raise ValueError(
            f"sample_weight must have shape ({y_true.shape[-2]},), one weight per sample; got "
            f"{tuple(weights.shape)}."
        )
    return weights[:, None]


def _weighted_sum(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Sum over the samples (axis -2), weighted."""
    return jnp.sum(values if weights is None else values * weights, axis=-2)


def _weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """(..., 1, n_targets) mean over the samples, weighted."""
    if weights is None:
        return jnp.mean(values, axis=-2, keepdims=True)
    return jnp.sum(values * weights, axis=-2, keepdims=True) / jnp.sum(weights)


def _score_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Check truth and prediction of the scores; shapes and dtypes also under ``jax.jit``.

    NaN/inf are refused only for concrete arrays (a traced value cannot raise): a score over
    them would otherwise come out as 0, indistinguishable from a constant target.
    """
    arrays = []
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values is None or isinstance(values, (str, bytes)):
            raise TypeError(f"{name} must be an array of numbers, got {type(values).__name__}.")
        if not hasattr(values, "dtype"):
            values = np.asarray(values)
        check_numeric_dtype(values, name)
        if values.ndim < 2:
            raise ValueError(
                f"{name} must be (..., n_samples, n_targets), got shape {tuple(values.shape)}; "
                "make a single target a column with y[:, None]."
            )
        if values.shape[-2] == 0 or values.shape[-1] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(values.shape)}).")
        arrays.append(values)
    try:
        np.broadcast_shapes(arrays[0].shape, arrays[1].shape)
    except ValueError:
        raise ValueError(
            f"y_true has shape {tuple(arrays[0].shape)} but y_pred has "
            f"{tuple(arrays[1].shape)}; they must match (samples on axis -2, targets on -1)."
        ) from None
    for name, values in zip(("y_true", "y_pred"), arrays, strict=True):
        if not isinstance(values, jax.core.Tracer):
            check_all_finite(values, name)
    return jnp.asarray(arrays[0]), jnp.asarray(arrays[1])


def score_columns(
    y_true: ArrayLike, y_pred: ArrayLike, score: str, sample_weight: ArrayLike | None = None
) -> jax.Array:
    """The per-target score named ``score`` (one of :data:`SCORES`): :func:`r2_columns`
    (``"r2"``), :func:`pearson_columns` (``"pearson"``) or
    :func:`neg_mean_squared_error_columns` (``"neg_mean_squared_error"``), weighted by
    ``sample_weight`` (n_samples,) when given."""
    if score == "r2":
        return r2_columns(y_true, y_pred, sample_weight)
    if score == "pearson":
        return pearson_columns(y_true, y_pred, sample_weight)
    if score == "neg_mean_squared_error":
        return neg_mean_squared_error_columns(y_true, y_pred, sample_weight)
    raise ValueError(f"score={score!r} is not supported; choose one of {list(SCORES)}.")


def _constant_floor(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Sum of squares below which a column counts as constant (rounding noise of its mean)."""
    dtype = values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else jnp.float32
    scale = jnp.max(jnp.abs(values), axis=-2)
    total_weight = values.shape[-2] if weights is None else jnp.sum(weights)
    return total_weight * (16 * jnp.finfo(dtype).eps * scale) ** 2


# ----------------------------------------------------------------------------------------------
# Uncertainty: bootstrap confidence intervals over images and a permutation null.
# ----------------------------------------------------------------------------------------------

#: Elements of one resampled (batch, n_samples, n_voxels) array when ``batch`` is automatic.
_BATCH_ELEMENTS = 1 << 24


def bootstrap_indices(n_samples: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Rows drawn with replacement for each bootstrap replicate.

    Args:
      n_samples: number of images (rows) to resample.
      n_boot: number of bootstrap replicates.
      seed: seed of the ``numpy.random.Generator`` that draws them.

    Returns:
      (n_boot, n_samples) int64 row indices; the same seed gives the same indices.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    n_boot = check_positive_int(n_boot, "n_boot")
    return np.random.default_rng(seed).integers(0, n_samples, size=(n_boot, n_samples))


def permutation_indices(n_samples: int, n_permutations: int, seed: int = 0) -> np.ndarray:
    """One independent random ordering of the rows per permutation.

    Returns:
      (n_permutations, n_samples) int64, each row a permutation of ``range(n_samples)``.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    rows = np.tile(np.arange(n_samples), (n_permutations, 1))
    return np.random.default_rng(seed).permuted(rows, axis=1)


def bootstrap_scores(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    metric: str = "pearson",
    n_boot: int = 1000,
    seed: int = 0,
    batch: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Scores of bootstrap replicates that resample images (rows) with replacement.

    The same rows are drawn for truth and prediction, and for every voxel, so the replicates
    keep the pairing of each image and the dependence between voxels. Replicates are scored in
    batches of ``batch`` draws, vectorised over draws and voxels.

    Args:
      y_true: (n_samples, n_voxels) measured responses (a vector is one voxel).
      y_pred: (n_samples, n_voxels) predictions.
      metric: ``"pearson"`` or ``"r2"``.
      n_boot: number of replicates; the rows come from :func:`bootstrap_indices` (``seed``).
      batch: replicates scored at once; by default as many as fit in about 2**24 elements.
      progress: show a progress bar over batches.

    Returns:
      (n_boot, n_voxels) numpy array of scores, in the compute dtype (float32 unless an
      input is float64 and JAX's x64 mode is on).
    """
    y_true, y_pred = _paired_columns(y_true, y_pred)
    check_choice(metric, "metric", SCORES)
    indices = bootstrap_indices(y_true.shape[0], n_boot, seed)
    return _resampled_scores(y_true, y_pred, indices, metric, batch, progress, resample_truth=True)


def bootstrap_ci(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    metric: str = "pearson",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    batch: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence interval of a per-voxel score, resampling images.

    The interval is [q(a/2), q(1 - a/2)] of the replicate scores of :func:`bootstrap_scores`,
    with a = 1 - ``confidence`` and q numpy's default (linear) percentile.

    Args:
      y_true, y_pred: (n_samples, n_voxels) truth and prediction (a vector is one voxel).
      metric: ``"pearson"`` or ``"r2"``.
      n_boot: number of replicates. confidence: coverage in (0, 1).
      seed: seed of the resampling. batch, progress: as :func:`bootstrap_scores`.

    Returns:
      (low, high), each (n_voxels,) numpy arrays.

    Example:
      >>> low, high = bootstrap_ci(resp_val, pred_val, n_boot=2000, seed=1)
    """
    if not isinstance(confidence, (float, int)) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}.")
    replicates = bootstrap_scores(
        y_true, y_pred, metric=metric, n_boot=n_boot, seed=seed, batch=batch, progress=progress
    )
    tail = 100.0 * (1.0 - float(confidence)) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail], axis=0)
    return low, high


def permutation_null(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    metric: str = "pearson",
    n_permutations: int = 1000,
    seed: int = 0,
    batch: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Scores after shuffling the predictions' image order: the null of no relation.

    Each permutation reorders the rows of ``y_pred`` (the same order for every voxel, so the
    dependence between voxels is kept) and scores it against the untouched ``y_true``. This
    assumes images are exchangeable under the null, as for independently presented stimuli.

    Args:
      y_true, y_pred: (n_samples, n_voxels) (a vector is one voxel).
      metric: ``"pearson"`` or ``"r2"``.
      n_permutations: number of shuffles; the orders come from :func:`permutation_indices`.
      seed, batch, progress: as :func:`bootstrap_scores`.

    Returns:
      (n_permutations, n_voxels) numpy array of null scores.
    """
    y_true, y_pred = _paired_columns(y_true, y_pred)
    check_choice(metric, "metric", SCORES)
    indices = permutation_indices(y_true.shape[0], n_permutations, seed)
    return _resampled_scores(y_true, y_pred, indices, metric, batch, progress, resample_truth=False)


def permutation_pvalues(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    metric: str = "pearson",
    n_permutations: int = 1000,
    seed: int = 0,
    alternative: str = "greater",
    batch: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Per-voxel permutation p-values, p = (count + 1) / (n_permutations + 1).

    ``count`` is the number of null scores (:func:`permutation_null`) at least as extreme as
    the observed score: ``>=`` for ``alternative="greater"`` (is the prediction better than
    chance?), ``|null| >= |observed|`` for ``"two-sided"``. The +1 counts the observed order
    itself, so p is never 0 and its smallest value is 1 / (n_permutations + 1).

    Returns:
      (n_voxels,) numpy float64 p-values in (0, 1].
    """
    check_choice(alternative, "alternative", ("greater", "two-sided"))
    y_true, y_pred = _paired_columns(y_true, y_pred)
    null = permutation_null(
        y_true,
        y_pred,
        metric=metric,
        n_permutations=n_permutations,
        seed=seed,
        batch=batch,
        progress=progress,
    )
    dtype = compute_dtype(y_true, y_pred)
    observed = np.asarray(
        score_columns(jnp.asarray(y_true, dtype), jnp.asarray(y_pred, dtype), metric)
    )
    if alternative == "two-sided":
        null, observed = np.abs(null), np.abs(observed)
    count = np.sum(null >= observed, axis=0)
    return (count + 1.0) / (null.shape[0] + 1.0)


def _paired_columns(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[Any, Any]:
    """Validate truth and prediction: finite, 2-D (a vector is one voxel), same shape."""
    y_true = as_2d_float(y_true, "y_true", allow_1d=True)
    y_pred = as_2d_float(y_pred, "y_pred", allow_1d=True)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has shape {tuple(y_true.shape)} but y_pred has {tuple(y_pred.shape)}; "
            "pass one prediction per measured response (n_samples, n_voxels)."
        )
    if y_true.shape[0] < 3:
        raise ValueError(
            f"y_true has {y_true.shape[0]} samples; resampling needs at least 3 images."
        )
    return y_true, y_pred


def _resampled_scores(
    y_true: Any,
    y_pred: Any,
    indices: np.ndarray,
    metric: str,
    batch: int | None,
    progress: bool,
    *,
    resample_truth: bool,
) -> np.ndarray:
    """Score ``y_pred[rows]`` (and ``y_true[rows]`` when ``resample_truth``) for each row set.

    ``indices`` is (n_draws, n_samples); draws are scored ``batch`` at a time, the last batch
    padded to the same size so the scoring function compiles once.
    """
    n_draws, n_samples = indices.shape
    n_voxels = y_true.shape[1]
    if batch is None:
        batch = max(1, min(n_draws, _BATCH_ELEMENTS // (n_samples * n_voxels)))
    batch = min(check_positive_int(batch, "batch"), n_draws)
    dtype = compute_dtype(y_true, y_pred)
    truth = jnp.asarray(y_true, dtype)
    prediction = jnp.asarray(y_pred, dtype)
    n_batches = -(-n_draws // batch)
    padded = np.concatenate(
        [indices, np.broadcast_to(indices[:1], (n_batches * batch - n_draws, n_samples))]
    )
    scores = []
    for start in tqdm(
        range(0, padded.shape[0], batch), disable=not progress, desc=f"{metric} resamples"
    ):
        rows = jnp.asarray(padded[start : start + batch])
        scores.append(np.asarray(_score_rows(truth, prediction, rows, metric, resample_truth)))
    return np.concatenate(scores)[:n_draws]


@functools.partial(jax.jit, static_argnames=("metric", "resample_truth"))
def _score_rows(
    y_true: jax.Array, y_pred: jax.Array, rows: jax.Array, metric: str, resample_truth: bool
) -> jax.Array:
    """(batch, n_voxels) scores of the row sets ``rows`` (batch, n_samples)."""
    # Broadcasting the fixed truth explicitly lets XLA fuse the batch (about 2x faster on CPU).
    truth = (
        y_true[rows] if resample_truth else jnp.broadcast_to(y_true, rows.shape + y_true.shape[1:])
    )
    return score_columns(truth, y_pred[rows], metric)


# ----------------------------------------------------------------------------------------------
# Noise ceiling from repeated presentations (NSD-style NCSNR, Allen et al. 2022).
# ----------------------------------------------------------------------------------------------


def noise_ceiling_ncsnr(repeats: ArrayLike) -> np.ndarray:
    """Noise-ceiling signal-to-noise ratio per voxel from single-trial repeated responses.

    Following the Natural Scenes Dataset (Allen et al. 2022, Nature Neuroscience, Methods
    "Noise ceiling"): with responses z-scored per voxel, the noise variance is the mean over
    images of the across-repeat variance, the signal variance is what remains of the (unit)
    total variance, and the ratio of their square roots is the NCSNR::

        sigma_noise² = mean_images var_repeats(response)            (ddof=1 across repeats)
        sigma_signal² = max(0, var_total - sigma_noise²)             (var_total = 1 if z-scored)
        ncsnr = sigma_signal / sigma_noise

    Here ``var_total`` is the variance (ddof=0) of all single-trial responses of the voxel,
    which is 1 for NSD's z-scored betas; the NCSNR is invariant to each voxel's scale, so
    z-scoring first is not needed. An image enters a voxel's noise variance only if at least
    2 of its repeats are finite; NaN entries (vim-1 style missing values) are skipped.

    Args:
      repeats: (n_repeats, n_images, n_voxels) single-trial responses, n_repeats >= 2.

    Returns:
      (n_voxels,) float64 NCSNR >= 0; ``inf`` where the noise variance is 0 but the signal
      variance is not; NaN where it is undefined (no image with 2 finite repeats, or a
      constant voxel).
    """
    values = np.asarray(repeats)
    if values.ndim != 3:
        raise ValueError(
            f"repeats must be 3-D (n_repeats, n_images, n_voxels), got shape {values.shape}; "
            "stack the single-trial responses of each presentation along the first axis."
        )
    check_numeric_dtype(values, "repeats")
    if values.shape[0] < 2 or values.shape[1] < 2 or values.shape[2] < 1:
        raise ValueError(
            f"repeats has shape {values.shape}; it needs at least 2 repeats of at least 2 "
            "images for at least 1 voxel."
        )
    values = values.astype(np.float64)
    if np.isinf(values).any():
        raise ValueError("repeats contains inf; replace it with NaN (missing) or drop it.")
    finite = np.isfinite(values)
    n_finite = finite.sum(axis=0)
    usable = n_finite >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        repeat_mean = np.nansum(values, axis=0) / np.maximum(n_finite, 1)
        squares = np.nansum((values - repeat_mean) ** 2, axis=0)
        repeat_var = np.where(usable, squares / np.maximum(n_finite - 1, 1), 0.0)
        noise_var = repeat_var.sum(axis=0) / usable.sum(axis=0)
        n_trials = n_finite.sum(axis=0)
        grand_mean = np.nansum(values, axis=(0, 1)) / n_trials
        total_var = np.nansum((values - grand_mean) ** 2, axis=(0, 1)) / n_trials
        signal_var = np.maximum(total_var - noise_var, 0.0)
        ncsnr = np.sqrt(signal_var) / np.sqrt(noise_var)
    # Identical repeats leave only rounding error in the noise variance: count that as none.
    noiseless = noise_var <= 64 * np.finfo(np.float64).eps * total_var
    undefined = (usable.sum(axis=0) == 0) | ~(total_var > 0)
    return np.where(undefined, np.nan, np.where(noiseless, np.inf, ncsnr))


def noise_ceiling_from_ncsnr(ncsnr: ArrayLike, n_averaged: int) -> np.ndarray:
    """Noise ceiling, as a fraction of variance, of a response averaged over ``n_averaged`` trials.

    ``ceiling = ncsnr² / (ncsnr² + 1 / n_averaged)`` (Allen et al. 2022, who report it x100 as
    a percentage of explainable variance). It is the largest R² (fraction of the measured
    response's variance) that a model predicting the noise-free signal perfectly can reach
    when scored against responses averaged over ``n_averaged`` presentations. The
    corresponding ceiling on the Pearson r between such a prediction and the averaged response
    is ``sqrt(ceiling)``; that is what the synthetic generator stores as ``noise_ceiling_r``
    (there snr = n_averaged * ncsnr², and snr / (1 + snr) equals this ceiling).

    Args:
      ncsnr: (n_voxels,) NCSNR from :func:`noise_ceiling_ncsnr`.
      n_averaged: number of trials averaged in the responses being scored (positive int).

    Returns:
      (n_voxels,) float64 in [0, 1]; 1 where ncsnr is inf, NaN where it is NaN.
    """
    n_averaged = check_positive_int(n_averaged, "n_averaged")
    values = np.asarray(ncsnr, dtype=np.float64)
    if np.any(values < 0):
        raise ValueError("ncsnr must be >= 0 (a ratio of standard deviations).")
    with np.errstate(invalid="ignore"):
        ceiling = values**2 / (values**2 + 1.0 / n_averaged)
    return np.where(np.isinf(values), 1.0, ceiling)


def ceiling_normalised(score_r2: ArrayLike, ceiling_r2: ArrayLike) -> np.ndarray:
    """Score as a fraction of the noise ceiling: ``score_r2 / ceiling_r2``, per voxel.

    Both arguments are fractions of variance: ``score_r2`` a squared Pearson r (or an R²) of a
    model on averaged responses, ``ceiling_r2`` the ceiling of the same responses from
    :func:`noise_ceiling_from_ncsnr` (or ``noise_ceiling_r ** 2``). 1 means the model explains
    all the explainable variance; values above 1 are sampling noise. Voxels whose ceiling is
    not positive (no measurable signal) or not finite get NaN: their ratio is undefined, and
    NaN keeps them out of ``np.nanmedian`` summaries rather than inflating them.

    Returns:
      float64 array of the broadcast shape of the inputs.
    """
    score = np.asarray(score_r2, dtype=np.float64)
    ceiling = np.asarray(ceiling_r2, dtype=np.float64)
    defined = np.isfinite(ceiling) & (ceiling > 0)
    return np.where(defined, score / np.where(defined, ceiling, 1.0), np.nan)
