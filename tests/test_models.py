"""AlexNet variants against the torchvision golden outputs and a float64 numpy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from v4jax.features.models import (
    VARIANTS,
    AlexNet,
    adaptive_avg_pool,
    apply_alexnet,
    init_params,
    output_shapes,
    param_shapes,
)
from v4jax.features.weights import torchvision_to_flax

GOLDEN_LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")


def relative_error(actual, reference) -> float:
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(actual - reference).max() / np.abs(reference).max())


# ---------------------------------------------------------------- independent numpy reference


def np_conv(x, kernel, bias, stride, pad, groups):
    """Grouped 2-D convolution (cross-correlation) of NHWC x with an HWIO kernel, float64."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    size = kernel.shape[0]
    windows = sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    in_group, out_group = kernel.shape[2], kernel.shape[3] // groups
    parts = []
    for g in range(groups):
        patch = windows[:, :, :, g * in_group : (g + 1) * in_group]  # N,Ho,Wo,c,kh,kw
        weights = kernel[:, :, :, g * out_group : (g + 1) * out_group]  # kh,kw,c,o
        parts.append(np.tensordot(patch, weights, axes=([3, 4, 5], [2, 0, 1])))
    return np.concatenate(parts, axis=-1) + bias


def np_caffe_lrn(x, local_size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe ACROSS_CHANNELS LRN: x / (k + alpha / n * sum of squares in the window)^beta."""
    half = local_size // 2
    squares, channels = x**2, x.shape[-1]
    summed = np.stack(
        [squares[..., max(0, c - half) : c + half + 1].sum(-1) for c in range(channels)], -1
    )
    return x / (k + alpha / local_size * summed) ** beta


def np_tf_lrn(x, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75):
    """tf.nn.lrn: x / (bias + alpha * sum_{|j-c| <= depth_radius} x_j^2)^beta."""
    squares, channels = x**2, x.shape[-1]
    summed = np.stack(
        [
            squares[..., max(0, c - depth_radius) : c + depth_radius + 1].sum(-1)
            for c in range(channels)
        ],
        -1,
    )
    return x / (bias + alpha * summed) ** beta


def np_max_pool(x, rule, size=3, stride=2):
    """3x3/2 max-pool of NHWC x; rule 'floor' (torch), 'ceil' (Caffe) or 'same' (TF)."""
    height = x.shape[1]
    if rule == "floor":
        out, before = (height - size) // stride + 1, 0
    elif rule == "ceil":
        out, before = -(-(height - size) // stride) + 1, 0
    else:
        out = -(-height // stride)
        before = max((out - 1) * stride + size - height, 0) // 2
    result = np.empty((x.shape[0], out, out, x.shape[3]))
    for i in range(out):
        r0 = max(i * stride - before, 0)
        r1 = min(i * stride - before + size, height)
        for j in range(out):
            c0 = max(j * stride - before, 0)
            c1 = min(j * stride - before + size, height)
            result[:, i, j] = x[:, r0:r1, c0:c1].max(axis=(1, 2))
    return result


def np_alexnet(params, x, variant):
    """Every layer of ``variant`` in float64 numpy, written from the spec's tables."""
    spec = {
        "caffe": dict(pads=(0, 2, 1, 1, 1), groups=(1, 2, 1, 2, 2), pool="ceil"),
        "tfutils": dict(pads=(0, 2, 1, 1, 1), groups=(1, 1, 1, 1, 1), pool="same"),
    }[variant]
    lrn = np_caffe_lrn if variant == "caffe" else np_tf_lrn
    strides = (4, 1, 1, 1, 1)
    out = {}
    for i, name in enumerate(("conv1", "conv2", "conv3", "conv4", "conv5")):
        p = params[name]
        x = np.maximum(
            np_conv(x, p["kernel"], p["bias"], strides[i], spec["pads"][i], spec["groups"][i]), 0
        )
        out[name] = x
        if i < 2:
            x = out[f"norm{i + 1}"] = lrn(x)
            x = out[f"pool{i + 1}"] = np_max_pool(x, spec["pool"])
    x = out["pool5"] = np_max_pool(x, spec["pool"])
    if "fc6" in params:
        x = x.reshape(len(x), -1)
        for name in ("fc6", "fc7", "fc8"):
            x = x @ params[name]["kernel"] + params[name]["bias"]
            if name != "fc8":
                x = np.maximum(x, 0)
            out[name] = x
    return out


def random_params(variant, seed, with_fc=False):
    """He-scaled float64 weights and small random biases with the variant's shapes."""
    rng = np.random.default_rng(seed)
    params = {}
    for layer, shapes in param_shapes(variant).items():
        if layer.startswith("fc") and not with_fc:
            continue
        kernel_shape = shapes["kernel"]
        fan_in = int(np.prod(kernel_shape[:-1]))
        params[layer] = {
            "kernel": rng.standard_normal(kernel_shape) * np.sqrt(2.0 / fan_in),
            "bias": 0.1 * rng.standard_normal(shapes["bias"]),
        }
    return params


# ---------------------------------------------------------------- golden torchvision outputs


@pytest.mark.parametrize("size", [224, 227])
def test_torchvision_matches_golden(golden_dir, size):
    golden = np.load(golden_dir / "alexnet" / "alexnet_torchvision_golden.npz")
    state = {key: golden[key] for key in golden.files if key.startswith("features.")}
    params = torchvision_to_flax(state)
    images = golden[f"input_{size}"].transpose(0, 2, 3, 1)
    outputs = apply_alexnet(params, images, GOLDEN_LAYERS, "torchvision")
    for layer in GOLDEN_LAYERS:
        key = f"{layer}_relu_{size}" if layer.startswith("conv") else f"{layer}_{size}"
        reference = golden[key].transpose(0, 2, 3, 1)
        assert outputs[layer].dtype == jnp.float32
        assert outputs[layer].shape == reference.shape, layer
        assert relative_error(outputs[layer], reference) <= 1e-4, layer


# ---------------------------------------------------------------- caffe / tfutils vs numpy


@pytest.mark.parametrize(
    ("variant", "size", "with_fc"),
    [("caffe", 227, True), ("caffe", 103, False), ("tfutils", 224, False), ("tfutils", 97, False)],
)
def test_variant_matches_numpy_float64(variant, size, with_fc):
    params = random_params(variant, seed=size, with_fc=with_fc)
    images = 50.0 * np.random.default_rng(size + 1).standard_normal((2, size, size, 3))
    reference = np_alexnet(params, images, variant)
    layers = tuple(reference)
    outputs = apply_alexnet(params, images, layers, variant)
    for layer in layers:
        assert outputs[layer].dtype == jnp.float64
        assert outputs[layer].shape == reference[layer].shape, layer
        assert relative_error(outputs[layer], reference[layer]) <= 1e-10, layer
    # the LRN must really act on these activations, or the test could not see a wrong LRN
    assert relative_error(reference["norm1"], reference["conv1"]) > 0.05


def test_caffe_ceil_pooling_differs_from_floor():
    """At 103 conv1 is 24x24: Caffe's ceil rounding gives 12 where floor would give 11."""
    shapes = output_shapes("caffe", 103, 103)
    assert shapes["conv1"] == (24, 24, 96)
    assert shapes["pool1"] == (12, 12, 96)  # floor would give 11: the 103 case checks ceil


def test_lrn_equivalence_caffe_vs_tf_parameters():
    """Spec: Caffe LRN(5, 1e-4, 0.75, 1) equals tf.nn.lrn(depth_radius=2, alpha=2e-5)."""
    x = 30.0 * np.random.default_rng(3).standard_normal((2, 4, 4, 17))
    assert relative_error(np_caffe_lrn(x), np_tf_lrn(x, depth_radius=2, alpha=2e-5)) < 1e-14


SPEC_SIZES = {
    ("caffe", 227): {
        "conv1": (55, 55, 96),
        "pool1": (27, 27, 96),
        "conv2": (27, 27, 256),
        "pool2": (13, 13, 256),
        "conv3": (13, 13, 384),
        "conv4": (13, 13, 384),
        "conv5": (13, 13, 256),
        "pool5": (6, 6, 256),
        "fc6": (4096,),
        "fc8": (1000,),
    },
    ("tfutils", 224): {
        "conv1": (54, 54, 96),
        "pool1": (27, 27, 96),
        "pool2": (14, 14, 256),
        "conv3": (14, 14, 384),
        "conv5": (14, 14, 256),
        "pool5": (7, 7, 256),
        "fc6": (4096,),
    },
    ("torchvision", 224): {
        "conv1": (55, 55, 64),
        "pool1": (27, 27, 64),
        "conv2": (27, 27, 192),
        "conv3": (13, 13, 384),
        "conv4": (13, 13, 256),
        "pool5": (6, 6, 256),
        "fc6": (4096,),
        "fc8": (1000,),
    },
}


@pytest.mark.parametrize(("variant", "size"), list(SPEC_SIZES))
def test_layer_sizes_follow_the_spec(variant, size):
    params = jax.eval_shape(lambda: init_params(jax.random.key(0), variant))  # shapes only
    images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    names = VARIANTS[variant].layer_names
    traced = jax.eval_shape(
        lambda p, x: AlexNet(variant).apply({"params": p}, x, layers=names), params, images
    )
    predicted = output_shapes(variant, size, size)
    for layer in names:
        assert traced[layer].shape == (2, *predicted[layer]), layer
    for layer, shape in SPEC_SIZES[variant, size].items():
        assert predicted[layer] == shape, layer


# ---------------------------------------------------------------- behaviour


def test_only_layers_up_to_the_deepest_requested_are_computed():
    full = init_params(jax.random.key(1), "torchvision")  # every layer, fc8 included
    images = np.random.default_rng(4).standard_normal((2, 224, 224, 3)).astype(np.float32)
    shallow = {name: full[name] for name in ("conv1", "conv2", "conv3")}
    from_shallow = apply_alexnet(shallow, images, ("pool1", "conv3"))
    from_full = apply_alexnet(full, images, ("conv3", "pool1", "fc8"))
    assert set(from_shallow) == {"pool1", "conv3"}
    np.testing.assert_array_equal(from_shallow["conv3"], from_full["conv3"])
    np.testing.assert_array_equal(from_shallow["pool1"], from_full["pool1"])
    assert from_full["fc8"].shape == (2, 1000)
    with pytest.raises(ValueError, match=r"no \['conv4', 'conv5', 'fc6'\] entries"):
        apply_alexnet(shallow, images, ("fc6",))


def test_adaptive_avg_pool_matches_torch_bins():
    x = np.random.default_rng(5).standard_normal((1, 8, 7, 2))
    pooled = np.asarray(adaptive_avg_pool(jnp.asarray(x), 6))
    # torch bins for 8 -> 6: [0,2) [1,3) [2,4) [4,6) [5,7) [6,8); for 7 -> 6: [0,2) [1,3) ...
    rows = [(0, 2), (1, 3), (2, 4), (4, 6), (5, 7), (6, 8)]
    cols = [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7)]
    reference = np.array(
        [[x[0, r0:r1, c0:c1].mean(axis=(0, 1)) for c0, c1 in cols] for r0, r1 in rows]
    )
    assert relative_error(pooled[0], reference) < 1e-12


def test_init_params_is_deterministic_float32_and_lecun_scaled():
    first = init_params(jax.random.key(7), "caffe", "conv3")
    second = init_params(jax.random.key(7), "caffe", "pool2")
    other = init_params(jax.random.key(8), "caffe", "conv3")
    assert set(first) == {"conv1", "conv2", "conv3"} and set(second) == {"conv1", "conv2"}
    assert first["conv2"]["kernel"].shape == (5, 5, 48, 256)
    assert first["conv2"]["kernel"].dtype == jnp.float32
    np.testing.assert_array_equal(first["conv2"]["kernel"], second["conv2"]["kernel"])
    assert not np.array_equal(first["conv3"]["kernel"], other["conv3"]["kernel"])
    fan_in = 5 * 5 * 48
    assert np.std(first["conv2"]["kernel"]) == pytest.approx(fan_in**-0.5, rel=0.02)


def test_bad_requests_get_clear_errors():
    params = init_params(jax.random.key(0), "tfutils", "conv3")
    images = np.zeros((1, 224, 224, 3), np.float32)
    with pytest.raises(ValueError, match="unknown layer"):
        apply_alexnet(params, images, ("conv6",), "tfutils")
    with pytest.raises(ValueError, match="variant='vgg'"):
        apply_alexnet(params, images, ("conv3",), "vgg")
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        apply_alexnet(params, images[..., 0], ("conv3",), "tfutils")
    with pytest.raises(ValueError, match="too small"):
        apply_alexnet(params, images[:, :10, :10], ("conv3",), "tfutils")
    # a small input is fine when only shallow layers are asked for
    assert apply_alexnet(params, images[:, :30, :30], ("conv1",), "tfutils")["conv1"].shape == (
        1,
        5,
        5,
        96,
    )
    with pytest.raises(ValueError, match="fc layers need"):
        apply_alexnet(params, images[:, :200, :200], ("fc7",), "tfutils")
