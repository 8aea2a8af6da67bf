"""Voxel sharding: 4 simulated CPU devices (conftest) and 2 processes on localhost."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from v4jax import pls1_cv, ridge_cv
from v4jax.solvers.engine.runner import _program
from v4jax.solvers.engine.sharding import padded_voxel_count
from v4jax.solvers.pls import (
    _PLS1_OUTPUT_NDIMS,
    _pls1_batch,
    _PLS1Settings,
    _PLS1Shared,
    pls1_cv_targets,
    prepare_pls1,
)
from v4jax.solvers.ridge import _fold_operators, _one_decomposition_batch, prepare_ridge

ALPHAS = np.logspace(-2, 4, 7)
COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")


def make_problem(n_samples, n_features, n_targets, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) + 1.0
    Y = X @ rng.standard_normal((n_features, n_targets)) + rng.standard_normal(
        (n_samples, n_targets)
    ) * rng.uniform(0.5, 5, n_targets)
    return X, Y


def test_four_simulated_devices_are_available():
    assert len(jax.devices()) == 4


@pytest.mark.parametrize("shape", [(50, 120), (80, 20)], ids=["dual", "primal"])
def test_sharded_and_single_device_results_are_identical(shape):
    X, Y = make_problem(*shape, n_targets=16)
    single = ridge_cv(X, Y, ALPHAS, cv=4, devices=jax.devices()[:1], target_batch_size=3)
    sharded = ridge_cv(X, Y, ALPHAS, cv=4, devices=jax.devices(), target_batch_size=3)
    for name in ("best_alphas", "cv_scores", "coef", "intercept"):
        np.testing.assert_allclose(
            np.asarray(getattr(sharded, name)), np.asarray(getattr(single, name)),
            rtol=1e-12, atol=1e-12,
        )  # fmt: skip
    for name in ("coef", "cv_scores", "best_alphas"):
        array = getattr(sharded, name)
        assert isinstance(array.sharding, NamedSharding)
        assert array.sharding.spec[-1] == "voxels"
        assert len(array.addressable_shards) == 4
        assert {shard.data.shape[-1] for shard in array.addressable_shards} == {4}


def test_uneven_voxel_counts_are_padded_and_trimmed():
    X, Y = make_problem(40, 90, n_targets=7, seed=1)
    single = ridge_cv(X, Y, ALPHAS, cv=4, devices=jax.devices()[:1])
    sharded = ridge_cv(X, Y, ALPHAS, cv=4)
    assert sharded.coef.shape == (90, 7)
    np.testing.assert_allclose(np.asarray(sharded.coef), np.asarray(single.coef), rtol=1e-12)
    assert padded_voxel_count(7, 4, 2048) == (8, 2)
    assert padded_voxel_count(10, 4, 2) == (16, 2)


@pytest.mark.parametrize("cv", [4, "loo"], ids=["kfold", "loo"])
def test_per_voxel_phase_has_no_cross_device_communication(cv):
    X, Y = make_problem(40, 90, n_targets=16, seed=2)
    result = ridge_cv(X, Y, ALPHAS, cv=cv, devices=jax.devices(), target_batch_size=2)
    assert result.coef.shape == (90, 16)
    d = prepare_ridge(X, cv, devices=jax.devices())
    alphas = jax.device_put(ALPHAS, NamedSharding(d.mesh, PartitionSpec()))
    shared = (d.basis, alphas, _fold_operators(d, alphas))
    settings = (d.folds, True, "r2", d.solver)
    program = _program(_one_decomposition_batch, settings, d.mesh, 2, (2, 1, 2, 1))
    Y_sharded = jax.device_put(Y, NamedSharding(d.mesh, PartitionSpec(None, "voxels")))
    hlo = program.lower(shared, Y_sharded).compile().as_text()
    assert "voxels" in str(Y_sharded.sharding.spec)
    for collective in COLLECTIVES:
        assert collective not in hlo, f"per-voxel phase contains {collective}"
    total = jax.jit(lambda values: values.sum(axis=1))
    assert "all-reduce" in total.lower(Y_sharded).compile().as_text()  # the check can fail


def test_float32_kfold_fit_on_four_devices_returns():
    """Regression: the K-fold inverses (batched LAPACK LU) on every simulated CPU device at once
    deadlocked XLA's shared thread pool from about 150 samples; they now run on one device."""
    code = textwrap.dedent(
        """
        import numpy as np
        import v4jax
        v4jax.configure_xla()
        rng = np.random.default_rng(0)
        X = np.maximum(rng.standard_normal((257, 600), dtype=np.float32), 0)
        Y = rng.standard_normal((257, 9)).astype(np.float32)
        for solver in ("dual", "primal"):
            result = v4jax.ridge_cv(X[:, :200] if solver == "primal" else X, Y,
                                    np.logspace(-2, 10, 25), cv=5, solver=solver)
            print(solver, np.asarray(result.best_alphas).shape)
        """
    )
    environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    completed = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["dual", "(9,)", "primal", "(9,)"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_fit_a_voxel_sharded_problem_equal_to_one_process(tmp_path):
    worker = Path(__file__).parent / "helpers" / "multiprocess_ridge.py"
    port = str(_free_port())
    environment = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS",)}
    environment["JAX_PLATFORMS"] = "cpu"
    processes = [
        subprocess.Popen(
            [sys.executable, str(worker), port, str(rank), str(tmp_path / f"part{rank}.npz")],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [process.communicate(timeout=240)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 150))
    Y = X @ rng.standard_normal((150, 8)) + rng.standard_normal((60, 8))
    reference = ridge_cv(X, Y, ALPHAS, cv=3, devices=jax.devices()[:1])
    parts = [np.load(tmp_path / f"part{rank}.npz") for rank in (0, 1)]
    assert sorted(int(part["coef_start"]) for part in parts) == [0, 4]
    for name in ("coef", "cv_scores", "best_alphas", "intercept"):
        ordered = sorted(parts, key=lambda part: int(part[f"{name}_start"]))
        combined = np.concatenate([part[name] for part in ordered], axis=-1)
        np.testing.assert_allclose(
            combined, np.asarray(getattr(reference, name)), rtol=1e-10, atol=1e-12
        )


# -- PLS1 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(50, 120), (80, 20)], ids=["dual", "primal"])
def test_pls1_sharded_and_single_device_results_are_identical(shape):
    X, Y = make_problem(*shape, n_targets=16, seed=3)
    single = pls1_cv(X, Y, 6, cv=4, devices=jax.devices()[:1], target_batch_size=3)
    sharded = pls1_cv(X, Y, 6, cv=4, devices=jax.devices(), target_batch_size=3)
    # 14 targets are padded to 16 over 4 devices and trimmed back.
    uneven = pls1_cv(X, Y[:, :14], 6, cv=4, devices=jax.devices(), target_batch_size=3)
    for name in ("best_n_components", "cv_scores", "coef", "intercept"):
        expected = np.asarray(getattr(single, name))
        np.testing.assert_allclose(
            np.asarray(getattr(sharded, name)), expected, rtol=1e-12, atol=1e-12
        )
        np.testing.assert_allclose(
            np.asarray(getattr(uneven, name)), expected[..., :14], rtol=1e-12, atol=1e-12
        )
    for name in ("coef", "cv_scores", "best_n_components"):
        array = getattr(sharded, name)
        assert isinstance(array.sharding, NamedSharding)
        assert array.sharding.spec[-1] == "voxels"
        assert len(array.addressable_shards) == 4
        assert {shard.data.shape[-1] for shard in array.addressable_shards} == {4}


def test_pls1_per_target_phase_has_no_cross_device_communication():
    X, Y = make_problem(40, 90, n_targets=16, seed=4)
    decomposition = prepare_pls1(X, 4, devices=jax.devices())
    result = pls1_cv_targets(decomposition, Y, 5, target_batch_size=2)
    assert result.coef.shape == (90, 16)
    settings = _PLS1Settings(decomposition.folds, (1, 2, 3, 4, 5), 5, True, "r2")
    program = _program(_pls1_batch, settings, decomposition.mesh, 2, _PLS1_OUTPUT_NDIMS)
    shared = _PLS1Shared(decomposition.designs, decomposition.full)
    Y_sharded = jax.device_put(Y, NamedSharding(decomposition.mesh, PartitionSpec(None, "voxels")))
    hlo = program.lower(shared, Y_sharded).compile().as_text()
    for collective in COLLECTIVES:
        assert collective not in hlo, f"PLS1 per-target phase contains {collective}"


@pytest.mark.slow
def test_two_processes_fit_a_voxel_sharded_pls1_problem_equal_to_one_process(tmp_path):
    worker = Path(__file__).parent / "helpers" / "multiprocess_pls.py"
    port = str(_free_port())
    environment = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS",)}
    environment["JAX_PLATFORMS"] = "cpu"
    processes = [
        subprocess.Popen(
            [sys.executable, str(worker), port, str(rank), str(tmp_path / f"part{rank}.npz")],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [process.communicate(timeout=240)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 150))
    Y = X @ rng.standard_normal((150, 8)) + rng.standard_normal((60, 8))
    reference = pls1_cv(X, Y, 6, cv=3, devices=jax.devices()[:1])
    parts = [np.load(tmp_path / f"part{rank}.npz") for rank in (0, 1)]
    assert sorted(int(part["coef_start"]) for part in parts) == [0, 4]
    for name in ("coef", "cv_scores", "best_n_components", "intercept"):
        ordered = sorted(parts, key=lambda part: int(part[f"{name}_start"]))
        combined = np.concatenate([part[name] for part in ordered], axis=-1)
        np.testing.assert_allclose(
            combined, np.asarray(getattr(reference, name)), rtol=1e-10, atol=1e-12
        )
