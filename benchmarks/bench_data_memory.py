"""Peak memory of reading V4 from a full-size vim-1 subject, vs reading the whole matrix.

Writes (or reuses) a full-size synthetic subject 1 (25,915 voxels x 1,870 images) in the exact
CRCNS format, then measures in a fresh child process per run the extra peak resident memory
(peak resident size, VmHWM, reset through /proc/self/clear_refs after the imports, minus the
resident size then; Linux only) and the wall time of:

- ``responses_v4``: streaming the V4 columns with ``open_responses`` (what ``load_vim1`` does
  for the responses);
- ``load_v4``: ``load_vim1(data_dir, 1, "V4")`` (responses plus the 128 px stimuli);
- ``stimuli``: reading ``Stimuli.mat`` alone (the part of ``load_v4`` that is not responses);
- ``full_matrix``: the naive peer, h5py reading all of ``dataTrnS1`` and ``dataValS1``.

Usage:
  python benchmarks/bench_data_memory.py [--data-dir DIR] [--runs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import h5py, numpy as np
from v4jax.data import load_vim1, open_responses
from v4jax.data.vim1 import _load_stimuli

def status_mb(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

mode, data_dir = sys.argv[1], sys.argv[2]
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak (VmHWM) to the current resident size
before = status_mb("VmRSS")
start = time.perf_counter()
if mode == "responses_v4":
    with open_responses(data_dir, 1) as responses:
        columns = responses.columns_for("V4")
        blocks = list(responses.iter_voxel_blocks(columns))
    n_bytes = sum(b[1].nbytes + b[2].nbytes for b in blocks)
elif mode == "load_v4":
    data = load_vim1(data_dir, 1, "V4")
    n_bytes = data.resp_train.nbytes + data.resp_val.nbytes
elif mode == "stimuli":
    train, val = _load_stimuli(data_dir)
    n_bytes = train.nbytes + val.nbytes
elif mode == "full_matrix":
    with h5py.File(f"{data_dir}/EstimatedResponses.mat", "r") as handle:
        train, val = handle["dataTrnS1"][...], handle["dataValS1"][...]
    n_bytes = train.nbytes + val.nbytes
seconds = time.perf_counter() - start
print(json.dumps({"peak_delta_mb": status_mb("VmHWM") - before, "seconds": seconds,
                  "result_mb": n_bytes / 2**20}))
"""
MODES = ("responses_v4", "load_v4", "stimuli", "full_matrix")


def _ensure_data(data_dir: Path) -> float | None:
    if (data_dir / "EstimatedResponses.mat").is_file():
        return None
    from v4jax.data import make_synthetic_vim1

    start = time.perf_counter()
    make_synthetic_vim1(data_dir, subjects=(1,), seed=0, progress=True)
    return time.perf_counter() - start


def _measure(mode: str, data_dir: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _device_info() -> list[str]:
    try:
        import jax

        return [str(device) for device in jax.devices()]
    except Exception as error:  # jax is optional for this benchmark
        return [f"unavailable: {error}"]


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "data_memory.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or Path(scratch) / "vim1_full"
        generation_seconds = _ensure_data(data_dir)
        runs = {mode: [_measure(mode, data_dir) for _ in range(args.runs)] for mode in MODES}
    full_mb = (1750 + 120) * 25915 * 4 / 2**20
    summary = {
        mode: {
            "peak_delta_mb_median": statistics.median(r["peak_delta_mb"] for r in values),
            "seconds_median": statistics.median(r["seconds"] for r in values),
            "result_mb": values[0]["result_mb"],
            "runs": values,
        }
        for mode, values in runs.items()
    }
    peer = summary["full_matrix"]["peak_delta_mb_median"]
    for values in summary.values():
        values["peak_vs_full_matrix_read"] = values["peak_delta_mb_median"] / peer
        values["peak_vs_full_matrix_float32_mb"] = values["peak_delta_mb_median"] / full_mb
    report = {
        "benchmark": "bench_data_memory",
        "full_matrix_float32_mb": full_mb,
        "generation_seconds_full_subject": generation_seconds,
        "runs_per_mode": args.runs,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "jax_devices": _device_info(),
        },
        "results": summary,
    }
    print(f"full response matrix (float32): {full_mb:.1f} MB")
    print(f"{'mode':<14}{'peak +MB':>10}{'x full read':>13}{'seconds':>10}{'result MB':>11}")
    for mode, values in summary.items():
        print(
            f"{mode:<14}{values['peak_delta_mb_median']:>10.1f}"
            f"{values['peak_vs_full_matrix_read']:>13.3f}"
            f"{values['seconds_median']:>10.2f}{values['result_mb']:>11.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from v4jax._io import atomic_write_text

    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
