"""Hostile inputs at every public entry point: each gets our clear error or the correct result.

An error counts as ours when its type is ValueError/TypeError/FileNotFoundError (or
FileExistsError) and its message names the argument or file and the problem; a raw error from
inside JAX, h5py, scipy, numpy or pickle fails these tests. Property-based cases use bounded
examples (``deadline=None``) so the suite stays well under a minute.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import h5py
import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v4jax import (
    PLS1CV,
    PLSRegression,
    RidgeCV,
    banded_ridge_cv,
    bootstrap_ci,
    ceiling_normalised,
    extract,
    extract_to_hdf5,
    init_params,
    load_weights,
    noise_ceiling_ncsnr,
    pearson_columns,
    pls1_cv,
    prepare_images,
    r2_columns,
    retina_warp,
    ridge_cv,
    save_params,
)
from v4jax.data import load_vim1, make_synthetic_vim1
from v4jax.pipeline.report import read_results

pytestmark = pytest.mark.filterwarnings("ignore::v4jax.features.extraction.RandomWeightsWarning")

OUR_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)
BOUNDED = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ALPHAS = np.logspace(-2, 2, 3)
RNG = np.random.default_rng(0)
X = RNG.standard_normal((24, 6))
Y = X @ RNG.standard_normal((6, 2)) + 0.1 * RNG.standard_normal((24, 2))


def raises_ours(function, *fragments: str) -> BaseException:
    """Call ``function``; it must raise one of OUR_ERRORS whose message holds every fragment."""
    with pytest.raises(OUR_ERRORS) as info:
        function()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


# -- solvers: dtypes, shapes, NaN/inf, lengths ---------------------------------------------------

SOLVERS = {
    "ridge_cv": lambda X, Y: ridge_cv(X, Y, ALPHAS, cv=3),
    "pls1_cv": lambda X, Y: pls1_cv(X, Y, [1, 2], cv=3),
    "banded_ridge_cv": lambda X, Y: banded_ridge_cv([X], Y, ALPHAS, cv=3, ratios=[1.0]),
}
BAD_DTYPES = {
    "bool": (lambda a: a > 0, TypeError, "dtype bool"),
    "complex": (lambda a: a.astype(complex), TypeError, "complex128"),
    "object": (lambda a: a.astype(object), TypeError, "dtype object"),
    "strings": (lambda a: a.astype(str), TypeError, "not a real number type"),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", BAD_DTYPES)
@pytest.mark.parametrize("argument", ["X", "Y"])
def test_solvers_refuse_non_real_dtypes(solver, kind, argument):
    convert, error, fragment = BAD_DTYPES[kind]
    X_in, Y_in = (convert(X), Y) if argument == "X" else (X, convert(Y))
    name = "Xs[0]" if (solver == "banded_ridge_cv" and argument == "X") else argument
    with pytest.raises(error, match="^" + re.escape(name) + " has"):
        SOLVERS[solver](X_in, Y_in)
    raises_ours(lambda: SOLVERS[solver](X_in, Y_in), fragment)


@BOUNDED
@given(
    solver=st.sampled_from(sorted(SOLVERS)),
    argument=st.sampled_from(["X", "Y"]),
    row=st.integers(0, 23),
    column=st.integers(0, 1),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_solvers_name_the_first_nan_or_inf_wherever_it_is(solver, argument, row, column, value):
    X_in, Y_in = X.copy(), Y.copy()
    (X_in if argument == "X" else Y_in)[row, column] = value
    name = "Xs[0]" if (solver == "banded_ridge_cv" and argument == "X") else argument
    raises_ours(
        lambda: SOLVERS[solver](X_in, Y_in), f"{name} contains", f"first at index ({row}, {column})"
    )


@BOUNDED
@given(solver=st.sampled_from(sorted(SOLVERS)), n_x=st.integers(3, 30), n_y=st.integers(3, 30))
def test_solvers_refuse_mismatched_lengths(solver, n_x, n_y):
    if n_x == n_y:
        n_y += 1
    X_in = RNG.standard_normal((n_x, 4))
    Y_in = RNG.standard_normal((n_y, 2))
    raises_ours(lambda: SOLVERS[solver](X_in, Y_in), f"has {n_x} samples", f"has {n_y}")


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    ("X_in", "fragment"),
    [
        (np.empty((0, 6)), "is empty"),
        (np.empty((24, 0)), "is empty"),
        (X[:, 0], "must be 2-D"),
        (X[:, :, None], "must be 2-D"),
        (X[None], "must be 2-D"),
        (None, "must be an array of numbers"),
        ("X.npy", "must be an array of numbers"),
        ([[1.0, 2.0], [3.0]], "could not be read as a numeric array"),
    ],
    ids=["no-samples", "no-features", "1-D", "3-D", "batched", "None", "string", "ragged"],
)
def test_solvers_refuse_bad_shapes(solver, X_in, fragment):
    raises_ours(lambda: SOLVERS[solver](X_in, Y), fragment)


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        (lambda: ridge_cv(X, Y, "abc"), ("alphas must be numbers",)),
        (lambda: ridge_cv(X, Y, []), ("alphas must be a non-empty",)),
        (lambda: ridge_cv(X, Y, [1.0, -1.0]), ("strictly positive",)),
        (lambda: ridge_cv(X, Y, [np.nan]), ("finite",)),
        (lambda: ridge_cv(X, Y, ALPHAS, cv=1), ("at least 2 folds",)),
        (lambda: ridge_cv(X, Y, ALPHAS, cv=100), ("cv=100", "24")),
        (lambda: ridge_cv(X, Y, ALPHAS, cv="five"), ("cv must be",)),
        (lambda: ridge_cv(X, Y, ALPHAS, score="mse"), ("score='mse'",)),
        (lambda: ridge_cv(X, Y, ALPHAS, solver="qr"), ("solver='qr'",)),
        (lambda: ridge_cv(X, Y, ALPHAS, target_batch_size=0), ("target_batch_size",)),
        (lambda: pls1_cv(X, Y, 0), ("n_components",)),
        (lambda: pls1_cv(X, Y, 100, cv=3), ("n_components=100", "n_features = 6")),
        (lambda: pls1_cv(X, Y, [-1, 2]), ("n_components",)),
        (lambda: pls1_cv(X, Y, 2.5), ("n_components",)),
        (lambda: banded_ridge_cv(X, Y, ALPHAS), ("Xs must be a list",)),
        (lambda: banded_ridge_cv([], Y, ALPHAS), ("Xs is empty",)),
        (lambda: banded_ridge_cv([X, X[:-1]], Y, ALPHAS), ("Xs[1] has 23",)),
    ],
)
def test_solver_arguments(call, fragments):
    raises_ours(call, *fragments)


def test_integer_float16_and_list_inputs_give_the_float_answer():
    """Integer, float16 and nested-list designs are cast: the same result as float32 input."""
    X_int = np.round(X * 10).astype(np.int16)
    for convert in (lambda a: a, lambda a: a.astype(np.float16), lambda a: a.tolist()):
        expected_X = np.asarray(convert(X_int), dtype=np.float32)
        for solve in (ridge_cv, pls1_cv):
            grid = ALPHAS if solve is ridge_cv else [1, 2]
            got = solve(convert(X_int), Y.astype(np.float32), grid, cv=3)
            want = solve(expected_X, Y.astype(np.float32), grid, cv=3)
            np.testing.assert_allclose(got.coef, want.coef, rtol=1e-6, atol=1e-7)


ESTIMATORS = {
    "RidgeCV": lambda: RidgeCV(alphas=ALPHAS, cv=3),
    "PLS1CV": lambda: PLS1CV(n_components=[1, 2], cv=3),
    "PLSRegression": lambda: PLSRegression(n_components=2),
}


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimators_refuse_bad_input_with_scikit_learn_messages(estimator):
    make = ESTIMATORS[estimator]
    raises_ours(lambda: make().fit(np.where(X > 1.5, np.nan, X), Y), "Input X contains NaN")
    raises_ours(lambda: make().fit(X.astype(complex), Y), "Complex data not supported")
    raises_ours(lambda: make().fit(X, Y[:-1]), "inconsistent numbers of samples")
    raises_ours(lambda: make().fit(X[:0], Y[:0]), "0 sample(s)")
    raises_ours(lambda: make().fit(X, Y).predict(X[:, :3]), "X has 3 features")
    raises_ours(lambda: make().fit(np.full_like(X, "a", dtype=object), Y), "could not convert")


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimators_convert_numeric_strings_and_bools_as_scikit_learn_does(estimator):
    make = ESTIMATORS[estimator]
    as_float = make().fit(X, Y).coef_
    np.testing.assert_allclose(make().fit(X.astype(str), Y).coef_, as_float, rtol=1e-12)
    np.testing.assert_allclose(
        make().fit(X > 0, Y).coef_, make().fit((X > 0).astype(float), Y).coef_, rtol=1e-12
    )


# -- metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [r2_columns, pearson_columns])
@pytest.mark.parametrize(
    ("y_true", "y_pred", "error", "fragments"),
    [
        (Y.astype(str), Y, TypeError, ("y_true has dtype",)),
        (Y, Y.astype(object), TypeError, ("y_pred has dtype object",)),
        (Y, Y.astype(complex), TypeError, ("complex128",)),
        (None, Y, TypeError, ("y_true must be an array",)),
        (Y, Y[:-1], ValueError, ("(24, 2)", "(23, 2)")),
        (Y, Y[:, :1].repeat(3, axis=1), ValueError, ("(24, 3)",)),
        (Y[:, 0], Y[:, 0], ValueError, ("(..., n_samples, n_targets)",)),
        (Y[:0], Y[:0], ValueError, ("y_true is empty",)),
        (np.where(Y > 1, np.nan, Y), Y, ValueError, ("y_true contains",)),
        (Y, np.where(Y > 1, np.inf, Y), ValueError, ("y_pred contains",)),
    ],
    ids=["str", "object", "complex", "None", "rows", "columns", "1-D", "empty", "nan", "inf"],
)
def test_scores_refuse_bad_input(metric, y_true, y_pred, error, fragments):
    with pytest.raises(error):
        metric(y_true, y_pred)
    raises_ours(lambda: metric(y_true, y_pred), *fragments)


def test_scores_of_integer_input_equal_float_and_work_under_jit():
    truth = np.round(Y * 10).astype(np.int32)
    prediction = truth + RNG.integers(-3, 4, truth.shape)
    for metric in (r2_columns, pearson_columns):
        expected = metric(truth.astype(np.float64), prediction.astype(np.float64))
        # int32 inputs are scored in float32 (JAX's default float for integer arithmetic).
        np.testing.assert_allclose(metric(truth, prediction), expected, rtol=1e-6)
        np.testing.assert_allclose(jax.jit(metric)(truth * 1.0, prediction * 1.0), expected)


def test_other_metrics_refuse_bad_input():
    raises_ours(lambda: bootstrap_ci(np.where(Y > 1, np.nan, Y), Y), "y_true contains")
    raises_ours(lambda: bootstrap_ci(Y, Y[:-1]), "y_true has shape (24, 2)")
    raises_ours(lambda: bootstrap_ci(Y.astype(str), Y), "y_true has dtype")
    raises_ours(lambda: noise_ceiling_ncsnr(Y), "repeats must be 3-D")
    raises_ours(lambda: noise_ceiling_ncsnr(np.full((3, 4, 5), "a")), "repeats has dtype")
    raises_ours(lambda: noise_ceiling_ncsnr(np.ones((1, 4, 5))), "at least 2 repeats")
    raises_ours(lambda: noise_ceiling_ncsnr(np.full((2, 3, 4), np.inf)), "repeats contains inf")
    # All-NaN voxels are documented as undefined: NaN, not an error and not a number.
    assert np.isnan(noise_ceiling_ncsnr(np.full((3, 4, 2), np.nan))).all()
    np.testing.assert_array_equal(ceiling_normalised([0.2, 0.3], [0.4, 0.0]), [0.5, np.nan])


# -- images: layouts, non-images, dtypes ---------------------------------------------------------

GRAY = RNG.uniform(size=(2, 32, 32)).astype(np.float32)
RGB = RNG.uniform(size=(2, 32, 32, 3)).astype(np.float32)
BAD_IMAGES = {
    "NCHW": (RGB.transpose(0, 3, 1, 2), ValueError, "channels"),
    "1-D": (GRAY.ravel(), ValueError, "shape (2048,)"),
    "5-D": (RGB[None], ValueError, "(1, 2, 32, 32, 3)"),
    "single 2-D image": (GRAY[0], ValueError, "add a batch axis"),
    "no images": (GRAY[:0], ValueError, "(0, 32, 32)"),
    "1x1 pixels": (GRAY[:, :1, :1], ValueError, "at least 2"),
    "RGBA": (np.concatenate([RGB, RGB[..., :1]], -1), ValueError, "(2, 32, 32, 4)"),
    "bool": (GRAY > 0.5, TypeError, "dtype bool"),
    "strings": (GRAY.astype(str), TypeError, "not a real number type"),
    "object": (GRAY.astype(object), TypeError, "dtype object"),
    "complex": (GRAY.astype(complex), TypeError, "complex128"),
    "NaN": (np.where(GRAY > 0.9, np.nan, GRAY), ValueError, "NaN"),
    "list": (GRAY.tolist(), TypeError, "got list"),
    "None": (None, TypeError, "NoneType"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_prepare_images_and_extract_refuse_non_images(case):
    images, error, fragment = BAD_IMAGES[case]
    with pytest.raises(error):
        prepare_images(images)
    raises_ours(lambda: prepare_images(images), fragment)
    raises_ours(lambda: extract(images, "conv1", batch_size=2), fragment)


RETINA_BAD = {
    "NCHW": (RGB.transpose(0, 3, 1, 2), ValueError, "look channels-first"),
    "1-D": (GRAY.ravel(), ValueError, "(..., H, W)"),
    "no images": (GRAY[:0], ValueError, "images is empty"),
    "1x1 pixels": (GRAY[:, :1, :1], ValueError, "at least 2 pixels"),
    "bool": (GRAY > 0.5, TypeError, "dtype bool"),
    "strings": (GRAY.astype(str), TypeError, "pass real-valued pixels"),
    "object": (GRAY.astype(object), TypeError, "dtype object"),
    "complex": (GRAY.astype(complex), TypeError, "complex128"),
    "NaN": (np.where(GRAY > 0.9, np.nan, GRAY), ValueError, "NaN or inf pixel"),
    "None": (None, TypeError, "NoneType"),
}


@pytest.mark.parametrize("case", RETINA_BAD)
def test_retina_warp_refuses_non_images(case):
    images, error, fragment = RETINA_BAD[case]
    with pytest.raises(error):
        retina_warp(images, 32)
    raises_ours(lambda: retina_warp(images, 32), fragment)


def test_retina_warp_arguments():
    raises_ours(lambda: retina_warp(GRAY, 3), "output_size=3")
    raises_ours(lambda: retina_warp(GRAY, "big"), "output_size must be a positive integer")
    raises_ours(lambda: retina_warp(GRAY, 32, mode="cubic"), "mode='cubic'")
    raises_ours(lambda: retina_warp(GRAY, 32, fill_value=np.nan), "fill_value must be finite")
    raises_ours(lambda: retina_warp(RGB, 32, channels="yes"), "channels must be True")


def test_images_of_any_real_dtype_and_batch_shape_give_the_float_result():
    """uint8/int/float16 pixels equal their float conversion; retina_warp keeps batch axes."""
    pixels = np.round(GRAY * 200).astype(np.uint8)
    expected = prepare_images(pixels.astype(np.float32))
    for dtype in (np.uint8, np.int32, np.float16):
        converted = pixels.astype(dtype)
        np.testing.assert_allclose(prepare_images(converted), expected, rtol=1e-6, atol=1e-6)
    stacked = retina_warp(np.stack([RGB, RGB]), 32)
    np.testing.assert_array_equal(stacked[1], retina_warp(RGB, 32))


@BOUNDED
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=6))
def test_prepare_images_on_random_shapes_is_ours_or_a_network_input(shape):
    images = np.ones(shape, np.float32)
    try:
        prepared = prepare_images(images)
    except OUR_ERRORS as error:
        assert "images" in str(error)
        return
    assert prepared.shape == (shape[0], 224, 224, 3)


@BOUNDED
@given(
    dtype=st.sampled_from(["bool", "complex64", "object", "U3", "S2", "datetime64[s]"]),
    ndim=st.integers(2, 5),
)
def test_image_entry_points_refuse_every_non_real_dtype(dtype, ndim):
    images = np.zeros((2,) * (ndim - 2) + (8, 8), dtype=dtype)
    for function in (prepare_images, lambda a: retina_warp(a, 8), lambda a: extract(a, "conv1")):
        with pytest.raises(TypeError, match="dtype"):
            function(images)


# -- files: truncated, wrong kind, wrong contents ------------------------------------------------


@pytest.fixture(scope="module")
def vim1_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("vim1")
    make_synthetic_vim1(directory, n_train=12, n_val=4, n_voxels=30, subjects=(1,), progress=False)
    return directory


@pytest.fixture(scope="module")
def png_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("png") / "picture.png"
    plt.imsave(path, RNG.uniform(size=(8, 8)))
    return path


def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _swap(directory: Path) -> None:
    stimuli, responses = directory / "Stimuli.mat", directory / "EstimatedResponses.mat"
    stimuli.rename(directory / "swap")
    responses.rename(stimuli)
    (directory / "swap").rename(responses)


def _delete_variable(directory: Path) -> None:
    with h5py.File(directory / "EstimatedResponses.mat", "a") as handle:
        del handle["roiS1"]


VIM1_DAMAGE = {
    "PNG as EstimatedResponses.mat": (
        lambda d, png: shutil.copy(png, d / "EstimatedResponses.mat"),
        ValueError,
        ("EstimatedResponses.mat is not a readable MATLAB v7.3",),
    ),
    "PNG as Stimuli.mat": (
        lambda d, png: shutil.copy(png, d / "Stimuli.mat"),
        ValueError,
        ("Stimuli.mat is not a readable MATLAB v5",),
    ),
    "truncated responses (50%)": (
        lambda d, png: truncate(d / "EstimatedResponses.mat", 0.5),
        ValueError,
        ("truncated",),
    ),
    "truncated responses (95%)": (
        lambda d, png: truncate(d / "EstimatedResponses.mat", 0.95),
        ValueError,
        ("EstimatedResponses.mat",),
    ),
    "truncated stimuli (50%)": (
        lambda d, png: truncate(d / "Stimuli.mat", 0.5),
        ValueError,
        ("Stimuli.mat is not a readable",),
    ),
    "empty Stimuli.mat": (
        lambda d, png: (d / "Stimuli.mat").write_bytes(b""),
        ValueError,
        ("Stimuli.mat is not a readable",),
    ),
    "files swapped": (lambda d, png: _swap(d), ValueError, ("EstimatedResponses.mat",)),
    "responses saved as v5": (
        lambda d, png: scipy.io.savemat(d / "EstimatedResponses.mat", {"dataTrnS1": np.ones(3)}),
        ValueError,
        ("not a readable MATLAB v7.3",),
    ),
    "missing variable roiS1": (
        lambda d, png: _delete_variable(d),
        ValueError,
        ("no variable 'roiS1'",),
    ),
    "stimuli without stimTrn": (
        lambda d, png: scipy.io.savemat(d / "Stimuli.mat", {"other": np.ones((3, 3))}),
        ValueError,
        ("no variable 'stimTrn'",),
    ),
    "stimuli of the wrong count": (
        lambda d, png: scipy.io.savemat(
            d / "Stimuli.mat",
            {"stimTrn": np.ones((11, 128, 128)), "stimVal": np.ones((4, 128, 128))},
        ),
        ValueError,
        ("11 train images but 12 train responses",),
    ),
    "missing Stimuli.mat": (
        lambda d, png: (d / "Stimuli.mat").unlink(),
        FileNotFoundError,
        ("Stimuli.mat not found",),
    ),
    "directory named EstimatedResponses.mat": (
        lambda d, png: (
            (d / "EstimatedResponses.mat").unlink(),
            (d / "EstimatedResponses.mat").mkdir(),
        ),
        FileNotFoundError,
        ("EstimatedResponses.mat not found",),
    ),
}


@pytest.mark.parametrize("case", VIM1_DAMAGE)
def test_load_vim1_on_damaged_files(case, vim1_dir, png_file, tmp_path):
    damage, error, fragments = VIM1_DAMAGE[case]
    directory = tmp_path / "vim1"
    shutil.copytree(vim1_dir, directory)
    damage(directory, png_file)
    with pytest.raises(error):
        load_vim1(directory, 1, "all")
    raises_ours(lambda: load_vim1(directory, 1, "all"), *fragments)


def test_load_vim1_arguments(vim1_dir, tmp_path):
    raises_ours(lambda: load_vim1(tmp_path / "absent"), "does not exist")
    raises_ours(lambda: load_vim1(vim1_dir, 3), "no data for subject 3")
    raises_ours(lambda: load_vim1(vim1_dir, 1, "V9"), "unknown ROI name 'V9'")
    raises_ours(lambda: load_vim1(vim1_dir, 0), "subject must be a positive integer")
    raises_ours(lambda: load_vim1(vim1_dir, nan_policy="zero"), "nan_policy='zero'")


@pytest.fixture(scope="module")
def conv_params():
    return init_params(jax.random.key(0), "torchvision", "conv2")


def test_load_weights_on_damaged_and_foreign_files(conv_params, png_file, tmp_path):
    native = save_params(conv_params, tmp_path / "alexnet.msgpack", "torchvision")
    raises_ours(lambda: load_weights(native, "caffe"), "wrong variant", "'torchvision'")
    truncated = tmp_path / "truncated.msgpack"
    truncated.write_bytes(native.read_bytes()[:1000])
    raises_ours(
        lambda: load_weights(truncated, "torchvision"), "truncated.msgpack", "not a readable"
    )
    state = {"features.0.weight": np.ones((64, 3, 11, 11), np.float32)}
    np.savez(tmp_path / "state.npz", **state)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "state.npz").read_bytes()[:300])
    raises_ours(lambda: load_weights(tmp_path / "cut.npz", "torchvision"), "cut.npz", "truncated")
    for suffix in (".npz", ".npy", ".safetensors", ".pth", ".msgpack"):
        fake = tmp_path / f"picture{suffix}"
        shutil.copy(png_file, fake)
        raises_ours(lambda fake=fake: load_weights(fake, "torchvision"), fake.name)
    np.save(tmp_path / "array.npy", np.ones(3))
    raises_ours(lambda: load_weights(tmp_path / "array.npy", "caffe"), "not a pickled dict")
    raises_ours(lambda: load_weights(tmp_path / "absent.npz", "caffe"), "does not exist")
    raises_ours(lambda: load_weights(tmp_path / "weights.h5", "caffe"), "does not exist")
    (tmp_path / "weights.h5").write_bytes(b"x")
    raises_ours(lambda: load_weights(tmp_path / "weights.h5", "caffe"), "unsupported weights file")
    raises_ours(
        lambda: extract(GRAY, "conv1", params=conv_params, variant="caffe"), "'torchvision'"
    )


def test_extract_to_hdf5_refuses_bad_targets_before_working(conv_params, png_file, tmp_path):
    target = tmp_path / "features.h5"
    extract_to_hdf5(GRAY, target, "conv1", params=conv_params, progress=False)
    raises_ours(
        lambda: extract_to_hdf5(GRAY, target, "conv1", params=conv_params, progress=False),
        "already exists",
    )
    raises_ours(
        lambda: extract_to_hdf5(GRAY, tmp_path, "conv1", params=conv_params, overwrite=True),
        "is a directory",
    )
    shutil.copy(png_file, tmp_path / "other.h5.partial")
    raises_ours(
        lambda: extract_to_hdf5(GRAY, tmp_path / "other.h5", "conv1", params=conv_params),
        "other.h5.partial cannot be opened",
    )


def test_read_results_on_damaged_and_foreign_files(vim1_dir, png_file, tmp_path):
    raises_ours(lambda: read_results(tmp_path / "absent.h5"), "does not exist")
    raises_ours(lambda: read_results(tmp_path), "does not exist")
    shutil.copy(png_file, tmp_path / "results.h5")
    raises_ours(lambda: read_results(tmp_path / "results.h5"), "not a readable HDF5 results file")
    shutil.copy(vim1_dir / "EstimatedResponses.mat", tmp_path / "responses.h5")
    raises_ours(lambda: read_results(tmp_path / "responses.h5"), "has no subject groups")
    with h5py.File(tmp_path / "partial.h5", "w") as handle:
        handle.create_group("S1")
    raises_ours(lambda: read_results(tmp_path / "partial.h5"), "partial.h5")


def test_features_file_without_the_layer_is_named(conv_params, tmp_path):
    from v4jax.pipeline.study import read_features

    path = extract_to_hdf5(GRAY, tmp_path / "f.h5", "conv1", params=conv_params, progress=False)
    raises_ours(lambda: read_features(path, "conv3"), "no layer 'conv3'", "['conv1']")


def test_truncated_features_file_is_named(conv_params, png_file, tmp_path):
    from v4jax.pipeline.study import read_features

    path = extract_to_hdf5(GRAY, tmp_path / "f.h5", "conv1", params=conv_params, progress=False)
    truncate(path, 0.3)
    raises_ours(lambda: read_features(path, "conv1"), "f.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shutil.copy(png_file, tmp_path / "g.h5")
    raises_ours(lambda: read_features(tmp_path / "g.h5", "conv1"), "g.h5")
