"""Preprocessing, batched extraction and the streamed, resumable HDF5 writer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import jax
import numpy as np
import pytest

from v4jax.features.extraction import RandomWeightsWarning, extract, extract_to_hdf5
from v4jax.features.images import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    prepare_images,
)
from v4jax.features.models import apply_alexnet, init_params

pytestmark = pytest.mark.filterwarnings("ignore::v4jax.features.extraction.RandomWeightsWarning")


def relative_error(actual, reference) -> float:
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(actual - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def params():
    return init_params(jax.random.key(0), "torchvision", "pool5")


@pytest.fixture(scope="module")
def stimuli():
    """vim-1-like grayscale stimuli in [-0.5, 0.5] (smaller than 128 px to keep tests fast)."""
    return np.random.default_rng(0).uniform(-0.5, 0.5, (22, 64, 64)).astype(np.float32)


# ---------------------------------------------------------------- preprocessing


def np_bilinear_upsample(image, size):
    """Half-pixel-centre bilinear resize with edge clamping (torch align_corners=False)."""

    def axis_weights(n_in):
        coords = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        low = np.floor(coords).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        matrix = np.zeros((size, n_in))
        matrix[np.arange(size), low] += 1 - (coords - low)
        matrix[np.arange(size), high] += coords - low
        return matrix

    return axis_weights(image.shape[0]) @ image @ axis_weights(image.shape[1]).T


def test_prepare_grayscale_minmax_upsample_and_normalise():
    images = np.random.default_rng(1).uniform(-0.5, 0.5, (3, 50, 50))
    prepared = np.asarray(prepare_images(images, "torchvision"))
    assert prepared.shape == (3, 224, 224, 3) and prepared.dtype == np.float32
    for n in range(3):
        unit = (images[n] - images[n].min()) / (images[n].max() - images[n].min())
        resized = np_bilinear_upsample(unit, 224)
        for c in range(3):
            expected = (resized - IMAGENET_MEAN_RGB[c]) / IMAGENET_STD_RGB[c]
            assert relative_error(prepared[n, :, :, c], expected) < 1e-5


def test_prepare_caffe_is_bgr_255_minus_mean():
    rgb = np.empty((1, 40, 40, 3))
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 0.9, 0.5, 0.1  # constant R, G, B planes
    prepared = np.asarray(prepare_images(rgb, "caffe"))
    assert prepared.shape == (1, 227, 227, 3)
    expected_bgr = np.array([0.1, 0.5, 0.9]) * 255 - np.array(CAFFE_MEAN_BGR)
    np.testing.assert_allclose(prepared[0, 100, 100], expected_bgr, rtol=1e-5)
    np.testing.assert_allclose(np.ptp(prepared, axis=(0, 1, 2)), 0, atol=1e-4)


def test_prepare_downsampling_matches_torch_antialias():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (optional extra)")
    image = np.random.default_rng(2).uniform(0, 1, (2, 301, 301, 3)).astype(np.float32)
    ours = np.asarray(prepare_images(image, "tfutils", scale="none"))
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(0, 3, 1, 2),
        size=(224, 224),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    mean = torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1)
    reference = ((resized - mean) / std).permute(0, 2, 3, 1).numpy()
    assert relative_error(ours, reference) < 1e-4


def test_prepare_rejects_bad_images():
    with pytest.raises(ValueError, match=r"scale='none' expects values in \[0, 1\]"):
        prepare_images(np.full((1, 8, 8, 3), 2.0), scale="none")
    with pytest.raises(ValueError, match="grayscale"):
        prepare_images(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        prepare_images(np.full((1, 8, 8), np.nan))
    with pytest.raises(ValueError, match="scale='gamma'"):
        prepare_images(np.zeros((1, 8, 8)), scale="gamma")


# ---------------------------------------------------------------- extract


def test_extract_equals_direct_forward_for_any_batch_size(params, stimuli):
    direct = apply_alexnet(params, prepare_images(stimuli), ("conv3", "pool5"))
    for batch_size in (5, 22, 64):
        features = extract(stimuli, ("conv3", "pool5"), params=params, batch_size=batch_size)
        assert features["conv3"].shape == (22, 13, 13, 384)
        assert features["pool5"].dtype == np.float32
        for layer in ("conv3", "pool5"):
            assert relative_error(features[layer], direct[layer]) < 1e-5


def test_extract_from_features_only_file_reproduces_golden(golden_dir, tmp_path):
    golden = np.load(golden_dir / "alexnet" / "alexnet_torchvision_golden.npz")
    np.savez(tmp_path / "features.npz", **{k: golden[k] for k in golden.files if "." in k})
    images = golden["input_224"].transpose(0, 2, 3, 1)
    features = extract(
        images, "conv3", params=tmp_path / "features.npz", batch_size=3, preprocess=False
    )
    reference = golden["conv3_relu_224"].transpose(0, 2, 3, 1)
    assert relative_error(features["conv3"], reference) <= 1e-4
    with pytest.raises(ValueError, match=r"need weights for \['fc6'\]"):
        extract(images, "fc6", params=tmp_path / "features.npz", preprocess=False)


def test_random_weights_warn(stimuli):
    with pytest.warns(RandomWeightsWarning, match="RANDOMLY initialised"):
        extract(stimuli[:2], "conv1", batch_size=2)


def test_extract_argument_errors(params, stimuli):
    with pytest.raises(ValueError, match="preprocess=False needs prepared"):
        extract(stimuli, params=params, preprocess=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        extract(stimuli, params=params, batch_size=0)
    with pytest.raises(TypeError, match="transform must be a callable"):
        extract(stimuli, params=params, transform="retina")
    with pytest.raises(ValueError, match="must keep the batch axis"):
        extract(stimuli, params=params, transform=lambda batch: batch[:1])


# ---------------------------------------------------------------- HDF5


class CountingTransform:
    """Scales images; counts the batches it sees and can fail on a given call."""

    def __init__(self, fail_on_call: int | None = None):
        self.fail_on_call = fail_on_call
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated interruption")
        return 0.5 * np.asarray(batch)

    def __repr__(self) -> str:
        return "CountingTransform(gain=0.5)"


def test_hdf5_matches_extract_with_provenance(params, stimuli, tmp_path):
    path = tmp_path / "features.h5"
    transform = CountingTransform()
    extract_to_hdf5(
        stimuli,
        path,
        ("conv3", "pool5"),
        params=params,
        batch_size=8,
        transform=transform,
        progress=False,
    )
    in_memory = extract(
        stimuli, ("conv3", "pool5"), params=params, batch_size=8, transform=transform
    )
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["conv3"][:], in_memory["conv3"])
        np.testing.assert_array_equal(handle["pool5"][:], in_memory["pool5"])
        attrs = dict(handle.attrs)
        assert handle["conv3"].chunks[1:] == (13, 13, 384)
    assert attrs["variant"] == "torchvision"
    assert json.loads(attrs["layers"]) == ["conv3", "pool5"]
    assert attrs["weights"].startswith("in-memory params sha256=")
    assert attrs["transform"] == "CountingTransform(gain=0.5)"
    assert "scale='minmax'" in attrs["preprocessing"]
    assert attrs["n_images"] == 22 and attrs["completed_batches"] == 3
    assert len(attrs["images_sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        extract_to_hdf5(stimuli, path, params=params, progress=False)


def test_hdf5_random_weights_recorded(stimuli, tmp_path):
    with pytest.warns(RandomWeightsWarning):
        extract_to_hdf5(stimuli[:4], tmp_path / "r.h5", "conv2", seed=3, progress=False)
    expected = extract(stimuli[:4], "conv2", seed=3)
    other_seed = extract(stimuli[:4], "conv2", seed=4)
    with h5py.File(tmp_path / "r.h5", "r") as handle:
        assert handle.attrs["weights"] == "random-init seed=3"
        np.testing.assert_array_equal(handle["conv2"][:], expected["conv2"])
        assert not np.allclose(handle["conv2"][:], other_seed["conv2"])


def test_interrupted_extraction_resumes_without_recomputing(params, stimuli, tmp_path):
    reference_path = tmp_path / "reference.h5"
    extract_to_hdf5(
        stimuli,
        reference_path,
        params=params,
        batch_size=4,
        progress=False,
        transform=CountingTransform(),
    )
    path = tmp_path / "resumed.h5"
    partial = tmp_path / "resumed.h5.partial"
    failing = CountingTransform(fail_on_call=4)  # batches 0..2 finish, batch 3 fails
    with pytest.raises(RuntimeError, match="simulated interruption"):
        extract_to_hdf5(
            stimuli, path, params=params, batch_size=4, transform=failing, progress=False
        )
    assert not path.exists() and partial.exists()
    with h5py.File(partial, "r") as handle:
        assert handle.attrs["completed_batches"] == 3

    with pytest.raises(ValueError, match="images_sha256"):
        extract_to_hdf5(
            stimuli[::-1].copy(),
            path,
            params=params,
            batch_size=4,
            transform=CountingTransform(),
            progress=False,
        )
    with pytest.raises(ValueError, match="batch_size"):
        extract_to_hdf5(
            stimuli,
            path,
            params=params,
            batch_size=8,
            transform=CountingTransform(),
            progress=False,
        )

    resuming = CountingTransform()
    extract_to_hdf5(stimuli, path, params=params, batch_size=4, transform=resuming, progress=False)
    assert resuming.calls == 6 - 3  # 22 images in 6 batches; only the 3 unfinished ones ran
    assert path.exists() and not partial.exists()
    with h5py.File(path, "r") as resumed, h5py.File(reference_path, "r") as reference:
        np.testing.assert_array_equal(resumed["conv3"][:], reference["conv3"][:])
        assert resumed.attrs["completed_batches"] == 6


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, warnings
    import numpy as np
    from v4jax.features.extraction import extract_to_hdf5
    warnings.simplefilter("ignore")
    folder = sys.argv[1]
    images = np.random.default_rng(0).uniform(-0.5, 0.5, (1870, 128, 128)).astype(np.float32)
    extract_to_hdf5(images[:64], folder + "/warmup.h5", batch_size=64, progress=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    extract_to_hdf5(images, folder + "/vim1_conv3.h5", batch_size=64, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"before": before, "after": after}))
    """
)


@pytest.mark.slow
def test_1870_vim1_images_stream_to_hdf5_in_bounded_memory(tmp_path):
    """conv3 of 1,870 128x128 stimuli: peak memory grows by well under one copy of the features."""
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    memory = json.loads(run.stdout.strip().splitlines()[-1])
    features_bytes = 1870 * 13 * 13 * 384 * 4  # 485 MB of conv3 features
    assert memory["after"] - memory["before"] < 0.5 * features_bytes
    with h5py.File(tmp_path / "vim1_conv3.h5", "r") as handle:
        conv3 = handle["conv3"]
        assert conv3.shape == (1870, 13, 13, 384)
        assert handle.attrs["completed_batches"] == 30
        last = conv3[-6:]
        assert np.isfinite(last).all() and (last > 0).mean() > 0.05
