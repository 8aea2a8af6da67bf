"""Factorised read-out fitting time on the vim-1 shape, with plain ridge as the peer.

Problem (defaults): 1,750 training + 120 validation images, conv3-like feature maps 13 x 13 x 384
(non-negative, spatially correlated), 1,550 voxels (V4 of subject 1) whose ground truth is a
factorised read-out (Gaussian RF x channel weights) plus noise. Both methods run on the default
JAX device (CPU here, the GPU when one is present):

* readout: ``v4jax.solvers.readout.fit_readout`` (Gaussian RFs, Adam with early stopping),
  started from fwRF's closed-form answer (``--init fwrf``, the default: each voxel's own fwRF
  penalty, at most 80 Adam steps) or from the former grid search (``--init grid``: the 3-value
  penalty grid, every voxel x penalty pair trained, at most 600 steps).
* ridge: ``v4jax.ridge_cv`` on the flattened features (64,896), 17 alphas, 5 folds.

Each method runs ``--repeats`` times (the first includes compilation; the median is reported)
and is scored by validation r against the noisy responses and the RF centre error (read-out).
``--quick`` runs a small shape; ``--max-steps`` caps Adam (default: the read-out's own). The
table goes to stdout and the JSON to ``benchmarks/results/readout_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

import v4jax
from v4jax import pearson_columns, ridge_cv
from v4jax._io import atomic_write_text
from v4jax.solvers.readout import fit_readout, predict_readout

RESULTS = Path(__file__).resolve().parent / "results"


def make_problem(n_train, n_val, height, width, n_channels, n_voxels, seed=0):
    """Deterministic conv-like features and factorised ground-truth responses (SNR 0.1-1)."""
    rng = np.random.default_rng(seed)
    n_images = n_train + n_val
    raw = rng.standard_normal((n_images, height + 2, width + 2, n_channels), dtype=np.float32)
    smooth = raw[:, 1:-1, 1:-1] + 0.5 * (raw[:, :-2, 1:-1] + raw[:, 1:-1, :-2] + raw[:, 2:, 1:-1])
    features = np.maximum(smooth, 0.0)
    centres = rng.uniform(0, 1, (n_voxels, 2)) * [height - 1, width - 1]
    sizes = np.exp(rng.uniform(np.log(0.6), np.log(max(height, width) / 5), n_voxels))
    rows = np.arange(height)[None, :, None]
    columns = np.arange(width)[None, None, :]
    squared = (rows - centres[:, 0, None, None]) ** 2 + (columns - centres[:, 1, None, None]) ** 2
    maps = np.exp(-squared / (2 * sizes[:, None, None] ** 2))
    maps /= maps.sum(axis=(1, 2), keepdims=True)
    weights = rng.standard_normal((n_voxels, n_channels)).astype(np.float32)
    signal = np.empty((n_images, n_voxels), dtype=np.float32)
    for start in range(0, n_voxels, 128):
        block = slice(start, start + 128)
        mixed = features.reshape(n_images, -1, n_channels) @ weights[block].T
        signal[:, block] = np.einsum("nkv,vk->nv", mixed, maps[block].reshape(-1, height * width))
    snr = np.exp(rng.uniform(np.log(0.1), np.log(1.0), n_voxels))
    noise = rng.standard_normal(signal.shape).astype(np.float32) * signal.std(0) / np.sqrt(snr)
    responses = signal + noise
    return features[:n_train], features[n_train:], responses[:n_train], responses[n_train:], centres


def _timed(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        jax.block_until_ready(jax.tree.leaves(result))
        times.append(time.perf_counter() - start)
    return result, times


def problem_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the problem's size options (the vim-1 conv3 shape by default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n-train", type=int, default=1750)
    parser.add_argument("--n-val", type=int, default=120)
    parser.add_argument("--height", type=int, default=13)
    parser.add_argument("--width", type=int, default=13)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--voxels", type=int, default=1550)
    return parser


def main(argv=None) -> dict:
    parser = problem_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--init", choices=("fwrf", "grid"), default="fwrf")
    parser.add_argument("--voxel-batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-ridge", action="store_true", help="time the read-out only")
    parser.add_argument("--quick", action="store_true", help="13x13x32 maps, 64 voxels")
    parser.add_argument("--tag", default=None, help="results file suffix")
    args = parser.parse_args(argv)
    if args.quick:
        args.channels, args.voxels = 32, 64
    tag = args.tag or ("quick" if args.quick else "full")

    train, val, Y_train, Y_val, centres = make_problem(
        args.n_train, args.n_val, args.height, args.width, args.channels, args.voxels
    )
    rows = []

    result, times = _timed(
        lambda: fit_readout(
            train,
            Y_train,
            key=jax.random.key(0),
            init=args.init,
            max_steps=args.max_steps,
            voxel_batch_size=args.voxel_batch_size,
            progress=True,
        ),
        args.repeats,
    )
    readout_r = np.asarray(pearson_columns(Y_val, predict_readout(result, val)))
    centre_error = np.linalg.norm(result.rf_centres - centres, axis=1)
    rows.append(
        {
            "method": "readout",
            "seconds": times,
            "median_seconds": statistics.median(times),
            "mean_val_r": float(readout_r.mean()),
            "median_centre_error_cells": float(np.median(centre_error)),
            "adam_steps_per_batch": [int(h["step"][-1]) for h in result.history],
        }
    )
    if not args.skip_ridge:
        flat_train = train.reshape(len(train), -1)
        ridge, times = _timed(
            lambda: ridge_cv(flat_train, Y_train, np.logspace(-2, 6, 17), cv=5), args.repeats
        )
        prediction = val.reshape(len(val), -1) @ np.asarray(ridge.coef) + np.asarray(
            ridge.intercept
        )
        ridge_r = np.asarray(pearson_columns(Y_val, prediction))
        rows.append(
            {
                "method": "ridge_cv",
                "seconds": times,
                "median_seconds": statistics.median(times),
                "mean_val_r": float(ridge_r.mean()),
            }
        )
    base = rows[-1]["median_seconds"]
    for row in rows:
        row["time_ratio_vs_ridge"] = row["median_seconds"] / base if not args.skip_ridge else None

    report = {
        "benchmark": "readout",
        "shape": {
            "n_train": args.n_train,
            "n_val": args.n_val,
            "height": args.height,
            "width": args.width,
            "channels": args.channels,
            "voxels": args.voxels,
        },
        "max_steps": args.max_steps,
        "init": args.init,
        "voxel_batch_size": args.voxel_batch_size,
        "penalty_grid": {k: list(v) for k, v in result.penalty_grid.items()},
        "repeats": args.repeats,
        "results": rows,
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
            "backend": jax.default_backend(),
        },
    }
    print(f"\nshape {report['shape']} on {report['machine']['devices']}")
    print(f"{'method':<10} {'median s':>10} {'val r':>8} {'ratio':>7}  notes")
    for row in rows:
        ratio = row["time_ratio_vs_ridge"]
        notes = (
            f"centre error {row['median_centre_error_cells']:.3f} cells"
            if "median_centre_error_cells" in row
            else ""
        )
        ratio_text = f"{ratio:7.2f}" if ratio is not None else "      -"
        print(
            f"{row['method']:<10} {row['median_seconds']:>10.1f} {row['mean_val_r']:>8.4f} "
            f"{ratio_text}  {notes}"
        )
    path = RESULTS / f"readout_{tag}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    v4jax.configure_xla()  # the XLA settings the v4jax command uses
    main()
