"""The study scripts (``scripts/NN_*.py``) run in order, as subprocesses, on one small synthetic
vim-1 set; their outputs are checked against the files and the known ground truth."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import h5py
import numpy as np
import pytest

from v4jax.data import ROI_NAMES, make_synthetic_vim1
from v4jax.features.models import output_shapes, variant_spec

# Every script runs end to end on a synthetic set (a minute on 2 cores): the slow run.
pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
STEPS = (
    "01_explore_data",
    "02_extract_conv3",
    "03_extract_conv3_retinawarp",
    "04_fit_v4_pls_ridge",
    "05_fit_v4_pls_ridge_retinawarp",
)
N_TRAIN, N_VAL, N_TEST = 200, 40, 40
VOXELS = {1: 600, 2: 500}
ALPHAS = (1e1, 1e3, 1e5, 1e7, 1e9)
COMPONENTS = (1, 2, 4, 8)
FIT_OPTIONS = [
    "--n-test", str(N_TEST), "--cv", "4", "--figure-formats", "png",
    "--alphas", *map(str, ALPHAS), "--components", *map(str, COMPONENTS),
]  # fmt: skip
ARM_FITS = {"plain": "04_fit_v4_pls_ridge", "retina": "05_fit_v4_pls_ridge_retinawarp"}
PNG = b"\x89PNG\r\n\x1a\n"


class StudyRun(NamedTuple):
    data_dir: Path
    out: Path
    stdout: dict[str, str]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory: pytest.TempPathFactory) -> StudyRun:
    """Write the synthetic set (signal in V4 only) and run the five scripts in order."""
    root = tmp_path_factory.mktemp("scripts")
    data_dir, out = root / "data", root / "out"
    make_synthetic_vim1(
        data_dir,
        n_train=N_TRAIN,
        n_val=N_VAL,
        n_voxels=VOXELS,
        subjects=tuple(VOXELS),
        signal_rois=(6,),
        seed=0,
        progress=False,
    )
    data = ["--data-dir", str(data_dir)]
    fit = [*data, "--features-dir", str(out), "--out", str(out), *FIT_OPTIONS, "--quiet"]
    arguments = {
        "01_explore_data": [*data, "--out", str(out / "explore")],
        "02_extract_conv3": [*data, "--out", str(out), "--quiet"],
        "03_extract_conv3_retinawarp": [*data, "--out", str(out), "--quiet"],
        "04_fit_v4_pls_ridge": fit,
        "05_fit_v4_pls_ridge_retinawarp": fit,
    }
    # The scripts run as a user runs them: one CPU device, not conftest's four simulated ones
    # (sharding them costs time here). Scripts 02/03 and 04/05 compile the same functions: a
    # persistent compilation cache shares them.
    xla_flags = os.environ.get("XLA_FLAGS", "").split()
    env = {
        **os.environ,
        "XLA_FLAGS": " ".join(f for f in xla_flags if "force_host_platform_device_count" not in f),
        "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    stdout = {}
    for name in STEPS:
        completed = subprocess.run(
            [sys.executable, str(SCRIPTS / f"{name}.py"), *arguments[name]],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
        )
        assert completed.returncode == 0, f"{name} failed:\n{completed.stderr}"
        stdout[name] = completed.stdout
    return StudyRun(data_dir, out, stdout)


def printed_roi_counts(stdout: str) -> dict[int, dict[int, tuple[int, int, int]]]:
    """subject -> ROI code -> (voxels, voxels with a NaN, all-NaN voxels) from the table."""
    counts: dict[int, dict[int, tuple[int, int, int]]] = {}
    for line in stdout.splitlines():
        if header := re.match(r"subject (\d+):", line):
            subject = int(header[1])
            counts[subject] = {}
        elif row := re.match(r"(\w+)\s+([0-7])\s+(\d+)\s+(\d+)\s+(\d+)\s", line):
            assert row[1] == ROI_NAMES[int(row[2])]
            counts[subject][int(row[2])] = (int(row[3]), int(row[4]), int(row[5]))
    return counts


def file_roi_counts(path: Path, subject: int) -> dict[int, tuple[int, int, int]]:
    """The same counts read straight from EstimatedResponses.mat with h5py."""
    with h5py.File(path, "r") as handle:
        roi = handle[f"roiS{subject}"][0, :].astype(int)
        nan = np.isnan(
            np.concatenate([handle[f"dataTrnS{subject}"][...], handle[f"dataValS{subject}"][...]])
        )
    return {
        code: (
            int(np.sum(roi == code)),
            int(nan[:, roi == code].any(axis=0).sum()),
            int(nan[:, roi == code].all(axis=0).sum()),
        )
        for code in range(8)
    }


def test_explore_prints_the_roi_and_nan_counts_of_the_file(study_run):
    printed = printed_roi_counts(study_run.stdout["01_explore_data"])
    responses = study_run.data_dir / "EstimatedResponses.mat"
    expected = {subject: file_roi_counts(responses, subject) for subject in VOXELS}
    assert printed == expected
    for subject, counts in expected.items():
        assert sum(voxels for voxels, _, _ in counts.values()) == VOXELS[subject]
        assert counts[6][0] > 0 and sum(any_nan for _, any_nan, _ in counts.values()) > 0
        figure = study_run.out / "explore" / f"responses_S{subject}.png"
        assert figure.read_bytes()[:8] == PNG


def test_extraction_writes_conv3_of_every_stimulus_per_arm(study_run):
    size = variant_spec("torchvision").input_size
    conv3 = output_shapes("torchvision", size, size, ["conv3"])["conv3"]
    first = {}
    for arm, transform in (("plain", "none"), ("retina", "RetinaWarp(")):
        with h5py.File(study_run.out / f"features_torchvision_{arm}.h5", "r") as handle:
            assert handle["conv3"].shape == (N_TRAIN + N_VAL, *conv3)
            assert handle.attrs["transform"].startswith(transform)
            first[arm] = handle["conv3"][:4]
        assert (
            f"{arm} conv3 features:"
            in study_run.stdout[
                "02_extract_conv3" if arm == "plain" else "03_extract_conv3_retinawarp"
            ]
        )
    assert np.isfinite(first["plain"]).all() and np.isfinite(first["retina"]).all()
    assert not np.allclose(first["plain"], first["retina"])


@pytest.mark.parametrize("arm", ["plain", "retina"])
def test_fit_predicts_the_signal_voxels_and_reports(study_run, arm):
    results = study_run.out / f"results_{arm}.h5"
    with h5py.File(results, "r") as handle:
        signal = handle["S1/voxels/signal_mask"][...]
        assert signal.sum() >= 5
        for method, grid in (("ridge", ALPHAS), ("pls", COMPONENTS)):
            fitted = handle[f"S1/{arm}/{method}"]
            np.testing.assert_allclose(fitted["grid"][...], grid)
            val_r = fitted["val_r"][...]
            assert np.median(val_r[signal]) > 0
            assert np.median(val_r[signal]) > np.median(val_r[~signal])
    summary = json.loads(results.with_suffix(".json").read_text())
    assert {(row["subject"], row["arm"], row["method"]) for row in summary["fits"]} == {
        (1, arm, "ridge"),
        (1, arm, "pls"),
    }
    printed = study_run.stdout[ARM_FITS[arm]]
    for method in ("ridge", "pls"):
        assert re.search(rf"S1\s+V4\s+{arm}\s+{method}\s+{signal.size}\s", printed)
    figures = sorted((study_run.out / f"figures_{arm}").glob("*.png"))
    assert figures and all(figure.read_bytes()[:8] == PNG for figure in figures)


def load_script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``scripts/<name>.py`` in this process (its directory on sys.path, as when run)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", STEPS)
def test_help_gives_the_command_to_run(name, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script(name, monkeypatch).main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"python scripts/{name}.py --data-dir" in text
    assert "Corresponds to the original study's" in text


def test_fit_without_features_exits_with_one_clear_message(
    study_run, tmp_path, monkeypatch, capsys
):
    fit = load_script("04_fit_v4_pls_ridge", monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        fit.main(
            [
                "--data-dir", str(study_run.data_dir),
                "--features-dir", str(tmp_path / "absent"),
                "--out", str(tmp_path),
            ]
        )  # fmt: skip
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "features_torchvision_plain.h5" in error and "does not exist" in error
