"""The one data path every task takes: TFDS split → preprocess → resize → fixed-size batches.

TensorFlow is used only for tf.data/TFDS and is kept off accelerators, so JAX owns them.
Every example is yielded: the last partial batch is padded to the fixed batch size and comes
with a mask, so the model keeps one compiled shape and no test example is dropped.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from vtabkit.errors import UserError
from vtabkit.tasks import Task

_OWN_PREFIX = "vtabkit_"


def _tf():
    import tensorflow as tf

    # Hide accelerators from TensorFlow before it touches them; JAX needs their memory.
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialised; devices were hidden on the first call
        pass
    return tf


def builder(task: Task, data_dir: str | None):
    """The TFDS builder of ``task``'s pinned dataset; vtabkit's own ones prepare on first use."""
    _tf()
    import tensorflow_datasets as tfds

    if task.dataset_name.startswith(_OWN_PREFIX):
        import vtabkit.builders  # noqa: F401  (registers vtabkit's own TFDS builders)
    try:
        dataset_builder = tfds.builder(task.dataset_name, version=task.dataset_version, data_dir=data_dir)
    except Exception as error:  # TFDS raises several types for unknown names and versions
        raise UserError(f"task {task.id!r}: TFDS cannot provide {task.tfds_name} "
                        f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    if task.dataset_name.startswith(_OWN_PREFIX) and not dataset_builder.is_prepared():
        dataset_builder.download_and_prepare()
    return dataset_builder


def _prepare_hint(task: Task, data_dir: str | None) -> str:
    where = data_dir or "the default TFDS data dir (~/tensorflow_datasets)"
    return (f"dataset {task.tfds_name} is not prepared in {where}; run `vtabkit data prepare --tasks "
            f"{task.id}{' --data-dir ' + data_dir if data_dir else ''}` or pass --data-dir")


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
        raise UserError(f"task {task.id!r}: {_prepare_hint(task, data_dir)}") from error


def batches(task: Task, split: str, *, resolution: int, batch_size: int,
            data_dir: str | None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(images, labels, mask)`` with images float32 ``(B, R, R, 3)`` in [0, 255].

    ``B`` is always ``batch_size``; padded rows have mask 0 and must be ignored.
    Order is the TFDS record order of the split (deterministic; no shuffling).
    """
    tf = _tf()
    import tensorflow_datasets as tfds

    dataset = read_split(task, split, data_dir)

    def prepare(example):
        item = task.preprocess(example)
        # Bilinear resize to the model's square input, aspect ratio not kept (as VTAB does).
        image = tf.image.resize(item["image"], (resolution, resolution), method="bilinear")
        return tf.cast(image, tf.float32), item["label"]

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    for images, labels in tfds.as_numpy(dataset):
        count = len(labels)
        mask = np.zeros(batch_size, dtype=bool)
        mask[:count] = True
        if count < batch_size:
            images = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(batch_size - count, labels.dtype)])
        yield images, labels, mask


def missing_reason(task: Task, data_dir: str | None) -> str | None:
    """Why ``task``'s data cannot be read (with the command that fixes it), or None if it can."""
    if task.dataset_name.startswith(_OWN_PREFIX):
        return None  # generated on first use
    try:
        prepared = builder(task, data_dir).is_prepared()
    except UserError as error:
        return str(error).split(": ", 1)[-1]
    return None if prepared else _prepare_hint(task, data_dir)


def prepared_version(task: Task, data_dir: str | None) -> str:
    """The version of the prepared TFDS dataset actually read."""
    return str(builder(task, data_dir).info.version)


def split_ids_hash(task: Task, split: str, data_dir: str | None) -> str:
    """Short hash of the ordered TFDS example ids (``tfds_id``) that ``split`` selects.

    Two labs with equal hashes trained on the same examples in the same order. Only the ids are
    read (images are skipped), so this is cheap for 1k splits.
    """
    import hashlib

    tf = _tf()
    import tensorflow_datasets as tfds

    dataset = read_split(task, split, data_dir,
                         read_config=tfds.ReadConfig(add_tfds_id=True, try_autocache=False),
                         decoders={task.image_key: tfds.decode.SkipDecoding()})  # ids only
    digest = hashlib.sha256()
    for example_id in dataset.map(lambda example: example["tfds_id"], num_parallel_calls=tf.data.AUTOTUNE,
                                  deterministic=True).as_numpy_iterator():
        digest.update(example_id + b"\n")
    return digest.hexdigest()[:16]


def split_ids(task: Task, split_strings: dict[str, str | None], data_dir: str | None) -> dict[str, str]:
    """`split_ids_hash` of the train and val splits (the examples a probe may learn from)."""
    return {role: split_ids_hash(task, split, data_dir)
            for role, split in split_strings.items() if split is not None and role != "test"}
