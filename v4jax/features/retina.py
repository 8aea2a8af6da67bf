"""Eccentricity-dependent retinal resampling ("retinawarp") in JAX.

A clean-room implementation of the transform of the DiCarlo lab's ``retinawarp`` package
(Bashivan, Kar & DiCarlo 2019; dicarlolab/retinawarp at 891c2f3), written from its definition.
The output keeps full resolution at the centre (the fovea) and compresses the periphery: an
output pixel at offset ``d`` (radius ``r = |d|``) from the output centre samples the source at

    src = c_src + (a * r + b) * d,

so the source radius is ``rho(r) = a r² + b r`` with the angle kept, and the magnification at
the centre is ``1 / b``. The sample density falls 10-fold (``max_ratio = 10``) from the centre
to the border of the ``input_size`` disc.

**The radial fit** (:func:`retina_fit`, host float64, cached per (input size, output size)).
With ``R = input_size // 2``, ``k = ln(10) / R`` and the recurrence ``r_0 = 0``,
``r_{n+1} = r_n + exp(k r_n / 2) / sqrt(pi rho_f)``, the foveal density ``rho_f`` is the root in
[0.01, 5] of ``input_size / 2 - r_{h-1}(rho_f)`` with ``h = output_size // 2``
(``scipy.optimize.brentq``), and ``(a, b)`` is the least-squares fit of ``a n² + b n`` to the
points ``(n, r_n)``, ``n = 0 .. h-1``. The root exists only for output sizes between about
``input_size / 9`` and ``2.36 * input_size`` (:func:`valid_output_sizes` gives the exact range;
for 128 px it is 18 to 305, for 227 px 28 to 537, for 500 px 56 to 1181). Other sizes raise a
``ValueError`` naming that range.

**Modes.**

- ``mode="nearest"`` (default) reproduces the package's TensorFlow path, the one the V4 study
  used: nearest neighbour, no anti-aliasing, output ``S x S`` with ``S = output_size``, output
  centre ``(S-1)/2``, float32 polar arithmetic ``rho cos(theta) + H/2 - shift``, indices rounded
  half-to-even. Its centre convention is kept: the source centre is ``(H/2 - 2, W/2 - 2)``, 1.5 px
  up-left of the true centre of a 500 px image, because the original reads an image zero-padded
  by 2 px without removing the padding. (The original's output centre is a float32 mean, which
  drifts from ``(S-1)/2`` for ``S > 299``, e.g. (249.497, 249.138) at 500; ``(S-1)/2`` is used.)
  ``exact_center=True`` samples about the true centre
  ``((H-1)/2, (W-1)/2)`` instead (float64 arithmetic, rounded symmetrically about the centre, so
  the warp commutes with flips whenever ``H`` is odd or ``S`` is even, per axis). Samples outside
  the image get ``fill_value`` (the original: 0). The dtype and values of the input are kept.
- ``mode="bilinear"`` reproduces the package's numpy/scikit-image path: integers are scaled to
  [0, 1] by their dtype's maximum (``img_as_float``), the warp is bilinear with constant
  ``fill_value`` outside the image, centred at ``((H-1)/2, (W-1)/2)`` for output and source, and
  each output image is clipped to its input's value range (widened to include ``fill_value``
  when some sample reads outside the image). The original warps the full ``H x W`` grid and
  centre-crops it; only the ``S x S`` window is computed here (window row = full row
  ``+ (H - S) // 2``, likewise for columns). Two quirks of the original are *not* copied:
  an odd ``H - S`` gives it an ``(S+1) x (S+1)`` output (500 -> 299 gives 300 x 300; this module
  returns its first ``S`` rows and columns), and it raises ``ValueError`` for a 2-D grayscale image
  that needs cropping (this module accepts it). ``output_size`` larger than the image's short side
  (where the original first rescales the image with ``skimage.transform.resize``) is refused.

``input_size`` (default ``min(H, W)``) only enters the fit: a smaller value zooms in. ``shift``
(pixels, rows then columns) moves the fixation point up/left for positive values.

**Layouts.** Grayscale ``(..., H, W)`` or colour ``(..., H, W, C)`` with any batch shape. By
default an array is colour when it has at least 3 dimensions and its last axis has 1, 3 or 4
entries; pass ``channels=True``/``False`` to say so explicitly. A 4-D or larger array that looks
channels-first (``(..., C, H, W)`` with ``C`` in 1, 3, 4) is refused unless ``channels=False``.

**How the V4 study used it.** Each 500 x 500 stimulus was shifted by +0.5 to [0, 1], tiled to 3
channels and passed through the TensorFlow path as ``warp_image(img, output_size=224)``
(``rho_f = 0.176062, a = 0.00975118, b = 1.102403``); here that is
``retina_warp(stimuli + 0.5, 224)`` or ``RetinaWarp(output_size=224)``. For the 128 px vim-1
stimuli the proportional call is ``RetinaWarp(output_size=S, input_size=128)`` with any ``S`` in
18 ... 305 (the study's ratio 224/500 gives ``S = 57``; ``S = 128`` keeps the size; ``S = 227``
feeds AlexNet directly).

Example:
  >>> warp = RetinaWarp(output_size=224)
  >>> warped = warp(stimuli)          # (N, 500, 500) -> (N, 224, 224)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates
from scipy.optimize import brentq

from v4jax._validation import check_choice, check_positive_int, compute_dtype

MAX_RATIO = 10.0
RHO_F_BRACKET = (0.01, 5.0)
MODES = ("nearest", "bilinear")
_CHANNEL_COUNTS = (1, 3, 4)
_TF_PAD = 2


@dataclasses.dataclass(frozen=True)
class RetinaFit:
    """The radial profile ``rho(r) = a r² + b r`` for one (input size, output size).

    Attributes:
      input_size: diameter in source pixels that the profile covers.
      output_size: output side in pixels.
      rho_f: foveal density, the root of the radius recurrence.
      a, b: coefficients of the fitted profile (``1 / b`` is the magnification at the centre).
    """

    input_size: int
    output_size: int
    rho_f: float
    a: float
    b: float

    @property
    def magnification(self) -> float:
        """Output pixels per source pixel at the centre, ``1 / b``."""
        return 1.0 / self.b

    def source_radius(self, r: Any) -> np.ndarray:
        """Source radius ``a r² + b r`` for output radii ``r`` (float64, any shape)."""
        r = np.asarray(r, dtype=np.float64)
        return self.a * r * r + self.b * r


@dataclasses.dataclass(frozen=True, eq=False)
class RetinaGrid:
    """A precomputed sampling grid for one image size and warp setting.

    Attributes:
      mode: "nearest" or "bilinear".
      image_size: (H, W) of the source images.
      output_size: S, the output side.
      fit: the radial fit used.
      exact_center: whether the nearest grid samples about the exact centre.
      rows, cols: (S, S) int32 source indices (nearest only; may lie outside the image).
      valid: (S, S) bool, True where (rows, cols) lies inside the image (nearest only).
      coords: (2, S, S) float64 source (row, col) coordinates (bilinear only).
      reads_outside: whether any bilinear sample touches a pixel outside the image.
    """

    mode: str
    image_size: tuple[int, int]
    output_size: int
    fit: RetinaFit
    exact_center: bool
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None
    valid: np.ndarray | None = None
    coords: np.ndarray | None = None
    reads_outside: bool = False


def _radii(rho_f: float, input_size: int, count: int) -> np.ndarray:
    """Source radii r_0 .. r_{count-1} of the recurrence (float64, may overflow to inf)."""
    k = math.log(MAX_RATIO) / (input_size // 2)
    step = 1.0 / math.sqrt(math.pi * rho_f)
    radii = np.zeros(count, dtype=np.float64)
    r = 0.0
    with np.errstate(over="ignore"):
        for n in range(1, count):
            r = r + float(np.exp(k * r / 2.0)) * step
            radii[n] = r
    return radii


def _check_input_size(input_size: Any) -> int:
    size = check_positive_int(input_size, "input_size")
    if size < 2:
        raise ValueError(f"input_size must be at least 2 pixels, got {size}.")
    return size


@functools.cache
def valid_output_sizes(input_size: int) -> tuple[int, int]:
    """The smallest and largest output size with a radial fit for ``input_size``.

    The fit's root ``rho_f`` must lie in [0.01, 5] (the original's bracket); this range is
    where it does. For 128 px it is (18, 305); for 500 px (56, 1181).
    """
    input_size = _check_input_size(input_size)
    half = input_size / 2.0
    low, high = RHO_F_BRACKET
    count = 8 * input_size + 8
    radii_low = _radii(low, input_size, count)
    radii_high = _radii(high, input_size, count)
    # h = output_size // 2 is valid when f(low) <= 0 <= f(high), f = half - r_{h-1}.
    h_values = np.arange(1, count + 1)
    ok = (half - radii_low[h_values - 1] <= 0) & (half - radii_high[h_values - 1] >= 0)
    if not ok.any():
        raise ValueError(f"input_size={input_size} admits no output size for the retina fit.")
    h_min, h_max = int(h_values[ok].min()), int(h_values[ok].max())
    return 2 * h_min, 2 * h_max + 1


def retina_fit(input_size: int, output_size: int) -> RetinaFit:
    """Fit the radial profile for ``input_size -> output_size`` (host float64, cached).

    Args:
      input_size: diameter in source pixels covered by the warp (the original's ``input_size``,
        default there ``min(H, W)``), at least 2.
      output_size: output side ``S``.

    Returns:
      A :class:`RetinaFit` with ``rho_f``, ``a`` and ``b``.

    Raises:
      ValueError: when the root of the recurrence is not in [0.01, 5] (the original fails here
        too); the message names the valid output sizes for ``input_size``.
    """
    input_size = _check_input_size(input_size)
    output_size = check_positive_int(output_size, "output_size")
    return _fit(input_size, output_size)


@functools.cache
def _fit(input_size: int, output_size: int) -> RetinaFit:
    smallest, largest = valid_output_sizes(input_size)
    if not smallest <= output_size <= largest:
        raise ValueError(
            f"output_size={output_size} has no retina fit for input_size={input_size}: the "
            f"foveal density would lie outside [{RHO_F_BRACKET[0]}, {RHO_F_BRACKET[1]}]. For "
            f"input_size={input_size} choose output_size in {smallest}..{largest} (or change "
            "input_size; the valid range is about input_size/9 to 2.36*input_size)."
        )
    h = output_size // 2
    half = input_size / 2.0

    def residual(rho_f: float) -> float:
        return half - _radii(rho_f, input_size, h)[h - 1]

    rho_f = brentq(residual, *RHO_F_BRACKET, xtol=1e-14, maxiter=500)
    radii = _radii(rho_f, input_size, h)
    n = np.arange(h, dtype=np.float64)
    design = np.stack([n * n, n], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, radii, rcond=None)
    if a < 0 or b <= 0:
        raise ValueError(
            f"The retina fit for input_size={input_size}, output_size={output_size} gave "
            f"a={a:.3g}, b={b:.3g}; both must be positive. Choose another output_size."
        )
    return RetinaFit(input_size, output_size, float(rho_f), float(a), float(b))


def _normalise_shift(shift: Any) -> tuple[float, float]:
    if shift is None:
        return (0.0, 0.0)
    values = np.asarray(shift, dtype=object).ravel().tolist()
    if len(values) != 2 or not all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in values
    ):
        raise ValueError(f"shift must be a pair of numbers (rows, cols) in pixels, got {shift!r}.")
    pair = (float(values[0]), float(values[1]))
    if not all(math.isfinite(v) for v in pair):
        raise ValueError(f"shift must be finite, got {shift!r}.")
    return pair


def _normalise_image_size(image_size: Any) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise ValueError(f"image_size must be an int or a pair (H, W), got {image_size!r}.")
    return (
        check_positive_int(image_size[0], "image_size[0]"),
        check_positive_int(image_size[1], "image_size[1]"),
    )


def retina_grid(
    image_size: int | tuple[int, int],
    output_size: int,
    *,
    input_size: int | None = None,
    shift: Sequence[float] | None = None,
    mode: str = "nearest",
    exact_center: bool = False,
) -> RetinaGrid:
    """The sampling grid of :func:`retina_warp` for images of ``image_size`` (cached).

    Args:
      image_size: (H, W) of the source images, or one int for square images.
      output_size: output side S.
      input_size: diameter the fit covers; default ``min(H, W)``.
      shift: (rows, cols) fixation offset in pixels; positive moves it up/left.
      mode: "nearest" (TensorFlow path) or "bilinear" (numpy/skimage path).
      exact_center: nearest mode only: sample about the exact centre instead of the original's
        ``(H/2 - 2, W/2 - 2)``.

    Returns:
      A :class:`RetinaGrid`; its arrays are read-only and shared between calls.
    """
    height, width = _normalise_image_size(image_size)
    output_size = check_positive_int(output_size, "output_size")
    if input_size is None:
        input_size = min(height, width)
    input_size = _check_input_size(input_size)
    check_choice(mode, "mode", MODES)
    return _grid(
        (height, width), output_size, input_size, _normalise_shift(shift), mode, bool(exact_center)
    )


@functools.lru_cache(maxsize=64)
def _grid(
    image_size: tuple[int, int],
    output_size: int,
    input_size: int,
    shift: tuple[float, float],
    mode: str,
    exact_center: bool,
) -> RetinaGrid:
    fit = _fit(input_size, output_size)
    if mode == "bilinear":
        coords, reads_outside = _bilinear_coords(image_size, output_size, fit, shift)
        return RetinaGrid(
            mode, image_size, output_size, fit, False, coords=coords, reads_outside=reads_outside
        )
    if exact_center:
        rows, cols = _exact_nearest_indices(image_size, output_size, fit, shift)
    else:
        rows, cols = _tf_nearest_indices(image_size, output_size, fit, shift)
    valid = (rows >= 0) & (rows < image_size[0]) & (cols >= 0) & (cols < image_size[1])
    for array in (rows, cols, valid):
        array.flags.writeable = False
    return RetinaGrid(mode, image_size, output_size, fit, exact_center, rows, cols, valid)


def _tf_nearest_indices(
    image_size: tuple[int, int], output_size: int, fit: RetinaFit, shift: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The TensorFlow path's indices, float32 arithmetic in its order, minus its 2-px padding."""
    f32 = np.float32
    height, width = image_size
    offsets = np.arange(output_size, dtype=f32) - f32((output_size - 1) / 2)
    u = offsets[:, None] + np.zeros((1, output_size), dtype=f32)
    v = np.zeros((output_size, 1), dtype=f32) + offsets[None, :]
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    rho = f32(fit.a) * r * r + f32(fit.b) * r
    x = rho * np.cos(theta) + f32(height / 2) - f32(shift[0])
    y = rho * np.sin(theta) + f32(width / 2) - f32(shift[1])
    x = np.clip(x, f32(0), f32(height + _TF_PAD))
    y = np.clip(y, f32(0), f32(width + _TF_PAD))
    rows = np.round(x).astype(np.int32) - _TF_PAD
    cols = np.round(y).astype(np.int32) - _TF_PAD
    return rows, cols


def _offsets_and_scale(
    first_row: int, first_col: int, output_size: int, image_size: tuple[int, int], fit: RetinaFit
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row/col offsets from the exact image centre and the radial scale ``a r + b`` (float64)."""
    height, width = image_size
    index = np.arange(output_size, dtype=np.float64)
    du = (index + first_row - (height - 1) / 2.0)[:, None]
    dv = (index + first_col - (width - 1) / 2.0)[None, :]
    scale = fit.a * np.sqrt(du * du + dv * dv) + fit.b
    return du, dv, scale


def _exact_nearest_indices(
    image_size: tuple[int, int], output_size: int, fit: RetinaFit, shift: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest indices about the exact centre, rounded symmetrically about it."""
    height, width = image_size
    first_row = (height - output_size) / 2.0
    first_col = (width - output_size) / 2.0
    du, dv, scale = _offsets_and_scale(first_row, first_col, output_size, image_size, fit)
    indices = []
    for offset, centre in (
        (scale * du, (height - 1) / 2.0 - shift[0]),
        (scale * dv, (width - 1) / 2.0 - shift[1]),
    ):
        base = math.floor(centre)
        indices.append((base + np.round(offset + (centre - base))).astype(np.int32))
    return indices[0], indices[1]


def _bilinear_coords(
    image_size: tuple[int, int], output_size: int, fit: RetinaFit, shift: tuple[float, float]
) -> tuple[np.ndarray, bool]:
    """Source coordinates of the numpy path's centre crop, and whether any read leaves the image."""
    height, width = image_size
    if output_size > min(height, width):
        raise ValueError(
            f"mode='bilinear' needs output_size <= min(H, W) = {min(height, width)}, got "
            f"{output_size}; the original rescales the image first in that case. Resize the "
            "images yourself (e.g. jax.image.resize) or use mode='nearest'."
        )
    du, dv, scale = _offsets_and_scale(
        (height - output_size) // 2, (width - output_size) // 2, output_size, image_size, fit
    )
    rows = (height - 1) / 2.0 - shift[0] + scale * du
    cols = (width - 1) / 2.0 - shift[1] + scale * dv
    coords = np.stack([rows, cols])
    coords.flags.writeable = False
    outside = (
        (np.floor(rows) < 0)
        | (np.floor(rows) + 1 > height - 1)
        | (np.floor(cols) < 0)
        | (np.floor(cols) + 1 > width - 1)
    )
    return coords, bool(outside.any())


def _has_channels(shape: tuple[int, ...], channels: bool | None) -> bool:
    """Decide the layout: (..., H, W, C) when True, (..., H, W) when False."""
    if channels is not None:
        if not isinstance(channels, bool):
            raise TypeError(f"channels must be True, False or None, got {channels!r}.")
        if channels and len(shape) < 3:
            raise ValueError(
                f"channels=True needs images of shape (..., H, W, C), got shape {shape}."
            )
        return channels
    if len(shape) >= 3 and shape[-1] in _CHANNEL_COUNTS:
        return True
    if len(shape) >= 4 and shape[-3] in _CHANNEL_COUNTS:
        raise ValueError(
            f"images of shape {shape} look channels-first (..., C, H, W); retina_warp expects "
            "channels-last (..., H, W, C): use np.moveaxis(images, -3, -1). If they really are "
            "grayscale images of shape (..., H, W), pass channels=False."
        )
    return False


def _check_images(images: Any) -> jax.Array | np.ndarray:
    if images is None or isinstance(images, (str, bytes)):
        raise TypeError(f"images must be an array of pixels, got {type(images).__name__}.")
    if not isinstance(images, (np.ndarray, jax.Array)):
        try:
            images = np.asarray(images)
        except (ValueError, TypeError) as error:
            raise TypeError(f"images could not be read as a numeric array: {error}") from None
    dtype = np.dtype(images.dtype)
    if dtype == np.bool_ or dtype.kind not in "fiu":
        raise TypeError(
            f"images has dtype {dtype}; pass real-valued pixels (float or integer), e.g. "
            "images.astype(np.float32)."
        )
    if images.ndim < 2:
        raise ValueError(
            f"images must be (..., H, W) grayscale or (..., H, W, C) colour, got shape "
            f"{tuple(images.shape)}."
        )
    return images


def _raise_non_finite(images: np.ndarray | jax.Array) -> None:
    """Raise the error for NaN/inf pixels, naming how many and where the first one is."""
    bad = np.argwhere(~np.isfinite(np.asarray(images)))
    raise ValueError(
        f"images contains {bad.shape[0]} NaN or inf pixel(s) (first at index "
        f"{tuple(int(i) for i in bad[0])}); fix or drop those images before warping."
    )


def _check_fill(fill_value: Any, dtype: np.dtype) -> float:
    if isinstance(fill_value, bool) or not isinstance(fill_value, (int, float, np.number)):
        raise TypeError(f"fill_value must be a number, got {fill_value!r}.")
    value = float(fill_value)
    if not math.isfinite(value):
        raise ValueError(f"fill_value must be finite, got {fill_value!r}.")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if value != round(value) or not info.min <= value <= info.max:
            raise ValueError(
                f"fill_value={fill_value!r} cannot be stored in the images' dtype {dtype}; "
                "pass a value of that integer type or cast the images to float."
            )
    return value


def _to_bhwc(images: jax.Array, has_channels: bool) -> jax.Array:
    """(..., H, W[, C]) -> (B, H, W, C) inside a jitted function (a free reshape there)."""
    spatial = images.shape[-3:] if has_channels else (*images.shape[-2:], 1)
    return images.reshape(-1, *spatial)


def _from_bhwc(warped: jax.Array, shape: tuple[int, ...], has_channels: bool) -> jax.Array:
    """(B, S, S, C) -> (..., S, S[, C]) with the batch shape of the input ``shape``."""
    batch_shape = shape[:-3] if has_channels else shape[:-2]
    tail = warped.shape[1:] if has_channels else warped.shape[1:3]
    return warped.reshape(*batch_shape, *tail)


def _all_finite(images: jax.Array, check: bool) -> jax.Array:
    return jnp.all(jnp.isfinite(images)) if check else jnp.asarray(True)


@functools.partial(jax.jit, static_argnames=("has_channels", "check"))
def _warp_nearest(
    images: jax.Array,
    flat_index: jax.Array,
    valid: jax.Array,
    fill: jax.Array,
    has_channels: bool,
    check: bool,
) -> tuple[jax.Array, jax.Array]:
    """One gather along the flattened pixel axis; also returns whether all pixels are finite."""
    stacked = _to_bhwc(images, has_channels)
    batch, height, width, n_channels = stacked.shape
    size = valid.shape[0]
    flat = stacked.reshape(batch, height * width, n_channels)
    # The indices are clipped into the image on the host, so the gather needs no bounds checks.
    picked = flat.at[:, flat_index.reshape(-1)].get(mode="promise_in_bounds")
    picked = picked.reshape(batch, size, size, n_channels)
    warped = jnp.where(valid[None, :, :, None], picked, fill.astype(images.dtype))
    return _from_bhwc(warped, images.shape, has_channels), _all_finite(images, check)


@functools.partial(
    jax.jit, static_argnames=("fill", "widen", "dtype", "scale", "has_channels", "check")
)
def _warp_bilinear(
    images: jax.Array,
    coords: jax.Array,
    fill: float,
    widen: bool,
    dtype: np.dtype,
    scale: float,
    has_channels: bool,
    check: bool,
) -> tuple[jax.Array, jax.Array]:
    """Bilinear samples clipped to each image's range; also returns whether all are finite."""
    stacked = _to_bhwc(images, has_channels).astype(dtype)
    if scale != 1:
        stacked = stacked / jnp.asarray(scale, dtype)

    def one_plane(plane: jax.Array) -> jax.Array:
        return map_coordinates(plane, [coords[0], coords[1]], order=1, mode="constant", cval=fill)

    planes = jnp.moveaxis(stacked, -1, 1)
    warped = jax.vmap(jax.vmap(one_plane))(planes)
    low = jnp.min(stacked, axis=(1, 2, 3))
    high = jnp.max(stacked, axis=(1, 2, 3))
    if widen:
        low = jnp.minimum(low, fill)
        high = jnp.maximum(high, fill)
    warped = jnp.clip(warped, low[:, None, None, None], high[:, None, None, None])
    warped = jnp.moveaxis(warped, 1, -1)
    return _from_bhwc(warped, images.shape, has_channels), _all_finite(images, check)


def retina_warp(
    images: Any,
    output_size: int,
    *,
    input_size: int | None = None,
    shift: Sequence[float] | None = None,
    mode: str = "nearest",
    exact_center: bool = False,
    fill_value: float = 0.0,
    channels: bool | None = None,
    check_finite: bool = True,
) -> jax.Array:
    """Warp images onto the retina: full resolution at the centre, compressed periphery.

    Works on host or JAX arrays, under ``jax.jit`` and ``jax.vmap`` (the grid depends only on
    shapes and the static arguments, so it is built on the host at trace time).

    Args:
      images: (..., H, W) grayscale or (..., H, W, C) colour, any batch shape, real-valued.
      output_size: output side S; see :func:`valid_output_sizes` for the allowed range.
      input_size: diameter in source pixels the warp covers (fit only); default ``min(H, W)``.
      shift: (rows, cols) fixation offset in pixels; positive moves the fixation up/left.
      mode: "nearest" (default: the original TensorFlow path the V4 study used) or
        "bilinear" (the original numpy/scikit-image path).
      exact_center: nearest mode: sample about the exact centre ``((H-1)/2, (W-1)/2)`` instead
        of the original's ``(H/2 - 2, W/2 - 2)``. Bilinear mode always uses the exact centre.
      fill_value: value of samples outside the image (the TensorFlow path's is 0).
      channels: whether the last axis holds channels; None infers it (see the module docs).
      check_finite: refuse NaN/inf pixels (skipped for traced values inside jit/vmap).

    Returns:
      (..., S, S) or (..., S, S, C). Nearest mode keeps the input dtype (as JAX stores it:
      float64 becomes float32 unless JAX's x64 mode is on); bilinear mode returns float32
      (float64 for float64 input with x64 on), integers scaled to [0, 1].
    """
    images = _check_images(images)
    shape = tuple(images.shape)
    has_channels = _has_channels(shape, channels)
    spatial = shape[-3:-1] if has_channels else shape[-2:]
    batch_shape = shape[:-3] if has_channels else shape[:-2]
    n_channels = shape[-1] if has_channels else 1
    if min(spatial) < 2:
        layout = "(..., H, W, C)" if has_channels else "(..., H, W)"
        raise ValueError(
            f"images have spatial size {spatial} (layout {layout}); each side needs at least "
            "2 pixels."
        )
    if 0 in batch_shape or n_channels == 0:
        raise ValueError(f"images is empty (shape {shape}).")
    grid = retina_grid(
        spatial,
        output_size,
        input_size=input_size,
        shift=shift,
        mode=mode,
        exact_center=exact_center,
    )
    kind = np.dtype(images.dtype)
    # Nearest mode writes the fill into the input dtype; bilinear mode works in float.
    fill = _check_fill(fill_value, kind if mode == "nearest" else np.dtype(np.float64))
    check = bool(check_finite) and kind.kind == "f" and not isinstance(images, jax.core.Tracer)
    if mode == "nearest":
        flat_index = np.clip(grid.rows, 0, spatial[0] - 1) * spatial[1] + np.clip(
            grid.cols, 0, spatial[1] - 1
        )
        warped, finite = _warp_nearest(
            images,
            jnp.asarray(flat_index, jnp.int32),
            jnp.asarray(grid.valid),
            jnp.asarray(fill),
            has_channels=has_channels,
            check=check,
        )
    else:
        dtype = compute_dtype(images)
        warped, finite = _warp_bilinear(
            images,
            jnp.asarray(grid.coords, dtype),
            fill=fill,
            widen=grid.reads_outside,
            dtype=dtype,
            scale=float(np.iinfo(kind).max) if kind.kind in "iu" else 1.0,
            has_channels=has_channels,
            check=check,
        )
    if check and not bool(finite):
        _raise_non_finite(images)
    return warped


@dataclasses.dataclass(frozen=True)
class RetinaWarp:
    """A retina warp with fixed settings, callable on image batches (hashable, jit-static).

    ``RetinaWarp(output_size=224)`` is the V4 study's transform for 500 px stimuli;
    ``RetinaWarp(output_size=S, input_size=128)`` with S in 18..305 is its analogue for 128 px
    vim-1 stimuli. Call it on (N, H, W) grayscale or (N, H, W, C) colour batches (any batch
    shape); the arguments mean what they mean in :func:`retina_warp`.
    """

    output_size: int
    input_size: int | None = None
    shift: tuple[float, float] | None = None
    mode: str = "nearest"
    exact_center: bool = False
    fill_value: float = 0.0
    channels: bool | None = None

    def __post_init__(self) -> None:
        check_positive_int(self.output_size, "output_size")
        check_choice(self.mode, "mode", MODES)
        if self.shift is not None:
            object.__setattr__(self, "shift", _normalise_shift(self.shift))
        if self.input_size is not None:
            retina_fit(self.input_size, self.output_size)
        _check_fill(self.fill_value, np.dtype(np.float64))

    @property
    def name(self) -> str:
        """A short file-name-safe label, e.g. ``retina224`` or ``retina128_in128_bilinear``."""
        parts = [f"retina{self.output_size}"]
        if self.input_size is not None:
            parts.append(f"in{self.input_size}")
        if self.shift is not None and self.shift != (0.0, 0.0):
            parts.append(f"shift{self.shift[0]:g}x{self.shift[1]:g}")
        if self.mode != "nearest":
            parts.append(self.mode)
        if self.exact_center and self.mode == "nearest":
            parts.append("exact")
        if self.fill_value != 0:
            parts.append(f"fill{self.fill_value:g}")
        return "_".join(parts)

    def __repr__(self) -> str:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        settings = [
            f"{key}={getattr(self, key)!r}"
            for key in defaults
            if key == "output_size" or getattr(self, key) != defaults[key]
        ]
        return f"RetinaWarp({', '.join(settings)})"

    def __call__(self, images: Any) -> jax.Array:
        """Warp (..., H, W) or (..., H, W, C) images; returns (..., S, S[, C])."""
        return retina_warp(
            images,
            self.output_size,
            input_size=self.input_size,
            shift=self.shift,
            mode=self.mode,
            exact_center=self.exact_center,
            fill_value=self.fill_value,
            channels=self.channels,
        )
