"""Full-size subject (25,915 voxels): generation time and the memory of loading V4 (slow)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from v4jax.data import make_synthetic_vim1

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data_memory.py"


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("bench_data_memory", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_full_size_subject_v4_load_stays_far_below_the_full_matrix(tmp_path):
    start = time.perf_counter()
    make_synthetic_vim1(tmp_path, subjects=(1,), progress=False)
    generation_seconds = time.perf_counter() - start
    with h5py.File(tmp_path / "EstimatedResponses.mat", "r") as handle:
        assert handle["dataTrnS1"].shape == (1750, 25915)
        assert np.bincount(handle["roiS1"][0])[6] == 1550
    assert generation_seconds < 120
    bench = _benchmark_module()
    full_mb = (1750 + 120) * 25915 * 4 / 2**20
    responses = bench._measure("responses_v4", tmp_path)
    load = bench._measure("load_v4", tmp_path)
    stimuli = bench._measure("stimuli", tmp_path)
    full = bench._measure("full_matrix", tmp_path)
    assert responses["peak_delta_mb"] < 0.35 * full_mb
    assert full["peak_delta_mb"] > 0.9 * full_mb  # the measurement sees a full read
    assert load["peak_delta_mb"] < stimuli["peak_delta_mb"] + 0.35 * full_mb
    assert load["peak_delta_mb"] < full["peak_delta_mb"] + stimuli["peak_delta_mb"] * 0.5
