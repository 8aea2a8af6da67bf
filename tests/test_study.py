"""The end-to-end study: a reduced `v4jax demo` (with its closing layer x ROI sweep) and the
CLI's handling of bad arguments. The cases that need the demo's output are slow (the demo takes
about a minute); run them with `pytest -m slow`."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from v4jax.pipeline.cli import main

REDUCED_DEMO = ["--n-train", "300", "--n-val", "60", "--voxels", "900", "--quiet"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--workdir", str(work), *REDUCED_DEMO]) == 0
    return work


@pytest.mark.slow
def test_reduced_demo_writes_results_summary_and_figures(demo_dir):
    results = demo_dir / "results.h5"
    assert results.exists()
    summary = json.loads((demo_dir / "results.json").read_text())
    assert {(row["subject"], row["arm"], row["method"]) for row in summary["fits"]} == {
        (subject, arm, method)
        for subject in (1, 2)
        for arm in ("plain", "retina")
        for method in ("ridge", "pls")
    }
    figures = sorted((demo_dir / "figures").glob("*.png"))
    assert len(figures) >= 5
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert figure.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    # The closing sweep (the full-size demo, not this reduced one, has images enough for V1's
    # best layer to come before V4's: see the README's Sweeps section).
    layers = ["pool1", "pool2", "conv3", "conv5"]
    assert set(summary["layer_sweep"]) == {"V1", "V2", "V4", "LO"}
    assert all(list(summary["layer_sweep"][roi]) == layers for roi in summary["layer_sweep"])
    best = summary["best_layer"]
    assert best == {roi: max(r, key=r.get) for roi, r in summary["layer_sweep"].items()}
    assert (demo_dir / "figures" / "layer_roi.png").read_bytes()[:4] == b"\x89PNG"
    with h5py.File(results) as handle:
        config = json.loads(handle.attrs["config"])
        assert config["command"] == "demo"
        assert "jax" in json.loads(handle.attrs["versions"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ridge", "pls"])
def test_fitted_scores_respect_the_known_ground_truth(demo_dir, method):
    with h5py.File(demo_dir / "results.h5") as handle:
        for subject in (1, 2):
            group = handle[f"S{subject}"]
            ceiling = group["voxels/noise_ceiling_r"][...]
            signal = group["voxels/signal_mask"][...]
            assert signal.sum() >= 10 and (~signal).sum() >= 5
            fitted = group[f"plain/{method}"]
            val_r = fitted["val_r"][...]
            truth = group["truth/val"][...]
            prediction = fitted["pred_val"][...]
            recomputed = [np.corrcoef(truth[:, v], prediction[:, v])[0, 1] for v in range(3)]
            np.testing.assert_allclose(val_r[:3], recomputed, rtol=1e-4)
            assert np.median(val_r[signal]) > 0.2
            assert np.median(val_r[signal] / ceiling[signal]) < 1.0
            # Noise-only voxels: near zero, within the sampling spread of r over the images.
            assert abs(np.median(val_r[~signal])) < 2 / np.sqrt(truth.shape[0])
            assert np.median(val_r[~signal]) < 0.5 * np.median(val_r[signal])
            grid = fitted["grid"][...]
            assert np.isin(fitted["best_hyperparameter"][...], grid).all()


@pytest.mark.slow
def test_signal_voxels_reach_most_of_the_noise_ceiling(demo_dir):
    with h5py.File(demo_dir / "results.h5") as handle:
        group = handle["S1"]
        signal = group["voxels/signal_mask"][...]
        ceiling = group["voxels/noise_ceiling_r"][...]
        ratio = np.median(group["plain/ridge/val_r"][...][signal] / ceiling[signal])
    assert ratio >= 0.6


def run_cli(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "v4jax.pipeline.cli", *arguments], capture_output=True, text=True
    )


def test_missing_data_dir_exits_with_one_clear_message(tmp_path):
    completed = run_cli("fit", "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path))
    assert completed.returncode == 2
    assert "does not exist" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_unknown_layer_exits_with_one_clear_message(demo_dir, tmp_path):
    completed = run_cli(
        "extract", "--data-dir", str(demo_dir / "data"), "--out", str(tmp_path),
        "--layers", "conv9", "--no-retina", "--quiet",
    )  # fmt: skip
    assert completed.returncode == 2
    assert "conv9" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("roi", ["", "V9"])
def test_empty_or_unknown_roi_exits_with_one_clear_message(demo_dir, roi):
    completed = run_cli(
        "fit", "--data-dir", str(demo_dir / "data"), "--out", str(demo_dir),
        "--roi", roi, "--methods", "ridge", "--quiet",
    )  # fmt: skip
    assert completed.returncode == 2
    assert "ROI" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_fit_passes_n_test_to_the_split_and_refuses_one_larger_than_the_training_set(demo_dir):
    completed = run_cli(
        "fit", "--data-dir", str(demo_dir / "data"), "--out", str(demo_dir),
        "--methods", "ridge", "--n-test", "5000", "--quiet",
    )  # fmt: skip
    assert completed.returncode == 2
    assert "n_test" in completed.stderr and "5000" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_weights_of_the_wrong_variant_exit_with_one_clear_message(demo_dir, tmp_path):
    import jax

    from v4jax.features.models import init_params
    from v4jax.features.weights import save_params

    weights = tmp_path / "caffe.msgpack"
    save_params(init_params(jax.random.key(0), "caffe"), weights, variant="caffe")
    completed = run_cli(
        "extract", "--data-dir", str(demo_dir / "data"), "--out", str(tmp_path),
        "--weights", str(weights), "--variant", "torchvision", "--no-retina", "--quiet",
    )  # fmt: skip
    assert completed.returncode == 2
    assert "caffe" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_banded_method_fits_both_arms_as_two_bands(demo_dir, tmp_path):
    from v4jax.pipeline import study

    features = {arm: study.features_path(demo_dir, arm, "torchvision") for arm in study.ARMS}
    results = study.fit_study(
        demo_dir / "data",
        features,
        tmp_path / "results.h5",
        subjects=(1,),
        settings=study.FitSettings(methods=("banded",), n_test=43),
        progress=False,
    )
    with h5py.File(results) as handle:
        banded = handle["S1/plain+retina/banded"]
        signal = handle["S1/voxels/signal_mask"][...]
        assert np.median(banded["val_r"][...][signal]) > 0.2
        assert banded["cv_scores"].shape == (25, signal.size)


@pytest.mark.slow
def test_fit_methods_fwrf_records_receptive_fields_and_the_report_draws_them(demo_dir, tmp_path):
    from v4jax.pipeline import study

    features = study.features_path(demo_dir, "plain", "torchvision")
    (tmp_path / features.name).symlink_to(features)
    command = ["--data-dir", str(demo_dir / "data"), "--out", str(tmp_path), "--quiet"]
    assert main(["fit", *command, "--methods", "fwrf", "--no-retina", "--n-test", "43"]) == 0
    with h5py.File(tmp_path / "results.h5") as handle:
        fwrf = handle["S1/plain/fwrf"]
        signal = handle["S1/voxels/signal_mask"][...]
        centres = fwrf["rf_centres"][...]
        assert centres.shape == (signal.size, 2)
        assert tuple(fwrf.attrs["rf_map_shape"]) == (13, 13)
        assert np.all((centres >= 0) & (centres <= 12)) and np.all(fwrf["rf_sizes"][...] > 0)
        assert np.median(fwrf["val_r"][...][signal]) > 0.2
    assert main(["report", "--out", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "figures" / "receptive_fields_S1_plain_fwrf.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["readout", "fwrf"])
def test_map_methods_fit_the_flattened_design_as_feature_maps(method):
    # The study passes (n, H * W * C) designs; the map methods see (n, H, W, C) maps, and their
    # results predict from the flattened design as from the maps.
    from v4jax.pipeline import study

    rng = np.random.default_rng(31)
    maps = rng.standard_normal((80, 5, 5, 6)).astype(np.float32)
    Y = maps[:, 2, 2, :2] @ rng.standard_normal((2, 3)).astype(np.float32)
    Y += 0.1 * rng.standard_normal(Y.shape).astype(np.float32)
    flat = maps.reshape(80, -1)
    settings = study.FitSettings(methods=(method,), cv=3)
    result = study.SOLVERS[method].fit([flat], [(5, 5, 6)], Y, settings, False)
    prediction = np.asarray(result.predict(flat))
    assert prediction.shape == Y.shape
    assert np.median([np.corrcoef(Y[:, j], prediction[:, j])[0, 1] for j in range(3)]) > 0.9
