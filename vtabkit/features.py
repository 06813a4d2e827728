"""Frozen features: extract once per (model, task, split, preprocessing), cache on disk.

Extraction is jit-compiled with one fixed batch shape (the last batch is padded, never
dropped) and sharded over all local devices along the batch axis.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from vtabkit import data
from vtabkit.errors import UserError
from vtabkit.models.registry import Model
from vtabkit.tasks import Task

FORMAT_VERSION = 1  # bump when the stored layout or the extraction semantics change


def cache_key(model: Model, task: Task, split: str) -> str:
    """Changes whenever the model weights, the task definition, the split or the input change."""
    from vtabkit import __version__

    facts = {"model": model.fingerprint, "task": task.hash, "dataset": task.tfds_name, "split": split,
             "preprocessing": model.preprocessing(), "format": FORMAT_VERSION, "vtabkit": __version__}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def normalise(model: Model, images, xp):
    """Map [0, 255] pixels to the model's declared value range (and mean/std)."""
    low, high = model.value_range
    images = images * ((high - low) / 255.0) + low
    if model.mean is not None:
        images = (images - xp.asarray(model.mean, images.dtype)) / xp.asarray(model.std, images.dtype)
    return images


# The compiled extractor of the most recent models, so the splits of every task of a run share
# one compilation (a new jit closure per split would recompile the backbone each time).
_COMPILED: dict[tuple[int, int], tuple[Model, Callable[[np.ndarray], np.ndarray], int]] = {}


def batch_function(model: Model, batch_size: int) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """A function images → features for a fixed batch size, and that (device-rounded) size."""
    cached = _COMPILED.get((id(model), batch_size))
    if cached is not None and cached[0] is model:
        return cached[1], cached[2]
    run, size = _build_batch_function(model, batch_size)
    if len(_COMPILED) >= 4:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[(id(model), batch_size)] = (model, run, size)
    return run, size


def _build_batch_function(model: Model, batch_size: int) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    if not model.jittable:
        return (lambda images: np.asarray(model.apply(model.params, normalise(model, images, np)))), batch_size
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    batch_size = -(-batch_size // len(devices)) * len(devices)  # a multiple of the device count
    mesh = Mesh(np.array(devices), ("data",))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(model.params, replicated)

    @jax.jit
    def forward(params, images):
        return model.apply(params, normalise(model, images, jnp))

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(forward(params, jax.device_put(images, batch_sharding)))
    return run, batch_size


def _check_output(model: Model, features, batch_size: int) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] != batch_size:
        raise UserError(f"model {model.name!r} returned features of shape {features.shape} for a batch "
                        f"of {batch_size} images; it must return a 2-D (batch, dim) array")
    return features


def compute_features(model: Model, task: Task, split: str, *, data_dir: str | None,
                     batch_size: int = 256, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over every example of ``split``; returns ``(features float32, labels int64)``."""
    from tqdm import tqdm

    run, batch_size = batch_function(model, batch_size)
    total = data.num_examples(task, split, data_dir)
    chunks, labels = [], []
    with tqdm(total=total, desc=f"{task.id} {split}", unit="img", disable=not progress, leave=False) as bar:
        for images, batch_labels, mask in data.batches(task, split, resolution=model.resolution,
                                                       batch_size=batch_size, data_dir=data_dir):
            try:
                outputs = run(images)
            except Exception as error:  # the model's own code failed on a real batch
                raise UserError(f"model {model.name!r} failed on a batch of {batch_size} images of shape "
                                f"{images.shape[1:]}: {type(error).__name__}: {str(error).splitlines()[0]}") from error
            features = _check_output(model, outputs, batch_size)
            chunks.append(features[mask].astype(np.float32))
            labels.append(batch_labels[mask].astype(np.int64))
            bar.update(int(mask.sum()))
    features = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise UserError(f"model {model.name!r} returned NaN or inf features for {bad} of {len(features)} "
                        f"images of {task.id} {split}; check its weights and input range")
    return features, labels


def load_or_compute(model: Model, task: Task, split: str, *, data_dir: str | None,
                    cache_dir: Path | None, batch_size: int = 256,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cached `compute_features`: reads ``cache_dir/<key>.npz`` or computes and stores it."""
    if cache_dir is None:
        return compute_features(model, task, split, data_dir=data_dir, batch_size=batch_size, progress=progress)
    path = Path(cache_dir) / f"{task.id}-{cache_key(model, task, split)}.npz"
    if path.exists():
        try:
            with np.load(path) as stored:
                return stored["features"], stored["labels"]
        except (OSError, ValueError, KeyError, EOFError):  # damaged entry: compute it again
            path.unlink(missing_ok=True)
    features, labels = compute_features(model, task, split, data_dir=data_dir,
                                        batch_size=batch_size, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename, so a crash never leaves a half-written cache entry.
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "wb") as stream:
        np.savez(stream, features=features, labels=labels)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    return features, labels
