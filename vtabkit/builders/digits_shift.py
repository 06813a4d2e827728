"""``vtabkit_digits_shift``: the test digits of ``vtabkit_digits`` under controlled shifts.

Each split is a copy of all 797 ``vtabkit_digits`` test images (same order, same labels) with
one corruption at one of three severities, named ``<shift>_<severity>`` like ImageNet-C's
configs (``noise_1`` … ``noise_3``):

- ``rotate``: rotated by ±8°, ±16°, ±32° (sign drawn per image from a fixed seed);
- ``noise``: additive Gaussian pixel noise, σ = 24, 48, 96 (on 0..255), clipped;
- ``blur``: Gaussian blur, σ = 0.5, 0.75, 1.0 px (of the 8x8 image);
- ``scale``: enlarged about the centre by 10 %, 20 %, 40 % (the border is cropped).

Rotation and scaling resample the 8x8 image bilinearly (angle 0 or factor 1 is the identity).
Everything is deterministic (fixed seeds).
A head fitted on ``vtabkit_digits`` train is scored on each split: how far accuracy falls with
severity is the point.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from vtabkit.builders import digits
from vtabkit.builders.offline import OfflineBuilder

SEVERITIES = (1, 2, 3)
ROTATE_DEGREES = (8.0, 16.0, 32.0)
NOISE_SIGMA = (24.0, 48.0, 96.0)
BLUR_SIGMA = (0.5, 0.75, 1.0)
SCALE_FACTOR = (1.1, 1.2, 1.4)
SHIFTS = ("rotate", "noise", "blur", "scale")
_SEEDS = {"rotate": 31, "noise": 32}


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotated about the image centre (bilinear, black outside)."""
    from scipy import ndimage

    return ndimage.rotate(image, degrees, reshape=False, order=1, mode="constant", cval=0.0)


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """Scaled about the image centre by ``factor`` (bilinear; > 1 enlarges and crops, < 1 shrinks
    with a black border)."""
    from scipy import ndimage

    centre = (np.array(image.shape) - 1) / 2.0
    matrix = np.eye(2) / factor  # output pixel o samples the input at centre + (o - centre) / factor
    return ndimage.affine_transform(image, matrix, offset=centre - matrix @ centre, order=1,
                                    mode="constant", cval=0.0)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(image, sigma, mode="constant", cval=0.0)


def shifted(images: np.ndarray, shift: str, severity: int) -> np.ndarray:
    """``images`` (N, 8, 8) uint8 under ``shift`` at ``severity`` (1..3), uint8."""
    level = severity - 1
    floats = images.astype(np.float64)
    if shift == "rotate":
        signs = np.random.default_rng(_SEEDS["rotate"]).choice([-1.0, 1.0], size=len(images))
        out = np.stack([rotate(image, sign * ROTATE_DEGREES[level]) for image, sign in zip(floats, signs)])
    elif shift == "noise":
        rng = np.random.default_rng(_SEEDS["noise"] + severity)
        out = floats + rng.normal(0.0, NOISE_SIGMA[level], size=floats.shape)
    elif shift == "blur":
        out = np.stack([blur(image, BLUR_SIGMA[level]) for image in floats])
    elif shift == "scale":
        out = np.stack([rescale(image, SCALE_FACTOR[level]) for image in floats])
    else:
        raise ValueError(f"unknown shift {shift!r}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def split_names() -> list[str]:
    return [f"{shift}_{severity}" for shift in SHIFTS for severity in SEVERITIES]


class VtabkitDigitsShift(OfflineBuilder, tfds.core.GeneratorBasedBuilder):
    """The 797 vtabkit_digits test images, rotated / noised / blurred / rescaled at 3 severities."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 4 shifts x 3 severities of the vtabkit_digits test split."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Shifted copies of the vtabkit_digits test split (scikit-learn's real 8x8 digits): "
                "one split per shift and severity, rotate/noise/blur/scale _1.._3; same images, "
                "order and labels as vtabkit_digits test."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
                "index": tfds.features.Scalar(dtype=np.int64, doc="row of sklearn's load_digits arrays"),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # derived from scikit-learn's digits
        return {name: self._generate_examples(name) for name in split_names()}

    def _generate_examples(self, name: str) -> Iterator[tuple[int, dict]]:
        from sklearn.datasets import load_digits

        shift, _, severity = name.rpartition("_")
        source = load_digits()
        indices = digits.permutation(len(source.images))[digits.NUM_TRAIN:]  # the test split, in order
        images = shifted(digits.scale_to_uint8(source.images[indices]), shift, int(severity))
        for position, (image, index) in enumerate(zip(images, indices)):
            yield position, {"image": image[:, :, None], "label": int(source.target[index]), "index": int(index)}

