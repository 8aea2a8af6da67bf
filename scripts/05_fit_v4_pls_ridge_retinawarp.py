"""Fit every V4 voxel with ridge and PLS on conv3 features after retinawarp, and report.

Corresponds to the original study's notebook that fitted V4 on warped features: the same fit
as 04_fit_v4_pls_ridge.py on the retina arm. Writes ``OUT/results_retina.h5`` (with a JSON
summary beside it) and ``OUT/figures_retina/``, and prints the summary table.

Run (after 03_extract_conv3_retinawarp.py):

    python scripts/05_fit_v4_pls_ridge_retinawarp.py --data-dir /data/vim-1 \\
        --features-dir run1 --out run1 --subjects 1 2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import _steps


def main(argv: Sequence[str] | None = None) -> int:
    return _steps.fit_main("retina", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
