"""PLS on the vim-1 shape: v4jax vs scikit-learn's PLSRegression, same run, same data.

Problem (defaults): 1,750 samples x 64,896 features (AlexNet conv3) x 1,550 targets (V4 of
subject 1), float32, scale=False (Brain-Score's mapping).

* PLS2: ``v4jax.solvers.pls.pls2_fit(X, Y, 25)`` vs ``sklearn PLSRegression(25, scale=False).fit``.
  scikit-learn is timed on the full problem, ``--sklearn-repeats`` times (default 1). On a
  small CPU one full fit takes most of an hour (thousands of power iterations, each two passes
  over the float64 design): ``--sklearn-pls2-estimate`` instead times fits with 2 and 4
  iterations per component on the full problem and extrapolates to the real iteration counts
  (equal to v4jax's, same algorithm), labelled as an estimate.
* PLS1 per target over components 1..25 with 5 contiguous folds: ``v4jax.solvers.pls.pls1_cv``
  (all targets, every count, refit with each target's count, coefficients formed) against its
  peer in v4jax, ``ridge_cv`` over 17 alphas on the same data with the same folds (coefficients
  formed too), the two timed interleaved so they see the same machine load; the headline is
  ``pls1_cv`` time over ``ridge_cv`` time. A scikit-learn loop is timed on ``--loop-targets``
  targets (0 skips it) and scaled linearly to all targets (stated in the output): per target
  and fold ONE ``PLSRegression(25)`` fit, whose nested rotations give the predictions of every
  count 1..25, plus one refit per target.

``--skip-pls1`` / ``--skip-pls2`` run one half.

v4jax runs once to compile (reported separately), then ``--repeats`` times (median). The script
also measures the device's float32 matmul rate and reports the v4jax FLOP count and the fraction
of that rate it reaches. ``--shrink F`` divides features and targets by F for a quick run.
The JSON goes to ``benchmarks/results/pls_<device>_<shape>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import v4jax

RESULTS = Path(__file__).resolve().parent / "results"
N_COMPONENTS = 25
N_FOLDS = 5
RIDGE_ALPHAS = np.logspace(-2, 6, 17)  # ridge_cv's peer timing: the study's grid


def make_problem(n_samples: int, n_features: int, n_targets: int, seed: int = 0):
    """Deterministic conv3-like data: non-negative correlated features, linear targets + noise."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_samples, 64), dtype=np.float32)
    mixing = rng.standard_normal((64, n_features), dtype=np.float32) / 8
    X = latent @ mixing
    X += rng.standard_normal((n_samples, n_features), dtype=np.float32)
    np.maximum(X, 0, out=X)
    signal = latent @ rng.standard_normal((64, n_targets), dtype=np.float32)
    noise_scale = rng.uniform(0.5, 4.0, n_targets).astype(np.float32)
    Y = signal + rng.standard_normal((n_samples, n_targets), dtype=np.float32) * noise_scale * 8
    return X, Y


def measure_matmul_rate(size: int = 4096, repeats: int = 5) -> float:
    """Median float32 matmul rate of JAX's default device, FLOP/s."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), dtype=jnp.float32)
    product = jax.jit(lambda x, y: x @ y)
    product(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def pls2_flops(n: int, p: int, q: int, k: int, total_iterations: int) -> float:
    """Leading FLOPs of v4jax's kernel PLS2: the kernel (2 n² p), its eigendecomposition
    (9 n³), ``C = Fᵀ Y`` and ``S = C Cᵀ`` (4 n² q), one (n, n) matrix-vector product per power
    iteration (2 n²), per component the matrix-vector products and rank-one/two deflations of
    F, S, C and Y (~16 n² + 12 n q), and the weights and loadings ``Xᵀ [A T]`` (4 n p k)."""
    per_component = 16 * n * n + 12 * n * q
    return (
        2 * n * n * p
        + 9 * n**3
        + 4 * n * n * q
        + total_iterations * 2 * n * n
        + k * per_component
        + 4 * n * p * k
    )


def pls1_flops(n: int, p: int, q: int, k: int, folds: int) -> float:
    """Leading FLOPs of v4jax's spectral PLS1 (dual path) over counts 1..k, all folds and the
    refit: the centred kernel (symmetric: n² p), per fold an eigendecomposition of the m x m
    training kernel (9 m³, as bench_ridge counts it), its test kernel rotated (2 n_test m²),
    ``Uᵀ Y`` (2 m² q), every target's Krylov Gram matrix as one GEMM (2 k² m q), the
    prediction GEMM (2 n_test m k q) and its k x k contraction (2 n_test k² q); the refit does
    the same on all n samples, then ``U α`` (2 n² q) and the coefficients ``Xᵀ a`` (2 n p q)."""
    n_test = n / folds
    m = n - n_test

    def gram_and_projection(rows: float) -> float:
        return 9 * rows**3 + 2 * rows * rows * q + 2 * k * k * rows * q + 2 * k * rows * q

    per_fold = (
        gram_and_projection(m)
        + 2 * n_test * m * m
        + 2 * n_test * m * k * q
        + 2 * n_test * k * k * q
    )
    refit = gram_and_projection(n) + 2 * n * k * q + 2 * n * n * q + 2 * n * p * q
    return n * n * p + folds * per_fold + refit


def timed(function, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def sklearn_pls1_loop(X: np.ndarray, Y: np.ndarray, folds, n_components: int) -> np.ndarray:
    """Best count per target from one scikit-learn fit per target and fold, then the refit."""
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.metrics import r2_score

    scores = np.zeros((n_components, Y.shape[1]))
    for target in range(Y.shape[1]):
        for train, test in folds:
            model = PLSRegression(n_components=n_components, scale=False)
            model.fit(X[train], Y[train, target])
            test_scores = (X[test] - model._x_mean) @ model.x_rotations_
            terms = test_scores * model.y_loadings_[0]  # (n_test, n_components)
            predictions = np.cumsum(terms, axis=1) + model.intercept_[0]
            for k in range(n_components):
                scores[k, target] += r2_score(Y[test, target], predictions[:, k]) / len(folds)
        best = int(np.argmax(scores[:, target])) + 1
        PLSRegression(n_components=best, scale=False).fit(X, Y[:, target])
    return np.argmax(scores, axis=0) + 1


def bench_pls2(args, X: np.ndarray, Y: np.ndarray, rate: float) -> dict:
    """PLS2 with 25 components: v4jax, then scikit-learn timed in the same run (or estimated)."""
    import jax
    from sklearn.cross_decomposition import PLSRegression

    from v4jax.solvers.pls import pls2_fit

    n, p = X.shape
    q = Y.shape[1]

    def v4jax_pls2():
        result = pls2_fit(X, Y, N_COMPONENTS)
        jax.block_until_ready(result.coef)
        return result

    first, result = timed(v4jax_pls2, 1)
    times, result = timed(v4jax_pls2, args.repeats)
    flops = pls2_flops(n, p, q, N_COMPONENTS, int(np.sum(result.n_iter)))
    pls2 = {
        "v4jax_first_call_s": first[0],
        "v4jax_times_s": times,
        "v4jax_median_s": statistics.median(times),
        "v4jax_flops": flops,
        "v4jax_fraction_of_matmul_rate": flops / statistics.median(times) / rate,
        "power_iterations": np.asarray(result.n_iter).tolist(),
    }
    print(
        f"PLS2 v4jax: median {pls2['v4jax_median_s']:.2f} s over {args.repeats} (first call "
        f"{first[0]:.2f} s), {flops / 1e9:.0f} GFLOP, "
        f"{100 * pls2['v4jax_fraction_of_matmul_rate']:.0f}% of the matmul rate",
        flush=True,
    )
    if args.sklearn_pls2_estimate:
        # Fits with 2 and 4 power iterations per component give scikit-learn's cost per power
        # iteration and per component on the full problem; its real iteration counts equal
        # v4jax's (same algorithm, checked in tests/test_pls.py), so the full fit's time is
        # extrapolated from them. The estimate is labelled as such in the JSON and output.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            short = {}
            for iterations in (2, 4):
                start = time.perf_counter()
                PLSRegression(N_COMPONENTS, scale=False, max_iter=iterations).fit(X, Y)
                short[iterations] = time.perf_counter() - start
        per_iteration = (short[4] - short[2]) / (2 * N_COMPONENTS)
        total_iterations = int(np.sum(result.n_iter))
        estimate = short[2] + (total_iterations - 2 * N_COMPONENTS) * per_iteration
        pls2.update(
            {
                "sklearn_estimated_s": estimate,
                "sklearn_estimate_inputs_s": short,
                "sklearn_seconds_per_power_iteration": per_iteration,
                "sklearn_is_estimate": True,
                "speedup": estimate / pls2["v4jax_median_s"],
            }
        )
        print(
            f"PLS2 scikit-learn (ESTIMATE on the full problem: fits with max_iter=2 and 4 "
            f"took {short[2]:.1f} s and {short[4]:.1f} s, i.e. {per_iteration:.2f} s per power "
            f"iteration; x {total_iterations} iterations) ~ {estimate:.0f} s -> v4jax is "
            f"~{pls2['speedup']:.0f}x faster",
            flush=True,
        )
    elif not args.skip_sklearn_pls2:
        sk_times, model = timed(
            lambda: PLSRegression(N_COMPONENTS, scale=False).fit(X, Y), args.sklearn_repeats
        )
        prediction = X[:200] @ np.asarray(result.coef, np.float64) + np.asarray(result.intercept)
        reference = model.predict(X[:200])
        pls2.update(
            {
                "sklearn_times_s": sk_times,
                "sklearn_median_s": statistics.median(sk_times),
                "speedup": statistics.median(sk_times) / pls2["v4jax_median_s"],
                "sklearn_power_iterations": list(map(int, model.n_iter_)),
                "prediction_relative_difference": float(
                    np.linalg.norm(prediction - reference) / np.linalg.norm(reference)
                ),
            }
        )
        print(
            f"PLS2 scikit-learn: median {pls2['sklearn_median_s']:.1f} s over "
            f"{args.sklearn_repeats} run(s) -> v4jax is {pls2['speedup']:.1f}x faster; "
            f"predictions differ by {pls2['prediction_relative_difference']:.1e} (relative)",
            flush=True,
        )
    return pls2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1750)
    parser.add_argument("--features", type=int, default=64896)
    parser.add_argument("--targets", type=int, default=1550)
    parser.add_argument("--shrink", type=float, default=1.0, help="divide features and targets")
    parser.add_argument("--repeats", type=int, default=3, help="v4jax timed runs (median)")
    parser.add_argument("--sklearn-repeats", type=int, default=1, help="scikit-learn PLS2 runs")
    parser.add_argument("--loop-targets", type=int, default=2, help="targets timed in the loop")
    parser.add_argument("--skip-sklearn-pls2", action="store_true")
    parser.add_argument("--skip-pls2", action="store_true", help="PLS1 and ridge_cv only")
    parser.add_argument("--skip-pls1", action="store_true", help="PLS2 only")
    parser.add_argument(
        "--sklearn-pls2-estimate",
        action="store_true",
        help="estimate scikit-learn's PLS2 time from short fits (when one full fit is too long)",
    )
    args = parser.parse_args()

    import jax

    from v4jax import ridge_cv
    from v4jax.solvers.engine.folds import make_folds
    from v4jax.solvers.pls import pls1_cv

    n = args.samples
    p = max(1, int(args.features / args.shrink))
    q = max(1, int(args.targets / args.shrink))
    print(
        f"PLS benchmark: {n} samples x {p} features x {q} targets, float32, device "
        f"{jax.devices()[0]}",
        flush=True,
    )
    X, Y = make_problem(n, p, q)
    rate = measure_matmul_rate()
    print(f"float32 matmul rate: {rate / 1e9:.1f} GFLOP/s", flush=True)
    summary: dict = {
        "problem": {
            "samples": n,
            "features": p,
            "targets": q,
            "dtype": "float32",
            "n_components": N_COMPONENTS,
            "folds": N_FOLDS,
            "scale": False,
        },
        "matmul_flops_per_s": rate,
    }

    # -- PLS2 ---------------------------------------------------------------------------------
    if not args.skip_pls2:
        summary["pls2"] = bench_pls2(args, X, Y, rate)

    # -- PLS1 per target ----------------------------------------------------------------------
    if args.skip_pls1:
        _write(summary, n, p, q)
        return
    grid = range(1, N_COMPONENTS + 1)

    def v4jax_pls1():
        result = pls1_cv(X, Y, grid, cv=N_FOLDS, progress=False)
        jax.block_until_ready(result.coef)
        return result

    def v4jax_ridge():
        result = ridge_cv(X, Y, RIDGE_ALPHAS, cv=N_FOLDS)
        jax.block_until_ready((result.best_alphas, result.coef))
        return result

    first, result = timed(v4jax_pls1, 1)
    ridge_first, _ = timed(v4jax_ridge, 1)
    times, ridge_times = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        times += timed(v4jax_pls1, 1)[0]
        ridge_times += timed(v4jax_ridge, 1)[0]
    flops = pls1_flops(n, p, q, N_COMPONENTS, N_FOLDS)
    ridge_median = statistics.median(ridge_times)
    pls1 = {
        "v4jax_first_call_s": first[0],
        "v4jax_times_s": times,
        "v4jax_median_s": statistics.median(times),
        "v4jax_flops": flops,
        "v4jax_fraction_of_matmul_rate": flops / statistics.median(times) / rate,
        "ridge_cv_first_call_s": ridge_first[0],
        "ridge_cv_times_s": ridge_times,
        "ridge_cv_median_s": ridge_median,
        "pls1_over_ridge": statistics.median(times) / ridge_median,
    }
    print(
        f"PLS1 v4jax (all {q} targets, counts 1..25, {N_FOLDS} folds, refit with coef): median "
        f"{pls1['v4jax_median_s']:.2f} s over {args.repeats} (first call {first[0]:.2f} s), "
        f"{flops / 1e9:.0f} GFLOP, {100 * pls1['v4jax_fraction_of_matmul_rate']:.0f}% of the "
        "matmul rate",
        flush=True,
    )
    print(
        f"ridge_cv ({len(RIDGE_ALPHAS)} alphas, {N_FOLDS} folds, refit with coef), same data, "
        f"interleaved: median {ridge_median:.2f} s -> pls1_cv / ridge_cv = "
        f"{pls1['pls1_over_ridge']:.2f}x",
        flush=True,
    )
    if args.loop_targets == 0:
        summary["pls1"] = pls1
        _write(summary, n, p, q)
        return
    loop_targets = min(args.loop_targets, q)
    folds = make_folds(N_FOLDS, n)
    start = time.perf_counter()
    loop_best = sklearn_pls1_loop(X, Y[:, :loop_targets], folds, N_COMPONENTS)
    loop_time = time.perf_counter() - start
    scaled = loop_time * q / loop_targets
    pls1.update(
        {
            "sklearn_loop_targets_timed": loop_targets,
            "sklearn_loop_time_s": loop_time,
            "sklearn_loop_scaled_to_all_targets_s": scaled,
            "speedup": scaled / pls1["v4jax_median_s"],
            "best_counts_agree_on_timed_targets": bool(
                np.array_equal(loop_best, np.asarray(result.best_n_components)[:loop_targets])
            ),
        }
    )
    print(
        f"PLS1 scikit-learn loop: {loop_time:.1f} s for {loop_targets} target(s) (one "
        f"25-component fit per target and fold + refit), scaled linearly to {q} targets: "
        f"{scaled:.0f} s -> v4jax is {pls1['speedup']:.0f}x faster; best counts agree on the "
        f"timed targets: {pls1['best_counts_agree_on_timed_targets']}",
        flush=True,
    )
    summary["pls1"] = pls1

    _write(summary, n, p, q)


def _write(summary: dict, n: int, p: int, q: int) -> None:
    """Add the machine description and write the JSON atomically.

    Sections this run skipped (``--skip-pls1``/``--skip-pls2``) keep their values from the
    existing file, each with the matmul rate of the run that measured it.
    """
    import jax

    summary["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    from v4jax._io import atomic_path

    device = jax.devices()[0].platform
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"pls_{device}_{n}x{p}x{q}.json"
    if path.exists():
        previous = json.loads(path.read_text())
        for section in ("pls1", "pls2"):
            if section in previous and section not in summary:
                kept = dict(previous[section])
                kept.setdefault("matmul_flops_per_s", previous.get("matmul_flops_per_s"))
                summary[section] = kept
    with atomic_path(path) as temporary:
        Path(temporary).write_text(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    v4jax.configure_xla()  # the XLA settings the v4jax command uses
    main()
