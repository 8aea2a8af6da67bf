"""The results files' layout, in one place: :mod:`.study` and :mod:`.sweep` write it,
:mod:`.report` reads it.

Study results (``results.h5``, by :func:`v4jax.pipeline.study.fit_study`)::

    attrs: config, versions (JSON), created, features_sha256, features_images_sha256,
           features_weights (JSON arm -> value), responses_sha256
    S{n}/                         attrs: roi, n_voxels
        voxels/voxel_index, roi_codes (V,); noise_ceiling_r, signal_mask (V,) on synthetic data
        truth/test, truth/val     measured responses of the scored images
        {arm}/{method}/           attrs: hyperparameter_name
            grid (G,), cv_scores (G, V), best_hyperparameter (V,), on_edge (V,)
            test_r, test_r2, val_r, val_r2 (V,), pred_test, pred_val (n, V)
            rf_centres (V, 2), rf_sizes (V,), attrs rf_map_shape (fwRF: receptive fields in
            cells of the first map)
            roi_average/          attrs: best_hyperparameter, test_r, ... ; pred_val, true_val

Sweep results (``sweep.h5``, by :func:`v4jax.pipeline.sweep.run_sweep`; ``V`` voxels, ``G``
grid values, ``F`` features)::

    attrs: format, settings (JSON), settings_sha256, n_voxels, block_voxels, n_blocks
    voxel_columns (V,) int64    response-file column of each voxel
    roi_codes (V,) int64        vim-1 ROI code of each voxel (-1 for plain HDF5 responses)
    noise_ceiling_r (V,)        known ceiling (synthetic vim-1 data only)
    valid (V,) uint8            1 where every response of the voxel is finite
    <layer>/<method>/           attrs: layer, features_file, dataset, method,
                                       hyperparameter_name, n_features, solver
        grid (G,), completed_blocks (n_blocks,) uint8
        best_hyperparameter (V,) float64, best_index (V,) int32 (-1: invalid voxel)
        cv_scores (G, V) float32, intercept (V,) float32
        test_r, test_r2, val_r, val_r2 (V,) float32   (the parts that exist)
        coef (V, F) float32       one row per voxel (with save_coef)

Each results file has a JSON summary beside it (:func:`summary_path`).
"""

from __future__ import annotations

import os
from pathlib import Path

SWEEP_FORMAT = "v4jax-sweep/2"

#: The name of each method's hyperparameter; adding a method to the study or the sweep adds
#: one entry here.
HYPERPARAMETER_NAMES = {
    "ridge": "alpha",
    "pls": "n_components",
    "banded": "alpha",
    "readout": "penalty",
    "fwrf": "alpha",
}
#: Per-voxel held-out scores: Pearson r and R² on the test split and the validation images.
SCORE_NAMES = ("test_r", "test_r2", "val_r", "val_r2")

VOXELS = "voxels"
TRUTH = "truth"
ROI_AVERAGE = "roi_average"
VOXEL_COLUMNS = "voxel_columns"
ROI_CODES = "roi_codes"
NOISE_CEILING = "noise_ceiling_r"
VALID = "valid"
COMPLETED_BLOCKS = "completed_blocks"
NO_ROI = -1
RF_CENTRES = "rf_centres"
RF_SIZES = "rf_sizes"
RF_MAP_SHAPE = "rf_map_shape"


def subject_group(subject: int) -> str:
    """``S{n}``: one subject's group in a study results file."""
    return f"S{int(subject)}"


def sweep_group(layer: str, method: str) -> str:
    """``{layer}/{method}``: one (layer, method) pair's group in a sweep results file."""
    return f"{layer}/{method}"


def summary_path(results_path: str | os.PathLike) -> Path:
    """The JSON summary beside a results file (``results.h5`` -> ``results.json``)."""
    return Path(results_path).with_suffix(".json")
