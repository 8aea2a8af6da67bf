"""Fault tolerance: a SIGKILLed extraction resumes to the uninterrupted result without redoing
finished batches; damaged partial files and failed writes never leave a half-written output.

(Fitting and sweeping resume are tested in tests/test_sweep.py:
``test_an_interrupted_sweep_resumes_and_refuses_changed_settings`` and
``test_a_killed_sweep_process_resumes_without_recomputing_finished_blocks``.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest
from helpers.killing import sigkill_when_ready, worker_environment

from v4jax import extract_to_hdf5, init_params, save_params
from v4jax._io import atomic_path

HELPERS = Path(__file__).parent / "helpers"
N_IMAGES = 22  # 6 batches of 4, the last one partial

pytestmark = pytest.mark.filterwarnings("ignore::v4jax.features.extraction.RandomWeightsWarning")


@pytest.fixture(scope="module")
def transform_module():
    sys.path.insert(0, str(HELPERS))
    try:
        import killable_transform

        yield killable_transform
    finally:
        sys.path.remove(str(HELPERS))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Grayscale stimuli whose pixel [0, 0] is the image's index (the transform logs it)."""
    values = np.random.default_rng(0).uniform(-0.5, 0.5, (N_IMAGES, 32, 32)).astype(np.float32)
    values[:, 0, 0] = np.arange(N_IMAGES)
    return values


def logged_batches(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def worker_command(images_file: Path, out: Path) -> list[str]:
    return [sys.executable, str(HELPERS / "extraction_worker.py"), str(images_file), str(out)]


def run_to_completion(images_file: Path, out: Path, log: Path) -> None:
    completed = subprocess.run(
        worker_command(images_file, out),
        env=worker_environment(log, "V4JAX_TEST_HANG_ON", None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr


def run_until_hung(images_file: Path, out: Path, log: Path, hang_on: int) -> None:
    """Start the worker, wait until its ``hang_on``-th transform call, then SIGKILL it."""
    sigkill_when_ready(
        worker_command(images_file, out),
        worker_environment(log, "V4JAX_TEST_HANG_ON", hang_on),
        log.with_suffix(".ready"),
        "the batch to be killed in",
    )


def test_sigkilled_extraction_resumes_to_the_uninterrupted_result(images, tmp_path):
    """Uninterrupted, killed and resumed runs all run in worker processes with the same setup,
    so the resumed file must equal the uninterrupted one bit for bit."""
    images_file = tmp_path / "images.npy"
    np.save(images_file, images)
    reference = tmp_path / "reference.h5"
    run_to_completion(images_file, reference, tmp_path / "reference.log")
    assert logged_batches(tmp_path / "reference.log") == [0, 1, 2, 3, 4, 5]

    out, log = tmp_path / "features.h5", tmp_path / "killed.log"
    partial = tmp_path / "features.h5.partial"
    run_until_hung(images_file, out, log, hang_on=4)  # batches 0..2 written, killed in batch 3
    assert logged_batches(log) == [0, 1, 2, 3]
    assert not out.exists() and partial.exists()
    with h5py.File(partial, "r") as handle:
        assert int(handle.attrs["completed_batches"]) == 3

    run_to_completion(images_file, out, tmp_path / "resumed.log")
    assert logged_batches(tmp_path / "resumed.log") == [3, 4, 5]  # finished batches not redone
    assert out.exists() and not partial.exists()
    with h5py.File(out, "r") as resumed, h5py.File(reference, "r") as expected:
        np.testing.assert_array_equal(resumed["conv1"][...], expected["conv1"][...])
        assert resumed.attrs["images_sha256"] == expected.attrs["images_sha256"]
        assert int(resumed.attrs["completed_batches"]) == 6


def test_killed_partial_refuses_other_images_then_a_damaged_partial_is_named(
    images, transform_module, tmp_path, monkeypatch
):
    images_file = tmp_path / "images.npy"
    np.save(images_file, images)
    out, log = tmp_path / "features.h5", tmp_path / "killed.log"
    run_until_hung(images_file, out, log, hang_on=2)
    params = init_params(jax.random.key(0), "torchvision", "conv1")
    monkeypatch.setenv("V4JAX_TEST_LOG", str(tmp_path / "other.log"))
    arguments = dict(
        params=params,
        batch_size=transform_module.BATCH_SIZE,
        transform=transform_module.identity,
        progress=False,
    )
    with pytest.raises(ValueError, match="images_sha256"):
        extract_to_hdf5(images[::-1].copy(), out, "conv1", **arguments)
    partial = tmp_path / "features.h5.partial"
    data = partial.read_bytes()
    partial.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"features\.h5\.partial cannot be opened.*delete it"):
        extract_to_hdf5(images, out, "conv1", **arguments)
    assert not out.exists()


def test_a_failed_atomic_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.h5"
    target.write_bytes(b"previous version")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.h5"]


def test_save_params_failing_midway_keeps_the_previous_weights(tmp_path, monkeypatch):
    from flax import serialization

    params = init_params(jax.random.key(0), "torchvision", "conv1")
    path = save_params(params, tmp_path / "alexnet.msgpack", "torchvision")
    before = path.read_bytes()

    def broken(_payload):
        raise OSError("simulated crash while serialising")

    monkeypatch.setattr(serialization, "msgpack_serialize", broken)
    with pytest.raises(OSError, match="simulated crash"):
        save_params(params, path, "torchvision")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet.msgpack"]
