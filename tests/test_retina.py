"""Tests of v4jax.features.retina against the original package's outputs and independent
references."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from v4jax.features.retina import (
    RetinaWarp,
    retina_fit,
    retina_grid,
    retina_warp,
    valid_output_sizes,
)

MAX_MISMATCH_FRACTION = 1e-4  # 0.01% of entries may differ (float32 ties at x.5) ...
MAX_INDEX_OFFSET = 1  # ... each by at most one pixel.


@pytest.fixture(scope="module")
def golden(golden_dir):
    folder = golden_dir / "retinawarp"
    path = folder / "retinawarp_golden.npz"
    if not path.is_file():
        pytest.skip(f"retinawarp golden file {path} is absent")
    arrays = dict(np.load(path))
    params = json.loads((folder / "params.json").read_text())
    return arrays, params["cases"]


def _cases(golden, path):
    cases = [case for case in golden[1] if case["path"] == path]
    assert cases, f"no {path} cases in the golden file"
    return cases


def _reference_radii(rho_f, input_size, count):
    """The radius recurrence written out independently (plain Python floats)."""
    k = math.log(10.0) / (input_size // 2)
    radii = [0.0]
    for _ in range(count - 1):
        r = radii[-1]
        radii.append(r + math.exp(min(k * r / 2.0, 700.0)) / math.sqrt(math.pi * rho_f))
    return radii


def _bracket_has_root(input_size, output_size):
    h = output_size // 2
    if h < 1:
        return False
    at_low = input_size / 2 - _reference_radii(0.01, input_size, h)[-1]
    at_high = input_size / 2 - _reference_radii(5.0, input_size, h)[-1]
    return at_low <= 0 <= at_high


# ---------------------------------------------------------------- golden: the original package


def test_fit_matches_the_original_for_every_case(golden):
    arrays, cases = golden
    for case in cases:
        output_size = case.get("output_size_used", case["params"].get("output_size"))
        fit = retina_fit(case["input_size_used"], output_size)
        for ours, key in ((fit.rho_f, "rf"), (fit.a, "a"), (fit.b, "b")):
            expected = case["fit"][key]
            assert abs(ours - expected) <= 1e-9 * abs(expected), (case["name"], key, ours)
    radii = _reference_radii(retina_fit(500, 224).rho_f, 500, 112)
    np.testing.assert_allclose(radii, arrays["fit_500_224_r_raw"], rtol=1e-9, atol=1e-12)


def _nearest_call(case):
    params = dict(case["params"])
    output_size = params.pop("output_size")
    return output_size, params


def test_nearest_grids_match_the_original(golden):
    arrays, _ = golden
    for case in _cases(golden, "tf"):
        image = arrays[case["input"]]
        output_size, params = _nearest_call(case)
        grid = retina_grid(image.shape[:2], output_size, **params)
        reference = arrays[f"{case['name']}_grid"].astype(np.int64) - 2  # into the unpadded image
        ours = np.stack([grid.rows, grid.cols], axis=-1).astype(np.int64)
        offsets = np.abs(ours - reference)
        assert offsets.max() <= MAX_INDEX_OFFSET, case["name"]
        assert np.count_nonzero(offsets) <= MAX_MISMATCH_FRACTION * offsets.size, case["name"]
        inside = (reference[..., 0] >= 0) & (reference[..., 0] < image.shape[0])
        inside &= (reference[..., 1] >= 0) & (reference[..., 1] < image.shape[1])
        assert np.count_nonzero(grid.valid != inside) <= MAX_MISMATCH_FRACTION * inside.size


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nearest_outputs_match_the_original(golden, dtype):
    arrays, _ = golden
    for case in _cases(golden, "tf"):
        image = arrays[case["input"]].astype(dtype)
        expected = arrays[f"{case['name']}_out"]
        output_size, params = _nearest_call(case)
        warped = np.asarray(retina_warp(image, output_size, **params))
        assert warped.dtype == dtype and warped.shape == expected.shape, case["name"]
        differs = np.any(warped != expected, axis=-1) if warped.ndim == 3 else warped != expected
        assert np.count_nonzero(differs) <= MAX_MISMATCH_FRACTION * differs.size, case["name"]
        # Where a pixel differs, it is the float32 x.5 tie: the grid entry is off by one there.
        grid = retina_grid(image.shape[:2], output_size, **params)
        reference = arrays[f"{case['name']}_grid"].astype(np.int64) - 2
        tie = np.any(np.stack([grid.rows, grid.cols], -1) != reference, axis=-1)
        assert not np.any(differs & ~tie), case["name"]
        if image.ndim == 2:  # the original tiled grayscale to 3 channels; so can we
            tiled = np.asarray(
                retina_warp(np.repeat(image[..., None], 3, -1), output_size, **params)
            )
            np.testing.assert_array_equal(tiled, np.repeat(warped[..., None], 3, -1))


@pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-4), (np.float64, 1e-6)])
def test_bilinear_outputs_match_the_original(golden, dtype, atol):
    arrays, _ = golden
    for case in _cases(golden, "numpy"):
        image = arrays[case["input"]].astype(dtype)
        expected = arrays[f"{case['name']}_out"]
        params = dict(case["params"])
        warped = retina_warp(
            image,
            case["output_size_used"],
            input_size=params.get("input_size"),
            fill_value=params.get("fill_value", 0.0),
            mode="bilinear",
        )
        assert warped.shape == expected.shape, case["name"]
        np.testing.assert_allclose(
            np.asarray(warped), expected, atol=atol, rtol=0, err_msg=case["name"]
        )


# ---------------------------------------------------------------- fit range and errors


@pytest.mark.parametrize("input_size", [96, 128, 227, 500])
def test_sizes_without_a_fit_raise_naming_the_valid_range(input_size):
    smallest, largest = valid_output_sizes(input_size)
    assert (
        input_size / 12 < smallest < input_size / 6
        and 2.3 * input_size < largest < 2.4 * input_size
    )
    # The range is exactly where the original's bracket [0.01, 5] holds a root.
    for output_size in (smallest, largest):
        assert _bracket_has_root(input_size, output_size)
        assert retina_fit(input_size, output_size).b > 0
    for output_size in (smallest - 1, largest + 1):
        assert not _bracket_has_root(input_size, output_size)
        with pytest.raises(ValueError, match=rf"output_size in {smallest}\.\.{largest}"):
            retina_fit(input_size, output_size)
    image = np.random.default_rng(1).uniform(size=(input_size, input_size))
    with pytest.raises(ValueError, match=f"input_size={input_size}"):
        retina_warp(image, largest + 1)


def test_study_setting_fit():
    fit = retina_fit(500, 224)
    np.testing.assert_allclose(
        [fit.rho_f, fit.a, fit.b], [0.176062, 0.00975118, 1.102403], rtol=1e-5
    )
    assert valid_output_sizes(500) == (56, 1181)
    assert fit.magnification == pytest.approx(1 / 1.102403, rel=1e-6)


@pytest.mark.parametrize(
    "images, kwargs, error, pattern",
    [
        (np.arange(64.0), {}, ValueError, "grayscale"),
        ("image.png", {}, TypeError, "array of pixels"),
        (np.ones((64, 64), dtype=complex), {}, TypeError, "complex"),
        (np.ones((64, 64), dtype=bool), {}, TypeError, "bool"),
        (np.array([[object()] * 64] * 64), {}, TypeError, "object"),
        (np.zeros((2, 3, 64, 64)), {}, ValueError, "channels-first"),
        (np.zeros((64, 64)), {"mode": "cubic"}, ValueError, "mode"),
        (np.zeros((64, 64)), {"shift": (1, 2, 3)}, ValueError, "shift"),
        (np.zeros((64, 64), np.uint8), {"fill_value": 0.5}, ValueError, "uint8"),
        (np.zeros((64, 48)), {"mode": "bilinear"}, ValueError, "min\\(H, W\\) = 48"),
        (np.zeros((64, 64)), {"channels": True}, ValueError, "channels=True"),
        (np.zeros((0, 64, 64)), {}, ValueError, "empty"),
    ],
)
def test_bad_input_gets_a_clear_error(images, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        retina_warp(images, 56, **kwargs)


def test_nan_pixels_are_refused():
    image = np.random.default_rng(2).uniform(size=(2, 64, 64))
    image[1, 5, 7] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or inf pixel\(s\) \(first at index \(1, 5, 7\)\)"):
        retina_warp(image, 64)
    with pytest.raises(ValueError, match="NaN"):
        retina_warp(jnp.asarray(image), 64, mode="bilinear")


def test_channels_first_lookalike_is_accepted_when_declared_grayscale():
    images = np.random.default_rng(3).uniform(size=(2, 3, 64, 64))
    warped = retina_warp(images, 48, channels=False)
    assert warped.shape == (2, 3, 48, 48)
    np.testing.assert_array_equal(warped[1, 2], retina_warp(images[1, 2], 48))


# ---------------------------------------------------------------- independent references


def _definition_coordinates(height, width, output_size, fit, first_row, first_col, centre):
    """src = centre + (a r + b) d, d measured from the output centre (written from the README)."""
    i, j = np.meshgrid(np.arange(output_size), np.arange(output_size), indexing="ij")
    du = i + first_row - (height - 1) / 2
    dv = j + first_col - (width - 1) / 2
    radius = np.hypot(du, dv)
    scale = fit.a * radius + fit.b
    return centre[0] + scale * du, centre[1] + scale * dv


def test_bilinear_matches_scipy_on_non_square_colour_images():
    rng = np.random.default_rng(4)
    images = rng.uniform(-1, 2, size=(2, 90, 130, 3))
    output_size, input_size, fill = 70, 80, 3.0
    fit = retina_fit(input_size, output_size)
    first = ((90 - output_size) // 2, (130 - output_size) // 2)
    rows, cols = _definition_coordinates(90, 130, output_size, fit, *first, (44.5 - 2, 64.5 + 1))
    expected = np.empty((2, output_size, output_size, 3))
    for n in range(2):
        for c in range(3):
            expected[n, ..., c] = scipy.ndimage.map_coordinates(
                images[n, ..., c], [rows, cols], order=1, mode="grid-constant", cval=fill
            )
        expected[n] = np.clip(expected[n], images[n].min(), max(images[n].max(), fill))
    warped = retina_warp(
        images, output_size, input_size=input_size, shift=(2, -1), mode="bilinear", fill_value=fill
    )
    np.testing.assert_allclose(np.asarray(warped), expected, rtol=0, atol=1e-10)


def test_grid_keeps_the_angle_and_maps_radius_r_to_a_r2_plus_b_r():
    fit = retina_fit(100, 80)
    coords = retina_grid((100, 100), 80, mode="bilinear").coords
    i, j = np.meshgrid(np.arange(80), np.arange(80), indexing="ij")
    output_offset = np.stack([i - 39.5, j - 39.5])
    source_offset = coords - 49.5
    np.testing.assert_allclose(
        np.hypot(*source_offset), fit.source_radius(np.hypot(*output_offset)), rtol=1e-12
    )
    cross = output_offset[0] * source_offset[1] - output_offset[1] * source_offset[0]
    assert np.abs(cross).max() < 1e-9 and np.all((output_offset * source_offset).sum(0) > 0)


def test_bilinear_scales_integers_like_img_as_float():
    image = np.random.default_rng(5).integers(0, 256, size=(80, 80, 3), dtype=np.uint8)
    warped = retina_warp(image, 64, mode="bilinear", input_size=96, fill_value=0.5)
    expected = retina_warp(
        image.astype(np.float32) / 255, 64, mode="bilinear", input_size=96, fill_value=0.5
    )
    assert warped.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(warped), np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize("exact_center", [False, True])
def test_nearest_matches_the_definition_on_non_square_images(exact_center):
    height, width, output_size = 101, 150, 90
    fit = retina_fit(height, output_size)
    if exact_center:
        centre = ((height - 1) / 2, (width - 1) / 2)
    else:
        centre = (height / 2 - 2, width / 2 - 2)  # the original's convention (quirk 1)
    first = ((height - output_size) / 2, (width - output_size) / 2)
    rows, cols = _definition_coordinates(height, width, output_size, fit, *first, centre)
    rows, cols = np.round(rows).astype(int), np.round(cols).astype(int)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    image = np.random.default_rng(6).integers(1, 255, size=(height, width), dtype=np.uint8)
    expected = np.where(inside, image[rows.clip(0, height - 1), cols.clip(0, width - 1)], 7)
    warped = np.asarray(retina_warp(image, output_size, exact_center=exact_center, fill_value=7))
    assert warped.dtype == np.uint8
    assert np.count_nonzero(warped != expected) <= MAX_MISMATCH_FRACTION * warped.size


def test_grid_is_cached_and_read_only():
    first = retina_grid((128, 128), 100)
    assert retina_grid(128, 100) is first
    with pytest.raises(ValueError):
        first.rows[0, 0] = 3


# ---------------------------------------------------------------- properties


@st.composite
def _size_pairs(draw, parity):
    """(image side, 16 <= output side <= side) with a fit.

    parity "flip": side odd or output even (exact-centre nearest warps commute with flips);
    "centred": side - output even (the bilinear window is centred on the image).
    """
    side = draw(st.integers(24, 160))
    smallest, _ = valid_output_sizes(side)
    output_size = draw(st.integers(max(smallest, 16), side))
    mismatch = (
        (side % 2 == 0 and output_size % 2 == 1)
        if parity == "flip"
        else ((side - output_size) % 2 == 1)
    )
    if mismatch:
        output_size += 1 if output_size < side else -1
    return side, output_size


@settings(max_examples=12, deadline=None)
@given(sizes=_size_pairs("centred"))
def test_magnification_at_the_centre_is_one_over_b(sizes):
    side, output_size = sizes
    fit = retina_fit(side, output_size)
    ramp = np.broadcast_to(np.arange(side, dtype=np.float64)[:, None], (side, side))
    warped = np.asarray(retina_warp(ramp, output_size, input_size=side, mode="bilinear"))
    column = warped[:, output_size // 2]
    centre = output_size // 2
    # Bilinear sampling reproduces the ramp: inside the image the output is the source row.
    source_rows = retina_grid(side, output_size, input_size=side, mode="bilinear").coords[0]
    source_rows = source_rows[:, output_size // 2]
    inside_image = (source_rows >= 0) & (source_rows <= side - 1)
    np.testing.assert_allclose(column[inside_image], source_rows[inside_image], atol=1e-9)
    # Its step at the centre is the central source spacing b (plus a r, r < 1): magnification 1/b.
    central_step = column[centre] - column[centre - 1]
    assert fit.b <= central_step <= fit.b + fit.a + 1e-9
    # Away from the centre the step grows (compression): rho'(r) = 2 a r + b.
    steps = np.diff(column[centre:][inside_image[centre:]])
    inside = steps[: max(2, len(steps) // 2)]
    assert np.all(np.diff(inside) > -1e-9) and inside[-1] > central_step


@settings(max_examples=12, deadline=None)
@given(sizes=_size_pairs("flip"), seed=st.integers(0, 2**16))
def test_exact_centre_commutes_with_flips(sizes, seed):
    side, output_size = sizes
    image = np.random.default_rng(seed).integers(0, 255, size=(side, side + 1, 3), dtype=np.uint8)
    warp = RetinaWarp(output_size=output_size, input_size=side, exact_center=True)
    warped = np.asarray(warp(image))
    np.testing.assert_array_equal(np.asarray(warp(image[::-1])), warped[::-1])
    if side % 2 == 0 or output_size % 2 == 0:  # the width side + 1 has the other parity
        np.testing.assert_array_equal(np.asarray(warp(image[:, ::-1])), warped[:, ::-1])
    if (side - output_size) % 2 == 0:
        bilinear = RetinaWarp(output_size=output_size, input_size=side, mode="bilinear")
        smooth = image[:, :side].astype(np.float64)
        np.testing.assert_allclose(
            np.asarray(bilinear(smooth[::-1, ::-1])),
            np.asarray(bilinear(smooth))[::-1, ::-1],
            atol=1e-9,
        )


def test_default_centre_is_the_originals_and_not_flip_symmetric():
    image = np.random.default_rng(7).uniform(size=(128, 128))
    warped = np.asarray(retina_warp(image, 128))
    assert not np.array_equal(np.asarray(retina_warp(image[::-1], 128)), warped[::-1])
    grid = retina_grid(128, 128)
    assert grid.rows[63:65, 63:65].min() == 62  # fovea at H/2 - 2 = 62 (quirk 1)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_batch_equals_loop_and_jit_vmap_agree(mode):
    rng = np.random.default_rng(8)
    gray = rng.uniform(size=(2, 3, 72, 80)).astype(np.float32)
    colour = rng.uniform(size=(4, 72, 80, 3)).astype(np.float32)
    for images, batch_shape in ((gray, (2, 3)), (colour, (4,))):
        batched = np.asarray(retina_warp(images, 60, mode=mode, channels=images is colour))
        flat = images.reshape(-1, *images.shape[len(batch_shape) :])
        looped = np.stack([np.asarray(retina_warp(x, 60, mode=mode)) for x in flat])
        np.testing.assert_array_equal(batched, looped.reshape(batched.shape))
        assert batched.shape[: len(batch_shape)] == batch_shape
    jitted = jax.jit(lambda x: retina_warp(x, 60, mode=mode))(colour)
    mapped = jax.vmap(lambda x: retina_warp(x, 60, mode=mode))(colour)
    eager = retina_warp(colour, 60, mode=mode)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(eager), rtol=0, atol=1e-6)


def test_retina_warp_object_is_a_readable_static_transform():
    warp = RetinaWarp(output_size=64, input_size=72, shift=[1, -2], mode="bilinear")
    assert warp.name == "retina64_in72_shift1x-2_bilinear"
    assert repr(warp) == (
        "RetinaWarp(output_size=64, input_size=72, shift=(1.0, -2.0), mode='bilinear')"
    )
    assert repr(RetinaWarp(output_size=224)) == "RetinaWarp(output_size=224)"
    images = np.random.default_rng(9).uniform(size=(3, 72, 72)).astype(np.float32)
    expected = retina_warp(images, 64, input_size=72, shift=(1, -2), mode="bilinear")
    np.testing.assert_array_equal(np.asarray(warp(images)), np.asarray(expected))
    via_jit = jax.jit(lambda x, t: t(x), static_argnums=1)(images, warp)
    np.testing.assert_allclose(np.asarray(via_jit), np.asarray(expected), atol=1e-6)
    with pytest.raises(ValueError, match=r"choose output_size in 14\.\.239"):
        RetinaWarp(output_size=300, input_size=100)


@pytest.mark.slow
def test_valid_range_equals_the_bracket_for_many_input_sizes():
    for input_size in range(8, 700, 37):
        smallest, largest = valid_output_sizes(input_size)
        for output_size in (smallest - 2, smallest - 1, smallest, largest, largest + 1):
            assert _bracket_has_root(input_size, output_size) == (
                smallest <= output_size <= largest
            ), (input_size, output_size)
