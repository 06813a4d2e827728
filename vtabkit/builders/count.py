"""``vtabkit_count``: count 1–6 coloured objects on a textured background (after CLEVR count).

Each 64x64 RGB scene has a grey, low-saturation background (smooth blotchy texture, a faint
grating and pixel noise) and 1–6 non-overlapping discs and squares of random saturated colours,
sizes and (for squares) rotations. Objects keep a gap of at least 2 px, so each is its own
connected component. Counts are balanced: each split holds every count 1..6 equally often
(±1), in a seeded random order.

Why it is learnable but not trivial: object size varies (radius 3–7 px), so total colourful
area does not give the count, and the background's brightness and texture vary per image.
By construction the background's chroma (max−min over RGB) stays below ``BACKGROUND_MAX_CHROMA``
and every object pixel's stays above ``OBJECT_MIN_CHROMA``; tests rely on that to find objects.
"""

from __future__ import annotations

import colorsys
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from vtabkit.builders.offline import OfflineBuilder

IMAGE_SIZE = 64
MAX_OBJECTS = 6
NUM_TRAIN, NUM_TEST = 1000, 1000
_SEEDS = {"train": 11, "test": 12}
_GAP = 2.0  # px between the bounding circles of two objects
BACKGROUND_MAX_CHROMA = 20  # grey tint ±8 per channel → chroma ≤ 16
OBJECT_MIN_CHROMA = 50  # saturation·value ≥ 0.36 → chroma ≥ 92 before noise and clipping


def _background(rng: np.random.Generator) -> np.ndarray:
    """(64, 64, 3) float background: grey level + tint + blotches + grating (all grey-only)."""
    from scipy import ndimage

    grey = rng.uniform(70, 180)
    tint = rng.uniform(-8, 8, size=3)  # small per-channel offset: stays low-saturation
    # Blotchy texture: coarse random field, cubic-upsampled to the image size.
    coarse = rng.normal(0.0, 22.0, size=(9, 9))
    blotches = ndimage.zoom(coarse, IMAGE_SIZE / 9, order=3)[:IMAGE_SIZE, :IMAGE_SIZE]
    rows, columns = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
    grating = rng.uniform(0, 12) * np.sin(
        2 * np.pi * (columns * np.cos(angle) + rows * np.sin(angle)) / period + rng.uniform(0, 2 * np.pi))
    luminance = grey + blotches + grating
    return luminance[:, :, None] + tint[None, None, :]


def _place(rng: np.random.Generator, num_objects: int) -> list[dict]:
    """Random non-overlapping objects: kind, centre, size, rotation, colour."""
    while True:  # restart the scene in the rare case the objects cannot all be placed
        objects: list[dict] = []
        for _ in range(num_objects):
            kind = "disc" if rng.random() < 0.5 else "square"
            size = rng.uniform(3.0, 7.0) if kind == "disc" else rng.uniform(3.0, 6.0)
            reach = size if kind == "disc" else size * np.sqrt(2)  # bounding-circle radius
            for _attempt in range(200):
                centre = rng.uniform(reach + 1, IMAGE_SIZE - reach - 1, size=2)
                if all(np.hypot(*(centre - other["centre"])) > reach + other["reach"] + _GAP
                       for other in objects):
                    break
            else:
                break  # no room: start the scene again
            hue, saturation, value = rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
            colour = 255.0 * np.array(colorsys.hsv_to_rgb(hue, saturation, value))
            objects.append({"kind": kind, "centre": centre, "size": size, "reach": reach,
                            "angle": rng.uniform(0, np.pi / 2), "colour": colour})
        if len(objects) == num_objects:
            return objects


def render_scene(rng: np.random.Generator, num_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene with ``num_objects`` objects: (uint8 image (64, 64, 3), int mask (64, 64)).

    The mask holds 0 for background and k for pixels of the k-th object (1-based).
    """
    image = _background(rng)
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.int64)
    rows, columns = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5  # pixel centres
    for number, item in enumerate(_place(rng, num_objects), start=1):
        dy, dx = rows - item["centre"][0], columns - item["centre"][1]
        if item["kind"] == "disc":
            inside = dx ** 2 + dy ** 2 <= item["size"] ** 2
        else:
            cos, sin = np.cos(item["angle"]), np.sin(item["angle"])
            inside = np.maximum(np.abs(cos * dx + sin * dy), np.abs(-sin * dx + cos * dy)) <= item["size"]
        # Slight shading across the object so it is not a flat patch.
        shade = 1.0 + 0.08 * (dx * np.cos(item["angle"]) + dy * np.sin(item["angle"])) / item["size"]
        image[inside] = item["colour"][None, :] * shade[inside][:, None]
        mask[inside] = number
    # Pixel noise shared by the three channels: grain without adding colour to the background.
    image += rng.normal(0.0, 6.0, size=(IMAGE_SIZE, IMAGE_SIZE, 1))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def balanced_counts(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` object counts, each of 1..6 equally often (±1), in random order."""
    return rng.permutation(np.resize(np.arange(1, MAX_OBJECTS + 1), size))


class VtabkitCount(OfflineBuilder, tfds.core.GeneratorBasedBuilder):
    """Rendered counting scenes: 1–6 objects, train 1000 / test 1000."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 1-6 discs/squares on textured backgrounds, "
                              "balanced counts, 1000 train and 1000 test scenes."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Synthetic counting scenes generated by vtabkit in numpy (in the spirit of "
                "CLEVR count, not CLEVR): 64x64 RGB images of 1 to 6 non-overlapping discs and "
                "squares of random saturated colours, sizes and rotations on a grey textured, "
                "noisy background. `num_objects` is the true count, `label` = num_objects - 1. "
                "Counts are balanced; 1000 train and 1000 test scenes from fixed seeds."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
                "num_objects": tfds.features.Scalar(dtype=np.int64, doc="number of objects, 1..6"),
                "label": tfds.features.ClassLabel(num_classes=MAX_OBJECTS),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # rendered locally
        return {"train": self._generate_examples("train", NUM_TRAIN),
                "test": self._generate_examples("test", NUM_TEST)}

    def _generate_examples(self, split: str, size: int) -> Iterator[tuple[int, dict]]:
        rng = np.random.default_rng(_SEEDS[split])
        for position, num_objects in enumerate(balanced_counts(rng, size)):
            image, _ = render_scene(rng, int(num_objects))
            yield position, {"image": image, "num_objects": int(num_objects),
                             "label": int(num_objects) - 1}
