"""Cross-validated ridge, vim-1 shape: v4jax vs himalaya KernelRidgeCV vs scikit-learn RidgeCV.

Problem (defaults): 1,750 samples x 64,896 features (AlexNet conv3) x 1,550 targets (V4 of
subject 1), 17 alphas log-spaced 1e-2..1e6, 5 contiguous folds, float32, an alpha per target.

* v4jax: ``ridge_cv`` (dual path: kernel once, ONE eigendecomposition for every fold and
  alpha, held-out residuals ``(C_GG)⁻¹ (C Y)_G`` of all alphas x targets as one product per
  fold, refit with each target's alpha to dual coefficients), then ``result.predict`` through
  the kernel. Forming the primal ``result.coef`` (n_features x n_targets, which neither peer's
  timed path forms) is timed separately after the repeats, and its peak memory is reported
  apart from the fit's.
* himalaya: ``KernelRidgeCV(kernel="linear", fit_intercept=True)`` on the same folds, scored by
  R² (``himalaya.scoring.r2_score``), numpy backend; its dual coefficients predict.
* scikit-learn: ``RidgeCV(alpha_per_target=True)``; scikit-learn supports an alpha per target only
  with its efficient leave-one-out (``cv=None``), so its choice of alpha may differ from the
  5-fold fits: its predictions are compared by correlation, not equality.
* v4jax-loo: ``ridge_cv(cv="loo")``, scikit-learn's problem (leave-one-out, an alpha per target):
  timed against scikit-learn, with the fraction of voxels given the same alpha.

The machine floor: the v4jax child also times the dual path's library calls alone (the kernel's
BLAS syrk, the one LAPACK eigh, the fold blocks and their inverses, the per-voxel and predict
products), each on its own at its exact shape. An implementation of the algorithm can hardly
take less on this machine, so himalaya's time over the floor estimates the largest ratio one could
report here.

Each method runs in its own child process (so its peak RSS is its own), ``--repeats`` times after
one warm-up; the table reports medians, ratios and peak memory, and the JSON goes to
``benchmarks/results/``. Run ``python benchmarks/bench_ridge.py --help`` for smaller shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import v4jax

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("v4jax", "himalaya", "sklearn", "v4jax-loo")
REFERENCE = "float64-reference"


def make_problem(n_samples: int, n_features: int, n_targets: int, n_test: int, seed: int = 0):
    """Deterministic conv3-like data: non-negative correlated features, linear targets + noise."""
    rng = np.random.default_rng(seed)
    n_total = n_samples + n_test
    latent = rng.standard_normal((n_total, 64), dtype=np.float32)
    mixing = rng.standard_normal((64, n_features), dtype=np.float32) / 8
    X = latent @ mixing
    X += rng.standard_normal((n_total, n_features), dtype=np.float32)
    np.maximum(X, 0, out=X)
    weights = rng.standard_normal((64, n_targets), dtype=np.float32)
    signal = latent @ weights
    noise_scale = rng.uniform(0.5, 4.0, n_targets).astype(np.float32)
    Y = signal + rng.standard_normal((n_total, n_targets), dtype=np.float32) * noise_scale * 8
    return X[:n_samples], Y[:n_samples], X[n_samples:]


def flop_count(
    n: int,
    p: int,
    t: int,
    a: int,
    folds: int,
    n_new: int,
    symmetric_kernel: bool,
    filters: int | None = None,
) -> float:
    """Floating-point operations of v4jax's timed dual path (matmuls, eigh, inverses).

    The kernel is counted as computed: one triangle (``n² p``, a BLAS syrk) when
    ``symmetric_kernel`` (host arrays on a CPU), else the full product ``2 n² p``. One eigh of
    the kernel (rank ``r = n - 1``); per fold and alpha the block ``C_GG`` (``2 g² r``) and its
    inverse (``2 g³``); per target ``Z = Uᵀ Y`` (``2 n r t``), every alpha's ``(C Y)_G`` (``2 a n r
    t`` in all; with ``filters`` shared filters, ``2 f n r t`` for their products and ``2 a f n
    t`` to mix them) and ``(C_GG)⁻¹`` applied (``2 a g² t`` per fold); the refit (``4 n r t``);
    ``n_new`` predictions through the kernel. The optional primal coefficients (``2 n p t``) are
    not counted. ``folds=0`` counts leave-one-out (no blocks, no inverses).
    """
    rank = n - 1
    gram = (1 if symmetric_kernel else 2) * n * n * p
    eigh = 9 * rank**3
    g = n / folds if folds else 0
    blocks = folds * a * (2 * g * g * rank + 2 * g**3 + 2 * g * g * t)
    residuals = 2 * a * n * rank * t if filters is None else 2 * filters * n * t * (rank + a)
    per_target = 2 * n * rank * t + residuals + 4 * n * rank * t
    predict = 2 * n_new * n * p + 2 * n_new * n * t
    return gram + eigh + blocks + per_target + predict


def median_seconds(function, repeats: int = 3) -> float:
    """Median wall time of ``function()`` (JAX outputs awaited) after one warm-up call."""
    import jax

    jax.block_until_ready(function())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_matmul_rate(size: int = 4096, repeats: int = 5) -> float:
    """Median float32 matmul rate of JAX's default device, FLOP/s."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), dtype=jnp.float32)
    product = jax.jit(lambda x, y: x @ y)
    return 2 * size**3 / median_seconds(lambda: product(a, a), repeats)


def machine_floor(
    X: np.ndarray,
    n_new: int,
    n_targets: int,
    n_alphas: int,
    folds: int,
    n_filters: int,
    block: int = 8192,
) -> dict[str, float]:
    """Seconds that the dual path's library calls alone take on this machine.

    Each call runs on its own, at its exact shape, with nothing between calls: the kernel's BLAS
    syrk over contiguous feature blocks (copies untimed), the one LAPACK eigh (on a random
    kernel of that size), and the products and inverses of the fold blocks, the per-voxel
    phase and predict (numpy BLAS). An implementation of the algorithm on this machine can
    hardly take less: the sum estimates how fast v4jax could be here.
    """
    import jax
    import jax.numpy as jnp

    n, p = X.shape
    g = n // folds
    rank = n - 1
    kernel_seconds = 0.0
    for start in range(0, p, block):
        contiguous = np.ascontiguousarray(X[:, start : start + block])
        kernel_seconds += median_seconds(lambda contiguous=contiguous: contiguous @ contiguous.T)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((n, 3 * n), dtype=np.float32)
    kernel = jnp.asarray(features @ features.T)
    eigh_seconds = median_seconds(lambda: jax.jit(jnp.linalg.eigh)(kernel))

    def product_seconds(*shape: int) -> float:
        """(batch..., rows, inner) @ (batch..., inner, columns) for shape (batch..., rows, inner,
        columns)."""
        *batch, rows, inner, columns = shape
        left = rng.standard_normal((*batch, rows, inner), dtype=np.float32)
        right = rng.standard_normal((*batch, inner, columns), dtype=np.float32)
        return median_seconds(lambda: left @ right)

    square = rng.standard_normal((n_alphas, g, g), dtype=np.float32) + g * np.eye(g, dtype="f4")
    inverse_seconds = median_seconds(lambda: np.linalg.inv(square))
    per_fold = (
        product_seconds(n_alphas, g, rank, g)  # the blocks C_GG
        + inverse_seconds
        + product_seconds(n_filters * g, rank, n_targets)  # (C Y)_G for every filter
        + product_seconds(n_alphas, g, g, n_targets)  # (C_GG)⁻¹ applied
    )
    products_seconds = (
        folds * per_fold
        + 3 * product_seconds(rank, n, n_targets)  # Z = Uᵀ Y, refit
        + product_seconds(n_new, p, n)  # predict: cross-kernel
        + product_seconds(n_new, n, n_targets)  # predict: x dual coefficients
    )
    return {
        "kernel_syrk_s": kernel_seconds,
        "eigh_s": eigh_seconds,
        "products_s": products_seconds,
        "total_s": kernel_seconds + eigh_seconds + products_seconds,
    }


def run_child(method: str, args: argparse.Namespace, output: Path) -> None:
    """Fit one method ``repeats`` times (after a warm-up), save timings and test predictions."""
    X, Y, X_test = make_problem(args.samples, args.features, args.targets, args.test, args.seed)
    alphas = np.logspace(-2, 6, 17).astype(np.float32)
    folds = [
        (np.setdiff1d(np.arange(args.samples), test), test)
        for test in np.array_split(np.arange(args.samples), args.folds)
    ]
    if method == REFERENCE:
        import jax

        jax.config.update("jax_enable_x64", True)
        from v4jax import ridge_cv

        X, Y, X_test = X.astype(np.float64), Y.astype(np.float64), X_test.astype(np.float64)
        alphas = alphas.astype(np.float64)
        args.repeats = 0

        def fit_predict():
            result = ridge_cv(X, Y, alphas, cv=folds)
            prediction = X_test @ np.asarray(result.coef) + np.asarray(result.intercept)
            return prediction, np.asarray(result.best_alphas)

        device = "cpu (float64)"
    elif method in ("v4jax", "v4jax-loo"):
        import jax

        from v4jax import prepare_ridge, ridge_cv
        from v4jax.solvers.ridge import filter_count

        fitted = []
        cv = "loo" if method == "v4jax-loo" else folds

        def fit_predict():
            fitted[:] = [ridge_cv(X, Y, alphas, cv=cv)]
            prediction = np.asarray(fitted[0].predict(X_test))
            return prediction, np.asarray(fitted[0].best_alphas)

        device = str(jax.devices()[0])
    elif method == "himalaya":
        from himalaya.backend import set_backend
        from himalaya.kernel_ridge import KernelRidgeCV
        from himalaya.scoring import r2_score

        set_backend("numpy", on_error="raise")

        def fit_predict():
            model = KernelRidgeCV(
                alphas=alphas,
                kernel="linear",
                fit_intercept=True,
                cv=folds,
                solver_params={"score_func": r2_score},
            ).fit(X, Y)
            return np.asarray(model.predict(X_test)), np.asarray(model.best_alphas_)

        device = "cpu (numpy)"
    else:
        from sklearn.linear_model import RidgeCV

        def fit_predict():
            model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X, Y)
            return model.predict(X_test), np.asarray(model.alpha_)

        device = "cpu (numpy)"
    times = []
    for repeat in range(args.repeats + 1):
        start = time.perf_counter()
        prediction, best_alphas = fit_predict()
        if repeat or not args.repeats:
            times.append(time.perf_counter() - start)
    np.save(output.with_suffix(".npy"), prediction.astype(np.float32))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = {
        "times_s": times,
        "peak_rss_mib": peak_kib / 1024,
        "device": device,
        "best_alphas_head": best_alphas[:5].tolist(),
    }
    np.save(output.with_suffix(".alphas.npy"), np.asarray(best_alphas, dtype=np.float64))
    if method in ("v4jax", "v4jax-loo"):
        info["filters"] = filter_count(prepare_ridge(X, cv), alphas)
    if method == "v4jax-loo":
        info["matmul_flops_per_s"] = measure_matmul_rate()
    if method == "v4jax":
        start = time.perf_counter()
        coef = fitted[0].coef.block_until_ready()
        info["coef_seconds"] = time.perf_counter() - start
        info["coef_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        coef_prediction = X_test @ np.asarray(coef) + np.asarray(fitted[0].intercept)
        info["coef_route_difference"] = relative_difference(coef_prediction, prediction)
        info["matmul_flops_per_s"] = measure_matmul_rate()
        info["machine_floor"] = machine_floor(
            X, args.test, args.targets, len(alphas), args.folds, info["filters"]
        )
    output.write_text(json.dumps(info))


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """Relative Frobenius norm of the difference."""
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def peer_list(rows: list[dict], value) -> str:
    """``"method value, ..."`` for every peer row (not v4jax), ``value(row)`` formatted."""
    return ", ".join(f"{row['method']} {value(row)}" for row in rows if row["method"] != "v4jax")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1750)
    parser.add_argument("--features", type=int, default=64896)
    parser.add_argument("--targets", type=int, default=1550)
    parser.add_argument("--test", type=int, default=120, help="held-out samples for agreement")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the float64 reference fit"
    )
    parser.add_argument("--child", choices=(*METHODS, REFERENCE), help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args, args.output)
        return

    measured = {}
    predictions = {}
    chosen = {}
    with tempfile.TemporaryDirectory() as scratch:
        for method in [*args.methods] + ([] if args.no_reference else [REFERENCE]):
            output = Path(scratch) / f"{method}.json"
            command = [sys.executable, __file__, "--child", method, "--output", str(output)]
            for name in ("samples", "features", "targets", "test", "folds", "repeats", "seed"):
                command += [f"--{name}", str(getattr(args, name))]
            print(f"running {method} ...", flush=True)
            subprocess.run(command, check=True)
            measured[method] = json.loads(output.read_text())
            predictions[method] = np.load(output.with_suffix(".npy"))
            chosen[method] = np.load(output.with_suffix(".alphas.npy"))

    shape = (args.samples, args.features, args.targets, 17, args.folds)
    on_cpu = measured.get("v4jax", {}).get("device", "cpu").startswith(("cpu", "TFRT_CPU"))
    filters = measured.get("v4jax", {}).get("filters")
    flops = flop_count(*shape, args.test, symmetric_kernel=on_cpu, filters=filters)
    v4jax_median = float(np.median(measured["v4jax"]["times_s"])) if "v4jax" in measured else None
    reference = predictions.pop(REFERENCE, None)
    measured.pop(REFERENCE, None)
    loo = measured.pop("v4jax-loo", None)
    loo_predictions = predictions.pop("v4jax-loo", None)
    rows = []
    for method, info in measured.items():
        median = float(np.median(info["times_s"]))
        row = {
            "method": method,
            "median_s": median,
            "times_s": info["times_s"],
            "peak_rss_mib": info["peak_rss_mib"],
            "device": info["device"],
            "speedup_of_v4jax": median / v4jax_median if v4jax_median else None,
            "speedup_of_v4jax_with_coef": (
                median / (v4jax_median + measured["v4jax"]["coef_seconds"])
                if v4jax_median
                else None
            ),
        }
        if "v4jax" in predictions and method != "v4jax":
            row["prediction_difference_to_v4jax"] = relative_difference(
                predictions[method], predictions["v4jax"]
            )
        if reference is not None:
            row["prediction_error_vs_float64"] = relative_difference(predictions[method], reference)
        rows.append(row)

    print(
        f"\nridge CV, {args.samples} x {args.features} features x {args.targets} targets, "
        f"17 alphas, {args.folds} folds, float32, median of {args.repeats}"
    )
    print(
        f"{'method':10s} {'median s':>10s} {'v4jax faster':>13s} {'peak MiB':>10s} "
        f"{'vs v4jax':>10s} {'vs float64':>11s}"
    )
    for row in rows:
        to_v4jax = row.get("prediction_difference_to_v4jax")
        to_reference = row.get("prediction_error_vs_float64")
        print(
            f"{row['method']:10s} {row['median_s']:10.2f} {row['speedup_of_v4jax'] or 0:12.1f}x "
            f"{row['peak_rss_mib']:10.0f} {'' if to_v4jax is None else f'{to_v4jax:10.2e}':>10s} "
            f"{'' if to_reference is None else f'{to_reference:11.2e}':>11s}"
        )
    print(
        "(relative norm of test-set prediction differences; scikit-learn picks alphas by "
        "leave-one-out, so it differs by design)"
    )
    summary = {
        "benchmark": "ridge_cv",
        "shape": dict(
            zip(("samples", "features", "targets", "alphas", "folds"), shape, strict=True)
        ),
        "repeats": args.repeats,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
        },
        "rows": rows,
        "v4jax_flops": flops,
        "shared_filters": filters,
    }
    if "v4jax" in measured:
        coef_info = {
            name: measured["v4jax"][name]
            for name in ("coef_seconds", "coef_peak_rss_mib", "coef_route_difference")
        }
        summary["v4jax_primal_coef"] = coef_info
        with_coef = peer_list(rows, lambda row: f"{row['speedup_of_v4jax_with_coef']:.1f}x")
        print(
            f"v4jax result.coef on request (not in the timings above): "
            f"{coef_info['coef_seconds']:.2f} s more, peak {coef_info['coef_peak_rss_mib']:.0f} "
            f"MiB; X_test @ coef + intercept vs result.predict: "
            f"{coef_info['coef_route_difference']:.1e}; v4jax faster including it: {with_coef}"
        )
        rate = measured["v4jax"]["matmul_flops_per_s"]
        achieved = flops / v4jax_median
        summary["matmul_rate_flops_per_s"] = rate
        summary["v4jax_achieved_flops_per_s"] = achieved
        summary["fraction_of_matmul_rate"] = achieved / rate
        print(
            f"\nv4jax path ({filters} shared filters for 17 alphas): {flops / 1e9:.0f} GFLOP, "
            f"{achieved / 1e9:.1f} GFLOP/s achieved, "
            f"measured float32 matmul rate {rate / 1e9:.1f} GFLOP/s "
            f"({100 * achieved / rate:.0f}% of it) on {measured['v4jax']['device']}"
        )
        floor = measured["v4jax"]["machine_floor"]
        summary["machine_floor"] = floor
        bounds = peer_list(rows, lambda row: f"{row['median_s'] / floor['total_s']:.2f}x")
        print(
            f"machine floor (the path's library calls alone, each timed on its own): kernel syrk "
            f"{floor['kernel_syrk_s']:.2f} s + one eigh {floor['eigh_s']:.2f} s + "
            f"products {floor['products_s']:.2f} s = {floor['total_s']:.2f} s; v4jax takes "
            f"{v4jax_median / floor['total_s']:.2f}x the floor; at the floor it would be "
            f"faster than: {bounds}"
        )
    if loo is not None:
        loo_median = float(np.median(loo["times_s"]))
        loo_flops = flop_count(
            args.samples, args.features, args.targets, 17, 0, args.test, on_cpu, loo["filters"]
        )
        summary["v4jax_loo"] = {
            "median_s": loo_median,
            "times_s": loo["times_s"],
            "peak_rss_mib": loo["peak_rss_mib"],
            "flops": loo_flops,
            "fraction_of_matmul_rate": loo_flops / loo_median / loo["matmul_flops_per_s"],
        }
        line = (
            f"\nv4jax cv='loo' ({loo['filters']} shared filters for 17 alphas): "
            f"{loo_median:.2f} s, peak {loo['peak_rss_mib']:.0f} MiB"
        )
        if "sklearn" in measured:
            sklearn_median = float(np.median(measured["sklearn"]["times_s"]))
            same = float(np.mean(np.isclose(chosen["v4jax-loo"], chosen["sklearn"], rtol=1e-5)))
            difference = relative_difference(loo_predictions, predictions["sklearn"])
            summary["v4jax_loo"].update(
                speedup_over_sklearn=sklearn_median / loo_median,
                same_alpha_as_sklearn=same,
                prediction_difference_to_sklearn=difference,
            )
            line += (
                f"; scikit-learn RidgeCV(alpha_per_target=True) {sklearn_median:.2f} s: v4jax "
                f"{sklearn_median / loo_median:.1f}x faster, same alpha for {100 * same:.1f}% of "
                f"voxels, predictions differ by {difference:.1e}"
            )
        rate = loo["matmul_flops_per_s"]
        print(
            line + f"; {loo_flops / 1e9:.0f} GFLOP, {loo_flops / loo_median / 1e9:.1f} GFLOP/s "
            f"({100 * loo_flops / loo_median / rate:.0f}% of the measured matmul rate)"
        )
    RESULTS.mkdir(exist_ok=True)
    device = measured.get("v4jax", {}).get("device", "cpu").split(":")[0].replace(" ", "_")
    name = f"ridge_{device}_{args.samples}x{args.features}x{args.targets}.json"
    temporary = RESULTS / f".{name}.tmp"
    temporary.write_text(json.dumps(summary, indent=2))
    os.replace(temporary, RESULTS / name)
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    v4jax.configure_xla()  # the XLA settings the v4jax command uses
    main()
