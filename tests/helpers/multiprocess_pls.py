"""One process of the 2-process voxel-sharded PLS1 test (run by tests/test_sharding.py)."""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from v4jax import pls1_cv  # noqa: E402


def main(port: str, process_id: str, output: str) -> None:
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(process_id))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 150))
    Y = X @ rng.standard_normal((150, 8)) + rng.standard_normal((60, 8))
    result = pls1_cv(X, Y, 6, cv=3, devices=jax.devices())
    parts = {}
    for name in ("coef", "cv_scores", "best_n_components", "intercept"):
        array = getattr(result, name)
        (shard,) = array.addressable_shards
        columns = shard.index[-1]
        parts[name] = np.asarray(shard.data)
        parts[f"{name}_start"] = columns.start or 0
    np.savez(output, **parts)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
