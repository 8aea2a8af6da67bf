"""fwRF (feature-weighted receptive fields) on the vim-1 shape, with flat ridge as the peer.

Problem (defaults, the same as ``bench_readout.py``): 1,750 training + 120 validation images,
conv3-like maps 13 x 13 x 384 (non-negative, spatially correlated), 1,550 voxels whose ground
truth is a Gaussian receptive field x channel weights plus noise (SNR 0.1-1).

* fwrf: ``v4jax.fwrf_cv`` with its DEFAULT grid (169 centres x 3 sizes = 507 candidate fields,
  5 relative alphas, 5 folds), then ``result.predict`` on the validation images. One warm-up
  call on a single candidate batch compiles every program first (same shapes).
* ridge: ``v4jax.ridge_cv`` on the flattened maps (64,896 features), 17 alphas, 5 folds.
* readout (``--readout``): ``fit_readout`` started from fwRF's answer (``init="fwrf"``).

The FLOP count is printed with the measured float32 matmul rate and the fraction of it reached.
Results go to ``benchmarks/results/fwrf_<tag>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

import v4jax
from v4jax import fwrf_cv, pearson_columns, ridge_cv
from v4jax._io import atomic_write_text
from v4jax.solvers.fwrf import DEFAULT_RELATIVE_ALPHAS
from v4jax.solvers.fwrf_grid import DEFAULT_SIZES_13

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_readout import _timed, make_problem, problem_parser
from bench_ridge import measure_matmul_rate

RESULTS = Path(__file__).resolve().parent / "results"
EIGH_FLOPS_PER_CUBE = 9.0  # LAPACK syevd with eigenvectors, leading order (an estimate)


def fwrf_flops(
    n: int, cells: int, channels: int, targets: int, candidates: int, alphas: int, folds: int
) -> dict[str, float]:
    """Leading floating-point operations of ``fwrf_cv`` (products counted as 2 m n k)."""
    per_candidate = {
        "pooling": 2 * n * cells * channels,
        "grams (full + fold test rows)": 2 * 2 * n * channels**2,
        "fold eigendecompositions": folds * EIGH_FLOPS_PER_CUBE * channels**3,
        "test rows in the fold eigenbases": 2 * n * channels**2,
        "Q^T B_k (all folds)": 2 * folds * channels**2 * targets,
        "X^T Y": 2 * n * channels * targets,
        "held-out predictions (all alphas)": 2 * alphas * n * channels * targets,
    }
    counts = {name: value * candidates for name, value in per_candidate.items()}
    counts["refit (one Cholesky per voxel, at most)"] = targets * channels**3 / 3
    counts["total"] = sum(counts.values())
    return counts


def main(argv=None) -> dict:
    parser = problem_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-ridge", action="store_true", help="no flat ridge peer")
    parser.add_argument("--skip-fwrf", action="store_true", help="no fwrf_cv timing on its own")
    parser.add_argument("--readout", action="store_true", help="also fit_readout(init='fwrf')")
    parser.add_argument("--quick", action="store_true", help="13x13x32 maps, 64 voxels")
    parser.add_argument("--tag", default=None, help="results file suffix")
    args = parser.parse_args(argv)
    if args.quick:
        args.channels, args.voxels = 32, 64
    tag = args.tag or ("quick" if args.quick else "full")

    start = time.perf_counter()
    train, val, Y_train, Y_val, centres = make_problem(
        args.n_train, args.n_val, args.height, args.width, args.channels, args.voxels
    )
    print(f"problem made in {time.perf_counter() - start:.1f} s", flush=True)
    rate = measure_matmul_rate()
    print(f"float32 matmul rate {rate / 1e9:.1f} GFLOP/s", flush=True)

    n_candidates = args.height * args.width * len(DEFAULT_SIZES_13)
    n_alphas = len(DEFAULT_RELATIVE_ALPHAS)
    flops = fwrf_flops(
        args.n_train, args.height * args.width, args.channels, args.voxels, n_candidates,
        n_alphas, 5,
    )  # fmt: skip
    rows = []
    if not args.skip_fwrf:
        warm = np.array([[r, c] for r in range(args.height) for c in range(args.width)])[:6]
        jax.block_until_ready(fwrf_cv(train, Y_train, centres=warm).coef)  # compile first
        result, times = _timed(lambda: fwrf_cv(train, Y_train), args.repeats)
        assert result.candidates.shape[0] == n_candidates
        median = float(np.median(times))
        fwrf_r = np.asarray(pearson_columns(Y_val, result.predict(val)))
        centre_error = np.linalg.norm(result.centres - centres, axis=1)
        rows.append(
            {
                "method": "fwrf_cv",
                "seconds": times,
                "median_seconds": median,
                "mean_val_r": float(fwrf_r.mean()),
                "median_centre_error_cells": float(np.median(centre_error)),
                "gflop": flops["total"] / 1e9,
                "gflop_per_second": flops["total"] / median / 1e9,
                "fraction_of_matmul_rate": flops["total"] / median / rate,
                "grid": {"candidates": n_candidates, "alphas": n_alphas, "folds": 5},
            }
        )
    if args.readout:
        from v4jax.solvers.readout import fit_readout, predict_readout

        readout, times = _timed(
            lambda: fit_readout(train, Y_train, key=jax.random.key(0), init="fwrf"), 1
        )
        readout_r = np.asarray(pearson_columns(Y_val, predict_readout(readout, val)))
        rows.append(
            {
                "method": "fit_readout(init='fwrf')",
                "seconds": times,
                "median_seconds": float(np.median(times)),
                "mean_val_r": float(readout_r.mean()),
                "median_centre_error_cells": float(
                    np.median(np.linalg.norm(readout.rf_centres - centres, axis=1))
                ),
                "adam_steps_per_batch": [int(h["step"][-1]) for h in readout.history],
            }
        )
    if not args.skip_ridge:
        flat_train = train.reshape(len(train), -1)
        ridge, times = _timed(
            lambda: ridge_cv(flat_train, Y_train, np.logspace(-2, 6, 17), cv=5), args.repeats
        )
        ridge_r = np.asarray(pearson_columns(Y_val, ridge.predict(val.reshape(len(val), -1))))
        rows.append(
            {
                "method": "ridge_cv (flat)",
                "seconds": times,
                "median_seconds": float(np.median(times)),
                "mean_val_r": float(ridge_r.mean()),
            }
        )

    report = {
        "benchmark": "fwrf",
        "shape": {
            "n_train": args.n_train,
            "n_val": args.n_val,
            "height": args.height,
            "width": args.width,
            "channels": args.channels,
            "voxels": args.voxels,
        },
        "flops": flops,
        "matmul_rate_gflops": rate / 1e9,
        "repeats": args.repeats,
        "results": rows,
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
            "backend": jax.default_backend(),
        },
    }
    print(f"\nshape {report['shape']} on {report['machine']['devices']}")
    print(f"load average at the end {report['machine']['load_average']}")
    for name, value in flops.items():
        print(f"  {name:<40} {value / 1e9:10.1f} GFLOP")
    print(f"{'method':<26} {'median s':>9} {'val r':>7}  notes")
    for row in rows:
        notes = []
        if "median_centre_error_cells" in row:
            notes.append(f"centre error {row['median_centre_error_cells']:.3f} cells")
        if "fraction_of_matmul_rate" in row:
            notes.append(
                f"{row['gflop_per_second']:.1f} GFLOP/s = {row['fraction_of_matmul_rate']:.0%} "
                f"of the {rate / 1e9:.0f} GFLOP/s matmul rate"
            )
        print(
            f"{row['method']:<26} {row['median_seconds']:>9.1f} {row['mean_val_r']:>7.4f}  "
            + "; ".join(notes)
        )
    path = RESULTS / f"fwrf_{tag}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    v4jax.configure_xla()  # the XLA settings the v4jax command uses
    main()
