"""A TensorFlow Datasets builder for vim-1, written and read without TensorFlow.

Needs the ``tfds`` extra (``pip install tensorflow-datasets array-record``); TensorFlow itself
is not needed: the dataset is written in the ``array_record`` file format and read back with
``tfds.data_source`` (random access, numpy examples).

The CRCNS files cannot be downloaded automatically (CRCNS requires an account), so the
builder reads the manually downloaded ``EstimatedResponses.mat`` and ``Stimuli.mat`` from
``manual_dir``. Splits: ``train`` (1,750 images) and ``validation`` (120 images), in image
order (shuffling disabled, so record ``i`` is image ``i``). Each example holds:

- ``image``: (128, 128) float32 grayscale image, as stored in ``Stimuli.mat``;
- ``image_id``: int32 index of the image within its split;
- ``responses``: {"S1": (n_voxels_S1,) float32, "S2": ...} every subject in the file, the
  voxels of the config's ROI in file order, NaNs as stored.

The per-subject ROI codes and 1-based volume indices of those voxels are saved in the
dataset's metadata (``builder.info.metadata["S1"]["roi_codes"]`` etc.).

Example:
  >>> builder = build_vim1_tfds("~/vim-1", "~/tensorflow_datasets", config="v4")
  >>> train = builder.as_data_source(split="train")
  >>> train[0]["responses"]["S1"].shape
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from v4jax.data import _format as fmt
from v4jax.data.vim1 import RoiSpec, _load_stimuli, list_subjects, open_responses

FILE_FORMAT = "array_record"
MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the vim-1 data set from CRCNS (https://crcns.org/data-sets/vc/vim-1; free account
needed) and place EstimatedResponses.mat and Stimuli.mat in `manual_dir`.
"""


@dataclasses.dataclass
class Vim1Config(tfds.core.BuilderConfig):
    """Which voxels the ``responses`` feature holds: a ROI spec as in ``load_vim1``."""

    roi: RoiSpec = "all"


class Vim1(tfds.core.GeneratorBasedBuilder):
    """vim-1 (Kay et al. 2008): natural images and fMRI voxel responses of two subjects."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Images, per-subject voxel responses and image ids."
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = (
        Vim1Config(name="all", description="every voxel of each subject", roi="all"),
        Vim1Config(name="v4", description="the V4 voxels (ROI code 6) of each subject", roi=6),
    )
    DEFAULT_CONFIG_NAME = "all"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(fmt.IMAGE_SIZE, fmt.IMAGE_SIZE), dtype=np.float32
                    ),
                    "image_id": np.int32,
                    "responses": tfds.features.FeaturesDict(
                        {
                            f"S{subject}": tfds.features.Tensor(shape=(None,), dtype=np.float32)
                            for subject in fmt.REAL_VOXEL_COUNTS
                        }
                    ),
                }
            ),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
            homepage="https://crcns.org/data-sets/vc/vim-1",
            citation=(
                "Kay, K. N., Naselaris, T., Prenger, R. J., & Gallant, J. L. (2008). "
                "Identifying natural images from human brain activity. Nature 452, 352-355."
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        manual_dir = Path(dl_manager.manual_dir)
        subjects = list_subjects(manual_dir)
        missing = sorted(set(fmt.REAL_VOXEL_COUNTS) - set(subjects))
        if missing:
            raise ValueError(
                f"{manual_dir / fmt.RESPONSES_FILE} has no data for subject(s) {missing}; the "
                f"vim-1 TFDS dataset holds subjects {sorted(fmt.REAL_VOXEL_COUNTS)}."
            )
        stim_train, stim_val = _load_stimuli(manual_dir)
        train, val = {}, {}
        for subject in subjects:
            with open_responses(manual_dir, subject) as responses:
                columns = responses.columns_for(self.builder_config.roi)
                blocks = list(responses.iter_voxel_blocks(columns))
                train[subject] = np.concatenate([b[1] for b in blocks], axis=1)
                val[subject] = np.concatenate([b[2] for b in blocks], axis=1)
                self.info.metadata[f"S{subject}"] = {
                    "columns": columns.tolist(),
                    "roi_codes": responses.roi_codes[columns].tolist(),
                    "voxel_index": responses.voxel_index[columns].tolist(),
                }
        return {
            "train": self._generate_examples(stim_train, train),
            "validation": self._generate_examples(stim_val, val),
        }

    def _generate_examples(
        self, images: np.ndarray, responses: dict[int, np.ndarray]
    ) -> Iterator[tuple[int, dict]]:
        for index, image in enumerate(images):
            yield (
                index,
                {
                    "image": image,
                    "image_id": index,
                    "responses": {f"S{s}": r[index] for s, r in responses.items()},
                },
            )


def build_vim1_tfds(
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    config: str = "all",
) -> Vim1:
    """Build (or reuse) the array_record vim-1 dataset and return its builder.

    Args:
      manual_dir: directory with the CRCNS ``EstimatedResponses.mat`` and ``Stimuli.mat``.
      data_dir: TFDS data directory to write ``vim1/<config>/1.0.0/`` into.
      config: "all" (every voxel) or "v4" (V4 voxels only).

    Returns:
      The prepared builder: ``builder.as_data_source(split="train")`` gives random access to
      numpy examples without TensorFlow.
    """
    manual = Path(manual_dir).expanduser()
    if not (manual / fmt.RESPONSES_FILE).is_file():
        raise FileNotFoundError(
            f"{manual / fmt.RESPONSES_FILE} not found; {MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    builder = Vim1(
        data_dir=os.fspath(Path(data_dir).expanduser()), config=config, file_format=FILE_FORMAT
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual))
    )
    return builder
