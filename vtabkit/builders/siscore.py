"""``vtabkit_siscore``: an SI-Score-like factor sweep on real digits, generated offline.

SI-Score (Yung et al. 2021) pastes segmented foreground objects onto background photos and
varies one factor at a time: object size, rotation, location. Here the foreground is a real
handwritten digit of the ``vtabkit_digits`` test split (its ink is the segmentation mask) and
the backgrounds are 12 generated textures; each 32x32 RGB image pastes one white digit onto
one background, and three configs vary one factor each, as TFDS's ``siscore/<variant>``:

- ``size``: area (the digit's square box as a fraction of the image) 0.1, 0.2, …, 1.0, centred, upright;
- ``rotation``: 1°, 21°, …, 341° (SI-Score's angle grid), area 1.0 (corners may leave the image);
- ``location``: the box's position on a 5x5 grid, x and y in {0, 0.25, 0.5, 0.75, 1} (0: touching
  the left / top edge, 1: the right / bottom edge; the box stays inside the image), area 0.9.

The digits are the size of the image at area 1.0, as in the source task's training images; the
other factor values move away from that, which a representation with no invariance (raw
pixels) pays for at once: that is what the sweep measures.

Each config has one split, ``test``, and the features ``image``, ``label`` (the digit) and
``image_id``. As for the real SI-Score, the factor values are not features: they are in a
``metadata.csv`` that the builder writes next to its TFDS data
(``<data_dir>/vtabkit_siscore/<config>/1.0.0/metadata.csv``) with the real file's columns
(image_id, x_coord, y_coord, area, rotation, foreground_class, foreground_instance, background,
bg_resolution_width, bg_resolution_height, pct_inside_image), and tasks join it on ``image_id``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from vtabkit.builders import digits
from vtabkit.builders.offline import OfflineBuilder

IMAGE_SIZE = 32
NUM_BACKGROUNDS = 12
AREAS = tuple(round(0.1 * k, 1) for k in range(1, 11))
ANGLES = tuple(range(1, 360, 20))  # 1, 21, ..., 341
GRID = tuple(k / 4 for k in range(5))  # x and y coordinates of the location sweep
ROTATION_AREA, LOCATION_AREA = 1.0, 0.9
DIGITS_PER_CLASS = {"size": 3, "rotation": 2, "location": 2}
METADATA_FILE = "metadata.csv"
METADATA_COLUMNS = ("image_id", "x_coord", "y_coord", "area", "rotation", "foreground_class",
                    "foreground_instance", "background", "bg_resolution_width", "bg_resolution_height",
                    "pct_inside_image")
_BACKGROUND_SEED = 41


def backgrounds(count: int = NUM_BACKGROUNDS) -> np.ndarray:
    """``count`` dark textured colour backgrounds (count, 32, 32, 3) in float 0..255, fixed seed.

    Dark and low-contrast, so that a white digit stays the brightest thing in the image.
    """
    from scipy import ndimage

    rng = np.random.default_rng(_BACKGROUND_SEED)
    rows, columns = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    out = []
    for _ in range(count):
        base = rng.uniform(4.0, 14.0) + rng.uniform(-3.0, 3.0, size=3)
        blotches = ndimage.zoom(rng.normal(0.0, 4.0, size=(5, 5, 3)), (IMAGE_SIZE / 5, IMAGE_SIZE / 5, 1), order=3)
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 9)
        grating = rng.uniform(0, 3) * np.sin(2 * np.pi * (columns * np.cos(angle) + rows * np.sin(angle)) / period)
        out.append(np.clip(base + blotches[:IMAGE_SIZE, :IMAGE_SIZE] + grating[:, :, None], 0, 255))
    return np.stack(out)


def paste(digit: np.ndarray, background: np.ndarray, *, area: float, rotation: float,
          x: float = 0.5, y: float = 0.5) -> tuple[np.ndarray, float]:
    """A white ``digit`` (8x8, ink 0..255) on ``background``: its square box covers ``area`` of
    the image, rotated by ``rotation`` degrees about its centre, the box at (x, y) in [0, 1]².

    Returns (uint8 (32, 32, 3) image, fraction of the digit's ink that lies inside the image).
    """
    from scipy import ndimage

    side = np.sqrt(area) * IMAGE_SIZE
    scale = side / digit.shape[0]
    # Pixel centres: the box spans [-0.5, 31.5]; its centre moves from side/2 to 32 - side/2.
    centre = -0.5 + side / 2 + np.array([y, x]) * (IMAGE_SIZE - side)
    theta = np.deg2rad(rotation)
    inverse = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]]) / scale
    digit_centre = (np.array(digit.shape) - 1) / 2.0
    ink = ndimage.affine_transform(digit.astype(np.float64), inverse, offset=digit_centre - inverse @ centre,
                                   output_shape=(IMAGE_SIZE, IMAGE_SIZE), order=1, mode="constant", cval=0.0)
    alpha = np.clip(ink / 255.0, 0.0, 1.0)[:, :, None]
    image = background * (1.0 - alpha) + 255.0 * alpha
    inside = float(min(1.0, ink.sum() / (digit.sum() * scale ** 2))) if digit.sum() else 1.0
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), inside


def sweep(variant: str) -> list[dict]:
    """The factor values of every image of ``variant``, in order (one digit per row)."""
    if variant == "size":
        settings = [dict(area=a, rotation=0, x=0.5, y=0.5) for a in AREAS]
    elif variant == "rotation":
        settings = [dict(area=ROTATION_AREA, rotation=r, x=0.5, y=0.5) for r in ANGLES]
    elif variant == "location":
        settings = [dict(area=LOCATION_AREA, rotation=0, x=x, y=y) for y in GRID for x in GRID]
    else:
        raise ValueError(f"unknown SI-Score variant {variant!r}")
    return settings


def _foreground(per_class: int) -> list[int]:
    """The first ``per_class`` digits of each class in the vtabkit_digits test order (sklearn rows)."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    test = digits.permutation(len(target))[digits.NUM_TRAIN:]
    chosen = [[int(i) for i in test if target[i] == label][:per_class] for label in range(10)]
    return [index for group in zip(*chosen) for index in group]  # interleaved: 0, 1, ..., 9, 0, ...


def examples(variant: str) -> Iterator[tuple[np.ndarray, dict]]:
    """(image, metadata row) of every image of ``variant``: each factor value × each foreground digit."""
    from sklearn.datasets import load_digits

    source = load_digits()
    images = digits.scale_to_uint8(source.images)
    textures = backgrounds()
    image_id = 0
    for setting in sweep(variant):
        for index in _foreground(DIGITS_PER_CLASS[variant]):
            background = image_id % NUM_BACKGROUNDS
            image, inside = paste(images[index], textures[background], area=setting["area"],
                                  rotation=setting["rotation"], x=setting["x"], y=setting["y"])
            yield image, {"image_id": image_id, "x_coord": setting["x"], "y_coord": setting["y"],
                          "area": setting["area"], "rotation": setting["rotation"],
                          "foreground_class": int(source.target[index]), "foreground_instance": index,
                          "background": background, "bg_resolution_width": IMAGE_SIZE,
                          "bg_resolution_height": IMAGE_SIZE, "pct_inside_image": round(inside, 4)}
            image_id += 1


class VtabkitSiscore(OfflineBuilder, tfds.core.GeneratorBasedBuilder):
    """Real digits pasted on generated textures, one factor varied per config (size, rotation, location)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: size (10 areas), rotation (18 angles), location (5x5 grid)."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=f"SI-Score-like {name} sweep")
                       for name in ("size", "rotation", "location")]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "SI-Score-like factor sweep generated by vtabkit: real 8x8 digits (vtabkit_digits "
                "test) pasted in white onto 12 generated dark textures at 32x32, one factor varied "
                "per config (size: area fraction; rotation: 1..341 degrees; location: 5x5 grid). "
                "The factor values are in metadata.csv next to the data, joined on image_id."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
                "image_id": tfds.features.Scalar(dtype=np.int64, doc="row key of metadata.csv"),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # rendered locally
        rows = [row for _, row in examples(self.builder_config.name)]
        # TFDS prepares into a temporary copy of the dataset folder and renames it when done, so
        # the CSV lands next to the finished data (or not at all).
        write_metadata(Path(self.data_dir) / METADATA_FILE, rows)
        return {"test": self._generate_examples(self.builder_config.name)}

    def _generate_examples(self, variant: str) -> Iterator[tuple[int, dict]]:
        for position, (image, row) in enumerate(examples(variant)):
            yield position, {"image": image, "label": row["foreground_class"], "image_id": row["image_id"]}


def write_metadata(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
