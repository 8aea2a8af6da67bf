"""vim-1 data: readers for the CRCNS files, the study's split, and synthetic look-alikes.

``v4jax.data.tfds_vim1`` (the TFDS builder) is imported lazily: importing ``v4jax.data``
never imports ``tensorflow_datasets``.
"""

from v4jax.data.features import filter_bank_features
from v4jax.data.splits import Vim1Split, fit_folds, study_split
from v4jax.data.synthetic import (
    SubjectTruth,
    SyntheticVim1,
    SyntheticVim1Files,
    make_synthetic_vim1,
    simulate_vim1,
)
from v4jax.data.vim1 import (
    ROI_NAMES,
    VOLUME_SHAPE,
    Vim1Data,
    Vim1Responses,
    list_subjects,
    load_vim1,
    open_responses,
    roi_codes_for,
    unravel_voxel_index,
)

__all__ = [
    "ROI_NAMES",
    "VOLUME_SHAPE",
    "SubjectTruth",
    "SyntheticVim1",
    "SyntheticVim1Files",
    "Vim1Data",
    "Vim1Responses",
    "Vim1Split",
    "filter_bank_features",
    "fit_folds",
    "list_subjects",
    "load_vim1",
    "make_synthetic_vim1",
    "open_responses",
    "roi_codes_for",
    "simulate_vim1",
    "study_split",
    "unravel_voxel_index",
]
