"""Weight converters: layouts, file formats, shape checks and the native msgpack format."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest

from v4jax.features.models import apply_alexnet, param_shapes
from v4jax.features.weights import (
    caffe_npy_to_flax,
    check_params,
    load_weights,
    save_params,
    torchvision_fc6_kernel,
    torchvision_to_flax,
)

CONV_INDEX = {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8, "conv5": 10}
FC_INDEX = {"fc6": 1, "fc7": 4, "fc8": 6}


def torchvision_state(seed: int, with_fc: bool) -> dict[str, np.ndarray]:
    """A random torchvision-layout AlexNet state dict (OIHW convs, (out, in) linears)."""
    rng = np.random.default_rng(seed)
    state = {}
    for layer, shapes in param_shapes("torchvision").items():
        kernel = shapes["kernel"]
        if layer in CONV_INDEX:
            key = f"features.{CONV_INDEX[layer]}"
            weight_shape = (kernel[3], kernel[2], kernel[0], kernel[1])
        elif with_fc:
            key = f"classifier.{FC_INDEX[layer]}"
            weight_shape = (kernel[1], kernel[0])
        else:
            continue
        fan_in = int(np.prod(weight_shape[1:]))
        state[f"{key}.weight"] = rng.standard_normal(weight_shape, dtype=np.float32) * np.float32(
            np.sqrt(2 / fan_in)
        )
        state[f"{key}.bias"] = 0.1 * rng.standard_normal(shapes["bias"], dtype=np.float32)
    return state


def caffe_arrays(seed: int) -> dict[str, list[np.ndarray]]:
    """Random bvlc_alexnet.npy-style entries (HWIO, fc (in, out)) without fc6/fc7 to stay small."""
    rng = np.random.default_rng(seed)
    return {
        layer: [
            rng.standard_normal(shapes["kernel"]).astype(np.float32),
            rng.standard_normal(shapes["bias"]).astype(np.float32),
        ]
        for layer, shapes in param_shapes("caffe").items()
        if not layer.startswith("fc")
    }


def assert_trees_equal(first, second):
    assert first.keys() == second.keys()
    for layer in first:
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(first[layer][name], second[layer][name])


# ---------------------------------------------------------------- layouts


def test_fc6_permutation_matches_torch_chw_flatten():
    rng = np.random.default_rng(0)
    channels, grid, outputs = 5, 3, 7
    weight = rng.standard_normal((outputs, channels * grid * grid))
    maps_nchw = rng.standard_normal((4, channels, grid, grid))
    torch_result = maps_nchw.reshape(4, -1) @ weight.T
    nhwc_flat = maps_nchw.transpose(0, 2, 3, 1).reshape(4, -1)
    kernel = torchvision_fc6_kernel(weight, channels, grid)
    np.testing.assert_allclose(nhwc_flat @ kernel, torch_result, rtol=1e-12, atol=1e-12)
    assert np.abs(nhwc_flat @ weight.T - torch_result).max() > 1e-3  # the naive layout is wrong


def test_oihw_conv_becomes_hwio_with_torch_semantics():
    """conv1 output from converted weights equals a direct NCHW/OIHW sum at sample points."""
    state = torchvision_state(1, with_fc=False)
    params = check_params(torchvision_to_flax(state), "torchvision")
    images = np.random.default_rng(2).standard_normal((2, 224, 224, 3)).astype(np.float32)
    conv1 = np.asarray(apply_alexnet(params, images, ("conv1",))["conv1"], np.float64)
    x = np.pad(images.transpose(0, 3, 1, 2).astype(np.float64), ((0, 0), (0, 0), (2, 2), (2, 2)))
    weight, bias = state["features.0.weight"].astype(np.float64), state["features.0.bias"]
    for n, o, i, j in [(0, 0, 0, 0), (1, 63, 54, 54), (0, 17, 20, 33), (1, 40, 5, 50)]:
        patch = x[n, :, 4 * i : 4 * i + 11, 4 * j : 4 * j + 11]
        expected = max(float((patch * weight[o]).sum() + bias[o]), 0.0)
        assert conv1[n, i, j, o] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_full_torchvision_state_dict_gives_torch_fc_outputs(tmp_path):
    state = torchvision_state(3, with_fc=True)
    np.savez(tmp_path / "alexnet.npz", **state)
    params = load_weights(tmp_path / "alexnet.npz", "torchvision")
    images = np.random.default_rng(4).standard_normal((2, 224, 224, 3)).astype(np.float32)
    out = apply_alexnet(params, images, ("pool5", "fc6", "fc7", "fc8"))
    # torch's classifier on the NCHW-flattened pool5 map, in float64
    x = np.asarray(out["pool5"], np.float64).transpose(0, 3, 1, 2).reshape(2, -1)
    for layer in ("fc6", "fc7", "fc8"):
        index = FC_INDEX[layer]
        x = x @ state[f"classifier.{index}.weight"].T + state[f"classifier.{index}.bias"]
        if layer != "fc8":
            x = np.maximum(x, 0)
        error = np.abs(np.asarray(out[layer]) - x).max() / np.abs(x).max()
        assert error < 1e-4, layer


# ---------------------------------------------------------------- file formats


def test_npz_safetensors_and_features_only(tmp_path):
    from safetensors.numpy import save_file

    state = torchvision_state(5, with_fc=False)
    np.savez(tmp_path / "features.npz", **state)
    save_file(state, str(tmp_path / "features.safetensors"))
    from_npz = load_weights(tmp_path / "features.npz", "torchvision")
    from_safetensors = load_weights(tmp_path / "features.safetensors", "torchvision")
    assert set(from_npz) == {"conv1", "conv2", "conv3", "conv4", "conv5"}
    assert_trees_equal(from_npz, from_safetensors)
    np.testing.assert_array_equal(
        from_npz["conv2"]["kernel"], state["features.3.weight"].transpose(2, 3, 1, 0)
    )


def test_pth_state_dict_legacy_and_zip(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (optional extra)")
    state = torchvision_state(6, with_fc=False)
    tensors = {key: torch.from_numpy(value) for key, value in state.items()}
    torch.save(tensors, tmp_path / "zip.pth")
    torch.save(tensors, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": tensors, "epoch": 3}, tmp_path / "checkpoint.pth")
    reference = torchvision_to_flax(state)
    for name in ("zip.pth", "legacy.pt", "checkpoint.pth"):
        assert_trees_equal(load_weights(tmp_path / name, "torchvision"), reference)


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
    # A zip archive, as torch.save writes since PyTorch 1.6: only PyTorch can read it further.
    with zipfile.ZipFile(tmp_path / "alexnet.pth", "w") as archive:
        archive.writestr("alexnet/data.pkl", b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"torch extra"):
        load_weights(tmp_path / "alexnet.pth", "torchvision")


@pytest.mark.parametrize("form", ["list", "dict"])
def test_bvlc_npy_list_and_dict_forms(tmp_path, form):
    arrays = caffe_arrays(7)
    if form == "dict":
        data = {layer: {"weights": w, "biases": b} for layer, (w, b) in arrays.items()}
    else:
        data = arrays
    np.save(tmp_path / "bvlc_alexnet.npy", np.array(data, dtype=object), allow_pickle=True)
    params = load_weights(tmp_path / "bvlc_alexnet.npy", "caffe")
    assert params["conv4"]["kernel"].shape == (3, 3, 192, 384)
    for layer, (weights, biases) in arrays.items():
        np.testing.assert_array_equal(params[layer]["kernel"], weights)
        np.testing.assert_array_equal(params[layer]["bias"], biases)


def test_tfutils_npz_variables(tmp_path):
    rng = np.random.default_rng(8)
    variables = {}
    for layer, shapes in param_shapes("tfutils").items():
        if layer.startswith("conv"):
            variables[f"{layer}/weights:0"] = rng.standard_normal(shapes["kernel"]).astype("f4")
            variables[f"{layer}/bias:0"] = rng.standard_normal(shapes["bias"]).astype("f4")
    np.savez(tmp_path / "tfutils.npz", **variables)
    params = load_weights(tmp_path / "tfutils.npz", "tfutils")
    np.testing.assert_array_equal(params["conv3"]["kernel"], variables["conv3/weights:0"])
    assert params["conv2"]["kernel"].shape == (5, 5, 96, 256)
    with pytest.raises(ValueError, match=r"weights file of the wrong variant.*'tfutils'"):
        load_weights(tmp_path / "tfutils.npz", "caffe")


# ---------------------------------------------------------------- errors


def test_wrong_variant_is_named(tmp_path):
    np.save(tmp_path / "bvlc.npy", np.array(caffe_arrays(9), dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"weights file of the wrong variant.*'caffe'"):
        load_weights(tmp_path / "bvlc.npy", "torchvision")
    np.savez(tmp_path / "tv.npz", **torchvision_state(10, with_fc=False))
    with pytest.raises(ValueError, match=r"weights file of the wrong variant.*'torchvision'"):
        load_weights(tmp_path / "tv.npz", "caffe")


def test_wrong_shapes_and_names(tmp_path):
    state = torchvision_state(11, with_fc=False)
    state["features.6.weight"] = state["features.6.weight"][:100]
    with pytest.raises(ValueError, match=r"conv3 kernel has shape \(3, 3, 192, 100\)"):
        check_params(torchvision_to_flax(state), "torchvision")
    with pytest.raises(ValueError, match=r"no features\.0\.weight"):
        torchvision_to_flax({"weight": np.zeros(3)})
    with pytest.raises(ValueError, match="unknown layer"):
        check_params({"conv9": {"kernel": np.zeros(1), "bias": np.zeros(1)}}, "caffe")
    with pytest.raises(ValueError, match="no 'conv3' entry"):
        caffe_npy_to_flax({k: v for k, v in caffe_arrays(12).items() if k != "conv3"})
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_weights(tmp_path / "absent.pth", "torchvision")
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported weights file suffix"):
        load_weights(tmp_path / "weights.h5", "torchvision")
    bad = torchvision_to_flax(torchvision_state(13, with_fc=False))
    bad["conv1"]["bias"] = bad["conv1"]["bias"] * np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_params(bad, "torchvision")


def test_msgpack_round_trip_and_variant_check(tmp_path):
    params = caffe_npy_to_flax(caffe_arrays(14))
    path = save_params(params, tmp_path / "caffe.msgpack", "caffe")
    restored = load_weights(path, "caffe")
    assert_trees_equal(restored, check_params(params, "caffe"))
    assert restored["conv1"]["kernel"].dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["caffe.msgpack"]  # no temp files left
    with pytest.raises(ValueError, match=r"weights file of the wrong variant.*saved for 'caffe'"):
        load_weights(path, "tfutils")
    (tmp_path / "junk.msgpack").write_bytes(b"\x00\x01not msgpack")
    with pytest.raises(ValueError, match="not a readable v4jax"):
        load_weights(tmp_path / "junk.msgpack", "caffe")
