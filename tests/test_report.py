"""Figures and summary table from a small fake results file with the study's layout."""

import json

import h5py
import numpy as np
import pytest

from v4jax.pipeline.report import format_table, make_figures, read_results, summary_table

ARMS = ("plain", "retina")
METHODS = ("ridge", "pls")
GRIDS = {"ridge": ("alpha", np.logspace(-2, 6, 17)), "pls": ("n_components", np.arange(1.0, 11))}
N_VOXELS = {1: 80, 2: 60}
N_TEST, N_VAL = 25, 20


def _write_fake_results(path, *, with_ceiling_for=(1,), seed=0):
    """Random but fixed-seed numbers in the layout `v4jax fit` writes."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as handle:
        handle.attrs["config"] = json.dumps({"subjects": [1, 2], "settings": {"cv": 5}})
        handle.attrs["versions"] = json.dumps({"v4jax": "test"})
        handle.attrs["created"] = "2024-01-01T00:00:00+00:00"
        for subject, n_voxels in N_VOXELS.items():
            group = handle.create_group(f"S{subject}")
            group.attrs["roi"] = "V4"
            group.attrs["n_voxels"] = n_voxels
            group["voxels/voxel_index"] = np.sort(rng.choice(70000, n_voxels, replace=False))
            group["voxels/roi_codes"] = np.full(n_voxels, 6, np.uint8)
            signal = rng.random(n_voxels) < 0.6
            ceiling = np.where(signal, rng.uniform(0.3, 0.9, n_voxels), 0.0)
            if subject in with_ceiling_for:
                group["voxels/noise_ceiling_r"] = ceiling
                group["voxels/signal_mask"] = signal
            group["truth/test"] = rng.standard_normal((N_TEST, n_voxels)).astype(np.float32)
            group["truth/val"] = rng.standard_normal((N_VAL, n_voxels)).astype(np.float32)
            for arm in ARMS:
                for method in METHODS:
                    out = group.create_group(f"{arm}/{method}")
                    name, grid = GRIDS[method]
                    out.attrs["hyperparameter_name"] = name
                    out["grid"] = grid
                    path_shape = -(
                        (np.arange(grid.size)[:, None] - rng.integers(0, grid.size, n_voxels)) ** 2
                    )
                    out["cv_scores"] = (
                        0.2 + 0.002 * path_shape + 0.01 * rng.standard_normal((grid.size, n_voxels))
                    )
                    best_index = np.argmax(out["cv_scores"][...], axis=0)
                    out["best_hyperparameter"] = grid[best_index]
                    out["on_edge"] = np.isin(best_index, [0, grid.size - 1])
                    for part in ("test", "val"):
                        r = np.where(signal, 0.8 * ceiling, 0.0) + 0.08 * rng.standard_normal(
                            n_voxels
                        )
                        out[f"{part}_r"] = r
                        out[f"{part}_r2"] = r**2 - 0.05
                    out["pred_test"] = rng.standard_normal((N_TEST, n_voxels)).astype(np.float32)
                    out["pred_val"] = rng.standard_normal((N_VAL, n_voxels)).astype(np.float32)
                    average = out.create_group("roi_average")
                    true_val = rng.standard_normal(N_VAL).astype(np.float32)
                    pred_val = (0.5 * true_val + 0.5 * rng.standard_normal(N_VAL)).astype(
                        np.float32
                    )
                    average["true_val"] = true_val
                    average["pred_val"] = pred_val
                    r_val = float(np.corrcoef(true_val, pred_val)[0, 1])
                    average.attrs["best_hyperparameter"] = float(grid[grid.size // 2])
                    average.attrs["val_r"] = r_val
                    average.attrs["val_r2"] = 1 - np.sum((true_val - pred_val) ** 2) / np.sum(
                        (true_val - true_val.mean()) ** 2
                    )
                    average.attrs["test_r"] = float(rng.uniform(0.2, 0.6))
                    average.attrs["test_r2"] = float(rng.uniform(0.0, 0.3))
    return path


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory):
    return _write_fake_results(tmp_path_factory.mktemp("results") / "results.h5")


@pytest.fixture(scope="module")
def figures(fake_results, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, make_figures(fake_results, out)


EXPECTED_STEMS = [
    "accuracy_plain",
    "accuracy_retina",
    *[
        f"{kind}_S{s}"
        for s in (1, 2)
        for kind in ("roi_average", "voxel_r_hist", "method_comparison", "arm_comparison")
    ],
    *[f"hyperparameters_S{s}_{arm}" for s in (1, 2) for arm in ARMS],
    "ceiling_S1",
]


def test_every_expected_figure_is_a_valid_nontrivial_png_and_pdf(figures):
    out, written = figures
    assert sorted(p.name for p in written) == sorted(
        f"{stem}.{fmt}" for stem in EXPECTED_STEMS for fmt in ("png", "pdf")
    )
    # S2 has no known noise ceiling, so no ceiling figure; no temporary files are left behind.
    assert not (out / "ceiling_S2.png").exists()
    assert sorted(out.iterdir()) == sorted(written)
    for stem in EXPECTED_STEMS:
        png = (out / f"{stem}.png").read_bytes()
        pdf = (out / f"{stem}.pdf").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert pdf[:5] == b"%PDF-" and pdf.rstrip().endswith(b"%%EOF"), stem
        assert len(png) > 20_000 and len(pdf) > 5_000, (stem, len(png), len(pdf))


def test_summary_rows_equal_numpy_on_the_file(fake_results):
    rows = summary_table(fake_results)
    assert [(r["subject"], r["arm"], r["method"]) for r in rows] == [
        (s, a, m) for s in (1, 2) for a in ARMS for m in METHODS
    ]
    with h5py.File(fake_results, "r") as handle:
        for row in rows:
            group = handle[f"S{row['subject']}/{row['arm']}/{row['method']}"]
            val_r, test_r = group["val_r"][...], group["test_r"][...]
            assert row["roi"] == "V4" and row["n_voxels"] == val_r.size
            assert row["median_val_r"] == pytest.approx(np.median(val_r), rel=1e-12)
            assert row["mean_val_r"] == pytest.approx(np.mean(val_r), rel=1e-12)
            assert row["median_test_r"] == pytest.approx(np.median(test_r), rel=1e-12)
            assert row["roi_average_val_r2"] == pytest.approx(
                group["roi_average"].attrs["val_r2"], rel=1e-12
            )
            assert row["fraction_on_edge"] == pytest.approx(np.mean(group["on_edge"][...]))
            voxels = handle[f"S{row['subject']}/voxels"]
            if "noise_ceiling_r" in voxels:
                ceiling = voxels["noise_ceiling_r"][...]
                keep = ceiling > 0
                expected = np.median(val_r[keep] / ceiling[keep])
                assert row["median_r_over_ceiling"] == pytest.approx(expected, rel=1e-12)
            else:
                assert row["median_r_over_ceiling"] is None


def test_format_table_has_a_header_a_rule_and_one_aligned_line_per_row(fake_results):
    rows = summary_table(fake_results)
    lines = format_table(rows).splitlines()
    assert len(lines) == len(rows) + 2
    assert "median val r" in lines[0] and set(lines[1]) <= {"-", " "}
    assert len({len(line) for line in lines}) == 1
    first = lines[2].split()
    assert first[:4] == ["S1", "V4", "plain", "ridge"]
    assert first[5] == f"{rows[0]['median_val_r']:.3f}"
    assert lines[-1].split()[-1] == "-"  # S2 has no ceiling


def test_read_results_exposes_arms_methods_and_run_attributes(fake_results):
    results = read_results(fake_results)
    assert results.arms == ["plain", "retina"] and results.methods == ["ridge", "pls"]
    assert results.config["settings"]["cv"] == 5
    assert results.subjects[0].noise_ceiling_r is not None
    assert results.subjects[1].noise_ceiling_r is None


def test_any_method_name_is_drawn(tmp_path):
    path = _write_fake_results(tmp_path / "results.h5")
    with h5py.File(path, "a") as handle:
        handle.copy("S1/plain/ridge", "S1/plain/banded")
        del handle["S2"]
    written = make_figures(path, tmp_path / "figures", formats=("png",))
    assert tmp_path / "figures" / "method_comparison_S1.png" in written
    methods = {r["method"] for r in summary_table(path) if r["arm"] == "plain"}
    assert methods == {"ridge", "pls", "banded"}


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda h: [h.__delitem__(name) for name in ("S1", "S2")], "no subject groups"),
        (lambda h: h.__delitem__("S2/voxels"), "group /S2/voxels is missing"),
        (lambda h: h.__delitem__("S1/retina/pls/val_r"), "/S1/retina/pls/val_r is missing"),
        (lambda h: h.__delitem__("S1/plain/ridge/roi_average"), "/S1/plain/ridge/roi_average"),
        (lambda h: [h.__delitem__(f"S1/{arm}") for arm in ARMS], "/S1 has no arm groups"),
    ],
)
def test_missing_groups_give_a_clear_error_naming_them(tmp_path, damage, message):
    path = _write_fake_results(tmp_path / "results.h5")
    with h5py.File(path, "a") as handle:
        damage(handle)
    with pytest.raises(ValueError, match=message):
        summary_table(path)
    with pytest.raises(ValueError, match=message):
        make_figures(path, tmp_path / "figures")
    assert not (tmp_path / "figures").exists() or not any((tmp_path / "figures").iterdir())


def test_missing_or_unreadable_files_and_bad_formats_are_refused(tmp_path, fake_results):
    with pytest.raises(FileNotFoundError, match="v4jax fit"):
        summary_table(tmp_path / "absent.h5")
    not_hdf5 = tmp_path / "results.h5"
    not_hdf5.write_text("not a results file")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        summary_table(not_hdf5)
    with pytest.raises(ValueError, match="formats"):
        make_figures(fake_results, tmp_path / "figures", formats=("bmpx",))


def _fake_sweep(path, rng, with_ceiling=True):
    """A sweep results file of 3 layers x 2 methods over 40 voxels of V1, V4 and "other"."""
    layers, n_voxels = ("conv1", "conv3", "fc6"), 40
    codes = rng.choice([0, 1, 6], n_voxels)
    val_r = rng.uniform(-0.2, 0.9, (2, len(layers), n_voxels))
    valid = np.ones(n_voxels, np.uint8)
    valid[3] = 0
    val_r[:, :, 3] = np.nan
    ceiling = rng.uniform(0.3, 1.0, n_voxels) * (rng.random(n_voxels) < 0.8)
    settings = {"methods": ["pls", "ridge"], "layers": [{"name": layer} for layer in layers]}
    with h5py.File(path, "w") as handle:
        handle.attrs["settings"] = json.dumps(settings)
        handle["roi_codes"] = codes
        handle["valid"] = valid
        if with_ceiling:
            handle["noise_ceiling_r"] = ceiling
        for m, method in enumerate(settings["methods"]):
            for index, layer in enumerate(layers):
                handle[f"{layer}/{method}/val_r"] = val_r[m, index]
    return layers, codes, val_r, valid.astype(bool), ceiling


def test_sweep_summary_equals_numpy_and_the_layer_roi_figure_is_drawn(tmp_path):
    from v4jax.pipeline.report import format_layer_sweep, make_sweep_figures, sweep_summary

    rng = np.random.default_rng(21)
    path = tmp_path / "sweep.h5"
    layers, codes, val_r, valid, ceiling = _fake_sweep(path, rng)
    summary = sweep_summary(path)
    assert summary["method"] == "ridge" and summary["score"] == "val_r"
    assert summary["layers"] == list(layers) and summary["rois"] == ["V1", "V4", "other"]
    for roi, code in (("V1", 1), ("V4", 6), ("other", 0)):
        voxels = valid & (codes == code)
        assert summary["n_voxels"][roi] == voxels.sum()
        for method, m in (("pls", 0), ("ridge", 1)):
            expected = np.median(val_r[m][:, voxels], axis=1)
            got = [summary["by_method"][method][roi][layer] for layer in layers]
            np.testing.assert_allclose(got, expected, rtol=1e-12)
        ridge = val_r[1][:, voxels]
        assert summary["best_layer"][roi] == layers[int(np.argmax(np.median(ridge, axis=1)))]
        winners = np.argmax(ridge, axis=0)
        for index, layer in enumerate(layers):
            fraction = summary["best_layer_per_voxel"][roi][layer]
            assert fraction == pytest.approx(np.mean(winners == index), abs=1e-12)
        known = voxels & (ceiling > 0)
        normalised = val_r[1][:, known] / ceiling[known]
        quartiles = np.percentile(normalised, [25, 50, 75], axis=1)
        for index, layer in enumerate(layers):
            entry = summary["ceiling_normalised"][roi][layer]
            np.testing.assert_allclose(
                [entry["q25"], entry["median"], entry["q75"]], quartiles[:, index], rtol=1e-12
            )
    table = format_layer_sweep(summary)
    assert table.splitlines()[1].split() == ["ROI", "voxels", *layers, "best", "layer"]
    written = make_sweep_figures(path, tmp_path / "figures")
    assert [p.name for p in written] == ["layer_roi.png", "layer_roi.pdf"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _fake_sweep(tmp_path / "real.h5", rng, with_ceiling=False)
    assert sweep_summary(tmp_path / "real.h5")["ceiling_normalised"] is None
    with pytest.raises(FileNotFoundError, match="v4jax sweep"):
        sweep_summary(tmp_path / "missing.h5")
