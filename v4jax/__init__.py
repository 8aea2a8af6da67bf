"""v4jax: predict fMRI voxel responses from deep-network features, fast and exactly."""

from v4jax.cv import make_folds
from v4jax.estimators import RidgeCV
from v4jax.metrics import pearson_columns, r2_columns
from v4jax.ridge import RidgeCVResult, ridge_cv, ridge_path

__version__ = "0.1.0"

__all__ = [
    "RidgeCV",
    "RidgeCVResult",
    "__version__",
    "make_folds",
    "pearson_columns",
    "r2_columns",
    "ridge_cv",
    "ridge_path",
]
