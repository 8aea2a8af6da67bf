"""Banded (grouped) ridge: several feature spaces, each with its own penalty per target.

With bands ``X_1 .. X_B`` the model is ridge on the concatenation with a penalty per band,

    min_c  ||y - sum_b X_b c_b||² + sum_b alpha_b ||c_b||²,   alpha_b = alpha / w_b,

where ``w`` is a vector of band weights on the simplex. Substituting ``c_b = sqrt(w_b) beta_b``
turns it into plain ridge with penalty ``alpha`` on the scaled design ``[sqrt(w_b) X_b]``, whose
linear kernel is ``sum_b w_b K_b``. So, as himalaya's ``GroupRidgeCV`` random search, each
candidate weight vector is one ridge problem on a combined kernel, solved on the engine: every
band's centred kernel is streamed once (:func:`v4jax.solvers.engine.kernels.centred_gram`), each
candidate's combined kernel is decomposed once for every fold and alpha
(:func:`v4jax.solvers.ridge.prepare_ridge_from_kernel`) and scored for every alpha and target
by :func:`v4jax.solvers.ridge.ridge_cv_targets` (voxels sharded over the device mesh). Each
target keeps the (candidate, alpha) pair with the best mean held-out score; ties go to the first
candidate, then to the alpha that comes first in the grid. Its dual coefficients are the refit
of that pair on all samples; coefficients in the original (unscaled) feature space are
``c_b = w_b (X_b - mean_b)ᵀ a``, formed only when asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from v4jax import _validation
from v4jax.metrics import SCORES
from v4jax.solvers.diagnostics import ConditioningWarning, condition_message, conditioning
from v4jax.solvers.engine import kernels
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.result import grid_edge
from v4jax.solvers.engine.sharding import replicate, voxel_mesh
from v4jax.solvers.ridge import (
    DEFAULT_FEATURE_BLOCK,
    DEFAULT_TARGET_BATCH,
    prepare_ridge_from_kernel,
    ridge_cv_targets,
)

DEFAULT_RATIOS = tuple(np.logspace(-2, 2, 9).tolist())
DEFAULT_CONCENTRATION = 1.0


@dataclasses.dataclass(frozen=True)
class BandedRidgeCVResult:
    """Result of :func:`banded_ridge_cv`, following :mod:`v4jax.solvers.engine.result`.

    B bands, T targets, G candidate band weightings, A alphas; the grid has G x A rows,
    candidate-major (row ``g * A + a`` is candidate g with alpha a).

    Attributes:
      grid: (G * A, B + 1) one row per (candidate, alpha) pair: the B band weights, then alpha.
      cv_scores: (G * A, T) held-out score averaged over folds, in the rows of ``grid``.
      best_index: (T,) each target's row of ``grid``.
      on_edge: (T,) True where the chosen alpha is the alpha grid's smallest or largest value.
      coef: (sum of n_features_b, T) coefficients over the concatenated bands, in the original
        feature units (the penalty of band b is ``best_band_alphas[b]``); a property, formed
        from ``dual_coef`` on first access, then cached (:meth:`predict` does not need it).
      intercept: (T,) intercepts (zeros when ``fit_intercept=False``).
      best_alphas: (T,) the overall alpha of each target's best candidate.
      band_scales: (B, T) the chosen band weights ``w_b`` (each column sums to 1).
      best_band_alphas: (B, T) per-band penalties ``best_alphas / band_scales``.
      candidates: (G, B) the candidate band weights, rows on the simplex.
      alphas: (A,) the alpha grid, as given.
      best_candidate_index: (T,) row of ``candidates`` chosen per target.
      best_alpha_index: (T,) index of each target's alpha in ``alphas``.
      band_slices: the rows of ``coef`` (columns of the concatenated design) of each band.
      score: "r2" or "pearson".
      dual_coef: (n_samples, T) dual coefficients ``a`` of the scaled design:
        ``coef_b = band_scales[b] * (X_b - mean_b)ᵀ a``.

    The result keeps references to the band designs it was fitted on (not copies): do not
    modify them in place before ``coef`` or :meth:`predict` has used them.
    """

    grid: np.ndarray
    cv_scores: jax.Array
    best_index: jax.Array
    on_edge: jax.Array
    intercept: jax.Array
    best_alphas: jax.Array
    band_scales: jax.Array
    best_band_alphas: jax.Array
    candidates: np.ndarray
    alphas: np.ndarray
    best_candidate_index: jax.Array
    best_alpha_index: jax.Array
    band_slices: tuple[slice, ...]
    score: str
    dual_coef: jax.Array
    _bands: tuple[Any, ...] = dataclasses.field(repr=False, compare=False)
    _means: tuple[jax.Array, ...] = dataclasses.field(repr=False, compare=False)
    _target_mean: jax.Array = dataclasses.field(repr=False, compare=False)
    _dtype: np.dtype = dataclasses.field(repr=False, compare=False)
    _feature_block_size: int = dataclasses.field(repr=False, compare=False)
    _mesh: Any = dataclasses.field(repr=False, compare=False)

    @property
    def cv_scores_by_candidate(self) -> jax.Array:
        """(G, A, T) ``cv_scores`` with the candidate and alpha axes apart."""
        return self.cv_scores.reshape(len(self.candidates), len(self.alphas), -1)

    @functools.cached_property
    def coef(self) -> jax.Array:
        """(sum of n_features_b, T) ``band_scales[b] * (X_b - mean_b)ᵀ dual_coef``, cached."""
        return jnp.concatenate(
            [
                kernels.transpose_product(
                    band,
                    self.dual_coef,
                    mean,
                    dtype=self._dtype,
                    block=self._feature_block_size,
                    mesh=self._mesh,
                )
                * scale
                for band, mean, scale in zip(
                    self._bands, self._means, self.band_scales, strict=True
                )
            ]
        )

    def band_coef(self, band: int) -> jax.Array:
        """(n_features_band, T) the coefficients of one band."""
        return self.coef[self.band_slices[band]]

    def predict(self, X: Any) -> jax.Array:
        """(n, T) predictions ``X @ coef + intercept``.

        Args:
          X: a list of the B bands of the new samples, band b of shape (n, n_features_b), or
            their concatenation (n, sum of n_features_b), bands in the order of the fit.

        While ``coef`` has not been formed, this goes through each band's kernel of the new
        samples against the fitted ones, ``sum_b (X_b - mean_b)(X_b_fit - mean_b)ᵀ (w_b a)``,
        streaming feature blocks, instead of forming the coefficients.
        """
        bands = self._new_bands(X)
        if "coef" in self.__dict__:
            design = jnp.concatenate([jnp.asarray(band, dtype=self._dtype) for band in bands], 1)
            return design @ self.coef + self.intercept
        prediction = self._target_mean
        for new, band, mean, scale in zip(
            bands, self._bands, self._means, self.band_scales, strict=True
        ):
            kernel = kernels.cross_kernel(
                new,
                band,
                mean,
                dtype=self._dtype,
                block=self._feature_block_size,
                mesh=self._mesh,
            )
            prediction = prediction + kernel @ (self.dual_coef * scale)
        return prediction

    def _new_bands(self, X: Any) -> list[Any]:
        widths = [band.shape[1] for band in self._bands]
        if isinstance(X, (np.ndarray, jax.Array)) or not isinstance(X, Sequence):
            X = _validation.as_2d_float(X, "X")
            if X.shape[1] != sum(widths):
                raise ValueError(
                    f"X has {X.shape[1]} features but the bands fitted have {sum(widths)} "
                    f"together ({widths}); pass the bands concatenated in the order of the fit, "
                    "or a list of bands."
                )
            return [X[:, band] for band in self.band_slices]
        if len(X) != len(widths):
            raise ValueError(f"X has {len(X)} bands but the fit had {len(widths)}.")
        bands = [_validation.as_2d_float(band, f"X[{number}]") for number, band in enumerate(X)]
        for number, (band, width) in enumerate(zip(bands, widths, strict=True)):
            if band.shape[1] != width:
                raise ValueError(
                    f"X[{number}] has {band.shape[1]} features but band {number} was fitted "
                    f"on {width}."
                )
            _validation.check_same_samples(bands[0], band, ("X[0]", f"X[{number}]"))
        return bands


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
    devices: Sequence[jax.Device] | None = None,
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
      cv: int (contiguous folds), scikit-learn splitter, list of (train, test) index arrays, or
        ``"loo"`` (leave-one-out), as :func:`v4jax.ridge_cv`.
      fit_intercept: centre the designs and Y on each training set.
      score: "r2" or "pearson", the held-out score that selects (band weights, alpha).
      ratios: (R,) grid of weight ratios of bands 2..B to band 1.
      n_iter: number of random-search candidates (equal weights + Dirichlet draws).
      band_weights: (G, B) explicit positive candidate weights (rows are normalised to sum 1).
      concentration: Dirichlet concentration of the random search.
      seed: seed of the random search.
      target_batch_size: targets per device batch (bounds memory); None for all at once.
      feature_block_size: features per block when building kernels and coefficients.
      progress: show progress bars over candidates (default: when there is more than one) and
        over the kernels' feature blocks (default: when there are many).
      devices: devices to shard the voxels over (None: all local devices), as
        :func:`v4jax.ridge_cv`: kernels and decompositions are replicated, per-voxel outputs
        come back sharded over the voxel axis.
      dtype: compute dtype, "float32" or "float64" (None: float64 when JAX's x64 mode is on and
        the inputs are float64, else float32), as :func:`v4jax.ridge_cv`.

    Returns:
      :class:`BandedRidgeCVResult`; float32, or float64 when JAX x64 is on and inputs are
      float64. Warns with a :class:`~v4jax.solvers.diagnostics.ConditioningWarning` when the
      refit at the smallest alpha chosen with some candidate cannot be trusted in that dtype.

    Example:
      >>> result = banded_ridge_cv([X_conv2, X_conv3], Y, np.logspace(-2, 6, 17), cv=5)
      >>> result.best_band_alphas.shape, result.predict([X_conv2_new, X_conv3_new]).shape
      ((2, n_targets), (n_new, n_targets))
    """
    bands = _check_bands(Xs)
    Y = _validation.as_2d_float(Y, "Y", allow_1d=True)
    for number, X in enumerate(bands):
        _validation.check_same_samples(X, Y, (f"Xs[{number}]", "Y"))
    alpha_grid = _validation.check_alphas(alphas)
    _validation.check_choice(score, "score", SCORES)
    feature_block_size = _validation.check_positive_int(feature_block_size, "feature_block_size")
    candidates = _candidates(len(bands), ratios, n_iter, band_weights, concentration, seed)
    n_samples = Y.shape[0]
    folds = cv if isinstance(cv, str) else make_folds(cv, n_samples)
    dtype = _validation.resolve_dtype(dtype, *bands, Y)
    mesh = voxel_mesh(devices)

    grams = [
        kernels.centred_gram(
            X,
            fit_intercept=fit_intercept,
            dtype=dtype,
            block=feature_block_size,
            mesh=mesh,
            progress=progress,
        )
        for X in bands
    ]
    band_kernels = tuple(gram.kernel for gram in grams)
    show = progress if progress is not None else len(candidates) > 1
    choice, spectra, candidate_scores = None, [], []
    for weights in tqdm(
        replicate(candidates, mesh, dtype), desc="banded ridge candidates", disable=not show
    ):
        decomposition = prepare_ridge_from_kernel(
            _weighted_kernel(band_kernels, weights),
            folds,
            fit_intercept=fit_intercept,
            devices=devices,
            dtype=dtype,
        )
        with warnings.catch_warnings():
            # Checked below, at the alphas of the candidates the targets chose.
            warnings.simplefilter("ignore", ConditioningWarning)
            fitted = ridge_cv_targets(
                decomposition, Y, alpha_grid, score=score, target_batch_size=target_batch_size
            )
        spectra.append(np.asarray(decomposition.basis.eigenvalues))
        candidate_scores.append(fitted.cv_scores)
        choice = _keep_better(choice, len(candidate_scores) - 1, fitted)
    best_candidate, best_alpha_index, _, dual, target_mean = choice

    alphas_device = replicate(alpha_grid, mesh, dtype)
    best_alphas = alphas_device[best_alpha_index]
    band_scales = replicate(candidates, mesh, dtype)[best_candidate].T
    _check_chosen_conditioning(spectra, best_candidate, best_alphas, dtype)
    intercept = target_mean - sum(
        scale * (gram.design_dot_mean @ dual)
        for gram, scale in zip(grams, band_scales, strict=True)
    )
    n_alphas = len(alpha_grid)
    sizes = np.cumsum([0] + [X.shape[1] for X in bands])
    return BandedRidgeCVResult(
        grid=np.column_stack(
            [np.repeat(candidates, n_alphas, axis=0), np.tile(alpha_grid, len(candidates))]
        ),
        cv_scores=jnp.concatenate(candidate_scores),
        best_index=best_candidate * n_alphas + best_alpha_index,
        on_edge=grid_edge(best_alpha_index, n_alphas),
        intercept=intercept,
        best_alphas=best_alphas,
        band_scales=band_scales,
        best_band_alphas=best_alphas[None, :] / band_scales,
        candidates=candidates,
        alphas=alpha_grid,
        best_candidate_index=best_candidate,
        best_alpha_index=best_alpha_index,
        band_slices=tuple(slice(int(a), int(b)) for a, b in itertools.pairwise(sizes)),
        score=score,
        dual_coef=dual,
        _bands=tuple(bands),
        _means=tuple(gram.mean for gram in grams),
        _target_mean=target_mean,
        _dtype=dtype,
        _feature_block_size=feature_block_size,
        _mesh=mesh,
    )


def _keep_better(choice: tuple | None, candidate: int, fitted: Any) -> tuple:
    """(candidate, alpha index, score, dual coef, Y mean) per target, keeping the better fit.

    A candidate replaces the kept one where its best score is strictly higher (or NaN where the
    kept one is not), as ``argmax`` over the candidate-major grid: ties keep the first.
    """
    score = jnp.take_along_axis(fitted.cv_scores, fitted.best_index[None, :], axis=0)[0]
    new = (jnp.full_like(fitted.best_index, candidate), fitted.best_index, score,
           fitted.dual_coef, fitted.intercept)  # fmt: skip
    if choice is None:
        return new
    kept = choice[2]
    better = (score > kept) | (jnp.isnan(score) & ~jnp.isnan(kept))
    return tuple(jnp.where(better, a, b) for a, b in zip(new, choice, strict=True))


def _check_chosen_conditioning(
    spectra: list[np.ndarray], best_candidate: jax.Array, best_alphas: jax.Array, dtype: Any
) -> None:
    """Warn once, for the worst candidate, when a refit at a chosen alpha is untrustworthy.

    Each candidate is checked at the smallest alpha among the targets that chose it.
    """
    chosen = np.asarray(best_candidate)
    alphas = np.asarray(best_alphas)
    measured = [
        conditioning(spectra[index], [alphas[chosen == index].min()], dtype)
        for index in np.unique(chosen)
    ]
    worst = max(measured, key=lambda item: item.error_bound)
    if not worst.trustworthy:
        warnings.warn(condition_message(worst), ConditioningWarning, stacklevel=3)


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
def _weighted_kernel(band_kernels: tuple[jax.Array, ...], weights: jax.Array) -> jax.Array:
    """(n, n) ``sum_b w_b K_b``: the kernel of the scaled design ``[sqrt(w_b) X_b]``."""
    return sum(weight * kernel for weight, kernel in zip(weights, band_kernels, strict=True))


__all__ = [
    "BandedRidgeCVResult",
    "band_weight_grid",
    "banded_ridge_cv",
    "dirichlet_band_weights",
]
