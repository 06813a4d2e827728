"""``vtabkit_digits``: the real 8x8 handwritten digits that ship with scikit-learn.

These are the 1797 images of ``sklearn.datasets.load_digits`` (the UCI "Optical Recognition of
Handwritten Digits" test set), so the lite suite has one real, natural-image-like task that
needs no download.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from vtabkit.builders.offline import OfflineBuilder

_SEED = 20170  # fixed: the permutation (hence which digits are train/test) never changes
NUM_TRAIN = 1000  # the remaining 797 are test


def scale_to_uint8(images: np.ndarray) -> np.ndarray:
    """sklearn's 0..16 ink levels → 0..255 with round(v * 255 / 16) (8 → 127.5 → 128, half up)."""
    return np.floor(np.asarray(images, np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)


def permutation(num_images: int) -> np.ndarray:
    """The fixed order of sklearn's images: sklearn's array is roughly sorted by writer, so a
    seeded shuffle mixes classes and writers before the train/test cut."""
    return np.random.default_rng(_SEED).permutation(num_images)


class VtabkitDigits(OfflineBuilder, tfds.core.GeneratorBasedBuilder):
    """scikit-learn's load_digits as a TFDS dataset (train 1000 / test 797)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: sklearn load_digits, seeded permutation, 1000/797 split."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "The 1797 real 8x8 grayscale handwritten digits of scikit-learn's load_digits "
                "(UCI Optical Recognition of Handwritten Digits, test part), ink levels 0..16 "
                "scaled to 0..255 by round(v*255/16). Order is a fixed seeded permutation; "
                "train is its first 1000 images, test the remaining 797. `index` is the "
                "position in sklearn's array."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
                "index": tfds.features.Scalar(dtype=np.int64, doc="row of sklearn's load_digits arrays"),
            }),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # nothing to download: the data ships with scikit-learn
        order = permutation(1797)
        return {"train": self._generate_examples(order[:NUM_TRAIN]),
                "test": self._generate_examples(order[NUM_TRAIN:])}

    def _generate_examples(self, indices: np.ndarray) -> Iterator[tuple[int, dict]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = scale_to_uint8(digits.images)
        # With shuffling disabled TFDS sorts records by key, so the key is the position in the split.
        for position, index in enumerate(int(i) for i in indices):
            yield position, {"image": images[index][:, :, None], "label": int(digits.target[index]),
                          "index": index}
