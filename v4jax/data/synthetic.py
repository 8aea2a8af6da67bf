"""Synthetic vim-1 files with a known encoding model, byte-compatible with the CRCNS release.

``make_synthetic_vim1`` writes ``EstimatedResponses.mat`` (MATLAB v7.3) and ``Stimuli.mat``
(MATLAB v5) in the exact layout of the real data (``shared/specs/vim1-format.md`` section 7),
plus ``ground_truth.h5`` with everything needed to score a fit against the truth, and
optionally ``RepeatedResponses.h5`` (single-repeat responses for an NSD-style noise ceiling)
and the 500 px FullRes stimulus files.

The ground-truth model is a factorised spatial x feature read-out: with ``F`` the feature map
of an image (``feature_fn``, standardised per channel over all images and positions),

    signal[n, v] = sum_{h, w, c} rf_v[h, w] * weights_v[c] * F[n, h, w, c]

where ``rf_v`` is an isotropic Gaussian (random centre and size in feature-map cells, summing
to 1) and ``weights_v`` are random normal channel weights. Each estimate adds Gaussian noise
with variance ``var(signal_v) / snr_v`` (variance over all train + validation images), so the
best achievable Pearson correlation is ``sqrt(snr / (1 + snr))``. Noise-only voxels (outside
``signal_rois`` or not drawn by ``signal_fraction``) have no signal and a ceiling of 0. Every
voxel is then z-scored over its train + validation responses, as in the real files, and the
same affine map is applied to the noise-free responses stored in the ground truth.

A hierarchy of areas: with ``feature_sources`` (name -> feature function) and ``roi_sources``
(ROI code -> source name), each ROI's voxels draw their ground truth from their own source (e.g.
V1 and V2 from an early layer's maps, V4 and LO from a mid-level layer's), and every voxel
records its source (``feature_source``, an index into the ``feature_sources`` attribute of the
ground truth). With ``shared_fraction`` f > 0 each signal voxel's signal is

    signal[n, v] = sqrt(1 - f) * own[n, v] / std(own_v) + sqrt(f) * shared_roi(v)[n]

where ``shared_r`` is one unit-variance read-out of ROI r's source (a broad RF at the map's
centre), common to all of r's voxels: the ROI-average response is then predictable, as on the
real data (V4 average r² ~ 0.2 in the original study), rather than averaging to noise.

Not everything an area shares is driven by the stimulus: with ``shared_noise_fraction`` g > 0
a fraction g of every voxel's noise variance is one per-image fluctuation common to all voxels
of its ROI (signal and noise-only alike; ``shared_noise/<ROI>`` in the ground truth, unit
variance, drawn per trial when there are repeats), the rest independent per voxel:

    noise[n, v] = noise_sd_v * (sqrt(g) * shared_noise_roi(v)[n] + sqrt(1 - g) * own_noise[n, v])

Each voxel's noise variance, and so its ceiling, is unchanged; only the ROI average changes.
Averaged over an ROI of M voxels (K with signal, z-scored, signal share s_v = snr_v / (1 + snr_v),
s_v = 0 for noise-only voxels), the stimulus-driven part of the average has amplitude
a = sqrt(f) * sum_v sqrt(s_v) / M and the shared noise b = sqrt(g) * sum_v sqrt(1 - s_v) / M, so
the best achievable r² of the ROI average is about a² / (a² + b²) (plus O(1 / M) terms). With
the demo's settings (f = 0.3, snr 1-10, 60 % signal voxels, g = 0.5) that is ~0.25, near the
V4-average r² of the original study; with g = 0 it is ~0.95.

Everything is a deterministic function of ``seed``: stimuli use one random stream, each
subject's voxel parameters another, and each block of ``VOXEL_BLOCK`` voxels its own noise
stream, so a file written in blocks equals ``simulate_vim1`` in memory exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from tqdm.auto import tqdm

from v4jax._io import atomic_path
from v4jax._validation import check_positive_int
from v4jax.data import _format as fmt
from v4jax.data._images import natural_image_patches
from v4jax.data._matfile import (
    create_matlab_dataset,
    create_v73_file,
    stamp_header,
    write_matlab_array,
)
from v4jax.data.features import filter_bank_features

logger = logging.getLogger(__name__)

VOXEL_BLOCK = 2048
CHUNK_COLUMNS = 256
VOLUME_SIZE = int(np.prod(fmt.VOLUME_SHAPE))
TRAIN_REPEATS = 2
VAL_REPEATS = 13
TRAIN_TRIALS_PER_RUN = 140
VAL_IMAGES_PER_RUN = 12
MAX_PARTIAL_NANS = 5
# Gaussian RF size (sigma) as a fraction of the feature map's side, per ROI: RFs grow along
# the visual hierarchy (V1 smallest, LO largest); "other" voxels use the widest range.
RF_SIZE_RANGE = {
    0: (0.04, 0.30),
    1: (0.03, 0.08),
    2: (0.04, 0.10),
    3: (0.05, 0.12),
    4: (0.06, 0.15),
    5: (0.06, 0.15),
    6: (0.08, 0.20),
    7: (0.10, 0.25),
}
FeatureFn = Callable[[np.ndarray], np.ndarray]

_STIMULI_STREAM = 0
_DESIGN_STREAM = 1
_VOXEL_STREAM = 0
_NOISE_STREAM = 1
_SHARED_STREAM = 2
_SHARED_NOISE_STREAM = 3
#: The ROI-shared read-out: a broad Gaussian RF (sigma as a fraction of the map's side) near
#: the map's centre.
SHARED_RF_SIZE = 0.3


@dataclasses.dataclass(frozen=True)
class SubjectTruth:
    """One subject's synthetic responses and ground truth (V = number of voxels).

    Attributes:
      resp_train, resp_val: (n_train, V), (n_val, V) float32 z-scored responses with NaNs,
        exactly as written to ``dataTrnS#`` / ``dataValS#``.
      roi_codes: (V,) uint8 ROI codes 0-7.
      voxel_index: (V,) float64 sorted unique 1-based indices into the 64x64x18 volume.
      noise_free_train, noise_free_val: (n_train, V), (n_val, V) float32 noise-free responses
        in the z-scored units of the file.
      signal_mask: (V,) bool, voxels that carry signal.
      snr: (V,) float64 signal-to-noise variance ratio (0 for noise-only voxels).
      noise_ceiling_r: (V,) best achievable Pearson r, sqrt(snr / (1 + snr)).
      noise_ceiling_r2: (V,) its square, snr / (1 + snr).
      rf_centre_cells: (V, 2) float64 RF centre (row, column) in feature-map cells.
      rf_size_cells: (V,) float64 RF Gaussian sigma in feature-map cells.
      rf_centre_pixels, rf_size_pixels: the same in 128 px image pixels (cells tile the image).
      channel_weights: (V, C) float32 channel weights (zero for noise-only voxels).
      noise_sd: (V,) noise standard deviation of one estimate in signal units.
      response_offset, response_scale: (V,) the z-scoring map, z = (raw - offset) / scale.
      nan_mask_train, nan_mask_val: bool masks of the entries set to NaN.
      repeats_train, repeats_val: (k, n_train, V), (k, n_val, V) float32 single-repeat
        responses (their mean over k is the estimate), or None without ``n_repeats``.
      feature_source: (V,) int64 index into ``SyntheticVim1.feature_sources`` of the features
        each voxel's ground truth reads.
    """

    resp_train: np.ndarray
    resp_val: np.ndarray
    roi_codes: np.ndarray
    voxel_index: np.ndarray
    noise_free_train: np.ndarray
    noise_free_val: np.ndarray
    signal_mask: np.ndarray
    snr: np.ndarray
    noise_ceiling_r: np.ndarray
    noise_ceiling_r2: np.ndarray
    rf_centre_cells: np.ndarray
    rf_size_cells: np.ndarray
    rf_centre_pixels: np.ndarray
    rf_size_pixels: np.ndarray
    channel_weights: np.ndarray
    noise_sd: np.ndarray
    response_offset: np.ndarray
    response_scale: np.ndarray
    nan_mask_train: np.ndarray
    nan_mask_val: np.ndarray
    repeats_train: np.ndarray | None = None
    repeats_val: np.ndarray | None = None
    feature_source: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class SyntheticVim1:
    """A whole synthetic vim-1 set in memory (what ``make_synthetic_vim1`` writes).

    Attributes:
      stim_train, stim_val: (n_train, 128, 128), (n_val, 128, 128) float32 images.
      seq_train, seq_val: (T, runs) float64 presentation sequences (image numbers, 1-based).
      subjects: subject number -> ``SubjectTruth``.
      feature_mean, feature_std: (C,) per-channel standardisation of the (first source's)
        feature map.
      feature_shape: (H, W, C) of the (first source's) feature map.
      seed: the seed everything was drawn from.
      feature_sources: names of the feature sources, in ``feature_source`` order.
    """

    stim_train: np.ndarray
    stim_val: np.ndarray
    seq_train: np.ndarray
    seq_val: np.ndarray
    subjects: dict[int, SubjectTruth]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    feature_shape: tuple[int, int, int]
    seed: int
    feature_sources: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SyntheticVim1Files:
    """Paths written by ``make_synthetic_vim1`` (``repeats`` and ``full_res`` may be absent)."""

    directory: Path
    responses: Path
    stimuli: Path
    ground_truth: Path
    repeats: Path | None = None
    full_res: tuple[Path, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Settings:
    n_train: int
    n_val: int
    voxel_counts: dict[int, int]
    seed: int
    snr: tuple[float, float]
    signal_fraction: float
    signal_rois: tuple[int, ...]
    n_repeats: int | None
    all_nan_fraction: float
    partial_nan_fraction: float
    roi_sources: dict[int, int]
    shared_fraction: float
    shared_noise_fraction: float


@dataclasses.dataclass(frozen=True)
class _Source:
    """One feature source: standardised maps laid out (N * C, H * W) for RF pooling."""

    name: str
    by_channel: np.ndarray
    shape: tuple[int, int, int]
    mean: np.ndarray
    std: np.ndarray


@dataclasses.dataclass(frozen=True)
class _VoxelModel:
    roi_codes: np.ndarray
    voxel_index: np.ndarray
    signal_mask: np.ndarray
    snr: np.ndarray
    rf_centre_cells: np.ndarray
    rf_size_cells: np.ndarray
    channel_weights: np.ndarray
    nan_mask: np.ndarray
    feature_source: np.ndarray
    shared: dict[int, np.ndarray]
    shared_noise: dict[int, np.ndarray]


@dataclasses.dataclass(frozen=True)
class _Block:
    columns: slice
    responses: np.ndarray
    noise_free: np.ndarray
    noise_sd: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    repeats: np.ndarray | None


def allocate_roi_counts(n_voxels: int) -> dict[int, int]:
    """Split ``n_voxels`` over ROI codes 0-7 in the proportions of the real subject 1.

    Largest-remainder rounding; with at least 8 voxels every ROI gets at least one.
    """
    codes = sorted(fmt.S1_ROI_COUNTS)
    proportions = np.array([fmt.S1_ROI_COUNTS[c] for c in codes], dtype=np.float64)
    proportions /= proportions.sum()
    exact = proportions * n_voxels
    counts = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - counts), kind="stable")
    counts[remainder_order[: n_voxels - counts.sum()]] += 1
    if n_voxels >= len(codes):
        for empty in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[empty] = 1
    return {code: int(count) for code, count in zip(codes, counts, strict=True)}


def presentation_sequences(
    n_train: int, n_val: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Presentation order at 1 s resolution, as ``seqTrn`` / ``seqVal``.

    Training images are each shown twice over runs of 140 trials; validation images 13 times,
    12 images per run. A trial starts every 4 s from row 17 (1-based), with a null trial after
    every 8 trials. Entries are 1-based image numbers, 0 elsewhere.

    Returns:
      seq_train (T_train, n_train_runs), seq_val (T_val, n_val_runs), float64.
    """
    train_order = np.concatenate([rng.permutation(n_train) for _ in range(TRAIN_REPEATS)]) + 1
    train_runs = [
        train_order[start : start + TRAIN_TRIALS_PER_RUN]
        for start in range(0, train_order.size, TRAIN_TRIALS_PER_RUN)
    ]
    val_runs = []
    for start in range(0, n_val, VAL_IMAGES_PER_RUN):
        images = np.arange(start, min(start + VAL_IMAGES_PER_RUN, n_val)) + 1
        val_runs.append(rng.permutation(np.repeat(images, VAL_REPEATS)))
    return _runs_to_sequence(train_runs), _runs_to_sequence(val_runs)


def _runs_to_sequence(runs: list[np.ndarray]) -> np.ndarray:
    longest = max(run.size for run in runs)
    n_rows = 16 + 4 * (longest + longest // 8) + 16
    sequence = np.zeros((n_rows, len(runs)), dtype=np.float64)
    for column, run in enumerate(runs):
        trial = np.arange(run.size)
        sequence[16 + 4 * (trial + trial // 8), column] = run
    return sequence


def _check_settings(
    n_train: int,
    n_val: int,
    n_voxels: int | Mapping[int, int] | None,
    subjects: Sequence[int],
    seed: int,
    snr: float | tuple[float, float],
    signal_fraction: float,
    signal_rois: Sequence[int],
    n_repeats: int | None,
    all_nan_fraction: float,
    partial_nan_fraction: float,
    source_names: Sequence[str] = ("features",),
    roi_sources: Mapping[int, str] | None = None,
    shared_fraction: float = 0.0,
    shared_noise_fraction: float = 0.0,
) -> _Settings:
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val")
    subjects = tuple(int(s) for s in subjects)
    if not subjects or any(s < 1 for s in subjects) or len(set(subjects)) != len(subjects):
        raise ValueError(f"subjects must be distinct positive numbers, got {subjects}.")
    if n_voxels is None:
        counts = {}
        for subject in subjects:
            if subject not in fmt.REAL_VOXEL_COUNTS:
                raise ValueError(
                    f"subject {subject} has no real voxel count to default to (known: "
                    f"{sorted(fmt.REAL_VOXEL_COUNTS)}); pass n_voxels."
                )
            counts[subject] = fmt.REAL_VOXEL_COUNTS[subject]
    elif isinstance(n_voxels, Mapping):
        missing = set(subjects) - set(n_voxels)
        if missing:
            raise ValueError(f"n_voxels has no count for subject(s) {sorted(missing)}.")
        counts = {s: check_positive_int(n_voxels[s], f"n_voxels[{s}]") for s in subjects}
    else:
        count = check_positive_int(n_voxels, "n_voxels")
        counts = dict.fromkeys(subjects, count)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    low, high = (snr, snr) if np.isscalar(snr) else tuple(snr)
    if not (0 < float(low) <= float(high) < np.inf):
        raise ValueError(
            f"snr must be a positive number or a (low, high) range with 0 < low <= high, got "
            f"{snr!r}."
        )
    for name, value in (
        ("signal_fraction", signal_fraction),
        ("all_nan_fraction", all_nan_fraction),
        ("partial_nan_fraction", partial_nan_fraction),
    ):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
    if all_nan_fraction + partial_nan_fraction > 1:
        raise ValueError("all_nan_fraction + partial_nan_fraction must not exceed 1.")
    rois = tuple(int(r) for r in signal_rois)
    unknown = sorted(set(rois) - set(fmt.ROI_NAMES))
    if unknown:
        raise ValueError(f"signal_rois has unknown ROI codes {unknown}; codes are 0-7.")
    n_repeats = check_positive_int(n_repeats, "n_repeats", allow_none=True)
    if not 0.0 <= float(shared_fraction) < 1.0:
        raise ValueError(f"shared_fraction must lie in [0, 1), got {shared_fraction!r}.")
    if not 0.0 <= float(shared_noise_fraction) < 1.0:
        raise ValueError(
            f"shared_noise_fraction must lie in [0, 1), got {shared_noise_fraction!r}."
        )
    names = list(source_names)
    roi_sources = dict(roi_sources or {})
    unknown_codes = sorted(set(map(int, roi_sources)) - set(fmt.ROI_NAMES))
    unknown_names = sorted(set(roi_sources.values()) - set(names))
    if unknown_codes or unknown_names:
        raise ValueError(
            f"roi_sources maps ROI codes 0-7 to names of feature_sources ({names}); it has "
            f"unknown codes {unknown_codes} or names {unknown_names}."
        )
    return _Settings(
        n_train=n_train,
        n_val=n_val,
        voxel_counts=counts,
        seed=int(seed),
        snr=(float(low), float(high)),
        signal_fraction=float(signal_fraction),
        signal_rois=rois,
        n_repeats=n_repeats,
        all_nan_fraction=float(all_nan_fraction),
        partial_nan_fraction=float(partial_nan_fraction),
        roi_sources={int(code): names.index(name) for code, name in roi_sources.items()},
        shared_fraction=float(shared_fraction),
        shared_noise_fraction=float(shared_noise_fraction),
    )


def _sources(images: np.ndarray, functions: Mapping[str, FeatureFn]) -> list[_Source]:
    """Every feature source, standardised, in the order of ``functions``."""
    sources = []
    for name, function in functions.items():
        features, mean, std = _standardised_features(images, function)
        n_images, height, width, n_channels = features.shape
        by_channel = features.transpose(0, 3, 1, 2).reshape(n_images * n_channels, -1)
        del features
        sources.append(_Source(name, by_channel, (height, width, n_channels), mean, std))
    return sources


def _standardised_features(
    images: np.ndarray, feature_fn: FeatureFn
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature maps (N, H, W, C) float32 standardised per channel, with the mean and std."""
    features = np.asarray(feature_fn(images))
    if features.ndim != 4 or features.shape[0] != images.shape[0]:
        raise ValueError(
            f"feature_fn must map images (N, 128, 128) to feature maps (N, H, W, C); it "
            f"returned shape {features.shape} for N = {images.shape[0]}."
        )
    if not np.all(np.isfinite(features)):
        raise ValueError("feature_fn returned NaN or inf values.")
    features = features.astype(np.float32)
    mean = features.mean(axis=(0, 1, 2), dtype=np.float64)
    std = features.std(axis=(0, 1, 2), dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    standardised = ((features - mean) / std).astype(np.float32)
    return standardised, mean, std


def gaussian_rfs(centres: np.ndarray, sizes: np.ndarray, map_shape: tuple[int, int]) -> np.ndarray:
    """Isotropic Gaussian receptive fields on a feature-map grid, each summing to 1.

    Args:
      centres: (V, 2) (row, column) centres in cells.
      sizes: (V,) Gaussian sigmas in cells.
      map_shape: (H, W).

    Returns:
      (H * W, V) float64 weights (row-major cells).
    """
    rows = np.arange(map_shape[0], dtype=np.float64)[:, None, None]
    columns = np.arange(map_shape[1], dtype=np.float64)[None, :, None]
    squared = (rows - centres[:, 0]) ** 2 + (columns - centres[:, 1]) ** 2
    rf = np.exp(-squared / (2 * sizes**2))
    rf /= rf.sum(axis=(0, 1), keepdims=True)
    return rf.reshape(map_shape[0] * map_shape[1], -1)


def _draw_voxels(settings: _Settings, subject: int, sources: Sequence[_Source]) -> _VoxelModel:
    rng = np.random.default_rng([settings.seed, subject, _VOXEL_STREAM])
    n_voxels = settings.voxel_counts[subject]
    n_images = settings.n_train + settings.n_val
    counts = allocate_roi_counts(n_voxels)
    roi_codes = rng.permutation(np.repeat(np.array(list(counts), np.uint8), list(counts.values())))
    voxel_index = np.sort(rng.choice(VOLUME_SIZE, size=n_voxels, replace=False) + 1.0)
    in_signal_roi = np.isin(roi_codes, settings.signal_rois)
    signal_mask = in_signal_roi & (rng.random(n_voxels) < settings.signal_fraction)
    low, high = settings.snr
    snr = np.exp(rng.uniform(np.log(low), np.log(high), n_voxels)) * signal_mask
    feature_source = np.array(
        [settings.roi_sources.get(int(code), 0) for code in roi_codes], dtype=np.int64
    )
    shapes = np.array([source.shape for source in sources], dtype=np.int64)[feature_source]
    rf_centre = rng.uniform(0.0, 1.0, (n_voxels, 2)) * (shapes[:, :2] - 1)
    size_low = np.array([RF_SIZE_RANGE[int(c)][0] for c in roi_codes])
    size_high = np.array([RF_SIZE_RANGE[int(c)][1] for c in roi_codes])
    relative_size = np.exp(rng.uniform(np.log(size_low), np.log(size_high)))
    rf_size = relative_size * shapes[:, :2].max(axis=1)
    n_channels = max(source.shape[2] for source in sources)
    weights = rng.standard_normal((n_voxels, n_channels)).astype(np.float32)
    weights[~signal_mask] = 0.0
    weights[np.arange(n_channels)[None, :] >= shapes[:, 2:3]] = 0.0
    nan_mask = np.zeros((n_images, n_voxels), dtype=bool)
    order = rng.permutation(n_voxels)
    n_all = round(settings.all_nan_fraction * n_voxels)
    n_partial = round(settings.partial_nan_fraction * n_voxels)
    nan_mask[:, order[:n_all]] = True
    for voxel in order[n_all : n_all + n_partial]:
        n_missing = rng.integers(1, MAX_PARTIAL_NANS + 1)
        nan_mask[rng.choice(n_images, size=n_missing, replace=False), voxel] = True
    return _VoxelModel(
        roi_codes=roi_codes,
        voxel_index=voxel_index,
        signal_mask=signal_mask,
        snr=snr,
        rf_centre_cells=rf_centre,
        rf_size_cells=rf_size,
        channel_weights=weights,
        nan_mask=nan_mask,
        feature_source=feature_source,
        shared=_shared_signals(settings, subject, roi_codes[signal_mask], sources),
        shared_noise=_shared_noise(settings, subject, roi_codes),
    )


def _pooled_signal(
    source: _Source, centres: np.ndarray, sizes: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(N, v) float64 read-outs sum_hwc rf[h, w] * weights[v, c] * F[n, h, w, c] of a source."""
    height, width, n_channels = source.shape
    rf = gaussian_rfs(centres, sizes, (height, width)).astype(np.float32)
    pooled = (source.by_channel @ rf).reshape(-1, n_channels, rf.shape[1])
    return np.einsum("ncv,vc->nv", pooled, weights[:, :n_channels], dtype=np.float64)


def _shared_signals(
    settings: _Settings, subject: int, signal_codes: np.ndarray, sources: Sequence[_Source]
) -> dict[int, np.ndarray]:
    """ROI code -> (N,) unit-variance signal shared by the ROI's signal voxels (with
    ``shared_fraction`` > 0): a broad read-out near the centre of the ROI's source."""
    if settings.shared_fraction == 0:
        return {}
    rng = np.random.default_rng([settings.seed, subject, _SHARED_STREAM])
    shared = {}
    for code in sorted(set(signal_codes.tolist())):
        source = sources[settings.roi_sources.get(code, 0)]
        height, width, n_channels = source.shape
        centre = (0.5 + rng.uniform(-0.15, 0.15, (1, 2))) * [height - 1, width - 1]
        size = np.array([SHARED_RF_SIZE * max(height, width)])
        weights = rng.standard_normal((1, n_channels)).astype(np.float32)
        signal = _pooled_signal(source, centre, size, weights)[:, 0]
        shared[code] = (signal - signal.mean()) / max(float(signal.std()), 1e-12)
    return shared


def _shared_noise(
    settings: _Settings, subject: int, roi_codes: np.ndarray
) -> dict[int, np.ndarray]:
    """ROI code -> (k, N) standard normal per-trial fluctuations shared by the ROI's voxels
    (k = n_repeats, or 1), with ``shared_noise_fraction`` > 0; empty otherwise."""
    if settings.shared_noise_fraction == 0:
        return {}
    rng = np.random.default_rng([settings.seed, subject, _SHARED_NOISE_STREAM])
    shape = (settings.n_repeats or 1, settings.n_train + settings.n_val)
    return {code: rng.standard_normal(shape) for code in sorted(set(roi_codes.tolist()))}


def _unit_noise(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    settings: _Settings,
    model: _VoxelModel,
    columns: slice,
) -> np.ndarray:
    """Unit-variance noise of the block's voxels, ``shape`` (N, w) or (k, N, w): independent
    draws, mixed with each voxel's ROI-shared draw when ``shared_noise_fraction`` > 0."""
    independent = rng.standard_normal(shape)
    if not model.shared_noise:
        return independent
    g = settings.shared_noise_fraction
    codes = model.roi_codes[columns]
    common = np.stack([model.shared_noise[int(code)] for code in codes], axis=-1)
    return math.sqrt(1 - g) * independent + math.sqrt(g) * common.reshape(shape)


def _shared_noise_estimate(trials: np.ndarray) -> np.ndarray:
    """(N,) the shared fluctuation of one estimate: the mean of k trials of variance k."""
    return trials.mean(axis=0) * math.sqrt(trials.shape[0])


def _simulate_block(
    settings: _Settings,
    subject: int,
    block: int,
    model: _VoxelModel,
    sources: Sequence[_Source],
) -> _Block:
    """Responses of voxels [block * VOXEL_BLOCK, ...) for all train + val images."""
    n_voxels = model.roi_codes.size
    columns = slice(block * VOXEL_BLOCK, min((block + 1) * VOXEL_BLOCK, n_voxels))
    n_images = settings.n_train + settings.n_val
    width_block = columns.stop - columns.start
    signal = np.zeros((n_images, width_block), dtype=np.float64)
    signal_columns = np.flatnonzero(model.signal_mask[columns])
    for index, source in enumerate(sources):
        chosen = signal_columns[model.feature_source[signal_columns + columns.start] == index]
        if chosen.size:
            voxels = chosen + columns.start
            signal[:, chosen] = _pooled_signal(
                source,
                model.rf_centre_cells[voxels],
                model.rf_size_cells[voxels],
                model.channel_weights[voxels],
            )
    if model.shared and signal_columns.size:
        f = settings.shared_fraction
        own = signal[:, signal_columns]
        own = (own - own.mean(axis=0)) / np.maximum(own.std(axis=0), 1e-12)
        codes = model.roi_codes[signal_columns + columns.start]
        common = np.stack([model.shared[int(code)] for code in codes], axis=1)
        signal[:, signal_columns] = np.sqrt(1 - f) * own + np.sqrt(f) * common
    signal_var = signal.var(axis=0)
    snr = model.snr[columns]
    has_signal = (snr > 0) & (signal_var > 0)
    noise_sd = np.where(has_signal, np.sqrt(signal_var / np.where(has_signal, snr, 1.0)), 1.0)
    rng = np.random.default_rng([settings.seed, subject, _NOISE_STREAM, block])
    if settings.n_repeats is None:
        noise = _unit_noise(rng, (n_images, width_block), settings, model, columns) * noise_sd
        repeats = None
    else:
        k = settings.n_repeats
        unit = _unit_noise(rng, (k, n_images, width_block), settings, model, columns)
        trial_noise = unit * (noise_sd * math.sqrt(k))
        noise = trial_noise.mean(axis=0)
        repeats = signal + trial_noise
    noisy = signal + noise
    offset = noisy.mean(axis=0)
    scale = noisy.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    responses = ((noisy - offset) / scale).astype(np.float32)
    responses[model.nan_mask[:, columns]] = np.nan
    if repeats is not None:
        repeats = ((repeats - offset) / scale).astype(np.float32)
        repeats[:, model.nan_mask[:, columns]] = np.nan
    return _Block(
        columns=columns,
        responses=responses,
        noise_free=((signal - offset) / scale).astype(np.float32),
        noise_sd=noise_sd,
        offset=offset,
        scale=scale,
        repeats=repeats,
    )


def _subject_blocks(
    settings: _Settings,
    subject: int,
    model: _VoxelModel,
    sources: Sequence[_Source],
    progress: bool,
) -> Iterator[_Block]:
    n_blocks = math.ceil(model.roi_codes.size / VOXEL_BLOCK)
    for block in tqdm(
        range(n_blocks), desc=f"subject {subject} voxel blocks", disable=not progress
    ):
        yield _simulate_block(settings, subject, block, model, sources)


def _stimuli(settings: _Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([settings.seed, _STIMULI_STREAM])
    images = natural_image_patches(settings.n_train + settings.n_val, rng, fmt.IMAGE_SIZE)
    design_rng = np.random.default_rng([settings.seed, _STIMULI_STREAM, _DESIGN_STREAM])
    seq_train, seq_val = presentation_sequences(settings.n_train, settings.n_val, design_rng)
    return images[: settings.n_train], images[settings.n_train :], seq_train, seq_val


def _pixel_geometry(
    model: _VoxelModel, sources: Sequence[_Source]
) -> tuple[np.ndarray, np.ndarray]:
    """RF centres (V, 2) and sizes (V,) in image pixels, cells tiling the 128 px image (each
    voxel's cells those of its own source)."""
    shapes = np.array([source.shape[:2] for source in sources], np.float64)
    cell = fmt.IMAGE_SIZE / shapes[model.feature_source]
    centres = (model.rf_centre_cells + 0.5) * cell - 0.5
    return centres, model.rf_size_cells * cell.mean(axis=1)


def _ceiling(snr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r2 = snr / (1.0 + snr)
    return np.sqrt(r2), r2


def _resolve_feature_fn(feature_fn: FeatureFn | None) -> FeatureFn:
    if feature_fn is None:
        return filter_bank_features
    if not callable(feature_fn):
        raise TypeError(
            f"feature_fn must be a callable images (N, 128, 128) -> (N, H, W, C), got "
            f"{type(feature_fn).__name__}."
        )
    return feature_fn


def _resolve_sources(
    feature_fn: FeatureFn | None, feature_sources: Mapping[str, FeatureFn] | None
) -> dict[str, FeatureFn]:
    """Source name -> feature function: ``feature_sources``, or ``feature_fn`` alone."""
    if feature_sources is None:
        function = _resolve_feature_fn(feature_fn)
        return {getattr(function, "__name__", "features"): function}
    if feature_fn is not None:
        raise ValueError("pass feature_fn or feature_sources, not both.")
    if not isinstance(feature_sources, Mapping) or not feature_sources:
        raise ValueError("feature_sources must be a non-empty mapping name -> feature function.")
    return {str(name): _resolve_feature_fn(fn) for name, fn in feature_sources.items()}


def simulate_vim1(
    *,
    n_train: int = fmt.N_TRAIN,
    n_val: int = fmt.N_VAL,
    n_voxels: int | Mapping[int, int] | None = None,
    subjects: Sequence[int] = (1, 2),
    seed: int = 0,
    snr: float | tuple[float, float] = (0.1, 1.0),
    signal_fraction: float = 0.6,
    signal_rois: Sequence[int] = (1, 2, 3, 4, 5, 6, 7),
    feature_fn: FeatureFn | None = None,
    n_repeats: int | None = None,
    all_nan_fraction: float = 0.05,
    partial_nan_fraction: float = 0.07,
    feature_sources: Mapping[str, FeatureFn] | None = None,
    roi_sources: Mapping[int, str] | None = None,
    shared_fraction: float = 0.0,
    shared_noise_fraction: float = 0.0,
    progress: bool = False,
) -> SyntheticVim1:
    """The synthetic vim-1 set in memory: the same numbers ``make_synthetic_vim1`` writes.

    Use it for small sets (tests, notebooks); for full-size subjects use
    ``make_synthetic_vim1``, which streams voxel blocks to disk. Arguments as there.
    """
    functions = _resolve_sources(feature_fn, feature_sources)
    settings = _check_settings(
        n_train, n_val, n_voxels, subjects, seed, snr, signal_fraction, signal_rois,
        n_repeats, all_nan_fraction, partial_nan_fraction, list(functions), roi_sources,
        shared_fraction, shared_noise_fraction,
    )  # fmt: skip
    stim_train, stim_val, seq_train, seq_val = _stimuli(settings)
    sources = _sources(np.concatenate([stim_train, stim_val]), functions)
    truths = {}
    for subject in settings.voxel_counts:
        model = _draw_voxels(settings, subject, sources)
        blocks = list(_subject_blocks(settings, subject, model, sources, progress))
        joined = {
            name: np.concatenate([getattr(b, name) for b in blocks], axis=-1)
            for name in ("responses", "noise_free", "noise_sd", "offset", "scale")
        }
        repeats = (
            np.concatenate([b.repeats for b in blocks], axis=-1)
            if settings.n_repeats is not None
            else None
        )
        centre_px, size_px = _pixel_geometry(model, sources)
        ceiling_r, ceiling_r2 = _ceiling(model.snr)
        split = settings.n_train
        truths[subject] = SubjectTruth(
            resp_train=joined["responses"][:split],
            resp_val=joined["responses"][split:],
            roi_codes=model.roi_codes,
            voxel_index=model.voxel_index,
            noise_free_train=joined["noise_free"][:split],
            noise_free_val=joined["noise_free"][split:],
            signal_mask=model.signal_mask,
            snr=model.snr,
            noise_ceiling_r=ceiling_r,
            noise_ceiling_r2=ceiling_r2,
            rf_centre_cells=model.rf_centre_cells,
            rf_size_cells=model.rf_size_cells,
            rf_centre_pixels=centre_px,
            rf_size_pixels=size_px,
            channel_weights=model.channel_weights,
            noise_sd=joined["noise_sd"],
            response_offset=joined["offset"],
            response_scale=joined["scale"],
            nan_mask_train=model.nan_mask[:split],
            nan_mask_val=model.nan_mask[split:],
            repeats_train=None if repeats is None else repeats[:, :split],
            repeats_val=None if repeats is None else repeats[:, split:],
            feature_source=model.feature_source,
        )
    return SyntheticVim1(
        stim_train=stim_train,
        stim_val=stim_val,
        seq_train=seq_train,
        seq_val=seq_val,
        subjects=truths,
        feature_mean=sources[0].mean,
        feature_std=sources[0].std,
        feature_shape=sources[0].shape,
        seed=settings.seed,
        feature_sources=tuple(source.name for source in sources),
    )


def make_synthetic_vim1(
    out_dir: str | os.PathLike,
    *,
    n_train: int = fmt.N_TRAIN,
    n_val: int = fmt.N_VAL,
    n_voxels: int | Mapping[int, int] | None = None,
    subjects: Sequence[int] = (1, 2),
    seed: int = 0,
    snr: float | tuple[float, float] = (0.1, 1.0),
    signal_fraction: float = 0.6,
    signal_rois: Sequence[int] = (1, 2, 3, 4, 5, 6, 7),
    feature_fn: FeatureFn | None = None,
    n_repeats: int | None = None,
    all_nan_fraction: float = 0.05,
    partial_nan_fraction: float = 0.07,
    feature_sources: Mapping[str, FeatureFn] | None = None,
    roi_sources: Mapping[int, str] | None = None,
    shared_fraction: float = 0.0,
    shared_noise_fraction: float = 0.0,
    full_res: bool = False,
    progress: bool = True,
) -> SyntheticVim1Files:
    """Write a synthetic vim-1 set in the exact CRCNS file format, with its ground truth.

    Args:
      out_dir: directory to write into (created if needed; files replaced atomically).
      n_train, n_val: number of training / validation images (real: 1750 / 120).
      n_voxels: voxels per subject: None for the real counts (25915 for S1, 26329 for S2),
        an int for every subject, or a {subject: count} mapping. ROI codes are spread in the
        real S1 proportions (at least one voxel per ROI when n_voxels >= 8).
      subjects: subject numbers to write (``dataTrnS#`` etc. for each).
      seed: seed of every random draw (stimuli, voxel parameters, noise).
      snr: signal-to-noise variance ratio of signal voxels: one number, or a (low, high)
        range drawn log-uniformly per voxel.
      signal_fraction: probability that a voxel in ``signal_rois`` carries signal.
      signal_rois: ROI codes whose voxels may carry signal; all others are noise-only
        (default: the visual ROIs 1-7, "other" voxels are noise).
      feature_sources: name -> feature function (as ``feature_fn``): several sources for a
        hierarchy of areas (instead of ``feature_fn``); see ``roi_sources``.
      roi_sources: ROI code -> name of the source its voxels read (ROIs not named read the
        first source).
      shared_fraction: fraction f in [0, 1) of each signal voxel's signal variance shared by
        every signal voxel of its ROI (see the module docstring).
      shared_noise_fraction: fraction g in [0, 1) of each voxel's noise variance that is one
        per-image fluctuation shared by every voxel of its ROI, not driven by the stimulus
        (ceilings unchanged; it sets how predictable the ROI average is, see the module
        docstring).
      feature_fn: images (N, 128, 128) float32 -> feature maps (N, H, W, C); default
        ``filter_bank_features`` (16 x 16 x 10). The cost of the read-out is
        O(N * H * W * C * n_signal_voxels): for large maps (e.g. AlexNet conv3, 13 x 13 x 384)
        restrict ``signal_rois`` (e.g. ``(6,)`` for V4) or ``n_voxels``.
      n_repeats: if set, write ``RepeatedResponses.h5`` with k single-repeat responses per
        image (``dataTrnS#`` (k, n_train, V), ``dataValS#`` (k, n_val, V)); each estimate in
        ``EstimatedResponses.mat`` is their mean.
      all_nan_fraction: fraction of voxels that are NaN for every image.
      partial_nan_fraction: fraction of voxels with 1-5 scattered NaN responses.
      full_res: also write the 500 px ``Stimuli_Trn_FullRes_##.mat`` (120 images per file)
        and ``Stimuli_Val_FullRes.mat`` (the 128 px images upsampled bilinearly).
      progress: show tqdm progress bars.

    Returns:
      The paths written (``SyntheticVim1Files``).
    """
    functions = _resolve_sources(feature_fn, feature_sources)
    settings = _check_settings(
        n_train, n_val, n_voxels, subjects, seed, snr, signal_fraction, signal_rois,
        n_repeats, all_nan_fraction, partial_nan_fraction, list(functions), roi_sources,
        shared_fraction, shared_noise_fraction,
    )  # fmt: skip
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stim_train, stim_val, seq_train, seq_val = _stimuli(settings)
    sources = _sources(np.concatenate([stim_train, stim_val]), functions)
    stimuli_path = directory / fmt.STIMULI_FILE
    _write_stimuli(stimuli_path, stim_train, stim_val, seq_train, seq_val)
    full_res_paths = _write_full_res(directory, stim_train, stim_val) if full_res else ()
    responses_path = directory / fmt.RESPONSES_FILE
    truth_path = directory / fmt.GROUND_TRUTH_FILE
    repeats_path = directory / fmt.REPEATS_FILE if settings.n_repeats else None
    with contextlib.ExitStack() as renames:
        temporary_responses = renames.enter_context(atomic_path(responses_path))
        temporary_truth = renames.enter_context(atomic_path(truth_path))
        temporary_repeats = (
            renames.enter_context(atomic_path(repeats_path)) if repeats_path else None
        )
        with contextlib.ExitStack() as files:
            responses_file = files.enter_context(create_v73_file(temporary_responses))
            truth_file = files.enter_context(h5py.File(temporary_truth, "w"))
            repeats_file = (
                files.enter_context(h5py.File(temporary_repeats, "w"))
                if temporary_repeats
                else None
            )
            _write_truth_header(truth_file, settings, sources)
            _create_response_variables(responses_file, settings)
            for subject in settings.voxel_counts:
                model = _draw_voxels(settings, subject, sources)
                _write_subject(
                    responses_file, truth_file, repeats_file, settings, subject, model,
                    sources, progress,
                )  # fmt: skip
        stamp_header(temporary_responses)
    logger.info("wrote synthetic vim-1 set to %s", directory)
    return SyntheticVim1Files(
        directory=directory,
        responses=responses_path,
        stimuli=stimuli_path,
        ground_truth=truth_path,
        repeats=repeats_path,
        full_res=full_res_paths,
    )


def _write_stimuli(
    path: Path,
    stim_train: np.ndarray,
    stim_val: np.ndarray,
    seq_train: np.ndarray,
    seq_val: np.ndarray,
) -> None:
    variables = {
        fmt.STIM_TRAIN_VAR: stim_train,
        fmt.STIM_VAL_VAR: stim_val,
        fmt.SEQ_TRAIN_VAR: seq_train,
        fmt.SEQ_VAL_VAR: seq_val,
    }
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        scipy.io.savemat(handle, variables, format="5", do_compression=True, oned_as="column")


def _write_full_res(
    directory: Path, stim_train: np.ndarray, stim_val: np.ndarray
) -> tuple[Path, ...]:
    import skimage.transform

    def upsample(images: np.ndarray) -> np.ndarray:
        size = (fmt.FULLRES_SIZE, fmt.FULLRES_SIZE)
        return np.stack(
            [skimage.transform.resize(i, size, order=1).astype(np.float32) for i in images]
        )

    paths = []
    per_file = fmt.FULLRES_IMAGES_PER_FILE
    chunks = [
        (directory / fmt.FULLRES_TRAIN_PATTERN.format(index=number + 1), fmt.STIM_TRAIN_VAR,
         stim_train[start : start + per_file])
        for number, start in enumerate(range(0, len(stim_train), per_file))
    ] + [(directory / fmt.FULLRES_VAL_FILE, fmt.STIM_VAL_VAR, stim_val)]  # fmt: skip
    for path, name, images in chunks:
        with atomic_path(path) as temporary:
            with create_v73_file(temporary) as handle:
                write_matlab_array(handle, name, upsample(images))
            stamp_header(temporary)
        paths.append(path)
    return tuple(paths)


def _create_response_variables(handle: h5py.File, settings: _Settings) -> None:
    """Create every subject's variables up front, in alphabetical order as MATLAB lists them."""
    shapes = {}
    for subject, count in settings.voxel_counts.items():
        shapes[fmt.train_var(subject)] = ((settings.n_train, count), np.float32)
        shapes[fmt.val_var(subject)] = ((settings.n_val, count), np.float32)
        shapes[fmt.roi_var(subject)] = ((1, count), np.uint8)
        shapes[fmt.voxel_index_var(subject)] = ((1, count), np.float64)
    for name in sorted(shapes):
        shape, dtype = shapes[name]
        create_matlab_dataset(handle, name, shape, dtype, chunk_columns=CHUNK_COLUMNS)


def _write_truth_header(
    handle: h5py.File,
    settings: _Settings,
    sources: Sequence[_Source],
) -> None:
    handle.attrs["seed"] = settings.seed
    handle.attrs["snr_range"] = np.asarray(settings.snr)
    handle.attrs["signal_fraction"] = settings.signal_fraction
    handle.attrs["signal_rois"] = np.asarray(settings.signal_rois, dtype=np.int64)
    handle.attrs["n_train"] = settings.n_train
    handle.attrs["n_val"] = settings.n_val
    handle.attrs["n_repeats"] = settings.n_repeats or 0
    handle.attrs["feature_fn"] = sources[0].name
    handle.attrs["feature_sources"] = json.dumps([source.name for source in sources])
    handle.attrs["roi_sources"] = json.dumps(
        {fmt.ROI_NAMES[code]: sources[index].name for code, index in settings.roi_sources.items()}
    )
    handle.attrs["shared_fraction"] = settings.shared_fraction
    handle.attrs["shared_noise_fraction"] = settings.shared_noise_fraction
    handle.attrs["model"] = (
        "signal[n, v] = sum_hwc rf_v[h, w] * channel_weights[v, c] * "
        "(features[n, h, w, c] - feature_mean[c]) / feature_std[c], features and their "
        "statistics those of the voxel's source (sources/<feature_sources[feature_source[v]]>); "
        "with shared_fraction f > 0, signal = sqrt(1 - f) * signal / std(signal) + sqrt(f) * "
        "shared_signal/<ROI>; noise = noise_sd * (sqrt(g) * shared_noise/<ROI> + sqrt(1 - g) * "
        "independent), g = shared_noise_fraction; "
        "z = (signal + noise - response_offset) / response_scale"
    )
    handle["feature_shape"] = np.asarray(sources[0].shape, dtype=np.int64)
    handle["feature_mean"] = sources[0].mean
    handle["feature_std"] = sources[0].std
    for source in sources:
        group = handle.create_group(f"sources/{source.name}")
        group["feature_shape"] = np.asarray(source.shape, dtype=np.int64)
        group["feature_mean"] = source.mean
        group["feature_std"] = source.std


def _write_subject(
    responses_file: h5py.File,
    truth_file: h5py.File,
    repeats_file: h5py.File | None,
    settings: _Settings,
    subject: int,
    model: _VoxelModel,
    sources: Sequence[_Source],
    progress: bool,
) -> None:
    n_voxels = model.roi_codes.size
    split = settings.n_train
    responses_file[fmt.roi_var(subject)][...] = model.roi_codes[None, :]
    responses_file[fmt.voxel_index_var(subject)][...] = model.voxel_index[None, :]
    group = truth_file.create_group(f"S{subject}")
    centre_px, size_px = _pixel_geometry(model, sources)
    ceiling_r, ceiling_r2 = _ceiling(model.snr)
    for code, signal in model.shared.items():
        group[f"shared_signal/{fmt.ROI_NAMES[code]}"] = signal
    for code, trials in model.shared_noise.items():
        group[f"shared_noise/{fmt.ROI_NAMES[code]}"] = _shared_noise_estimate(trials)
    for name, value in {
        "roi_codes": model.roi_codes,
        "voxel_index": model.voxel_index,
        "signal_mask": model.signal_mask,
        "snr": model.snr,
        "noise_ceiling_r": ceiling_r,
        "noise_ceiling_r2": ceiling_r2,
        "rf_centre_cells": model.rf_centre_cells,
        "rf_size_cells": model.rf_size_cells,
        "rf_centre_pixels": centre_px,
        "rf_size_pixels": size_px,
        "channel_weights": model.channel_weights,
        "nan_mask_train": model.nan_mask[:split],
        "nan_mask_val": model.nan_mask[split:],
        "feature_source": model.feature_source,
    }.items():
        group[name] = value
    chunks = {"chunks": True}
    noise_free_train = group.create_dataset(
        "noise_free_train", (split, n_voxels), np.float32, **chunks
    )
    noise_free_val = group.create_dataset(
        "noise_free_val", (settings.n_val, n_voxels), np.float32, **chunks
    )
    per_voxel = {
        name: group.create_dataset(name, (n_voxels,), np.float64)
        for name in ("noise_sd", "response_offset", "response_scale")
    }
    if repeats_file is not None:
        k = settings.n_repeats
        repeats_train = repeats_file.create_dataset(
            fmt.train_var(subject), (k, split, n_voxels), np.float32, **chunks
        )
        repeats_val = repeats_file.create_dataset(
            fmt.val_var(subject), (k, settings.n_val, n_voxels), np.float32, **chunks
        )
    train = responses_file[fmt.train_var(subject)]
    val = responses_file[fmt.val_var(subject)]
    for block in _subject_blocks(settings, subject, model, sources, progress):
        columns = block.columns
        train[:, columns] = block.responses[:split]
        val[:, columns] = block.responses[split:]
        noise_free_train[:, columns] = block.noise_free[:split]
        noise_free_val[:, columns] = block.noise_free[split:]
        per_voxel["noise_sd"][columns] = block.noise_sd
        per_voxel["response_offset"][columns] = block.offset
        per_voxel["response_scale"][columns] = block.scale
        if repeats_file is not None:
            repeats_train[:, :, columns] = block.repeats[:, :split]
            repeats_val[:, :, columns] = block.repeats[:, split:]
