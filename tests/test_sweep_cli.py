"""`v4jax sweep` end to end: a synthetic set with a known layer hierarchy (V1 from early
features, V4 from mid-level ones) is swept through the command line, which recovers each ROI's
source as its best layer; an interrupted command resumes through the shared checkpoint."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest

from v4jax.data import make_synthetic_vim1
from v4jax.data.features import filter_bank_features
from v4jax.pipeline import study
from v4jax.pipeline.cli import main

N_TRAIN, N_VAL = 240, 40
LAYERS = ("early", "mid")


def early_features(images: np.ndarray) -> np.ndarray:
    """(N, 16, 16, 3): per 8 px cell, the mean luminance and mean signed horizontal and
    vertical steps (linear in the pixels)."""
    images = images.astype(np.float32)
    steps = (
        np.diff(images, axis=2, append=images[:, :, -1:]),
        np.diff(images, axis=1, append=images[:, -1:, :]),
    )
    channels = np.stack([images, *steps], axis=-1)
    return channels.reshape(-1, 16, 8, 16, 8, 3).mean(axis=(2, 4))


def mid_features(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8, 8): oriented energy (a nonlinear feature space) pooled on a coarser grid."""
    return filter_bank_features(images, grid=8)[..., :8]


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory):
    """A synthetic vim-1 set whose V1 reads ``early`` and V4 ``mid``, and a features file of
    both layers computed on its stimuli."""
    folder = tmp_path_factory.mktemp("hierarchy")
    data_dir = folder / "data"
    make_synthetic_vim1(
        data_dir,
        n_train=N_TRAIN,
        n_val=N_VAL,
        n_voxels=300,
        subjects=(1,),
        seed=5,
        snr=(1.0, 3.0),
        signal_fraction=1.0,
        signal_rois=(1, 6),
        feature_sources={"early": early_features, "mid": mid_features},
        roi_sources={1: "early", 6: "mid"},
        shared_fraction=0.3,
        all_nan_fraction=0.0,
        partial_nan_fraction=0.0,
        progress=False,
    )
    stimuli = study.load_stimuli(data_dir)
    features = folder / "features.h5"
    with h5py.File(features, "w") as handle:
        for name, function in zip(LAYERS, (early_features, mid_features), strict=True):
            handle[name] = function(stimuli)
    return data_dir, features


class _Interrupt(RuntimeError):
    pass


class _InterruptAfter(logging.Handler):
    """Raises inside the sweep once ``count`` blocks have been written."""

    def __init__(self, count: int) -> None:
        super().__init__(logging.INFO)
        self.remaining = count

    def emit(self, record: logging.LogRecord) -> None:
        if "written" in record.getMessage():
            self.remaining -= 1
            if self.remaining == 0:
                raise _Interrupt


def test_cli_sweep_recovers_each_rois_source_layer_and_resumes(hierarchy, tmp_path, capsys):
    data_dir, features = hierarchy
    out = tmp_path / "run"
    command = ["sweep", "--data-dir", str(data_dir), "--features", str(features),
               "--layers", *LAYERS, "--roi", "V1,V4", "--alphas", "1e-1:1e5:7", "--cv", "3",
               "--n-test", "40", "--block-voxels", "16", "--devices", "1", "--out", str(out),
               "--quiet"]  # fmt: skip
    sweep_logger = logging.getLogger("v4jax.pipeline.sweep")
    handler = _InterruptAfter(2)
    sweep_logger.addHandler(handler)
    sweep_logger.setLevel(logging.INFO)
    try:
        with pytest.raises(_Interrupt):
            main(command)
    finally:
        sweep_logger.removeHandler(handler)
        sweep_logger.setLevel(logging.NOTSET)
    assert (out / "sweep.h5.partial").exists() and not (out / "sweep.h5").exists()
    capsys.readouterr()
    assert main(command) == 0
    printed = capsys.readouterr().out
    with h5py.File(out / "sweep.h5", "r") as handle:
        n_blocks = int(handle.attrs["n_blocks"])
        roi_codes = handle["roi_codes"][...]
        ceiling = handle["noise_ceiling_r"][...]
    # The interrupted run had finished 2 blocks of the first layer; the rerun did the rest.
    assert f"({2 * n_blocks - 2} block(s) computed, {n_blocks} per layer" in printed

    summary = json.loads((out / "sweep.json").read_text())
    assert summary["layers"] == list(LAYERS) and summary["rois"] == ["V1", "V4"]
    assert summary["best_layer"] == {"V1": "early", "V4": "mid"}, summary["layer_sweep"]
    assert summary["n_voxels"] == {
        "V1": int(np.sum(roi_codes == 1)),
        "V4": int(np.sum(roi_codes == 6)),
    }
    for roi in ("V1", "V4"):
        medians = summary["layer_sweep"][roi]
        best = summary["best_layer"][roi]
        assert medians[best] > max(r for layer, r in medians.items() if layer != best) + 0.3
        assert summary["best_layer_per_voxel"][roi][best] > 0.7
        normalised = summary["ceiling_normalised"][roi][best]
        assert 0.5 < normalised["median"] <= 1.05
    assert np.all(ceiling > 0)  # every swept voxel carries signal
    assert "best layer" in printed and "V1" in printed and "early" in printed
    assert (out / "figures" / "layer_roi.png").read_bytes()[:4] == b"\x89PNG"

    with h5py.File(data_dir / "ground_truth.h5", "r") as truth:
        names = json.loads(truth.attrs["feature_sources"])
        source = np.array(names)[truth["S1/feature_source"][...]]
        codes = truth["S1/roi_codes"][...]
    assert set(source[codes == 1]) == {"early"} and set(source[codes == 6]) == {"mid"}


def test_sweep_help_and_bad_arguments(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--help"])
    assert info.value.code == 0
    assert "layer x ROI summary" in capsys.readouterr().out
    missing = tmp_path / "missing"
    assert main(["sweep", "--data-dir", str(missing), "--features", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
