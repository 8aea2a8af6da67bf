"""XLA settings v4jax applies when the package is imported (before JAX starts).

Each goes into ``XLA_FLAGS`` unless the user already set that flag:

* ``--xla_cpu_enable_concurrency_optimized_scheduler=false``. XLA's CPU "concurrency-optimised"
  scheduler (jaxlib 0.10) can deadlock programs whose loops hold independent work, such as the
  per-voxel phase of ``pls1_cv``: every thread waits and the call never returns (seen for some
  voxel counts on 2-core machines, in both the primal and kernel forms). The setting only
  changes how XLA orders work on the CPU, never the results.
* ``--xla_cpu_experimental_ynn_fusion_type=`` (an empty list: no YNNPACK fusions), from jaxlib
  0.10 on. XLA's default CPU route through YNNPACK ran v4jax's products and convolutions slower
  than XLA's own (Eigen) kernels on the project's 2-core machine (jaxlib 0.10.2): float32
  (5950 x 1400) @ (1400 x 1550) 163 -> 196 GFLOP/s, the ridge per-voxel phase 1.09 -> 0.90 s,
  AlexNet to conv3 for 64 images 0.43 -> 0.30 s, ``pls1_cv`` 6.5 -> 6.0 s. Results change only
  at rounding level (other kernels sum in another order). Older jaxlib, which may not know the
  flag (XLA stops on unknown flags), is left at its default.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from importlib import metadata

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
#: The first jaxlib release measured with ``YNN_FUSION_FLAG`` (older ones may not know it).
YNN_FLAG_SINCE = (0, 10)
_PURPOSES = {
    CPU_SCHEDULER_FLAG: "keeps XLA's CPU scheduler from deadlocking some of v4jax's solvers",
    YNN_FUSION_FLAG: "keeps CPU products and convolutions on XLA's faster Eigen kernels",
}


def configure_xla_flags() -> None:
    """Add v4jax's settings (see the module docstring) to ``XLA_FLAGS``, keeping the user's own.

    Warns when JAX's backends are already running (the flags then cannot take effect): import
    v4jax before running any JAX computation, or set the flags in the environment yourself.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    settings = {CPU_SCHEDULER_FLAG: "false"}
    if _jaxlib_version() >= YNN_FLAG_SINCE:
        settings[YNN_FUSION_FLAG] = ""
    missing = {flag: value for flag, value in settings.items() if flag not in flags}
    if not missing:
        return
    added = [f"{flag}={value}" for flag, value in missing.items()]
    os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    if "jax" in sys.modules and _backends_started():
        purposes = "; ".join(f"{flag}={value} {_PURPOSES[flag]}" for flag, value in missing.items())
        warnings.warn(
            "JAX was already running when v4jax was imported, so these XLA settings cannot take "
            f"effect: {purposes}. Import v4jax before any JAX computation, or start Python with "
            f"XLA_FLAGS='{' '.join(added)}'.",
            RuntimeWarning,
            stacklevel=3,
        )


def _jaxlib_version() -> tuple[int, int]:
    """(major, minor) of the installed jaxlib, read without importing it; (0, 0) if unknown."""
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return (0, 0)
    numbers = re.match(r"(\d+)\.(\d+)", version)
    return (int(numbers[1]), int(numbers[2])) if numbers else (0, 0)


def _backends_started() -> bool:
    """Whether JAX's backends are running (False where this JAX cannot tell)."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else False
