"""Convert AlexNet weights from their released formats into v4jax parameter trees.

Nothing here touches the network: every function reads local files only.

Parameter tree (what :class:`v4jax.features.models.AlexNet` takes):
``{layer: {"kernel", "bias"}}`` with
conv kernels (kH, kW, in / groups, out) = HWIO, fc kernels (in, out) and fc6 reading the pool5
map flattened in (H, W, C) order; all float32 numpy arrays.

Sources:

- torchvision ``alexnet`` state dict (``features.{0,3,6,8,10}``, ``classifier.{1,4,6}``,
  OIHW / (out, in)), from a ``.pth``/``.pt`` file (needs the optional ``torch`` extra) or the
  same keys in ``.npz`` or ``.safetensors``. A state dict with only ``features.*`` entries is
  fine for conv/pool layers.
- Caffe ``bvlc_alexnet.npy`` (caffe-tensorflow conversion): a pickled dict layer ->
  ``[weights, biases]`` or ``{"weights", "biases"}``, already HWIO with fc6 in HWC order.
- tfutils AlexNet: an ``.npz`` of its TensorFlow variables ``convN/weights`` (HWIO),
  ``convN/bias``, ``fcN/weights``, ``fcN/bias`` (an optional ``:0`` suffix is ignored).
- v4jax's own ``.msgpack`` files written by :func:`save_params`.

Every loaded tree is checked against the variant's shapes; a file made for another variant is
reported as "weights file of the wrong variant" with the variant it does match.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from v4jax._io import atomic_write_bytes
from v4jax.features.models import (
    CONV_LAYERS,
    FC_LAYERS,
    VARIANTS,
    Params,
    param_shapes,
    variant_spec,
)

TORCHVISION_CONV_INDEX = dict(zip(CONV_LAYERS, (0, 3, 6, 8, 10), strict=True))
TORCHVISION_FC_INDEX = dict(zip(FC_LAYERS, (1, 4, 6), strict=True))
PARAM_NAMES = ("kernel", "bias")
TORCH_SUFFIXES = (".pth", ".pt")
NATIVE_SUFFIX = ".msgpack"


def _shape_mismatches(params: Params, variant: str) -> list[str]:
    expected = param_shapes(variant)
    problems = []
    for layer, entries in params.items():
        for param_name, value in entries.items():
            want = expected[layer][param_name]
            if tuple(np.shape(value)) != want:
                problems.append(
                    f"{layer} {param_name} has shape {tuple(np.shape(value))}, expected {want}"
                )
    return problems


def check_params(params: Any, variant: str) -> Params:
    """Validate a parameter tree for ``variant``; returns it with float32 numpy leaves.

    Layers may be missing (e.g. no fc layers); present layers need both ``kernel`` and
    ``bias`` with the variant's shapes.

    Raises:
      TypeError: ``params`` is not a dict of dicts.
      ValueError: unknown layer or parameter names, non-finite values, wrong shapes; a tree
        whose shapes fit another variant is called a "weights file of the wrong variant".
    """
    variant_spec(variant)
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise TypeError(
            "params must be a dict {layer: {'kernel': array, 'bias': array}} (for example from "
            f"v4jax.features.weights.load_weights), got {type(params).__name__}."
        )
    if "params" in params and len(params) == 1:
        params = params["params"]
    known = set(CONV_LAYERS + FC_LAYERS)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"params has unknown layer(s) {unknown}; expected names among {sorted(known)}."
        )
    if not params:
        raise ValueError("params is empty; it needs at least the conv layers.")
    for layer, entries in params.items():
        if set(entries) != set(PARAM_NAMES):
            raise ValueError(
                f"params[{layer!r}] has entries {sorted(entries)}, expected exactly "
                f"{list(PARAM_NAMES)}."
            )
    problems = _shape_mismatches(params, variant)
    if problems:
        matching = [v for v in VARIANTS if v != variant and not _shape_mismatches(params, v)]
        if matching:
            raise ValueError(
                f"weights file of the wrong variant: these weights fit variant {matching[0]!r}, "
                f"not {variant!r} ({problems[0]}); pass variant={matching[0]!r} or use the "
                f"{variant} weights."
            )
        raise ValueError(f"params do not fit the {variant!r} AlexNet: " + "; ".join(problems) + ".")
    converted = {
        layer: {name: np.asarray(value, dtype=np.float32) for name, value in entries.items()}
        for layer, entries in params.items()
    }
    for layer, entries in converted.items():
        for name, value in entries.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"params[{layer!r}][{name!r}] contains NaN or inf values.")
    return converted


def torchvision_fc6_kernel(weight: np.ndarray, channels: int = 256, grid: int = 6) -> np.ndarray:
    """torch ``classifier.1.weight`` (out, C*H*W in CHW order) -> (H*W*C in HWC order, out)."""
    out_features = weight.shape[0]
    return (
        weight.reshape(out_features, channels, grid, grid)
        .transpose(2, 3, 1, 0)
        .reshape(grid * grid * channels, out_features)
    )


def torchvision_to_flax(state_dict: dict[str, Any]) -> Params:
    """Map a torchvision AlexNet state dict (numpy values) to a parameter tree.

    conv ``weight`` OIHW -> HWIO kernel; ``classifier.1`` (fc6) reordered from torch's CHW
    flatten to HWC; ``classifier.4/6`` transposed. Missing classifier entries leave the fc
    layers out; missing ``features`` entries are an error.
    """
    state = {key.removeprefix("module."): np.asarray(v) for key, v in state_dict.items()}
    params: Params = {}
    for layer, index in TORCHVISION_CONV_INDEX.items():
        weight, bias = state.get(f"features.{index}.weight"), state.get(f"features.{index}.bias")
        if weight is None or bias is None:
            keys = sorted(state)[:6]
            raise ValueError(
                f"the state dict has no features.{index}.weight/bias ({layer}); expected a "
                f"torchvision AlexNet state dict, found keys like {keys}."
            )
        if weight.ndim != 4:
            raise ValueError(
                f"features.{index}.weight should be a 4-D OIHW conv weight, got shape "
                f"{weight.shape}."
            )
        params[layer] = {"kernel": weight.transpose(2, 3, 1, 0), "bias": bias}
    for layer, index in TORCHVISION_FC_INDEX.items():
        weight = state.get(f"classifier.{index}.weight")
        bias = state.get(f"classifier.{index}.bias")
        if weight is None or bias is None:
            continue
        if weight.ndim != 2:
            raise ValueError(
                f"classifier.{index}.weight should be a 2-D (out, in) matrix, got {weight.shape}."
            )
        if layer == "fc6":
            channels = params["conv5"]["kernel"].shape[-1]
            grid = round((weight.shape[1] / channels) ** 0.5)
            if grid * grid * channels != weight.shape[1]:
                raise ValueError(
                    f"classifier.1.weight has {weight.shape[1]} inputs, not a square map of "
                    f"{channels} channels; is this an AlexNet state dict?"
                )
            kernel = torchvision_fc6_kernel(weight, channels, grid)
        else:
            kernel = weight.T
        params[layer] = {"kernel": kernel, "bias": bias}
    return params


def caffe_npy_to_flax(data: dict[str, Any]) -> Params:
    """Map a caffe-tensorflow ``bvlc_alexnet.npy`` dict to a parameter tree.

    Each value is ``[weights, biases]`` or ``{"weights", "biases"}``; weights are already HWIO
    (conv) or (in, out) with fc6 in HWC order, so they are used as they are.
    """
    if not isinstance(data, dict):
        raise TypeError(
            f"a bvlc_alexnet.npy file holds a dict of layers, this one holds {type(data).__name__}."
        )
    params: Params = {}
    for layer in CONV_LAYERS + FC_LAYERS:
        if layer not in data:
            if layer in CONV_LAYERS:
                raise ValueError(
                    f"the Caffe weights have no {layer!r} entry (keys: {sorted(data)}); "
                    "expected conv1..conv5 and fc6..fc8."
                )
            continue
        entry = data[layer]
        if isinstance(entry, dict):
            if not {"weights", "biases"} <= set(entry):
                raise ValueError(
                    f"Caffe entry {layer!r} has keys {sorted(entry)}, expected "
                    "'weights' and 'biases'."
                )
            weights, biases = entry["weights"], entry["biases"]
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            weights, biases = entry
        else:
            raise ValueError(
                f"Caffe entry {layer!r} must be [weights, biases] or "
                f"{{'weights', 'biases'}}, got {type(entry).__name__}."
            )
        params[layer] = {"kernel": np.asarray(weights), "bias": np.asarray(biases)}
    return params


def tfutils_to_flax(variables: dict[str, Any]) -> Params:
    """Map tfutils AlexNet TF variables (``convN/weights``, ``convN/bias``, ...) to a tree.

    Kernels are HWIO / (in, out) already; fc6 reads the NHWC pool5 map flattened in HWC order.
    """
    cleaned = {key.removesuffix(":0"): np.asarray(value) for key, value in variables.items()}
    params: Params = {}
    for layer in CONV_LAYERS + FC_LAYERS:
        weights, bias = cleaned.get(f"{layer}/weights"), cleaned.get(f"{layer}/bias")
        if weights is None and bias is None and layer in FC_LAYERS:
            continue
        if weights is None or bias is None:
            raise ValueError(
                f"the tfutils variables lack {layer}/weights or {layer}/bias (found keys like "
                f"{sorted(cleaned)[:6]}); expected convN/weights, convN/bias, fcN/weights, "
                "fcN/bias."
            )
        params[layer] = {"kernel": weights, "bias": bias}
    return params


def _check_torch_file_signature(path: Path) -> None:
    """Refuse a file that is neither a zip archive (torch.save since 1.6) nor a pickle."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return
    raise ValueError(
        f"{path} could not be read as a PyTorch state dict (it is neither a zip archive nor a "
        "pickle); it may be truncated or another kind of file: save it again with "
        "torch.save(model.state_dict(), path)."
    )


def _read_torch_file(path: Path) -> dict[str, np.ndarray]:
    _check_torch_file_signature(path)
    try:
        import torch  # optional dependency, imported only when a .pth file is read
    except ImportError:
        raise ImportError(
            f"reading {path.name} needs PyTorch, which is not installed; install the torch "
            "extra (pip install 'v4jax[torch]') or export the state dict to .npz/.safetensors "
            "(e.g. np.savez(f, **{k: v.numpy() for k, v in sd.items()}))."
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"{path} could not be read as a PyTorch state dict ({error}); it may be truncated "
            "or another kind of file: save it again with torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path.name} holds a {type(loaded).__name__}, not a state dict; save "
            "model.state_dict() instead of the model."
        )
    return {key: value.detach().cpu().numpy() for key, value in loaded.items()}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError(
            f"reading {path.name} needs the safetensors package: pip install safetensors."
        ) from None
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError (no base class)
        raise ValueError(
            f"{path} could not be read as a .safetensors file ({error}); it may be truncated or "
            "another kind of file."
        ) from None


def _read_npy_dict(path: Path) -> dict[str, Any]:
    try:
        loaded = np.load(path, allow_pickle=True, encoding="latin1")
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{path} could not be read as a .npy file ({error}); it may be truncated or another "
            "kind of file."
        ) from None
    if not (isinstance(loaded, np.ndarray) and loaded.dtype == object and loaded.shape == ()):
        raise ValueError(
            f"{path.name} is not a pickled dict of layers (bvlc_alexnet.npy format); it holds "
            f"an array of shape {getattr(loaded, 'shape', None)}."
        )
    return loaded.item()


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path} could not be read as an .npz archive of arrays ({error}); it may be "
            "truncated or another kind of file."
        ) from None


def read_params(path: str | os.PathLike) -> tuple[Params, str | None]:
    """Read a weights file into an unchecked parameter tree.

    Returns:
      (params, variant stored in the file) — the variant is known only for v4jax ``.msgpack``
      files (``None`` otherwise).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; v4jax never downloads weights, so put the "
            "file there first (see the README for the supported formats)."
        )
    suffix = path.suffix.lower()
    if suffix == NATIVE_SUFFIX:
        return load_params_with_variant(path)
    if suffix in TORCH_SUFFIXES:
        return torchvision_to_flax(_read_torch_file(path)), None
    if suffix == ".safetensors":
        return torchvision_to_flax(_read_safetensors(path)), None
    if suffix == ".npy":
        return caffe_npy_to_flax(_read_npy_dict(path)), None
    if suffix == ".npz":
        arrays = _read_npz(path)
        if any(key.startswith(("features.", "module.features.")) for key in arrays):
            return torchvision_to_flax(arrays), None
        if any("/" in key for key in arrays):
            return tfutils_to_flax(arrays), None
        raise ValueError(
            f"{path.name} holds neither torchvision keys (features.0.weight, ...) nor tfutils "
            f"variables (conv1/weights, ...): found {sorted(arrays)[:6]}."
        )
    raise ValueError(
        f"unsupported weights file suffix {suffix!r} ({path.name}); use .pth/.pt/.npz/"
        ".safetensors (torchvision state dict), .npy (bvlc_alexnet), .npz (tfutils variables) "
        "or .msgpack (v4jax)."
    )


def load_weights(path: str | os.PathLike, variant: str) -> Params:
    """Read and check a weights file for ``variant`` (format chosen by the suffix).

    Returns:
      Parameter tree with float32 numpy leaves (fc layers absent when the file has none).
    """
    params, stored_variant = read_params(path)
    if stored_variant is not None and stored_variant != variant:
        raise ValueError(
            f"weights file of the wrong variant: {Path(path).name} was saved for "
            f"{stored_variant!r}, not {variant!r}; pass variant={stored_variant!r}."
        )
    return check_params(params, variant)


def save_params(params: Params, path: str | os.PathLike, variant: str) -> Path:
    """Write a checked parameter tree to ``path`` (flax msgpack, atomically).

    The file records ``variant``, so :func:`load_weights` refuses it for another variant.
    """
    path = Path(path)
    if path.suffix.lower() != NATIVE_SUFFIX:
        raise ValueError(f"save_params writes {NATIVE_SUFFIX} files, got {path.name}.")
    checked = check_params(params, variant)
    payload = {"format": "v4jax-alexnet", "variant": variant, "params": checked}
    atomic_write_bytes(path, serialization.msgpack_serialize(payload))
    return path


def load_params_with_variant(path: str | os.PathLike) -> tuple[Params, str]:
    """Read a file written by :func:`save_params`: (parameter tree, variant)."""
    path = Path(path)
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as error:  # msgpack raises several unrelated exception types
        raise ValueError(f"{path} is not a readable v4jax .msgpack weights file: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != "v4jax-alexnet":
        raise ValueError(f"{path} is a msgpack file but was not written by v4jax.save_params.")
    params = {layer: dict(entries) for layer, entries in payload["params"].items()}
    return params, str(payload["variant"])
