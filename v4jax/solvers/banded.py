"""Banded (grouped) ridge: several feature spaces, each with its own penalty per target.

With bands ``X_1 .. X_B`` the model is ridge on the concatenation with a penalty per band,

    min_c  ||y - sum_b X_b c_b||² + sum_b alpha_b ||c_b||²,   alpha_b = alpha / w_b,

where ``w`` is a vector of band weights on the simplex. Substituting ``c_b = sqrt(w_b) beta_b``
turns it into plain ridge with penalty ``alpha`` on the scaled design ``[sqrt(w_b) X_b]``, whose
linear kernel is ``sum_b w_b K_b``. So, as himalaya's ``GroupRidgeCV`` random search, each
candidate weight vector is one ridge problem on a combined kernel: every band's centred kernel
is computed once (streaming feature blocks), each candidate's fold kernels are weighted sums of
them, and the dual path of
:mod:`v4jax.solvers.ridge` (re-centring on the fold's training mean, eigh,
every alpha for every target in one batched expression) scores all alphas x targets at once.
Each target keeps the (candidate, alpha) pair with the best mean held-out score; ties go to the
first candidate, then to the alpha that comes first in the grid. The refit uses each target's
pair on all samples and reports coefficients in the original (unscaled) feature space.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from v4jax import _validation
from v4jax.metrics import SCORES
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.ridge import (
    DEFAULT_FEATURE_BLOCK,
    DEFAULT_TARGET_BATCH,
    _centred_gram,
    _centred_transpose_product,
    _dual_basis,
    _dual_coefficients,
    _dual_full,
    _fold_scores,
)

DEFAULT_RATIOS = tuple(np.logspace(-2, 2, 9).tolist())
DEFAULT_CONCENTRATION = 1.0


@dataclasses.dataclass(frozen=True)
class BandedRidgeCVResult:
    """Result of :func:`banded_ridge_cv` (B bands, T targets, G candidates, A alphas).

    Attributes:
      coef: (sum of n_features_b, T) coefficients over the concatenated bands, in the original
        feature units (the penalty of band b is ``best_band_alphas[b]``).
      intercept: (T,) intercepts (zeros when ``fit_intercept=False``).
      best_alphas: (T,) the overall alpha of each target's best candidate.
      band_scales: (B, T) the chosen band weights ``w_b`` (each column sums to 1).
      best_band_alphas: (B, T) per-band penalties ``best_alphas / band_scales``.
      cv_scores: (G, A, T) held-out score averaged over folds, for every candidate and alpha.
      candidates: (G, B) the candidate band weights, rows on the simplex.
      alphas: (A,) the alpha grid, as given.
      best_candidate_index: (T,) row of ``candidates`` chosen per target.
      best_alpha_index: (T,) index of each target's alpha in ``alphas``.
      alpha_on_edge: (T,) True where the best alpha is the grid's smallest or largest value.
      band_slices: the rows of ``coef`` that belong to each band.
      score: "r2" or "pearson".
    """

    coef: jax.Array
    intercept: jax.Array
    best_alphas: jax.Array
    band_scales: jax.Array
    best_band_alphas: jax.Array
    cv_scores: jax.Array
    candidates: np.ndarray
    alphas: np.ndarray
    best_candidate_index: jax.Array
    best_alpha_index: jax.Array
    alpha_on_edge: jax.Array
    band_slices: tuple[slice, ...]
    score: str

    def band_coef(self, band: int) -> jax.Array:
        """(n_features_band, T) the coefficients of one band."""
        return self.coef[self.band_slices[band]]


def band_weight_grid(n_bands: int, ratios: Any = DEFAULT_RATIOS) -> np.ndarray:
    """Candidate band weights from a grid of ratios to the first band.

    Every combination ``(1, r_2, ..., r_B)`` with each ``r_b`` from ``ratios`` is normalised to
    sum to 1; duplicates are dropped (first occurrence kept).

    Args:
      n_bands: number of bands B.
      ratios: (R,) positive ratios, e.g. ``np.logspace(-2, 2, 9)``.

    Returns:
      (R ** (B - 1), B) float64 weights (a single row ``[1.0]`` when B = 1).
    """
    n_bands = _validation.check_positive_int(n_bands, "n_bands")
    values = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(
            f"ratios must be a non-empty 1-D grid of finite positive numbers, got {ratios!r}; "
            "for example np.logspace(-2, 2, 9)."
        )
    rows = [(1.0, *combo) for combo in itertools.product(values, repeat=n_bands - 1)]
    weights = np.asarray(rows, dtype=np.float64)
    weights /= weights.sum(axis=1, keepdims=True)
    _, first = np.unique(np.round(weights, 12), axis=0, return_index=True)
    return weights[np.sort(first)]


def dirichlet_band_weights(
    n_bands: int, n_iter: int, *, concentration: float = DEFAULT_CONCENTRATION, seed: int = 0
) -> np.ndarray:
    """Random-search candidates: equal weights first, then Dirichlet draws on the simplex.

    Args:
      n_bands: number of bands B.
      n_iter: number of candidates G (including the equal-weights one).
      concentration: Dirichlet concentration (small values favour one dominant band).
      seed: seed of ``numpy.random.default_rng``.

    Returns:
      (G, B) float64 weights, rows summing to 1.
    """
    n_bands = _validation.check_positive_int(n_bands, "n_bands")
    n_iter = _validation.check_positive_int(n_iter, "n_iter")
    if not np.isfinite(concentration) or concentration <= 0:
        raise ValueError(f"concentration must be a positive number, got {concentration!r}.")
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(np.full(n_bands, float(concentration)), size=n_iter - 1)
    return np.concatenate([np.full((1, n_bands), 1.0 / n_bands), draws])


def banded_ridge_cv(
    Xs: Sequence[Any],
    Y: Any,
    alphas: Any,
    *,
    cv: Any = 5,
    fit_intercept: bool = True,
    score: str = "r2",
    ratios: Any = None,
    n_iter: int | None = None,
    band_weights: Any = None,
    concentration: float = DEFAULT_CONCENTRATION,
    seed: int = 0,
    target_batch_size: int | None = DEFAULT_TARGET_BATCH,
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
    progress: bool | None = None,
    dtype: Any = None,
) -> BandedRidgeCVResult:
    """Cross-validated banded ridge: a band-weight vector and an alpha chosen per target.

    Candidate band weights come from exactly one of ``ratios`` (a grid, see
    :func:`band_weight_grid`; the default, ``DEFAULT_RATIOS``, when none is given), ``n_iter``
    (random search, see :func:`dirichlet_band_weights`) or ``band_weights`` (explicit rows).

    Args:
      Xs: list of B designs, band b of shape (n_samples, n_features_b) (numpy stays on the host
        and is streamed to the device in feature blocks).
      Y: (n_samples, n_targets) or (n_samples,) responses.
      alphas: (A,) positive grid of the overall penalty.
      cv: int (contiguous folds), scikit-learn splitter or list of (train, test) index arrays.
      fit_intercept: centre the designs and Y on each training set.
      score: "r2" or "pearson", the held-out score that selects (band weights, alpha).
      ratios: (R,) grid of weight ratios of bands 2..B to band 1.
      n_iter: number of random-search candidates (equal weights + Dirichlet draws).
      band_weights: (G, B) explicit positive candidate weights (rows are normalised to sum 1).
      concentration: Dirichlet concentration of the random search.
      seed: seed of the random search.
      target_batch_size: targets processed together (bounds memory); None for all at once.
      feature_block_size: features per block when building kernels and coefficients.
      progress: show a progress bar over candidates (default: when there is more than one).
      dtype: compute dtype, "float32" or "float64" (None: float64 when JAX's x64 mode is on and
        the inputs are float64, else float32), as :func:`v4jax.ridge_cv`.

    Returns:
      :class:`BandedRidgeCVResult`; float32, or float64 when JAX x64 is on and inputs are
      float64.

    Example:
      >>> result = banded_ridge_cv([X_conv2, X_conv3], Y, np.logspace(-2, 6, 17), cv=5)
      >>> result.coef.shape, result.best_band_alphas.shape
      ((n_features_conv2 + n_features_conv3, n_targets), (2, n_targets))
    """
    bands = _check_bands(Xs)
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    for number, X in enumerate(bands):
        _validation.check_same_samples(X, Y, (f"Xs[{number}]", "Y"))
    alpha_grid = _validation.check_alphas(alphas)
    _validation.check_choice(score, "score", SCORES)
    target_batch_size = _validation.check_positive_int(
        target_batch_size, "target_batch_size", allow_none=True
    )
    feature_block_size = _validation.check_positive_int(feature_block_size, "feature_block_size")
    candidates = _candidates(len(bands), ratios, n_iter, band_weights, concentration, seed)
    n_samples, n_targets = Y.shape
    folds = make_folds(cv, n_samples)
    dtype = _validation.resolve_dtype(dtype, *bands, Y)

    kernels = [_centred_gram(X, fit_intercept, dtype, feature_block_size) for X in bands]
    grams = jnp.stack([gram for gram, _, _ in kernels])
    means = [mean for _, _, mean in kernels]
    Y_device = jnp.asarray(Y, dtype=dtype)
    alphas_device = jnp.asarray(alpha_grid, dtype=dtype)
    candidates_device = jnp.asarray(candidates, dtype=dtype)
    batch = n_targets if target_batch_size is None else target_batch_size
    starts = range(0, n_targets, batch)

    show = progress if progress is not None else len(candidates) > 1
    candidate_scores = []
    for weights in tqdm(candidates_device, desc="banded ridge candidates", disable=not show):
        gram = _weighted_gram(grams, weights)
        fold_scores = []
        for train, test in folds:
            basis = _dual_basis(gram, jnp.asarray(train), jnp.asarray(test), fit_intercept)
            fold_scores.append(
                jnp.concatenate(
                    [
                        _fold_scores(
                            basis,
                            Y_device[train, start : start + batch],
                            Y_device[test, start : start + batch],
                            alphas_device,
                            fit_intercept,
                            score,
                            "dual",
                        )
                        for start in starts
                    ],
                    axis=1,
                )
            )
        candidate_scores.append(jnp.mean(jnp.stack(fold_scores), axis=0))
    cv_scores = jnp.stack(candidate_scores)

    n_alphas = len(alpha_grid)
    flat_best = jnp.argmax(cv_scores.reshape(-1, n_targets), axis=0)
    best_candidate = flat_best // n_alphas
    best_alpha_index = flat_best % n_alphas
    best_alphas = alphas_device[best_alpha_index]
    band_scales = candidates_device[best_candidate].T

    dual = jnp.zeros((n_samples, n_targets), dtype=dtype)
    y_mean = jnp.zeros(n_targets, dtype=dtype)
    for index in np.unique(np.asarray(best_candidate)):
        full = _dual_full(_weighted_gram(grams, candidates_device[index]), fit_intercept)
        chosen = best_candidate == index
        for start in starts:
            columns = slice(start, start + batch)
            part, part_mean = _dual_coefficients(
                full, Y_device[:, columns], best_alphas[columns], fit_intercept
            )
            dual = dual.at[:, columns].set(jnp.where(chosen[columns], part, dual[:, columns]))
            y_mean = y_mean.at[columns].set(jnp.where(chosen[columns], part_mean, y_mean[columns]))

    coef_blocks, intercept = [], y_mean
    for X, mean, scale in zip(bands, means, band_scales, strict=True):
        band_coef = _band_coefficients(X, mean, dual, dtype, feature_block_size) * scale
        coef_blocks.append(band_coef)
        intercept = intercept - mean @ band_coef
    sizes = np.cumsum([0] + [X.shape[1] for X in bands])
    return BandedRidgeCVResult(
        coef=jnp.concatenate(coef_blocks),
        intercept=intercept,
        best_alphas=best_alphas,
        band_scales=band_scales,
        best_band_alphas=best_alphas[None, :] / band_scales,
        cv_scores=cv_scores,
        candidates=candidates,
        alphas=alpha_grid,
        best_candidate_index=best_candidate,
        best_alpha_index=best_alpha_index,
        alpha_on_edge=(best_alpha_index == 0) | (best_alpha_index == n_alphas - 1),
        band_slices=tuple(slice(int(a), int(b)) for a, b in itertools.pairwise(sizes)),
        score=score,
    )


def _check_bands(Xs: Any) -> list[Any]:
    if isinstance(Xs, (np.ndarray, jax.Array)) or not isinstance(Xs, Sequence):
        raise TypeError(
            "Xs must be a list of feature matrices, one (n_samples, n_features_b) array per "
            f"band, got {type(Xs).__name__}; for a single band pass [X]."
        )
    if len(Xs) == 0:
        raise ValueError("Xs is empty; pass at least one (n_samples, n_features) band.")
    bands = [_validation.as_2d_float(X, f"Xs[{number}]") for number, X in enumerate(Xs)]
    for number, X in enumerate(bands[1:], start=1):
        _validation.check_same_samples(bands[0], X, ("Xs[0]", f"Xs[{number}]"))
    return bands


def _candidates(
    n_bands: int,
    ratios: Any,
    n_iter: int | None,
    band_weights: Any,
    concentration: float,
    seed: int,
) -> np.ndarray:
    given = [name for name, value in (("ratios", ratios), ("n_iter", n_iter),
             ("band_weights", band_weights)) if value is not None]  # fmt: skip
    if len(given) > 1:
        raise ValueError(
            f"pass only one of ratios, n_iter and band_weights to choose the candidate band "
            f"weights, got {given}."
        )
    if n_iter is not None:
        return dirichlet_band_weights(n_bands, n_iter, concentration=concentration, seed=seed)
    if band_weights is None:
        return band_weight_grid(n_bands, DEFAULT_RATIOS if ratios is None else ratios)
    weights = np.asarray(band_weights, dtype=np.float64)
    if weights.ndim == 1:
        weights = weights[None, :]
    if weights.ndim != 2 or weights.shape[1] != n_bands or weights.shape[0] == 0:
        raise ValueError(
            f"band_weights must have shape (n_candidates, {n_bands}) for {n_bands} band(s), got "
            f"{np.shape(band_weights)}."
        )
    if not np.all(np.isfinite(weights) & (weights > 0)):
        raise ValueError("band_weights must be finite and strictly positive.")
    return weights / weights.sum(axis=1, keepdims=True)


@jax.jit
def _weighted_gram(grams: jax.Array, weights: jax.Array) -> jax.Array:
    """(n, n) sum_b w_b K_b from (B, n, n) band kernels."""
    return jnp.tensordot(weights, grams, axes=1)


def _band_coefficients(
    X: Any, mean: jax.Array, dual: jax.Array, dtype: np.dtype, block: int
) -> jax.Array:
    """(n_features, T) (X - mean)ᵀ dual, streaming feature blocks."""
    return jnp.concatenate(
        [
            _centred_transpose_product(
                jnp.asarray(X[:, start : start + block], dtype=dtype),
                dual,
                mean[start : start + block],
            )
            for start in range(0, X.shape[1], block)
        ]
    )


__all__ = [
    "BandedRidgeCVResult",
    "band_weight_grid",
    "banded_ridge_cv",
    "dirichlet_band_weights",
]
