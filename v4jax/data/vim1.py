"""Read the CRCNS vim-1 files (Kay et al. 2008) as distributed, voxel blocks at a time.

``EstimatedResponses.mat`` is MATLAB v7.3 (HDF5, read with h5py); ``Stimuli.mat`` is a v5
MAT-file (read with scipy); the optional 500 px ``Stimuli_*_FullRes*.mat`` are v7.3. Shapes as
h5py sees them: ``dataTrnS#`` (1750, n_voxels), ``dataValS#`` (120, n_voxels), ``roiS#`` and
``voxIdxS#`` (1, n_voxels); see ``shared/specs/vim1-format.md``.

The loader never writes into the data directory and reads only the selected voxels' columns,
in blocks of at most ``block_voxels`` columns, so asking for V4 (1,550 voxels of subject 1)
never holds the full 25,915-voxel matrix in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from v4jax._io import open_hdf5
from v4jax._validation import check_choice, check_positive_int
from v4jax.data import _format as fmt

logger = logging.getLogger(__name__)

ROI_NAMES = dict(fmt.ROI_NAMES)
VOLUME_SHAPE = fmt.VOLUME_SHAPE
NAN_POLICIES = ("drop", "mask")
DEFAULT_BLOCK_VOXELS = 2048
READ_SPAN = 512
RoiSpec = str | int | Sequence[str | int]


def unravel_voxel_index(voxel_index: np.ndarray) -> np.ndarray:
    """(row, column, slice) coordinates in the 64 x 64 x 18 EPI volume.

    ``voxIdx`` is a MATLAB (1-based, column-major) linear index, so the coordinates are
    ``np.unravel_index(voxel_index - 1, (64, 64, 18), order="F")``.

    Args:
      voxel_index: (n_voxels,) 1-based linear indices, as stored.

    Returns:
      (n_voxels, 3) int64 0-based coordinates.
    """
    index = np.asarray(voxel_index, dtype=np.int64)
    size = int(np.prod(VOLUME_SHAPE))
    if index.size and (index.min() < 1 or index.max() > size):
        raise ValueError(
            f"voxel_index must be 1-based indices into the {VOLUME_SHAPE} volume (1 to "
            f"{size}), got values from {index.min()} to {index.max()}."
        )
    return np.stack(np.unravel_index(index - 1, VOLUME_SHAPE, order="F"), axis=-1)


@dataclasses.dataclass(frozen=True)
class Vim1Data:
    """One subject's vim-1 stimuli and selected voxels (V = number of voxels kept).

    Attributes:
      stim_train: (n_train, px, px) float32 training images (px = 128, or 500 with full_res).
      stim_val: (n_val, px, px) float32 validation images.
      resp_train: (n_train, V) float32 z-scored response estimates.
      resp_val: (n_val, V) float32.
      roi_codes: (V,) int64 ROI code of each voxel (0 other, 1 V1 ... 6 V4, 7 LO).
      voxel_index: (V,) int64 1-based linear index into the 64 x 64 x 18 volume, as stored
        (``voxel_coordinates`` unravels it).
      columns: (V,) int64 column of each voxel in ``EstimatedResponses.mat``.
      roi_names: names of the ROIs that were asked for.
      subject: subject number.
      n_dropped_nan: voxels dropped because a response was NaN (0 with nan_policy="mask").
      valid_mask: (V,) bool, True where all responses are finite (nan_policy="mask" only;
        the NaNs stay in the responses), else None.
    """

    stim_train: np.ndarray
    stim_val: np.ndarray
    resp_train: np.ndarray
    resp_val: np.ndarray
    roi_codes: np.ndarray
    voxel_index: np.ndarray
    columns: np.ndarray
    roi_names: tuple[str, ...]
    subject: int
    n_dropped_nan: int
    valid_mask: np.ndarray | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.roi_codes.size)

    def voxel_coordinates(self) -> np.ndarray:
        """(V, 3) int64 0-based (row, column, slice) in the 64 x 64 x 18 volume."""
        return unravel_voxel_index(self.voxel_index)


def roi_codes_for(roi: RoiSpec) -> tuple[int, ...]:
    """ROI codes for a name ("V4", case-insensitive), a code (6), a list of either, or "all".

    Returns:
      Sorted unique codes.
    """
    if isinstance(roi, str) and roi.lower() == "all":
        return tuple(sorted(ROI_NAMES))
    items = [roi] if isinstance(roi, (str, int, np.integer)) else list(roi)
    if not items:
        raise ValueError("roi is an empty list; pass a name such as 'V4', a code, or 'all'.")
    by_name = {name.lower(): code for code, name in ROI_NAMES.items()} | fmt.ROI_ALIASES
    codes = set()
    for item in items:
        if isinstance(item, str):
            if item.lower() not in by_name:
                raise ValueError(
                    f"unknown ROI name {item!r}; use one of {list(ROI_NAMES.values())} "
                    "(case-insensitive), a code 0-7, or 'all'."
                )
            codes.add(by_name[item.lower()])
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if int(item) not in ROI_NAMES:
                raise ValueError(f"unknown ROI code {item}; codes are {ROI_NAMES} (or pass 'all').")
            codes.add(int(item))
        else:
            raise TypeError(
                f"roi entries must be names or integer codes, got {type(item).__name__}."
            )
    return tuple(sorted(codes))


class Vim1Responses:
    """An open, read-only ``EstimatedResponses.mat`` for one subject; reads voxel columns.

    Use ``open_responses``. ``roi_codes`` and ``voxel_index`` are read at opening (small);
    response columns are read on demand with ``read_voxel_block`` / ``iter_voxel_blocks``.

    Attributes:
      path: the file.
      subject: subject number.
      n_train, n_val, n_voxels: sizes from the file.
      roi_codes: (n_voxels,) int64.
      voxel_index: (n_voxels,) int64, 1-based as stored.
    """

    def __init__(self, path: Path, subject: int) -> None:
        self.path = path
        self.subject = subject
        self._file = _open_hdf5(path)
        try:
            self._train, self._val, roi, voxel_index = self._subject_datasets()
            self.roi_codes = _read_vector(path, roi, fmt.roi_var(subject)).astype(np.int64)
            stored_index = _read_vector(path, voxel_index, fmt.voxel_index_var(subject))
            self.voxel_index = stored_index.astype(np.int64)
        except BaseException:
            self._file.close()
            raise
        self.n_train, self.n_voxels = self._train.shape
        self.n_val = self._val.shape[0]

    def _subject_datasets(self) -> tuple[h5py.Dataset, ...]:
        names = fmt.subject_vars(self.subject)
        present = [name for name in names if name in self._file]
        if not present:
            raise ValueError(
                f"{self.path} has no data for subject {self.subject} (no {', '.join(names)}); "
                f"it holds subject(s) {list(_subjects_in(self._file))} and variables "
                f"{sorted(self._file)}."
            )
        for name in names:
            if name not in self._file or not isinstance(self._file[name], h5py.Dataset):
                raise ValueError(
                    f"{self.path} has no variable {name!r}; expected the CRCNS vim-1 variables "
                    f"{list(names)}, found {sorted(self._file)}."
                )
        train, val, roi, voxel_index = (self._file[name] for name in names)
        n_voxels = train.shape[-1] if train.ndim == 2 else -1
        real_count = fmt.REAL_VOXEL_COUNTS.get(self.subject, "n_voxels")
        expected = {
            names[0]: (None, f"(n_train, n_voxels), e.g. (1750, {real_count})"),
            names[1]: (None, f"(n_val, {n_voxels})"),
            names[2]: (1, f"(1, {n_voxels})"),
            names[3]: (1, f"(1, {n_voxels})"),
        }
        for dataset, name in zip((train, val, roi, voxel_index), names, strict=True):
            rows, description = expected[name]
            ok = dataset.ndim == 2 and dataset.shape[-1] == n_voxels and n_voxels > 0
            if not ok or rows not in (None, dataset.shape[0]) or dataset.dtype.kind not in "fiu":
                raise ValueError(
                    f"{self.path}: variable {name!r} has shape {dataset.shape} and dtype "
                    f"{dataset.dtype}; expected a numeric array of h5py shape {description}."
                )
        return train, val, roi, voxel_index

    def columns_for(self, roi: RoiSpec) -> np.ndarray:
        """Sorted file columns (int64) of the voxels in ``roi`` (see ``roi_codes_for``)."""
        codes = roi_codes_for(roi)
        columns = np.flatnonzero(np.isin(self.roi_codes, codes))
        if columns.size == 0:
            names = [ROI_NAMES[c] for c in codes]
            raise ValueError(
                f"subject {self.subject} has no voxels in ROI {names} in {self.path}; ROI codes "
                f"present: {sorted(set(self.roi_codes.tolist()))}."
            )
        return columns

    def read_voxel_block(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Responses of the given voxel columns.

        Args:
          columns: (k,) sorted unique int column indices (k small enough to hold in memory).

        Returns:
          train (n_train, k) float32 and val (n_val, k) float32, NaNs as stored.
        """
        columns = _check_columns(columns, self.n_voxels)
        return (
            _read_columns(self.path, self._train, columns),
            _read_columns(self.path, self._val, columns),
        )

    def iter_voxel_blocks(
        self, columns: np.ndarray | None = None, block_voxels: int = DEFAULT_BLOCK_VOXELS
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Stream (block_columns, train, val) over ``columns`` (default all) in blocks.

        Yields:
          block_columns (b,) int64, train (n_train, b) float32, val (n_val, b) float32 with
          b <= block_voxels.
        """
        block_voxels = check_positive_int(block_voxels, "block_voxels")
        columns = (
            np.arange(self.n_voxels) if columns is None else _check_columns(columns, self.n_voxels)
        )
        for start in range(0, columns.size, block_voxels):
            block = columns[start : start + block_voxels]
            yield (block, *self.read_voxel_block(block))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Vim1Responses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_responses(data_dir: str | os.PathLike, subject: int = 1) -> Vim1Responses:
    """Open ``<data_dir>/EstimatedResponses.mat`` read-only for one subject.

    Use as a context manager; raises FileNotFoundError / ValueError naming the file and the
    variable when the file is missing, not HDF5, or lacks the subject's variables.
    """
    subject = check_positive_int(subject, "subject")
    return Vim1Responses(_data_file(data_dir, fmt.RESPONSES_FILE), subject)


def list_subjects(data_dir: str | os.PathLike) -> tuple[int, ...]:
    """Subject numbers with a ``dataTrnS#`` variable in ``<data_dir>/EstimatedResponses.mat``."""
    path = _data_file(data_dir, fmt.RESPONSES_FILE)
    with _open_hdf5(path) as handle:
        return _subjects_in(handle)


def _subjects_in(handle: h5py.File) -> tuple[int, ...]:
    found = (re.fullmatch(r"dataTrnS(\d+)", name) for name in handle)
    return tuple(sorted(int(match.group(1)) for match in found if match))


def load_vim1(
    data_dir: str | os.PathLike,
    subject: int = 1,
    roi: RoiSpec = "V4",
    *,
    nan_policy: str = "drop",
    full_res: bool = False,
    block_voxels: int = DEFAULT_BLOCK_VOXELS,
) -> Vim1Data:
    """Load one subject's vim-1 stimuli and the responses of the voxels in ``roi``.

    Args:
      data_dir: directory with ``EstimatedResponses.mat`` and ``Stimuli.mat`` (and, with
        ``full_res``, ``Stimuli_Trn_FullRes_01..15.mat`` and ``Stimuli_Val_FullRes.mat``).
      subject: 1 or 2 (any subject whose ``dataTrnS#`` is in the file).
      roi: a name ("V4", case-insensitive; "LatOcc" = "LO"), a code (6), a list of either, or
        "all".
      nan_policy: "drop" (default) removes voxels with any NaN in train or val and logs how
        many; "mask" keeps them and sets ``valid_mask``.
      full_res: read the 500 px images instead of the 128 px ``Stimuli.mat``.
      block_voxels: voxel columns read per disk access (bounds the memory used while reading).

    Returns:
      ``Vim1Data`` with stim_train (1750, 128, 128), stim_val (120, 128, 128), resp_train
      (1750, V), resp_val (120, V), all float32.
    """
    nan_policy = check_choice(nan_policy, "nan_policy", NAN_POLICIES)
    codes = roi_codes_for(roi)
    with open_responses(data_dir, subject) as responses:
        selected = responses.columns_for(codes)
        stim_train, stim_val = _load_full_res(data_dir) if full_res else _load_stimuli(data_dir)
        train_blocks, val_blocks, kept_blocks, valid_blocks = [], [], [], []
        for columns, train, val in responses.iter_voxel_blocks(selected, block_voxels):
            valid = np.isfinite(train).all(axis=0) & np.isfinite(val).all(axis=0)
            if nan_policy == "drop":
                train, val, columns = train[:, valid], val[:, valid], columns[valid]
            train_blocks.append(train)
            val_blocks.append(val)
            kept_blocks.append(columns)
            valid_blocks.append(valid)
        n_train, n_val = responses.n_train, responses.n_val
        roi_codes, voxel_index = responses.roi_codes, responses.voxel_index
    kept = np.concatenate(kept_blocks)
    valid = np.concatenate(valid_blocks)
    n_dropped = int(valid.size - valid.sum()) if nan_policy == "drop" else 0
    if n_dropped:
        logger.warning(
            "load_vim1: dropped %d of %d voxels of subject %d (ROI %s) with NaN responses",
            n_dropped,
            valid.size,
            subject,
            [ROI_NAMES[c] for c in codes],
        )
    if kept.size == 0:
        raise ValueError(
            f"every selected voxel of subject {subject} has a NaN response; use "
            "nan_policy='mask' to keep them."
        )
    for name, images, n in (("train", stim_train, n_train), ("val", stim_val, n_val)):
        if images.shape[0] != n:
            raise ValueError(
                f"{data_dir}: {images.shape[0]} {name} images but {n} {name} responses per "
                "voxel; the stimulus and response files do not belong together."
            )
    return Vim1Data(
        stim_train=stim_train,
        stim_val=stim_val,
        resp_train=np.concatenate(train_blocks, axis=1),
        resp_val=np.concatenate(val_blocks, axis=1),
        roi_codes=roi_codes[kept],
        voxel_index=voxel_index[kept],
        columns=kept,
        roi_names=tuple(ROI_NAMES[c] for c in codes),
        subject=subject,
        n_dropped_nan=n_dropped,
        valid_mask=valid if nan_policy == "mask" else None,
    )


def _data_file(data_dir: str | os.PathLike, name: str) -> Path:
    directory = Path(data_dir)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"vim-1 data directory {directory} does not exist; download vim-1 from CRCNS "
            "(crcns.org, data set vim-1) and pass the directory holding its .mat files."
        )
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; the vim-1 data directory must hold {name} as distributed by "
            "CRCNS (vim-1)."
        )
    return path


def _open_hdf5(path: Path) -> h5py.File:
    return open_hdf5(
        path,
        "MATLAB v7.3 (HDF5) file",
        "expected the CRCNS vim-1 file as distributed; it may be truncated or corrupt: "
        "download it again.",
    )


def _read_vector(path: Path, dataset: h5py.Dataset, name: str) -> np.ndarray:
    try:
        return np.asarray(dataset[0, :])
    except OSError as error:
        raise ValueError(f"{path}: cannot read variable {name!r} ({error}).") from None


def _check_columns(columns: np.ndarray, n_voxels: int) -> np.ndarray:
    values = np.asarray(columns)
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise ValueError(f"columns must be a 1-D array of integer voxel columns, got {values!r}.")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= n_voxels):
        raise ValueError(f"columns must lie in [0, {n_voxels}).")
    if np.any(np.diff(values) <= 0):
        raise ValueError("columns must be sorted and unique (h5py reads increasing indices).")
    return values


def _column_groups(columns: np.ndarray, span: int) -> list[np.ndarray]:
    """Split sorted columns into consecutive groups that each cover fewer than ``span`` file
    columns, so one read never touches more than ``span`` columns of chunks."""
    groups = []
    start = 0
    while start < columns.size:
        stop = int(np.searchsorted(columns, columns[start] + span, side="left"))
        groups.append(columns[start:stop])
        start = stop
    return groups


def _read_columns(path: Path, dataset: h5py.Dataset, columns: np.ndarray) -> np.ndarray:
    """dataset[:, columns] as float32, read in groups spanning at most READ_SPAN columns.

    A dense group is read as one slice; a sparse one with an h5py point selection. Bounding
    the span bounds what HDF5 decompresses and buffers per read.
    """
    out = np.empty((dataset.shape[0], columns.size), dtype=np.float32)
    position = 0
    try:
        for group in _column_groups(columns, READ_SPAN):
            first, last = int(group[0]), int(group[-1])
            if last - first + 1 <= 2 * group.size:
                block = dataset[:, first : last + 1][:, group - first]
            else:
                block = dataset[:, group]
            out[:, position : position + group.size] = block
            position += group.size
    except OSError as error:
        raise ValueError(
            f"{path}: cannot read variable {dataset.name.lstrip('/')!r} ({error}); the file "
            "may be truncated or corrupt: download it again."
        ) from None
    return out


def _load_stimuli(data_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    path = _data_file(data_dir, fmt.STIMULI_FILE)
    names = [fmt.STIM_TRAIN_VAR, fmt.STIM_VAL_VAR]
    try:
        contents = scipy.io.loadmat(path, variable_names=names)
    except NotImplementedError:
        raise ValueError(
            f"{path} is a MATLAB v7.3 file; expected the v5 Stimuli.mat of CRCNS vim-1 "
            "(128 px images). For the 500 px images pass full_res=True."
        ) from None
    except (ValueError, OSError, TypeError, scipy.io.matlab.MatReadError) as error:
        raise ValueError(
            f"{path} is not a readable MATLAB v5 file ({error}); expected the CRCNS vim-1 "
            "Stimuli.mat: download it again."
        ) from None
    images = []
    for name in names:
        if name not in contents:
            found = sorted(k for k in contents if not k.startswith("__"))
            raise ValueError(f"{path} has no variable {name!r}; expected {names} (found {found}).")
        array = np.asarray(contents[name])
        if array.ndim != 3 or array.shape[1] != array.shape[2] or array.dtype.kind not in "fiu":
            raise ValueError(
                f"{path}: variable {name!r} has shape {array.shape} and dtype {array.dtype}; "
                "expected numeric images (n_images, 128, 128)."
            )
        images.append(array.astype(np.float32, copy=False))
    return images[0], images[1]


def _load_full_res(data_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """500 px images from the FullRes files: h5py (500, 500, N) -> (N, 500, 500)."""
    first = _data_file(data_dir, fmt.FULLRES_TRAIN_PATTERN.format(index=1))
    train_paths = []
    index = 1
    while (path := first.parent / fmt.FULLRES_TRAIN_PATTERN.format(index=index)).is_file():
        train_paths.append(path)
        index += 1
    train = [_read_full_res_file(p, fmt.STIM_TRAIN_VAR) for p in train_paths]
    val = _read_full_res_file(_data_file(data_dir, fmt.FULLRES_VAL_FILE), fmt.STIM_VAL_VAR)
    return np.concatenate(train), val


def _read_full_res_file(path: Path, name: str) -> np.ndarray:
    with _open_hdf5(path) as handle:
        if name not in handle or not isinstance(handle[name], h5py.Dataset):
            raise ValueError(
                f"{path} has no variable {name!r}; expected {name} (500 x 500 x N), found "
                f"{sorted(handle)}."
            )
        dataset = handle[name]
        if dataset.ndim != 3 or dataset.shape[0] != dataset.shape[1]:
            raise ValueError(
                f"{path}: variable {name!r} has h5py shape {dataset.shape}; expected "
                "(500, 500, n_images)."
            )
        try:
            stored = dataset[...]
        except OSError as error:
            raise ValueError(f"{path}: cannot read variable {name!r} ({error}).") from None
    return np.ascontiguousarray(stored.transpose(2, 1, 0), dtype=np.float32)
