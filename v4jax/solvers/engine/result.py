"""The result protocol every cross-validated solver returns, and what the pipeline reads.

Every result of a cross-validated v4jax solver (``ridge_cv``, ``banded_ridge_cv``, ``pls1_cv``,
``pls2_cv``, ...) has:

* ``grid``: (n_grid,) the values scored (alphas, component counts; for banded ridge one row per
  (band weights, alpha) pair, (n_grid, n_bands + 1));
* ``cv_scores``: (n_grid, n_targets) held-out score of every grid value, averaged over folds;
* ``best_index``: (n_targets,) each target's chosen row of ``grid``;
* ``on_edge``: (n_targets,) True where the choice sits at the edge of the grid (the optimum may lie
  outside it: widen the grid);
* ``coef``: (n_features, n_targets) and ``intercept``: (n_targets,), with
  ``predict(X) == X @ coef + intercept``;
* ``predict(X)``: (n, n_targets) predictions for (n, n_features) ``X``;

plus the method's named choice (``best_alphas``, ``best_n_components``, ...). Code that reads a
result (the study, the sweep, the estimators) uses only these names, never the method.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np


@runtime_checkable
class CrossValidatedResult(Protocol):
    """What every cross-validated solver's result provides (see the module docstring)."""

    grid: Any
    cv_scores: jax.Array
    best_index: jax.Array
    on_edge: jax.Array

    @property
    def coef(self) -> jax.Array: ...

    @property
    def intercept(self) -> jax.Array: ...

    def predict(self, X: Any) -> jax.Array: ...


def grid_edge(best_index: jax.Array, n_grid: int) -> jax.Array:
    """(n_targets,) True where ``best_index`` is the first or last of ``n_grid`` values."""
    return (best_index == 0) | (best_index == n_grid - 1)


def chosen_values(result: CrossValidatedResult) -> np.ndarray:
    """(n_targets,) or (n_targets, k) the grid value each target chose, on the host."""
    return np.asarray(result.grid)[np.asarray(result.best_index)]


class RecordedGrid(NamedTuple):
    """A result seen through one hyperparameter, as the results files record it (host arrays).

    Attributes: values (G',) the grid's last column, in the grid's order, each value once;
    cv_scores (G', T) each value's best cv score over the grid rows that share it; chosen (T,)
    each target's value; chosen_index (T,) its index in ``values``.
    """

    values: np.ndarray
    cv_scores: np.ndarray
    chosen: np.ndarray
    chosen_index: np.ndarray


def recorded_grid(result: CrossValidatedResult) -> RecordedGrid:
    """One hyperparameter per fit: a grid with several columns (banded ridge's band weights then
    alpha; fwRF's field then alpha) is recorded by its last column; a 1-D grid as it is."""
    grid, cv_scores = np.asarray(result.grid), np.asarray(result.cv_scores)
    best_index = np.asarray(result.best_index)
    if grid.ndim == 1:
        return RecordedGrid(grid, cv_scores, grid[best_index], best_index)
    column = grid[:, -1]
    _, first = np.unique(column, return_index=True)
    values = column[np.sort(first)]
    scores = np.stack([cv_scores[column == value].max(axis=0) for value in values])
    chosen = column[best_index]
    return RecordedGrid(values, scores, chosen, _positions(values, chosen))


def _positions(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """(T,) the index of each chosen value in ``values`` (which holds each value once)."""
    order = np.argsort(values)
    return order[np.searchsorted(values, chosen, sorter=order)]


def best_scores(result: CrossValidatedResult) -> jax.Array:
    """(n_targets,) each target's held-out score at its chosen grid value."""
    columns = jnp.arange(result.cv_scores.shape[1])
    return result.cv_scores[result.best_index, columns]
