"""extract_to_hdf5 in its own process, to be killed mid-run (tests/test_fault_tolerance.py).

Usage: extraction_worker.py IMAGES.npy OUT.h5
"""

import sys

import jax
import numpy as np
from killable_transform import BATCH_SIZE, identity

from v4jax import extract_to_hdf5, init_params


def main(images: str, out: str) -> None:
    params = init_params(jax.random.key(0), "torchvision", "conv1")
    extract_to_hdf5(
        np.load(images),
        out,
        "conv1",
        params=params,
        batch_size=BATCH_SIZE,
        transform=identity,
        progress=False,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
