"""Defaults of the study, the sweep and the command line, in one place, and the parsers of
their command-line forms (shared by ``v4jax fit``, ``v4jax sweep`` and the study scripts).
"""

from __future__ import annotations

import argparse

import numpy as np

from v4jax.data.splits import STUDY_TEST_SIZE

#: Ridge grid as typed on the command line: LOW:HIGH:COUNT, log-spaced. Wider than the classic
#: 1e-2..1e6: unscaled conv3 features have kernel eigenvalues near 1e7.
ALPHAS_TEXT = "1e-2:1e10:25"
#: PLS component counts as typed on the command line: LOW:HIGH, inclusive.
COMPONENTS_TEXT = "1:25"
#: Cross-validation folds over the fitting images (contiguous).
CV_FOLDS = 5
#: The study's test split: the last 250 training images (defined in :mod:`v4jax.data.splits`).
TEST_SIZE = STUDY_TEST_SIZE
#: Voxels read, fitted and written together by a sweep (bounds its memory).
BLOCK_VOXELS = 4096
#: The layers a sweep extracts and fits when none are named (AlexNet, after each ReLU).
SWEEP_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
#: The ROIs a sweep reports when none are named: every visual area of vim-1.
SWEEP_ROIS = ("V1", "V2", "V3", "V3A", "V3B", "V4", "LO")
#: Selection score of the cross-validation.
SCORE = "r2"


def parse_floats(text: str) -> tuple[float, ...]:
    """``"1e-2:1e6:17"`` (log-spaced, LOW:HIGH:COUNT) or ``"0.1,1,10"``."""
    try:
        if ":" in text:
            low, high, count = text.split(":")
            grid = np.logspace(np.log10(float(low)), np.log10(float(high)), int(count))
            return tuple(float(value) for value in grid)
        return tuple(float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a grid: use LOW:HIGH:COUNT (log-spaced) or comma-separated numbers"
        ) from None


def parse_ints(text: str) -> tuple[int, ...]:
    """``"1:25"`` (inclusive range) or ``"1,5,10"``."""
    try:
        if ":" in text:
            low, high = text.split(":")
            return tuple(range(int(low), int(high) + 1))
        return tuple(int(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of counts: use LOW:HIGH or comma-separated integers"
        ) from None


def parse_roi(text: str) -> str | int | list[str | int]:
    """``"V4"``, ``"6"`` or ``"V1,V4"``: ROI names or codes (a list when several)."""
    parts = [int(part) if part.isdigit() else part for part in text.split(",")]
    return parts[0] if len(parts) == 1 else parts


#: The default grids as values (what the text forms above parse to).
ALPHAS = parse_floats(ALPHAS_TEXT)
COMPONENTS = parse_ints(COMPONENTS_TEXT)
