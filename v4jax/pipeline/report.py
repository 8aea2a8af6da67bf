"""Figures and summaries of a study results file (written by
:func:`v4jax.pipeline.study.fit_study`) and of a sweep results file (written by
:func:`v4jax.pipeline.sweep.run_sweep`): :func:`sweep_summary`, :func:`make_sweep_figures`.

The results file (HDF5) holds one group per subject, ``/S{n}``, with ``voxels/`` (voxel indices,
ROI codes and, on synthetic data, ``noise_ceiling_r`` and ``signal_mask``), ``truth/`` and one
group per feature arm and method, ``/S{n}/{arm}/{method}``, with the per-voxel fit (grid,
cross-validated scores, best hyperparameter, ``on_edge``, test/validation r and R²,
predictions) and ``roi_average/`` (the ROI-average response fitted as its own target). Any arm
and method names found are drawn.

:func:`read_results` loads what the figures and the table need into plain numpy dataclasses;
:func:`make_figures` draws PNG and PDF figures with matplotlib (no display needed);
:func:`summary_table` and :func:`format_table` give the numbers the CLI prints.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from v4jax._io import atomic_path, atomic_write_text, open_hdf5
from v4jax.pipeline import results_schema as schema

#: Colours per method, the same in every figure (Okabe-Ito palette, colour-blind safe).
METHOD_COLOURS = {
    "ridge": "#0072B2",
    "pls": "#D55E00",
    "readout": "#009E73",
    "banded": "#CC79A7",
    "fwrf": "#E69F00",
}
_SPARE_COLOURS = ("#E69F00", "#56B4E9", "#F0E442", "#000000")
_EDGE_COLOUR = "#C00000"
_NOISE_COLOUR = "#9A9A9A"
_ARM_LABELS = {"plain": "plain conv3", "retina": "retinawarp conv3"}
_ARM_ORDER = ("plain", "retina")
_METHOD_ORDER = ("ridge", "pls")
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 150,
}
_FORMATS = ("png", "pdf")
_SCORES = schema.SCORE_NAMES


@dataclasses.dataclass(frozen=True)
class RoiAverageResult:
    """The ROI-average response fitted as one target.

    Attributes:
      best_hyperparameter, test_r, test_r2, val_r, val_r2: scalars.
      pred_val, true_val: (n_val,) predicted and measured ROI-average validation responses.
    """

    best_hyperparameter: float
    test_r: float
    test_r2: float
    val_r: float
    val_r2: float
    pred_val: np.ndarray
    true_val: np.ndarray


@dataclasses.dataclass(frozen=True)
class MethodResult:
    """One method's per-voxel fit on one arm of one subject (V voxels, G grid values).

    Attributes:
      method: its name ("ridge", "pls", ...). hyperparameter_name: "alpha", "n_components", ...
      grid: (G,) hyperparameter grid. cv_scores: (G, V) cross-validated score per grid value.
      best_hyperparameter: (V,) chosen value. on_edge: (V,) bool, chosen value is the grid's
        first or last.
      test_r, test_r2, val_r, val_r2: (V,) Pearson r and R² on the test and validation images.
      roi_average: the ROI-average fit.
      receptive_fields: the fwRF fields ((V, 2) centres, (V,) sizes, (H, W) map), else None.
    """

    method: str
    hyperparameter_name: str
    grid: np.ndarray
    cv_scores: np.ndarray
    best_hyperparameter: np.ndarray
    on_edge: np.ndarray
    test_r: np.ndarray
    test_r2: np.ndarray
    val_r: np.ndarray
    val_r2: np.ndarray
    roi_average: RoiAverageResult
    receptive_fields: ReceptiveFields | None = None


@dataclasses.dataclass(frozen=True)
class ReceptiveFields:
    """Each voxel's fwRF field: centres (V, 2) (row, column) and sizes (V,) (Gaussian sigma),
    in cells of a (H, W) feature map ``map_shape``."""

    centres: np.ndarray
    sizes: np.ndarray
    map_shape: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class SubjectResult:
    """One subject's fits: ``fits[arm][method]``.

    Attributes:
      subject: subject number. roi: ROI label. n_voxels: V.
      noise_ceiling_r: (V,) best achievable Pearson r (synthetic data), else None.
      signal_mask: (V,) bool, voxels with signal (synthetic data), else None.
      roi_codes: (V,) vim-1 ROI code of each voxel, else None.
    """

    subject: int
    roi: str
    n_voxels: int
    noise_ceiling_r: np.ndarray | None
    signal_mask: np.ndarray | None
    fits: dict[str, dict[str, MethodResult]]
    roi_codes: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class StudyResults:
    """A results file's contents: run attributes and the subjects in subject order."""

    path: Path
    config: dict[str, Any]
    versions: dict[str, Any]
    created: str
    subjects: tuple[SubjectResult, ...]

    @property
    def arms(self) -> list[str]:
        """Arm names present in any subject, plain and retina first."""
        return _ordered({arm for s in self.subjects for arm in s.fits}, _ARM_ORDER)

    @property
    def methods(self) -> list[str]:
        """Method names present in any subject and arm, ridge and PLS first."""
        found = {m for s in self.subjects for fits in s.fits.values() for m in fits}
        return _ordered(found, _METHOD_ORDER)


def read_results(path: str | os.PathLike) -> StudyResults:
    """Load a results file's scores and diagnostics (not the per-voxel predictions).

    Args:
      path: HDF5 file written by ``v4jax fit`` / :func:`v4jax.pipeline.study.fit_study`.

    Returns:
      :class:`StudyResults`.

    Raises:
      FileNotFoundError: no such file. ValueError: not HDF5, or a group or dataset the layout
      requires is missing or has the wrong shape (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"results file {path} does not exist; run `v4jax fit` (or `v4jax demo`) first."
        )
    with open_hdf5(path, "HDF5 results file") as handle:
        subject_names = sorted(
            (name for name in handle if re.fullmatch(r"S\d+", name)), key=lambda n: int(n[1:])
        )
        if not subject_names:
            raise ValueError(
                f"results file {path} has no subject groups (/S1, /S2, ...); found "
                f"{sorted(handle)}. Was it written by `v4jax fit`?"
            )
        subjects = tuple(_read_subject(path, handle[name]) for name in subject_names)
        return StudyResults(
            path=path,
            config=_json_attribute(handle, "config"),
            versions=_json_attribute(handle, "versions"),
            created=str(handle.attrs.get("created", "")),
            subjects=subjects,
        )


def make_figures(
    results_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    formats: Sequence[str] = _FORMATS,
) -> list[Path]:
    """Draw every figure of a results file, each as one file per format (written atomically).

    Figures (``{s}`` = subject number, ``{arm}`` = feature arm):

    - ``accuracy_{arm}``: test and validation Pearson r per method and subject, mean ± 95% CI
      over voxels (1.96 s.e.m.), the same y-axis for every arm so arms can be compared.
    - ``roi_average_S{s}``: predicted vs measured ROI-average response on the validation
      images, per arm and method, with R² and r² in each panel's title.
    - ``voxel_r_hist_S{s}``: histograms of per-voxel validation r, methods overlaid, per arm.
    - ``hyperparameters_S{s}_{arm}``: best hyperparameter per voxel over the grid (log axis
      for alpha), grid-edge voxels in red and counted; below, the cross-validated score along
      the grid (median and interquartile range over voxels).
    - ``ceiling_S{s}`` (when the file has ``noise_ceiling_r``, i.e. synthetic data): per-voxel
      validation r against the known ceiling, y = x drawn, signal and noise-only voxels apart.
    - ``method_comparison_S{s}`` (two or more methods) and ``arm_comparison_S{s}`` (two or more
      arms): per-voxel validation r of one against the other.
    - ``receptive_fields_S{s}_{arm}_{method}`` (methods with receptive fields, i.e. fwRF): each
      voxel's field centre and size over the feature map's visual field, one panel per ROI.

    Args:
      results_path: HDF5 results file. out_dir: folder for the figures (created).
      formats: any of matplotlib's file formats; by default PNG and PDF.

    Returns:
      The written paths, in drawing order.
    """
    formats = _check_formats(formats)
    results = read_results(results_path)
    out_dir = Path(out_dir)
    figures: list[tuple[str, Figure | None]] = []
    with matplotlib.rc_context(_STYLE):
        limits = _accuracy_limits(results)
        for arm in results.arms:
            figures.append((f"accuracy_{arm}", _accuracy_figure(results, arm, limits)))
        for subject in results.subjects:
            tag = f"S{subject.subject}"
            figures.append((f"roi_average_{tag}", _roi_average_figure(results, subject)))
            figures.append((f"voxel_r_hist_{tag}", _histogram_figure(results, subject)))
            for arm in _ordered(subject.fits, _ARM_ORDER):
                figure = _hyperparameter_figure(results, subject, arm)
                figures.append((f"hyperparameters_{tag}_{arm}", figure))
            if subject.noise_ceiling_r is not None:
                figures.append((f"ceiling_{tag}", _ceiling_figure(results, subject)))
            figures.append(
                (f"method_comparison_{tag}", _method_comparison_figure(results, subject))
            )
            figures.append((f"arm_comparison_{tag}", _arm_comparison_figure(results, subject)))
            for arm, methods in subject.fits.items():
                for method, fit in methods.items():
                    if fit.receptive_fields is not None:
                        figure = _receptive_field_figure(subject, arm, method, fit.receptive_fields)
                        figures.append((f"receptive_fields_{tag}_{arm}_{method}", figure))
        written: list[Path] = []
        for stem, figure in figures:
            if figure is not None:
                written += _save(figure, out_dir, stem, formats)
    return written


def summary_table(results_path: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per subject, arm and method with the study's headline numbers.

    Row keys: ``subject``, ``roi``, ``arm``, ``method``, ``n_voxels``; ``median_val_r``,
    ``mean_val_r``, ``median_test_r`` (over voxels); ``roi_average_val_r2`` (R² of the
    ROI-average fit on validation images); ``n_on_edge`` and ``fraction_on_edge`` (number and
    fraction of voxels whose best hyperparameter is the grid's first or last value);
    ``median_r_over_ceiling``: the median, over voxels with a positive known ceiling (the
    signal voxels of synthetic data), of validation r / ``noise_ceiling_r``; None without a ceiling.
    """
    results = read_results(results_path)
    rows = []
    for subject in results.subjects:
        for arm in _ordered(subject.fits, _ARM_ORDER):
            for method in _ordered(subject.fits[arm], _METHOD_ORDER):
                fit = subject.fits[arm][method]
                rows.append(
                    {
                        "subject": subject.subject,
                        "roi": subject.roi,
                        "arm": arm,
                        "method": method,
                        "n_voxels": subject.n_voxels,
                        "median_val_r": float(np.median(fit.val_r)),
                        "mean_val_r": float(np.mean(fit.val_r)),
                        "median_test_r": float(np.median(fit.test_r)),
                        "roi_average_val_r2": float(fit.roi_average.val_r2),
                        "n_on_edge": int(np.sum(fit.on_edge)),
                        "fraction_on_edge": float(np.mean(fit.on_edge)),
                        "median_r_over_ceiling": _median_r_over_ceiling(subject, fit),
                    }
                )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Fixed-width text table of :func:`summary_table` rows (one line per row, plus a header)."""
    columns = (
        ("subject", "subject", lambda v: f"S{v}"),
        ("roi", "ROI", str),
        ("arm", "arm", str),
        ("method", "method", str),
        ("n_voxels", "voxels", str),
        ("median_val_r", "median val r", _number),
        ("mean_val_r", "mean val r", _number),
        ("median_test_r", "median test r", _number),
        ("roi_average_val_r2", "ROI-avg val R²", _number),
        ("fraction_on_edge", "on grid edge", None),
        ("median_r_over_ceiling", "median r/ceiling", _number),
    )
    cells = [[title for _, title, _ in columns]]
    cells += [
        [
            _edge_cell(row) if fmt is None else fmt(row[key]) if row.get(key) is not None else "-"
            for key, _, fmt in columns
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _edge_cell(row: dict[str, Any]) -> str:
    fraction = f"{100 * row['fraction_on_edge']:.1f}%"
    return f"{row['n_on_edge']} ({fraction})" if "n_on_edge" in row else fraction


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _read_subject(path: Path, group: h5py.Group) -> SubjectResult:
    voxels = _group(path, group, "voxels")
    n_voxels = int(group.attrs.get("n_voxels", _dataset(path, voxels, "voxel_index").shape[0]))
    optional = {
        name: voxels[name][...] if name in voxels else None
        for name in ("noise_ceiling_r", "signal_mask", schema.ROI_CODES)
    }
    for name, values in optional.items():
        if values is not None and values.shape != (n_voxels,):
            raise ValueError(
                f"results file {path}: {voxels.name}/{name} has shape {values.shape} but the "
                f"subject has {n_voxels} voxels."
            )
    arms = [
        name
        for name in group
        if name not in ("voxels", "truth") and isinstance(group[name], h5py.Group)
    ]
    if not arms:
        raise ValueError(
            f"results file {path}: group {group.name} has no arm groups (such as "
            f"{group.name}/plain/ridge); the fit did not finish. Re-run `v4jax fit`."
        )
    fits = {}
    for arm in arms:
        methods = {name: _read_method(path, group[arm][name], n_voxels) for name in group[arm]}
        if not methods:
            raise ValueError(
                f"results file {path}: group {group[arm].name} has no method groups (such as "
                f"{group[arm].name}/ridge)."
            )
        fits[arm] = methods
    return SubjectResult(
        subject=int(group.name.strip("/")[1:]),
        roi=_roi_label(group.attrs.get("roi", "?")),
        n_voxels=n_voxels,
        noise_ceiling_r=optional["noise_ceiling_r"],
        signal_mask=None
        if optional["signal_mask"] is None
        else optional["signal_mask"].astype(bool),
        fits=fits,
        roi_codes=optional[schema.ROI_CODES],
    )


def _read_method(path: Path, group: h5py.Group, n_voxels: int) -> MethodResult:
    per_voxel = {
        name: _dataset(path, group, name, (n_voxels,))
        for name in ("best_hyperparameter", "on_edge", *_SCORES)
    }
    grid = _dataset(path, group, "grid")
    cv_scores = _dataset(path, group, "cv_scores", (grid.shape[0], n_voxels))
    average = _group(path, group, "roi_average")
    missing = [name for name in ("best_hyperparameter", *_SCORES) if name not in average.attrs]
    if missing:
        raise ValueError(
            f"results file {path}: group {average.name} lacks attribute(s) {missing}; re-run "
            "`v4jax fit`."
        )
    pred_val = _dataset(path, average, "pred_val")
    true_val = _dataset(path, average, "true_val", pred_val.shape)
    receptive_fields = None
    if schema.RF_CENTRES in group:
        receptive_fields = ReceptiveFields(
            centres=_dataset(path, group, schema.RF_CENTRES, (n_voxels, 2)),
            sizes=_dataset(path, group, schema.RF_SIZES, (n_voxels,)),
            map_shape=tuple(int(side) for side in group.attrs[schema.RF_MAP_SHAPE]),
        )
    return MethodResult(
        method=group.name.rsplit("/", 1)[-1],
        hyperparameter_name=str(group.attrs.get("hyperparameter_name", "hyperparameter")),
        grid=grid.astype(np.float64),
        cv_scores=cv_scores,
        best_hyperparameter=per_voxel["best_hyperparameter"].astype(np.float64),
        on_edge=per_voxel["on_edge"].astype(bool),
        test_r=per_voxel["test_r"],
        test_r2=per_voxel["test_r2"],
        val_r=per_voxel["val_r"],
        val_r2=per_voxel["val_r2"],
        roi_average=RoiAverageResult(
            best_hyperparameter=float(average.attrs["best_hyperparameter"]),
            test_r=float(average.attrs["test_r"]),
            test_r2=float(average.attrs["test_r2"]),
            val_r=float(average.attrs["val_r"]),
            val_r2=float(average.attrs["val_r2"]),
            pred_val=pred_val,
            true_val=true_val,
        ),
        receptive_fields=receptive_fields,
    )


def _group(path: Path, parent: h5py.Group, name: str) -> h5py.Group:
    item = parent.get(name)
    if not isinstance(item, h5py.Group):
        where = f"{parent.name.rstrip('/')}/{name}"
        raise ValueError(
            f"results file {path}: group {where} is missing; the file is incomplete or was not "
            "written by `v4jax fit` (re-run it)."
        )
    return item


def _dataset(
    path: Path, parent: h5py.Group, name: str, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    item = parent.get(name)
    where = f"{parent.name.rstrip('/')}/{name}"
    if not isinstance(item, h5py.Dataset):
        raise ValueError(
            f"results file {path}: dataset {where} is missing; the file is incomplete or was "
            "not written by `v4jax fit` (re-run it)."
        )
    values = item[...]
    if shape is not None and values.shape != shape:
        raise ValueError(
            f"results file {path}: dataset {where} has shape {values.shape}, expected {shape}."
        )
    return values


def _json_attribute(handle: h5py.File, name: str) -> dict[str, Any]:
    text = handle.attrs.get(name)
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise ValueError(f"results file attribute {name!r} is not valid JSON: {text!r}") from None
    return value if isinstance(value, dict) else {"value": value}


def _roi_label(value: Any) -> str:
    """The ROI attribute as text: a name, or a JSON list of names/codes joined by '+'."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(parsed, list):
        return "+".join(str(item) for item in parsed)
    return str(parsed)


def _ordered(names: Any, preferred: Sequence[str]) -> list[str]:
    names = set(names)
    return [n for n in preferred if n in names] + sorted(names - set(preferred))


def _median_r_over_ceiling(subject: SubjectResult, fit: MethodResult) -> float | None:
    if subject.noise_ceiling_r is None:
        return None
    has_ceiling = subject.noise_ceiling_r > 0
    if not np.any(has_ceiling):
        return None
    return float(np.median(fit.val_r[has_ceiling] / subject.noise_ceiling_r[has_ceiling]))


def _number(value: float) -> str:
    return f"{value:.3f}"


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    supported = Figure().canvas.get_supported_filetypes()
    unknown = [f for f in formats if f not in supported]
    if unknown or not formats:
        raise ValueError(
            f"formats {list(formats)} must be a non-empty list of {sorted(supported)}."
        )
    return tuple(formats)


def _save(figure: Figure, out_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        target = out_dir / f"{stem}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with atomic_path(target) as temporary:
            figure.savefig(temporary, format=fmt, metadata=metadata)
        paths.append(target)
    return paths


def _receptive_field_figure(
    subject: SubjectResult, arm: str, method: str, fields: ReceptiveFields
) -> Figure:
    from v4jax.data.vim1 import ROI_NAMES
    from v4jax.pipeline.fwrf_figure import receptive_field_figure

    if subject.roi_codes is None:
        labels = np.full(fields.sizes.shape, subject.roi)
    else:
        labels = np.array([ROI_NAMES.get(int(code), str(code)) for code in subject.roi_codes])
    title = f"S{subject.subject} {_arm_label(arm)} {method}: receptive fields"
    return receptive_field_figure(
        fields.centres, fields.sizes, labels, fields.map_shape, title=title
    )


def _colour(results: StudyResults, method: str) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    others = [m for m in results.methods if m not in METHOD_COLOURS]
    return _SPARE_COLOURS[others.index(method) % len(_SPARE_COLOURS)]


def _arm_label(arm: str) -> str:
    return _ARM_LABELS.get(arm, arm)


def _roi_text(results: StudyResults) -> str:
    return "/".join(dict.fromkeys(s.roi for s in results.subjects))


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and 95% CI half-width (1.96 s.e.m.) over voxels."""
    sem = np.std(values, ddof=1) / np.sqrt(values.size) if values.size > 1 else 0.0
    return float(np.mean(values)), float(1.96 * sem)


def _accuracy_limits(results: StudyResults) -> tuple[float, float]:
    """A y-range that holds every arm's bars and error bars, so arm figures compare."""
    low, high = 0.0, 0.0
    for subject in results.subjects:
        for fits in subject.fits.values():
            for fit in fits.values():
                for scores in (fit.test_r, fit.val_r):
                    mean, half = _mean_ci(scores)
                    low, high = min(low, mean - half), max(high, mean + half)
    pad = 0.12 * max(high - low, 0.05)
    return low - (pad if low < 0 else 0.0), high + pad


def _accuracy_figure(results: StudyResults, arm: str, limits: tuple[float, float]) -> Figure:
    subjects = [s for s in results.subjects if arm in s.fits]
    methods = [m for m in results.methods if any(m in s.fits[arm] for s in subjects)]
    figure = Figure(
        figsize=(4.0 + 1.6 * len(subjects) * max(len(methods), 1) / 2, 4.2), layout="constrained"
    )
    axes = figure.subplots(1, 2, sharey=True)
    width = 0.8 / max(len(methods), 1)
    positions = np.arange(len(subjects))
    for ax, split, split_label in zip(
        axes, ("test", "val"), ("test images", "validation images"), strict=True
    ):
        for k, method in enumerate(methods):
            means, halves, xs = [], [], []
            for i, subject in enumerate(subjects):
                fit = subject.fits[arm].get(method)
                if fit is None:
                    continue
                mean, half = _mean_ci(getattr(fit, f"{split}_r"))
                means.append(mean)
                halves.append(half)
                xs.append(positions[i] + (k - (len(methods) - 1) / 2) * width)
            ax.bar(
                xs,
                means,
                width=width * 0.92,
                color=_colour(results, method),
                label=method,
                yerr=halves,
                capsize=4,
                error_kw={"elinewidth": 1.2},
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(positions, [f"S{s.subject}\n({s.n_voxels} voxels)" for s in subjects])
        ax.set_xlabel("subject")
        ax.set_title(split_label)
        ax.set_ylim(*limits)
    axes[0].set_ylabel("Pearson r, mean ± 95% CI over voxels")
    figure.legend(
        *axes[0].get_legend_handles_labels(),
        title="method",
        loc="outside right upper",
        frameon=False,
    )
    _title(
        figure,
        f"Prediction accuracy per voxel, {_arm_label(arm)} features, ROI {_roi_text(results)}",
    )
    return figure


def _title(figure: Figure, text: str) -> None:
    """Figure title, wrapped to the figure's width (about 10 characters per inch at 11 pt)."""
    figure.suptitle(textwrap.fill(text, width=max(int(figure.get_figwidth() * 10), 30)))


def _panel_grid(
    n_rows: int, n_columns: int, size: tuple[float, float]
) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(size[0] * n_columns, size[1] * n_rows), layout="constrained")
    axes = np.asarray(figure.subplots(n_rows, n_columns, squeeze=False))
    return figure, axes


def _roi_average_figure(results: StudyResults, subject: SubjectResult) -> Figure:
    arms = _ordered(subject.fits, _ARM_ORDER)
    methods = [m for m in results.methods if any(m in subject.fits[a] for a in arms)]
    figure, axes = _panel_grid(len(arms), len(methods), (3.6, 3.5))
    values = [
        np.concatenate([f.roi_average.pred_val, f.roi_average.true_val])
        for fits in subject.fits.values()
        for f in fits.values()
    ]
    low, high = float(np.min(np.concatenate(values))), float(np.max(np.concatenate(values)))
    pad = 0.05 * (high - low or 1.0)
    span = (low - pad, high + pad)
    for row, arm in enumerate(arms):
        for column, method in enumerate(methods):
            ax = axes[row, column]
            fit = subject.fits[arm].get(method)
            if fit is None:
                ax.set_axis_off()
                continue
            average = fit.roi_average
            ax.plot(span, span, color="black", linewidth=0.8, linestyle="--", label="y = x")
            ax.scatter(
                average.pred_val,
                average.true_val,
                s=16,
                color=_colour(results, method),
                alpha=0.8,
                edgecolors="none",
                label="validation image",
            )
            ax.set_xlim(*span)
            ax.set_ylim(*span)
            ax.set_aspect("equal")
            ax.set_title(
                f"{method}, {_arm_label(arm)}\nR² = {average.val_r2:.2f}, "
                f"r² = {average.val_r**2:.2f} (r = {average.val_r:.2f})"
            )
            ax.set_xlabel("predicted response (z)")
            ax.set_ylabel("measured response (z)")
    figure.legend(
        *axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=2, frameon=False
    )
    n_val = next(iter(next(iter(subject.fits.values())).values())).roi_average.true_val.size
    _title(
        figure, f"S{subject.subject}, {subject.roi}-average response on {n_val} validation images"
    )
    return figure


def _histogram_figure(results: StudyResults, subject: SubjectResult) -> Figure:
    arms = _ordered(subject.fits, _ARM_ORDER)
    figure, axes = _panel_grid(1, len(arms), (4.4, 3.4))
    all_r = np.concatenate([f.val_r for fits in subject.fits.values() for f in fits.values()])
    bins = np.linspace(min(float(all_r.min()), 0.0) - 1e-9, float(all_r.max()) + 1e-9, 31)
    for ax, arm in zip(axes[0], arms, strict=True):
        for method in _ordered(subject.fits[arm], _METHOD_ORDER):
            fit = subject.fits[arm][method]
            colour = _colour(results, method)
            median = float(np.median(fit.val_r))
            ax.hist(
                fit.val_r,
                bins=bins,
                histtype="step",
                linewidth=1.6,
                color=colour,
                label=f"{method} (median {median:.2f})",
            )
            # Up to the data's height only: the headroom above is kept for the legend.
            ax.axvline(median, ymax=1 / 1.35, color=colour, linestyle="--", linewidth=1.0)
        ax.axvline(0.0, ymax=1 / 1.35, color="black", linewidth=0.8)
        ax.set_xlabel("validation Pearson r per voxel")
        ax.set_ylabel("number of voxels")
        ax.set_title(f"{_arm_label(arm)} features")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # headroom keeps the legend off the bars
        ax.legend(frameon=False, loc="upper right")
    _title(
        figure,
        f"S{subject.subject}, ROI {subject.roi}: per-voxel validation accuracy "
        f"({subject.n_voxels} voxels; dashed: medians)",
    )
    return figure


def _grid_edges(grid: np.ndarray, log: bool) -> np.ndarray:
    """Bin edges halfway between grid values (geometric halfway on a log axis)."""
    points = np.log(grid) if log else grid.astype(np.float64)
    if points.size == 1:
        edges = points + np.array([-0.5, 0.5])
    else:
        middles = (points[1:] + points[:-1]) / 2
        edges = np.concatenate(
            [[2 * points[0] - middles[0]], middles, [2 * points[-1] - middles[-1]]]
        )
    return np.exp(edges) if log else edges


def _hyperparameter_figure(results: StudyResults, subject: SubjectResult, arm: str) -> Figure:
    methods = _ordered(subject.fits[arm], _METHOD_ORDER)
    figure, axes = _panel_grid(2, len(methods), (4.2, 3.2))
    score_name = str(results.config.get("settings", {}).get("score", "r2"))
    score_label = {"r2": "R²", "pearson": "Pearson r"}.get(score_name, score_name)
    for column, method in enumerate(methods):
        fit = subject.fits[arm][method]
        grid = np.sort(fit.grid)
        log = fit.hyperparameter_name == "alpha" and bool(np.all(grid > 0))
        edges = _grid_edges(grid, log)
        counts = np.array([np.sum(np.isclose(fit.best_hyperparameter, g, rtol=1e-6)) for g in grid])
        is_edge = np.zeros(grid.size, bool)
        is_edge[[0, -1]] = True
        colours = [_EDGE_COLOUR if e else _colour(results, method) for e in is_edge]
        top, bottom = axes[0, column], axes[1, column]
        top.bar(edges[:-1], counts, width=np.diff(edges) * 0.9, align="edge", color=colours)
        n_edge = int(np.sum(fit.on_edge))
        top.set_title(
            f"{method}: best {fit.hyperparameter_name} per voxel\n"
            f"{n_edge} of {fit.on_edge.size} voxels ({100 * n_edge / fit.on_edge.size:.0f}%) "
            "on the grid's edge (red)"
        )
        top.set_ylabel("number of voxels")
        median = np.median(fit.cv_scores[np.argsort(fit.grid)], axis=1)
        quartiles = np.percentile(fit.cv_scores[np.argsort(fit.grid)], [25, 75], axis=1)
        bottom.fill_between(
            grid,
            quartiles[0],
            quartiles[1],
            color=_colour(results, method),
            alpha=0.25,
            linewidth=0,
            label="25-75% of voxels",
        )
        bottom.plot(
            grid,
            median,
            color=_colour(results, method),
            marker="o",
            markersize=3,
            label="median over voxels",
        )
        bottom.axvline(
            fit.roi_average.best_hyperparameter,
            color="black",
            linestyle=":",
            linewidth=1.2,
            label="ROI-average fit's choice",
        )
        bottom.set_ylabel(f"cross-validated {score_label}")
        unit = " (log scale)" if log else ""
        for ax in (top, bottom):
            if log:
                ax.set_xscale("log")
            ax.set_xlim(edges[0], edges[-1])
            ax.set_xlabel(f"{fit.hyperparameter_name}{unit}")
    figure.legend(
        handles=[
            Patch(color=_NOISE_COLOUR, alpha=0.5, label="CV score, 25-75% of voxels"),
            Line2D(
                [], [], color=_NOISE_COLOUR, marker="o", markersize=3, label="median over voxels"
            ),
            Line2D([], [], color="black", linestyle=":", label="ROI-average fit's choice"),
        ],
        loc="outside lower center",
        ncol=3 if len(methods) > 1 else 1,
        frameon=False,
    )
    _title(
        figure,
        f"S{subject.subject}, ROI {subject.roi}, {_arm_label(arm)} features: regularisation path",
    )
    return figure


def _ceiling_figure(results: StudyResults, subject: SubjectResult) -> Figure:
    arms = _ordered(subject.fits, _ARM_ORDER)
    methods = [m for m in results.methods if any(m in subject.fits[a] for a in arms)]
    figure, axes = _panel_grid(len(arms), len(methods), (3.6, 3.5))
    ceiling = subject.noise_ceiling_r
    signal = subject.signal_mask if subject.signal_mask is not None else ceiling > 0
    all_r = np.concatenate([f.val_r for fits in subject.fits.values() for f in fits.values()])
    low = min(float(all_r.min()), 0.0) - 0.05
    high = max(float(all_r.max()), float(ceiling.max())) + 0.05
    for row, arm in enumerate(arms):
        for column, method in enumerate(methods):
            ax = axes[row, column]
            fit = subject.fits[arm].get(method)
            if fit is None:
                ax.set_axis_off()
                continue
            ax.plot(
                [low, high],
                [low, high],
                color="black",
                linewidth=0.8,
                linestyle="--",
                label="r = ceiling",
            )
            ax.scatter(
                ceiling[~signal],
                fit.val_r[~signal],
                s=9,
                color=_NOISE_COLOUR,
                edgecolors="none",
                alpha=0.7,
                label=f"noise-only ({int(np.sum(~signal))})",
            )
            ax.scatter(
                ceiling[signal],
                fit.val_r[signal],
                s=9,
                color=_colour(results, method),
                edgecolors="none",
                alpha=0.8,
                label=f"signal ({int(np.sum(signal))})",
            )
            ax.axhline(0.0, color="black", linewidth=0.6)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
            ax.set_aspect("equal")
            ratio = _median_r_over_ceiling(subject, fit)
            ratio_text = "" if ratio is None else f"\nmedian r / ceiling = {ratio:.2f}"
            ax.set_title(f"{method}, {_arm_label(arm)}{ratio_text}")
            ax.set_xlabel("known noise ceiling (max Pearson r)")
            ax.set_ylabel("validation Pearson r")
    n_signal, n_noise = int(np.sum(signal)), int(np.sum(~signal))
    handles = [
        Line2D([], [], color="black", linewidth=0.8, linestyle="--", label="r = ceiling"),
        Line2D(
            [],
            [],
            color=_NOISE_COLOUR,
            marker="o",
            linestyle="none",
            label=f"noise-only voxels ({n_noise})",
        ),
    ] + [
        Line2D(
            [],
            [],
            color=_colour(results, method),
            marker="o",
            linestyle="none",
            label=f"signal voxels ({n_signal}), {method}",
        )
        for method in methods
    ]
    figure.legend(
        handles=handles, loc="outside lower center", ncol=min(len(methods), 2), frameon=False
    )
    _title(
        figure,
        f"S{subject.subject}, ROI {subject.roi}: accuracy vs the known noise ceiling "
        "(synthetic data)",
    )
    return figure


def _paired_scatter(
    ax: Any, x: np.ndarray, y: np.ndarray, colour: str, x_label: str, y_label: str
) -> str:
    """Scatter y against x with y = x drawn; returns "<y> higher in k of n voxels"."""
    low = min(float(x.min()), float(y.min()), 0.0) - 0.05
    high = max(float(x.max()), float(y.max())) + 0.05
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--", label="y = x")
    ax.scatter(x, y, s=9, color=colour, edgecolors="none", alpha=0.7)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    above = int(np.sum(y > x))
    return f"{y_label.split(' ')[0]} higher in {above} of {x.size} voxels"


def _method_comparison_figure(results: StudyResults, subject: SubjectResult) -> Figure | None:
    panels = [
        (arm, first, second)
        for arm in _ordered(subject.fits, _ARM_ORDER)
        for first, second in itertools.combinations(_ordered(subject.fits[arm], _METHOD_ORDER), 2)
    ]
    if not panels:
        return None
    figure, axes = _panel_grid(1, len(panels), (3.8, 3.8))
    for ax, (arm, first, second) in zip(axes[0], panels, strict=True):
        fits = subject.fits[arm]
        counts = _paired_scatter(
            ax,
            fits[first].val_r,
            fits[second].val_r,
            "#444444",
            f"{first} validation r",
            f"{second} validation r",
        )
        ax.set_title(f"{_arm_label(arm)} features\n{counts}")
    _title(
        figure, f"S{subject.subject}, ROI {subject.roi}: methods compared per voxel (dashed: y = x)"
    )
    return figure


def _arm_comparison_figure(results: StudyResults, subject: SubjectResult) -> Figure | None:
    arms = _ordered(subject.fits, _ARM_ORDER)
    panels = [
        (method, first, second)
        for first, second in itertools.combinations(arms, 2)
        for method in results.methods
        if method in subject.fits[first] and method in subject.fits[second]
    ]
    if not panels:
        return None
    figure, axes = _panel_grid(1, len(panels), (3.8, 3.8))
    for ax, (method, first, second) in zip(axes[0], panels, strict=True):
        counts = _paired_scatter(
            ax,
            subject.fits[first][method].val_r,
            subject.fits[second][method].val_r,
            _colour(results, method),
            f"{first} validation r",
            f"{second} validation r",
        )
        ax.set_title(f"{method}: {_arm_label(second)} vs {_arm_label(first)}\n{counts}")
    _title(
        figure,
        f"S{subject.subject}, ROI {subject.roi}: feature arms compared per voxel (dashed: y = x)",
    )
    return figure


# ----------------------------------------------------------------------------------------------
# Sweeps: which layer best predicts each ROI
# ----------------------------------------------------------------------------------------------

#: One colour per vim-1 ROI, early to late areas (Okabe-Ito then two greys).
ROI_COLOURS = {
    "V1": "#0072B2",
    "V2": "#56B4E9",
    "V3": "#009E73",
    "V3A": "#F0E442",
    "V3B": "#E69F00",
    "V4": "#D55E00",
    "LO": "#CC79A7",
    "other": "#7F7F7F",
    "all": "#000000",
}


@dataclasses.dataclass(frozen=True)
class SweepLayerScores:
    """Per-voxel accuracy of every swept layer for one method (L layers, V voxels).

    Attributes:
      method: the method. layers: (L,) layer names in sweep order. score: the per-voxel score
        read ("val_r", else "test_r", else the best cross-validated score "cv").
      accuracy: (L, V) that score. valid: (V,) voxels with finite responses.
      roi_names: (V,) ROI name of each voxel ("all" for plain HDF5 responses).
      noise_ceiling_r: (V,) known ceiling on Pearson r, or None.
    """

    method: str
    layers: tuple[str, ...]
    score: str
    accuracy: np.ndarray
    valid: np.ndarray
    roi_names: np.ndarray
    noise_ceiling_r: np.ndarray | None

    @property
    def rois(self) -> list[str]:
        """ROI names present among the valid voxels, early areas first."""
        return _ordered(set(self.roi_names[self.valid].tolist()), tuple(ROI_COLOURS))

    def voxels(self, roi: str) -> np.ndarray:
        """Indices of the valid voxels of ``roi``."""
        return np.flatnonzero(self.valid & (self.roi_names == roi))

    def normalised(self, roi: str) -> tuple[np.ndarray, bool]:
        """(L, v) accuracy of ``roi``'s voxels over their known ceiling (voxels with a
        positive ceiling), or the raw accuracy when no ceiling is known; and whether divided."""
        voxels = self.voxels(roi)
        if self.noise_ceiling_r is None:
            return self.accuracy[:, voxels], False
        voxels = voxels[self.noise_ceiling_r[voxels] > 0]
        return self.accuracy[:, voxels] / self.noise_ceiling_r[voxels], True


def read_sweep(path: str | os.PathLike, method: str | None = None) -> SweepLayerScores:
    """Per-voxel accuracy of every layer of a sweep results file, for one method.

    Args:
      path: sweep results file (``v4jax sweep``'s ``sweep.h5``).
      method: which method (None: ridge if swept, else the first).

    Raises:
      FileNotFoundError: no such file. ValueError: not a sweep results file, or no such method.
    """
    from v4jax.data._format import ROI_NAMES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep results file {path} does not exist; run `v4jax sweep`.")
    with open_hdf5(path, "HDF5 sweep results file") as handle:
        try:
            settings = json.loads(handle.attrs["settings"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path} has no readable sweep settings; was it written by `v4jax sweep`?"
            ) from None
        methods = list(settings["methods"])
        method = method or ("ridge" if "ridge" in methods else methods[0])
        if method not in methods:
            raise ValueError(f"{path} swept {methods}, not {method!r}.")
        layers = tuple(layer["name"] for layer in settings["layers"])
        groups = [handle[schema.sweep_group(layer, method)] for layer in layers]
        score = next((name for name in ("val_r", "test_r") if name in groups[0]), "cv")
        if score == "cv":
            accuracy = np.stack([np.nanmax(group["cv_scores"][...], axis=0) for group in groups])
        else:
            accuracy = np.stack([group[score][...] for group in groups])
        codes = (
            handle[schema.ROI_CODES][...]
            if schema.ROI_CODES in handle
            else np.full(accuracy.shape[1], schema.NO_ROI)
        )
        roi_names = np.array([ROI_NAMES.get(int(code), "all") for code in codes])
        ceiling = handle[schema.NOISE_CEILING][...] if schema.NOISE_CEILING in handle else None
        valid = handle[schema.VALID][...].astype(bool) & np.all(np.isfinite(accuracy), axis=0)
    return SweepLayerScores(method, layers, score, accuracy, valid, roi_names, ceiling)


def sweep_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The layer x ROI summary of a sweep results file.

    Returns:
      ``layer_sweep``: ROI name -> layer name -> median validation r over the ROI's voxels
      (ridge if swept, else the first method; the test or cross-validated score when there
      are no validation images: see ``score``); ``best_layer``: ROI -> the layer of highest
      median; ``best_layer_per_voxel``: ROI -> layer -> fraction of the ROI's voxels whose
      accuracy is highest on that layer; ``ceiling_normalised``: ROI -> layer -> median and
      quartiles of r / noise ceiling over voxels with a known ceiling (None on real data);
      ``by_method``: method -> its own ``layer_sweep``; ``method``, ``score``, ``layers``,
      ``rois`` and ``n_voxels`` (ROI -> count).
    """
    scores = read_sweep(path)
    with open_hdf5(Path(path), "HDF5 sweep results file") as handle:
        methods = json.loads(handle.attrs["settings"])["methods"]
    by_method = {}
    for method in methods:
        of_method = read_sweep(path, method)
        by_method[method] = {
            roi: {
                layer: float(np.median(of_method.accuracy[index, of_method.voxels(roi)]))
                for index, layer in enumerate(of_method.layers)
            }
            for roi in of_method.rois
        }
    layer_sweep = by_method[scores.method]
    best_per_voxel, normalised = {}, {}
    for roi in scores.rois:
        winners = np.argmax(scores.accuracy[:, scores.voxels(roi)], axis=0)
        best_per_voxel[roi] = {
            layer: float(np.mean(winners == index)) for index, layer in enumerate(scores.layers)
        }
        values, divided = scores.normalised(roi)
        if divided and values.shape[1]:
            quartiles = np.percentile(values, [25, 50, 75], axis=1)
            normalised[roi] = {
                layer: {
                    "median": float(quartiles[1, index]),
                    "q25": float(quartiles[0, index]),
                    "q75": float(quartiles[2, index]),
                }
                for index, layer in enumerate(scores.layers)
            }
    return {
        "method": scores.method,
        "score": scores.score,
        "layers": list(scores.layers),
        "rois": scores.rois,
        "n_voxels": {roi: int(scores.voxels(roi).size) for roi in scores.rois},
        "layer_sweep": layer_sweep,
        "best_layer": {roi: max(layers, key=layers.get) for roi, layers in layer_sweep.items()},
        "best_layer_per_voxel": best_per_voxel,
        "ceiling_normalised": normalised if scores.noise_ceiling_r is not None else None,
        "by_method": by_method,
    }


def write_sweep_summary(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`sweep_summary` written (atomically) as JSON beside the sweep results file."""
    summary = sweep_summary(path)
    atomic_write_text(schema.summary_path(path), json.dumps(summary, indent=2))
    return summary


def format_layer_sweep(summary: dict[str, Any]) -> str:
    """Text table of a :func:`sweep_summary`: one row per ROI, one column per layer (median
    accuracy), then the ROI's best layer."""
    layers = summary["layers"]
    header = ["ROI", "voxels", *layers, "best layer"]
    cells = [header] + [
        [
            roi,
            str(summary["n_voxels"][roi]),
            *(f"{summary['layer_sweep'][roi][layer]:.3f}" for layer in layers),
            summary["best_layer"][roi],
        ]
        for roi in summary["rois"]
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    label = {"val_r": "validation r", "test_r": "test r", "cv": "cross-validated score"}
    title = f"median {label[summary['score']]} per ROI and layer ({summary['method']})"
    return title + "\n" + "\n".join(lines)


def make_sweep_figures(
    sweep_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    formats: Sequence[str] = _FORMATS,
) -> list[Path]:
    """Draw the layer x ROI figure of a sweep results file (``layer_roi.{png,pdf}``).

    Left: per ROI, the median over its voxels of the validation r divided by each voxel's known
    noise ceiling (synthetic data; the raw r on real data) for every layer, the band spanning
    the 25th to 75th percentiles. Right: the fraction of each ROI's voxels best predicted by
    each layer.

    Returns:
      The written paths.
    """
    formats = _check_formats(formats)
    scores = read_sweep(sweep_path)
    with matplotlib.rc_context(_STYLE):
        figure = _layer_roi_figure(scores)
        return _save(figure, Path(out_dir), "layer_roi", formats)


def _layer_roi_figure(scores: SweepLayerScores) -> Figure:
    layers, rois = scores.layers, scores.rois
    figure = Figure(figsize=(6.0 + 1.2 * len(layers), 4.6), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(1.25, 1))
    positions = np.arange(len(layers))
    divided = False
    for roi in rois:
        values, divided = scores.normalised(roi)
        if not values.shape[1]:
            continue
        low, median, high = np.percentile(values, [25, 50, 75], axis=1)
        colour = ROI_COLOURS.get(roi, "#444444")
        left.fill_between(positions, low, high, color=colour, alpha=0.15, linewidth=0)
        left.plot(positions, median, color=colour, marker="o", label=f"{roi} ({values.shape[1]})")
        best = int(np.argmax(median))
        left.plot(positions[best], median[best], marker="*", markersize=13, color=colour)
    if left.get_ylim()[0] < 0:
        left.axhline(0.0, color="black", linewidth=0.8)
    left.set_xticks(positions, layers)
    left.set_xlabel("layer")
    score = {"val_r": "validation r", "test_r": "test r", "cv": "CV score"}[scores.score]
    left.set_ylabel(f"{score} / noise ceiling" if divided else score)
    left.set_title("median over each ROI's voxels\n(band: 25-75%; star: the curve's best layer)")
    left.legend(title="ROI (voxels)", frameon=False, fontsize=8, loc="best")
    fractions = np.array(
        [
            [np.mean(np.argmax(scores.accuracy[:, scores.voxels(roi)], axis=0) == index)
             for index in range(len(layers))]
            for roi in rois
        ]
    )  # fmt: skip
    image = right.imshow(fractions, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (row, column), value in np.ndenumerate(fractions):
        colour = "black" if value > 0.6 else "white"
        right.text(column, row, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=8)
    right.set_xticks(positions, layers)
    right.set_yticks(np.arange(len(rois)), rois)
    right.set_xlabel("layer")
    right.set_title("fraction of each ROI's voxels\nbest predicted by each layer")
    figure.colorbar(image, ax=right, label="fraction of voxels")
    what = "ceiling-normalised " if divided else ""
    _title(figure, f"Which layer predicts each ROI: {what}{score}, {scores.method}")
    return figure
