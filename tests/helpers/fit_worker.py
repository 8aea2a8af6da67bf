"""fit_study in its own process, to be killed mid-run (tests/test_study_resume.py).

Usage: fit_worker.py DATA_DIR FEATURES_DIR OUT.h5 [REFERENCE.h5]

Every fit the study computes (its "fitted and checkpointed" log record) appends
``S<subject>/<arm>/<method>`` to the file named by ``V4JAX_TEST_LOG``. When
``V4JAX_TEST_HANG_AFTER`` is ``k``, the ``k``-th computed fit creates ``<log>.ready`` and the
process sleeps, so the test can SIGKILL it with exactly ``k`` fits checkpointed. With
``REFERENCE.h5`` the same process then fits everything again, uninterrupted, into that file
(logging to ``<log>.reference``), so the resumed and the reference results come from one setup.
"""

import logging
import os
import sys
import time
import warnings
from pathlib import Path

from v4jax.pipeline import study

SUBJECTS = (1, 2)
SETTINGS = study.FitSettings(
    methods=("ridge",), alphas=(0.1, 10.0, 1000.0), cv=3, layer="pool1", n_test=12
)


class _LogComputedFits(logging.Handler):
    def __init__(self, log: Path, hang_after: int | None) -> None:
        super().__init__(logging.INFO)
        self.log = log
        self.hang_after = hang_after
        self.computed = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "fitted and checkpointed" not in message:
            return
        with open(self.log, "a") as handle:
            handle.write(message.split(":")[0] + "\n")
        self.computed += 1
        if self.computed == self.hang_after:
            self.log.with_suffix(".ready").touch()
            time.sleep(600)


def fit(data_dir: str, features_dir: str, out: str) -> None:
    features = {arm: study.features_path(features_dir, arm, "torchvision") for arm in study.ARMS}
    study.fit_study(
        data_dir, features, out, subjects=SUBJECTS, roi="all", settings=SETTINGS, progress=False
    )


def main(data_dir: str, features_dir: str, out: str, reference: str | None = None) -> None:
    warnings.simplefilter("ignore")
    log = Path(os.environ["V4JAX_TEST_LOG"])
    hang_after = os.environ.get("V4JAX_TEST_HANG_AFTER")
    handler = _LogComputedFits(log, None if hang_after is None else int(hang_after))
    study_logger = logging.getLogger("v4jax.pipeline.study")
    study_logger.setLevel(logging.INFO)
    study_logger.addHandler(handler)
    fit(data_dir, features_dir, out)
    if reference is not None:
        handler.log = log.with_suffix(".reference")
        fit(data_dir, features_dir, reference)


if __name__ == "__main__":
    main(*sys.argv[1:])
