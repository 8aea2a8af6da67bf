"""Numerical diagnostics: is a ridge solve trustworthy in the dtype it ran in?

Ridge along a decomposition applies the filter factors ``1 / (lam + alpha)`` (dual path, ``lam``
the eigenvalues of the centred kernel) or ``s / (s² + alpha)`` (primal path, ``s`` the singular
values of the centred design, ``lam = s²``). A symmetric eigensolver perturbs every eigenvalue
by about ``floor = sqrt(n) * eps * lam_max`` (an SVD every singular value by about
``sqrt(n) * eps * s_max``, i.e. ``floor = (sqrt(n) * eps * s_max)²`` on ``lam``). Eigenvalues
below the floor are indistinguishable from zero; each one above it carries a relative error of
about ``floor / lam``, which reaches the solution damped by alpha::

    error_bound = max over lam > floor of  floor / (lam + alpha)
    condition_number = (lam_max + alpha) / (smallest lam > floor + alpha)

The bound is evaluated at the smallest alpha given (the engines pass the smallest alpha any
target chose). When it exceeds ``tolerance`` (default 1e-2), :func:`check_conditioning` warns
with the measured numbers and what to do: compute in float64, or start the alpha grid higher.
The bound is normwise: measured errors on the test designs lie between 1/50 and 50 times it.

Example:
  >>> s = jnp.linalg.svd(X - X.mean(0), compute_uv=False)
  >>> check_conditioning(s, alphas, X.dtype, kind="singular")
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from v4jax._validation import check_alphas, check_choice

KINDS = ("singular", "eigen")
DEFAULT_TOLERANCE = 1e-2


class ConditioningWarning(UserWarning):
    """The solve's estimated rounding error exceeds the tolerance for its dtype."""


@dataclasses.dataclass(frozen=True)
class Conditioning:
    """What :func:`conditioning` measured.

    Attributes:
      condition_number: ``(lam_max + a) / (smallest resolved lam + a)`` at the smallest alpha.
      alpha: the alpha it was evaluated at (the grid's smallest).
      error_bound: estimated relative rounding error of the solution (module docstring).
      dtype: the compute dtype whose ``eps`` was used.
      trustworthy: ``error_bound <= tolerance``.
    """

    condition_number: float
    alpha: float
    error_bound: float
    dtype: np.dtype
    trustworthy: bool


def conditioning(
    spectrum: Any,
    alphas: Any,
    dtype: Any,
    *,
    kind: str = "eigen",
    tolerance: float = DEFAULT_TOLERANCE,
) -> Conditioning:
    """Measure the regularised condition number of one decomposition and its error bound.

    Args:
      spectrum: (rank,) eigenvalues of the centred kernel (``kind="eigen"``) or singular values
        of the centred design (``kind="singular"``), as returned by the decomposition (numpy
        or JAX, any order; tiny negative eigenvalues from rounding count as 0).
      alphas: (n_alphas,) positive ridge grid; the smallest is the worst case.
      dtype: the dtype the solve ran in (float32 or float64).
      kind: "eigen" or "singular".
      tolerance: largest acceptable relative error.

    Returns:
      :class:`Conditioning`.
    """
    check_choice(kind, "kind", KINDS)
    grid = check_alphas(alphas)
    values = np.asarray(spectrum, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(
            f"spectrum must be a non-empty vector of finite values, got shape {values.shape}; "
            "pass the singular values or kernel eigenvalues of the decomposition."
        )
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating dtype (float32 or float64), got {dtype}.")
    if kind == "singular":
        eigenvalues = values**2
        floor = (np.sqrt(values.size) * np.finfo(dtype).eps * np.abs(values).max()) ** 2
    else:
        eigenvalues = values
        floor = np.sqrt(values.size) * np.finfo(dtype).eps * np.abs(values).max()
    alpha = float(grid.min())
    resolved = eigenvalues[eigenvalues > floor]
    if resolved.size == 0:
        resolved = np.array([max(float(eigenvalues.max()), 0.0)])
    kappa = float((resolved.max() + alpha) / (resolved.min() + alpha))
    bound = float(np.max(floor / (resolved + alpha)))
    return Conditioning(
        condition_number=kappa,
        alpha=alpha,
        error_bound=bound,
        dtype=dtype,
        trustworthy=bound <= tolerance,
    )


def check_conditioning(
    spectrum: Any,
    alphas: Any,
    dtype: Any,
    *,
    kind: str = "eigen",
    tolerance: float = DEFAULT_TOLERANCE,
    stacklevel: int = 2,
) -> Conditioning:
    """:func:`conditioning`, warning with a :class:`ConditioningWarning` when untrustworthy.

    The message gives the measured condition number, the alpha, the dtype and the estimated
    error, and says what to do (float64 inputs with ``jax_enable_x64``, or a larger smallest
    alpha).
    """
    measured = conditioning(spectrum, alphas, dtype, kind=kind, tolerance=tolerance)
    if not measured.trustworthy:
        warnings.warn(condition_message(measured, tolerance), ConditioningWarning, stacklevel)
    return measured


def condition_message(measured: Conditioning, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """The warning text for an untrustworthy :class:`Conditioning`."""
    advice = (
        "pass float64 inputs with jax.config.update('jax_enable_x64', True)"
        if measured.dtype == np.float32
        else "the solve is near float64's limit"
    )
    return (
        f"ill-conditioned ridge solve in {measured.dtype.name}: condition number "
        f"{measured.condition_number:.2e} at the smallest alpha {measured.alpha:.3g}, estimated "
        f"relative error {measured.error_bound:.1e} > {tolerance:.0e}. Results for small alphas "
        f"may be wrong: {advice}, or start the alpha grid higher (the error falls as alpha "
        "grows), or standardise/remove near-duplicate features."
    )
