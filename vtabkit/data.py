"""The one data path every view takes: TFDS split → preprocess → resize → fixed-size batches.

Every example is yielded with its id (the TFDS ``tfds_id``, format infix dropped, or the feature
a view names as its id, e.g. SI-Score's ``image_id`` that its metadata is keyed by): the last
partial batch is padded to the fixed batch size and comes with a mask, so the model keeps one
compiled shape and no example is dropped. Targets come as the view declares them (see
`targets_array` for their host form).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from vtabkit import prepare, quiet, source
from vtabkit.errors import UserError
from vtabkit.tasks import View


def builder(view: View, data_dir: str | None):
    """The TFDS builder of ``view``'s pinned dataset; vtabkit's own ones prepare on first use."""
    dataset_builder = source.open_builder(view.dataset, data_dir)
    if source.is_own(view.dataset) and not source.is_prepared(dataset_builder):
        quiet.prepare_silently(dataset_builder)  # seconds, offline: TFDS's prints and bars are noise
    return dataset_builder


def num_examples(view: View, data_dir: str | None) -> int | None:
    """How many examples the view's split string selects (None when unknown)."""
    splits = builder(view, data_dir).info.splits
    if not splits:  # no split metadata (e.g. a mocked builder in tests)
        return None
    # info.splits resolves one slice at a time; "a+b" is a union of parts.
    return sum(splits[part.strip()].num_examples for part in view.split.split("+"))


def read_split(view: View, data_dir: str | None, **as_dataset_kwargs):
    """The tf.data.Dataset of the view's split in TFDS record order (no shuffling), with ids."""
    tfds = source.tfds()
    dataset_builder = builder(view, data_dir)
    read_config = tfds.ReadConfig(add_tfds_id=True, try_autocache=False)
    try:
        return dataset_builder.as_dataset(split=view.split, shuffle_files=False, read_config=read_config,
                                          **as_dataset_kwargs)
    except (AssertionError, FileNotFoundError) as error:  # what TFDS raises for unprepared data
        raise UserError(f"{view.dataset}: {prepare.missing_dataset_fix(view.dataset, data_dir)}") from error


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    if len(array) == size:
        return array
    return np.concatenate([array, np.zeros((size - len(array), *array.shape[1:]), array.dtype)])


def batches(view: View, *, resolution: int, batch_size: int,
            data_dir: str | None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(images, targets, ids, mask)`` with images float32 ``(B, R, R, 3)`` in [0, 255].

    ``B`` is always ``batch_size``; padded rows have mask 0 and must be ignored. Targets are int64
    labels (``single``) or multi-hot uint8 rows (``multi``, ``set``); ids are str.
    Order is the TFDS record order of the split (deterministic; no shuffling).
    """
    tf = source.tf()
    tfds = source.tfds()

    def to_model_input(example):
        item = view.preprocess(example)
        # Bilinear resize to the model's square input, aspect ratio not kept (as VTAB does).
        image = tf.image.resize(item["image"], (resolution, resolution), method="bilinear")
        return tf.cast(image, tf.float32), item["label"], view.example_id(example)

    dataset = read_split(view, data_dir)
    dataset = dataset.map(to_model_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    for images, targets, ids in tfds.as_numpy(dataset):
        mask = np.zeros(batch_size, dtype=bool)
        mask[:len(ids)] = True
        ids = np.array([source.example_id(value) for value in ids] + [""] * (batch_size - len(ids)))
        yield _padded(images, batch_size), _padded(targets, batch_size), ids, mask


def read_targets(view: View, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, ids)`` of every example of the view, without decoding any image."""
    tf = source.tf()
    tfds = source.tfds()
    dataset_builder = builder(view, data_dir)
    images = [name for name, feature in dataset_builder.info.features.items()
              if isinstance(feature, (tfds.features.Image, tfds.features.Video))]
    decoders = {name: tfds.decode.SkipDecoding() for name in images}
    dataset = read_split(view, data_dir, decoders=decoders)
    dataset = dataset.map(lambda example: (view.target_of(example), view.example_id(example)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(1024)
    targets, ids = [], []
    for batch_targets, batch_ids in tfds.as_numpy(dataset):
        targets.append(batch_targets)
        ids.extend(source.example_id(value) for value in batch_ids)
    empty = np.zeros((0,) if view.target == "single" else (0, view.num_classes), np.int64)
    return targets_array(np.concatenate(targets) if targets else empty, view.target), np.array(ids, dtype=str)


def targets_array(raw: np.ndarray, target: str) -> np.ndarray:
    """Targets in their host form: int64 labels (single), uint8 multi-hot rows (multi), or
    label sets as int64 rows padded with -1 (set; an empty set is a row of -1)."""
    if target == "single":
        return raw.astype(np.int64)
    if target == "multi":
        return raw.astype(np.uint8)
    width = max(int(raw.sum(axis=1).max()) if len(raw) else 1, 1)
    sets = np.full((len(raw), width), -1, np.int64)
    rows, columns = np.nonzero(raw)
    positions = np.arange(len(rows)) - np.searchsorted(rows, rows)  # place within the row
    sets[rows, positions] = columns
    return sets


def prepared_version(view: View, data_dir: str | None) -> str:
    """The version of the prepared TFDS dataset actually read."""
    return str(builder(view, data_dir).info.version)
