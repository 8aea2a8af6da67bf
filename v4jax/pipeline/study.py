"""The end-to-end V4 study: features -> per-voxel ridge and PLS -> scores -> results file.

The steps mirror the original study and can run separately (the CLI's ``extract``, ``fit`` and
``report``), each reading the previous step's files:

1. :func:`extract_features`: AlexNet features of all 1,870 stimuli (training then validation),
   once per arm: ``"plain"`` and ``"retina"`` (retinawarp before the network).
2. :func:`fit_study`: for each subject and arm, ridge (an alpha per voxel) and per-voxel PLS
   (a component count per voxel) chosen by cross-validation on the first 1,500 training images;
   scored on the study's test split (the last 250 training images) and the 120 validation
   images; the mean response over the ROI is fitted as one more target (the "V4-average"
   analysis). Everything goes to one HDF5 results file and a JSON summary beside it. Each
   finished fit is checkpointed, so an interrupted fit resumes where it stopped.
3. :func:`v4jax.pipeline.report.make_figures` draws the figures from the results file.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import platform
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from v4jax import _checkpoint as checkpoint
from v4jax._io import atomic_path, atomic_write_text, file_sha256, open_hdf5
from v4jax.data import load_vim1, study_split
from v4jax.data._format import RESPONSES_FILE
from v4jax.metrics import pearson_columns, r2_columns
from v4jax.pipeline import defaults
from v4jax.pipeline import results_schema as schema
from v4jax.solvers.engine.result import CrossValidatedResult, grid_edge, recorded_grid

logger = logging.getLogger(__name__)

ARMS = ("plain", "retina")
DEFAULT_METHODS = ("ridge", "pls")
DEFAULT_ALPHAS = defaults.ALPHAS
DEFAULT_COMPONENTS = defaults.COMPONENTS
CHECKPOINT_SUFFIX = checkpoint.PARTIAL_SUFFIX
CHECKPOINT_FORMAT = "v4jax-study-checkpoint/1"
CHECKPOINT_RUN_FILE = checkpoint.RUN_FILE
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """What :func:`fit_study` fits.

    Attributes:
      methods: subset of ("ridge", "pls", "banded", "readout", "fwrf"): "banded" fits both arms
        as two bands with a penalty each (stored under the arm "plain+retina"); "readout" is the
        factorised spatial x channel read-out (slow on CPU); "fwrf" the feature-weighted
        receptive field (one Gaussian field per voxel; its fields are recorded too).
      alphas: ridge grid. n_components: PLS grid.
      cv: folds over the fitting images (int: contiguous folds).
      layer: feature layer name in the features files.
      n_test: the last ``n_test`` training images form the test split (the study: 250).
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    n_components: tuple[int, ...] = DEFAULT_COMPONENTS
    cv: int = defaults.CV_FOLDS
    layer: str = "conv3"
    n_test: int = defaults.TEST_SIZE


def features_path(out_dir: str | Path, arm: str, variant: str) -> Path:
    """Where :func:`extract_features` writes one arm's features."""
    return Path(out_dir) / f"features_{variant}_{arm}.h5"


def retina_transform(variant: str, input_size: int = 128) -> Callable[[Any], Any]:
    """The retina arm's transform: retinawarp of the stimuli straight to the network's size.

    The original study warped each 500 px stimulus to 224 px, the network's input; for the
    128 px vim-1 stimuli the same idea warps 128 px to the variant's input size.
    """
    from v4jax.features.models import variant_spec
    from v4jax.features.retina import RetinaWarp

    return RetinaWarp(output_size=variant_spec(variant).input_size, input_size=input_size)


def load_stimuli(data_dir: str | Path) -> np.ndarray:
    """(1870, 128, 128) training then validation stimuli of a vim-1 directory."""
    from v4jax.data.vim1 import _load_stimuli

    stim_train, stim_val = _load_stimuli(data_dir)
    return np.concatenate([stim_train, stim_val])


def extract_features(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    layers: Sequence[str] = ("conv3",),
    arms: Sequence[str] = ARMS,
    variant: str = "torchvision",
    weights: str | Path | None = None,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Extract AlexNet features of every stimulus, per arm, into HDF5 files (resumable).

    Each arm's file is :func:`features_path` in ``out_dir``, (n_images, H, W, C) float32 per
    layer. An existing file is reused only when it was extracted from the same stimuli
    (``images_sha256``), weights, variant and transform and holds every requested layer;
    otherwise a ValueError names the file and what differs (delete it or pass another
    ``out_dir``). An interrupted extraction resumes (see
    :func:`v4jax.features.extraction.extract_to_hdf5`).

    Returns:
      arm -> features file path.
    """
    from v4jax.features.extraction import extract_to_hdf5

    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {list(ARMS)}.")
    images = load_stimuli(data_dir)
    paths = {arm: features_path(out_dir, arm, variant) for arm in arms}
    request = (
        _extraction_request(images, layers, variant, weights, seed)
        if any(path.exists() for path in paths.values())
        else {}
    )
    written = {}
    for arm, path in paths.items():
        transform = retina_transform(variant, images.shape[1]) if arm == "retina" else None
        if path.exists():
            _check_reusable(path, request, transform, layers)
            written[arm] = path
            continue
        written[arm] = extract_to_hdf5(
            images,
            path,
            layers=tuple(layers),
            params=weights,
            variant=variant,
            batch_size=batch_size,
            transform=transform,
            seed=seed,
            progress=progress,
        )
    return written


def _extraction_request(
    images: np.ndarray,
    layers: Sequence[str],
    variant: str,
    weights: str | Path | None,
    seed: int,
) -> dict[str, str]:
    """The attributes :func:`v4jax.features.extraction.extract_to_hdf5` would record (but
    ``transform``)."""
    from v4jax.features.extraction import RandomWeightsWarning, images_sha256, resolve_params

    with warnings.catch_warnings():
        # Only the description is needed here; extracting with random weights warns.
        warnings.simplefilter("ignore", RandomWeightsWarning)
        description = resolve_params(weights, variant, seed, tuple(layers))[1]
    return {"images_sha256": images_sha256(images), "weights": description, "variant": variant}


def _check_reusable(
    path: Path,
    request: dict[str, str],
    transform: Callable[[Any], Any] | None,
    layers: Sequence[str],
) -> None:
    """Raise a ValueError naming ``path`` unless it holds features of exactly this request."""
    from v4jax.features.extraction import transform_name

    expected = {**request, "transform": transform_name(transform)}

    def identity(handle: h5py.File) -> tuple[dict[str, str | None], list[str]]:
        return {key: _text_attr(handle, key) for key in expected}, sorted(handle.keys())

    stored, stored_layers = _read_features_file(path, identity)
    differences = [
        f"{key}: the file has {stored[key]!r}, this run asks for {value!r}"
        for key, value in expected.items()
        if stored[key] != value
    ]
    missing = [layer for layer in layers if layer not in stored_layers]
    if missing:
        differences.append(f"layers: the file lacks {missing} (it has {stored_layers})")
    if differences:
        raise ValueError(
            f"{path} already exists but was extracted from other stimuli, weights or settings "
            f"({'; '.join(differences)}); delete it to extract again, or pass another --out."
        )


def _text_attr(handle: h5py.File, key: str) -> str | None:
    value = handle.attrs.get(key)
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def _read_features_file(path: Path, read: Callable[[h5py.File], _T]) -> _T:
    """``read(handle)`` of the features file at ``path``; a damaged file gets a ValueError."""
    advice = "it may be truncated or another kind of file: delete it and run `v4jax extract` again."
    with open_hdf5(path, "features file", advice) as handle:
        return read(handle)


def read_features(path: str | Path, layer: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """(n_images, n_features) float32 design of one layer, and its map shape (H, W, C).

    Raises:
      FileNotFoundError: no such file. ValueError: the file is truncated or not HDF5, or it
      lacks ``layer`` (the message names the file and what to do).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"features file {path} does not exist; run `v4jax extract` first.")

    def layer_values(handle: h5py.File) -> np.ndarray:
        if layer not in handle:
            raise ValueError(
                f"{path} has no layer {layer!r} (it has {sorted(handle.keys())}); extract it "
                "with `v4jax extract --layers ...`."
            )
        return handle[layer][...]

    values = _read_features_file(path, layer_values)
    design = values.reshape(values.shape[0], -1).astype(np.float32, copy=False)
    return design, tuple(values.shape[1:])


def input_hashes(data_dir: str | Path, features: dict[str, str | Path]) -> dict[str, Any]:
    """What :func:`fit_study` records about its inputs (and keys its checkpoint on).

    Returns:
      ``features_sha256`` (arm -> sha256 of the features file), ``features_images_sha256`` and
      ``features_weights`` (arm -> the file's ``images_sha256`` / ``weights`` attribute, None if
      absent) and ``responses_sha256`` (sha256 of ``data_dir``'s ``EstimatedResponses.mat``).
    """
    responses = Path(data_dir) / RESPONSES_FILE
    if not responses.is_file():
        raise FileNotFoundError(
            f"{responses} does not exist or is not a file; data_dir must hold the CRCNS vim-1 "
            f"file {RESPONSES_FILE}."
        )
    paths = {arm: Path(path) for arm, path in features.items()}
    attributes = {
        arm: _read_features_file(
            path,
            lambda handle: {key: _text_attr(handle, key) for key in ("images_sha256", "weights")},
        )
        for arm, path in paths.items()
    }
    return {
        "features_sha256": {arm: file_sha256(path) for arm, path in paths.items()},
        "features_images_sha256": {
            arm: attrs["images_sha256"] for arm, attrs in attributes.items()
        },
        "features_weights": {arm: attrs["weights"] for arm, attrs in attributes.items()},
        "responses_sha256": file_sha256(responses),
    }


def checkpoint_path(results_path: str | Path) -> Path:
    """The directory where :func:`fit_study` keeps the finished fits of an unfinished run."""
    return checkpoint.partial_path(results_path)


def fit_study(
    data_dir: str | Path,
    features: dict[str, str | Path],
    results_path: str | Path,
    *,
    subjects: Sequence[int] = (1,),
    roi: Any = "V4",
    settings: FitSettings = FitSettings(),
    config: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Fit every (subject, arm, method), score it and write the results file atomically.

    Resumable through :mod:`v4jax._checkpoint` (the mechanism extraction and sweeps
    use): every finished (subject, arm group, method) fit is written atomically into the
    checkpoint directory :func:`checkpoint_path` (``<results_path>.partial/``) together with
    ``run.json``, the run's key (sha256 of the features and responses files, subjects, ROI and
    settings). Calling again with the same inputs and settings after an interruption loads the
    finished fits instead of recomputing them. A checkpoint whose finished fits come from other
    inputs or settings is refused (ValueError naming what changed) rather than silently
    discarded, so a mistyped argument never throws finished work away: rerun with the original
    arguments, or delete the directory to start over (one holding no finished fit yet is
    simply replaced). The checkpoint is created only once the first subject's data has loaded
    and matched the features. The results file and its JSON summary are assembled from the
    checkpoint (so a resumed run writes the same content as an uninterrupted one), each
    written atomically, and then the checkpoint directory is removed.

    Args:
      data_dir: vim-1 directory (real or synthetic).
      features: arm -> features file (from :func:`extract_features`), (n_images, ...) per layer.
      results_path: HDF5 results file to write (layout: :mod:`v4jax.pipeline.results_schema`);
        a JSON summary goes beside it: ``{"fits": [one row per subject, arm and method]}``.
      subjects: subject numbers. roi: ROI name, code or list (as :func:`load_vim1`).
      settings: methods and grids.
      config: extra configuration recorded in the file.

    The results file's attributes: ``config`` and ``versions`` (JSON), ``created`` (ISO time),
    and the inputs' hashes (:func:`input_hashes`): ``features_sha256``,
    ``features_images_sha256``, ``features_weights`` (JSON objects arm -> value) and
    ``responses_sha256``.

    Returns:
      The results file path.

    Raises:
      ValueError: unknown methods, features that do not match the data, a damaged features
        file, or a checkpoint left by a run with other inputs or settings.
    """
    unknown = sorted(set(settings.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}.")
    designs, map_shapes = {}, {}
    for arm, path in features.items():
        designs[arm], map_shapes[arm] = read_features(path, settings.layer)
    if "banded" in settings.methods and len(designs) < 2:
        raise ValueError(
            "method 'banded' needs both arms (plain and retina features) as its two bands; "
            "omit --retina/--no-retina."
        )
    results_path = Path(results_path)
    inputs = input_hashes(data_dir, features)
    key = _run_key(inputs, subjects, roi, settings)
    units = checkpoint_path(results_path)
    fits: list[tuple[int, str, str]] = []
    for subject in subjects:
        data = load_vim1(data_dir, subject=subject, roi=roi)
        n_train, n_val = data.resp_train.shape[0], data.resp_val.shape[0]
        split = study_split(n_train, n_val, settings.n_test)
        for arm, design in designs.items():
            if design.shape[0] != n_train + n_val:
                raise ValueError(
                    f"the {arm} features hold {design.shape[0]} images but the data has "
                    f"{n_train} + {n_val}; re-run `v4jax extract` on this data directory."
                )
        units = checkpoint.open_partial_directory(results_path, key, "S*_*.h5")
        with atomic_path(units / f"S{subject}.h5") as temporary:
            with h5py.File(temporary, "w") as handle:
                _write_subject_header(handle.create_group("subject"), data, data_dir, roi, split)
        for method in settings.methods:
            if SOLVERS[method].all_arms:
                groups = [designs]
            else:
                groups = [{arm: design} for arm, design in designs.items()]
            for arms in groups:
                arm = "+".join(arms)
                fits.append((subject, arm, method))
                fit_file = units / _fit_file_name(subject, arm, method)
                if fit_file.exists():
                    logger.info(
                        "S%d/%s/%s: loaded from checkpoint %s", subject, arm, method, fit_file
                    )
                    continue
                with atomic_path(fit_file) as temporary:
                    with h5py.File(temporary, "w") as handle:
                        row = _fit_one(
                            handle.create_group("fit"),
                            arms,
                            map_shapes,
                            data,
                            split,
                            method,
                            settings,
                            progress,
                        )
                        handle.attrs["summary"] = json.dumps(row)
                logger.info(
                    "S%d/%s/%s: fitted and checkpointed to %s", subject, arm, method, fit_file
                )
    summary_rows = []
    with atomic_path(results_path) as temporary, h5py.File(temporary, "w") as handle:
        _write_run_attributes(handle, data_dir, features, subjects, roi, settings, config, inputs)
        for subject in subjects:
            with _open_checkpoint_file(units / f"S{subject}.h5") as source:
                handle.copy(source["subject"], schema.subject_group(subject))
        for subject, arm, method in fits:
            with _open_checkpoint_file(units / _fit_file_name(subject, arm, method)) as source:
                group = handle[schema.subject_group(subject)].require_group(arm)
                group.copy(source["fit"], method)
                summary_rows.append({"subject": subject, **json.loads(source.attrs["summary"])})
    summary = {"fits": summary_rows}
    atomic_write_text(schema.summary_path(results_path), json.dumps(summary, indent=2))
    checkpoint.finish(results_path)
    return results_path


def _fit_file_name(subject: int, arm: str, method: str) -> str:
    return f"S{subject}_{arm}_{method}.h5"


def _run_key(
    inputs: dict[str, Any], subjects: Sequence[int], roi: Any, settings: FitSettings
) -> dict[str, Any]:
    """Everything the fits depend on, as plain JSON values (compared on resume)."""
    from v4jax import __version__

    key = {
        "format": CHECKPOINT_FORMAT,
        "v4jax": __version__,
        "features_sha256": inputs["features_sha256"],
        "responses_sha256": inputs["responses_sha256"],
        "subjects": [int(subject) for subject in subjects],
        "roi": roi,
        "settings": dataclasses.asdict(settings),
    }
    return checkpoint.as_key(key)


def _open_checkpoint_file(path: Path) -> h5py.File:
    return open_hdf5(
        path, "checkpointed fit", "delete it and run again (only that fit is recomputed)."
    )


# -- solvers: how each method is called (every result is read the same way, by _fit_one) -------


def _fit_ridge(
    bands: Sequence[np.ndarray],
    map_shapes: Sequence[tuple[int, ...]],
    Y: np.ndarray,
    settings: FitSettings,
    progress: bool,
) -> CrossValidatedResult:
    from v4jax.solvers.ridge import ridge_cv

    (X,) = bands
    return ridge_cv(X, Y, settings.alphas, cv=settings.cv)


def _fit_pls(
    bands: Sequence[np.ndarray],
    map_shapes: Sequence[tuple[int, ...]],
    Y: np.ndarray,
    settings: FitSettings,
    progress: bool,
) -> CrossValidatedResult:
    from v4jax.solvers.pls import pls1_cv

    (X,) = bands
    return pls1_cv(X, Y, settings.n_components, cv=settings.cv)


def _fit_banded(
    bands: Sequence[np.ndarray],
    map_shapes: Sequence[tuple[int, ...]],
    Y: np.ndarray,
    settings: FitSettings,
    progress: bool,
) -> CrossValidatedResult:
    from v4jax.solvers.banded import banded_ridge_cv

    return banded_ridge_cv(list(bands), Y, settings.alphas, cv=settings.cv)


def _fit_fwrf(
    bands: Sequence[np.ndarray],
    map_shapes: Sequence[tuple[int, ...]],
    Y: np.ndarray,
    settings: FitSettings,
    progress: bool,
) -> CrossValidatedResult:
    from v4jax.solvers.fwrf import fwrf_cv

    return fwrf_cv(_feature_maps(bands, map_shapes), Y, cv=settings.cv)


def _feature_maps(bands: Sequence[np.ndarray], map_shapes: Sequence[tuple[int, ...]]):
    """(n, H, W, C) maps of a one-arm fit's flattened (n, H * W * C) design."""
    ((X,), (map_shape,)) = bands, map_shapes
    return X.reshape(X.shape[0], *map_shape)


@dataclasses.dataclass(frozen=True)
class _ReadoutView:
    """The read-out, which does not follow :mod:`v4jax.solvers.engine.result` yet, seen through
    the names :func:`_fit_one` reads.

    ``grid`` is the grid of the read-out's (first) penalty; ``cv_scores`` holds each voxel's
    held-out r at its chosen penalty and NaN elsewhere (the read-out keeps no other score);
    ``predict`` takes the flattened (n, H * W * C) design, as the other methods' results do.
    """

    fitted: Any
    map_shape: tuple[int, ...]
    grid: np.ndarray
    cv_scores: np.ndarray
    best_index: np.ndarray
    on_edge: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        from v4jax.solvers.readout import predict_readout

        return np.asarray(predict_readout(self.fitted, X.reshape(X.shape[0], *self.map_shape)))


def _fit_readout(
    bands: Sequence[np.ndarray],
    map_shapes: Sequence[tuple[int, ...]],
    Y: np.ndarray,
    settings: FitSettings,
    progress: bool,
) -> _ReadoutView:
    import jax

    from v4jax.solvers.readout import fit_readout

    maps = _feature_maps(bands, map_shapes)
    fitted = fit_readout(maps, Y, key=jax.random.key(0), progress=progress)
    name = next(iter(fitted.penalty_grid))
    grid = np.asarray(fitted.penalty_grid[name])
    best_index = np.searchsorted(grid, np.asarray(fitted.penalties[name]))
    cv_scores = np.full((grid.size, Y.shape[1]), np.nan)
    cv_scores[best_index, np.arange(Y.shape[1])] = np.asarray(fitted.heldout_r)
    return _ReadoutView(
        fitted, maps.shape[1:], grid, cv_scores, best_index, grid_edge(best_index, grid.size)
    )


@dataclasses.dataclass(frozen=True)
class _Solver:
    """How :func:`fit_study` calls one method.

    Attributes:
      fit: (bands, map_shapes, Y, settings, progress) -> the cross-validated result, where
        ``bands`` holds one (n_fit, n_features) design per arm fitted together and
        ``map_shapes`` their (H, W, C) feature-map shapes.
      hyperparameter_name: what the method's grid holds ("alpha", "n_components", ...).
      all_arms: fit every arm together, as bands, rather than each arm on its own.
    """

    fit: Callable[..., Any]
    hyperparameter_name: str
    all_arms: bool = False


#: Every method the study fits: adding one is one entry here.
SOLVERS = {
    "ridge": _Solver(_fit_ridge, "alpha"),
    "pls": _Solver(_fit_pls, "n_components"),
    "banded": _Solver(_fit_banded, "alpha", all_arms=True),
    "readout": _Solver(_fit_readout, "penalty"),
    "fwrf": _Solver(_fit_fwrf, "alpha"),
}
METHODS = tuple(SOLVERS)


def _rows(designs: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(n_rows, n_features) the given rows of the designs, side by side in arm order."""
    parts = [design[rows] for design in designs.values()]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _fit_one(
    out: h5py.Group,
    designs: dict[str, np.ndarray],
    map_shapes: dict[str, tuple[int, ...]],
    data: Any,
    split: Any,
    method: str,
    settings: FitSettings,
    progress: bool,
) -> dict[str, Any]:
    responses = np.concatenate([data.resp_train, data.resp_val])
    # The ROI-average response is fitted as one more target, with its own hyperparameter.
    targets = np.column_stack([responses, responses.mean(axis=1)])
    fit_rows, test_rows = split.fit, split.test
    val_rows = data.resp_train.shape[0] + split.validation
    result = SOLVERS[method].fit(
        [design[fit_rows] for design in designs.values()],
        [map_shapes[arm] for arm in designs],
        targets[fit_rows],
        settings,
        progress,
    )
    grid, cv_scores, best, _ = recorded_grid(result)
    on_edge = np.asarray(result.on_edge)
    predictions = {
        "test": np.asarray(result.predict(_rows(designs, test_rows))),
        "val": np.asarray(result.predict(_rows(designs, val_rows))),
    }
    truth = {"test": targets[test_rows], "val": targets[val_rows]}
    scores = {
        f"{part}_{name}": np.asarray(function(truth[part], predictions[part]))
        for part in ("test", "val")
        for name, function in (("r", pearson_columns), ("r2", r2_columns))
    }
    arm = "+".join(designs)
    out.attrs["hyperparameter_name"] = SOLVERS[method].hyperparameter_name
    out["grid"] = grid
    out["cv_scores"] = cv_scores[:, :-1]
    out["best_hyperparameter"] = best[:-1]
    out["on_edge"] = on_edge[:-1]
    for name, values in scores.items():
        out[name] = values[:-1].astype(np.float64)
    out["pred_test"] = predictions["test"][:, :-1].astype(np.float32)
    out["pred_val"] = predictions["val"][:, :-1].astype(np.float32)
    if hasattr(result, "centres"):  # receptive fields (fwRF), (row, column) and sigma in cells
        out[schema.RF_CENTRES] = np.asarray(result.centres)[:-1]
        out[schema.RF_SIZES] = np.asarray(result.sizes)[:-1]
        out.attrs[schema.RF_MAP_SHAPE] = list(map_shapes[next(iter(designs))][:2])
    average = out.create_group(schema.ROI_AVERAGE)
    average.attrs["best_hyperparameter"] = float(best[-1])
    for name, values in scores.items():
        average.attrs[name] = float(values[-1])
    average["pred_val"] = predictions["val"][:, -1].astype(np.float32)
    average["true_val"] = truth["val"][:, -1].astype(np.float32)
    return {
        "arm": arm,
        "method": method,
        "n_voxels": int(best.size - 1),
        "median_val_r": float(np.median(scores["val_r"][:-1])),
        "median_test_r": float(np.median(scores["test_r"][:-1])),
        "roi_average_val_r2": float(scores["val_r2"][-1]),
        "fraction_on_grid_edge": float(np.mean(on_edge[:-1])),
    }


def _write_subject_header(
    group: h5py.Group, data: Any, data_dir: str | Path, roi: Any, split: Any
) -> None:
    group.attrs["roi"] = json.dumps(roi) if not isinstance(roi, str) else roi
    group.attrs["n_voxels"] = int(data.resp_train.shape[1])
    voxels = group.create_group(schema.VOXELS)
    voxels["voxel_index"] = np.asarray(data.voxel_index)
    voxels["roi_codes"] = np.asarray(data.roi_codes)
    truth = _ground_truth(data_dir, data.subject, np.asarray(data.voxel_index))
    for name, values in truth.items():
        voxels[name] = values
    responses = np.concatenate([data.resp_train, data.resp_val])
    group["truth/test"] = responses[split.test]
    group["truth/val"] = responses[data.resp_train.shape[0] + split.validation]


def _ground_truth(data_dir: str | Path, subject: int, voxel_index: np.ndarray) -> dict:
    """Noise ceiling and signal mask of the selected voxels, when the data is synthetic."""
    from v4jax.data._format import GROUND_TRUTH_FILE

    path = Path(data_dir) / GROUND_TRUTH_FILE
    if not path.exists():
        return {}
    with h5py.File(path, "r") as handle:
        group = handle[f"S{subject}"]
        order = np.searchsorted(group["voxel_index"][...], voxel_index)
        return {
            "noise_ceiling_r": group["noise_ceiling_r"][...][order],
            "signal_mask": group["signal_mask"][...][order],
        }


def _write_run_attributes(
    handle: h5py.File,
    data_dir: str | Path,
    features: dict[str, str | Path],
    subjects: Sequence[int],
    roi: Any,
    settings: FitSettings,
    config: dict[str, Any] | None,
    inputs: dict[str, Any],
) -> None:
    import jax

    from v4jax import __version__

    run = {
        "data_dir": str(data_dir),
        "features": {arm: str(path) for arm, path in features.items()},
        "subjects": list(subjects),
        "roi": roi,
        "settings": dataclasses.asdict(settings),
        **(config or {}),
    }
    versions = {
        "v4jax": __version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
        "device": str(jax.devices()[0]),
    }
    handle.attrs["config"] = json.dumps(run)
    handle.attrs["versions"] = json.dumps(versions)
    handle.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat()
    for name in ("features_sha256", "features_images_sha256", "features_weights"):
        handle.attrs[name] = json.dumps(inputs[name])
    handle.attrs["responses_sha256"] = inputs["responses_sha256"]
