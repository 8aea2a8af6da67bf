"""Partial least squares regression: the PLS names in one place.

The solvers live in :mod:`v4jax.solvers.pls2` (multi-target PLS2, equal to scikit-learn's
``PLSRegression``) and :mod:`v4jax.solvers.pls1` (per-voxel PLS1 over a component grid, on
the fold kernels' eigenbases); :mod:`v4jax.solvers.pls_common` holds what they share.
"""

from v4jax.solvers.pls1 import (
    _PLS1_OUTPUT_NDIMS,
    PLS1CVResult,
    PLS1Decomposition,
    _pls1_batch,
    _PLS1Settings,
    _PLS1Shared,
    pls1_cv,
    pls1_cv_targets,
    pls1_path,
    prepare_pls1,
)
from v4jax.solvers.pls2 import PLS2CVResult, PLS2Result, pls2_cv, pls2_fit
from v4jax.solvers.pls_common import DEFAULT_TARGET_BATCH, SOLVERS, as_component_grid

__all__ = [
    "DEFAULT_TARGET_BATCH",
    "SOLVERS",
    "_PLS1_OUTPUT_NDIMS",
    "PLS1CVResult",
    "PLS1Decomposition",
    "PLS2CVResult",
    "PLS2Result",
    "_PLS1Settings",
    "_PLS1Shared",
    "_pls1_batch",
    "as_component_grid",
    "pls1_cv",
    "pls1_cv_targets",
    "pls1_path",
    "pls2_cv",
    "pls2_fit",
    "prepare_pls1",
]
