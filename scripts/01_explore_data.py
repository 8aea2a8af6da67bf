"""Explore the vim-1 responses: voxels per ROI, voxels with NaN responses, response distributions.

Corresponds to the original study's data-exploration notebook. For each subject in
``EstimatedResponses.mat`` it prints, per ROI (codes 0-7; V4 is 6), the number of voxels, how
many have a NaN response to some image and how many to every image, and the mean and standard
deviation of the finite responses (about 0 and 1: the estimates are z-scored per voxel). It
draws the distribution of the finite responses (all voxels, and V4) and the voxel counts per ROI
to ``OUT/responses_S{subject}.png``.

Run (the first of the scripts; then 02_extract_conv3.py):

    python scripts/01_explore_data.py --data-dir /data/vim-1 --out explore
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import _steps
import numpy as np
from matplotlib.figure import Figure

from v4jax.data import ROI_NAMES, Vim1Data, list_subjects, load_vim1, roi_codes_for

V4 = roi_codes_for("V4")[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _steps.new_parser(__doc__)
    _steps.add_data_dir(parser)
    parser.add_argument(
        "--subjects",
        nargs="+",
        type=int,
        metavar="N",
        help="subject numbers (default: all in the file)",
    )
    parser.add_argument(
        "--out", default="explore", help="directory for the figures (default: %(default)s)"
    )
    return _steps.run(parser, explore, argv)


def explore(arguments: argparse.Namespace) -> None:
    """Print the table and draw the figure of every subject asked for."""
    for subject in arguments.subjects or list_subjects(arguments.data_dir):
        data = load_vim1(arguments.data_dir, subject=subject, roi="all", nan_policy="mask")
        responses = np.concatenate([data.resp_train, data.resp_val])
        print(
            f"subject {subject}: {data.n_voxels} voxels, {responses.shape[0]} images "
            f"({data.resp_train.shape[0]} training, {data.resp_val.shape[0]} validation)"
        )
        print(roi_table(data, responses))
        figure = responses_figure(data, responses)
        path = Path(arguments.out) / f"responses_S{subject}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
        print(f"figure: {path}\n")


def roi_table(data: Vim1Data, responses: np.ndarray) -> str:
    """One line per ROI and one for all voxels: counts, NaN counts, mean and std."""
    any_nan = ~data.valid_mask
    all_nan = np.isnan(responses).all(axis=0)
    groups = [(ROI_NAMES[code], str(code), data.roi_codes == code) for code in sorted(ROI_NAMES)]
    groups.append(("all", "", np.ones(data.n_voxels, dtype=bool)))
    lines = ["ROI    code  voxels  any NaN  all NaN     mean      std"]
    for name, code, selected in groups:
        finite = responses[:, selected][np.isfinite(responses[:, selected])]
        mean, std = (f"{finite.mean():.3f}", f"{finite.std():.3f}") if finite.size else ("-", "-")
        lines.append(
            f"{name:<6} {code:>4} {selected.sum():>7} {any_nan[selected].sum():>8} "
            f"{all_nan[selected].sum():>8} {mean:>8} {std:>8}"
        )
    return "\n".join(lines)


def responses_figure(data: Vim1Data, responses: np.ndarray) -> Figure:
    """Histogram of the finite responses (all voxels, V4) and voxel counts per ROI."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    histogram, counts = figure.subplots(1, 2)
    bins = np.linspace(-5, 5, 101)
    v4 = data.roi_codes == V4
    for label, selected in (("all voxels", slice(None)), ("V4", v4)):
        values = responses[:, selected]
        values = values[np.isfinite(values)]
        if values.size:
            histogram.hist(values, bins=bins, density=True, histtype="step", label=label)
    histogram.set(xlabel="response (z-scored estimate)", ylabel="density")
    histogram.legend()
    codes = sorted(ROI_NAMES)
    voxels = [np.sum(data.roi_codes == code) for code in codes]
    with_nan = [np.sum(~data.valid_mask[data.roi_codes == code]) for code in codes]
    counts.bar(codes, voxels, label="voxels")
    counts.bar(codes, with_nan, label="with a NaN response")
    counts.set_xticks(codes, [ROI_NAMES[code] for code in codes])
    counts.set(ylabel="voxels", yscale="log")
    counts.legend()
    figure.suptitle(f"vim-1 subject {data.subject}")
    return figure


if __name__ == "__main__":
    sys.exit(main())
