"""The report's receptive-field figure: fwRF centres and sizes over the visual field, per ROI."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from v4jax._io import atomic_path


def plot_receptive_fields(
    centres: Any,
    sizes: Any,
    roi_labels: Sequence[str] | np.ndarray,
    map_shape: tuple[int, int],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Draw :func:`receptive_field_figure` to ``path`` (format from its suffix: ``.png``,
    ``.pdf``, ``.svg``), written atomically. Returns the path."""
    path = Path(path)
    figure = receptive_field_figure(centres, sizes, roi_labels, map_shape, title=title)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png")
    return path


def receptive_field_figure(
    centres: Any,
    sizes: Any,
    roi_labels: Sequence[str] | np.ndarray,
    map_shape: tuple[int, int],
    *,
    title: str | None = None,
) -> Figure:
    """Every voxel's receptive field as a circle of radius sigma, one panel per ROI.

    Args:
      centres: (V, 2) field centres (row, column) in cells of the feature map
        (``FwRFCVResult.centres``).
      sizes: (V,) Gaussian sigmas in cells (``FwRFCVResult.sizes``).
      roi_labels: (V,) ROI name of each voxel (e.g. ``ROI_NAMES[code]``).
      map_shape: (H, W) of the feature map: the panels show the visual field it tiles, row 0 at
        the top.
      title: optional figure title.
    """
    centres = np.asarray(centres, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    labels = np.asarray(roi_labels).astype(str)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f"centres must be (V, 2) (row, column), got shape {centres.shape}.")
    if sizes.shape != (centres.shape[0],) or labels.shape != (centres.shape[0],):
        raise ValueError(
            f"sizes {sizes.shape} and roi_labels {labels.shape} must have one entry per voxel "
            f"({centres.shape[0]})."
        )
    rois = list(dict.fromkeys(labels.tolist()))
    columns = min(4, max(1, len(rois)))
    rows = math.ceil(len(rois) / columns) if rois else 1
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows + 0.4))
    axes = figure.subplots(rows, columns, squeeze=False)
    height, width = map_shape
    for panel, ax in enumerate(axes.ravel()):
        if panel >= len(rois):
            ax.set_axis_off()
            continue
        chosen = labels == rois[panel]
        for (row, column), sigma in zip(centres[chosen], sizes[chosen], strict=True):
            ax.add_patch(Circle((column, row), sigma, fill=False, alpha=0.25, linewidth=0.6))
        ax.scatter(centres[chosen, 1], centres[chosen, 0], s=4)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_aspect("equal")
        ax.set_title(
            f"{rois[panel]} (n={int(chosen.sum())}, median sigma "
            f"{np.median(sizes[chosen]):.2f} cells)",
            fontsize=8,
        )
        ax.set_xlabel("column (cells)", fontsize=7)
        ax.set_ylabel("row (cells)", fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
