"""Argument handling shared by the study scripts: feature extraction and the V4 fit, each run
on one feature arm (``"plain"`` or ``"retina"``), and the parser and error handling of every
script. The work itself is :mod:`v4jax.pipeline.study` and :mod:`v4jax.pipeline.report`;
this module only turns
a command line into those calls.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from v4jax._runtime import configure_xla
from v4jax.features.models import VARIANTS
from v4jax.pipeline import study
from v4jax.pipeline.report import format_table, make_figures, summary_table

DEFAULT_OUT = "v4jax_out"


def extract_main(arm: str, description: str | None, argv: Sequence[str] | None) -> int:
    """Extract conv3 of every stimulus for one arm into ``--out``."""
    parser = new_parser(description)
    add_data_dir(parser)
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help="directory for the features file (default: %(default)s)"
    )
    parser.add_argument("--weights", help="AlexNet weights file (default: random weights)")
    _add_variant(parser)
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per pass (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of random weights (default: %(default)s)"
    )
    _add_quiet(parser)

    def step(arguments: argparse.Namespace) -> None:
        written = study.extract_features(
            arguments.data_dir,
            arguments.out,
            layers=("conv3",),
            arms=(arm,),
            variant=arguments.variant,
            weights=arguments.weights,
            batch_size=arguments.batch_size,
            seed=arguments.seed,
            progress=not arguments.quiet,
        )
        print(f"{arm} conv3 features: {written[arm]}")

    return run(parser, step, argv)


def fit_main(arm: str, description: str | None, argv: Sequence[str] | None) -> int:
    """Fit ridge and PLS to every V4 voxel on one arm's conv3 features, then report."""
    defaults = study.FitSettings()
    parser = new_parser(description)
    add_data_dir(parser)
    parser.add_argument(
        "--features-dir",
        default=DEFAULT_OUT,
        help="the extraction script's --out (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"directory for results_{arm}.h5 and figures_{arm}/ (default: %(default)s)",
    )
    _add_variant(parser)
    parser.add_argument(
        "--subjects",
        nargs="+",
        metavar="N",
        type=int,
        default=[1],
        help="subject numbers (default: %(default)s)",
    )
    parser.add_argument(
        "--alphas",
        nargs="+",
        metavar="ALPHA",
        type=float,
        default=defaults.alphas,
        help=f"ridge penalty grid (default: {_grid_text(defaults.alphas)})",
    )
    parser.add_argument(
        "--components",
        nargs="+",
        metavar="N",
        type=int,
        default=defaults.n_components,
        help=f"PLS component counts (default: {_grid_text(defaults.n_components)})",
    )
    parser.add_argument(
        "--cv", type=int, default=defaults.cv, help="cross-validation folds (default: %(default)s)"
    )
    parser.add_argument(
        "--n-test",
        type=int,
        default=defaults.n_test,
        help="the last N training images form the test split (default: %(default)s)",
    )
    parser.add_argument(
        "--figure-formats",
        nargs="+",
        metavar="FORMAT",
        default=["png", "pdf"],
        help="file formats of each figure (default: %(default)s)",
    )
    _add_quiet(parser)

    def step(arguments: argparse.Namespace) -> None:
        out = Path(arguments.out)
        results = study.fit_study(
            arguments.data_dir,
            {arm: study.features_path(arguments.features_dir, arm, arguments.variant)},
            out / f"results_{arm}.h5",
            subjects=tuple(arguments.subjects),
            roi="V4",
            settings=study.FitSettings(
                alphas=tuple(arguments.alphas),
                n_components=tuple(arguments.components),
                cv=arguments.cv,
                n_test=arguments.n_test,
            ),
            config={"command": parser.prog},
            progress=not arguments.quiet,
        )
        figures = make_figures(results, out / f"figures_{arm}", formats=arguments.figure_formats)
        print(format_table(summary_table(results)))
        print(f"\nresults: {results} (summary: {results.with_suffix('.json')})")
        print(f"figures: {len(figures)} files in {out / f'figures_{arm}'}")

    return run(parser, step, argv)


def run(
    parser: argparse.ArgumentParser,
    step: Callable[[argparse.Namespace], None],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, apply :func:`v4jax.configure_xla` and run ``step``; bad input ends with
    one message and status 2."""
    arguments = parser.parse_args(argv)
    configure_xla()
    try:
        step(arguments)
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


def new_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser whose help shows the script's docstring as written."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _grid_text(grid: Sequence[float]) -> str:
    return f"{len(grid)} values from {min(grid):g} to {max(grid):g}"


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """The required ``--data-dir`` option."""
    parser.add_argument(
        "--data-dir", required=True, help="directory with the CRCNS vim-1 .mat files"
    )


def _add_variant(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variant",
        default="torchvision",
        choices=sorted(VARIANTS),
        help="AlexNet variant (default: %(default)s)",
    )


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
