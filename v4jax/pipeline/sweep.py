"""Out-of-core sweeps: many layers x hyperparameter grids x all voxels, streamed in voxel blocks.

:func:`run_sweep` fits every (layer, method) pair to every voxel of a response file that need not
fit in memory:

* each layer's design is read once and decomposed once per method (:func:`v4jax.prepare_ridge`
  or :func:`v4jax.prepare_pls1`: fold kernels / eigendecompositions); that decomposition serves
  every alpha (or component count) and every voxel block;
* responses are read one block of voxel columns at a time (vim-1 ``EstimatedResponses.mat``
  through :func:`v4jax.data.open_responses`, or any 2-D HDF5 dataset (n_samples, n_voxels));
* per block, the chosen hyperparameter, the cross-validated scores of the whole grid, held-out
  test / validation scores and (optionally) the coefficients are written straight into the
  results file, so memory is bounded by the block size, not by the number of voxels.

Crash safety and resume: the work happens in ``out + ".partial"`` through the shared
mechanism of :mod:`v4jax._checkpoint`. The partial is created complete (every dataset
allocated, contiguous, with fill values) with its key (the inputs' hashes and the settings), so
afterwards a block only overwrites raw data at fixed offsets and then sets its flag in
``completed_blocks``: a killed sweep can never damage blocks already recorded as done. Running
the same sweep again resumes at the first unfinished block (refusing, naming what changed, if
inputs or settings differ); the finished file is renamed onto ``out``.

The results layout is :mod:`v4jax.pipeline.results_schema`, read by
:func:`v4jax.pipeline.report.sweep_summary` and :func:`v4jax.pipeline.report.make_sweep_figures`.
A method is one entry of ``SOLVERS``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from v4jax import _checkpoint as checkpoint
from v4jax import _validation
from v4jax._io import file_sha256, open_hdf5
from v4jax.metrics import SCORES, pearson_columns, r2_columns
from v4jax.pipeline import defaults
from v4jax.pipeline import results_schema as schema
from v4jax.solvers.engine.folds import make_folds
from v4jax.solvers.engine.result import recorded_grid
from v4jax.solvers.fwrf import DEFAULT_RELATIVE_ALPHAS

logger = logging.getLogger(__name__)

DEFAULT_ALPHAS = defaults.ALPHAS
DEFAULT_COMPONENTS = defaults.COMPONENTS
DEFAULT_FWRF_ALPHAS = DEFAULT_RELATIVE_ALPHAS
DEFAULT_BLOCK_VOXELS = defaults.BLOCK_VOXELS
PARTIAL_SUFFIX = checkpoint.PARTIAL_SUFFIX
FORMAT = schema.SWEEP_FORMAT


# -- inputs -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerSource:
    """One design: a dataset of a features file (from ``v4jax extract``).

    Attributes:
      name: group name of the layer in the results file.
      path: the HDF5 features file.
      dataset: the dataset in it, (n_images, ...) flattened to (n_images, n_features).
    """

    name: str
    path: Path
    dataset: str


@dataclasses.dataclass(frozen=True)
class Vim1Source:
    """vim-1 responses: ``<data_dir>/EstimatedResponses.mat``, one subject, an ROI selection.

    The design's rows are the training images then the validation images.

    Attributes:
      data_dir: the vim-1 directory (real or synthetic).
      subject: subject number.
      roi: ROI name, code or list (as :func:`v4jax.data.load_vim1`), or "all".
      max_voxels_per_roi: keep only the first N voxels (in file order) of each ROI (None: all).
    """

    data_dir: Path
    subject: int = 1
    roi: Any = "all"
    max_voxels_per_roi: int | None = None


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """A plain 2-D HDF5 dataset (n_samples, n_voxels) of responses, rows as the design's."""

    path: Path
    dataset: str


@dataclasses.dataclass(frozen=True)
class SweepSummary:
    """What :func:`run_sweep` did.

    Attributes:
      path: the results file.
      computed: (layer, method, block) of every block computed by this call, in order (blocks
        finished by an earlier, interrupted call are not recomputed and not listed).
      n_blocks: blocks per (layer, method).
    """

    path: Path
    computed: tuple[tuple[str, str, int], ...]
    n_blocks: int


def feature_layers(
    files: str | os.PathLike | Sequence[str | os.PathLike], layers: Sequence[str] | None = None
) -> list[LayerSource]:
    """Every (file, layer) pair to sweep.

    Args:
      files: one features file or several (or a directory: every ``*.h5`` in it).
      layers: dataset names to use in each file (None: every dataset at the file's top level).

    Returns:
      One :class:`LayerSource` per pair, named by the layer (or ``<file stem>.<layer>`` when
      there are several files).
    """
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    paths: list[Path] = []
    for entry in map(Path, files):
        if entry.is_dir():
            found = sorted(entry.glob("*.h5"))
            if not found:
                raise FileNotFoundError(f"features directory {entry} holds no *.h5 files.")
            paths.extend(found)
        elif not entry.exists():
            raise FileNotFoundError(
                f"features file {entry} does not exist; run `v4jax extract` first."
            )
        else:
            paths.append(entry)
    if not paths:
        raise ValueError("no features files given; pass at least one.")
    sources = []
    for path in paths:
        with _open_hdf5(path, "features file") as handle:
            available = [name for name in handle if isinstance(handle[name], h5py.Dataset)]
        names = available if layers is None else list(layers)
        missing = [name for name in names if name not in available]
        if missing:
            raise ValueError(
                f"{path} has no layer(s) {missing} (it has {available}); extract them with "
                "`v4jax extract --layers ...` or choose others with --layers."
            )
        for name in names:
            label = name if len(paths) == 1 else f"{path.stem}.{name}"
            sources.append(LayerSource(label, path, name))
    labels = [source.name for source in sources]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two layers share a name in {labels}; give the files distinct names.")
    return sources


def parse_responses(text: str) -> ArraySource:
    """``"FILE:DATASET"`` -> :class:`ArraySource` (the dataset after the last colon)."""
    path, separator, dataset = str(text).rpartition(":")
    if not separator or not path or not dataset:
        raise ValueError(f"responses {text!r} must be FILE:DATASET, e.g. responses.h5:responses.")
    return ArraySource(Path(path), dataset)


def resolve_devices(devices: int | Sequence[jax.Device] | None) -> list[jax.Device] | None:
    """``devices`` as a device list: an int N means the first N local devices; None: all."""
    if devices is None:
        return None
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        available = jax.local_devices()
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices={devices} but this process has {len(available)} local device(s); "
                f"pass 1..{len(available)} or omit it for all."
            )
        return available[: int(devices)]
    return list(devices)


# -- response readers ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Reader:
    """An open response source.

    columns: (V,) file columns of the swept voxels. design_rows: part -> design row indices
    ("fit", and "test" / "val" where they exist). read: block columns -> part -> (rows, b)
    float32 responses. identity: what identifies the inputs (hashed into the settings).
    roi_codes: (V,) vim-1 ROI code of each voxel (``NO_ROI`` for plain HDF5 responses).
    noise_ceiling_r: (V,) known ceiling on Pearson r (synthetic vim-1 data), else None.
    """

    columns: np.ndarray
    design_rows: dict[str, np.ndarray]
    read: Callable[[np.ndarray], dict[str, np.ndarray]]
    identity: dict[str, Any]
    roi_codes: np.ndarray
    noise_ceiling_r: np.ndarray | None = None


def _split_rows(n_rows: int, n_test: int) -> dict[str, np.ndarray]:
    if n_test >= n_rows - 1:
        raise ValueError(
            f"n_test={n_test} leaves fewer than 2 of the {n_rows} training samples to fit; "
            "use a smaller n_test."
        )
    rows = {"fit": np.arange(n_rows - n_test)}
    if n_test:
        rows["test"] = np.arange(n_rows - n_test, n_rows)
    return rows


@contextlib.contextmanager
def _open_reader(source: Vim1Source | ArraySource, n_test: int) -> Iterator[_Reader]:
    if isinstance(source, Vim1Source):
        from v4jax.data import open_responses

        with open_responses(source.data_dir, source.subject) as responses:
            columns = _first_per_roi(
                responses.columns_for(source.roi), responses.roi_codes, source.max_voxels_per_roi
            )
            rows = _split_rows(responses.n_train, n_test)
            rows["val"] = np.arange(responses.n_train, responses.n_train + responses.n_val)

            def read(block: np.ndarray) -> dict[str, np.ndarray]:
                train, val = responses.read_voxel_block(block)
                parts = {"fit": train[rows["fit"]], "val": val}
                if n_test:
                    parts["test"] = train[rows["test"]]
                return parts

            identity = {
                "kind": "vim1",
                "file_sha256": file_sha256(responses.path),
                "subject": source.subject,
                "columns_sha256": hashlib.sha256(columns.tobytes()).hexdigest(),
            }
            ceiling = _known_ceiling(Path(source.data_dir), source.subject, columns)
            yield _Reader(columns, rows, read, identity, responses.roi_codes[columns], ceiling)
        return
    if not isinstance(source, ArraySource):
        raise TypeError(
            "responses must be a Vim1Source(data_dir, subject, roi) or an ArraySource(path, "
            f"dataset), got {type(source).__name__}."
        )
    with _open_hdf5(Path(source.path), "responses file") as handle:
        if source.dataset not in handle or not isinstance(handle[source.dataset], h5py.Dataset):
            raise ValueError(
                f"{source.path} has no dataset {source.dataset!r}; it has {sorted(handle)}."
            )
        dataset = handle[source.dataset]
        if dataset.ndim != 2 or dataset.dtype.kind not in "fiu":
            raise ValueError(
                f"{source.path}:{source.dataset} has shape {dataset.shape} and dtype "
                f"{dataset.dtype}; expected a numeric (n_samples, n_voxels) array."
            )
        rows = _split_rows(dataset.shape[0], n_test)

        def read(block: np.ndarray) -> dict[str, np.ndarray]:
            values = np.asarray(dataset[:, int(block[0]) : int(block[-1]) + 1], dtype=np.float32)
            return {part: values[indices] for part, indices in rows.items()}

        identity = {
            "kind": "hdf5",
            "file_sha256": file_sha256(source.path),
            "dataset": source.dataset,
            "shape": list(dataset.shape),
        }
        columns = np.arange(dataset.shape[1])
        yield _Reader(columns, rows, read, identity, np.full(columns.size, schema.NO_ROI))


def _first_per_roi(columns: np.ndarray, roi_codes: np.ndarray, limit: int | None) -> np.ndarray:
    """``columns`` keeping only the first ``limit`` of each ROI (all when ``limit`` is None)."""
    if limit is None:
        return columns
    limit = _validation.check_positive_int(limit, "max_voxels_per_roi")
    codes = roi_codes[columns]
    keep = np.zeros(columns.size, bool)
    for code in np.unique(codes):
        keep[np.flatnonzero(codes == code)[:limit]] = True
    return columns[keep]


def _known_ceiling(data_dir: Path, subject: int, columns: np.ndarray) -> np.ndarray | None:
    """(V,) noise ceiling on Pearson r of the chosen columns, when the data is synthetic."""
    from v4jax.data._format import GROUND_TRUTH_FILE

    path = data_dir / GROUND_TRUTH_FILE
    if not path.exists():
        return None
    with _open_hdf5(path, "ground-truth file") as handle:
        name = f"S{subject}/noise_ceiling_r"
        return handle[name][...][columns] if name in handle else None


@contextlib.contextmanager
def _open_hdf5(path: Path, description: str) -> Iterator[h5py.File]:
    if not path.exists():
        raise FileNotFoundError(f"{description} {path} does not exist.")
    with open_hdf5(path, f"HDF5 {description}") as handle:
        yield handle


def _read_design(layer: LayerSource) -> np.ndarray:
    """(n_images, n_features) float32 design of one layer."""
    with _open_hdf5(layer.path, "features file") as handle:
        values = handle[layer.dataset][...]
    return values.reshape(values.shape[0], -1).astype(np.float32, copy=False)


def _layer_shape(layer: LayerSource) -> tuple[int, tuple[int, ...]]:
    """(n_images, the shape of one image's features, e.g. (H, W, C) for a feature map)."""
    with _open_hdf5(layer.path, "features file") as handle:
        shape = handle[layer.dataset].shape
    return int(shape[0]), tuple(int(side) for side in shape[1:])


# -- the sweep ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    layers: tuple[LayerSource, ...]
    n_features: dict[str, int]
    map_shapes: dict[str, tuple[int, ...]]
    methods: tuple[str, ...]
    grids: dict[str, np.ndarray]
    folds: list
    score: str
    n_voxels: int
    n_fit: int
    block_voxels: int
    n_blocks: int
    parts: tuple[str, ...]
    save_coef: bool
    settings: dict[str, Any]

    @property
    def settings_json(self) -> str:
        return json.dumps(self.settings, sort_keys=True)

    @property
    def settings_sha256(self) -> str:
        return hashlib.sha256(self.settings_json.encode()).hexdigest()

    def tasks(self) -> list[tuple[LayerSource, str]]:
        return [(layer, method) for layer in self.layers for method in self.methods]

    def block(self, columns: np.ndarray, number: int) -> tuple[int, int, np.ndarray]:
        start = number * self.block_voxels
        stop = min(start + self.block_voxels, self.n_voxels)
        return start, stop, columns[start:stop]


def run_sweep(
    layers: Sequence[LayerSource],
    responses: Vim1Source | ArraySource,
    out: str | os.PathLike,
    *,
    methods: Sequence[str] = ("ridge",),
    alphas: Any = DEFAULT_ALPHAS,
    n_components: Any = DEFAULT_COMPONENTS,
    fwrf_alphas: Any = DEFAULT_FWRF_ALPHAS,
    grids: dict[str, Any] | None = None,
    cv: Any = 5,
    score: str = "r2",
    n_test: int = 0,
    block_voxels: int = DEFAULT_BLOCK_VOXELS,
    save_coef: bool = False,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SweepSummary:
    """Fit every layer x method x hyperparameter grid to every voxel, block by block.

    Args:
      layers: designs to sweep (see :func:`feature_layers`); each (n_images, ...) with one row
        per response sample (vim-1: training images then validation images).
      responses: :class:`Vim1Source` or :class:`ArraySource`.
      out: the HDF5 results file (the layout is in this module's docstring).
      methods: names of ``SOLVERS`` ("ridge", "pls", "fwrf": feature maps only; its file
        records per alpha the best score over the candidate fields, see
        :func:`~v4jax.solvers.engine.result.recorded_grid`).
      alphas: ridge grid. n_components: PLS grid (an int K means 1..K). fwrf_alphas: fwRF's
        alphas, relative to each candidate field's mean Gram eigenvalue (see
        :func:`v4jax.fwrf_cv`; the fields are its default grid).
      grids: grid of any other method of ``SOLVERS``, by its ``grid`` name.
      cv: folds over the fitting samples (int: contiguous folds, or a list of (train, test)).
      score: "r2" or "pearson", the cross-validated score that picks each voxel's value.
      n_test: the last ``n_test`` training samples are held out of the fit and scored as the
        "test" part (vim-1 validation images are always scored as "val").
      block_voxels: voxels read, fitted and written together (bounds memory).
      save_coef: also store the (V, F) coefficients of every layer.
      devices: an int N (first N local devices), a device list, or None (all local devices):
        each block's voxels are sharded over them.
      progress: progress bars over blocks.
      overwrite: replace an existing finished ``out``.

    Returns:
      :class:`SweepSummary`.

    Raises:
      FileExistsError: ``out`` exists and ``overwrite`` is False.
      ValueError: bad settings, mismatched inputs, or an unfinished sweep of ``out`` that was
        started with different inputs or settings.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already exists; pass overwrite=True (--overwrite) or choose another path."
        )
    devices = resolve_devices(devices)
    block_voxels = _validation.check_positive_int(block_voxels, "block_voxels")
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)) or n_test < 0:
        raise ValueError(f"n_test must be a non-negative integer, got {n_test!r}.")
    with _open_reader(responses, n_test) as reader:
        plan = _make_plan(
            layers,
            reader,
            methods,
            {
                "alphas": alphas,
                "n_components": n_components,
                "fwrf_alphas": fwrf_alphas,
                **(grids or {}),
            },
            cv,
            score,
            block_voxels,
            save_coef,
        )
        computed: list[tuple[str, str, int]] = []
        create = functools.partial(_create_layout, plan=plan, reader=reader)
        with checkpoint.open_partial_file(out, plan.settings, create, "sweep") as handle:
            for layer in plan.layers:
                pending = [
                    method
                    for method in plan.methods
                    if checkpoint.pending_units(_flags(handle, layer.name, method)).size
                ]
                if not pending:
                    continue
                design = _read_design(layer)
                for method in pending:
                    computed += _sweep_task(
                        handle, plan, reader, design, layer, method, devices, progress
                    )
    checkpoint.finish(out)
    return SweepSummary(out, tuple(computed), plan.n_blocks)


def _flags(handle: h5py.File, layer: str, method: str) -> h5py.Dataset:
    return handle[f"{schema.sweep_group(layer, method)}/{schema.COMPLETED_BLOCKS}"]


def _make_plan(
    layers: Sequence[LayerSource],
    reader: _Reader,
    methods: Sequence[str],
    grid_arguments: dict[str, Any],
    cv: Any,
    score: str,
    block_voxels: int,
    save_coef: bool,
) -> _Plan:
    layers = tuple(layers)
    if not layers or not all(isinstance(layer, LayerSource) for layer in layers):
        raise TypeError("layers must be a non-empty list of LayerSource (see feature_layers).")
    methods = tuple(methods)
    unknown = sorted(set(methods) - set(SOLVERS))
    if unknown or not methods:
        raise ValueError(f"unknown or no method(s) {unknown}; choose from {list(SOLVERS)}.")
    _validation.check_choice(score, "score", SCORES)
    missing = [
        SOLVERS[method].grid for method in methods if SOLVERS[method].grid not in grid_arguments
    ]
    if missing:
        raise ValueError(f"no grid given for {missing}; pass grids={{name: values}} to run_sweep.")
    grids = {
        method: SOLVERS[method].check_grid(grid_arguments[SOLVERS[method].grid])
        for method in methods
    }
    n_rows = max(int(indices.max()) for indices in reader.design_rows.values()) + 1
    if save_coef and "fwrf" in methods:
        raise ValueError(
            "save_coef stores (V, n_features) coefficients, but fwrf's weights are per pooled "
            "channel; sweep fwrf without save_coef (--save-coef), or fit it with v4jax.fwrf_cv."
        )
    n_features, map_shapes = {}, {}
    for layer in layers:
        rows, map_shapes[layer.name] = _layer_shape(layer)
        n_features[layer.name] = int(np.prod(map_shapes[layer.name], dtype=np.int64))
        if "fwrf" in methods and len(map_shapes[layer.name]) != 3:
            raise ValueError(
                f"fwrf pools (H, W, C) feature maps, but layer {layer.name!r} has features of "
                f"shape {map_shapes[layer.name]}; sweep fully connected layers with ridge or pls."
            )
        if rows != n_rows:
            raise ValueError(
                f"layer {layer.name!r} ({layer.path}) has {rows} images but the responses have "
                f"{n_rows} samples; extract the features of the same stimuli, in order."
            )
    n_fit = reader.design_rows["fit"].size
    folds = make_folds(cv, n_fit)
    folds_digest = hashlib.sha256()
    for train, test in folds:
        folds_digest.update(np.asarray(train, np.int64).tobytes() + b"|")
        folds_digest.update(np.asarray(test, np.int64).tobytes() + b";")
    n_voxels = int(reader.columns.size)
    settings = {
        "format": FORMAT,
        "responses": reader.identity,
        "layers": [
            {"name": layer.name, "dataset": layer.dataset, "file_sha256": file_sha256(layer.path)}
            for layer in layers
        ],
        "methods": list(methods),
        "grids": {method: grid.tolist() for method, grid in grids.items()},
        "folds_sha256": folds_digest.hexdigest(),
        "score": score,
        "parts": sorted(reader.design_rows),
        "n_test": int(reader.design_rows.get("test", np.empty(0)).size),
        "block_voxels": block_voxels,
        "save_coef": bool(save_coef),
    }
    return _Plan(
        layers=layers,
        n_features=n_features,
        map_shapes=map_shapes,
        methods=methods,
        grids=grids,
        folds=folds,
        score=score,
        n_voxels=n_voxels,
        n_fit=n_fit,
        block_voxels=block_voxels,
        n_blocks=math.ceil(n_voxels / block_voxels),
        parts=tuple(part for part in ("test", "val") if part in reader.design_rows),
        save_coef=bool(save_coef),
        settings=settings,
    )


def _create_layout(handle: h5py.File, plan: _Plan, reader: _Reader) -> None:
    handle.attrs.update(
        {
            "format": FORMAT,
            "settings": plan.settings_json,
            "settings_sha256": plan.settings_sha256,
            "n_voxels": plan.n_voxels,
            "block_voxels": plan.block_voxels,
            "n_blocks": plan.n_blocks,
        }
    )
    handle.create_dataset(schema.VOXEL_COLUMNS, data=reader.columns.astype(np.int64))
    handle.create_dataset(schema.ROI_CODES, data=reader.roi_codes.astype(np.int64))
    if reader.noise_ceiling_r is not None:
        handle.create_dataset(schema.NOISE_CEILING, data=reader.noise_ceiling_r)
    checkpoint.preallocated(handle, schema.VALID, (plan.n_voxels,), np.uint8, 0)
    for layer, method in plan.tasks():
        group = handle.create_group(schema.sweep_group(layer.name, method))
        group.attrs.update(
            {
                "layer": layer.name,
                "features_file": str(layer.path),
                "dataset": layer.dataset,
                "method": method,
                "hyperparameter_name": SOLVERS[method].hyperparameter_name,
                "n_features": plan.n_features[layer.name],
                "solver": "dual" if plan.n_features[layer.name] > plan.n_fit else "primal",
            }
        )
        grid = plan.grids[method]
        group.create_dataset("grid", data=grid.astype(SOLVERS[method].grid_dtype))
        checkpoint.unit_flags(group, schema.COMPLETED_BLOCKS, plan.n_blocks)
        checkpoint.preallocated(group, "best_hyperparameter", (plan.n_voxels,), np.float64, np.nan)
        checkpoint.preallocated(group, "best_index", (plan.n_voxels,), np.int32, -1)
        checkpoint.preallocated(group, "cv_scores", (grid.size, plan.n_voxels), np.float32, np.nan)
        checkpoint.preallocated(group, "intercept", (plan.n_voxels,), np.float32, np.nan)
        for part in plan.parts:
            for name in ("r", "r2"):
                checkpoint.preallocated(
                    group, f"{part}_{name}", (plan.n_voxels,), np.float32, np.nan
                )
        if plan.save_coef:
            shape = (plan.n_voxels, plan.n_features[layer.name])
            checkpoint.preallocated(group, "coef", shape, np.float32, np.nan)


def _prepare_ridge(
    X_fit: np.ndarray,
    plan: _Plan,
    devices: list[jax.Device] | None,
    progress: bool,
    map_shape: tuple[int, ...],
) -> Callable[..., Any]:
    from v4jax.solvers.ridge import prepare_ridge, ridge_cv_targets

    decomposition = prepare_ridge(X_fit, plan.folds, devices=devices, progress=progress)
    return functools.partial(ridge_cv_targets, decomposition, alphas=plan.grids["ridge"])


def _prepare_pls(
    X_fit: np.ndarray,
    plan: _Plan,
    devices: list[jax.Device] | None,
    progress: bool,
    map_shape: tuple[int, ...],
) -> Callable[..., Any]:
    from v4jax.solvers.pls import pls1_cv_targets, prepare_pls1

    decomposition = prepare_pls1(X_fit, plan.folds, devices=devices, progress=progress)
    grid = plan.grids["pls"].astype(np.int64)
    return functools.partial(pls1_cv_targets, decomposition, n_components=grid)


def _prepare_fwrf(
    X_fit: np.ndarray,
    plan: _Plan,
    devices: list[jax.Device] | None,
    progress: bool,
    map_shape: tuple[int, ...],
) -> Callable[..., Any]:
    from v4jax.solvers.fwrf import fwrf_cv

    maps = X_fit.reshape(X_fit.shape[0], *map_shape)
    alphas = plan.grids["fwrf"]

    return functools.partial(fwrf_cv, maps, alphas=alphas, cv=plan.folds, devices=devices)


@dataclasses.dataclass(frozen=True)
class _Solver:
    """How the sweep calls one method.

    Attributes:
      prepare: (X_fit, plan, devices, progress, map_shape) -> ``fit``: the layer decomposed once
        (``map_shape``: one image's feature shape, e.g. (H, W, C)), and
        ``fit(Y_block, score=...)`` returns a result following
        :mod:`v4jax.solvers.engine.result` for one block of voxels.
      grid_dtype: dtype of the ``grid`` dataset in the results file.
      hyperparameter_name: what the grid holds ("alpha", "n_components", ...).
      grid: the ``run_sweep`` argument that gives the grid ("alphas", "n_components", ...).
      check_grid: that argument -> the (G,) float64 grid, validated.
    """

    prepare: Callable[..., Callable[..., Any]]
    grid_dtype: type
    hyperparameter_name: str
    grid: str
    check_grid: Callable[[Any], np.ndarray]


def _component_grid(n_components: Any) -> np.ndarray:
    from v4jax.solvers.pls import as_component_grid

    return as_component_grid(n_components).astype(np.float64)


#: Every method the sweep runs: adding one is one entry here.
SOLVERS = {
    "ridge": _Solver(_prepare_ridge, np.float64, "alpha", "alphas", _validation.check_alphas),
    "pls": _Solver(_prepare_pls, np.int64, "n_components", "n_components", _component_grid),
    "fwrf": _Solver(_prepare_fwrf, np.float64, "alpha", "fwrf_alphas", _validation.check_alphas),
}
METHODS = tuple(SOLVERS)


def _sweep_task(
    handle: h5py.File,
    plan: _Plan,
    reader: _Reader,
    design: np.ndarray,
    layer: LayerSource,
    method: str,
    devices: list[jax.Device] | None,
    progress: bool,
) -> list[tuple[str, str, int]]:
    """Decompose the layer once for ``method`` and fit every unfinished voxel block."""
    group = handle[schema.sweep_group(layer.name, method)]
    completed = group[schema.COMPLETED_BLOCKS]
    pending = checkpoint.pending_units(completed)
    X_fit = design[reader.design_rows["fit"]]
    fit = SOLVERS[method].prepare(X_fit, plan, devices, progress, plan.map_shapes[layer.name])
    # Every held-out part is predicted in one call per block (on the kernel path through one
    # cross-kernel, never forming the (n_features, block) coefficients unless save_coef).
    held_rows = [reader.design_rows[part] for part in plan.parts]
    X_held = design[np.concatenate(held_rows)] if held_rows else None
    bounds = np.cumsum([0, *(rows.size for rows in held_rows)])
    computed = []
    description = f"{layer.name} {method}"
    for number in tqdm(pending, desc=description, disable=not progress):
        start, stop, columns = plan.block(reader.columns, int(number))
        responses = reader.read(columns)
        valid = np.all([np.all(np.isfinite(values), axis=0) for values in responses.values()], 0)
        if not np.all(valid):
            warnings.warn(
                f"{description}: {int(np.sum(~valid))} voxel(s) of block {number} have NaN or "
                "inf responses; their results are NaN (valid = 0 in the results file).",
                stacklevel=3,
            )
        # A short last block is padded with zero voxels so every block reuses one program.
        padding = plan.block_voxels - columns.size
        valid = np.pad(valid, (0, padding))
        responses = {
            part: np.pad(np.where(valid[: columns.size], values, 0.0), ((0, 0), (0, padding)))
            for part, values in responses.items()
        }
        result = fit(responses["fit"], score=plan.score)
        recorded = recorded_grid(result)
        outputs = {
            "best_index": np.where(valid, recorded.chosen_index, -1),
            "best_hyperparameter": np.where(valid, recorded.chosen, np.nan),
            "cv_scores": np.where(valid, recorded.cv_scores, np.nan),
            "intercept": np.where(valid, np.asarray(result.intercept), np.nan),
        }
        if X_held is not None:
            predictions = result.predict(X_held)
            for index, part in enumerate(plan.parts):
                part_predictions = predictions[bounds[index] : bounds[index + 1]]
                r, r2 = _held_out_scores(part_predictions, responses[part])
                outputs[f"{part}_r"] = np.where(valid, np.asarray(r), np.nan)
                outputs[f"{part}_r2"] = np.where(valid, np.asarray(r2), np.nan)
        width = stop - start
        for name, values in outputs.items():
            group[name][..., start:stop] = values[..., :width]
        if plan.save_coef:
            coef = np.where(valid[:, None], np.asarray(result.coef).T, np.nan)
            group["coef"][start:stop] = coef[:width]
        handle[schema.VALID][start:stop] = valid[:width]
        checkpoint.mark_done(completed, int(number))
        logger.info("%s: block %d of %d written", description, number + 1, plan.n_blocks)
        computed.append((layer.name, method, int(number)))
    return computed


@jax.jit
def _held_out_scores(predictions: jax.Array, Y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(b,) Pearson r and R² of ``predictions`` (n, b) against ``Y`` (n, b)."""
    Y = jnp.asarray(Y, dtype=predictions.dtype)
    return pearson_columns(Y, predictions), r2_columns(Y, predictions)


# -- command line -------------------------------------------------------------------------------


def add_sweep_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``v4jax sweep`` on the CLI's sub-command parsers (called by
    :func:`v4jax.pipeline.cli.build_parser`)."""
    parser = subparsers.add_parser(
        "sweep",
        help="layers x ROIs x methods x grids, every voxel, streamed in voxel blocks",
        description="Which layer best predicts each visual area? Extract every requested "
        "AlexNet layer in one pass (or take existing features files), fit ridge and/or "
        "per-voxel PLS for every layer to every voxel of the chosen ROIs, reading and writing "
        "one block of voxels at a time (memory flat in the number of voxels), then write the "
        "layer x ROI summary (sweep.json: layer_sweep, best layer per ROI and per voxel) and "
        "its figure. Each layer is decomposed once per method and reused for the whole grid "
        "and every block. An interrupted sweep resumes at the next unfinished block when rerun "
        "with the same arguments.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="directory with the CRCNS vim-1 .mat files")
    source.add_argument(
        "--responses", metavar="FILE:DATASET", help="2-D HDF5 responses (n_samples, n_voxels)"
    )
    parser.add_argument(
        "--features",
        nargs="+",
        metavar="FILE",
        help="features file(s) or a directory of them (default with --data-dir: extract "
        "--layers into --out, one file per arm, reused when it matches)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=list(defaults.SWEEP_LAYERS),
        help="layers to extract and sweep (with --features: default every dataset in them)",
    )
    parser.add_argument("--subject", type=int, default=1, help="vim-1 subject (with --data-dir)")
    parser.add_argument(
        "--roi",
        type=defaults.parse_roi,
        default=",".join(defaults.SWEEP_ROIS),
        help="ROI names or codes, comma-separated, or 'all' for every voxel (with --data-dir)",
    )
    parser.add_argument(
        "--max-voxels-per-roi", type=int, help="sweep only the first N voxels of each ROI"
    )
    parser.add_argument("--methods", nargs="+", default=["ridge"], choices=METHODS)
    parser.add_argument(
        "--alphas", type=defaults.parse_floats, default=defaults.ALPHAS_TEXT,
        help="ridge grid LOW:HIGH:COUNT",
    )  # fmt: skip
    parser.add_argument(
        "--components", type=defaults.parse_ints, default=defaults.COMPONENTS_TEXT,
        help="PLS component counts LOW:HIGH",
    )  # fmt: skip
    parser.add_argument(
        "--fwrf-alphas", type=defaults.parse_floats, default="1e-2:1e2:5",
        help="fwRF alphas (relative to each field's mean Gram eigenvalue) LOW:HIGH:COUNT",
    )  # fmt: skip
    parser.add_argument("--cv", type=int, default=defaults.CV_FOLDS, help="folds")
    parser.add_argument("--score", default=defaults.SCORE, choices=SCORES, help="selection score")
    parser.add_argument(
        "--n-test", type=int, default=0, help="last training samples held out as a test part"
    )
    parser.add_argument(
        "--block-voxels", type=int, default=defaults.BLOCK_VOXELS, help="voxels per block"
    )
    parser.add_argument("--devices", type=int, help="use the first N local devices (default: all)")
    parser.add_argument("--save-coef", action="store_true", help="store coefficients too")
    parser.add_argument(
        "--arm", choices=("plain", "retina"), default="plain", help="extracted features' arm"
    )
    parser.add_argument(
        "--variant", default="torchvision", choices=("torchvision", "caffe", "tfutils")
    )
    parser.add_argument("--weights", help="AlexNet weights file (default: random weights)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights")
    parser.add_argument(
        "--out", default="v4jax_out", help="directory for features, sweep.h5, sweep.json, figures"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a finished sweep.h5")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_sweep_command)
    return parser


def _sweep_command(arguments: argparse.Namespace) -> int:
    from v4jax.pipeline import report, study

    out = Path(arguments.out)
    if arguments.features:
        layers = feature_layers(arguments.features, _named_layers(arguments))
    else:
        if not arguments.data_dir:
            raise ValueError("--responses needs --features (the designs of its samples).")
        written = study.extract_features(
            arguments.data_dir,
            out,
            layers=tuple(arguments.layers),
            arms=(arguments.arm,),
            variant=arguments.variant,
            weights=arguments.weights,
            batch_size=arguments.batch_size,
            seed=arguments.seed,
            progress=not arguments.quiet,
        )
        layers = feature_layers(written[arguments.arm], arguments.layers)
    if arguments.data_dir:
        responses: Vim1Source | ArraySource = Vim1Source(
            Path(arguments.data_dir),
            arguments.subject,
            arguments.roi,
            arguments.max_voxels_per_roi,
        )
    else:
        responses = parse_responses(arguments.responses)
    summary = run_sweep(
        layers,
        responses,
        out / "sweep.h5",
        methods=arguments.methods,
        alphas=arguments.alphas,
        n_components=arguments.components,
        fwrf_alphas=arguments.fwrf_alphas,
        cv=arguments.cv,
        score=arguments.score,
        n_test=arguments.n_test,
        block_voxels=arguments.block_voxels,
        save_coef=arguments.save_coef,
        devices=arguments.devices,
        progress=not arguments.quiet,
        overwrite=arguments.overwrite,
    )
    layer_summary = report.write_sweep_summary(summary.path)
    figures = report.make_sweep_figures(summary.path, out / "figures")
    print(report.format_layer_sweep(layer_summary))
    print(
        f"\nresults: {summary.path} ({len(summary.computed)} block(s) computed, "
        f"{summary.n_blocks} per layer and method; summary: {schema.summary_path(summary.path)})"
    )
    print(f"figures: {len(figures)} files in {out / 'figures'}")
    return 0


def _named_layers(arguments: argparse.Namespace) -> list[str] | None:
    """The layers given on the command line, or None (every dataset) when left at the default."""
    return None if arguments.layers == list(defaults.SWEEP_LAYERS) else arguments.layers
