"""A sweep run in its own process, slowed after each written block so a test can kill it.

Usage: sweep_worker.py FEATURES RESPONSES_FILE:DATASET OUT SECONDS_PER_BLOCK
(run by tests/test_sweep.py and benchmarks/bench_scale.py).
"""

import logging
import sys
import time

from v4jax.pipeline.sweep import feature_layers, parse_responses, run_sweep

ALPHAS = (0.1, 10.0, 1000.0)


class _SlowAfterBlock(logging.Handler):
    def __init__(self, seconds: float) -> None:
        super().__init__(logging.INFO)
        self.seconds = seconds

    def emit(self, record: logging.LogRecord) -> None:
        if "written" in record.getMessage():
            time.sleep(self.seconds)


def main(features: str, responses: str, out: str, seconds: str) -> None:
    sweep_logger = logging.getLogger("v4jax.pipeline.sweep")
    sweep_logger.setLevel(logging.INFO)
    sweep_logger.addHandler(_SlowAfterBlock(float(seconds)))
    summary = run_sweep(
        feature_layers(features),
        parse_responses(responses),
        out,
        methods=("ridge", "pls"),
        alphas=ALPHAS,
        n_components=3,
        cv=3,
        n_test=10,
        block_voxels=4,
        devices=1,
        progress=False,
    )
    print(f"computed {len(summary.computed)} blocks", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
