"""``vtabkit_dsprites``: dSprites (Matthey et al. 2017) re-rendered in numpy, no download.

Same factors and the same TFDS features as the official ``dsprites`` builder, so the same
label rules (VTAB's dsprites_loc / dsprites_ori) apply. The pixels are our own rendering, not
the original files; geometry (all in pixels of the 64x64 image, pixel (r, c) covering
[c, c+1) x [r, r+1), sampled at its centre):

* centre = 15 + 34 * p for the x position (column) and the y position (row, y grows
  downwards), so centres span [15, 49] — the central area, 1.1 px per position step;
* a scale-1 shape has half-size 10 px (square half-side, ellipse semi-major axis, heart
  half-width), a scale-0.5 one 5 px; the largest extent, the square's half-diagonal
  10·√2 ≈ 14.1 px, stays inside the image at every position. Scale steps are 1 px in
  half-size, so even an axis-aligned square differs in pixels between neighbouring scales;
* orientation θ turns the shape counter-clockwise as displayed.

As in dSprites, the square repeats every 90° and the ellipse every 180°; only the heart has a
unique orientation.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from vtabkit.builders.offline import OfflineBuilder

IMAGE_SIZE = 64
SHAPES = ("square", "ellipse", "heart")  # label_shape 0, 1, 2 (value_shape 1, 2, 3 as in dSprites)
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)
POSITIONS = np.linspace(0.0, 1.0, 32)  # both x and y

CENTRE_MIN, CENTRE_SPAN = 15.0, 34.0  # pixel centre = 15 + 34 * position
HALF_SIZE = 10.0  # pixels, at scale 1
_ELLIPSE_MINOR = 0.5  # semi-minor / semi-major: elongated so that orientation is visible
# The heart curve (x²+y²−1)³ − x²y³ ≤ 0 spans x ∈ [−1.139, 1.139], y ∈ [−1, 1.236]: shift it
# to centre its bounding box and shrink it to half-width 1, like the other shapes.
_HEART_HALF_WIDTH, _HEART_Y_CENTRE = 1.139, 0.118

NUM_TRAIN, NUM_TEST = 1000, 1000
_SEEDS = {"train": 1, "test": 2}  # independent, fixed streams per split


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether shape-local points (u right, v up, unit = half-size) are inside the shape."""
    if SHAPES[shape] == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    if SHAPES[shape] == "ellipse":
        return u ** 2 + (v / _ELLIPSE_MINOR) ** 2 <= 1.0
    x = u * _HEART_HALF_WIDTH
    y = v * _HEART_HALF_WIDTH + _HEART_Y_CENTRE
    return (x ** 2 + y ** 2 - 1.0) ** 3 - x ** 2 * y ** 3 <= 0.0


def render(shape: int, scale: float, orientation: float, x: float, y: float) -> np.ndarray:
    """A (64, 64) uint8 image with 1 inside the shape and 0 outside.

    ``shape`` is the label (0 square, 1 ellipse, 2 heart); ``scale`` in [0.5, 1];
    ``orientation`` in radians; ``x``, ``y`` positions in [0, 1].
    """
    centres = np.arange(IMAGE_SIZE) + 0.5
    columns, rows = np.meshgrid(centres, centres)  # (row, column) grids of pixel centres
    size = HALF_SIZE * scale
    dx = (columns - (CENTRE_MIN + CENTRE_SPAN * x)) / size
    dy = -(rows - (CENTRE_MIN + CENTRE_SPAN * y)) / size  # image rows grow down; math y grows up
    # Rotate the sample points by −θ into the shape's frame, which turns the shape by +θ.
    cos, sin = np.cos(orientation), np.sin(orientation)
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    return _inside(shape, u, v).astype(np.uint8)


def sample_factors(rng: np.random.Generator) -> dict[str, int]:
    """One factor combination, each factor uniform and independent (= uniform over the grid)."""
    return {"label_shape": int(rng.integers(len(SHAPES))),
            "label_scale": int(rng.integers(len(SCALES))),
            "label_orientation": int(rng.integers(len(ORIENTATIONS))),
            "label_x_position": int(rng.integers(len(POSITIONS))),
            "label_y_position": int(rng.integers(len(POSITIONS)))}


def example(factors: dict[str, int]) -> dict:
    """The full TFDS record (labels, values, image) of one factor combination."""
    values = {"value_shape": np.float32(factors["label_shape"] + 1),
              "value_scale": np.float32(SCALES[factors["label_scale"]]),
              "value_orientation": np.float32(ORIENTATIONS[factors["label_orientation"]]),
              "value_x_position": np.float32(POSITIONS[factors["label_x_position"]]),
              "value_y_position": np.float32(POSITIONS[factors["label_y_position"]])}
    image = render(factors["label_shape"], SCALES[factors["label_scale"]],
                   ORIENTATIONS[factors["label_orientation"]],
                   POSITIONS[factors["label_x_position"]], POSITIONS[factors["label_y_position"]])
    return {"image": image[:, :, None], **factors, **values}


class VtabkitDsprites(OfflineBuilder, tfds.core.GeneratorBasedBuilder):
    """dSprites factors re-rendered in numpy; i.i.d. uniform samples, train 1000 / test 1000."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: numpy rendering of the dSprites factor grid, "
                              "1000 train and 1000 test i.i.d. samples."}

    def _info(self) -> tfds.core.DatasetInfo:
        scalar = lambda: tfds.features.Tensor(shape=(), dtype=np.float32)  # noqa: E731
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "A re-generation of dSprites (Matthey et al. 2017), NOT the original files: "
                "64x64 binary images (0/1) of a square, ellipse or heart at 6 scales in "
                "[0.5, 1], 40 orientations in [0, 2pi) and 32x32 positions in [0, 1]^2, drawn "
                "by vtabkit's own numpy renderer. Factor combinations are sampled i.i.d. "
                "uniformly with fixed seeds: 1000 train and 1000 test examples. Features match "
                "TFDS's `dsprites` builder; value_shape is 1, 2, 3 as in the original."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8),
                "label_shape": tfds.features.ClassLabel(num_classes=len(SHAPES)),  # as official: 0,1,2
                "label_scale": tfds.features.ClassLabel(num_classes=len(SCALES)),
                "label_orientation": tfds.features.ClassLabel(num_classes=len(ORIENTATIONS)),
                "label_x_position": tfds.features.ClassLabel(num_classes=len(POSITIONS)),
                "label_y_position": tfds.features.ClassLabel(num_classes=len(POSITIONS)),
                "value_shape": scalar(),
                "value_scale": scalar(),
                "value_orientation": scalar(),
                "value_x_position": scalar(),
                "value_y_position": scalar(),
            }),
            homepage="https://github.com/deepmind/dsprites-dataset",
            citation="""@misc{dsprites17,
  author = {Loic Matthey and Irina Higgins and Demis Hassabis and Alexander Lerchner},
  title = {dSprites: Disentanglement testing Sprites dataset},
  howpublished = {https://github.com/deepmind/dsprites-dataset/},
  year = "2017",
}""",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # rendered locally
        return {"train": self._generate_examples("train", NUM_TRAIN),
                "test": self._generate_examples("test", NUM_TEST)}

    def _generate_examples(self, split: str, count: int) -> Iterator[tuple[int, dict]]:
        rng = np.random.default_rng(_SEEDS[split])
        for position in range(count):  # key = position: TFDS keeps key order (no shuffling)
            yield position, example(sample_factors(rng))
