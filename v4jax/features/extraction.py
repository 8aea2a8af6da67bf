"""Batched AlexNet feature extraction: into memory (:func:`extract`) or into HDF5
(:func:`extract_to_hdf5`, streamed, atomic and resumable).

Each batch goes: raw images -> optional ``transform`` (e.g. a retina warp; any callable taking
and returning an (n, H, W[, C]) array) -> :func:`v4jax.features.images.prepare_images` (unless
``preprocess=False``) -> jitted forward pass to the deepest requested layer. The last batch is
padded to ``batch_size`` so that the network compiles once.

Without weights (``params=None``) the network gets random weights from ``seed`` and a
``RandomWeightsWarning`` is issued: such features are only good for tests and demos.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from v4jax import _checkpoint as checkpoint
from v4jax._io import file_sha256
from v4jax._validation import check_all_finite, check_positive_int
from v4jax.features.images import check_images, check_unit_range, prepare_core, resolve_scale
from v4jax.features.models import (
    AlexNet,
    Params,
    check_input_for_layers,
    check_layers,
    init_params,
    layers_needed,
    output_shapes,
    variant_spec,
)
from v4jax.features.weights import check_params, load_weights

FEATURES_FORMAT = "v4jax-alexnet-features-1"
PARTIAL_SUFFIX = checkpoint.PARTIAL_SUFFIX
CHUNK_BYTES = 1 << 20
IDENTITY_ATTRS = (
    "format",
    "variant",
    "layers",
    "weights",
    "preprocessing",
    "transform",
    "n_images",
    "images_sha256",
    "batch_size",
)


class RandomWeightsWarning(UserWarning):
    """Features were computed with random, untrained weights."""


@dataclass(frozen=True)
class _Plan:
    """Everything one extraction run needs, validated."""

    variant: str
    layers: tuple[str, ...]
    params: Params
    weights: str
    batch_size: int
    preprocess: bool
    scale: str
    transform: Callable[[Any], Any] | None
    n_images: int
    shapes: dict[str, tuple[int, ...]]

    @property
    def n_batches(self) -> int:
        return -(-self.n_images // self.batch_size)

    def preprocessing(self) -> str:
        if not self.preprocess:
            return "none (prepared images fed directly)"
        size = variant_spec(self.variant).input_size
        return f"prepare_images(variant={self.variant!r}, scale={self.scale!r}, size={size})"


def _params_sha256(params: Params) -> str:
    digest = hashlib.sha256()
    for layer in sorted(params):
        for name in sorted(params[layer]):
            value = np.ascontiguousarray(params[layer][name], dtype=np.float32)
            digest.update(f"{layer}/{name}{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def images_sha256(images: Any, chunk: int = 256) -> str:
    """Hash of the images' dtype, shape and values (read in chunks of ``chunk`` images)."""
    digest = hashlib.sha256(f"{np.dtype(images.dtype).str}{tuple(images.shape)}".encode())
    for start in range(0, images.shape[0], chunk):
        digest.update(np.ascontiguousarray(images[start : start + chunk]).tobytes())
    return digest.hexdigest()


def transform_name(transform: Callable[[Any], Any] | None) -> str:
    """A stable description of ``transform`` (qualified name, or repr without addresses)."""
    if transform is None:
        return "none"
    qualname = getattr(transform, "__qualname__", None)
    if qualname is not None:
        return f"{getattr(transform, '__module__', '')}.{qualname}".lstrip(".")
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def resolve_params(
    params: Params | str | os.PathLike | None,
    variant: str,
    seed: int,
    layers: Sequence[str] = ("fc8",),
) -> tuple[Params, str]:
    """(checked parameter tree, description for provenance) from any accepted ``params``.

    ``None`` gives random weights from ``seed`` for the layers up to ``layers`` (with a
    :class:`RandomWeightsWarning`); a path is read with
    :func:`v4jax.features.weights.load_weights`; a
    tree is checked for ``variant``.
    """
    if params is None:
        warnings.warn(
            f"no weights given: features come from a RANDOMLY initialised {variant} AlexNet "
            f"(seed={seed}), only useful for tests and the synthetic demo; pass params= a "
            "weights file for real AlexNet features.",
            RandomWeightsWarning,
            stacklevel=4,
        )
        tree = init_params(jax.random.key(seed), variant, layers)
        return tree, f"random-init seed={seed}"
    if isinstance(params, (str, os.PathLike)):
        path = Path(params)
        tree = load_weights(path, variant)
        return tree, f"{path.name} sha256={file_sha256(path)}"
    tree = check_params(params, variant)
    return tree, f"in-memory params sha256={_params_sha256(tree)}"


def _make_plan(
    images: Any,
    layers: Sequence[str] | str,
    params: Params | str | os.PathLike | None,
    variant: str,
    batch_size: int,
    preprocess: bool,
    transform: Callable[[Any], Any] | None,
    scale: str,
    seed: int,
) -> _Plan:
    layers = check_layers(layers, variant)
    batch_size = check_positive_int(batch_size, "batch_size")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a callable or None, got {type(transform).__name__}.")
    shape = check_images(images)
    if not preprocess and (len(shape) != 4 or shape[-1] != 3):
        raise ValueError(
            f"preprocess=False needs prepared (N, H, W, 3) float images, got shape {shape}; "
            "use preprocess=True for raw grayscale stimuli."
        )
    if preprocess:
        height = width = variant_spec(variant).input_size
    else:
        example = images[:1] if transform is None else transform(images[:1])
        height, width = check_images(example, "transform(images)")[1:3]
    check_input_for_layers(variant, height, width, layers)
    tree, weights = resolve_params(params, variant, seed, layers)
    missing = [name for name in layers_needed(layers, variant) if name not in tree]
    if missing:
        raise ValueError(
            f"layers {list(layers)} need weights for {missing}, which the weights lack (a "
            "state dict with only features.* entries covers conv/pool layers); ask only for "
            "conv/pool layers or give full weights."
        )
    all_shapes = output_shapes(variant, height, width, layers)
    return _Plan(
        variant=variant,
        layers=layers,
        params=tree,
        weights=weights,
        batch_size=min(batch_size, shape[0]),
        preprocess=bool(preprocess),
        scale=resolve_scale(scale, shape) if preprocess else "none",
        transform=transform,
        n_images=shape[0],
        shapes={name: all_shapes[name] for name in layers},
    )


@partial(jax.jit, static_argnames=("variant", "layers", "preprocess", "scale", "size"))
def _features_batch(
    params: Params,
    batch: jax.Array,
    variant: str,
    layers: tuple[str, ...],
    preprocess: bool,
    scale: str,
    size: int,
) -> dict[str, jax.Array]:
    x = prepare_core(batch, variant, scale, size) if preprocess else batch.astype(jnp.float32)
    return AlexNet(variant).apply({"params": params}, x, layers=layers)


def _batches(plan: _Plan, images: Any, first_batch: int = 0) -> Iterator[tuple[int, dict]]:
    """Yield (start index, {layer: (n, ...) float32 numpy}) for batches from ``first_batch``."""
    size = variant_spec(plan.variant).input_size
    params = jax.device_put(plan.params)
    for index in range(first_batch, plan.n_batches):
        start = index * plan.batch_size
        raw = images[start : start + plan.batch_size]
        batch = np.asarray(raw if plan.transform is None else plan.transform(raw))
        n_valid = batch.shape[0]
        if n_valid != raw.shape[0]:
            raise ValueError(
                f"transform returned {n_valid} images for a batch of {raw.shape[0]}; it must "
                "keep the batch axis."
            )
        what = f"images {start}..{start + n_valid - 1}"
        if plan.transform is not None:
            what = f"transform(images) of {what}"
            check_images(batch, what)
        check_all_finite(batch, what)
        if plan.preprocess and plan.scale == "none":
            check_unit_range(batch, what)
        if n_valid < plan.batch_size:
            padding = [(0, plan.batch_size - n_valid)] + [(0, 0)] * (batch.ndim - 1)
            batch = np.pad(batch, padding, mode="edge")
        outputs = _features_batch(
            params, jnp.asarray(batch), plan.variant, plan.layers, plan.preprocess, plan.scale, size
        )
        yield (
            start,
            {
                name: np.asarray(value[:n_valid], dtype=np.float32)
                for name, value in outputs.items()
            },
        )


def extract(
    images: Any,
    layers: Sequence[str] | str = ("conv3",),
    params: Params | str | os.PathLike | None = None,
    variant: str = "torchvision",
    batch_size: int = 64,
    preprocess: bool = True,
    transform: Callable[[Any], Any] | None = None,
    *,
    scale: str = "auto",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """AlexNet features of ``images``, computed in jitted batches.

    Args:
      images: raw stimuli (N, H, W) / (N, H, W, 1) grayscale or (N, H, W, 3) RGB (see
        :func:`v4jax.features.images.prepare_images` for ranges), or with ``preprocess=False``
        prepared
        (N, H, W, 3) network inputs.
      layers: layer names, e.g. ``("conv3",)`` or ``("conv1", "pool5", "fc7")``.
      params: parameter tree, a weights file path (``.pth``/``.pt``/``.npz``/``.safetensors``/
        ``.npy``/``.msgpack``, see :mod:`v4jax.features.weights`) or ``None`` for random weights.
      variant: ``"torchvision"``, ``"caffe"`` or ``"tfutils"``.
      batch_size: images per forward pass (at most N; the last batch is padded).
      preprocess: scale, colour, resize and normalise the images for ``variant`` first.
      transform: optional callable applied to each raw image batch before preprocessing; it
        must keep the batch axis. With ``preprocess=False`` it is also called once on the first
        image to learn the output size.
      scale: ``"auto"``, ``"minmax"`` or ``"none"`` (see :mod:`v4jax.features.images`); ``"auto"``
        decides from the raw images (grayscale -> minmax, RGB -> none).
      seed: seed of the random weights when ``params`` is None.
      progress: show a tqdm progress bar.

    Returns:
      Layer name -> float32 array (N, H, W, C) for conv/norm/pool layers, (N, D) for fc layers.
    """
    plan = _make_plan(
        images, layers, params, variant, batch_size, preprocess, transform, scale, seed
    )
    result = {
        name: np.empty((plan.n_images, *plan.shapes[name]), np.float32) for name in plan.layers
    }
    for start, outputs in tqdm(
        _batches(plan, images), total=plan.n_batches, disable=not progress, desc="AlexNet"
    ):
        for name, value in outputs.items():
            result[name][start : start + value.shape[0]] = value
    return result


def _attrs(plan: _Plan, images: Any) -> dict[str, Any]:
    return {
        "format": FEATURES_FORMAT,
        "variant": plan.variant,
        "layers": json.dumps(list(plan.layers)),
        "weights": plan.weights,
        "preprocessing": plan.preprocessing(),
        "transform": transform_name(plan.transform),
        "n_images": plan.n_images,
        "images_sha256": images_sha256(images),
        "batch_size": plan.batch_size,
    }


def _create_layout(handle: h5py.File, attrs: dict[str, Any], plan: _Plan) -> None:
    """The partial features file: provenance attributes and one dataset per layer."""
    handle.attrs.update(attrs)
    handle.attrs["completed_batches"] = 0
    for name in plan.layers:
        shape = plan.shapes[name]
        image_bytes = 4 * int(np.prod(shape))
        rows = int(np.clip(CHUNK_BYTES // image_bytes, 1, plan.n_images))
        handle.create_dataset(
            name, shape=(plan.n_images, *shape), dtype=np.float32, chunks=(rows, *shape)
        )


def extract_to_hdf5(
    images: Any,
    path: str | os.PathLike,
    layers: Sequence[str] | str = ("conv3",),
    params: Params | str | os.PathLike | None = None,
    variant: str = "torchvision",
    batch_size: int = 64,
    preprocess: bool = True,
    transform: Callable[[Any], Any] | None = None,
    *,
    scale: str = "auto",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Stream AlexNet features of ``images`` into an HDF5 file, one batch at a time.

    Arguments as :func:`extract`. The file gets one float32 dataset per layer, (N, H, W, C) or
    (N, D), chunked by image, and attributes ``variant``, ``layers`` (JSON list), ``weights``
    (file name and sha256, or ``random-init seed=...``), ``preprocessing``, ``transform``,
    ``n_images``, ``images_sha256``, ``batch_size`` and ``completed_batches``.

    Every requested layer is written in the same pass over the images (one forward pass per
    batch to the deepest layer). The work happens in ``path + ".partial"``, renamed onto
    ``path`` when all batches are written, so ``path`` never holds a half-written file; the
    partial is resumed through :mod:`v4jax._checkpoint` (its key: the identity
    attributes above). After every batch the partial file records ``completed_batches``;
    rerunning the same call after an interruption continues from there (refusing, naming what
    changed, if the images, weights or settings differ). Only one batch of features is in
    memory at a time.

    Returns:
      ``Path(path)``.

    Raises:
      FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass the path of the HDF5 file to write.")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True to replace it or choose another path."
        )
    plan = _make_plan(
        images, layers, params, variant, batch_size, preprocess, transform, scale, seed
    )
    attrs = _attrs(plan, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = {name: attrs[name] for name in IDENTITY_ATTRS}
    create = partial(_create_layout, attrs=attrs, plan=plan)
    with checkpoint.open_partial_file(path, key, create, "extraction") as handle:
        done = int(handle.attrs["completed_batches"])
        batches = _batches(plan, images, first_batch=done)
        with tqdm(
            total=plan.n_batches, initial=done, disable=not progress, desc=f"AlexNet -> {path.name}"
        ) as bar:
            for start, outputs in batches:
                for name, value in outputs.items():
                    handle[name][start : start + value.shape[0]] = value
                handle.attrs["completed_batches"] = start // plan.batch_size + 1
                handle.flush()
                bar.update(1)
    return checkpoint.finish(path)
