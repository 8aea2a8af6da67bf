"""Out-of-core sweeps: block results equal whole-array fits, crash-safe resume, CLI."""

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from v4jax import make_folds
from v4jax.pipeline.sweep import (
    PARTIAL_SUFFIX,
    ArraySource,
    add_sweep_command,
    feature_layers,
    parse_responses,
    resolve_devices,
    run_sweep,
)
from v4jax.solvers.engine.result import chosen_values
from v4jax.solvers.pls import pls1_cv
from v4jax.solvers.ridge import ridge_cv

ALPHAS = (0.1, 10.0, 1000.0)
N_SAMPLES, N_TEST, N_VOXELS = 70, 10, 22
NAN_VOXEL = 5
WORKER = Path(__file__).parent / "helpers" / "sweep_worker.py"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Features file (a dual-path and a primal-path layer) and a responses file with one NaN."""
    folder = tmp_path_factory.mktemp("sweep_inputs")
    rng = np.random.default_rng(8)
    wide = rng.standard_normal((N_SAMPLES, 3, 30)).astype(np.float32) + 1.0
    narrow = rng.standard_normal((N_SAMPLES, 20)).astype(np.float32)
    signal_part = wide.reshape(N_SAMPLES, -1) @ rng.standard_normal((90, N_VOXELS))
    noise = rng.standard_normal((N_SAMPLES, N_VOXELS)) * rng.uniform(1, 20, N_VOXELS)
    responses = (signal_part + noise).astype(np.float32)
    responses[3, NAN_VOXEL] = np.nan
    with h5py.File(folder / "features.h5", "w") as handle:
        handle["wide"] = wide
        handle["narrow"] = narrow
    with h5py.File(folder / "responses.h5", "w") as handle:
        handle.create_dataset("Y", data=responses, chunks=(N_SAMPLES, 4))
    return {
        "features": folder / "features.h5",
        "responses": ArraySource(folder / "responses.h5", "Y"),
        "designs": {"wide": wide.reshape(N_SAMPLES, -1), "narrow": narrow},
        "Y": responses,
    }


def sweep(inputs, out, **settings):
    arguments = {
        "methods": ("ridge", "pls"),
        "alphas": ALPHAS,
        "n_components": 3,
        "cv": 3,
        "n_test": N_TEST,
        "block_voxels": 4,
        "progress": False,
    }
    arguments.update(settings)
    return run_sweep(feature_layers(inputs["features"]), inputs["responses"], out, **arguments)


def read_results(path):
    with h5py.File(path, "r") as handle:
        results = {}
        handle.visititems(
            lambda name, item: (
                results.__setitem__(name, item[...]) if isinstance(item, h5py.Dataset) else None
            )
        )
        return results, dict(handle.attrs)


def test_block_results_equal_whole_array_fits_and_a_numpy_score(inputs, tmp_path):
    with pytest.warns(UserWarning, match="1 voxel"):
        summary = sweep(inputs, tmp_path / "out.h5", save_coef=True, devices=1)
    assert summary.n_blocks == 6 and len(summary.computed) == 2 * 2 * 6
    assert not (tmp_path / ("out.h5" + PARTIAL_SUFFIX)).exists()
    results, attrs = read_results(tmp_path / "out.h5")
    assert attrs["n_voxels"] == N_VOXELS
    keep = np.arange(N_VOXELS) != NAN_VOXEL
    np.testing.assert_array_equal(results["valid"], keep)
    Y = inputs["Y"][:, keep].astype(np.float64)
    fit, test = slice(0, N_SAMPLES - N_TEST), slice(N_SAMPLES - N_TEST, N_SAMPLES)
    folds = make_folds(3, N_SAMPLES - N_TEST)
    for layer, X in inputs["designs"].items():
        X = X.astype(np.float64)
        references = {
            "ridge": ridge_cv(X[fit], Y[fit], ALPHAS, cv=folds),
            "pls": pls1_cv(X[fit], Y[fit], 3, cv=folds),
        }
        for method, reference in references.items():
            group = f"{layer}/{method}/"
            assert np.all(results[group + "completed_blocks"] == 1)
            agree = results[group + "best_hyperparameter"][keep] == chosen_values(reference)
            assert agree.mean() >= 0.9, (layer, method)  # float32 sweep vs float64 reference
            np.testing.assert_allclose(
                results[group + "cv_scores"][:, keep], np.asarray(reference.cv_scores),
                rtol=2e-3, atol=2e-3,
            )  # fmt: skip
            assert np.all(np.isnan(results[group + "cv_scores"][:, NAN_VOXEL]))
            assert results[group + "best_index"][NAN_VOXEL] == -1
            # Held-out scores, recomputed in numpy from the stored coefficients.
            coef = results[group + "coef"][keep].T.astype(np.float64)
            predictions = X[test] @ coef + results[group + "intercept"][keep]
            numpy_r = [np.corrcoef(Y[test, v], predictions[:, v])[0, 1] for v in range(Y.shape[1])]
            np.testing.assert_allclose(results[group + "test_r"][keep], numpy_r, atol=1e-4)
            matching = agree[None, :]
            reference_coef = np.asarray(reference.coef)
            error = np.linalg.norm((coef - reference_coef) * matching) / np.linalg.norm(
                reference_coef * matching
            )
            assert error < 1e-3, (layer, method, error)


class _Interrupt(RuntimeError):
    pass


class _InterruptAfter(logging.Handler):
    """Raises inside the sweep once ``count`` blocks have been written."""

    def __init__(self, count):
        super().__init__(logging.INFO)
        self.remaining = count

    def emit(self, record):
        if "written" not in record.getMessage():
            return
        self.remaining -= 1
        if self.remaining == 0:
            raise _Interrupt


def test_an_interrupted_sweep_resumes_and_refuses_changed_settings(inputs, tmp_path):
    out = tmp_path / "out.h5"
    sweep_logger = logging.getLogger("v4jax.pipeline.sweep")
    handler = _InterruptAfter(3)
    sweep_logger.addHandler(handler)
    sweep_logger.setLevel(logging.INFO)
    try:
        with pytest.raises(_Interrupt), pytest.warns(UserWarning):
            sweep(inputs, out, methods=("ridge",), devices=1)
    finally:
        sweep_logger.removeHandler(handler)
        sweep_logger.setLevel(logging.NOTSET)
    partial = tmp_path / ("out.h5" + PARTIAL_SUFFIX)
    assert partial.exists() and not out.exists()
    with pytest.raises(ValueError, match=r"cannot resume.*changed: grids"):
        sweep(inputs, out, methods=("ridge",), alphas=(1.0, 2.0))
    with pytest.warns(UserWarning):
        summary = sweep(inputs, out, methods=("ridge",), devices=1)
    assert [block for _, _, block in summary.computed[:3]] == [3, 4, 5]
    assert len(summary.computed) == 2 * 6 - 3
    with pytest.raises(FileExistsError, match="overwrite"):
        sweep(inputs, out, methods=("ridge",))
    with pytest.warns(UserWarning):
        sweep(inputs, tmp_path / "whole.h5", methods=("ridge",), devices=1)
    resumed, _ = read_results(out)
    whole, _ = read_results(tmp_path / "whole.h5")
    assert resumed.keys() == whole.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


def _completed_blocks(partial):
    try:
        with h5py.File(partial, "r", locking=False) as handle:
            return {
                name: handle[f"{name}/completed_blocks"][...].copy()
                for name in ("wide/ridge", "wide/pls", "narrow/ridge", "narrow/pls")
            }
    except (OSError, KeyError):
        return None


def test_a_killed_sweep_process_resumes_without_recomputing_finished_blocks(inputs, tmp_path):
    out = tmp_path / "out.h5"
    partial = tmp_path / ("out.h5" + PARTIAL_SUFFIX)
    responses = f"{inputs['responses'].path}:Y"
    process = subprocess.Popen(
        [sys.executable, str(WORKER), str(inputs["features"]), responses, str(out), "0.4"],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and process.poll() is None:
            done = _completed_blocks(partial) if partial.exists() else None
            if done is not None and sum(int(flags.sum()) for flags in done.values()) >= 3:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stdout.close()
    assert not out.exists()
    before = _completed_blocks(partial)
    finished = {(name, block) for name, flags in before.items() for block in np.flatnonzero(flags)}
    assert 3 <= len(finished) < 24
    with pytest.warns(UserWarning):
        summary = sweep(inputs, out, devices=1)
    recomputed = {(f"{layer}/{method}", block) for layer, method, block in summary.computed}
    assert not recomputed & finished
    assert len(recomputed) + len(finished) == 24
    with pytest.warns(UserWarning):
        sweep(inputs, tmp_path / "whole.h5", devices=1)
    resumed, _ = read_results(out)
    whole, _ = read_results(tmp_path / "whole.h5")
    for name in whole:
        np.testing.assert_allclose(resumed[name], whole[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_command_line_sweep_and_input_errors(inputs, tmp_path):
    parser = argparse.ArgumentParser()
    add_sweep_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    arguments = parser.parse_args(
        ["sweep", "--features", str(inputs["features"]), "--layers", "narrow",
         "--responses", f"{inputs['responses'].path}:Y", "--alphas", "0.1,10,1000", "--cv", "3",
         "--n-test", str(N_TEST), "--block-voxels", "8", "--devices", "1", "--out", str(out),
         "--quiet"]
    )  # fmt: skip
    with pytest.warns(UserWarning):
        assert arguments.handler(arguments) == 0
    results, _ = read_results(out / "sweep.h5")
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["rois"] == ["all"] and summary["score"] == "test_r"
    test_r = results["narrow/ridge/test_r"][np.arange(N_VOXELS) != NAN_VOXEL]
    assert summary["layer_sweep"]["all"]["narrow"] == pytest.approx(float(np.median(test_r)))
    assert (out / "figures" / "layer_roi.png").read_bytes()[:4] == b"\x89PNG"
    assert set(results) >= {"narrow/ridge/best_hyperparameter", "narrow/ridge/test_r2"}
    assert "wide/ridge/cv_scores" not in results
    assert np.isfinite(results["narrow/ridge/test_r"][np.arange(N_VOXELS) != NAN_VOXEL]).all()

    with pytest.raises(ValueError, match="FILE:DATASET"):
        parse_responses("responses.h5")
    with pytest.raises(ValueError, match="no layer"):
        feature_layers(inputs["features"], ["conv9"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        feature_layers(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="local device"):
        resolve_devices(99)
    with pytest.raises(ValueError, match="no dataset"):
        run_sweep(feature_layers(inputs["features"]), ArraySource(inputs["responses"].path, "Z"),
                  tmp_path / "x.h5")  # fmt: skip
    short = tmp_path / "short.h5"
    with h5py.File(short, "w") as handle:
        handle["Y"] = inputs["Y"][:50]
    with pytest.raises(ValueError, match="has 70 images but the responses have 50"):
        run_sweep(feature_layers(inputs["features"]), ArraySource(short, "Y"), tmp_path / "y.h5")
    with pytest.raises(ValueError, match="unknown or no method"):
        sweep(inputs, tmp_path / "z.h5", methods=("lasso",))


@pytest.mark.slow
def test_out_of_core_peak_memory_does_not_grow_with_voxels(tmp_path):
    """Fresh processes sweep 20,000 and 200,000 voxels (a 229 MB response file): the peak RSS
    stays put, and within the long run it plateaus after the first blocks."""
    bench = Path(__file__).parents[1] / "benchmarks" / "bench_scale.py"
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    reports = {}
    for n_voxels in (20000, 200000):
        result = subprocess.run(
            [sys.executable, str(bench), "--child", "memory", "--voxels", str(n_voxels),
             "--samples", "300", "--features", "400", "--alphas", "5", "--folds", "5",
             "--block-voxels", "2048", "--workdir", str(tmp_path)],
            env=environment, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["blocks"] == -(-n_voxels // 2048)
        assert report["median_test_r"] > 0.3  # the planted signal is recovered
        reports[n_voxels] = report
    responses_mb = 300 * 200000 * 4 / 2**20
    growth = reports[200000]["peak_rss_mb"] - reports[20000]["peak_rss_mb"]
    assert growth < 0.25 * responses_mb, (growth, responses_mb)
    trace = reports[200000]["peak_rss_mb_after_block"]
    assert trace[-1] - trace[len(trace) // 3] < 0.15 * responses_mb, trace


def test_vim1_source_streams_an_roi_and_scores_the_validation_images(tmp_path):
    from v4jax.data import make_synthetic_vim1, open_responses
    from v4jax.pipeline.sweep import Vim1Source

    make_synthetic_vim1(
        tmp_path, n_train=40, n_val=10, n_voxels=30, subjects=(1,), seed=3, progress=False
    )
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 25)).astype(np.float32)
    with h5py.File(tmp_path / "features.h5", "w") as handle:
        handle["layer"] = X
    with open_responses(tmp_path, 1) as responses:
        columns = responses.columns_for(["V1", "V4", "other"])
        train, val = responses.read_voxel_block(columns)
    with pytest.warns(UserWarning, match="NaN"):
        run_sweep(
            feature_layers(tmp_path / "features.h5"),
            Vim1Source(tmp_path, 1, ["V1", "V4", "other"]),
            tmp_path / "out.h5",
            alphas=ALPHAS,
            cv=3,
            block_voxels=3,
            devices=2,
            progress=False,
        )
    results, _ = read_results(tmp_path / "out.h5")
    np.testing.assert_array_equal(results["voxel_columns"], columns)
    valid = np.isfinite(train).all(0) & np.isfinite(val).all(0)
    assert 0 < valid.sum() < valid.size  # the synthetic set has NaN voxels
    np.testing.assert_array_equal(results["valid"], valid)
    reference = ridge_cv(
        X[:40].astype(np.float64), train[:, valid].astype(np.float64), ALPHAS, cv=3
    )
    # float32 sweep against a float64 fit: 1e-4 relative (scores of overfitted small alphas
    # reach |R²| ~ 15, where 1e-4 absolute would ask for 7e-6 relative).
    np.testing.assert_allclose(
        results["layer/ridge/cv_scores"][:, valid],
        np.asarray(reference.cv_scores),
        rtol=1e-4,
        atol=1e-4,
    )
    predictions = X[40:].astype(np.float64) @ np.asarray(reference.coef) + np.asarray(
        reference.intercept
    )
    expected_r2 = 1 - ((val[:, valid] - predictions) ** 2).sum(0) / (
        (val[:, valid] - val[:, valid].mean(0)) ** 2
    ).sum(0)
    agree = results["layer/ridge/best_hyperparameter"][valid] == np.asarray(reference.best_alphas)
    assert agree.mean() > 0.9
    np.testing.assert_allclose(results["layer/ridge/val_r2"][valid][agree], expected_r2[agree],
                               rtol=1e-3, atol=1e-3)  # fmt: skip
    assert "layer/ridge/test_r" not in results


@pytest.mark.slow
def test_fwrf_sweep_blocks_equal_one_fwrf_cv_over_every_voxel(tmp_path):
    from v4jax.solvers.fwrf import fwrf_cv

    rng = np.random.default_rng(41)
    maps = rng.standard_normal((N_SAMPLES, 5, 5, 4)).astype(np.float32)
    Y = maps[:, 1, 3, :] @ rng.standard_normal((4, 6)) + 0.3 * rng.standard_normal((N_SAMPLES, 6))
    with h5py.File(tmp_path / "features.h5", "w") as handle:
        handle["maps"] = maps
        handle["flat"] = maps.reshape(N_SAMPLES, -1)
    with h5py.File(tmp_path / "responses.h5", "w") as handle:
        handle["Y"] = Y.astype(np.float32)
    responses = ArraySource(tmp_path / "responses.h5", "Y")
    settings = {"methods": ("fwrf",), "cv": 3, "n_test": N_TEST, "progress": False}
    layers = feature_layers(tmp_path / "features.h5", ["maps"])
    run_sweep(layers, responses, tmp_path / "sweep.h5", block_voxels=4, **settings)
    results, _ = read_results(tmp_path / "sweep.h5")
    fit_rows = np.arange(N_SAMPLES - N_TEST)
    whole = fwrf_cv(maps[fit_rows], Y[fit_rows].astype(np.float32), cv=3)
    alphas = np.asarray(whole.alphas)
    per_alpha = np.asarray(whole.cv_scores).reshape(-1, alphas.size, Y.shape[1]).max(axis=0)
    np.testing.assert_allclose(results["maps/fwrf/cv_scores"], per_alpha, atol=1e-5)
    chosen = alphas[np.asarray(whole.best_index) % alphas.size]
    np.testing.assert_array_equal(results["maps/fwrf/best_hyperparameter"], chosen)
    test_prediction = np.asarray(whole.predict(maps[N_SAMPLES - N_TEST :]))
    expected_r = [
        np.corrcoef(test_prediction[:, j], Y[N_SAMPLES - N_TEST :, j])[0, 1] for j in range(6)
    ]
    np.testing.assert_allclose(results["maps/fwrf/test_r"], expected_r, atol=1e-4)
    with pytest.raises(ValueError, match="fwrf pools"):
        run_sweep(feature_layers(tmp_path / "features.h5", ["flat"]), responses,
                  tmp_path / "flat.h5", **settings)  # fmt: skip
    with pytest.raises(ValueError, match="save_coef"):
        run_sweep(layers, responses, tmp_path / "coef.h5", save_coef=True, **settings)
