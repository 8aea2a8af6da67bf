"""The ``v4jax`` command: ``demo`` runs the whole study; ``extract``, ``fit`` and ``report`` run
its steps separately on real (or synthetic) vim-1 files, each reading the previous step's files.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from v4jax._runtime import configure_xla

DEMO_VOXELS_PER_SUBJECT = 2000
DEMO_SUBJECTS = (1, 2)
STUDY_TEST_FRACTION = 250 / 1750
EDGE_WARNING_FRACTION = 0.1


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _parse_floats(text: str) -> tuple[float, ...]:
    """``"1e-2:1e6:17"`` (log-spaced) or ``"0.1,1,10"``."""
    try:
        if ":" in text:
            low, high, count = text.split(":")
            return tuple(np.logspace(np.log10(float(low)), np.log10(float(high)), int(count)))
        return tuple(float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a grid: use LOW:HIGH:COUNT (log-spaced) or comma-separated numbers"
        ) from None


def _parse_ints(text: str) -> tuple[int, ...]:
    """``"1:25"`` (inclusive range) or ``"1,5,10"``."""
    try:
        if ":" in text:
            low, high = text.split(":")
            return tuple(range(int(low), int(high) + 1))
        return tuple(int(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of counts: use LOW:HIGH or comma-separated integers"
        ) from None


def _parse_roi(text: str) -> str | int | list[str | int]:
    parts = [int(part) if part.isdigit() else part for part in text.split(",")]
    return parts[0] if len(parts) == 1 else parts


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
        from v4jax.data import make_synthetic_vim1
        from v4jax.features.extraction import extract

        data_dir = work / "data"
        print(f"writing a synthetic vim-1 set (ground truth known) to {data_dir} ...")

        def conv3(images: np.ndarray) -> np.ndarray:
            return extract(
                images, ("conv3",), params=None, variant=arguments.variant, seed=arguments.seed
            )["conv3"]

        make_synthetic_vim1(
            data_dir,
            n_train=arguments.n_train,
            n_val=arguments.n_val,
            n_voxels=arguments.voxels,
            subjects=DEMO_SUBJECTS,
            signal_rois=(6,),
            feature_fn=conv3,
            seed=arguments.seed,
            progress=not arguments.quiet,
        )
        subjects = DEMO_SUBJECTS
    else:
        data_dir = _check_data_dir(Path(arguments.data_dir))
        subjects = tuple(arguments.subjects)
    print("extracting conv3 features, without and with retinawarp ...")
    features = study.extract_features(
        data_dir,
        work,
        layers=("conv3",),
        variant=arguments.variant,
        weights=arguments.weights,
        seed=arguments.seed,
        progress=not arguments.quiet,
    )
    print("fitting ridge and PLS per voxel (cross-validated) ...")
    results = study.fit_study(
        data_dir,
        features,
        work / "results.h5",
        subjects=subjects,
        roi="V4",
        settings=study.FitSettings(n_test=round(STUDY_TEST_FRACTION * arguments.n_train)),
        config={"command": "demo", "synthetic": arguments.data_dir is None},
        progress=not arguments.quiet,
    )
    _report(results, work / "figures")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    return 0


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
    parser.add_argument("--roi", type=_parse_roi, default="V4", help="ROI name(s) or code(s)")
    parser.add_argument(
        "--methods",
        "--method",
        nargs="+",
        default=["ridge", "pls"],
        choices=("ridge", "pls", "banded", "readout"),
        help="banded: both arms as two bands; readout: factorised spatial x channel read-out",
    )
    parser.add_argument(
        "--alphas", type=_parse_floats, default="1e-2:1e10:25", help="ridge grid LOW:HIGH:COUNT"
    )
    parser.add_argument(
        "--components", type=_parse_ints, default="1:25", help="PLS component counts LOW:HIGH"
    )
    parser.add_argument("--cv", type=int, default=5, help="cross-validation folds")
    parser.add_argument(
        "--n-test",
        type=int,
        default=250,
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
        "validation set, and draw the figures.",
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
