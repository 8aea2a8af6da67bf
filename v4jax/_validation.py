"""Input validation in one place: every public entry point checks its arrays here.

Each check raises a ``ValueError`` (or ``TypeError`` for a wrong kind of object) whose message
names the argument, what was wrong and what to do about it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse


def compute_dtype(*arrays: Any) -> np.dtype:
    """The floating dtype the engines compute in.

    float64 when JAX's x64 mode is enabled and any input is float64; float32 otherwise.
    """
    x64 = bool(jax.config.jax_enable_x64)
    if x64 and any(np.dtype(getattr(a, "dtype", np.float32)) == np.float64 for a in arrays):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


COMPUTE_DTYPES = ("float32", "float64")


def resolve_dtype(requested: Any, *arrays: Any) -> np.dtype:
    """The compute dtype: ``requested`` when given, else :func:`compute_dtype` of the arrays.

    Args:
      requested: None, "float32" or "float64" (or the numpy dtypes). "float64" upcasts float32
        inputs on the device (the host arrays stay as they are) and needs JAX's x64 mode.
      arrays: the inputs, used when ``requested`` is None.
    """
    if requested is None:
        return compute_dtype(*arrays)
    try:
        dtype = np.dtype(requested)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in COMPUTE_DTYPES:
        raise ValueError(
            f"dtype={requested!r} is not supported; choose one of {list(COMPUTE_DTYPES)} or "
            "None (float64 when JAX's x64 mode is on and the inputs are float64)."
        )
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype='float64' needs JAX's 64-bit mode: call "
            "jax.config.update('jax_enable_x64', True) before any JAX computation."
        )
    return dtype


def check_numeric_dtype(array: Any, name: str) -> None:
    """Refuse arrays that are not real numbers (bool, complex, object, strings)."""
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        raise TypeError(
            f"{name} has dtype bool; pass real-valued numbers (cast with .astype(float) "
            "if a boolean design is really meant)."
        )
    if dtype.kind not in "fiu":
        raise TypeError(
            f"{name} has dtype {dtype}, which is not a real number type; pass a float or "
            "integer array."
        )


def as_2d_float(
    array: Any,
    name: str,
    *,
    allow_1d: bool = False,
    check_finite: bool = True,
) -> np.ndarray | jax.Array:
    """Validate a 2-D numeric array (numpy or JAX) without copying it to another device.

    Args:
      array: array-like, shape (n_samples, n_columns) (or (n_samples,) when ``allow_1d``).
      name: the argument's name, used in error messages.
      allow_1d: accept a vector and return it as a single column.
      check_finite: refuse NaN and inf.

    Returns:
      The array as numpy or JAX (as given; lists become numpy), 2-D, real-valued. Integer and
      float16 inputs are returned unchanged: the engines cast them to their compute dtype.

    Raises:
      TypeError for None, strings and non-numeric dtypes; ValueError for scipy sparse matrices
      (dense input only), wrong shapes, empty arrays and (with ``check_finite``) NaN or inf.
    """
    if isinstance(array, (str, bytes)) or array is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(array).__name__}.")
    if scipy.sparse.issparse(array):
        raise ValueError(
            f"{name} is a scipy sparse {type(array).__name__}; sparse input is not supported. "
            f"Convert it to a dense array first with {name}.toarray()."
        )
    if not isinstance(array, (np.ndarray, jax.Array)) and not hasattr(array, "__array__"):
        try:
            array = np.asarray(array)
        except (ValueError, TypeError) as error:
            raise TypeError(f"{name} could not be read as a numeric array: {error}") from None
    if not isinstance(array, (np.ndarray, jax.Array)):
        array = np.asarray(array)
    check_numeric_dtype(array, name)
    if array.ndim == 1 and allow_1d:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        expected = "1-D or 2-D" if allow_1d else "2-D (n_samples, n_columns)"
        raise ValueError(
            f"{name} must be {expected}, got shape {tuple(array.shape)}; reshape it "
            "(for example X.reshape(len(X), -1) for feature maps)."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(array.shape)}); it needs samples and columns."
        )
    if check_finite:
        check_all_finite(array, name)
    return array


#: Arrays from this many elements take the fast finiteness check (see check_all_finite).
_FAST_FINITE_SIZE = 1 << 20


def check_all_finite(array: Any, name: str) -> None:
    """Raise if ``array`` holds NaN or inf, saying where the first one is.

    A large 2-D numpy float array is first summed down its rows by one BLAS product with a
    vector of ones (NaN and inf propagate into its column's sum; a read of the array at memory
    speed instead of a boolean array as large as it): only when a sum is not finite (a
    non-finite value, or an overflow) is the array checked element by element.
    """
    xp = jnp if isinstance(array, jax.Array) else np
    if (
        xp is np
        and array.ndim == 2
        and array.size >= _FAST_FINITE_SIZE
        and array.dtype in (np.float32, np.float64)
        and np.all(np.isfinite(np.ones(array.shape[0], dtype=array.dtype) @ array))
    ):
        return
    finite = xp.isfinite(array)
    if not bool(xp.all(finite)):
        bad = np.argwhere(~np.asarray(finite))
        n_nan = int(xp.isnan(array).sum())
        n_inf = int(bad.shape[0]) - n_nan
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} inf value(s) (first at index "
            f"{tuple(int(i) for i in bad[0])}); drop or impute those samples/columns first "
            "(for vim-1 voxels, load_vim1 drops NaN voxels by default)."
        )


def check_same_samples(X: Any, Y: Any, names: Sequence[str] = ("X", "Y")) -> None:
    """Raise if two arrays disagree on the number of samples (rows)."""
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"{names[0]} has {X.shape[0]} samples but {names[1]} has {Y.shape[0]}; they must "
            "have one row per stimulus, in the same order."
        )


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray | None:
    """Validate sample weights: None, a scalar (every sample alike) or (n_samples,) numbers.

    Returns a new float64 array (the caller's is never modified), or None for None. Raises a
    ValueError for the wrong shape, negative, NaN or infinite weights, or all weights zero.
    """
    if sample_weight is None:
        return None
    try:
        weights = np.array(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"sample_weight must be numbers, got {type(sample_weight).__name__}."
        ) from None
    if weights.ndim == 0:
        weights = np.full(n_samples, float(weights))
    if weights.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must be 1-D with one weight per sample ({n_samples},), got shape "
            f"{weights.shape}."
        )
    if not np.all(np.isfinite(weights)):
        raise ValueError("sample_weight contains NaN or infinity; give finite weights.")
    if np.any(weights < 0):
        raise ValueError("sample_weight has negative values; weights must be >= 0.")
    if not np.any(weights > 0):
        raise ValueError("sample_weight is zero for every sample: there is nothing to fit.")
    return weights


def check_alphas(alphas: Any) -> np.ndarray:
    """Validate a regularisation grid: a non-empty 1-D array of finite positive numbers.

    Every element must be a real number (as scikit-learn's ``RidgeCV`` checks): numeric strings
    such as ``"1"`` are refused with a ``TypeError``, not converted.
    """
    example = "for example alphas=np.logspace(-2, 6, 17)."
    if isinstance(alphas, (str, bytes)):
        raise TypeError(f"alphas must be numbers, got {alphas!r}; {example}")
    try:
        items = np.asarray(alphas, dtype=object)
    except (ValueError, TypeError) as error:
        raise TypeError(f"alphas must be numbers, got {alphas!r} ({error}); {example}") from None
    for index, alpha in enumerate(items.ravel()):
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
            raise TypeError(
                f"alphas must be numbers, but alphas[{index}] is {alpha!r} "
                f"({type(alpha).__name__}); {example}"
            )
    values = np.atleast_1d(items.astype(np.float64))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"alphas must be a non-empty 1-D grid, got shape {values.shape}; {example}"
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"alphas must be finite and strictly positive, got {values.tolist()}; use a "
            "log-spaced grid such as np.logspace(-2, 6, 17)."
        )
    return values


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}.")
    return value


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """Raise unless ``value`` is a positive integer (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
