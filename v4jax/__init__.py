"""v4jax: predict fMRI voxel responses from deep-network features, fast and exactly.

Solvers are pure functions on arrays (``ridge_cv``, ``pls1_cv``, ``pls2_fit``,
``banded_ridge_cv``, ``fit_readout``); thin scikit-learn estimators sit on top (``RidgeCV``,
``PLS1CV``, ``PLSRegression``), all in ``v4jax.solvers``. ``v4jax.data`` reads vim-1,
``v4jax.features`` runs AlexNet and the retina warp, ``v4jax.pipeline`` runs the study, sweeps,
figures and the command line.
"""

from v4jax import data
from v4jax._runtime import configure_xla
from v4jax.features.extraction import RandomWeightsWarning, extract, extract_to_hdf5
from v4jax.features.images import prepare_images
from v4jax.features.models import AlexNet, apply_alexnet, init_params
from v4jax.features.retina import (
    RetinaWarp,
    retina_fit,
    retina_grid,
    retina_warp,
    valid_output_sizes,
)
from v4jax.features.weights import load_weights, save_params
from v4jax.metrics import (
    bootstrap_ci,
    ceiling_normalised,
    noise_ceiling_from_ncsnr,
    noise_ceiling_ncsnr,
    pearson_columns,
    permutation_null,
    permutation_pvalues,
    r2_columns,
)
from v4jax.solvers.banded import BandedRidgeCVResult, banded_ridge_cv
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.estimators import PLS1CV, BandedRidgeCV, PLSRegression, RidgeCV
from v4jax.solvers.fwrf import FwRFCVResult, fwrf_cv, pooled_designs
from v4jax.solvers.pls import (
    PLS1CVResult,
    PLS2CVResult,
    PLS2Result,
    pls1_cv,
    pls1_path,
    pls2_cv,
    pls2_fit,
)
from v4jax.solvers.readout import FactorisedReadout, ReadoutResult, fit_readout, predict_readout
from v4jax.solvers.ridge import (
    RidgeCVResult,
    heldout_predictions,
    prepare_ridge,
    ridge_cv,
    ridge_cv_targets,
    ridge_path,
)

__version__ = "0.1.0"

__all__ = [
    "PLS1CV",
    "AlexNet",
    "BandedRidgeCV",
    "BandedRidgeCVResult",
    "FactorisedReadout",
    "FwRFCVResult",
    "PLS1CVResult",
    "PLS2CVResult",
    "PLS2Result",
    "PLSRegression",
    "RandomWeightsWarning",
    "ReadoutResult",
    "RetinaWarp",
    "RidgeCV",
    "RidgeCVResult",
    "__version__",
    "apply_alexnet",
    "banded_ridge_cv",
    "bootstrap_ci",
    "ceiling_normalised",
    "configure_xla",
    "data",
    "extract",
    "extract_to_hdf5",
    "fit_readout",
    "fwrf_cv",
    "heldout_predictions",
    "init_params",
    "load_weights",
    "make_folds",
    "noise_ceiling_from_ncsnr",
    "noise_ceiling_ncsnr",
    "pearson_columns",
    "permutation_null",
    "permutation_pvalues",
    "pls1_cv",
    "pls1_path",
    "pls2_cv",
    "pls2_fit",
    "pooled_designs",
    "predict_readout",
    "prepare_images",
    "prepare_ridge",
    "r2_columns",
    "retina_fit",
    "retina_grid",
    "retina_warp",
    "ridge_cv",
    "ridge_cv_targets",
    "ridge_path",
    "save_params",
    "valid_output_sizes",
]
