"""Images per second for AlexNet conv3 extraction: v4jax (JAX/Flax) against PyTorch.

Measures, for each batch size, the median over ``--repeats`` runs of

- ``jax_network``: :func:`v4jax.features.extraction.extract` of prepared (N, 224, 224, 3) inputs to
  ``conv3`` (``preprocess=False``; host -> device -> numpy included),
- ``jax_pipeline``: the same from raw (N, 128, 128) grayscale stimuli, with the JAX
  preprocessing (min-max, gray -> RGB, resize, ImageNet normalisation) in the jitted step,
- ``torch_network``: the same torchvision AlexNet ``features[:8]`` built in plain ``torch.nn``
  with the same weights, on the same prepared inputs (NCHW), output copied to numpy,

checks that the JAX and torch conv3 outputs agree, prints a table and writes JSON (machine
info, medians, JAX/torch ratios) to ``benchmarks/results/``. Weights are random (fixed seed);
speed does not depend on their values. JAX uses its default device (a GPU when there is one);
torch uses CUDA when available, else the CPU.

Usage:
  python benchmarks/bench_alexnet.py                      # short run: 256 images
  python benchmarks/bench_alexnet.py --n-images 1870 --repeats 5 --batch-sizes 64 128 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import v4jax
from v4jax._io import atomic_write_text
from v4jax.features.extraction import extract
from v4jax.features.images import prepare_images
from v4jax.features.models import param_shapes
from v4jax.features.weights import check_params, torchvision_to_flax

RESULTS = Path(__file__).resolve().parent / "results"
CONV_INDEX = {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8, "conv5": 10}


def random_features_state(seed: int) -> dict[str, np.ndarray]:
    """torchvision-layout ``features.*`` state dict (OIHW), He-scaled."""
    rng = np.random.default_rng(seed)
    state = {}
    for layer in CONV_INDEX:
        height, width, inputs, outputs = param_shapes("torchvision")[layer]["kernel"]
        shape = (outputs, inputs, height, width)
        scale = np.sqrt(2.0 / (inputs * height * width))
        key = f"features.{CONV_INDEX[layer]}"
        state[f"{key}.weight"] = (rng.standard_normal(shape) * scale).astype(np.float32)
        state[f"{key}.bias"] = (0.1 * rng.standard_normal(outputs)).astype(np.float32)
    return state


def torch_conv3_model(state: dict[str, np.ndarray]):
    """torchvision ``alexnet().features[:8]`` (conv1 .. ReLU after conv3) in plain torch.nn."""
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )
    model.load_state_dict(
        {
            key.removeprefix("features."): torch.from_numpy(value)
            for key, value in state.items()
            if int(key.split(".")[1]) < len(model)
        }
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.eval().to(device), device


def torch_extract(model, device: str, inputs_nchw, batch_size: int) -> np.ndarray:
    """conv3 of every image, batch by batch, as (N, 13, 13, 384) numpy (like v4jax)."""
    import torch

    outputs = []
    with torch.no_grad():
        for start in range(0, inputs_nchw.shape[0], batch_size):
            batch = inputs_nchw[start : start + batch_size].to(device)
            outputs.append(model(batch).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(outputs)


def median_seconds(run, repeats: int) -> tuple[float, list[float]]:
    """Warm up once (compilation), then time ``repeats`` runs."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def machine_info(torch_module) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(device) for device in jax.devices()],
        "numpy": np.__version__,
    }
    if torch_module is not None:
        info["torch"] = torch_module.__version__
        info["torch_threads"] = torch_module.get_num_threads()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    args = parser.parse_args()

    try:
        import torch
    except ImportError:
        torch = None
    if args.no_torch:
        torch = None

    state = random_features_state(seed=0)
    params = check_params(torchvision_to_flax(state), "torchvision")
    stimuli = np.random.default_rng(1).uniform(-0.5, 0.5, (args.n_images, 128, 128))
    stimuli = stimuli.astype(np.float32)
    prepared = np.asarray(prepare_images(stimuli, "torchvision"))
    if torch is not None:
        model, torch_device = torch_conv3_model(state)
        prepared_nchw = torch.from_numpy(np.ascontiguousarray(prepared.transpose(0, 3, 1, 2)))

    rows = []
    header = f"{'batch':>6} {'jax_network':>12} {'jax_pipeline':>13} {'torch':>10} {'jax/torch':>9}"
    print(f"conv3 extraction, {args.n_images} images, images/s (median of {args.repeats})")
    print(header)
    for batch_size in args.batch_sizes:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # real weights given: no random-weights warning
            network_s, network_runs = median_seconds(
                lambda b=batch_size: extract(
                    prepared, "conv3", params, batch_size=b, preprocess=False
                ),
                args.repeats,
            )
            pipeline_s, pipeline_runs = median_seconds(
                lambda b=batch_size: extract(stimuli, "conv3", params, batch_size=b),
                args.repeats,
            )
        row = {
            "batch_size": batch_size,
            "jax_network_images_per_s": args.n_images / network_s,
            "jax_pipeline_images_per_s": args.n_images / pipeline_s,
            "jax_network_seconds": network_runs,
            "jax_pipeline_seconds": pipeline_runs,
        }
        torch_text = ratio_text = "-"
        if torch is not None:
            torch_s, torch_runs = median_seconds(
                lambda b=batch_size: torch_extract(model, torch_device, prepared_nchw, b),
                args.repeats,
            )
            ours = extract(prepared, "conv3", params, batch_size=batch_size, preprocess=False)
            theirs = torch_extract(model, torch_device, prepared_nchw, batch_size)
            error = float(np.abs(ours["conv3"] - theirs).max() / np.abs(theirs).max())
            if error > 1e-4:
                raise SystemExit(f"JAX and torch conv3 disagree: max relative error {error:.2e}")
            row.update(
                torch_images_per_s=args.n_images / torch_s,
                torch_seconds=torch_runs,
                jax_network_over_torch=torch_s / network_s,
                max_relative_error_vs_torch=error,
            )
            torch_text = f"{row['torch_images_per_s']:10.1f}"
            ratio_text = f"{row['jax_network_over_torch']:9.2f}"
        rows.append(row)
        print(
            f"{batch_size:>6} {row['jax_network_images_per_s']:12.1f} "
            f"{row['jax_pipeline_images_per_s']:13.1f} {torch_text:>10} {ratio_text:>9}"
        )

    result = {
        "benchmark": "alexnet_conv3_extraction",
        "variant": "torchvision",
        "layer": "conv3",
        "n_images": args.n_images,
        "raw_image_shape": [128, 128],
        "network_input_shape": [224, 224, 3],
        "repeats": args.repeats,
        "statistic": "median",
        "torch_device": torch_device if torch is not None else None,
        "machine": machine_info(torch),
        "rows": rows,
    }
    output = args.output or RESULTS / f"alexnet_{jax.default_backend()}.json"
    atomic_write_text(output, json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    v4jax.configure_xla()  # the XLA settings the v4jax command uses
    main()
