"""Image preprocessing for the AlexNet variants, in JAX.

Pipeline of :func:`prepare_images` (all steps per image, jitted):

1. Scaling to [0, 1]. ``scale="minmax"`` maps each image's own minimum to 0 and maximum to 1
   (a constant image becomes all 0): the study's convention for the vim-1 stimuli, which come
   as grayscale (N, 128, 128) arrays in roughly [-0.5, 0.5] or [0, 1]. ``scale="none"`` keeps
   the values, which must then already be RGB/gray in [0, 1]. ``scale="auto"`` (default) is
   ``"minmax"`` for grayscale input and ``"none"`` for RGB input.
2. Grayscale (N, H, W) or (N, H, W, 1) is repeated into 3 equal channels.
3. Resize to the variant's square input size (224 torchvision/tfutils, 227 caffe) with
   ``jax.image.resize`` bilinear and antialiasing (as torchvision's ``antialias=True``).
4. Normalisation: torchvision/tfutils subtract the ImageNet mean (0.485, 0.456, 0.406) and divide
   by the std (0.229, 0.224, 0.225); caffe multiplies by 255, reorders RGB to BGR and subtracts
   the ILSVRC-2012 per-channel mean (B 104.01, G 116.67, R 122.68).

The output is (N, S, S, 3) channels-last float32, ready for
:func:`v4jax.features.models.apply_alexnet`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from v4jax._validation import check_all_finite, check_choice, check_numeric_dtype
from v4jax.features.models import variant_spec

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
SCALES = ("auto", "minmax", "none")
UNIT_RANGE_SLACK = 1e-6


def check_images(images: Any, name: str = "images") -> tuple[int, ...]:
    """Validate a batch of grayscale (N, H, W) / (N, H, W, 1) or RGB (N, H, W, 3) images.

    Returns:
      The shape as a tuple. Raises TypeError/ValueError with the fix for anything else.
    """
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise TypeError(
            f"{name} must be a numpy or JAX array of shape (N, H, W) or (N, H, W, 3), got "
            f"{type(images).__name__}; wrap lists with np.asarray."
        )
    check_numeric_dtype(images, name)
    shape = tuple(images.shape)
    gray = len(shape) == 3 or (len(shape) == 4 and shape[-1] == 1)
    rgb = len(shape) == 4 and shape[-1] == 3
    if not (gray or rgb):
        raise ValueError(
            f"{name} must be grayscale (N, H, W) or RGB (N, H, W, 3) channels-last, got shape "
            f"{shape}; add a batch axis with x[None] for a single image and transpose NCHW "
            "arrays with .transpose(0, 2, 3, 1)."
        )
    if shape[0] == 0 or min(shape[1:3]) < 2:
        raise ValueError(f"{name} must hold at least one image of at least 2x2, got {shape}.")
    return shape


def resolve_scale(scale: str, shape: tuple[int, ...]) -> str:
    """``"minmax"`` or ``"none"``: what ``scale`` means for images of ``shape``."""
    check_choice(scale, "scale", SCALES)
    if scale != "auto":
        return scale
    is_rgb = len(shape) == 4 and shape[-1] == 3
    return "none" if is_rgb else "minmax"


def minmax_scale(images: jax.Array) -> jax.Array:
    """Per-image min-max scaling of (N, ...) to [0, 1]; constant images become 0."""
    axes = tuple(range(1, images.ndim))
    low = images.min(axis=axes, keepdims=True)
    span = images.max(axis=axes, keepdims=True) - low
    safe_span = jnp.where(span > 0, span, 1)
    return jnp.where(span > 0, (images - low) / safe_span, 0)


def check_unit_range(images: Any, name: str = "images") -> None:
    """Raise unless every value lies in [0, 1] (what ``scale="none"`` expects)."""
    low, high = float(np.min(images)), float(np.max(images))
    if low < -UNIT_RANGE_SLACK or high > 1 + UNIT_RANGE_SLACK:
        raise ValueError(
            f"{name} range from {low:.3g} to {high:.3g}, but scale='none' expects values "
            "in [0, 1]; pass scale='minmax' to rescale each image, or divide 8-bit "
            "images by 255."
        )


def prepare_core(images: jax.Array, variant: str, scale: str, size: int) -> jax.Array:
    """Traceable core of :func:`prepare_images` (no checks; ``scale`` is "minmax" or "none")."""
    x = images.astype(jnp.float32)
    if x.ndim == 3:
        x = x[..., None]
    if scale == "minmax":
        x = minmax_scale(x)
    x = jnp.broadcast_to(x, (*x.shape[:3], 3))
    x = jax.image.resize(x, (x.shape[0], size, size, 3), method="linear", antialias=True)
    if variant == "caffe":
        bgr = x[..., ::-1] * 255.0
        return bgr - jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)
    mean = jnp.asarray(IMAGENET_MEAN_RGB, jnp.float32)
    std = jnp.asarray(IMAGENET_STD_RGB, jnp.float32)
    return (x - mean) / std


_prepare_jit = jax.jit(prepare_core, static_argnames=("variant", "scale", "size"))


def prepare_images(
    images: Any,
    variant: str = "torchvision",
    *,
    scale: str = "auto",
    size: int | None = None,
) -> jax.Array:
    """Turn raw stimuli into the network input of ``variant`` (see the module docstring).

    Args:
      images: (N, H, W) or (N, H, W, 1) grayscale, or (N, H, W, 3) RGB; any real dtype.
        Values in [0, 1] unless ``scale`` is ``"minmax"`` (or ``"auto"`` with grayscale input).
      variant: ``"torchvision"``, ``"caffe"`` or ``"tfutils"``.
      scale: ``"auto"``, ``"minmax"`` or ``"none"``.
      size: output side length; defaults to the variant's input size (224 or 227).

    Returns:
      (N, size, size, 3) float32 array.
    """
    shape = check_images(images)
    spec = variant_spec(variant)
    scale = resolve_scale(scale, shape)
    size = spec.input_size if size is None else int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}.")
    check_all_finite(images, "images")
    if scale == "none":
        check_unit_range(images)
    return _prepare_jit(jnp.asarray(images), variant, scale, size)
