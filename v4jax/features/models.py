"""Flax AlexNet in three variants, every layer addressable by name.

Variants (``../shared/specs/alexnet-variants.md`` gives the references):

- ``"torchvision"``: ``torchvision.models.alexnet`` (64-192-384-256-256), input 224, explicit
  symmetric paddings, floor max-pooling, adaptive average pooling to 6x6 before ``fc6``.
- ``"caffe"``: BVLC ``bvlc_alexnet`` (96-256-384-384-256), conv2/4/5 grouped in two, Caffe LRN
  (local_size 5, alpha 1e-4 divided by the window, beta 0.75, k 1) after the conv1/conv2 ReLUs,
  conv1 unpadded, ceil-mode max-pooling, input 227.
- ``"tfutils"``: the NeuroAILab ``tfutils`` AlexNet (96-256-384-384-256, no groups),
  ``tf.nn.lrn(depth_radius=5, bias=1, alpha=1e-4, beta=0.75)``, SAME max-pooling, input 224
  (conv3 is 14x14x384).

Arrays are channels-last: images (N, H, W, 3), conv/pool outputs (N, H, W, C), fc outputs
(N, D). ``conv1`` .. ``conv5``, ``fc6`` and ``fc7`` are taken after their ReLU; ``fc8`` is the
logits. The LRN variants also expose ``norm1`` and ``norm2`` (after the LRN, before pooling).
A forward pass computes only up to the deepest requested layer, so a parameter tree without
the fully connected layers is enough for conv/pool features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from v4jax._validation import check_choice

Params = dict[str, dict[str, Any]]

POOL_WINDOW = 3
POOL_STRIDE = 2
FC_UNITS = (4096, 4096, 1000)
FC_LAYERS = ("fc6", "fc7", "fc8")
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


@dataclass(frozen=True)
class ConvSpec:
    """One convolution: output channels, square kernel, stride, symmetric padding, groups."""

    features: int
    kernel: int
    stride: int
    padding: int
    groups: int = 1


@dataclass(frozen=True)
class LRNSpec:
    """Local response normalisation across channels.

    ``x / (bias + alpha * sum_{|j - c| <= radius} x_j**2) ** beta``, zero-padded at the channel
    ends. ``alpha`` is the per-element factor (Caffe's alpha divided by its window size).
    """

    radius: int
    alpha: float
    beta: float
    bias: float


@dataclass(frozen=True)
class VariantSpec:
    """Everything that distinguishes one AlexNet variant from another."""

    name: str
    convs: tuple[ConvSpec, ...]
    lrn: LRNSpec | None
    pool_mode: str  # "floor", "ceil" or "same"
    input_size: int
    fc6_grid: int  # spatial side of the map that fc6 flattens
    adaptive_pool: bool  # torchvision's AdaptiveAvgPool2d((6, 6)) before fc6

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Addressable layers in computation order."""
        if self.lrn is None:
            block1, block2 = ("conv1", "pool1"), ("conv2", "pool2")
        else:
            block1, block2 = ("conv1", "norm1", "pool1"), ("conv2", "norm2", "pool2")
        return (*block1, *block2, "conv3", "conv4", "conv5", "pool5", *FC_LAYERS)

    @property
    def fc6_inputs(self) -> int:
        """Length of the flattened pool5 map that fc6 reads."""
        return self.fc6_grid * self.fc6_grid * self.convs[-1].features


VARIANTS: dict[str, VariantSpec] = {
    "torchvision": VariantSpec(
        name="torchvision",
        convs=(
            ConvSpec(64, 11, 4, 2),
            ConvSpec(192, 5, 1, 2),
            ConvSpec(384, 3, 1, 1),
            ConvSpec(256, 3, 1, 1),
            ConvSpec(256, 3, 1, 1),
        ),
        lrn=None,
        pool_mode="floor",
        input_size=224,
        fc6_grid=6,
        adaptive_pool=True,
    ),
    "caffe": VariantSpec(
        name="caffe",
        convs=(
            ConvSpec(96, 11, 4, 0),
            ConvSpec(256, 5, 1, 2, groups=2),
            ConvSpec(384, 3, 1, 1),
            ConvSpec(384, 3, 1, 1, groups=2),
            ConvSpec(256, 3, 1, 1, groups=2),
        ),
        lrn=LRNSpec(radius=2, alpha=1e-4 / 5, beta=0.75, bias=1.0),
        pool_mode="ceil",
        input_size=227,
        fc6_grid=6,
        adaptive_pool=False,
    ),
    "tfutils": VariantSpec(
        name="tfutils",
        convs=(
            ConvSpec(96, 11, 4, 0),
            ConvSpec(256, 5, 1, 2),
            ConvSpec(384, 3, 1, 1),
            ConvSpec(384, 3, 1, 1),
            ConvSpec(256, 3, 1, 1),
        ),
        lrn=LRNSpec(radius=5, alpha=1e-4, beta=0.75, bias=1.0),
        pool_mode="same",
        input_size=224,
        fc6_grid=7,
        adaptive_pool=False,
    ),
}


def variant_spec(variant: str) -> VariantSpec:
    """The spec of ``variant``, or a ValueError listing the known variants."""
    check_choice(variant, "variant", tuple(VARIANTS))
    return VARIANTS[variant]


def check_layers(layers: Sequence[str] | str, variant: str) -> tuple[str, ...]:
    """Validate requested layer names; returns them as a tuple in the order given."""
    spec = variant_spec(variant)
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"layers is empty; ask for at least one of {list(spec.layer_names)}.")
    unknown = [name for name in layers if name not in spec.layer_names]
    if unknown:
        raise ValueError(
            f"unknown layer(s) {unknown} for the {variant!r} AlexNet; choose from "
            f"{list(spec.layer_names)}."
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers {list(layers)} names a layer twice; list each once.")
    return layers


def deepest_layer(layers: Sequence[str], variant: str) -> str:
    """The requested layer computed last."""
    order = variant_spec(variant).layer_names
    return max(layers, key=order.index)


def layers_needed(layers: Sequence[str], variant: str) -> tuple[str, ...]:
    """Parameterised layers (conv/fc) a forward pass to ``layers`` reads."""
    order = variant_spec(variant).layer_names
    stop = order.index(deepest_layer(layers, variant))
    return tuple(name for name in order[: stop + 1] if name in CONV_LAYERS + FC_LAYERS)


def _pool_size(size: int, mode: str) -> int:
    if mode == "floor":
        return (size - POOL_WINDOW) // POOL_STRIDE + 1
    if mode == "ceil":  # Caffe: ceil((H - k) / s) + 1 (no padding, so no clipping needed)
        return math.ceil((size - POOL_WINDOW) / POOL_STRIDE) + 1
    return math.ceil(size / POOL_STRIDE)  # TF "SAME"


def output_shapes(
    variant: str, height: int, width: int, layers: Sequence[str] | None = None
) -> dict[str, tuple[int, ...]]:
    """Per-image output shapes for an (height, width) input, without running the network.

    Args:
      variant: ``"torchvision"``, ``"caffe"`` or ``"tfutils"``.
      height, width: input size in pixels.
      layers: compute shapes up to the deepest of these (default: every layer).

    Returns:
      Layer name -> (H, W, C) for conv/norm/pool layers, (D,) for fc layers; () for fc
      layers this input size cannot reach (caffe/tfutils need their 227/224 input for fc6).

    Raises:
      ValueError: the input is too small (a map up to the deepest layer would be empty).
    """
    spec = variant_spec(variant)
    names = spec.layer_names
    if layers is not None:
        names = names[: names.index(deepest_layer(check_layers(layers, variant), variant)) + 1]
    shapes: dict[str, tuple[int, ...]] = {}
    size = [height, width]
    channels = 3
    convs = dict(zip(CONV_LAYERS, spec.convs, strict=True))
    for name in names:
        if name in convs:
            conv = convs[name]
            size = [(s + 2 * conv.padding - conv.kernel) // conv.stride + 1 for s in size]
            channels = conv.features
        elif name.startswith("pool"):
            size = [_pool_size(s, spec.pool_mode) if s >= 1 else 0 for s in size]
        if min(size) < 1:
            raise ValueError(
                f"input {height}x{width} is too small for the {variant!r} AlexNet: {name} would "
                f"be {size[0]}x{size[1]}; use the variant's input size "
                f"{spec.input_size}x{spec.input_size} (prepare_images resizes to it)."
            )
        if name in FC_LAYERS:
            grid = (spec.fc6_grid, spec.fc6_grid) if spec.adaptive_pool else tuple(size)
            fits = grid[0] * grid[1] * channels == spec.fc6_inputs
            shapes[name] = (FC_UNITS[FC_LAYERS.index(name)],) if fits else ()
        else:
            shapes[name] = (size[0], size[1], channels)
    return shapes


def check_input_for_layers(variant: str, height: int, width: int, layers: Sequence[str]) -> None:
    """Raise a ValueError when ``layers`` cannot be computed on an (height, width) input."""
    shapes = output_shapes(variant, height, width, layers)
    spec = variant_spec(variant)
    blocked = [name for name in layers if shapes.get(name) == ()]
    if blocked:
        raise ValueError(
            f"the {variant!r} AlexNet's fc layers need a {spec.fc6_grid}x{spec.fc6_grid} pool5 "
            f"map (input {spec.input_size}x{spec.input_size}); a {height}x{width} input gives "
            f"{shapes['pool5'][0]}x{shapes['pool5'][1]}. Resize the images to "
            f"{spec.input_size} or ask only for conv/pool layers (asked for {blocked})."
        )


def local_response_norm(x: jax.Array, lrn: LRNSpec) -> jax.Array:
    """Cross-channel LRN of a channels-last array (see :class:`LRNSpec`)."""
    window = 2 * lrn.radius + 1
    summed = lax.reduce_window(
        jnp.square(x),
        jnp.zeros((), x.dtype),
        lax.add,
        (1, 1, 1, window),
        (1, 1, 1, 1),
        ((0, 0), (0, 0), (0, 0), (lrn.radius, lrn.radius)),
    )
    return x / (lrn.bias + lrn.alpha * summed) ** lrn.beta


def max_pool(x: jax.Array, mode: str) -> jax.Array:
    """3x3 stride-2 max-pooling of (N, H, W, C) with floor, Caffe-ceil or TF-SAME rounding."""
    window, strides = (POOL_WINDOW, POOL_WINDOW), (POOL_STRIDE, POOL_STRIDE)
    if mode == "floor":
        return nn.max_pool(x, window, strides, padding="VALID")
    if mode == "same":
        return nn.max_pool(x, window, strides, padding="SAME")
    extra = [(_pool_size(s, "ceil") - 1) * POOL_STRIDE + POOL_WINDOW - s for s in x.shape[1:3]]
    return nn.max_pool(x, window, strides, padding=((0, extra[0]), (0, extra[1])))


def adaptive_avg_pool(x: jax.Array, grid: int) -> jax.Array:
    """torch ``AdaptiveAvgPool2d((grid, grid))`` of (N, H, W, C).

    Bin i spans rows floor(i * H / grid) .. ceil((i + 1) * H / grid), and likewise for columns.
    """
    height, width = x.shape[1:3]
    if (height, width) == (grid, grid):
        return x

    def bins(size: int) -> list[tuple[int, int]]:
        return [((i * size) // grid, -((-(i + 1) * size) // grid)) for i in range(grid)]

    rows = [
        jnp.stack([x[:, r0:r1, c0:c1, :].mean(axis=(1, 2)) for c0, c1 in bins(width)], axis=1)
        for r0, r1 in bins(height)
    ]
    return jnp.stack(rows, axis=1)


class AlexNet(nn.Module):
    """AlexNet of one variant; ``__call__`` returns the requested layers.

    Attributes:
      variant: ``"torchvision"``, ``"caffe"`` or ``"tfutils"``.
      precision: matmul/conv precision; ``"highest"`` (default) keeps full float32 on GPUs
        (no TF32), so results match the CPU and the reference frameworks.
    """

    variant: str = "torchvision"
    precision: str | None = "highest"

    @nn.compact
    def __call__(
        self, images: jax.Array, layers: Sequence[str] = ("conv3",)
    ) -> dict[str, jax.Array]:
        """Forward pass of (N, H, W, 3) prepared images up to the deepest requested layer.

        Returns:
          Layer name -> (N, H', W', C) for conv/norm/pool layers, (N, D) for fc layers.
        """
        spec = variant_spec(self.variant)
        layers = check_layers(layers, self.variant)
        convs = dict(zip(CONV_LAYERS, spec.convs, strict=True))
        stop = spec.layer_names.index(deepest_layer(layers, self.variant))
        outputs = {}
        x = images
        for name in spec.layer_names[: stop + 1]:
            if name in convs:
                conv = convs[name]
                pad = (conv.padding, conv.padding)
                x = nn.Conv(
                    conv.features,
                    (conv.kernel, conv.kernel),
                    strides=(conv.stride, conv.stride),
                    padding=(pad, pad),
                    feature_group_count=conv.groups,
                    precision=self.precision,
                    name=name,
                )(x)
                x = nn.relu(x)
            elif name.startswith("norm"):
                x = local_response_norm(x, spec.lrn)
            elif name.startswith("pool"):
                x = max_pool(x, spec.pool_mode)
            else:
                if name == "fc6":
                    if spec.adaptive_pool:
                        x = adaptive_avg_pool(x, spec.fc6_grid)
                    x = x.reshape(x.shape[0], -1)  # HWC flatten order
                    if x.shape[1] != spec.fc6_inputs:
                        raise ValueError(
                            f"fc6 of the {self.variant!r} AlexNet needs {spec.fc6_inputs} "
                            f"inputs, the pool5 map has {x.shape[1]}; use "
                            f"{spec.input_size}x{spec.input_size} images."
                        )
                units = FC_UNITS[FC_LAYERS.index(name)]
                x = nn.Dense(units, precision=self.precision, name=name)(x)
                if name != "fc8":
                    x = nn.relu(x)
            if name in layers:
                outputs[name] = x
        return outputs


def param_shapes(variant: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """Kernel (HWIO conv, (in, out) fc) and bias shapes of every parameterised layer."""
    spec = variant_spec(variant)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    channels = 3
    for name, conv in zip(CONV_LAYERS, spec.convs, strict=True):
        kernel = (conv.kernel, conv.kernel, channels // conv.groups, conv.features)
        shapes[name] = {"kernel": kernel, "bias": (conv.features,)}
        channels = conv.features
    inputs = spec.fc6_inputs
    for name, units in zip(FC_LAYERS, FC_UNITS, strict=True):
        shapes[name] = {"kernel": (inputs, units), "bias": (units,)}
        inputs = units
    return shapes


def init_params(
    key: jax.Array, variant: str = "torchvision", layers: Sequence[str] | str = ("fc8",)
) -> Params:
    """Random parameters from ``key``, for the layers a forward pass to ``layers`` needs.

    Kernels are normal with variance 1 / fan-in (fan-in = kH * kW * in / groups, or the fc
    input size; Flax's LeCun-normal scale), biases zero. Each layer's key is ``key`` folded
    with the layer's position, so a layer's weights do not depend on ``layers``. Only for
    tests and demos: features from random weights are not AlexNet features.

    Returns:
      ``{layer: {"kernel": HWIO or (in, out) array, "bias": (out,) array}}`` in float32; by
      default every layer up to ``fc8``.
    """
    shapes = param_shapes(variant)
    needed = layers_needed(check_layers(layers, variant), variant)
    params = {}
    for position, (name, shape) in enumerate(shapes.items()):
        if name not in needed:
            continue
        kernel_shape = shape["kernel"]
        scale = 1.0 / math.sqrt(math.prod(kernel_shape[:-1]))
        noise = jax.random.normal(jax.random.fold_in(key, position), kernel_shape, jnp.float32)
        params[name] = {
            "kernel": noise * jnp.float32(scale),
            "bias": jnp.zeros(shape["bias"], jnp.float32),
        }
    return params


@partial(jax.jit, static_argnames=("variant", "layers"))
def _forward(params: Params, images: jax.Array, variant: str, layers: tuple[str, ...]):
    return AlexNet(variant).apply({"params": params}, images, layers=layers)


def apply_alexnet(
    params: Params,
    images: jax.Array,
    layers: Sequence[str] | str = ("conv3",),
    variant: str = "torchvision",
) -> dict[str, jax.Array]:
    """Jitted forward pass of prepared images, returning the requested layers.

    Args:
      params: parameter tree ``{layer: {"kernel", "bias"}}`` (from :mod:`v4jax.features.weights` or
        :func:`init_params`); layers beyond the deepest requested one may be absent.
      images: (N, H, W, 3) float array, already preprocessed for ``variant``
        (see :func:`v4jax.features.images.prepare_images`).
      layers: names of the layers to return.
      variant: ``"torchvision"``, ``"caffe"`` or ``"tfutils"``.

    Returns:
      Layer name -> (N, H', W', C) or (N, D) array, in the promoted dtype of params and images.
    """
    layers = check_layers(layers, variant)
    if getattr(images, "ndim", None) != 4 or images.shape[-1] != 3:
        raise ValueError(
            "images must be (N, H, W, 3) channels-last floats, got shape "
            f"{tuple(getattr(images, 'shape', ()))}; use prepare_images for grayscale or "
            "transpose NCHW arrays with .transpose(0, 2, 3, 1)."
        )
    check_input_for_layers(variant, images.shape[1], images.shape[2], layers)
    missing = [name for name in layers_needed(layers, variant) if name not in params]
    if missing:
        raise ValueError(
            f"the parameters have no {missing} entries, which layers {list(layers)} need "
            "(a features-only state dict covers conv/pool layers only); load full weights "
            "or ask for conv/pool layers."
        )
    return _forward(params, jnp.asarray(images), variant, layers)
