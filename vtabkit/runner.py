"""`vtabkit run`: evaluate one model on a suite's tasks with one or more protocols.

Per task, each split goes through the model once (features cached on disk and shared by all
frozen-feature protocols); every protocol cell then becomes one record, appended as soon as it
is known. Cells already in the run directory's ``results.jsonl`` are skipped.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vtabkit import __version__, data, features, prepare, protocols, results, tasks
from vtabkit.errors import UserError
from vtabkit.models.registry import Model, check_model_name, create_model
from vtabkit.models.torch_adapter import require_flax
from vtabkit.paths import cache_dir as default_cache_dir


@dataclasses.dataclass
class RunConfig:
    model: str
    suite: str | None = None
    tasks: list[str] | None = None
    protocols: list[str] | None = None
    out: Path = Path("runs/latest")
    data_dir: str | None = None
    cache_dir: Path | None = None  # None: the default cache; use_cache=False turns it off
    use_cache: bool = True
    tasks_dirs: list[str] | None = None
    regime: str | None = None
    batch_size: int = 256
    skip_missing: bool = False
    progress: bool = True
    protocol_config: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)  # (index, count): this process runs tasks index, index+count, ...


def select_tasks(config: RunConfig) -> tuple[list[tasks.Task], str, tuple[str, ...]]:
    """The tasks to run, the data regime, and the suite's default protocols."""
    if config.suite is None and not config.tasks:
        raise UserError("name a suite (--suite lite) or tasks (--tasks a,b); see `vtabkit list suites`")
    suite = tasks.get_suite(config.suite, config.tasks_dirs) if config.suite else None
    ids = list(suite.tasks) if suite else []
    if config.tasks:
        if suite:
            outside = [t for t in config.tasks if t not in suite.tasks]
            if outside:
                raise UserError(f"tasks {', '.join(outside)} are not in suite {suite.name!r}; "
                                f"its tasks: {', '.join(suite.tasks)}")
        ids = list(config.tasks)
    regime = config.regime or (suite.regime if suite else "1k")
    if regime not in tasks.REGIMES:
        raise UserError(f"unknown regime {regime!r}; use one of {', '.join(tasks.REGIMES)}")
    index, count = config.shard
    if not 0 <= index < count:
        raise UserError(f"--shard {index}/{count}: the index must be in 0..{count - 1}")
    # Independent cells for any scheduler: shard i of n takes every n-th task, in suite order.
    chosen = [tasks.get_task(task_id, config.tasks_dirs) for task_id in list(dict.fromkeys(ids))[index::count]]
    if not chosen:
        raise UserError(f"--shard {index}/{count} has no task: the run has only {len(dict.fromkeys(ids))}")
    for task in chosen:
        task.regime_splits(regime)  # a task without this regime's splits fails before any work
    return chosen, regime, (suite.protocols if suite else ("linear",))


def check_data(chosen: list[tasks.Task], config: RunConfig, log: Callable[[str], None]) -> list[tasks.Task]:
    """Stop before loading the model when data is missing (or drop those tasks with --skip-missing)."""
    missing = {task.id: fix for task, fix in prepare.missing_datasets(chosen, config.data_dir)}
    if missing and not config.skip_missing:
        lines = "\n".join(f"  {task_id}: {problem}" for task_id, problem in missing.items())
        raise UserError(f"data missing for {len(missing)} task(s):\n{lines}\n"
                        "prepare it, or add --skip-missing to run the tasks whose data is present")
    for task_id, problem in missing.items():
        log(f"skipping {task_id}: {problem}")
    kept = [task for task in chosen if task.id not in missing]
    if not kept:
        raise UserError("no task has its data prepared; see `vtabkit data status`")
    return kept


def _environment() -> dict[str, Any]:
    import jax
    import tensorflow_datasets as tfds

    return {"vtabkit": __version__, "jax": jax.__version__, "tfds": tfds.__version__,
            "backend": jax.default_backend(), "devices": jax.device_count(),
            "python": platform.python_version()}


def _base_record(model: Model, task: tasks.Task, regime: str, split_strings: dict[str, str | None],
                 environment: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    return {"model": model.name, "model_fingerprint": model.fingerprint,
            "model_metadata": model.metadata, "preprocessing": model.preprocessing(),
            "task": task.id, "family": task.family, "task_hash": task.hash,
            "dataset": task.tfds_name, "dataset_version": data.prepared_version(task, data_dir),
            "regime": regime, "splits": split_strings, "split_ids": _split_ids(task, regime, data_dir),
            "vtabkit_version": __version__, "environment": environment}


def _split_ids(task: tasks.Task, regime: str, data_dir: str | None) -> dict[str, str]:
    """Hashes of the example ids a probe may learn from (train and val), for cross-lab checks."""
    train, val, _ = tasks.REGIMES[regime]
    return {role: prepare.split_ids_hash(task, name, data_dir)
            for role, name in (("train", train), ("val", val)) if name in task.splits}


def run(config: RunConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every pending cell; returns the records written by this call."""
    chosen, regime, default_protocols = select_tasks(config)
    names = list(dict.fromkeys(config.protocols or default_protocols))  # each protocol once
    modules = {name: protocols.get_protocol(name) for name in names}
    unused = sorted(set(config.protocol_config) - set(names))
    if unused:
        raise UserError(f"settings given for {', '.join(unused)}, which this run does not use; "
                        f"add it to --protocol (running: {', '.join(names)})")
    settings = {name: protocols.merge_config(name, config.protocol_config.get(name)) for name in names}
    check_model_name(config.model)  # an unknown model fails here, before any data is read
    chosen = check_data(chosen, config, log)

    model = create_model(config.model, **config.model_args)
    if any(not modules[name].USES_FEATURES for name in names):
        require_flax(model)  # before any data is read
    results_path = Path(config.out) / results.RESULTS_FILE
    done = results.done_cells(results.read_records(results_path))
    cache = None if not config.use_cache else Path(config.cache_dir or default_cache_dir() / "features")
    environment = _environment()
    written = []
    for task in chosen:
        pending = [(name, cell) for name in names for cell in modules[name].cells(settings[name])
                   if _key(model, task, regime, name, cell) not in done]
        if not pending:
            log(f"{task.id}: all cells already in {results_path}")
            continue
        train_split, val_split, test_split = task.regime_splits(regime)
        split_strings = {"train": train_split, "val": val_split, "test": test_split}
        base = _base_record(model, task, regime, split_strings, environment, config.data_dir)
        arrays, extract_seconds = None, 0.0
        if any(modules[name].USES_FEATURES for name, _ in pending):
            arrays, extract_seconds = _features(model, task, split_strings, config, cache)
        for name, cell in pending:
            key = _key(model, task, regime, name, cell)
            started = time.perf_counter()
            work_dir = None
            if modules[name].USES_FEATURES:
                outcome = modules[name].evaluate_features(arrays["train"], arrays["val"], arrays["test"],
                                                          task.num_classes, config=cell)
            else:
                # Keyed by the whole cell, so another model or setting never resumes this one's state.
                cell_id = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
                work_dir = Path(config.out) / "work" / f"{task.id}-{name}-{cell_id}"
                outcome = modules[name].evaluate_model(model, task, regime, config=cell,
                                                       data_dir=config.data_dir, work_dir=work_dir)
            record = dict(base, protocol=name, setting=cell["setting"], seed=cell["seed"],
                          protocol_config=cell, config_hash=results.config_hash(cell),
                          metrics={"top1": outcome["top1"]}, details=outcome,
                          timings={"features_s": extract_seconds, "protocol_s": time.perf_counter() - started},
                          created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
            results.append_record(results_path, record)
            done.add(key)
            if work_dir is not None:  # only once the record is safe on disk
                shutil.rmtree(work_dir, ignore_errors=True)
                if not any(work_dir.parent.iterdir()):
                    work_dir.parent.rmdir()
            written.append(record)
            log(f"{task.id:20s} {name:9s} {cell['setting']:10s} seed {cell['seed']}: "
                f"top1 {100 * outcome['top1']:.1f}%")
    return written


def _key(model: Model, task: tasks.Task, regime: str, protocol: str, cell: dict[str, Any]) -> tuple:
    return results.cell_key({"model_fingerprint": model.fingerprint, "task": task.id, "task_hash": task.hash,
                             "regime": regime, "protocol": protocol, "setting": cell["setting"],
                             "seed": cell["seed"], "config_hash": results.config_hash(cell)})


def _features(model: Model, task: tasks.Task, split_strings: dict[str, str | None], config: RunConfig,
              cache: Path | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray] | None], float]:
    started = time.perf_counter()
    arrays: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    for role, split in split_strings.items():
        arrays[role] = None if split is None else features.load_or_compute(
            model, task, split, data_dir=config.data_dir, cache_dir=cache,
            batch_size=config.batch_size, progress=config.progress)
    return arrays, time.perf_counter() - started
