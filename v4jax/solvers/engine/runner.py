"""The per-target runner: every solver's per-voxel phase goes through :func:`run_per_target`.

A solver first builds what depends on the design alone (decompositions, replicated on the voxel
mesh), then hands a *batch function* to the runner. The runner pads the targets so every device
gets whole batches, shards them over the ``"voxels"`` mesh, and runs the batch function under
:func:`jax.shard_map` (no cross-device communication) with ``lax.map`` over each device's
batches, so memory is bounded by the batch size whatever the voxel count. Padding voxels are
dropped from every output. Compiled programs are cached per (batch function, settings, mesh,
batch), so repeated fits (voxel blocks of a sweep) reuse them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax
from jax.sharding import PartitionSpec

from v4jax import _validation
from v4jax.solvers.engine.sharding import (
    VOXEL_AXIS,
    padded_voxel_count,
    shard_columns,
    trim_voxels,
)

DEFAULT_TARGET_BATCH = 2048

BatchFunction = Callable[..., tuple[jax.Array, ...]]


def run_per_target(
    batch_function: BatchFunction,
    shared: Any,
    Y: Any,
    *,
    mesh: Any,
    dtype: Any,
    out_ndims: tuple[int, ...],
    settings: tuple[Hashable, ...] = (),
    target_batch_size: int | None = DEFAULT_TARGET_BATCH,
) -> tuple[jax.Array, ...]:
    """Run ``batch_function`` over all targets, sharded over voxels and batched per device.

    Args:
      batch_function: a module-level function ``f(shared, Y_batch, *settings)`` returning a tuple
        of arrays whose last axis is the batch's targets (it is traced once per shape).
      shared: a pytree of replicated arrays every batch reads (decompositions, grids).
      Y: (n_samples, n_targets) responses (numpy, JAX, or an h5py dataset: each process reads
        only its own devices' columns).
      mesh: the one-axis ``"voxels"`` mesh. dtype: compute dtype of ``Y`` on the devices.
      out_ndims: the number of dimensions of each output (voxel axis last).
      settings: hashable static arguments of ``batch_function`` (fold indices, score name...).
      target_batch_size: targets per device batch (None: all of a device's targets at once).

    Returns:
      ``batch_function``'s outputs for every target, (..., n_targets), sharded over voxels.
    """
    target_batch_size = _validation.check_positive_int(
        target_batch_size, "target_batch_size", allow_none=True
    )
    n_targets = Y.shape[1]
    batch = n_targets if target_batch_size is None else target_batch_size
    n_padded, batch = padded_voxel_count(n_targets, mesh.size, batch)
    program = _program(batch_function, settings, mesh, batch, out_ndims)
    outputs = program(shared, shard_columns(Y, mesh, n_padded, dtype))
    return tuple(trim_voxels(output, n_targets) for output in outputs)


@functools.lru_cache(maxsize=64)
def _program(
    batch_function: BatchFunction,
    settings: tuple[Hashable, ...],
    mesh: Any,
    batch: int,
    out_ndims: tuple[int, ...],
):
    """The jitted, sharded program: each device maps ``batch_function`` over its batches."""

    def on_device(shared, Y_local):
        n_samples, n_local = Y_local.shape
        batches = Y_local.reshape(n_samples, n_local // batch, batch).transpose(1, 0, 2)
        outputs = jax.lax.map(lambda Y: batch_function(shared, Y, *settings), batches)
        # (n_batches, ..., batch) -> (..., n_local)
        return tuple(
            jax.numpy.moveaxis(output, 0, -2).reshape(*output.shape[1:-1], n_local)
            for output in outputs
        )

    out_specs = tuple(PartitionSpec(*([None] * (ndim - 1)), VOXEL_AXIS) for ndim in out_ndims)
    return jax.jit(
        jax.shard_map(
            on_device,
            mesh=mesh,
            in_specs=(PartitionSpec(), PartitionSpec(None, VOXEL_AXIS)),
            out_specs=out_specs,
        )
    )
