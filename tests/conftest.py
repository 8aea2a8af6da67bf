"""Test configuration: 4 simulated CPU devices, float64 and v4jax's XLA settings, set before JAX
starts."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

import v4jax

v4jax.configure_xla()  # as the CLI does: the settings the solvers were measured with

jax.config.update("jax_enable_x64", True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """`../shared/golden/`, or skip with the reason when the folder is absent."""
    if not GOLDEN.is_dir():
        pytest.skip(f"golden reference folder {GOLDEN} is absent (it ships beside the repo)")
    return GOLDEN
