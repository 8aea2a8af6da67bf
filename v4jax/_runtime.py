"""XLA settings measured to help v4jax, applied only when asked: :func:`configure_xla`.

Importing v4jax changes nothing process-wide. The ``v4jax`` command, the benchmarks and the
study scripts call :func:`configure_xla` before any JAX computation; a library user opts in the
same way. Each setting goes into ``XLA_FLAGS`` only when the user has not set that flag and the
installed jaxlib knows it (XLA stops at start-up on a flag it does not know, so a future jaxlib
that drops one must not be handed it):

* ``--xla_cpu_enable_concurrency_optimized_scheduler=false``. XLA's CPU "concurrency-optimised"
  scheduler (jaxlib 0.10) can deadlock programs whose loops hold independent work, such as the
  per-voxel phase of ``pls1_cv``: every thread waits and the call never returns (seen for some
  voxel counts on 2-core machines). The setting only changes how XLA orders work on the CPU,
  never the results.
* ``--xla_cpu_experimental_ynn_fusion_type=`` (an empty list: no YNNPACK fusions). XLA's
  default CPU route through YNNPACK ran v4jax's products and convolutions slower than XLA's own
  (Eigen) kernels on the project's 2-core machine (jaxlib 0.10.2): float32
  (5950 x 1400) @ (1400 x 1550) 163 -> 196 GFLOP/s, the ridge per-voxel phase 1.09 -> 0.90 s,
  AlexNet to conv3 for 64 images 0.43 -> 0.30 s. Results change only at rounding level.
"""

from __future__ import annotations

import functools
import mmap
import os
import sys
import warnings
from importlib import util
from pathlib import Path

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
#: Flag -> (value, why v4jax sets it).
SETTINGS = {
    CPU_SCHEDULER_FLAG: ("false", "keeps XLA's CPU scheduler from deadlocking some solvers"),
    YNN_FUSION_FLAG: ("", "keeps CPU products and convolutions on XLA's faster Eigen kernels"),
}


def configure_xla() -> dict[str, str]:
    """Add v4jax's measured XLA settings (module docstring) to ``XLA_FLAGS``; call it first.

    Keeps every flag the user set (their value wins) and adds a setting only where the installed
    jaxlib knows its flag. Call it before the first JAX computation of the process: XLA reads
    ``XLA_FLAGS`` once, when its backends start. Warns (and changes nothing) when they have
    already started.

    Returns:
      The flags added, flag -> value (empty when there was nothing to add).

    Example:
      >>> import v4jax
      >>> v4jax.configure_xla()  # before any JAX work
      {'--xla_cpu_enable_concurrency_optimized_scheduler': 'false', ...}
    """
    flags = os.environ.get("XLA_FLAGS", "")
    missing = {
        flag: value
        for flag, (value, _) in SETTINGS.items()
        if flag not in flags and jaxlib_knows(flag)
    }
    if not missing:
        return {}
    added = [f"{flag}={value}" for flag, value in missing.items()]
    if "jax" in sys.modules and _backends_started():
        purposes = "; ".join(
            f"{flag}={value} {SETTINGS[flag][1]}" for flag, value in missing.items()
        )
        warnings.warn(
            "JAX is already running, so v4jax's XLA settings cannot take effect: "
            f"{purposes}. Call v4jax.configure_xla() before any JAX computation, or start "
            f"Python with XLA_FLAGS='{' '.join(added)}'.",
            RuntimeWarning,
            stacklevel=2,
        )
        return {}
    os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return missing


@functools.cache
def jaxlib_knows(flag: str) -> bool:
    """Whether the installed jaxlib's compiled libraries contain ``flag``'s name.

    XLA registers each flag by name in its shared library, so a flag absent from every library
    of the jaxlib package is one that XLA would reject. False when jaxlib is not installed.
    """
    spec = util.find_spec("jaxlib")
    if spec is None or spec.origin is None:
        return False
    name = flag.lstrip("-").encode()
    for library in sorted(Path(spec.origin).parent.rglob("*.so")):
        with library.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                continue
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as contents:
                if contents.find(name) >= 0:
                    return True
    return False


def _backends_started() -> bool:
    """Whether JAX's backends are running (False where this JAX cannot tell)."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else False
