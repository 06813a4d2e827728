"""Frozen features: extract once per (model, data view), cache on disk with example ids.

Extraction is jit-compiled with one fixed batch shape (the last batch is padded, never
dropped) and sharded over all local devices along the batch axis; the next batch is read,
decoded and sent while the device computes the previous one. The cache is keyed by what
determines the features — the model fingerprint and the *images* of a view (dataset:version,
split string, image key and scaling) through the model's preprocessing — not by the task, so
two tasks that read the same images share one entry. Targets are stored apart, keyed by the
view's label rule: tasks with other labels on the same images (clevr_count, clevr_dist) reuse
the features and only read their labels (no image decoded).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from vtabkit import data, distributed, paths, source
from vtabkit.errors import UserError
from vtabkit.models.model import Model, apply_failure, normalise
from vtabkit.tasks import View

FORMAT_VERSION = 2  # bump when the stored layout or the extraction semantics change


def _key(facts: dict) -> str:
    from vtabkit import __version__

    facts = dict(facts, format=FORMAT_VERSION, vtabkit=__version__)
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def cache_key(model: Model, view: View) -> str:
    """Changes whenever the model weights, the images read or the model's input change."""
    return _key({"model": model.fingerprint, "images": view.images_facts(),
                 "preprocessing": model.preprocessing()})


def labels_key(view: View) -> str:
    """Changes whenever the examples read or the rule that makes their targets change."""
    return _key({"labels": view.labels_facts()})


@dataclasses.dataclass
class ViewData:
    """What a view gives a protocol: features (None until computed), targets and example ids."""

    features: np.ndarray | None
    targets: np.ndarray
    ids: np.ndarray
    from_cache: bool = False


# The compiled extractor of the most recent models, so the splits of every task of a run share
# one compilation (a new jit closure per split would recompile the backbone each time).
_COMPILED: dict[tuple[int, int], tuple[Model, Callable[[np.ndarray], object], int]] = {}


def dispatch_function(model: Model, batch_size: int) -> tuple[Callable[[np.ndarray], object], int]:
    """A function images → features *as dispatched* (a JAX array still being computed, or numpy
    for models outside JAX) for a fixed batch size, and that (device-rounded) size.

    Not waiting for the result is what lets `compute_features` read and transfer the next batch
    while the device computes this one.
    """
    cached = _COMPILED.get((id(model), batch_size))
    if cached is not None and cached[0] is model:
        return cached[1], cached[2]
    run, size = _build_dispatch_function(model, batch_size)
    if len(_COMPILED) >= 4:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[(id(model), batch_size)] = (model, run, size)
    return run, size


def batch_function(model: Model, batch_size: int) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """A function images → features (numpy) for a fixed batch size, and that (device-rounded) size."""
    dispatch, size = dispatch_function(model, batch_size)
    return (lambda images: np.asarray(dispatch(images))), size


def _build_dispatch_function(model: Model, batch_size: int) -> tuple[Callable[[np.ndarray], object], int]:
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

    def run(images: np.ndarray):
        return forward(params, jax.device_put(images, batch_sharding))  # async: no wait here
    return run, batch_size


def _check_output(model: Model, features, batch_size: int) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] != batch_size:
        raise UserError(f"model {model.name!r} returned features of shape {features.shape} for a batch "
                        f"of {batch_size} images; it must return a 2-D (batch, dim) array")
    return features


def compute_features(model: Model, view: View, *, data_dir: str | None, batch_size: int = 256,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the model over every example of ``view``: ``(features float32, targets, ids)``.

    In a multi-process run each process reads its own share of the split and the features of
    all shares are gathered, in example order, on every process (see `_compute_shared`).
    """
    if distributed.process_count() > 1:
        return _compute_shared(model, view, data_dir=data_dir, batch_size=batch_size, progress=progress)
    return _compute_local(model, view, data_dir=data_dir, batch_size=batch_size, progress=progress)


def _compute_shared(model: Model, view: View, *, data_dir: str | None, batch_size: int,
                    progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = source.split_sizes(data.builder(view, data_dir))
    part, start, end = distributed.share(view.split, sizes, distributed.process_index(), distributed.process_count())
    if part is None:  # fewer examples than processes: nothing to read here
        local, local_ids = np.zeros((0, 0), np.float32), np.zeros(0, str)
    else:
        local, _, local_ids = _compute_local(model, dataclasses.replace(view, split=part), data_dir=data_dir,
                                             batch_size=batch_size, progress=progress)
    features = distributed.gather_rows(local)
    # Targets and ids of the whole split from a label-only pass (no image decoded): cheaper than
    # gathering strings, and a check that the shares tile the split in order.
    targets, ids = data.read_targets(view, data_dir)
    if len(features) != len(ids) or not np.array_equal(local_ids, ids[start:end]):
        raise UserError(f"{view.dataset} {view.split}: the examples this process read are not positions "
                        f"{start}..{end} of the split; every process needs the same prepared dataset")
    return features, targets, ids


def _compute_local(model: Model, view: View, *, data_dir: str | None, batch_size: int,
                   progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from tqdm import tqdm

    run, batch_size = dispatch_function(model, batch_size)
    total = data.num_examples(view, data_dir)
    chunks, targets, ids = [], [], []
    name = f"{view.dataset.split(':')[0]} {view.split}"

    def collect(outputs, batch_targets, batch_ids, mask, images_shape) -> None:
        try:
            outputs = np.asarray(outputs)  # waits for the device; errors of a running model surface here
        except Exception as error:
            raise UserError(apply_failure(model, error, batch_size, images_shape)) from error
        features = _check_output(model, outputs, batch_size)
        chunks.append(features[mask].astype(np.float32))
        targets.append(batch_targets[mask])
        ids.append(batch_ids[mask])
        bar.update(int(mask.sum()))

    with tqdm(total=total, desc=name, unit="img", disable=not progress, leave=False) as bar:
        in_flight = None  # one batch on the device while the host reads, decodes and sends the next
        for images, batch_targets, batch_ids, mask in data.batches(view, resolution=model.resolution,
                                                                   batch_size=batch_size, data_dir=data_dir):
            try:
                outputs = run(images)
            except Exception as error:  # the model's own code failed on a real batch
                raise UserError(apply_failure(model, error, batch_size, images.shape[1:])) from error
            if in_flight is not None:
                collect(*in_flight)
            in_flight = (outputs, batch_targets, batch_ids, mask, images.shape[1:])
        if in_flight is not None:
            collect(*in_flight)
    features = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    raw = np.concatenate(targets) if targets else np.zeros((0,) if view.target == "single" else (0, view.num_classes))
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise UserError(f"model {model.name!r} returned NaN or inf features for {bad} of {len(features)} "
                        f"images of {name}; check its weights and input range")
    return features, data.targets_array(raw, view.target), np.concatenate(ids) if ids else np.zeros(0, str)


def _read(path: Path, *names: str) -> tuple[np.ndarray, ...] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return tuple(stored[name] for name in names)
    except (OSError, ValueError, KeyError, EOFError):  # damaged entry: compute it again
        path.unlink(missing_ok=True)
        return None


def _write(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename, so a crash never leaves a half-written cache entry.
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    paths.readable_mode(handle)
    with os.fdopen(handle, "wb") as stream:
        np.savez(stream, **arrays)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _meta(facts: dict) -> np.ndarray:
    """What an entry holds, for `vtabkit cache ls` (a JSON string; no pickle needed to read it)."""
    return np.array(json.dumps(facts, sort_keys=True))


def read_meta(path: Path) -> dict:
    """The facts stored with a cache entry (empty for an unreadable one)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return json.loads(str(stored["meta"])) if "meta" in stored.files else {}
    except (OSError, ValueError, EOFError):
        return {}


def _entry(cache_dir: Path, kind: str, view: View, key: str) -> Path:
    dataset = view.dataset.split(":")[0].replace("/", "_")
    return Path(cache_dir) / f"{dataset}-{kind}-{key}.npz"


def load_targets(view: View, *, data_dir: str | None, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, ids)`` of ``view`` from the cache, or from a label-only pass over the data."""
    path = None if cache_dir is None else _entry(cache_dir, "labels", view, labels_key(view))
    stored = None if path is None else _read(path, "targets", "ids")
    if stored is not None:
        return stored
    targets, ids = data.read_targets(view, data_dir)
    if path is not None:
        _write(path, targets=targets, ids=ids, meta=_meta({"kind": "labels", "dataset": view.dataset,
                                                            "split": view.split}))
    return targets, ids


def load_or_compute(model: Model, view: View, *, data_dir: str | None, cache_dir: Path | None,
                    batch_size: int = 256, progress: bool = False) -> ViewData:
    """Cached `compute_features`: features from the cache when the images were seen before.

    In a multi-process run only process 0 reads and writes the cache (the others pass
    ``cache_dir=None``); whether it had the features, and then the features, are broadcast.
    """
    if distributed.process_count() > 1:
        return _load_or_compute_shared(model, view, data_dir=data_dir, cache_dir=cache_dir,
                                       batch_size=batch_size, progress=progress)
    cacheable = cache_dir is not None and model.cacheable  # nothing identifies the weights: never stale
    features_path = _entry(cache_dir, "features", view, cache_key(model, view)) if cacheable else None
    labels_path = _entry(cache_dir, "labels", view, labels_key(view)) if cacheable else None
    stored = None if features_path is None else _read(features_path, "features", "ids")
    if stored is not None:
        features, ids = stored
        targets, target_ids = load_targets(view, data_dir=data_dir, cache_dir=cache_dir)
        if np.array_equal(ids, target_ids):
            return ViewData(features, targets, ids, from_cache=True)
        features_path.unlink(missing_ok=True)  # the prepared data changed under the cache
    features, targets, ids = compute_features(model, view, data_dir=data_dir, batch_size=batch_size,
                                              progress=progress)
    if features_path is not None:
        facts = {"dataset": view.dataset, "split": view.split}
        _write(features_path, features=features, ids=ids,
               meta=_meta(dict(facts, kind="features", model=model.name, fingerprint=model.fingerprint)))
        _write(labels_path, targets=targets, ids=ids, meta=_meta(dict(facts, kind="labels")))
    return ViewData(features, targets, ids)


def _load_or_compute_shared(model: Model, view: View, *, data_dir: str | None, cache_dir: Path | None,
                            batch_size: int, progress: bool) -> ViewData:
    main = distributed.is_main()
    cacheable = main and cache_dir is not None and model.cacheable
    stored = None
    if cacheable:
        stored = _read(_entry(cache_dir, "features", view, cache_key(model, view)), "features", "ids")
    known = None
    if stored is not None:
        known = load_targets(view, data_dir=data_dir, cache_dir=cache_dir)
        if not np.array_equal(stored[1], known[1]):  # the prepared data changed under the cache
            _entry(cache_dir, "features", view, cache_key(model, view)).unlink(missing_ok=True)
            stored = None
    if distributed.broadcast(np.array(stored is not None, np.int32)):
        features = distributed.broadcast_array(stored[0] if main else None)
        targets, ids = known if main else load_targets(view, data_dir=data_dir, cache_dir=None)
        return ViewData(features, targets, ids, from_cache=True)
    features, targets, ids = compute_features(model, view, data_dir=data_dir, batch_size=batch_size,
                                              progress=progress)
    if cacheable:
        facts = {"dataset": view.dataset, "split": view.split}
        _write(_entry(cache_dir, "features", view, cache_key(model, view)), features=features, ids=ids,
               meta=_meta(dict(facts, kind="features", model=model.name, fingerprint=model.fingerprint)))
        _write(_entry(cache_dir, "labels", view, labels_key(view)), targets=targets, ids=ids,
               meta=_meta(dict(facts, kind="labels")))
    return ViewData(features, targets, ids)
