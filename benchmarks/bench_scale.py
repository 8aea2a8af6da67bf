"""Scaling of the per-voxel phase and of out-of-core sweeps: voxels, devices, peak memory.

Three measurements, each in fresh child processes (so devices and peak RSS are their own):

* voxels: ``prepare_ridge`` once on a (samples x features) design, then ``ridge_cv_targets``
  for 1k..100k voxels; median time of ``--repeats`` runs after one warm-up (compilation). The
  cost per voxel should be flat: the decomposition is shared and the per-voxel phase is linear.
* devices: the same fit of ``--device-voxels`` voxels with 1, 2 and 4 simulated CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=N``); on a GPU host the child uses the
  real devices instead. Simulated devices share the machine's cores, so on a 2-core machine no
  gain beyond 2 is possible; the point is that sharding adds no overhead.
* memory: ``v4jax.pipeline.sweep.run_sweep`` over an HDF5 response file (float32, chunked by voxel
  columns, random responses with a planted linear signal) of 10k and 100k voxels, streamed in
  blocks of ``--block-voxels``; the child reports its peak RSS (``ru_maxrss``), overall and
  after every block, which must not grow with the number of voxels (it plateaus after the first
  few blocks, once the allocators reach their steady state).

The table is printed and the JSON written to ``benchmarks/results/scale_<device>.json``.
``python benchmarks/bench_scale.py --help`` lists the sizes; defaults run in a few minutes on 2
CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import v4jax

RESULTS = Path(__file__).resolve().parent / "results"
SIGNAL_RANK = 32


def make_design(n_samples: int, n_features: int, seed: int = 0) -> np.ndarray:
    """(n_samples, n_features) float32 features with a low-rank structure plus noise."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_samples, SIGNAL_RANK), dtype=np.float32)
    mixing = rng.standard_normal((SIGNAL_RANK, n_features), dtype=np.float32) / 4
    X = latent @ mixing + rng.standard_normal((n_samples, n_features), dtype=np.float32)
    return X.astype(np.float32)


def planted_responses(X: np.ndarray, n_voxels: int, seed: int) -> np.ndarray:
    """(n_samples, n_voxels) float32 responses: a random linear read-out of X plus noise."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((X.shape[1], n_voxels), dtype=np.float32) / np.sqrt(X.shape[1])
    noise = rng.standard_normal((X.shape[0], n_voxels), dtype=np.float32)
    return (X @ weights + noise * rng.uniform(0.5, 3, n_voxels).astype(np.float32)).astype(
        np.float32
    )


# -- children -----------------------------------------------------------------------------------


def child_time(arguments: argparse.Namespace) -> dict:
    """Time ridge_cv_targets for each voxel count on all of this process's devices."""
    import jax

    from v4jax.solvers.ridge import prepare_ridge, ridge_cv_targets

    X = make_design(arguments.samples, arguments.features)
    alphas = np.logspace(-2, 6, arguments.alphas)
    decomposition = prepare_ridge(X, arguments.folds, progress=False)
    rows = []
    for n_voxels in arguments.voxels:
        Y = planted_responses(X, n_voxels, seed=n_voxels)

        def fit(Y=Y):
            result = ridge_cv_targets(decomposition, Y, alphas)
            jax.block_until_ready((result.coef, result.cv_scores, result.best_alphas))

        fit()
        times = []
        for _ in range(arguments.repeats):
            start = time.perf_counter()
            fit()
            times.append(time.perf_counter() - start)
        rows.append({"voxels": n_voxels, "seconds": statistics.median(times), "runs": times})
    return {
        "devices": [str(device) for device in jax.devices()],
        "n_devices": len(jax.devices()),
        "solver": decomposition.solver,
        "rows": rows,
    }


def child_memory(arguments: argparse.Namespace) -> dict:
    """Write the synthetic files (if absent), run one out-of-core sweep, report peak RSS."""
    import h5py

    from v4jax.pipeline.sweep import ArraySource, feature_layers, run_sweep

    folder = Path(arguments.workdir)
    n_voxels = arguments.voxels[0]
    features = folder / f"features_{arguments.samples}x{arguments.features}.h5"
    responses = folder / f"responses_{arguments.samples}x{n_voxels}.h5"
    X = make_design(arguments.samples, arguments.features)
    if not features.exists():
        with h5py.File(features, "w") as handle:
            handle["layer"] = X
    if not responses.exists():
        chunk = min(256, n_voxels)
        with h5py.File(responses, "w") as handle:
            dataset = handle.create_dataset(
                "Y", shape=(arguments.samples, n_voxels), dtype=np.float32,
                chunks=(arguments.samples, chunk),
            )  # fmt: skip
            for start in range(0, n_voxels, arguments.block_voxels):
                width = min(arguments.block_voxels, n_voxels - start)
                dataset[:, start : start + width] = planted_responses(X, width, seed=start)
    del X
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trace = _PeakRssAfterBlocks()
    logging.getLogger("v4jax.pipeline.sweep").setLevel(logging.INFO)
    logging.getLogger("v4jax.pipeline.sweep").addHandler(trace)
    out = folder / f"sweep_{n_voxels}.h5"
    start = time.perf_counter()
    summary = run_sweep(
        feature_layers(features),
        ArraySource(responses, "Y"),
        out,
        alphas=np.logspace(-2, 6, arguments.alphas),
        cv=arguments.folds,
        n_test=arguments.samples // 10,
        block_voxels=arguments.block_voxels,
        progress=False,
        overwrite=True,
    )
    seconds = time.perf_counter() - start
    with h5py.File(out, "r") as handle:
        test_r = handle["layer/ridge/test_r"][...]
    return {
        "voxels": n_voxels,
        "seconds": seconds,
        "blocks": len(summary.computed),
        "peak_rss_mb_before_sweep": rss_before / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "response_file_mb": responses.stat().st_size / 2**20,
        "median_test_r": float(np.median(test_r)),
        "peak_rss_mb_after_block": trace.peaks_mb,
    }


class _PeakRssAfterBlocks(logging.Handler):
    """Records the peak RSS (MB) each time the sweep logs a written block."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.peaks_mb: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "written" in record.getMessage():
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.peaks_mb.append(round(peak, 1))


def run_child(kind: str, arguments: argparse.Namespace, voxels, n_devices: int | None = None):
    command = [
        sys.executable, __file__, "--child", kind,
        "--samples", str(arguments.samples), "--features", str(arguments.features),
        "--alphas", str(arguments.alphas), "--folds", str(arguments.folds),
        "--repeats", str(arguments.repeats), "--block-voxels", str(arguments.block_voxels),
        "--workdir", str(arguments.workdir), "--voxels", *map(str, voxels),
    ]  # fmt: skip
    environment = dict(os.environ)
    if n_devices is not None:
        flags = environment.get("XLA_FLAGS", "")
        environment["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n_devices}"
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- driver -------------------------------------------------------------------------------------


def loglog_slope(rows: list[dict]) -> float:
    """Slope of log(seconds) against log(voxels): 1 is linear cost."""
    voxels = np.log([row["voxels"] for row in rows])
    seconds = np.log([row["seconds"] for row in rows])
    return float(np.polyfit(voxels, seconds, 1)[0])


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=("time", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--voxels", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 100000])
    parser.add_argument("--samples", type=int, default=500, help="samples of the timing design")
    parser.add_argument("--features", type=int, default=1000, help="features of the design")
    parser.add_argument("--alphas", type=int, default=11, help="alphas in the grid")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    parser.add_argument("--device-counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--device-voxels", type=int, default=20000)
    parser.add_argument("--memory-voxels", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--memory-samples", type=int, default=1000)
    parser.add_argument("--memory-features", type=int, default=2000)
    parser.add_argument("--block-voxels", type=int, default=4096)
    parser.add_argument("--workdir", type=Path, help="where the synthetic HDF5 files go")
    parser.add_argument("--skip", nargs="*", default=[], choices=("voxels", "devices", "memory"))
    parser.add_argument("--out", type=Path, help="JSON path (default: results/scale_<dev>.json)")
    return parser.parse_args(argv)


def main(argv=None) -> dict | None:
    arguments = parse_arguments(argv)
    if arguments.child:
        child = child_time if arguments.child == "time" else child_memory
        print(json.dumps(child(arguments)))
        return None
    import jax

    from v4jax._io import atomic_write_text

    report = {
        "benchmark": "bench_scale",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "devices": [str(device) for device in jax.devices()],
        },
        "settings": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(arguments).items()
            if key not in ("child", "out")
        },
    }
    on_cpu = jax.default_backend() == "cpu"
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as scratch:
        arguments.workdir = arguments.workdir or Path(scratch)
        Path(arguments.workdir).mkdir(parents=True, exist_ok=True)
        if "voxels" not in arguments.skip:
            timing = run_child("time", arguments, arguments.voxels, 1 if on_cpu else None)
            for row in timing["rows"]:
                row["us_per_voxel"] = 1e6 * row["seconds"] / row["voxels"]
            report["voxels"] = timing
            report["voxels"]["loglog_slope"] = loglog_slope(timing["rows"])
            large = [row for row in timing["rows"] if row["voxels"] >= 10000]
            if len(large) >= 2:
                report["voxels"]["loglog_slope_10k_up"] = loglog_slope(large)
            print(f"\nvoxels ({timing['solver']} path, {arguments.samples} x {arguments.features})")
            print(f"{'voxels':>8} {'seconds':>9} {'us/voxel':>9}")
            for row in timing["rows"]:
                print(f"{row['voxels']:>8} {row['seconds']:>9.3f} {row['us_per_voxel']:>9.2f}")
            print(f"log-log slope: {report['voxels']['loglog_slope']:.3f} (1 = linear)")
        if "devices" not in arguments.skip:
            counts = arguments.device_counts if on_cpu else [None]
            rows = []
            for count in counts:
                result = run_child("time", arguments, [arguments.device_voxels], count)
                rows.append({"n_devices": result["n_devices"], **result["rows"][0]})
            for row in rows:
                row["speedup_vs_first"] = rows[0]["seconds"] / row["seconds"]
            report["devices"] = {"simulated_cpu": on_cpu, "rows": rows}
            print(f"\ndevices ({arguments.device_voxels} voxels)")
            print(f"{'devices':>8} {'seconds':>9} {'speedup':>8}")
            for row in rows:
                print(
                    f"{row['n_devices']:>8} {row['seconds']:>9.3f} {row['speedup_vs_first']:>8.2f}"
                )
        if "memory" not in arguments.skip:
            memory_arguments = argparse.Namespace(**vars(arguments))
            memory_arguments.samples = arguments.memory_samples
            memory_arguments.features = arguments.memory_features
            rows = [
                run_child("memory", memory_arguments, [count], 1 if on_cpu else None)
                for count in arguments.memory_voxels
            ]
            for row in rows:
                row["peak_rss_ratio_vs_first"] = row["peak_rss_mb"] / rows[0]["peak_rss_mb"]
            report["memory"] = {
                "design": [arguments.memory_samples, arguments.memory_features],
                "rows": rows,
            }
            print(
                f"\nout-of-core sweep ({arguments.memory_samples} x {arguments.memory_features}, "
                f"blocks of {arguments.block_voxels})"
            )
            print(f"{'voxels':>8} {'file MB':>9} {'seconds':>9} {'peak RSS MB':>12} {'ratio':>6}")
            for row in rows:
                print(
                    f"{row['voxels']:>8} {row['response_file_mb']:>9.0f} {row['seconds']:>9.1f} "
                    f"{row['peak_rss_mb']:>12.0f} {row['peak_rss_ratio_vs_first']:>6.2f}"
                )
    device = "cpu" if on_cpu else jax.default_backend()
    out = arguments.out or RESULTS / f"scale_{device}.json"
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    v4jax.configure_xla()  # the XLA settings the v4jax command uses
    main()
