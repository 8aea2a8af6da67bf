"""Identity transform for the kill-and-resume extraction test (tests/test_fault_tolerance.py).

Each call appends the batch number (pixel [0, 0, 0] of the batch's first image holds the image
index) to the file named by ``V4JAX_TEST_LOG``. When ``V4JAX_TEST_HANG_ON`` is set to ``k``, the
``k``-th call creates ``<log>.ready`` and then sleeps, so the test can SIGKILL the process while
batches ``0..k-2`` are finished and written.
"""

import os
import time
from pathlib import Path

import numpy as np

BATCH_SIZE = 4
_calls = 0


def identity(batch: np.ndarray) -> np.ndarray:
    global _calls
    _calls += 1
    log = Path(os.environ["V4JAX_TEST_LOG"])
    with open(log, "a") as handle:
        handle.write(f"{round(float(batch[0, 0, 0])) // BATCH_SIZE}\n")
    if os.environ.get("V4JAX_TEST_HANG_ON") == str(_calls):
        log.with_suffix(".ready").touch()
        time.sleep(600)
    return batch
