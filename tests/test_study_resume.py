"""The study's inputs: stale or damaged features files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from v4jax import study
from v4jax.data import make_synthetic_vim1

HELPERS = Path(__file__).parent / "helpers"
SYNTHETIC = dict(n_train=60, n_val=16, n_voxels=24, all_nan_fraction=0.0, partial_nan_fraction=0.0)
LAYER = "pool1"

pytestmark = [
    pytest.mark.filterwarnings("ignore::v4jax.features.RandomWeightsWarning"),
    # Random-weight pool1 features are badly conditioned; the fits' values do not matter here.
    pytest.mark.filterwarnings("ignore::v4jax.diagnostics.ConditioningWarning"),
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

    monkeypatch.setattr("v4jax.features.extract_to_hdf5", no_extraction)
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
