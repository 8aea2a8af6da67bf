"""Retina warp throughput: v4jax (JAX) vs plain numpy / scipy on the same grids, vim-1 scale.

Workload (defaults): 1,870 grayscale float32 images (the 1,750 training + 120 validation vim-1
stimuli), warped in batches of 187 as feature extraction would, at two input sizes:

* 128 px (the vim-1 stimuli as distributed) -> 128 px output,
* 227 px (AlexNet's input size, if stimuli are resized first) -> 227 px output.

The output keeps the input size (the numpy path's default ``output_size = min(H, W)``); both are
well inside the fit's valid ranges (128: 18..305, 227: 28..537). The study itself warped 500 px
stimuli to 224 (``--sizes 500 --output-sizes 224`` measures that).

Methods, per mode ("nearest" = the original TensorFlow path, "bilinear" = its numpy path):

* ``v4jax``: ``retina_warp`` on host numpy batches (checks incl. the NaN scan, host->device copy),
* ``v4jax-device``: the same on batches already on JAX's default device,
* ``numpy`` (nearest): the same precomputed grid applied by a numpy fancy-index gather + where,
* ``scipy`` (bilinear): ``scipy.ndimage.map_coordinates(order=1, mode="grid-constant")`` per
  image on the same coordinates, then the range clip.

Each method runs ``--repeats`` times after a warm-up (compilation excluded); the table reports
median images per second and the ratio to the numpy/scipy peer measured in the same run, and
checks that the outputs agree. JSON goes to ``benchmarks/results/retina_<platform>.json``. The
script uses JAX's default device, so it runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np
import scipy
import scipy.ndimage

import v4jax
from v4jax._io import atomic_write_text
from v4jax.features.retina import retina_grid, retina_warp, valid_output_sizes

RESULTS = Path(__file__).resolve().parent / "results"


def make_images(n_images: int, size: int, seed: int = 0) -> np.ndarray:
    """Deterministic natural-ish grayscale stimuli in [-0.5, 0.5): smooth blobs plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-0.5, 0.5, size=(n_images, 8, 8)).astype(np.float32)
    smooth = np.repeat(np.repeat(coarse, -(-size // 8), axis=1), -(-size // 8), axis=2)
    smooth = smooth[:, :size, :size]
    noise = rng.uniform(-0.1, 0.1, size=(n_images, size, size)).astype(np.float32)
    return np.clip(smooth + noise, -0.5, 0.4999).astype(np.float32)


def numpy_nearest(images: np.ndarray, grid) -> np.ndarray:
    """The nearest-mode grid applied with numpy: one fancy-index gather and a mask."""
    height, width = grid.image_size
    flat_index = np.clip(grid.rows, 0, height - 1) * width + np.clip(grid.cols, 0, width - 1)
    picked = images.reshape(len(images), height * width)[:, flat_index]
    return np.where(grid.valid, picked, np.float32(0))


def scipy_bilinear(images: np.ndarray, grid) -> np.ndarray:
    """The bilinear-mode coordinates applied with scipy, image by image, then the range clip."""
    out = np.empty((len(images), grid.output_size, grid.output_size), dtype=images.dtype)
    for n, image in enumerate(images):
        warped = scipy.ndimage.map_coordinates(
            image, grid.coords, order=1, mode="grid-constant", cval=0.0
        )
        low, high = image.min(), image.max()
        if grid.reads_outside:
            low, high = min(low, 0), max(high, 0)
        out[n] = np.clip(warped, low, high)
    return out


def time_method(run, repeats: int) -> tuple[list[float], object]:
    """Warm up once, then time ``repeats`` full passes; returns times and the last output."""
    result = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


def bench_case(images: np.ndarray, output_size: int, mode: str, batch: int, repeats: int) -> dict:
    """Time v4jax (host and device input) and the numpy/scipy peer on one workload."""
    size = images.shape[-1]
    grid = retina_grid(size, output_size, mode=mode)
    starts = range(0, len(images), batch)
    device_images = [jax.device_put(images[s : s + batch]) for s in starts]
    jax.block_until_ready(device_images)

    def v4jax_host():
        outs = [retina_warp(images[s : s + batch], output_size, mode=mode) for s in starts]
        return jax.block_until_ready(outs)

    def v4jax_device():
        outs = [retina_warp(x, output_size, mode=mode) for x in device_images]
        return jax.block_until_ready(outs)

    peer = numpy_nearest if mode == "nearest" else scipy_bilinear

    def peer_run():
        return [peer(images[s : s + batch], grid) for s in starts]

    peer_name = "numpy" if mode == "nearest" else "scipy"
    measured = {}
    outputs = {}
    for name, run in (("v4jax", v4jax_host), ("v4jax-device", v4jax_device), (peer_name, peer_run)):
        times, result = time_method(run, repeats)
        outputs[name] = np.concatenate([np.asarray(part) for part in result])
        median = float(np.median(times))
        measured[name] = {
            "times_s": times,
            "median_s": median,
            "images_per_s": len(images) / median,
        }
    for name in ("v4jax", "v4jax-device"):
        measured[name]["speedup_vs_" + peer_name] = (
            measured[peer_name]["median_s"] / measured[name]["median_s"]
        )
    difference = np.abs(outputs["v4jax"] - outputs[peer_name])
    return {
        "input_size": size,
        "output_size": output_size,
        "valid_output_sizes": list(valid_output_sizes(size)),
        "mode": mode,
        "n_images": len(images),
        "batch": batch,
        "peer": peer_name,
        "max_abs_difference_vs_peer": float(difference.max()),
        "methods": measured,
    }


def machine_info() -> dict:
    """Host and device description for the JSON record."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "jax_devices": [str(device) for device in jax.devices()],
        "jax_default_backend": jax.default_backend(),
        "load_average_1_5_15_min": list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1870)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 227])
    parser.add_argument(
        "--output-sizes", type=int, nargs="+", help="one per input size (default: the same size)"
    )
    parser.add_argument("--modes", nargs="+", default=["nearest", "bilinear"])
    parser.add_argument("--batch", type=int, default=187)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, help="JSON path (default: results/retina_<backend>)")
    args = parser.parse_args()
    output_sizes = args.output_sizes or args.sizes
    if len(output_sizes) != len(args.sizes):
        parser.error("--output-sizes needs one value per input size")

    cases = []
    header = f"{'input':>5} {'output':>6} {'mode':>8} {'method':>13} {'img/s':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for size, output_size in zip(args.sizes, output_sizes, strict=True):
        images = make_images(args.images, size)
        for mode in args.modes:
            case = bench_case(images, output_size, mode, args.batch, args.repeats)
            cases.append(case)
            for name, result in case["methods"].items():
                ratio = result.get("speedup_vs_" + case["peer"], 1.0)
                print(
                    f"{size:>5} {output_size:>6} {mode:>8} {name:>13} "
                    f"{result['images_per_s']:>10.0f} {ratio:>6.2f}x"
                )
            print(
                f"{'':>22} max |v4jax - {case['peer']}| = {case['max_abs_difference_vs_peer']:.2e}"
            )
        del images

    record = {
        "benchmark": "retina_warp",
        "description": "median images/s over repeats after one warm-up; ratio = peer time / ours",
        "machine": machine_info(),
        "settings": {"repeats": args.repeats, "batch": args.batch, "dtype": "float32"},
        "cases": cases,
    }
    path = args.output or RESULTS / f"retina_{jax.default_backend()}.json"
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    v4jax.configure_xla()  # the XLA settings the v4jax command uses
    main()
