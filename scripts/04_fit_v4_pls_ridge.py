"""Fit every V4 voxel with ridge and PLS on plain conv3 features, and report.

Corresponds to the original study's notebook that fitted V4 with PLS and ridge: for each
subject, ridge (a penalty per voxel) and PLS (a component count per voxel) are chosen by
cross-validation on the first training images, scored on the test split (the last --n-test
training images) and the validation images; the V4-average response is fitted as one more
target. Writes
``OUT/results_plain.h5`` (with a JSON summary beside it) and ``OUT/figures_plain/``, and prints
the summary table.

Run (after 02_extract_conv3.py):

    python scripts/04_fit_v4_pls_ridge.py --data-dir /data/vim-1 --features-dir run1 \\
        --out run1 --subjects 1 2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import _steps


def main(argv: Sequence[str] | None = None) -> int:
    return _steps.fit_main("plain", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
