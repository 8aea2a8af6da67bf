"""Command-line interface: ``v4jax demo`` and the study's steps."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np


def _demo(arguments: argparse.Namespace) -> int:
    from v4jax.ridge import ridge_cv

    rng = np.random.default_rng(arguments.seed)
    n_samples, n_features, n_targets = 1750, 2000, 500
    X = rng.standard_normal((n_samples, n_features)).astype(np.float32)
    weights = rng.standard_normal((n_features, n_targets)).astype(np.float32)
    weights *= (rng.random(n_targets) < 0.7) / np.sqrt(n_features)
    Y = X @ weights + rng.standard_normal((n_samples, n_targets)).astype(np.float32)
    start = time.perf_counter()
    result = ridge_cv(X, Y, np.logspace(-2, 6, 17), cv=5)
    seconds = time.perf_counter() - start
    best = np.asarray(result.cv_scores).max(axis=0)
    print(
        f"ridge_cv: {n_samples} samples x {n_features} features x {n_targets} targets, "
        f"17 alphas, 5 folds in {seconds:.2f} s"
    )
    print(f"median best cross-validated R2: {np.median(best):.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``v4jax`` argument parser with one sub-command per step."""
    parser = argparse.ArgumentParser(prog="v4jax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the study on the embedded synthetic default")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``v4jax`` command."""
    arguments = build_parser().parse_args(argv)
    return arguments.handler(arguments)


if __name__ == "__main__":
    sys.exit(main())
