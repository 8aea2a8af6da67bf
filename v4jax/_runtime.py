"""XLA settings v4jax needs, applied when the package is imported (before JAX starts).

XLA's CPU "concurrency-optimised" scheduler (jaxlib 0.10) can deadlock programs whose loops hold
independent work, such as the per-voxel phase of ``pls1_cv``: every thread waits and the call
never returns (seen for some voxel counts on 2-core machines, in both the primal and kernel
forms). v4jax turns that scheduler off through ``XLA_FLAGS`` unless the user already set the
flag. The setting only changes how XLA orders work on the CPU, never the results.
"""

from __future__ import annotations

import os
import sys
import warnings

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def configure_xla_flags() -> None:
    """Add ``CPU_SCHEDULER_FLAG=false`` to ``XLA_FLAGS`` unless the flag is already set there.

    Warns when JAX's backends are already running (the flag then cannot take effect): import
    v4jax before running any JAX computation, or set the flag in the environment yourself.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_SCHEDULER_FLAG in flags:
        return
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}=false".strip()
    if "jax" in sys.modules and _backends_started():
        warnings.warn(
            "JAX was already running when v4jax was imported, so v4jax could not turn off XLA's "
            "CPU concurrency-optimised scheduler, which can deadlock some of its solvers on the "
            f"CPU. Import v4jax before any JAX computation, or start Python with "
            f"XLA_FLAGS='{CPU_SCHEDULER_FLAG}=false'.",
            RuntimeWarning,
            stacklevel=3,
        )


def _backends_started() -> bool:
    """Whether JAX's backends are running (False where this JAX cannot tell)."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else False
