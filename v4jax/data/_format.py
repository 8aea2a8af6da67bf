"""Names and constants of the CRCNS vim-1 files (see ``shared/specs/vim1-format.md``)."""

from __future__ import annotations

RESPONSES_FILE = "EstimatedResponses.mat"
STIMULI_FILE = "Stimuli.mat"
FULLRES_TRAIN_PATTERN = "Stimuli_Trn_FullRes_{index:02d}.mat"
FULLRES_VAL_FILE = "Stimuli_Val_FullRes.mat"
FULLRES_IMAGES_PER_FILE = 120
GROUND_TRUTH_FILE = "ground_truth.h5"
REPEATS_FILE = "RepeatedResponses.h5"

STIM_TRAIN_VAR = "stimTrn"
STIM_VAL_VAR = "stimVal"
SEQ_TRAIN_VAR = "seqTrn"
SEQ_VAL_VAR = "seqVal"

VOLUME_SHAPE = (64, 64, 18)
N_TRAIN = 1750
N_VAL = 120
IMAGE_SIZE = 128
FULLRES_SIZE = 500

ROI_NAMES = {0: "other", 1: "V1", 2: "V2", 3: "V3", 4: "V3A", 5: "V3B", 6: "V4", 7: "LO"}
ROI_ALIASES = {"latocc": 7, "lateraloccipital": 7}
REAL_VOXEL_COUNTS = {1: 25915, 2: 26329}
S1_ROI_COUNTS = {0: 17127, 1: 1331, 2: 2208, 3: 1973, 4: 484, 5: 314, 6: 1550, 7: 928}


def train_var(subject: int) -> str:
    return f"dataTrnS{subject}"


def val_var(subject: int) -> str:
    return f"dataValS{subject}"


def roi_var(subject: int) -> str:
    return f"roiS{subject}"


def voxel_index_var(subject: int) -> str:
    return f"voxIdxS{subject}"


def subject_vars(subject: int) -> tuple[str, str, str, str]:
    """The four variables of one subject in ``EstimatedResponses.mat``."""
    return train_var(subject), val_var(subject), roi_var(subject), voxel_index_var(subject)
