"""Extract AlexNet conv3 features of every vim-1 stimulus after retinawarp.

Corresponds to the original study's notebook that extracted conv3 after retinawarp: each
128 px stimulus is warped straight to the network's input size
(``v4jax.pipeline.study.retina_transform``:
full resolution at fixation, periphery compressed), then goes through AlexNet; conv3 is written
to ``OUT/features_{variant}_retina.h5`` (resumable; an existing file is kept).

Run (after 02_extract_conv3.py; then 05_fit_v4_pls_ridge_retinawarp.py):

    python scripts/03_extract_conv3_retinawarp.py --data-dir /data/vim-1 --out run1 \\
        --weights alexnet-owt-7be5be79.pth

Without --weights the network has fixed random weights (tests and synthetic data only).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import _steps


def main(argv: Sequence[str] | None = None) -> int:
    return _steps.extract_main("retina", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
