"""v4jax's XLA settings: applied by ``v4jax.configure_xla()`` (the CLI calls it), not at import.

With XLA's CPU concurrency-optimised scheduler on (jaxlib 0.10's default), the per-voxel phase of
``pls1_cv`` deadlocked on 2-core machines for some voxel counts: ``pls1_cv`` of a 300 x 2000
design with 32 targets on the primal path never returned. The regression test runs exactly that
in a fresh process, after the CLI's entry point, with a time limit.
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
    from v4jax.pipeline.cli import main

    main(["report", "--out", "no-such-results-folder"])  # the CLI applies configure_xla first

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


def test_importing_v4jax_leaves_the_environment_alone():
    code = (
        "import os; before = os.environ.get('XLA_FLAGS'); import v4jax; "
        "assert os.environ.get('XLA_FLAGS') == before, os.environ.get('XLA_FLAGS'); print('same')"
    )
    for flags in (None, "--xla_force_host_platform_device_count=2"):
        completed = run_python(code, flags, timeout=120)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.split() == ["same"]


def test_a_flag_the_user_set_is_kept_and_other_flags_survive():
    code = "import os, v4jax; v4jax.configure_xla(); print(os.environ['XLA_FLAGS'])"
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
        v4jax.configure_xla()

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


def test_a_flag_this_jaxlib_does_not_know_is_not_added(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setattr(_runtime, "_backends_started", lambda: False)
    monkeypatch.setattr(_runtime, "jaxlib_knows", lambda flag: flag == CPU_SCHEDULER_FLAG)
    assert _runtime.configure_xla() == {CPU_SCHEDULER_FLAG: "false"}
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        f"{CPU_SCHEDULER_FLAG}=false",
    ]
    monkeypatch.setattr(_runtime, "jaxlib_knows", lambda flag: True)
    assert _runtime.configure_xla() == {YNN_FUSION_FLAG: ""}
    assert os.environ["XLA_FLAGS"].split()[-1] == f"{YNN_FUSION_FLAG}="


def test_jaxlib_knows_its_own_flags_and_not_an_invented_one():
    assert _runtime.jaxlib_knows(CPU_SCHEDULER_FLAG)
    assert _runtime.jaxlib_knows("--xla_force_host_platform_device_count")
    assert not _runtime.jaxlib_knows("--xla_cpu_v4jax_flag_that_no_xla_has")


def test_configuring_after_jax_started_warns_and_changes_nothing():
    code = textwrap.dedent(
        """
        import warnings
        import jax.numpy as jnp
        jnp.ones(3).block_until_ready()
        import os, v4jax
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            added = v4jax.configure_xla()
        print([str(w.message)[:30] for w in caught if w.category is RuntimeWarning])
        print(added, "XLA_FLAGS" in os.environ)
        """
    )
    completed = run_python(code, None, timeout=120)
    assert "JAX is already running" in completed.stdout, completed.stderr
    assert completed.stdout.splitlines()[-1] == "{} False"
