"""The XLA setting v4jax applies at import: XLA's CPU concurrency-optimised scheduler is off.

With that scheduler on (jaxlib 0.10's default), the per-voxel phase of ``pls1_cv`` deadlocked
on 2-core machines for some voxel counts: ``pls1_cv`` of a 300 x 2000 design with 32 targets
on the primal path never returned. The regression test runs exactly that in a fresh process
with the environment a user has (no XLA_FLAGS) and a time limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from v4jax import _runtime
from v4jax._runtime import CPU_SCHEDULER_FLAG, YNN_FUSION_FLAG

PROGRAM = textwrap.dedent(
    """
    import os
    import numpy as np
    from v4jax import pls1_cv

    rng = np.random.default_rng(0)
    X = np.maximum(rng.standard_normal((300, 2000), dtype=np.float32), 0)
    Y = X[:, :50] @ rng.standard_normal((50, 32)).astype(np.float32)
    Y += rng.standard_normal((300, 32)).astype(np.float32)
    result = pls1_cv(X, Y, tuple(range(1, 26)), cv=5, solver="primal")
    best = np.asarray(result.best_n_components)
    assert best.shape == (32,) and np.all((best >= 1) & (best <= 25)), best
    print(os.environ["XLA_FLAGS"])
    """
)


def run_python(code: str, xla_flags: str | None, timeout: float) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    if xla_flags is not None:
        environment["XLA_FLAGS"] = xla_flags
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def test_pls1_cv_that_deadlocked_with_the_default_scheduler_returns():
    completed = run_python(PROGRAM, None, timeout=180)
    assert completed.returncode == 0, completed.stderr
    assert f"{CPU_SCHEDULER_FLAG}=false" in completed.stdout


def test_a_flag_the_user_set_is_kept_and_other_flags_survive():
    code = "import os, v4jax; print(os.environ['XLA_FLAGS'])"
    own = run_python(code, f"{CPU_SCHEDULER_FLAG}=true {YNN_FUSION_FLAG}=-dot", timeout=120)
    assert own.stdout.split() == [f"{CPU_SCHEDULER_FLAG}=true", f"{YNN_FUSION_FLAG}=-dot"]
    other = run_python(code, "--xla_force_host_platform_device_count=2", timeout=120)
    assert other.stdout.split() == [
        "--xla_force_host_platform_device_count=2",
        f"{CPU_SCHEDULER_FLAG}=false",
        f"{YNN_FUSION_FLAG}=",
    ]


def test_cpu_products_and_convolutions_compile_without_ynnpack_fusions():
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        import v4jax

        def program(a, kernel):
            image = jax.lax.conv_general_dilated(
                a[None, :, :, None], kernel, (1, 1), "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            return jnp.exp(a @ a.T).sum() + image.sum()

        a = jax.random.normal(jax.random.key(0), (64, 64))
        kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 8))
        print(jax.jit(program).lower(a, kernel).compile().as_text().count("__ynn_fusion"))
        """
    )
    completed = run_python(code, None, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["0"]
    completed = run_python(code, f"{YNN_FUSION_FLAG}=-individual_dot", timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert int(completed.stdout.split()[0]) > 0, "the user's setting keeps YNNPACK's conv"


def test_jaxlib_older_than_the_measured_release_keeps_its_default(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setattr(_runtime, "_backends_started", lambda: False)
    monkeypatch.setattr(_runtime, "_jaxlib_version", lambda: (0, 9))
    _runtime.configure_xla_flags()
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        f"{CPU_SCHEDULER_FLAG}=false",
    ]
    monkeypatch.setattr(_runtime, "_jaxlib_version", lambda: _runtime.YNN_FLAG_SINCE)
    _runtime.configure_xla_flags()
    assert os.environ["XLA_FLAGS"].split()[-1] == f"{YNN_FUSION_FLAG}="


def test_importing_v4jax_after_jax_started_warns_that_the_flag_cannot_apply():
    code = textwrap.dedent(
        """
        import warnings
        import jax.numpy as jnp
        jnp.ones(3).block_until_ready()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import v4jax
        print([str(w.message)[:40] for w in caught if w.category is RuntimeWarning])
        """
    )
    completed = run_python(code, None, timeout=120)
    assert "JAX was already running when v4jax" in completed.stdout, completed.stderr
