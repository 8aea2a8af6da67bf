"""vim-1 loader: round trip on synthetic files, ROI selection, NaN policies, bad input."""

from __future__ import annotations

import logging
import shutil
import tracemalloc

import h5py
import numpy as np
import pytest

from v4jax.data import (
    ROI_NAMES,
    load_vim1,
    make_synthetic_vim1,
    open_responses,
    roi_codes_for,
    simulate_vim1,
    unravel_voxel_index,
)
from v4jax.data import _format as vim1_format
from v4jax.data.vim1 import _load_stimuli

SMALL = {"n_train": 40, "n_val": 10, "n_voxels": {1: 120, 2: 97}, "seed": 7}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("vim1")
    files = make_synthetic_vim1(out, progress=False, **SMALL)
    return files.directory, simulate_vim1(**SMALL)


def _snapshot(directory):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*"))


@pytest.mark.parametrize("subject", [1, 2])
@pytest.mark.parametrize("code", sorted(ROI_NAMES))
def test_round_trip_every_roi_and_subject(synthetic, subject, code):
    directory, sim = synthetic
    truth = sim.subjects[subject]
    in_roi = truth.roi_codes == code
    finite = ~(truth.nan_mask_train.any(axis=0) | truth.nan_mask_val.any(axis=0))
    kept = np.flatnonzero(in_roi & finite)

    dropped = load_vim1(directory, subject, ROI_NAMES[code])
    np.testing.assert_array_equal(dropped.resp_train, truth.resp_train[:, kept])
    np.testing.assert_array_equal(dropped.resp_val, truth.resp_val[:, kept])
    np.testing.assert_array_equal(dropped.columns, kept)
    np.testing.assert_array_equal(dropped.roi_codes, np.full(kept.size, code))
    np.testing.assert_array_equal(dropped.voxel_index, truth.voxel_index[kept])
    np.testing.assert_array_equal(dropped.stim_train, sim.stim_train)
    np.testing.assert_array_equal(dropped.stim_val, sim.stim_val)
    assert dropped.n_dropped_nan == int((in_roi & ~finite).sum())
    assert dropped.valid_mask is None and dropped.roi_names == (ROI_NAMES[code],)
    assert dropped.resp_train.dtype == np.float32 and dropped.stim_train.dtype == np.float32

    masked = load_vim1(directory, subject, code, nan_policy="mask")
    selected = np.flatnonzero(in_roi)
    np.testing.assert_array_equal(masked.resp_train, truth.resp_train[:, selected])
    np.testing.assert_array_equal(masked.resp_val, truth.resp_val[:, selected])
    np.testing.assert_array_equal(masked.valid_mask, finite[selected])
    assert masked.n_dropped_nan == 0


def test_all_rois_lists_and_codes(synthetic):
    directory, sim = synthetic
    truth = sim.subjects[1]
    everything = load_vim1(directory, 1, "all", nan_policy="mask")
    np.testing.assert_array_equal(everything.resp_train, truth.resp_train)
    np.testing.assert_array_equal(everything.roi_codes, truth.roi_codes)
    early = load_vim1(directory, 1, ["v1", 2, "V3"], nan_policy="mask")
    np.testing.assert_array_equal(
        early.columns, np.flatnonzero(np.isin(truth.roi_codes, [1, 2, 3]))
    )
    assert early.roi_names == ("V1", "V2", "V3")
    assert roi_codes_for("LatOcc") == (7,) and roi_codes_for("v4") == roi_codes_for(6) == (6,)


def test_nan_drop_is_reported(synthetic, caplog):
    directory, _ = synthetic
    with caplog.at_level(logging.WARNING, logger="v4jax.data.vim1"):
        data = load_vim1(directory, 1, "all")
    assert data.n_dropped_nan > 0
    assert f"dropped {data.n_dropped_nan} of" in caplog.text
    assert np.all(np.isfinite(data.resp_train)) and np.all(np.isfinite(data.resp_val))


def test_voxel_coordinates_unravel_matlab_order(synthetic):
    directory, sim = synthetic
    data = load_vim1(directory, 2, "all", nan_policy="mask")
    coords = data.voxel_coordinates()
    np.testing.assert_array_equal(coords[:, 0] + 64 * coords[:, 1] + 64 * 64 * coords[:, 2] + 1,
                                  sim.subjects[2].voxel_index)  # fmt: skip
    np.testing.assert_array_equal(unravel_voxel_index(np.array([1, 65, 4097])),
                                  [[0, 0, 0], [0, 1, 0], [0, 0, 1]])  # fmt: skip
    with pytest.raises(ValueError, match="1-based"):
        unravel_voxel_index(np.array([0]))


def test_streaming_blocks_equal_a_direct_read(synthetic):
    directory, sim = synthetic
    with open_responses(directory, 2) as responses:
        assert (responses.n_train, responses.n_val, responses.n_voxels) == (40, 10, 97)
        columns = responses.columns_for(["V1", "other"])
        blocks = list(responses.iter_voxel_blocks(columns, block_voxels=7))
        assert all(b[0].size <= 7 for b in blocks)
        np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), columns)
        train = np.concatenate([b[1] for b in blocks], axis=1)
        np.testing.assert_array_equal(train, sim.subjects[2].resp_train[:, columns])
        _, val = responses.read_voxel_block(np.arange(10, 30))
        np.testing.assert_array_equal(val, sim.subjects[2].resp_val[:, 10:30])
        with pytest.raises(ValueError, match="sorted and unique"):
            responses.read_voxel_block(np.array([5, 3]))
        with pytest.raises(ValueError, match=r"\[0, 97\)"):
            responses.read_voxel_block(np.array([200]))


def test_v4_read_allocates_far_less_than_the_full_matrix(tmp_path):
    n_train, n_val, n_voxels = 300, 20, 5000
    make_synthetic_vim1(tmp_path, n_train=n_train, n_val=n_val, n_voxels=n_voxels,
                        subjects=(1,), signal_rois=(6,), progress=False)  # fmt: skip
    full_bytes = (n_train + n_val) * n_voxels * 4
    tracemalloc.start()
    stim_train, stim_val = _load_stimuli(tmp_path)
    _, stimuli_peak = tracemalloc.get_traced_memory()
    stimuli_bytes = stim_train.nbytes + stim_val.nbytes
    del stim_train, stim_val
    tracemalloc.reset_peak()
    data = load_vim1(tmp_path, 1, "V4", block_voxels=256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert 250 < data.n_voxels + data.n_dropped_nan < 350
    # the stimuli are read first; the responses then add far less than the full matrix
    assert peak < max(stimuli_peak, stimuli_bytes + 0.25 * full_bytes)
    assert data.resp_train.nbytes + data.resp_val.nbytes < 0.1 * full_bytes


def test_loader_writes_nothing(synthetic):
    directory, _ = synthetic
    before = _snapshot(directory)
    load_vim1(directory, 1, "V4")
    load_vim1(directory, 2, "all", nan_policy="mask")
    with pytest.raises(ValueError):
        load_vim1(directory, 3)
    with open_responses(directory, 1) as responses:
        list(responses.iter_voxel_blocks())
    assert _snapshot(directory) == before


@pytest.fixture
def broken_copy(synthetic, tmp_path):
    directory, _ = synthetic
    for path in directory.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    return tmp_path


def test_missing_directory_and_files(broken_copy):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vim1(broken_copy / "nowhere")
    (broken_copy / "Stimuli.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"Stimuli\.mat not found"):
        load_vim1(broken_copy)
    (broken_copy / "EstimatedResponses.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"EstimatedResponses\.mat not found"):
        load_vim1(broken_copy)


def test_wrong_variable_name(broken_copy):
    with h5py.File(broken_copy / "EstimatedResponses.mat", "r+") as handle:
        handle.move("dataValS1", "dataValidationS1")
    with pytest.raises(ValueError, match="no variable 'dataValS1'") as error:
        load_vim1(broken_copy)
    assert "EstimatedResponses.mat" in str(error.value)


def test_wrong_stimulus_variable_and_count(broken_copy, synthetic):
    import scipy.io

    _, sim = synthetic
    scipy.io.savemat(broken_copy / "Stimuli.mat", {"images": sim.stim_train})
    with pytest.raises(ValueError, match=r"Stimuli\.mat has no variable 'stimTrn'"):
        load_vim1(broken_copy)
    scipy.io.savemat(broken_copy / "Stimuli.mat",
                     {"stimTrn": sim.stim_train[:5], "stimVal": sim.stim_val})  # fmt: skip
    with pytest.raises(ValueError, match="5 train images but 40"):
        load_vim1(broken_copy)


@pytest.mark.parametrize("damage", ["truncate", "text"])
def test_truncated_or_non_hdf5_responses(broken_copy, damage):
    path = broken_copy / "EstimatedResponses.mat"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("this is not a MAT-file\n")
    with pytest.raises(ValueError, match=r"MATLAB v7\.3") as error:
        load_vim1(broken_copy)
    assert str(path) in str(error.value)


def test_truncated_stimuli(broken_copy):
    path = broken_copy / "Stimuli.mat"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"Stimuli\.mat") as error:
        load_vim1(broken_copy)
    assert "not a readable MATLAB v5 file" in str(error.value)


def test_unknown_rois_and_subjects(synthetic):
    directory, _ = synthetic
    with pytest.raises(ValueError, match="unknown ROI name 'V5'"):
        load_vim1(directory, 1, "V5")
    with pytest.raises(ValueError, match="unknown ROI code 9"):
        load_vim1(directory, 1, 9)
    with pytest.raises(ValueError, match="empty list"):
        load_vim1(directory, 1, [])
    with pytest.raises(ValueError, match=r"no data for subject 3.*subject\(s\) \[1, 2\]"):
        load_vim1(directory, 3)
    with pytest.raises(ValueError, match="nan_policy"):
        load_vim1(directory, 1, nan_policy="zero")


def test_full_resolution_files(tmp_path, monkeypatch):
    mat73 = pytest.importorskip("mat73")
    # the real release holds 120 images per file; 4 per file keeps the test small
    monkeypatch.setattr(vim1_format, "FULLRES_IMAGES_PER_FILE", 4)
    files = make_synthetic_vim1(tmp_path, n_train=6, n_val=2, n_voxels=16, subjects=(1,),
                                full_res=True, progress=False)  # fmt: skip
    assert [p.name for p in files.full_res] == [
        "Stimuli_Trn_FullRes_01.mat", "Stimuli_Trn_FullRes_02.mat", "Stimuli_Val_FullRes.mat"
    ]  # fmt: skip
    data = load_vim1(tmp_path, 1, "all", full_res=True)
    assert data.stim_train.shape == (6, 500, 500) and data.stim_val.shape == (2, 500, 500)
    with h5py.File(files.full_res[1], "r") as handle:
        assert handle["stimTrn"].shape == (500, 500, 2)
    by_mat73 = mat73.loadmat(str(files.full_res[1]))["stimTrn"]
    np.testing.assert_array_equal(by_mat73, data.stim_train[4:])
    small = load_vim1(tmp_path, 1, "all").stim_train
    # the 500 px image is the 128 px one upsampled (same orientation, same content)
    import skimage.transform

    downsampled = skimage.transform.resize(data.stim_train[5], (128, 128), order=1)
    assert np.corrcoef(downsampled.ravel(), small[5].ravel())[0, 1] > 0.95
