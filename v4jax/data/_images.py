"""Natural-image patches for synthetic stimuli: random crops of scikit-image's sample photographs.

Only photographs that ship inside the scikit-image wheel are used (nothing is downloaded).
Each photograph is converted to grayscale and kept at a few zoom levels; a patch is a random
128 x 128 crop of a zoom level (drawn in proportion to its number of crop positions),
optionally mirrored, shifted to the vim-1 value range (about [-0.5, 0.5]). No two patches of
one call are the same crop.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

PHOTOGRAPHS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "moon.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "retina.jpg",
)
ZOOM_SIDES = (1.5, 2.0, 3.0, 4.0)


def _photograph_dir() -> Path:
    import skimage.data

    return Path(skimage.data.data_dir)


@functools.lru_cache(maxsize=4)
def photograph_pyramid(patch_size: int = 128) -> tuple[np.ndarray, ...]:
    """Grayscale photographs in [0, 1] at the zoom levels whose shorter side is
    ``patch_size * z`` for ``z`` in ``ZOOM_SIDES`` (levels larger than the photograph skipped).

    Returns:
      A tuple of float32 arrays (height, width), each at least ``patch_size`` on both sides.
    """
    import skimage.color
    import skimage.io
    import skimage.transform

    directory = _photograph_dir()
    levels = []
    for name in PHOTOGRAPHS:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(
                f"scikit-image sample photograph {path} is missing; reinstall scikit-image "
                "(its wheel bundles the sample images used for synthetic stimuli)."
            )
        image = skimage.io.imread(path)
        if image.ndim == 3:
            image = skimage.color.rgb2gray(image[..., :3])
        else:
            image = image.astype(np.float64) / 255.0
        shorter = min(image.shape)
        for zoom in ZOOM_SIDES:
            side = patch_size * zoom
            if side > shorter:
                break
            scale = side / shorter
            level = skimage.transform.rescale(image, scale, anti_aliasing=scale < 1, order=1)
            levels.append(np.ascontiguousarray(level, dtype=np.float32))
    return tuple(levels)


def natural_image_patches(
    n_images: int, rng: np.random.Generator, patch_size: int = 128
) -> np.ndarray:
    """Random grayscale crops of natural photographs.

    Args:
      n_images: number of patches.
      rng: the random generator (the patches are a deterministic function of its state).
      patch_size: side of the square patch in pixels.

    Returns:
      float32 array (n_images, patch_size, patch_size) with values in about [-0.5, 0.5].
    """
    levels = photograph_pyramid(patch_size)
    rows = np.array([level.shape[0] - patch_size + 1 for level in levels])
    columns = np.array([level.shape[1] - patch_size + 1 for level in levels])
    positions = rows * columns
    crops: dict[tuple[int, int, int, bool], None] = {}
    while len(crops) < n_images:
        n_draw = n_images - len(crops)
        choice = rng.choice(len(levels), size=n_draw, p=positions / positions.sum())
        tops = (rng.random(n_draw) * rows[choice]).astype(np.int64)
        lefts = (rng.random(n_draw) * columns[choice]).astype(np.int64)
        mirrors = rng.random(n_draw) < 0.5
        drawn = zip(choice.tolist(), tops.tolist(), lefts.tolist(), mirrors.tolist(), strict=True)
        for crop in drawn:
            crops.setdefault(crop)
    patches = np.empty((n_images, patch_size, patch_size), dtype=np.float32)
    for index, (level, top, left, mirror) in enumerate(crops):
        patch = levels[level][top : top + patch_size, left : left + patch_size]
        patches[index] = patch[:, ::-1] if mirror else patch
    patches -= np.float32(0.5)
    return patches
