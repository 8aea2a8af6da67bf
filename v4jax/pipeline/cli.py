"""The ``v4jax`` command: ``demo`` runs the whole study; ``extract``, ``fit`` and ``report`` run
its steps separately on real (or synthetic) vim-1 files, each reading the previous step's files;
``sweep`` fits many layers x ROIs x methods x grids (registered by
:func:`v4jax.pipeline.sweep.add_sweep_command`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from v4jax._io import atomic_write_text
from v4jax._runtime import configure_xla
from v4jax.data._format import N_TRAIN
from v4jax.pipeline import defaults
from v4jax.pipeline import results_schema as schema

DEMO_VOXELS_PER_SUBJECT = 2000
DEMO_SUBJECTS = (1, 2)
EDGE_WARNING_FRACTION = 0.1
#: The demo's synthetic hierarchy: early areas from an early layer, V4 and LO from conv3 (the
#: random-weight AlexNet's own maps), each with an ROI-shared component.
DEMO_ROI_SOURCES = {1: "pool1", 2: "pool1", 6: "conv3", 7: "conv3"}
DEMO_SHARED_FRACTION = 0.3
#: Half of every demo voxel's noise variance is one per-image fluctuation shared by its ROI (not
#: driven by the stimulus), so the V4 average is about as predictable as on the real data
#: (best achievable r² ~0.25, see ``v4jax.data.synthetic``; the original study's V4 average
#: reached r² 0.20) instead of ~0.95.
DEMO_SHARED_NOISE_FRACTION = 0.5
#: Signal-to-noise variance ratios of the demo's signal voxels (ceilings r 0.71-0.95): with
#: random weights every AlexNet layer is a similar random expansion of the image, so which
#: layer fits best only shows where the noise is low.
DEMO_SNR = (1.0, 10.0)
#: The demo's closing sweep: these layers x these ROIs, a subset of voxels of subject 1.
DEMO_SWEEP_LAYERS = ("pool1", "pool2", "conv3", "conv5")
DEMO_SWEEP_ROIS = ("V1", "V2", "V4", "LO")
DEMO_SWEEP_VOXELS_PER_ROI = 60


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _fit_settings(arguments: argparse.Namespace):
    from v4jax.pipeline.study import FitSettings

    return FitSettings(
        methods=tuple(arguments.methods),
        alphas=tuple(arguments.alphas),
        n_components=tuple(arguments.components),
        cv=arguments.cv,
        layer=arguments.layers[0],
        n_test=arguments.n_test,
    )


def _report(results: Path, figures_dir: Path) -> None:
    from v4jax.pipeline.report import format_table, make_figures, summary_table

    figures = make_figures(results, figures_dir)
    rows = summary_table(results)
    print(format_table(rows))
    on_edge = [
        f"S{row['subject']} {row['arm']} {row['method']} {100 * row['fraction_on_edge']:.0f}%"
        for row in rows
        if row["fraction_on_edge"] > EDGE_WARNING_FRACTION
    ]
    if on_edge:
        print(
            "\nnote: many voxels chose the grid's smallest or largest value ("
            + ", ".join(on_edge)
            + "); their optimum may lie outside the grid: widen it (--alphas LOW:HIGH:COUNT, "
            "--components LOW:HIGH). Noise-only voxels pick the strongest regularisation."
        )
    print(f"\nresults: {results} (summary: {results.with_suffix('.json')})")
    print(f"figures: {len(figures)} files in {figures_dir}")


def _check_data_dir(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(
            f"data directory {path} does not exist; it must hold the CRCNS vim-1 files "
            "EstimatedResponses.mat and Stimuli.mat."
        )
    return path


def _demo(arguments: argparse.Namespace) -> int:
    from v4jax.pipeline import study

    start = time.perf_counter()
    work = Path(arguments.workdir)
    if arguments.data_dir is None:
        data_dir = work / "data"
        print(f"writing a synthetic vim-1 set (ground truth known) to {data_dir} ...")
        _write_demo_data(data_dir, arguments)
        subjects = DEMO_SUBJECTS
    else:
        data_dir = _check_data_dir(Path(arguments.data_dir))
        subjects = tuple(arguments.subjects)
    sweep_layers = tuple(dict.fromkeys(("conv3", *DEMO_SWEEP_LAYERS)))
    print(f"extracting {', '.join(sweep_layers)} (one pass), and conv3 with retinawarp ...")
    extraction = {
        "variant": arguments.variant,
        "weights": arguments.weights,
        "seed": arguments.seed,
        "progress": not arguments.quiet,
    }
    features = {
        **study.extract_features(
            data_dir, work, layers=sweep_layers, arms=("plain",), **extraction
        ),
        **study.extract_features(data_dir, work, layers=("conv3",), arms=("retina",), **extraction),
    }
    print("fitting ridge and PLS per V4 voxel on conv3 (cross-validated) ...")
    n_test = round(defaults.TEST_SIZE / N_TRAIN * arguments.n_train)
    results = study.fit_study(
        data_dir,
        features,
        work / "results.h5",
        subjects=subjects,
        roi="V4",
        settings=study.FitSettings(n_test=n_test),
        config={"command": "demo", "synthetic": arguments.data_dir is None},
        progress=not arguments.quiet,
    )
    _report(results, work / "figures")
    print(
        f"\nlayer x ROI sweep: ridge, {len(DEMO_SWEEP_LAYERS)} layers x "
        f"{', '.join(DEMO_SWEEP_ROIS)} (first {DEMO_SWEEP_VOXELS_PER_ROI} voxels of each, S"
        f"{subjects[0]}) ..."
    )
    _demo_sweep(data_dir, features["plain"], subjects[0], n_test, work, arguments.quiet)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    return 0


def _write_demo_data(data_dir: Path, arguments: argparse.Namespace) -> None:
    """The demo's synthetic set: the hierarchy of ``DEMO_ROI_SOURCES`` on random AlexNet maps."""
    from v4jax.data import make_synthetic_vim1
    from v4jax.features.extraction import extract

    layers = tuple(sorted(set(DEMO_ROI_SOURCES.values())))
    computed: dict[str, np.ndarray] = {}

    def source(layer: str):
        def maps(images: np.ndarray) -> np.ndarray:
            if not computed:  # one forward pass gives every source layer
                computed.update(
                    extract(
                        images, layers, params=None, variant=arguments.variant, seed=arguments.seed
                    )
                )
            return computed[layer]

        maps.__name__ = f"random AlexNet {arguments.variant} {layer} (seed {arguments.seed})"
        return maps

    make_synthetic_vim1(
        data_dir,
        n_train=arguments.n_train,
        n_val=arguments.n_val,
        n_voxels=arguments.voxels,
        subjects=DEMO_SUBJECTS,
        signal_rois=tuple(DEMO_ROI_SOURCES),
        feature_sources={layer: source(layer) for layer in layers},
        roi_sources={code: layer for code, layer in DEMO_ROI_SOURCES.items()},
        shared_fraction=DEMO_SHARED_FRACTION,
        shared_noise_fraction=DEMO_SHARED_NOISE_FRACTION,
        snr=DEMO_SNR,
        seed=arguments.seed,
        progress=not arguments.quiet,
    )


def _demo_sweep(
    data_dir: Path, features: Path, subject: int, n_test: int, work: Path, quiet: bool
) -> None:
    """The demo's closing layer x ROI sweep; its summary joins ``results.json``."""
    from v4jax.pipeline import report
    from v4jax.pipeline.sweep import Vim1Source, feature_layers, run_sweep

    sweep = run_sweep(
        feature_layers(features, DEMO_SWEEP_LAYERS),
        Vim1Source(data_dir, subject, list(DEMO_SWEEP_ROIS), DEMO_SWEEP_VOXELS_PER_ROI),
        work / "sweep.h5",
        n_test=n_test,
        progress=not quiet,
        overwrite=True,
    )
    summary = report.write_sweep_summary(sweep.path)
    figures = report.make_sweep_figures(sweep.path, work / "figures")
    results_json = schema.summary_path(work / "results.h5")
    combined = json.loads(results_json.read_text())
    combined.update(
        {key: summary[key] for key in ("layer_sweep", "best_layer", "best_layer_per_voxel")}
    )
    atomic_write_text(results_json, json.dumps(combined, indent=2))
    print(report.format_layer_sweep(summary))
    best = ", ".join(f"{roi} {layer}" for roi, layer in summary["best_layer"].items())
    print(f"best layer per ROI: {best}")
    print(f"sweep: {sweep.path}; layer_sweep added to {results_json}; figure: {figures[0]}")


def _extract(arguments: argparse.Namespace) -> int:
    from v4jax.pipeline import study

    arms = (
        ("plain", "retina")
        if arguments.retina is None
        else (("retina",) if arguments.retina else ("plain",))
    )
    written = study.extract_features(
        _check_data_dir(Path(arguments.data_dir)),
        arguments.out,
        layers=tuple(arguments.layers),
        arms=arms,
        variant=arguments.variant,
        weights=arguments.weights,
        batch_size=arguments.batch_size,
        seed=arguments.seed,
        progress=not arguments.quiet,
    )
    for arm, path in written.items():
        print(f"{arm}: {path}")
    return 0


def _fit(arguments: argparse.Namespace) -> int:
    from v4jax.pipeline import study

    arms = (
        ("plain", "retina")
        if arguments.retina is None
        else (("retina",) if arguments.retina else ("plain",))
    )
    data_dir = _check_data_dir(Path(arguments.data_dir))
    features = {arm: study.features_path(arguments.out, arm, arguments.variant) for arm in arms}
    missing = [str(path) for path in features.values() if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"features file(s) {missing} do not exist; run `v4jax extract` with the same --out, "
            "--variant and --retina options first."
        )
    results = study.fit_study(
        data_dir,
        features,
        Path(arguments.out) / "results.h5",
        subjects=tuple(arguments.subjects),
        roi=arguments.roi,
        settings=_fit_settings(arguments),
        config={"command": "fit"},
        progress=not arguments.quiet,
    )
    print(f"results: {results}")
    return 0


def _report_command(arguments: argparse.Namespace) -> int:
    results = Path(arguments.out) / "results.h5"
    if not results.exists():
        raise FileNotFoundError(f"results file {results} does not exist; run `v4jax fit` first.")
    _report(results, Path(arguments.out) / "figures")
    return 0


def _add_common(parser: argparse.ArgumentParser, *, data: bool = True) -> None:
    if data:
        parser.add_argument(
            "--data-dir", required=True, help="directory with the CRCNS vim-1 .mat files"
        )
    parser.add_argument("--out", default="v4jax_out", help="directory for features and results")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variant",
        default="torchvision",
        choices=("torchvision", "caffe", "tfutils"),
        help="AlexNet variant",
    )
    parser.add_argument(
        "--layers", nargs="+", default=["conv3"], help="layers to extract (fit uses the first)"
    )
    parser.add_argument(
        "--retina",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only the retinawarp arm (--retina) or only the plain arm (--no-retina); both "
        "when omitted",
    )


def _add_fit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subjects", nargs="+", type=int, default=[1], help="subject numbers")
    parser.add_argument(
        "--roi", type=defaults.parse_roi, default="V4", help="ROI name(s) or code(s)"
    )
    parser.add_argument(
        "--methods",
        "--method",
        nargs="+",
        default=["ridge", "pls"],
        choices=tuple(schema.HYPERPARAMETER_NAMES),
        help="banded: both arms as two bands; readout: factorised spatial x channel read-out; "
        "fwrf: feature-weighted receptive fields (one Gaussian field per voxel)",
    )
    parser.add_argument(
        "--alphas",
        type=defaults.parse_floats,
        default=defaults.ALPHAS_TEXT,
        help="ridge grid LOW:HIGH:COUNT",
    )
    parser.add_argument(
        "--components",
        type=defaults.parse_ints,
        default=defaults.COMPONENTS_TEXT,
        help="PLS component counts LOW:HIGH",
    )
    parser.add_argument("--cv", type=int, default=defaults.CV_FOLDS, help="cross-validation folds")
    parser.add_argument(
        "--n-test",
        type=int,
        default=defaults.TEST_SIZE,
        help="the last N training images form the test split (the study: 250)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``v4jax`` argument parser with one sub-command per step."""
    parser = argparse.ArgumentParser(prog="v4jax", description=__doc__, formatter_class=_Formatter)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the whole study on the embedded synthetic default (no downloads)",
        description="Write a synthetic vim-1 set with known ground truth, extract conv3 with "
        "and without retinawarp, fit ridge and PLS per V4 voxel, score the test split and the "
        "validation set, and draw the figures; end with a small layer x ROI sweep (which "
        "layer best predicts V1, V2, V4 and LO: printed, added to results.json as layer_sweep "
        "and drawn in figures/layer_roi).",
        formatter_class=_Formatter,
    )
    demo.add_argument("--workdir", default="v4jax_demo", help="directory for everything written")
    demo.add_argument("--data-dir", help="run on these real vim-1 files instead")
    demo.add_argument("--subjects", nargs="+", type=int, default=[1, 2], help="with --data-dir")
    demo.add_argument("--weights", help="AlexNet weights file (default: fixed random weights)")
    demo.add_argument(
        "--variant", default="torchvision", choices=("torchvision", "caffe", "tfutils")
    )
    demo.add_argument(
        "--voxels", type=int, default=DEMO_VOXELS_PER_SUBJECT, help="synthetic voxels/subject"
    )
    demo.add_argument(
        "--n-train", type=int, default=1750, help="synthetic training images (quick runs: fewer)"
    )
    demo.add_argument("--n-val", type=int, default=120, help="synthetic validation images")
    demo.add_argument("--seed", type=int, default=0, help="seed of data and random weights")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo)

    extract = commands.add_parser(
        "extract", help="AlexNet features of every stimulus", formatter_class=_Formatter
    )
    _add_common(extract)
    _add_model(extract)
    extract.add_argument("--weights", help="AlexNet weights file (default: random weights)")
    extract.add_argument("--batch-size", type=int, default=64)
    extract.add_argument("--seed", type=int, default=0, help="seed of random weights")
    extract.set_defaults(handler=_extract)

    fit = commands.add_parser(
        "fit", help="per-voxel ridge and PLS on extracted features", formatter_class=_Formatter
    )
    _add_common(fit)
    _add_model(fit)
    _add_fit(fit)
    fit.set_defaults(handler=_fit)

    report = commands.add_parser(
        "report", help="figures and a table from a results file", formatter_class=_Formatter
    )
    _add_common(report, data=False)
    report.set_defaults(handler=_report_command)

    from v4jax.pipeline.sweep import add_sweep_command

    add_sweep_command(commands)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"v4jax: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``v4jax`` command: one clear message and status 2 on bad input.

    Applies :func:`v4jax.configure_xla` (the measured XLA settings) before any JAX work.
    """
    arguments = build_parser().parse_args(argv)
    configure_xla()
    logging.basicConfig(level=logging.WARNING, format="v4jax: %(message)s")
    warnings.showwarning = _show_warning
    try:
        return arguments.handler(arguments)
    except (ValueError, TypeError, FileNotFoundError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"v4jax {arguments.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
