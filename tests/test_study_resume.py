"""The study's inputs and interruptions: stale or damaged features files, the input hashes the
results record, and a SIGKILLed fit that resumes without recomputing its finished fits."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers.killing import sigkill_when_ready, worker_environment

from v4jax.data import make_synthetic_vim1
from v4jax.pipeline import study

HELPERS = Path(__file__).parent / "helpers"
SYNTHETIC = dict(n_train=60, n_val=16, n_voxels=24, all_nan_fraction=0.0, partial_nan_fraction=0.0)
LAYER = "pool1"

pytestmark = [
    pytest.mark.filterwarnings("ignore::v4jax.features.extraction.RandomWeightsWarning"),
    # Random-weight pool1 features are badly conditioned; the fits' values do not matter here.
    pytest.mark.filterwarnings("ignore::v4jax.solvers.diagnostics.ConditioningWarning"),
]


@pytest.fixture(scope="module")
def study_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(data_dir, features_dir): a small synthetic vim-1 set (subjects 1 and 2, 76 images, 24
    voxels each) and its pool1 features (27 x 27 x 64) from random weights, both arms."""
    work = tmp_path_factory.mktemp("study_inputs")
    make_synthetic_vim1(work / "data", subjects=(1, 2), progress=False, **SYNTHETIC)
    study.extract_features(work / "data", work, layers=(LAYER,), batch_size=16, progress=False)
    return work / "data", work


def features_of(features_dir: Path) -> dict[str, Path]:
    return {arm: study.features_path(features_dir, arm, "torchvision") for arm in study.ARMS}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- S1: damaged features files ------------------------------------------------------------------


def test_a_truncated_features_file_is_refused_when_extraction_would_reuse_it(
    study_inputs, tmp_path
):
    data_dir, features_dir = study_inputs
    source = study.features_path(features_dir, "plain", "torchvision")
    damaged = study.features_path(tmp_path, "plain", "torchvision")
    damaged.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    with pytest.raises(ValueError) as info:
        study.extract_features(data_dir, tmp_path, layers=(LAYER,), arms=("plain",))
    message = str(info.value)
    assert str(damaged) in message
    assert "delete it and run `v4jax extract` again" in message


# -- S3: an existing features file is reused only when it matches the request --------------------


def test_a_matching_features_file_is_reused_without_recomputing(study_inputs, monkeypatch):
    data_dir, features_dir = study_inputs
    before = {arm: sha256_of(path) for arm, path in features_of(features_dir).items()}

    def no_extraction(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("extract_to_hdf5 was called for a file that should be reused")

    monkeypatch.setattr("v4jax.features.extraction.extract_to_hdf5", no_extraction)
    written = study.extract_features(
        data_dir, features_dir, layers=(LAYER,), batch_size=16, progress=False
    )
    assert written == features_of(features_dir)
    assert {arm: sha256_of(path) for arm, path in written.items()} == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("stimuli", "images_sha256"),
        ("weights", "'random-init seed=1'"),
        ("layers", "lacks ['conv1']"),
    ],
)
def test_a_features_file_of_other_stimuli_weights_or_layers_is_refused(
    study_inputs, tmp_path, change, named
):
    data_dir, features_dir = study_inputs
    before = sha256_of(study.features_path(features_dir, "plain", "torchvision"))
    arguments: dict[str, Any] = dict(layers=(LAYER,), arms=("plain",), progress=False)
    if change == "stimuli":
        data_dir = tmp_path / "other_data"
        make_synthetic_vim1(data_dir, subjects=(1,), seed=1, progress=False, **SYNTHETIC)
    elif change == "weights":
        arguments["seed"] = 1
    else:
        arguments["layers"] = (LAYER, "conv1")
    with pytest.raises(ValueError) as info:
        study.extract_features(data_dir, features_dir, **arguments)
    message = str(info.value)
    assert str(study.features_path(features_dir, "plain", "torchvision")) in message
    assert named in message
    assert "delete it to extract again, or pass another --out" in message
    assert sha256_of(study.features_path(features_dir, "plain", "torchvision")) == before


# -- S2: the results file records its inputs' hashes ---------------------------------------------


def test_results_record_the_sha256_of_their_inputs(study_inputs, tmp_path):
    data_dir, features_dir = study_inputs
    features = features_of(features_dir)
    # A checkpoint of other settings without any finished fit is replaced, not refused.
    stale = study.checkpoint_path(tmp_path / "results.h5")
    stale.mkdir()
    (stale / study.CHECKPOINT_RUN_FILE).write_text(json.dumps({"format": "other"}))
    results = study.fit_study(
        data_dir,
        {"plain": features["plain"]},
        tmp_path / "results.h5",
        roi="all",
        settings=study.FitSettings(
            methods=("ridge",), alphas=(10.0, 1000.0), cv=3, layer=LAYER, n_test=12
        ),
        progress=False,
    )
    with h5py.File(features["plain"], "r") as handle:
        images_sha256 = handle.attrs["images_sha256"]
        weights = handle.attrs["weights"]
    with h5py.File(results, "r") as handle:
        attrs = dict(handle.attrs)
    assert json.loads(attrs["features_sha256"]) == {"plain": sha256_of(features["plain"])}
    assert json.loads(attrs["features_images_sha256"]) == {"plain": images_sha256}
    assert (
        json.loads(attrs["features_weights"])
        == {"plain": weights}
        == {"plain": "random-init seed=0"}
    )
    assert attrs["responses_sha256"] == sha256_of(data_dir / "EstimatedResponses.mat")
    assert not study.checkpoint_path(results).exists()


# -- resumable fitting ---------------------------------------------------------------------------


def worker_command(study_inputs: tuple[Path, Path], *outputs: Path) -> list[str]:
    data_dir, features_dir = study_inputs
    script = HELPERS / "fit_worker.py"
    return [sys.executable, str(script), str(data_dir), str(features_dir), *map(str, outputs)]


def kill_after_checkpoints(command: list[str], log: Path, fits: int) -> None:
    """Start the worker, wait until it has checkpointed ``fits`` fits, then SIGKILL it."""
    sigkill_when_ready(
        command,
        worker_environment(log, "V4JAX_TEST_HANG_AFTER", fits),
        log.with_suffix(".ready"),
        "the fit to be killed after",
    )


def logged_fits(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def h5_contents(path: Path) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (dataset values or None for a group, attributes), ``created`` left out."""
    contents = {}
    with h5py.File(path, "r") as handle:
        root = {key: value for key, value in handle.attrs.items() if key != "created"}
        contents["/"] = (None, root)

        def visit(name: str, item: h5py.Group | h5py.Dataset) -> None:
            values = item[...] if isinstance(item, h5py.Dataset) else None
            contents[name] = (values, dict(item.attrs))

        handle.visititems(visit)
    return contents


ALL_FITS = ["S1/plain/ridge", "S1/retina/ridge", "S2/plain/ridge", "S2/retina/ridge"]


def test_a_killed_fit_resumes_without_recomputing_finished_fits(study_inputs, tmp_path):
    out, log = tmp_path / "results.h5", tmp_path / "killed.log"
    checkpoint = study.checkpoint_path(out)
    kill_after_checkpoints(worker_command(study_inputs, out), log, fits=1)
    assert logged_fits(log) == ALL_FITS[:1]
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert sorted(path.name for path in checkpoint.glob("S*_*.h5")) == ["S1_plain_ridge.h5"]

    # Other settings: the checkpoint is refused, and left as it was.
    before = {path.name: sha256_of(path) for path in checkpoint.iterdir()}
    data_dir, features_dir = study_inputs
    with pytest.raises(ValueError) as info:
        study.fit_study(
            data_dir,
            features_of(features_dir),
            out,
            subjects=(1, 2),
            roi="all",
            settings=study.FitSettings(
                methods=("ridge",), alphas=(0.1, 10.0), cv=3, layer=LAYER, n_test=12
            ),
            progress=False,
        )
    message = str(info.value)
    assert str(checkpoint) in message and "changed: settings.alphas" in message
    assert {path.name: sha256_of(path) for path in checkpoint.iterdir()} == before
    assert not out.exists()

    reference = tmp_path / "reference.h5"
    completed = subprocess.run(
        worker_command(study_inputs, out, reference),
        env=worker_environment(tmp_path / "resumed.log", "V4JAX_TEST_HANG_AFTER", None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert logged_fits(tmp_path / "resumed.log") == ALL_FITS[1:]  # the first fit was loaded
    assert logged_fits(tmp_path / "resumed.reference") == ALL_FITS
    assert out.exists() and not checkpoint.exists()

    resumed, expected = h5_contents(out), h5_contents(reference)
    assert sorted(resumed) == sorted(expected)
    assert "S2/retina/ridge/val_r" in resumed
    for name, (values, attrs) in expected.items():
        assert resumed[name][1].keys() == attrs.keys(), name
        for key in attrs:
            np.testing.assert_array_equal(resumed[name][1][key], attrs[key], err_msg=name)
        if values is not None:
            assert resumed[name][0].dtype == values.dtype, name
            np.testing.assert_array_equal(resumed[name][0], values, err_msg=name)
    summary = json.loads(out.with_suffix(".json").read_text())["fits"]
    assert summary == json.loads(reference.with_suffix(".json").read_text())["fits"]
    assert [f"S{row['subject']}/{row['arm']}/{row['method']}" for row in summary] == ALL_FITS


def test_a_damaged_checkpoint_is_named(study_inputs, tmp_path):
    data_dir, features_dir = study_inputs
    out = tmp_path / "results.h5"
    checkpoint = study.checkpoint_path(out)
    checkpoint.mkdir()
    (checkpoint / study.CHECKPOINT_RUN_FILE).write_text("{not json")
    with pytest.raises(ValueError) as info:
        study.fit_study(
            data_dir,
            features_of(features_dir),
            out,
            roi="all",
            settings=study.FitSettings(methods=("ridge",), layer=LAYER, n_test=12),
            progress=False,
        )
    assert str(checkpoint) in str(info.value) and "delete it to start over" in str(info.value)
    assert not out.exists()
