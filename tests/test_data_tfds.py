"""TFDS builder: builds array_record splits from synthetic files and reads them back, all
without importing TensorFlow (checked in a fresh interpreter)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_datasets") is None
    or importlib.util.find_spec("array_record") is None,
    reason="the tfds extra is not installed (pip install tensorflow-datasets array-record)",
)

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np

    from v4jax.data import load_vim1, make_synthetic_vim1

    manual, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    make_synthetic_vim1(manual, n_train=24, n_val=6, n_voxels={1: 40, 2: 33}, seed=2,
                        progress=False)
    from v4jax.data.tfds_vim1 import build_vim1_tfds
    import tensorflow_datasets as tfds

    for config in ("all", "v4"):
        builder = build_vim1_tfds(manual, data_dir, config=config)
        roi = "all" if config == "all" else "V4"
        for split, n_images in (("train", 24), ("validation", 6)):
            source = builder.as_data_source(split=split)
            by_name = tfds.data_source(f"vim1/{config}", data_dir=str(data_dir), split=split)
            assert len(source) == len(by_name) == n_images, (len(source), n_images)
            for subject in (1, 2):
                data = load_vim1(manual, subject, roi, nan_policy="mask")
                images = data.stim_train if split == "train" else data.stim_val
                responses = data.resp_train if split == "train" else data.resp_val
                meta = builder.info.metadata[f"S{subject}"]
                np.testing.assert_array_equal(meta["columns"], data.columns)
                np.testing.assert_array_equal(meta["roi_codes"], data.roi_codes)
                np.testing.assert_array_equal(meta["voxel_index"], data.voxel_index)
                for index in range(n_images):
                    example = source[index]
                    assert example["image_id"] == index
                    np.testing.assert_array_equal(example["image"], images[index])
                    np.testing.assert_array_equal(
                        example["responses"][f"S{subject}"], responses[index]
                    )
                    np.testing.assert_array_equal(
                        by_name[index]["responses"][f"S{subject}"], responses[index]
                    )
        files = sorted(p.name for p in Path(builder.data_dir).iterdir())
        assert any(".array_record-" in name for name in files), files
    assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    print("TFDS_OK", sorted(m for m in sys.modules if m.startswith("tensorflow")))
    """
)


def test_builder_round_trip_without_tensorflow(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "manual"), str(tmp_path / "tfds")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "TFDS_OK" in result.stdout


def test_importing_v4jax_data_does_not_import_tfds():
    code = "import sys, v4jax.data; print('tensorflow_datasets' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_missing_manual_files_are_named(tmp_path):
    from v4jax.data.tfds_vim1 import build_vim1_tfds

    with pytest.raises(FileNotFoundError, match=r"EstimatedResponses\.mat not found"):
        build_vim1_tfds(tmp_path, tmp_path / "tfds")
