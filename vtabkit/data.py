"""The one data path every task takes: TFDS split → preprocess → resize → fixed-size batches.

TensorFlow is used only for tf.data/TFDS and is kept off accelerators, so JAX owns them.
Every example is yielded: the last partial batch is padded to the fixed batch size and comes
with a mask, so the model keeps one compiled shape and no test example is dropped.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from vtabkit import prepare
from vtabkit.errors import UserError
from vtabkit.tasks import Task


def _tf():
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # deprecation chatter from inside TFDS, not for our users
    # Hide accelerators from TensorFlow before it touches them; JAX needs their memory.
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialised; devices were hidden on the first call
        pass
    return tf


def builder(task: Task, data_dir: str | None):
    """The TFDS builder of ``task``'s pinned dataset; vtabkit's own ones prepare on first use."""
    _tf()
    dataset_builder = prepare.open_builder(task, data_dir)
    if task.dataset_name.startswith(prepare.OWN_PREFIX) and not prepare.is_prepared(dataset_builder):
        dataset_builder.download_and_prepare()
    return dataset_builder


def num_examples(task: Task, split: str, data_dir: str | None) -> int | None:
    """How many examples the TFDS split string ``split`` selects (None when unknown)."""
    splits = builder(task, data_dir).info.splits
    if not splits:  # no split metadata (e.g. a mocked builder in tests)
        return None
    # info.splits resolves one slice at a time; "a+b" is a union of parts.
    return sum(splits[part.strip()].num_examples for part in split.split("+"))


def read_split(task: Task, split: str, data_dir: str | None, **as_dataset_kwargs):
    """The tf.data.Dataset of ``split`` in TFDS record order (no shuffling)."""
    import tensorflow_datasets as tfds

    dataset_builder = builder(task, data_dir)
    read_config = as_dataset_kwargs.pop("read_config", tfds.ReadConfig(try_autocache=False))
    try:
        return dataset_builder.as_dataset(split=split, shuffle_files=False, read_config=read_config,
                                          **as_dataset_kwargs)
    except (AssertionError, FileNotFoundError) as error:  # what TFDS raises for unprepared data
        raise UserError(f"task {task.id!r}: {prepare.missing_fix(task, data_dir)}") from error


def batches(task: Task, split: str, *, resolution: int, batch_size: int,
            data_dir: str | None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(images, labels, mask)`` with images float32 ``(B, R, R, 3)`` in [0, 255].

    ``B`` is always ``batch_size``; padded rows have mask 0 and must be ignored.
    Order is the TFDS record order of the split (deterministic; no shuffling).
    """
    tf = _tf()
    import tensorflow_datasets as tfds

    dataset = read_split(task, split, data_dir)

    def to_model_input(example):
        item = task.preprocess(example)
        # Bilinear resize to the model's square input, aspect ratio not kept (as VTAB does).
        image = tf.image.resize(item["image"], (resolution, resolution), method="bilinear")
        return tf.cast(image, tf.float32), item["label"]

    dataset = dataset.map(to_model_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    for images, labels in tfds.as_numpy(dataset):
        count = len(labels)
        mask = np.zeros(batch_size, dtype=bool)
        mask[:count] = True
        if count < batch_size:
            images = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(batch_size - count, labels.dtype)])
        yield images, labels, mask


def prepared_version(task: Task, data_dir: str | None) -> str:
    """The version of the prepared TFDS dataset actually read."""
    return str(builder(task, data_dir).info.version)
