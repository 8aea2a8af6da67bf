"""A layer x ROI sweep at the real size: one subject (25,915 voxels, every ROI) x 8 AlexNet
layers x ridge, against ``ridge_cv`` on the same designs.

The job is what ``v4jax sweep --data-dir DIR --roi all --layers ...`` runs: one extraction pass
writes the 8 layers (conv1..conv5, pool5, fc6, fc7; random weights) of the 1,870 stimuli to one
features file, then :func:`v4jax.pipeline.sweep.run_sweep` decomposes each layer once and
streams the voxels in blocks (each block: every alpha's 5-fold scores, the refit, the test and
validation predictions and scores, written to the results file), then the summary and figure.
The data is a synthetic vim-1 subject of the real size (``make_synthetic_vim1``).

* sweep child: the whole job in a fresh process; total time, extraction time, each layer's
  time (from the sweep's "block written" log records) and the peak RSS.
* peer child: per layer, ``v4jax.ridge_cv`` on the same design, every voxel in memory at once
  (the valid voxels of the responses), plus predicting the test and validation images: what a
  user writes without the sweep. Its peak RSS is reported too.

FLOPs are counted per layer first (the dual path's kernel, eigendecomposition, fold blocks,
per-voxel products and the held-out cross-kernel, as ``bench_ridge.flop_count``), and the table
prints the measured matmul rate and the fraction of it each layer reached. Full size runs once
per child (minutes); ``--shrink`` runs a reduced problem (a test of the script) and
``--repeats`` reruns each child to report medians. Results: ``benchmarks/results/sweep_*.json``.

Full size (the lead's run, on a quiet machine): ``python benchmarks/bench_sweep.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7")
ALPHAS_TEXT = "1e-2:1e10:25"
FOLDS = 5
GOAL_SECONDS = 15 * 60
GOAL_RSS_MB = 6 * 1024
SIZES = {
    "full": {"n_train": 1750, "n_val": 120, "n_voxels": 25915, "n_test": 250, "block": 4096},
    "shrink": {"n_train": 210, "n_val": 30, "n_voxels": 600, "n_test": 30, "block": 256},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flop_count(n_fit: int, n_held: int, p: int, t: int, a: int, folds: int) -> float:
    """Floating-point operations of one layer's ridge sweep on the dual path (n_fit < p):
    kernel syrk (n² p), one eigh (9 r³), per fold and alpha the block C_GG, its inverse and its
    application, per voxel the projections (Z = Uᵀ Y, every alpha's (C Y)_G, the refit), and the
    held-out cross-kernel (2 n_held n p) and predictions. On the primal path (p <= n_fit) the
    decomposition is an SVD of the design (counted as 14 n p² here) and the rank is p."""
    dual = p > n_fit
    rank = n_fit - 1 if dual else p
    decomposition = n_fit * n_fit * p + 9 * rank**3 if dual else 14 * n_fit * p * p
    g = n_fit / folds
    blocks = folds * a * (2 * g * g * rank + 2 * g**3 + 2 * g * g * t)
    per_target = (2 + 2 * a + 4) * n_fit * rank * t
    held_out = 2 * n_held * n_fit * p + 2 * n_held * n_fit * t
    return decomposition + blocks + per_target + held_out


def measure_matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """Median float32 matmul rate of JAX's default device, FLOP/s (as bench_ridge)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), dtype=jnp.float32)
    product = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(product(a, a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(product(a, a))
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times))


def prepare_data(workdir: Path, size: dict) -> Path:
    """The synthetic subject (written once, reused by later runs)."""
    from v4jax.data import make_synthetic_vim1

    data_dir = workdir / "data"
    if not (data_dir / "EstimatedResponses.mat").exists():
        make_synthetic_vim1(
            data_dir,
            n_train=size["n_train"],
            n_val=size["n_val"],
            n_voxels=size["n_voxels"],
            subjects=(1,),
            seed=0,
            progress=False,
        )
    return data_dir


class _BlockTimes(logging.Handler):
    """Time of each "block written" record of the sweep, per layer."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "written" in message:
            self.records.append((message.split(" ")[0], time.perf_counter()))


def child_sweep(arguments: argparse.Namespace) -> dict:
    """The whole job, as the CLI runs it, in this (fresh) process."""
    from v4jax._runtime import configure_xla

    configure_xla()
    from v4jax.pipeline import report, study
    from v4jax.pipeline.sweep import Vim1Source, feature_layers, run_sweep

    size = SIZES[arguments.size]
    out = Path(arguments.out)
    handler = _BlockTimes()
    logging.getLogger("v4jax.pipeline.sweep").setLevel(logging.INFO)
    logging.getLogger("v4jax.pipeline.sweep").addHandler(handler)
    start = time.perf_counter()
    features = study.extract_features(
        arguments.data_dir, out, layers=LAYERS, arms=("plain",), progress=False
    )["plain"]
    extracted = time.perf_counter()
    summary = run_sweep(
        feature_layers(features, LAYERS),
        Vim1Source(Path(arguments.data_dir), 1, "all"),
        out / "sweep.h5",
        alphas=np.logspace(-2, 10, 25),
        cv=FOLDS,
        n_test=size["n_test"],
        block_voxels=size["block"],
        progress=False,
        overwrite=True,
    )
    swept = time.perf_counter()
    layer_summary = report.write_sweep_summary(summary.path)
    report.make_sweep_figures(summary.path, out / "figures", formats=("png",))
    total = time.perf_counter() - start
    layer_seconds, previous = {}, extracted
    for layer in LAYERS:
        last = max(moment for name, moment in handler.records if name == layer)
        layer_seconds[layer] = last - previous
        previous = last
    return {
        "total_s": total,
        "extraction_s": extracted - start,
        "sweep_s": swept - extracted,
        "report_s": total - (swept - start),
        "layer_s": layer_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "best_layer": layer_summary["best_layer"],
        "n_voxels": layer_summary["n_voxels"],
        "features_file": str(features),
    }


def child_peer(arguments: argparse.Namespace) -> dict:
    """Per layer, ``ridge_cv`` on every valid voxel at once, then the held-out predictions."""
    from v4jax._runtime import configure_xla

    configure_xla()
    import jax

    from v4jax.data import open_responses
    from v4jax.pipeline.study import read_features
    from v4jax.solvers.ridge import ridge_cv

    size = SIZES[arguments.size]
    with open_responses(arguments.data_dir, 1) as responses:
        train, val = responses.read_voxel_block(np.arange(responses.roi_codes.size))
    valid = np.isfinite(train).all(0) & np.isfinite(val).all(0)
    n_fit = train.shape[0] - size["n_test"]
    Y_fit = np.ascontiguousarray(train[:n_fit, valid])
    layer_seconds = {}
    for layer in LAYERS:
        design, _ = read_features(arguments.features_file, layer)
        X_fit = design[:n_fit]
        X_held = design[n_fit:]
        start = time.perf_counter()
        result = ridge_cv(X_fit, Y_fit, np.logspace(-2, 10, 25), cv=FOLDS)
        jax.block_until_ready(result.predict(X_held))
        layer_seconds[layer] = time.perf_counter() - start
        del design, X_fit, X_held, result
    return {
        "layer_s": layer_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "n_valid_voxels": int(valid.sum()),
    }


def run_child(kind: str, arguments: argparse.Namespace, extra: list[str]) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--size", arguments.size, *extra]
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shrink", action="store_true", help="reduced size (tests the script)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each child (medians)")
    parser.add_argument("--workdir", help="keep the data and features here (default: temporary)")
    parser.add_argument("--output", type=Path, help="JSON path (default: benchmarks/results/)")
    parser.add_argument("--child", choices=("sweep", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--size", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--features-file", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child:
        child = child_sweep if arguments.child == "sweep" else child_peer
        print(json.dumps(child(arguments)))
        return None
    arguments.size = "shrink" if arguments.shrink else "full"
    size = SIZES[arguments.size]
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as scratch:
        workdir = Path(arguments.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        data_dir = prepare_data(workdir, size)
        sweeps, peers = [], []
        for repeat in range(arguments.repeats):
            out = workdir / f"run{repeat}"
            sweeps.append(
                run_child("sweep", arguments, ["--data-dir", str(data_dir), "--out", str(out)])
            )
            features = sweeps[-1]["features_file"]
            peers.append(
                run_child(
                    "peer",
                    arguments,
                    ["--data-dir", str(data_dir), "--features-file", features],
                )
            )
    return report(arguments, size, sweeps, peers)


def report(arguments: argparse.Namespace, size: dict, sweeps: list, peers: list) -> dict:
    import jax

    from v4jax._runtime import configure_xla

    configure_xla()
    rate = measure_matmul_rate()
    n_fit = size["n_train"] - size["n_test"]
    n_held = size["n_test"] + size["n_val"]
    n_voxels = sum(sweeps[0]["n_voxels"].values())
    shapes = {
        "conv1": 55 * 55 * 64, "conv2": 27 * 27 * 192, "conv3": 13 * 13 * 384,
        "conv4": 13 * 13 * 256, "conv5": 13 * 13 * 256, "pool5": 6 * 6 * 256,
        "fc6": 4096, "fc7": 4096,
    }  # fmt: skip
    rows = []
    for layer in LAYERS:
        sweep_s = float(np.median([run["layer_s"][layer] for run in sweeps]))
        peer_s = float(np.median([run["layer_s"][layer] for run in peers]))
        flops = flop_count(n_fit, n_held, shapes[layer], size["n_voxels"], 25, FOLDS)
        rows.append(
            {
                "layer": layer,
                "n_features": shapes[layer],
                "gflop": flops / 1e9,
                "sweep_s": sweep_s,
                "ridge_cv_s": peer_s,
                "sweep_over_ridge_cv": sweep_s / peer_s,
                "fraction_of_matmul_rate": flops / sweep_s / rate,
            }
        )
    total = float(np.median([run["total_s"] for run in sweeps]))
    rss = float(np.max([run["peak_rss_mb"] for run in sweeps]))
    peer_rss = float(np.max([run["peak_rss_mb"] for run in peers]))
    print(
        f"layer x ROI sweep: {size['n_voxels']} voxels ({n_voxels} valid), {len(LAYERS)} "
        f"layers, ridge, 25 alphas, {FOLDS} folds, {n_fit} fitting images, blocks of "
        f"{size['block']} voxels; matmul rate {rate / 1e9:.0f} GFLOP/s; medians of "
        f"{len(sweeps)} run(s)"
    )
    header = ("layer", "features", "GFLOP", "sweep s", "ridge_cv s", "ratio", "of matmul")
    print("  ".join(f"{title:>10}" for title in header))
    for row in rows:
        print(
            f"{row['layer']:>10}  {row['n_features']:>10}  {row['gflop']:>10.0f}  "
            f"{row['sweep_s']:>10.2f}  {row['ridge_cv_s']:>10.2f}  "
            f"{row['sweep_over_ridge_cv']:>10.2f}  {100 * row['fraction_of_matmul_rate']:>9.0f}%"
        )
    run = sweeps[0]
    print(
        f"total {total:.0f} s (extraction {run['extraction_s']:.0f} s, sweep {run['sweep_s']:.0f}"
        f" s, summary and figure {run['report_s']:.1f} s; goal < {GOAL_SECONDS} s); peak RSS "
        f"{rss:.0f} MB (goal < {GOAL_RSS_MB} MB; ridge_cv with every voxel in memory: "
        f"{peer_rss:.0f} MB)"
    )
    print(f"best layer per ROI: {run['best_layer']}")
    result = {
        "benchmark": "sweep",
        "size": arguments.size,
        "problem": {**size, "layers": list(LAYERS), "alphas": ALPHAS_TEXT, "folds": FOLDS},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "device": str(jax.devices()[0]),
            "matmul_gflops": rate / 1e9,
        },
        "total_s": total,
        "peak_rss_mb": rss,
        "peer_peak_rss_mb": peer_rss,
        "rows": rows,
        "sweep_runs": sweeps,
        "peer_runs": peers,
    }
    output = arguments.output or RESULTS / f"sweep_{jax.default_backend()}_{arguments.size}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print(f"JSON: {output}")
    return result


if __name__ == "__main__":
    main()
