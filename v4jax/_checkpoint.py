"""The one resume mechanism of every long job: feature extraction, study fits and sweeps.

A job writing ``target`` works in ``target + ".partial"`` (:func:`partial_path`) and records
there, once, its **key**: a JSON object of everything its results depend on (input hashes,
settings). Running the job again:

* finds no partial: the partial is created whole, key included, in a temporary file renamed into
  place (never a partial without its key);
* finds a partial with the same key: the job resumes, skipping the units (batches, blocks, fits)
  the partial records as finished;
* finds a partial with another key: a ValueError names the entries that changed (one level into
  nested objects, e.g. ``settings.alphas``) and says what to do, so a mistyped argument never
  throws finished work away.

When every unit is done, :func:`finish` renames the partial onto ``target``.

Two forms of partial share that protocol:

* :func:`open_partial_file`: one HDF5 file, its layout created whole with the key (extraction
  and sweeps; units are rows or flags written in place, see :func:`preallocated` and
  :func:`mark_done`);
* :func:`open_partial_directory`: a directory with ``run.json`` (the key) and one file per
  finished unit, each written atomically (study fits).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from v4jax._io import atomic_path

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
KEY_ATTRIBUTE = "checkpoint_key"
RUN_FILE = "run.json"


def partial_path(target: str | os.PathLike) -> Path:
    """Where a job writing ``target`` keeps its unfinished work: ``target + ".partial"``."""
    target = Path(target)
    return target.with_name(target.name + PARTIAL_SUFFIX)


def as_key(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as plain JSON values (tuples to lists, numpy scalars to numbers)."""
    return json.loads(json.dumps(value, default=_json_default))


def changed_entries(stored: Any, key: dict[str, Any]) -> list[str]:
    """Names of the key entries that differ (one level into nested objects: ``settings.cv``)."""
    if not isinstance(stored, dict):
        return ["the checkpoint records no readable key"]
    changed = []
    for name in sorted(set(stored) | set(key)):
        old, new = stored.get(name), key.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [
                f"{name}.{inner}"
                for inner in sorted(set(old) | set(new))
                if old.get(inner) != new.get(inner)
            ]
        elif old != new:
            changed.append(name)
    return changed


def refusal(partial: Path, changed: list[str], finished: str = "") -> ValueError:
    """The one error of a partial left by a run with other inputs or settings."""
    held = f"; it holds {finished}" if finished else ""
    return ValueError(
        f"cannot resume {partial}: it was started with different inputs or settings (changed: "
        f"{', '.join(changed)}){held}. Rerun with the same arguments to resume, or delete "
        f"{partial} to start over."
    )


@contextlib.contextmanager
def open_partial_file(
    target: str | os.PathLike,
    key: dict[str, Any],
    create: Callable[[h5py.File], None],
    what: str = "job",
) -> Iterator[h5py.File]:
    """The HDF5 partial of ``target``, open for writing: resumed after checking its key, or
    created whole (``create(handle)`` lays it out; the key is stored as an attribute).

    Raises:
      ValueError: the partial holds another key (naming what changed) or cannot be opened.
    """
    partial = partial_path(target)
    key = as_key(key)
    if not partial.exists():
        with atomic_path(partial) as temporary, h5py.File(temporary, "w") as handle:
            handle.attrs[KEY_ATTRIBUTE] = json.dumps(key, sort_keys=True)
            create(handle)
    try:
        handle = h5py.File(partial, "r+")
    except OSError as error:
        raise ValueError(
            f"the unfinished {what} {partial} cannot be opened ({error}); delete it to start over."
        ) from None
    with handle:
        changed = changed_entries(_loads(handle.attrs.get(KEY_ATTRIBUTE)), key)
        if changed:
            raise refusal(partial, changed)
        yield handle


def open_partial_directory(
    target: str | os.PathLike, key: dict[str, Any], finished_pattern: str = "*.h5"
) -> Path:
    """The partial directory of ``target`` with ``run.json`` holding ``key``, ready for units.

    An existing directory with the same key is resumed (its ``finished_pattern`` files are the
    finished units). One with another key is refused if it holds finished units (ValueError
    naming what changed) and replaced if it holds none (nothing would be lost).

    Raises:
      ValueError: the directory holds finished units of another key, its ``run.json`` cannot
        be read, or the path is not a directory.
    """
    directory = partial_path(target)
    key = as_key(key)
    if directory.exists():
        if not directory.is_dir():
            raise ValueError(
                f"{directory} exists but is not a checkpoint directory; move it away (the job "
                "keeps its finished units there)."
            )
        try:
            stored = json.loads((directory / RUN_FILE).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(
                f"the checkpoint {directory} of an unfinished job cannot be read ({error}); "
                "delete it to start over."
            ) from None
        changed = changed_entries(stored, key)
        finished = sorted(path.name for path in directory.glob(finished_pattern))
        if changed and finished:
            raise refusal(directory, changed, f"{len(finished)} finished unit(s)")
        if not changed:
            logger.info("resuming from %s: %d finished unit(s)", directory, len(finished))
            return directory
        logger.info("replacing %s: no finished units, other settings", directory)
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    (temporary / RUN_FILE).write_text(json.dumps(key, indent=1, sort_keys=True))
    os.replace(temporary, directory)
    return directory


def finish(target: str | os.PathLike) -> Path:
    """Rename the finished partial onto ``target`` (a directory partial is removed instead:
    its units were assembled into ``target`` by the job)."""
    target, partial = Path(target), partial_path(target)
    if partial.is_dir():
        shutil.rmtree(partial)
    else:
        os.replace(partial, target)
    return target


def preallocated(
    group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, fill: Any
) -> h5py.Dataset:
    """A contiguous dataset allocated and filled at creation.

    Later writes only overwrite raw data at fixed offsets: no HDF5 metadata changes after the
    partial is created, so an interrupted write cannot damage the rest of the file.
    """
    properties = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    properties.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    properties.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    return group.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill, dcpl=properties)


def unit_flags(group: h5py.Group, name: str, n_units: int) -> h5py.Dataset:
    """(n_units,) uint8 flags of finished units, all 0 (see :func:`mark_done`)."""
    return preallocated(group, name, (n_units,), np.uint8, 0)


def pending_units(flags: h5py.Dataset) -> np.ndarray:
    """Indices of the units not yet finished."""
    return np.flatnonzero(flags[...] == 0)


def mark_done(flags: h5py.Dataset, unit: int) -> None:
    """Record ``unit`` as finished, after everything written for it reaches the file."""
    flags.file.flush()
    flags[unit] = 1
    flags.file.flush()


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
