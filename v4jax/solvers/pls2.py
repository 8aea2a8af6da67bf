"""Multi-target PLS regression (PLS2), equal to scikit-learn's ``PLSRegression``.

:func:`pls2_fit` and :func:`pls2_cv` follow scikit-learn's definition exactly: NIPALS with its
power-iteration inner loop (same start, update, stopping rule and ``max_iter``), regression-mode
deflation of X and Y, the ``svd_flip`` sign convention on the X weights, and
``coef = W (PᵀW)⁻¹ Qᵀ`` rescaled to the original units.

One NIPALS loop serves both paths; it works on a factor ``F`` of the design with
``F Fᵀ = X Xᵀ``: the standardised design itself on the primal path (n_features <= n_samples),
``U diag(√λ)`` from the eigendecomposition of its (n, n) kernel on the dual path. scikit-learn's
power iteration ``w ∝ X_kᵀ u``, ``t = X_k w``, ``u ∝ Y_k Y_kᵀ t`` is, in ``F``'s coordinates,
``w ← S w / ‖S w‖`` with the symmetric ``S = F_kᵀ Y_k Y_kᵀ F_k`` (r x r): one matrix-vector
product per iteration instead of a pass over the kernel (or design) and two over the
responses, with the same iterates and the same stopping test (``‖w - w_old‖²``, an isometry
of scikit-learn's). ``S`` is formed once and deflated with each component by rank-one and
rank-two updates. The last iterate's Y score is rebuilt as scikit-learn computes it, so the
weights, scores and iteration counts (converged or not) are scikit-learn's.

On the dual path every X weight is ``w = X_kᵀ a`` for a sample-space vector ``a``; the weights
and loadings ``W = Xᵀ A``, ``P = Xᵀ T diag(1/tᵀt)`` are formed once at the end, streaming
feature blocks. The sign of a component does not change later components, so the ``svd_flip``
signs are applied then.

Components whose score vanishes (the response residual is already zero, or the design has no
rank left) are set to zero with a warning instead of dividing by zero; scikit-learn stops early
in the same situation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from tqdm.auto import tqdm

from v4jax import _validation
from v4jax.metrics import SCORES, score_columns
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.kernels import (
    DEFAULT_FEATURE_BLOCK,
    centred_gram,
    transpose_product,
)
from v4jax.solvers.engine.result import grid_edge
from v4jax.solvers.pls_common import (
    _KERNEL_FLOOR,
    _VANISHING_FLOOR,
    _check_component_count,
    _check_grid_against_folds,
    _check_pls_inputs,
    _check_tolerance,
    _column_moments,
    _design_on_mesh,
    _fold_design,
    _FoldDesign,
    _linear_prediction,
    _Moments,
    _safe,
    _shared_kernel,
    _single_device_mesh,
    _standardised,
    _Stream,
    _warn_dropped_components,
    _warn_unconverged,
    as_component_grid,
)


@dataclasses.dataclass(frozen=True)
class PLS2Result:
    """Result of :func:`pls2_fit` (attributes named as scikit-learn's ``PLSRegression``).

    Attributes:
      x_weights: (n_features, n_components). y_weights: (n_targets, n_components).
      x_loadings: (n_features, n_components). y_loadings: (n_targets, n_components).
      x_scores: (n_samples, n_components). y_scores: (n_samples, n_components).
      x_rotations: (n_features, n_components) ``W (PᵀW)⁻¹``, maps standardised X to scores.
      coef: (n_features, n_targets) coefficients in the original units.
      intercept: (n_targets,) so that ``predict(X) = X @ coef + intercept`` (scikit-learn
        instead stores ``y_mean`` as ``intercept_`` and subtracts ``x_mean`` inside predict;
        the predictions are the same).
      x_mean, x_std: (n_features,). y_mean, y_std: (n_targets,). Stds are 1 unless ``scale``.
      n_iter: (n_components,) power-method iterations per component (0 for a dropped one).
      n_active: components actually fitted (fewer than asked when the residual vanished).
      solver: "primal" or "dual".
    """

    x_weights: jax.Array
    y_weights: jax.Array
    x_loadings: jax.Array
    y_loadings: jax.Array
    x_scores: jax.Array
    y_scores: jax.Array
    x_rotations: jax.Array
    coef: jax.Array
    intercept: jax.Array
    x_mean: jax.Array
    x_std: jax.Array
    y_mean: jax.Array
    y_std: jax.Array
    n_iter: jax.Array
    n_active: int
    solver: str

    def predict(self, X: Any) -> jax.Array:
        """(n, n_targets) predictions ``X @ coef + intercept`` for (n, n_features) ``X``."""
        return _linear_prediction(X, self.coef, self.intercept)


@dataclasses.dataclass(frozen=True)
class PLS2CVResult:
    """Result of :func:`pls2_cv`; a :class:`~v4jax.solvers.engine.result.CrossValidatedResult`.

    Attributes:
      grid: (n_grid,) the component counts scored, sorted.
      cv_scores: (n_grid, n_targets) held-out score per component count, averaged over folds.
      best_index: (n_targets,) index of ``best_n_components`` in ``grid``, the same for every
        target (PLS2 shares its components between targets, so there is one count).
      on_edge: (n_targets,) True where that count is the first or last of the grid.
      best_n_components: the count with the best score averaged over targets.
      fit: :class:`PLS2Result` refitted on all samples with ``best_n_components``.
      score: "r2" or "pearson".
      coef, intercept: the refit's (n_features, n_targets) and (n_targets,).
    """

    grid: np.ndarray
    cv_scores: jax.Array
    best_index: jax.Array
    on_edge: jax.Array
    best_n_components: int
    fit: PLS2Result
    score: str

    @property
    def coef(self) -> jax.Array:
        return self.fit.coef

    @property
    def intercept(self) -> jax.Array:
        return self.fit.intercept

    def predict(self, X: Any) -> jax.Array:
        """(n, n_targets) predictions ``X @ coef + intercept`` for (n, n_features) ``X``."""
        return self.fit.predict(X)


def pls2_fit(
    X: Any,
    Y: Any,
    n_components: int,
    *,
    scale: bool = False,
    max_iter: int = 500,
    tol: float = 1e-6,
    solver: str = "auto",
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
) -> PLS2Result:
    """Multi-target PLS regression, equal to scikit-learn's ``PLSRegression``.

    Args:
      X: (n_samples, n_features) design (numpy stays on the host on the dual path and is
        streamed to the device in feature blocks).
      Y: (n_samples, n_targets) or (n_samples,) responses.
      n_components: number of components, 1 <= n_components <= min(n_samples, n_features).
      scale: divide X and Y columns by their standard deviation (ddof=1), as scikit-learn.
      max_iter, tol: power-method limits, as scikit-learn (stop when ``‖w - w_old‖² < tol``).
      solver: "auto" (dual when n_features > n_samples), "primal" or "dual".
      feature_block_size: features per block when streaming X on the dual path.

    Returns:
      :class:`PLS2Result`; float32, or float64 when JAX x64 is on and inputs are float64.

    Example:
      >>> result = pls2_fit(X, Y, 25)
      >>> prediction = result.predict(X_new)
    """
    X, Y, dtype, solver = _check_pls_inputs(X, Y, solver)
    n_samples, n_features = X.shape
    limit = min(n_samples, n_features)
    n_components = _check_component_count(
        n_components, limit, f"min(n_samples, n_features) = {limit}"
    )
    max_iter = _validation.check_positive_int(max_iter, "max_iter")
    tol = _check_tolerance(tol)
    Y_device = jnp.asarray(Y, dtype=dtype)
    if solver == "primal":
        fit = _pls2_primal_fit(
            jnp.asarray(X, dtype=dtype), Y_device, n_components, max_iter, tol, scale
        )
    else:
        stream = _Stream(dtype, feature_block_size, _single_device_mesh())
        fit = _pls2_dual_fit(X, Y_device, n_components, max_iter, tol, scale, stream)
    components = fit.components
    n_active = int(jnp.sum(components.active))
    _warn_dropped_components(n_active, n_components, "PLS2")
    _warn_unconverged(components.n_iter, max_iter)
    rotations, coef, intercept = _pls2_coefficients(fit)
    return PLS2Result(
        x_weights=fit.weights,
        y_weights=components.y_weights,
        x_loadings=fit.loadings,
        y_loadings=components.y_loadings,
        x_scores=components.x_scores,
        y_scores=components.y_scores,
        x_rotations=rotations,
        coef=coef,
        intercept=intercept,
        x_mean=fit.x.mean,
        x_std=fit.x.std,
        y_mean=fit.y.mean,
        y_std=fit.y.std,
        n_iter=components.n_iter,
        n_active=n_active,
        solver=solver,
    )


def pls2_cv(
    X: Any,
    Y: Any,
    n_components: Any,
    *,
    cv: Any = 5,
    score: str = "r2",
    scale: bool = False,
    max_iter: int = 500,
    tol: float = 1e-6,
    solver: str = "auto",
    feature_block_size: int = DEFAULT_FEATURE_BLOCK,
    progress: bool = False,
) -> PLS2CVResult:
    """Cross-validated PLS2: every component count of the grid scored from one fit per fold.

    PLS2 with k components is the first k components of a fit with more (NIPALS is
    sequential, and the rotations ``W (PᵀW)⁻¹`` are nested because ``PᵀW`` is upper
    triangular), so each fold fits ``max(n_components)`` components once.

    Args:
      X: (n_samples, n_features). Y: (n_samples, n_targets) or (n_samples,).
      n_components: grid of component counts (an int K means 1..K).
      cv: int (contiguous folds), scikit-learn splitter, or list of (train, test) indices.
      score: "r2" or "pearson". scale, max_iter, tol, solver, feature_block_size: as
        :func:`pls2_fit`. progress: progress bar over folds.

    Returns:
      :class:`PLS2CVResult` with ``cv_scores`` (n_grid, n_targets) and the refit at the count
      with the best score averaged over targets.
    """
    X, Y, dtype, solver = _check_pls_inputs(X, Y, solver)
    _validation.check_choice(score, "score", SCORES)
    grid = as_component_grid(n_components)
    folds = make_folds(cv, X.shape[0])
    n_components_max = _check_grid_against_folds(grid, folds, X.shape[1])
    max_iter = _validation.check_positive_int(max_iter, "max_iter")
    tol = _check_tolerance(tol)
    Y_device = jnp.asarray(Y, dtype=dtype)
    stream = _Stream(dtype, feature_block_size, _single_device_mesh())
    design = _design_on_mesh(X, solver, stream)
    shared = _shared_kernel(design, solver, scale, stream, progress=False)
    fold_scores = []
    for train, test in tqdm(folds, desc="PLS2 folds", disable=not progress):
        fold = _fold_design(design, train, test, scale, solver, stream, shared)
        predictions = _pls2_fold_predictions(
            fold, Y_device[train], n_components_max, max_iter, tol, scale, solver == "dual"
        )
        fold_scores.append(score_columns(Y_device[test], predictions[grid - 1], score))
    cv_scores = jnp.mean(jnp.stack(fold_scores), axis=0)
    best_position = int(jnp.argmax(jnp.mean(cv_scores, axis=1)))
    best = int(grid[best_position])
    fit = pls2_fit(
        X,
        Y,
        best,
        scale=scale,
        max_iter=max_iter,
        tol=tol,
        solver=solver,
        feature_block_size=feature_block_size,
    )
    best_index = jnp.full(Y.shape[1], best_position)
    return PLS2CVResult(
        grid=grid,
        cv_scores=cv_scores,
        best_index=best_index,
        on_edge=grid_edge(best_index, grid.size),
        best_n_components=best,
        fit=fit,
        score=score,
    )


class _PLS2Components(NamedTuple):
    """Per-component outputs of a NIPALS fit (columns: components).

    ``weights`` is (n_features, K) X weights on the primal path, and (n_samples, K) sample-space
    vectors ``A`` with ``W = Xᵀ A`` on the dual path (signs not yet flipped there).
    """

    weights: jax.Array
    x_scores: jax.Array
    y_weights: jax.Array
    y_scores: jax.Array
    y_loadings: jax.Array
    n_iter: jax.Array
    active: jax.Array


def _prepare_residual(Y: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """scikit-learn's start: zero near-zero columns, start from the first non-constant one."""
    Y = jnp.where(jnp.all(jnp.abs(Y) < 10 * eps, axis=0), 0.0, Y)
    usable = jnp.any(jnp.abs(Y) > eps, axis=0)
    alive = jnp.any(usable)
    start = jnp.where(alive, Y[:, jnp.argmax(usable)], 1.0)
    return Y, start, alive


class _PowerState(NamedTuple):
    """The power method's carry: ``direction`` (r,) the current unit X weights in the factor's
    coordinates, ``previous`` (r,) the iterate before it, ``iteration`` the iterates so far."""

    iteration: jax.Array
    converged: jax.Array
    direction: jax.Array
    previous: jax.Array


class _Deflated(NamedTuple):
    """The NIPALS carry between components (r = the factor's columns).

    factor: (n, r) ``F_k`` with ``F_k F_kᵀ = X_k X_kᵀ`` (the deflated design itself on the
    primal path). cross: (r, q) ``F_kᵀ Y_k``. operator: (r, r) ``S_k = F_kᵀ Y_k Y_kᵀ F_k``.
    responses: (n, q) ``Y_k``. alive: no earlier component vanished.
    """

    factor: jax.Array
    cross: jax.Array
    operator: jax.Array
    responses: jax.Array
    alive: jax.Array


def _unit(vector: jax.Array) -> jax.Array:
    norm = jnp.sqrt(vector @ vector)
    return vector / jnp.where(norm > 0, norm, 1.0)


def _weights_from(factor: jax.Array, u: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """scikit-learn's X weights from a Y score ``u``: ``w = Xᵀu / uᵀu``, ``w /= ‖w‖ + eps``;
    returned in the factor's coordinates ``Fᵀ a`` with the sample-space vector ``a``
    (``w = X_kᵀ a``)."""
    uu = u @ u
    projected = u @ factor  # (written so, XLA on CPU does not transpose the factor)
    scale = 1.0 / (uu * (jnp.sqrt(projected @ projected) / uu + eps))
    return projected * scale, u * scale


@functools.partial(jax.jit, static_argnames=("n_components", "dual"))
def _pls2_nipals(
    factor: jax.Array,
    Y: jax.Array,
    n_components: int,
    max_iter: int,
    tol: float,
    dual: bool,
) -> tuple[_PLS2Components, jax.Array]:
    """scikit-learn's NIPALS (power method, regression deflation) on a factor of the design.

    The power method's X weights follow ``w ← S w / ‖S w‖`` with the (r, r) operator
    ``S = F_kᵀ Y_k Y_kᵀ F_k``: one (r, r) matrix-vector product per iteration instead of a
    pass over the kernel and two over the responses, and the same iterates as scikit-learn's
    ``w ∝ X_kᵀ u``, ``t = X_k w``, ``u ∝ Y_k Y_kᵀ t`` (``F_k`` has the Gram matrix of ``X_k``,
    so ``‖w - w_old‖`` is the same in either coordinates). ``S`` and ``F_kᵀ Y_k`` are deflated
    with the scores by rank-one and rank-two updates. The last iterate's Y score is rebuilt as
    scikit-learn's, so the weights, scores and iteration counts are scikit-learn's.

    Args:
      factor: (n, r) the standardised design (primal, r = n_features) or ``U diag(√λ)`` of
        its kernel (dual, r = n). Y: (n, q) standardised responses. n_components: K.
      max_iter, tol: scikit-learn's power-method limits. dual: which factor was given.

    Returns:
      the components (``weights``: (p, K) X weights on the primal path, (n, K) sample-space
      vectors ``a`` with ``w = Xᵀ a`` on the dual path, signs not yet flipped there) and the
      (r, K) X loadings ``F_kᵀ t / tᵀt`` (the X loadings themselves on the primal path).
    """
    n_samples, n_targets = Y.shape
    eps = jnp.finfo(Y.dtype).eps
    total = jnp.sum(factor**2)  # the kernel's trace
    floor = _VANISHING_FLOOR * eps**2 * total
    weight_rows = n_samples if dual else factor.shape[1]
    outputs = _empty_components(weight_rows, n_samples, n_targets, n_components, Y.dtype)
    loadings = jnp.zeros((factor.shape[1], n_components), Y.dtype)
    cross = factor.T @ Y
    initial = _Deflated(factor, cross, cross @ cross.T, Y, jnp.array(True))

    def component(k, carry):
        state, out, loadings = carry
        F, Y_k = state.factor, state.responses
        Y_k, start, y_alive = _prepare_residual(Y_k, eps)
        first = _unit(start @ F)

        def power_step(power: _PowerState) -> _PowerState:
            direction = _unit(state.operator @ power.direction)
            change = direction - power.direction
            converged = change @ change < tol
            return _PowerState(power.iteration + 1, converged, direction, power.direction)

        power = jax.lax.while_loop(
            lambda p: (~p.converged) & (p.iteration < max_iter),
            power_step,
            _PowerState(jnp.array(1), jnp.array(n_targets == 1), first, first),
        )
        # The Y score that gave the last iterate, as scikit-learn computes it.
        previous_scores = F @ power.previous
        y_weights = previous_scores @ Y_k / _safe(previous_scores @ previous_scores)
        u = Y_k @ y_weights / (y_weights @ y_weights + eps)
        u = jnp.where(power.iteration > 1, u, start)
        direction, a = _weights_from(F, u, eps)
        scores = F @ direction
        squared = scores @ scores
        active = state.alive & y_alive & (squared > floor)
        if dual:
            # ‖X_kᵀu‖² / ‖u‖² = 1 / ‖a‖² at the kernel's rounding level: no rank left in X_k.
            active = active & ((a @ a) * total * _KERNEL_FLOOR * eps < 1.0)
            weights = a
        else:
            weights = direction
        y_weights = scores @ Y_k / _safe(squared)
        sign = 1.0 if dual else _svd_flip_signs(weights[:, None])[0]
        weights, scores, y_weights = (
            jnp.where(active, v * sign, 0.0) for v in (weights, scores, y_weights)
        )
        squared = jnp.where(active, squared, 1.0)
        y_scores = Y_k @ y_weights / _safe(y_weights @ y_weights)
        y_loadings = scores @ Y_k / squared
        x_loadings = scores @ F / squared
        # Deflation: F ← F - t pᵀ, Y ← Y - t qᵀ, Fᵀ Y ← Fᵀ Y - p (tᵀ Y), and S = (FᵀY)(FᵀY)ᵀ
        # by the matching rank-two update.
        y_products = y_loadings * squared  # Y_kᵀ t
        cross = state.cross
        coupled = cross @ y_products  # F_kᵀ Y_k Y_kᵀ t
        operator = (
            state.operator
            - (jnp.outer(x_loadings, coupled) + jnp.outer(coupled, x_loadings))
            + jnp.outer(x_loadings, x_loadings) * (y_products @ y_products)
        )
        deflated = _Deflated(
            factor=F - jnp.outer(scores, x_loadings),
            cross=cross - jnp.outer(x_loadings, y_products),
            operator=operator,
            responses=Y_k - jnp.outer(scores, y_loadings),
            alive=active,
        )
        out = _store_component(
            out,
            k,
            weights,
            scores,
            y_weights,
            y_scores,
            y_loadings,
            jnp.where(active, power.iteration, 0),
            active,
        )
        return deflated, out, loadings.at[:, k].set(x_loadings)

    _, outputs, loadings = jax.lax.fori_loop(
        0, n_components, component, (initial, outputs, loadings)
    )
    return outputs, loadings


@jax.jit
def _kernel_factor(kernel: jax.Array) -> jax.Array:
    """(n, n) ``U diag(√λ)`` with ``K = U diag(λ) Uᵀ`` (negative rounding eigenvalues as 0)."""
    values, vectors = jnp.linalg.eigh(kernel)
    return vectors * jnp.sqrt(jnp.maximum(values, 0.0))


def _pls2_dual(
    kernel: jax.Array, Y: jax.Array, n_components: int, max_iter: int, tol: float
) -> _PLS2Components:
    """NIPALS on the (n, n) kernel of the standardised design; ``w_k = X_kᵀ a_k``."""
    return _pls2_nipals(_kernel_factor(kernel), Y, n_components, max_iter, tol, True)[0]


def _pls2_primal(
    X: jax.Array, Y: jax.Array, n_components: int, max_iter: int, tol: float
) -> tuple[_PLS2Components, jax.Array, jax.Array]:
    """scikit-learn's NIPALS on the standardised design; returns components, W and P."""
    outputs, loadings = _pls2_nipals(X, Y, n_components, max_iter, tol, False)
    return outputs, outputs.weights, loadings


def _empty_components(
    n_weight_rows: int, n_samples: int, n_targets: int, n_components: int, dtype: Any
) -> _PLS2Components:
    return _PLS2Components(
        weights=jnp.zeros((n_weight_rows, n_components), dtype),
        x_scores=jnp.zeros((n_samples, n_components), dtype),
        y_weights=jnp.zeros((n_targets, n_components), dtype),
        y_scores=jnp.zeros((n_samples, n_components), dtype),
        y_loadings=jnp.zeros((n_targets, n_components), dtype),
        n_iter=jnp.zeros(n_components, jnp.int32),
        active=jnp.zeros(n_components, bool),
    )


def _store_component(out: _PLS2Components, k: Any, *columns: jax.Array) -> _PLS2Components:
    return _PLS2Components(
        *(
            stored.at[..., k].set(jnp.asarray(column, stored.dtype))
            for stored, column in zip(out, columns, strict=True)
        )
    )


@jax.jit
def _dual_weights_and_loadings(
    fit: _PLS2Components, products: jax.Array
) -> tuple[_PLS2Components, jax.Array, jax.Array]:
    """X weights ``Xᵀ A`` and loadings ``Xᵀ T / tᵀt`` from their products, with svd_flip signs."""
    n_components = fit.x_scores.shape[1]
    weights = products[:, :n_components]
    loadings = products[:, n_components:] / _safe_square_norms(fit.x_scores)
    signs = _svd_flip_signs(weights)
    return _flip(fit, signs), weights * signs, loadings * signs


class _PLS2Fit(NamedTuple):
    """A NIPALS fit in the standardised space, with the moments that standardised it.

    components: :class:`_PLS2Components` (signs flipped; on the dual path ``weights`` still
      holds the sample-space vectors ``A``). weights: (n_features, K) X weights ``W``.
    loadings: (n_features, K) X loadings ``P``. x: moments of X, (n_features,) each.
    y: moments of Y, (n_targets,) each.
    """

    components: _PLS2Components
    weights: jax.Array
    loadings: jax.Array
    x: _Moments
    y: _Moments


@functools.partial(jax.jit, static_argnames=("n_components", "scale"))
def _pls2_primal_fit(
    X: jax.Array, Y: jax.Array, n_components: int, max_iter: int, tol: float, scale: bool
) -> _PLS2Fit:
    """Standardise, then NIPALS on the (n_samples, n_features) design."""
    X_standard, x_moments = _standardised(X, scale)
    Y_standard, y_moments = _standardised(Y, scale)
    components, weights, loadings = _pls2_primal(
        X_standard, Y_standard, n_components, max_iter, tol
    )
    return _PLS2Fit(components, weights, loadings, x_moments, y_moments)


def _pls2_dual_fit(
    X: Any, Y: jax.Array, n_components: int, max_iter: int, tol: float, scale: bool, stream: _Stream
) -> _PLS2Fit:
    """NIPALS on the kernel of the standardised design, then ``W`` and ``P`` streamed from X."""
    x_moments = _column_moments(X, np.arange(X.shape[0]), scale, stream)
    Y_standard, y_moments = _standardised(Y, scale)
    kernel = centred_gram(
        X, mean=x_moments.mean, std=x_moments.std, progress=False, **stream._asdict()
    ).kernel
    components = _pls2_dual(kernel, Y_standard, n_components, max_iter, tol)
    products = transpose_product(
        X,
        jnp.concatenate([components.weights, components.x_scores], axis=1),
        x_moments.mean,
        std=x_moments.std,
        **stream._asdict(),
    )
    components, weights, loadings = _dual_weights_and_loadings(components, products)
    return _PLS2Fit(components, weights, loadings, x_moments, y_moments)


@jax.jit
def _pls2_coefficients(fit: _PLS2Fit) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rotations ``W (PᵀW)⁻¹`` (n_features, K), coefficients in original units
    (n_features, n_targets) and intercepts (n_targets,)."""
    components = fit.components
    rotations = fit.weights @ _inverse_unit_triangle(
        fit.loadings.T @ fit.weights, components.active
    )
    coef = (rotations @ components.y_loadings.T) * fit.y.std / fit.x.std[:, None]
    return rotations, coef, fit.y.mean - fit.x.mean @ coef


@functools.partial(jax.jit, static_argnames=("n_components", "scale", "dual"))
def _pls2_fold_predictions(
    design: _FoldDesign,
    Y_train: jax.Array,
    n_components: int,
    max_iter: int,
    tol: float,
    scale: bool,
    dual: bool,
) -> jax.Array:
    """(K, n_test, n_targets) held-out predictions of one K-component fit, for 1..K components."""
    Y_standard, y_moments = _standardised(Y_train, scale)
    if dual:
        fit = _pls2_dual(design.train, Y_standard, n_components, max_iter, tol)
        cross = (fit.x_scores.T @ design.train @ fit.weights) / _safe_square_norms(fit.x_scores).T
        test_scores = design.test @ fit.weights @ _inverse_unit_triangle(cross, fit.active)
    else:
        fit, weights, loadings = _pls2_primal(design.train, Y_standard, n_components, max_iter, tol)
        rotations = weights @ _inverse_unit_triangle(loadings.T @ weights, fit.active)
        test_scores = design.test @ rotations
    y_loadings = fit.y_loadings * y_moments.std[:, None]
    return _cumulative_predictions(test_scores, y_loadings, y_moments.mean)


def _svd_flip_signs(weights: jax.Array) -> jax.Array:
    """(K,) sign of each column's largest-magnitude entry (scikit-learn's ``_svd_flip_1d``)."""
    largest = jnp.argmax(jnp.abs(weights), axis=0)
    signs = jnp.sign(weights[largest, jnp.arange(weights.shape[1])])
    return jnp.where(signs == 0, 1.0, signs).astype(weights.dtype)


def _flip(fit: _PLS2Components, signs: jax.Array) -> _PLS2Components:
    return fit._replace(
        weights=fit.weights * signs,
        x_scores=fit.x_scores * signs,
        y_weights=fit.y_weights * signs,
        y_scores=fit.y_scores * signs,
        y_loadings=fit.y_loadings * signs,
    )


def _safe_square_norms(columns: jax.Array) -> jax.Array:
    """(1, K) squared column norms, 1 where a column is zero (a dropped component)."""
    return _safe(jnp.sum(columns**2, axis=0, keepdims=True))


def _inverse_unit_triangle(cross: jax.Array, active: jax.Array) -> jax.Array:
    """Inverse of ``PᵀW`` (upper triangular, unit diagonal for fitted components).

    Dropped components get an identity row and column (their W and P columns are zero), which
    is what the pseudo-inverse scikit-learn uses gives them.
    """
    both = active[:, None] & active[None, :]
    upper = jnp.triu(jnp.where(both, cross, 0.0)) + jnp.diag(jnp.where(active, 0.0, 1.0))
    return solve_triangular(upper, jnp.eye(upper.shape[0], dtype=upper.dtype), lower=False)


def _cumulative_predictions(
    test_scores: jax.Array, y_loadings: jax.Array, y_mean: jax.Array
) -> jax.Array:
    """(K, n_test, n_targets) predictions with 1..K components: cumulative rank-one terms."""
    terms = test_scores.T[:, :, None] * y_loadings.T[:, None, :]
    return jnp.cumsum(terms, axis=0) + y_mean
