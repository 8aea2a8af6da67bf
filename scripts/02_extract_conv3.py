"""Extract AlexNet conv3 features of every vim-1 stimulus, without retinawarp.

Corresponds to the original study's notebook that extracted conv3 without warp: the 1,750
training and 120 validation stimuli go through AlexNet once, and conv3 (13 x 13 x 384 for the
torchvision variant) is written to ``OUT/features_{variant}_plain.h5`` (resumable; an existing
file is kept).

Run (after 01_explore_data.py; then 04_fit_v4_pls_ridge.py):

    python scripts/02_extract_conv3.py --data-dir /data/vim-1 --out run1 \\
        --weights alexnet-owt-7be5be79.pth

Without --weights the network has fixed random weights (tests and synthetic data only).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import _steps


def main(argv: Sequence[str] | None = None) -> int:
    return _steps.extract_main("plain", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
