"""Voxels sharded across devices and hosts through JAX's own sharding machinery.

The design matrix and every decomposition are replicated; responses and all per-voxel outputs
are split over the voxel (last) axis of a one-axis mesh named ``"voxels"``. The per-voxel phase
of the solvers runs under :func:`jax.shard_map`, so each device works on its own voxels with no
cross-device communication, and its outputs stay sharded until the user gathers them.

Multi-host: call :func:`jax.distributed.initialize` first and pass ``devices=jax.devices()``;
:func:`shard_columns` then asks each process only for the voxel columns of its own devices
(pass an h5py dataset or any column-sliceable array to read just that slice from disk).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

VOXEL_AXIS = "voxels"


def voxel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"voxels"`` over ``devices`` (None: all local devices)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices is empty; pass None for all local devices or a device list.")
    if len({device.id for device in devices}) != len(devices):
        raise ValueError("devices lists a device more than once.")
    return Mesh(np.asarray(devices), (VOXEL_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def voxel_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Split the last axis (voxels) of an ``ndim``-dimensional array over the mesh."""
    return NamedSharding(mesh, PartitionSpec(*([None] * (ndim - 1)), VOXEL_AXIS))


def replicate(array: Any, mesh: Mesh, dtype: Any) -> jax.Array:
    """Place a host (or JAX) array on every device of the mesh, in ``dtype``."""
    host = np.asarray(array, dtype=dtype) if not isinstance(array, jax.Array) else array
    if isinstance(host, jax.Array):
        return jax.device_put(host.astype(dtype), replicated(mesh))
    return jax.make_array_from_callback(host.shape, replicated(mesh), lambda index: host[index])


def padded_voxel_count(n_voxels: int, n_devices: int, batch: int) -> tuple[int, int]:
    """(padded count, per-device batch) so every device gets whole batches of voxels.

    The per-device batch is shrunk to the per-device share when that is smaller, so padding
    never exceeds one batch per device.
    """
    per_device = math.ceil(n_voxels / n_devices)
    batch = min(batch, per_device)
    n_batches = math.ceil(per_device / batch)
    batch = math.ceil(per_device / n_batches)
    return n_devices * n_batches * batch, batch


def shard_columns(Y: Any, mesh: Mesh, n_padded: int, dtype: Any) -> jax.Array:
    """(n_samples, n_padded) array sharded over voxels; columns past ``Y``'s are zero.

    Each process reads only the columns of its own devices from ``Y`` (numpy, JAX, or an
    h5py dataset: anything sliceable as ``Y[:, start:stop]``).
    """
    if isinstance(Y, jax.Array) and Y.shape[1] == n_padded:
        return jax.device_put(Y.astype(dtype), voxel_sharding(mesh, 2))
    n_samples, n_voxels = Y.shape

    def columns(index: tuple[slice, slice]) -> np.ndarray:
        start, stop, _ = index[1].indices(n_padded)
        block = np.zeros((n_samples, stop - start), dtype=dtype)
        available = max(0, min(stop, n_voxels) - start)
        if available:
            block[:, :available] = np.asarray(Y[:, start : start + available], dtype=dtype)
        return block

    return jax.make_array_from_callback((n_samples, n_padded), voxel_sharding(mesh, 2), columns)


def trim_voxels(array: jax.Array, n_voxels: int) -> jax.Array:
    """Drop padding voxels from the last axis (a no-op, keeping the sharding, without padding)."""
    if array.shape[-1] == n_voxels:
        return array
    return array[..., :n_voxels]
