"""`vtabkit run`: evaluate one model on a suite's tasks with one or more protocols.

One path for every protocol: per cell (task, regime, protocol, setting, seed) the protocol
*fits* a head once on the regime's train/val data, then *predicts* scores on every eval set of
the task; metrics are computed from those scores and each (cell, eval set) becomes one record,
appended as soon as it is known, next to its per-example predictions. Every data view goes
through the model at most once per run (features cached on disk, shared by all frozen-feature
protocols and by every task that reads the same images). Cells already in the run directory's
``results.jsonl`` are skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import platform
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vtabkit import __version__, compile_cache, data, distributed, features, metadata, metrics, places, predictions
from vtabkit import prepare, protocols, regimes, results, source, task_checks, tasks
from vtabkit.errors import UserError
from vtabkit.models.model import Model, cache_note, logits_model, require_flax, require_head
from vtabkit.models.registry import check_model_name, create_model
from vtabkit.paths import cache_dir as default_cache_dir
from vtabkit.protocols.common import FitContext, Images


@dataclasses.dataclass
class RunConfig:
    """What `run` evaluates and where it writes; the fields mirror ``vtabkit run``'s options."""

    model: str
    suite: str | None = None
    tasks: list[str] | None = None
    protocols: list[str] | None = None
    out: Path = Path("runs/latest")
    data_dir: str | None = None
    cache_dir: Path | None = None  # None: the default cache; use_cache=False turns it off
    use_cache: bool = True
    tasks_dirs: list[str] | None = None
    regime: str | None = None  # one regime or a comma-separated list (see `vtabkit.regimes`)
    batch_size: int = 256
    skip_missing: bool = False
    strict: bool = False  # a missing eval-set dataset stops the run instead of skipping that eval set
    progress: bool = True
    protocol_config: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)  # (index, count): this process runs tasks index, index+count, ...
    command: list[str] | None = None  # the command line, recorded as given (the CLI fills it in)


def select_tasks(config: RunConfig) -> tuple[list[tasks.Task], list[regimes.Regime], tuple[str, ...]]:
    """The tasks to run, the data regimes, and the suite's default protocols."""
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
    chosen_regimes = regimes.parse_list(config.regime or (suite.regime if suite else "1k"))
    index, count = config.shard
    if not 0 <= index < count:
        raise UserError(f"--shard {index}/{count}: the index must be in 0..{count - 1}")
    # Independent cells for any scheduler: shard i of n takes every n-th task, in suite order.
    chosen = [tasks.get_task(task_id, config.tasks_dirs) for task_id in list(dict.fromkeys(ids))[index::count]]
    if not chosen:
        raise UserError(f"--shard {index}/{count} has no task: the run has only {len(dict.fromkeys(ids))}")
    for task in chosen:
        for regime in chosen_regimes:
            task.regime_views(regime)  # a task without this regime's splits fails before any work
        for eval_set in task.eval_sets:
            metrics.check_specs(list(eval_set.metrics), eval_set.view.target,
                                f"{task.source}: eval set {eval_set.name!r}")
    return chosen, chosen_regimes, (suite.protocols if suite else ("linear",))


def check_data(chosen: list[tasks.Task], config: RunConfig,
               log: Callable[[str], None]) -> tuple[list[tasks.Task], set[tuple[str, str]]]:
    """Stop before loading the model when a task's own data is missing (or drop those tasks with
    --skip-missing); an eval set whose dataset is missing is skipped with one line (the task's
    other eval sets are still scored) unless --strict. Returns the tasks kept and the
    ``(task, eval set)`` pairs skipped."""
    missing = {task.id: fix for task, fix in prepare.missing_datasets(chosen, config.data_dir)}
    if missing and not config.skip_missing:
        # One line however many tasks: each task's fix, then what else the user can do.
        fixes = "; ".join(f"{task_id}: {problem}" for task_id, problem in missing.items())
        raise UserError(f"data missing for {len(missing)} task(s) — {fixes} — prepare it, or add "
                        "--skip-missing to run the tasks whose data is present")
    for task_id, problem in missing.items():
        log(f"skipping {task_id}: {problem}")
    kept = [task for task in chosen if task.id not in missing]
    if not kept:
        raise UserError("no task has its data prepared; see `vtabkit data status`")
    absent = [(task.id, name, problem) for task in kept for name, problem in prepare.missing_eval_sets(task, config.data_dir)]
    if absent and config.strict:
        fixes = "; ".join(f"{task_id} / {name}: {problem}" for task_id, name, problem in absent)
        raise UserError(f"data missing for {len(absent)} eval set(s) — {fixes} — prepare it, or run without "
                        "--strict to score the eval sets whose data is present")
    for task_id, name, problem in absent:
        log(f"skipping eval set {task_id} / {name}: {problem}")
    skipped = {(task_id, name) for task_id, name, _ in absent}
    # A task none of whose eval sets can be read is not fitted at all.
    kept = [task for task in kept if not all((task.id, e.name) in skipped for e in task.eval_sets)]
    if not kept:
        raise UserError("no eval set has its data prepared; see `vtabkit data status`")
    return kept, skipped


def _environment(model: Model) -> dict[str, Any]:
    """Versions, host and code identity that a reader of a record may need to reproduce it."""
    import importlib.metadata as package_metadata

    import jax

    versions = {}
    packages = ["jax", "flax", "optax", "numpy", "tensorflow-datasets", "tensorflow", "tensorflow-cpu"]
    if model.metadata.get("framework") == "torch":
        packages += ["torch", "timm", "transformers", "open_clip_torch"]
    for package in packages:
        try:
            versions[package] = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            pass
    device = jax.devices()[0]
    return {"vtabkit": __version__, "versions": versions, "python": platform.python_version(),
            "backend": jax.default_backend(), "devices": jax.device_count(), "processes": jax.process_count(),
            "device_kind": getattr(device, "device_kind", str(device)), "cpu": _cpu_model(),
            "host": platform.node(), "code": _code_identity()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _code_identity() -> dict[str, Any] | None:
    """The git commit of the vtabkit checkout this runs from (and whether it had local
    changes); None for an installed package."""
    import subprocess

    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"git_commit": commit, "dirty": bool(status.strip())}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One fitted head: a (task, regime, protocol, setting, seed) with its merged settings."""

    task: tasks.Task
    regime: regimes.Regime
    protocol: str
    config: dict[str, Any] = dataclasses.field(hash=False, compare=False)

    def key(self, model: Model, eval_set: str) -> tuple:
        return results.cell_key({"model_fingerprint": model.fingerprint, "task": self.task.id,
                                 "task_hash": self.task.hash, "regime": self.regime.name,
                                 "protocol": self.protocol, "setting": self.config["setting"],
                                 "seed": self.config["seed"], "config_hash": results.config_hash(self.config),
                                 "eval_set": eval_set})

    def cell_id(self, model: Model) -> str:
        # Keyed by the whole cell, so another model or setting never resumes this one's state.
        return hashlib.sha256(repr(self.key(model, "")).encode()).hexdigest()[:12]


def _images_key(view: tasks.View) -> tuple:
    return tuple(sorted(view.images_facts().items()))


class Views:
    """The data views of a run: each view's images go through the model at most once, and
    views that read the same images (other labels) share those features.

    Features come lazily: a fine-tune-only run never computes them. Arrays are dropped from
    memory once no pending cell needs them any more.
    """

    def __init__(self, model: Model, config: RunConfig, cache: Path | None, uses: Counter):
        self.model, self.config, self.cache = model, config, cache
        self.uses = uses  # pending uses per view
        self._features: dict[tuple, np.ndarray] = {}
        self._targets: dict[tasks.View, tuple[np.ndarray, np.ndarray]] = {}
        self._join_keys: dict[tuple[tasks.View, str], np.ndarray] = {}
        self.from_cache: set[tuple] = set()  # image keys whose features were read, not computed
        self.extract_seconds = 0.0  # extraction time not yet charged to a record

    def features(self, view: tasks.View) -> features.ViewData:
        key = _images_key(view)
        if key not in self._features:
            started = time.perf_counter()
            known = features.load_or_compute(self.model, view, data_dir=self.config.data_dir,
                                             cache_dir=self.cache, batch_size=self.config.batch_size,
                                             progress=self.config.progress)
            self.extract_seconds += time.perf_counter() - started
            self._features[key] = known.features
            self._targets.setdefault(view, (known.targets, known.ids))
            if known.from_cache:
                self.from_cache.add(key)
        known = self.targets(view)
        return features.ViewData(self._features[key], known.targets, known.ids)

    def targets(self, view: tasks.View) -> features.ViewData:
        if view not in self._targets:
            self._targets[view] = features.load_targets(view, data_dir=self.config.data_dir, cache_dir=self.cache)
        targets, ids = self._targets[view]
        return features.ViewData(None, targets, ids)

    def join_keys(self, view: tasks.View, feature: str) -> np.ndarray:
        """The ``feature`` of each example of ``view`` as str, in its example order: the keys
        of a metadata file joined on a feature (SI-Score's image_id); read once per view."""
        if (view, feature) not in self._join_keys:
            values, ids = data.read_feature(view, self.config.data_dir, feature)
            order = {example_id: row for row, example_id in enumerate(ids)}
            self._join_keys[view, feature] = values[[order[example_id] for example_id in self.targets(view).ids]]
        return self._join_keys[view, feature]

    def release(self, view: tasks.View) -> None:
        self.uses[view] -= 1
        if self.uses[view] <= 0:
            self._targets.pop(view, None)
            key = _images_key(view)
            if not any(count > 0 and _images_key(other) == key for other, count in self.uses.items()):
                self._features.pop(key, None)

    def cached(self, view: tasks.View | None) -> bool | None:
        """Whether ``view``'s features came from the cache (None: not computed in this run)."""
        if view is None or _images_key(view) not in self._features:
            return None
        return _images_key(view) in self.from_cache

    def charge(self) -> float:
        """Extraction seconds since the last charge: each second lands in exactly one record."""
        seconds, self.extract_seconds = self.extract_seconds, 0.0
        return seconds


def _inputs(kind: str, views: Views, view: tasks.View, rows: np.ndarray | None, data_dir: str | None):
    """What a protocol of input ``kind`` gets for ``view``: ``(x, y)`` arrays or `Images`."""
    if kind == "features":
        known = views.features(view)
        x, y = known.features, known.targets
        return (x, y) if rows is None else (x[rows], y[rows])
    known = views.targets(view)
    targets = known.targets if rows is None else known.targets[rows]
    ids = known.ids if rows is None else known.ids[rows]
    return Images(view=view, targets=targets, ids=ids, data_dir=data_dir, rows=rows)


def _restricted(scores: np.ndarray, class_subset: tuple[int, ...] | None) -> np.ndarray:
    """Scores of classes outside ``class_subset`` set to -inf, so the argmax (and the softmax)
    runs over the subset only, as ImageNet-A/R are reported."""
    if class_subset is None:
        return scores
    restricted = np.full_like(scores, -np.inf, dtype=np.float32)
    columns = list(class_subset)
    restricted[:, columns] = scores[:, columns]
    return restricted


def run(config: RunConfig | None = None, log: Callable[[str], None] = print, **options: Any) -> list[dict[str, Any]]:
    """Run every pending cell; returns the records written by this call (also appended to
    ``<out>/results.jsonl``).

    Pass a `RunConfig`, or its fields as keywords: ``run(model="pixels", suite="lite",
    out="runs/lite")``; keywords next to a config replace its fields. ``log`` receives one line
    per finished cell. The output folder is checked and locked first: a second run on the same
    ``out`` raises `UserError` instead of writing the same cells twice.
    """
    config = _as_config(config, options)
    if distributed.process_count() > 1:
        return _run_processes(config, log)
    with places.run_lock(config.out):
        plan = _prepare(config, log)
        return _execute(plan, config, log, plan.pending_flags())


def _command_facts(config: RunConfig) -> dict[str, Any]:
    """What every process of a run must agree on: what is computed, not where files live."""
    paths = {"out", "data_dir", "cache_dir", "tasks_dirs", "progress", "command"}
    facts = {name: value for name, value in dataclasses.asdict(config).items() if name not in paths}
    return dict(facts, vtabkit=__version__)


def _run_processes(config: RunConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One process of a multi-process run (see `vtabkit.distributed`): process 0 holds the run
    lock and writes; the others never touch the run folder or the cache, and take the list of
    pending cells from process 0."""
    main = distributed.is_main()
    if not main:
        config, log = dataclasses.replace(config, progress=False), (lambda line: None)
    distributed.agree(_command_facts(config))  # another command: stop before reading anything
    with contextlib.ExitStack() as stack:
        plan, problem = None, None
        try:
            if main:
                stack.enter_context(places.run_lock(config.out))
            plan = _prepare(config, log, main=main)
        except UserError as error:
            problem = error
        facts = {} if plan is None else {"model_fingerprint": plan.model.fingerprint,
                                         "tasks": [(task.id, task.hash) for task in plan.chosen],
                                         "cells": len(plan.keys())}
        distributed.agree(facts if problem is None else {}, problem)
        mine = np.array(plan.pending_flags(), np.int32)
        pending = [bool(flag) for flag in distributed.broadcast(mine)]  # process 0's results file decides
        written = _execute(plan, config, log, pending)
    return written if main else []
def _as_config(config: RunConfig | None, options: dict[str, Any]) -> RunConfig:
    fields = [field.name for field in dataclasses.fields(RunConfig)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise UserError(f"run() got unknown option(s) {', '.join(unknown)}; RunConfig fields: {', '.join(fields)}")
    if config is None:
        if "model" not in options:
            raise UserError("run() needs a model, e.g. run(model='pixels', suite='lite')")
        config = RunConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    if not isinstance(config.out, Path):
        config = dataclasses.replace(config, out=Path(config.out))
    return config


def _check_places(chosen: list[tasks.Task], config: RunConfig) -> None:
    """Cache and data dir can take what this run writes, before the model is built."""
    if config.use_cache:
        places.check_writable(config.cache_dir or default_cache_dir() / "features", "--cache-dir")
    generates = any(source.is_own(dataset) and not source.is_prepared(source.open_builder(dataset, config.data_dir))
                    for task in chosen for dataset in task.datasets)
    places.check_data_dir(config.data_dir, generates)


@dataclasses.dataclass
class _Plan:
    """A checked run, before any data is read: its model, tasks, cells and the cells done."""

    chosen: list[tasks.Task]
    cells: list[Cell]
    model: Model
    done: set[tuple]
    results_path: Path
    main: bool
    compiles: compile_cache.CompileCounter
    skipped: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (task, eval set): data missing

    def keys(self) -> list[tuple]:
        """Every (cell, eval set) of the run, in run order (the same on every process)."""
        return [cell.key(self.model, e.name) for cell in self.cells for e in cell.task.eval_sets]

    def pending_flags(self) -> list[bool]:
        """For every key: still to be scored (not done, and its data not missing)."""
        return [cell.key(self.model, e.name) not in self.done and (cell.task.id, e.name) not in self.skipped
                for cell in self.cells for e in cell.task.eval_sets]


def _prepare(config: RunConfig, log: Callable[[str], None], main: bool = True) -> _Plan:
    """Every check, then the model: a mistake fails here, before any data is read.

    Only the writing process (``main``) looks at the run folder and the cache dir.
    """
    compile_cache.enable()  # before the first compile of the run
    compiles = compile_cache.CompileCounter()
    chosen, chosen_regimes, default_protocols = select_tasks(config)
    task_checks.check_tasks(chosen, config.data_dir)  # bad split strings / class counts: one line, first
    names = list(dict.fromkeys(config.protocols or default_protocols))  # each protocol once
    modules = {name: protocols.get_protocol(name) for name in names}
    unused = sorted(set(config.protocol_config) - set(names))
    if unused:
        raise UserError(f"settings given for {', '.join(unused)}, which this run does not use; "
                        f"add it to --protocol (running: {', '.join(names)})")
    settings = {name: protocols.merge_config(name, config.protocol_config.get(name)) for name in names}
    for task in chosen:
        for name in names:
            protocols.check_target(name, task.target)
    images = [name for name in names if modules[name].INPUT == "images"]
    check_model_name(config.model)  # an unknown model fails here, before any data is read
    chosen, skipped = check_data(chosen, config, log)
    results_path = Path(config.out) / results.RESULTS_FILE
    existing = results.read_records(results_path) if main else []
    results.check_writable_schema(existing, results_path)
    if main:
        _check_places(chosen, config)

    model = create_model(config.model, **config.model_args)
    if images:
        require_flax(model)  # before any data is read
    if any(modules[name].INPUT == "logits" for name in names):
        for task in chosen:
            require_head(model, task.num_classes, task.id)  # head: model without a head: one line, no data read
    cells = [Cell(task, regime, name, cell) for task in chosen for regime in chosen_regimes
             for name in names for cell in modules[name].cells(settings[name])]
    return _Plan(chosen, cells, model, results.done_cells(existing), results_path, main, compiles, skipped)


def _execute(plan: _Plan, config: RunConfig, log: Callable[[str], None], pending_flags: list[bool]) -> list[dict[str, Any]]:
    """Run the cells whose (cell, eval set) flags say pending; returns the records written."""
    model, flags = plan.model, iter(pending_flags)
    pending = [(cell, [e for e in cell.task.eval_sets if next(flags)]) for cell in plan.cells]
    pending = [(cell, eval_sets) for cell, eval_sets in pending if eval_sets]
    for task in plan.chosen:
        if not any(cell.task is task for cell, _ in pending):
            log(f"{task.id}: all cells already in {plan.results_path}")
    uses: Counter = Counter()  # views read through the model's features
    logit_uses: Counter = Counter()  # views read through the model's own classifier (model_head)
    heads = _SharedHeads()
    for cell, eval_sets in pending:
        module = protocols.get_protocol(cell.protocol)
        if module.INPUT == "logits":
            logit_uses.update([e.view for e in eval_sets])
            continue
        train_view, val_view = cell.task.regime_views(cell.regime)
        if heads.expect(_head_key(cell, module, train_view, val_view)):  # the first cell of this head reads them
            uses.update([v for v in (train_view, val_view) if v is not None])
        uses.update([e.view for e in eval_sets])
    # Only the writing process reads or writes the cache (the others get features by broadcast).
    cache = None if not (config.use_cache and plan.main) else Path(config.cache_dir or default_cache_dir() / "features")
    if cache is not None and (note := cache_note(model)):
        log(note)
    views = Views(model, config, cache, uses)
    logit_views = Views(logits_model(model), config, cache, logit_uses) if logit_uses else None
    environment = _environment(model)
    written = []
    for cell, eval_sets in pending:
        scored = logit_views if protocols.get_protocol(cell.protocol).INPUT == "logits" else views
        written += _run_cell(cell, eval_sets, model, scored, environment, config, log, plan.compiles, plan.main,
                             heads)
    return written


@dataclasses.dataclass
class _Fitted:
    """A fitted head and the facts its records carry, kept for the other cells that share it."""

    head: Any
    details: dict[str, Any]
    fit_seconds: float
    split_ids: dict[str, str]
    counts: dict[str, int]
    task: str
    cached: dict[str, bool | None]


class _SharedHeads:
    """Heads fitted once per run and scored by every cell with the same fit (same protocol,
    settings, seed, regime, train and val data): the robustness tasks all fit on ImageNet, so
    ImageNet-C's 19 tasks, V2, A, R, ... share one linear probe. Fits of frozen features are
    deterministic, so sharing changes no number; a head is dropped after its last cell."""

    def __init__(self) -> None:
        self.pending: Counter = Counter()
        self.fitted: dict[tuple, _Fitted] = {}

    def expect(self, key: tuple | None) -> bool:
        """Count one more cell of ``key``; True for the first (the one that fits)."""
        if key is None:
            return True
        self.pending[key] += 1
        return self.pending[key] == 1

    def get(self, key: tuple | None) -> _Fitted | None:
        return None if key is None else self.fitted.get(key)

    def done(self, key: tuple | None, fitted: _Fitted) -> None:
        if key is None:
            return
        self.pending[key] -= 1
        if self.pending[key] > 0:
            self.fitted[key] = fitted
        else:
            self.fitted.pop(key, None)


def _head_key(cell: Cell, module: Any, train_view: tasks.View, val_view: tasks.View | None) -> tuple | None:
    """What determines a frozen-feature head (None: never shared, e.g. fine-tuning)."""
    if module.INPUT != "features":
        return None
    return (cell.protocol, results.config_hash(cell.config), cell.config["setting"], cell.config["seed"],
            cell.regime, train_view, val_view, cell.task.num_classes, cell.task.target)


def _run_cell(cell: Cell, eval_sets: list[tasks.EvalSet], model: Model, views: Views,
              environment: dict[str, Any], config: RunConfig, log: Callable[[str], None],
              compiles: compile_cache.CompileCounter, main: bool = True,
              heads: _SharedHeads | None = None) -> list[dict[str, Any]]:
    task, module, out = cell.task, protocols.get_protocol(cell.protocol), Path(config.out)
    heads = heads or _SharedHeads()
    own_head = module.INPUT == "logits"  # the model's classifier: no train/val data at all
    train_view, val_view = (None, None) if own_head else task.regime_views(cell.regime)
    key = None if own_head else _head_key(cell, module, train_view, val_view)
    shared = heads.get(key)
    read = not own_head and shared is None  # this cell reads train/val (and fits)
    eval_kind = "images" if module.INPUT == "images" else "features"
    train_in = val_in = None
    train_ids, val_ids = np.zeros(0, str), None
    if read:
        train_known = views.features(train_view) if module.INPUT == "features" else views.targets(train_view)
        seed = int(cell.config["seed"])
        rows = cell.regime.train_indices(train_known.targets, seed)
        val_rows = cell.regime.val_indices(train_known.targets, seed)  # per_class:K+V: val drawn from train
        train_ids = train_known.ids if rows is None else train_known.ids[rows]
        train_in = _inputs(module.INPUT, views, train_view, rows, config.data_dir)
        if val_view is not None:
            val_in = _inputs(module.INPUT, views, val_view, val_rows, config.data_dir)
            val_ids = views.targets(val_view).ids if val_rows is None else views.targets(val_view).ids[val_rows]
    if not main:
        # Another process of a multi-process run: it takes part in reading (and gathering) the
        # same views in the same order as process 0, which alone scores and writes. A protocol
        # on images trains data-parallel over every process's devices, so it fits here too.
        head = None
        if module.INPUT == "images":
            head, _ = module.fit(train_in, val_in, num_classes=task.num_classes, target=task.target,
                                 config=cell.config, context=FitContext(model=model, log=lambda line: None))
        for eval_set in eval_sets:
            eval_in = _inputs(eval_kind, views, eval_set.view, None, config.data_dir)
            if head is not None:
                module.predict(head, eval_in)
        heads.done(key, shared or _Fitted(None, {}, 0.0, {}, {}, task.id, {}))
        _release(views, train_view if read else None, val_view if read else None, eval_sets)
        return []
    work_dir = out / "work" / f"{task.id}-{cell.protocol}-{cell.cell_id(model)}"
    if shared is None:
        started = time.perf_counter()
        head, details = module.fit(train_in, val_in, num_classes=task.num_classes, target=task.target,
                                   config=cell.config, context=FitContext(model=model, work_dir=work_dir, log=log,
                                                                          progress=config.progress))
        split_ids = {} if own_head else {"train": source.ids_hash(train_ids)}
        if val_ids is not None:
            split_ids["val"] = source.ids_hash(val_ids)
        shared = _Fitted(head, details, time.perf_counter() - started, split_ids,
                         {"train": int(len(train_ids)), "val": 0 if val_ids is None else int(len(val_ids))},
                         task.id, {"train": views.cached(train_view), "val": views.cached(val_view)})
        fitted_here = True
    else:
        fitted_here = False
        log(f"{task.id}: scoring the {cell.protocol} head fitted for {shared.task} (same data and settings)")
    head = shared.head
    dataset_view = task.view(next(iter(task.splits))) if train_view is None else train_view
    base = {"schema_version": results.SCHEMA_VERSION, "model": model.name,
            "model_fingerprint": model.fingerprint, "model_metadata": model.metadata,
            "preprocessing": model.preprocessing(), "task": task.id, "family": task.family,
            "task_hash": task.hash, "dataset": task.tfds_name,
            "dataset_version": data.prepared_version(dataset_view, config.data_dir), "regime": cell.regime.name,
            "splits": {"train": train_view.split if train_view else None, "val": val_view.split if val_view else None},
            "split_ids": shared.split_ids, "protocol": cell.protocol,
            "head": getattr(module, "HEAD", cell.protocol), "setting": cell.config["setting"],
            "seed": cell.config["seed"], "protocol_config": cell.config,
            "config_hash": results.config_hash(cell.config), "details": shared.details,
            "vtabkit_version": __version__, "environment": environment, "command": config.command}
    if not fitted_here:
        base["head_fitted_for"] = shared.task
    written = []
    for eval_set in eval_sets:
        started = time.perf_counter()
        eval_in = _inputs(eval_kind, views, eval_set.view, None, config.data_dir)
        if eval_kind == "features":
            eval_in = eval_in[0]  # predict takes the features (or the logits) alone
        known = views.targets(eval_set.view)
        scores = _restricted(np.asarray(module.predict(head, eval_in), np.float32), eval_set.class_subset)
        predict_seconds = time.perf_counter() - started
        record = _score(base, eval_set, scores, known, cell, model, config, out, views, log)
        record["features_from_cache"] = {**shared.cached, "eval": views.cached(eval_set.view)}
        record["num_examples"] = {**shared.counts, "eval": int(len(known.ids))}
        # Shared work is charged once: extraction to the record that triggered it, the fit to
        # the first record of the cell that fitted it, compilations to the record they happened
        # before (so the records of a run sum to the run's compilations).
        record["timings"] = {"features_s": views.charge(),
                             "fit_s": shared.fit_seconds if fitted_here and not written else 0.0,
                             "predict_s": predict_seconds, "metrics_s": record.pop("metrics_s"),
                             **compiles.take()}
        record["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        results.append_record(out / results.RESULTS_FILE, record)
        written.append(record)
        primary = record["metrics"].get(eval_set.primary_metric)  # absent: its metadata was missing
        shown = "n/a" if primary is None else f"{100 * primary:.1f}%"
        log(f"{task.id:20s} {eval_set.name:10s} {cell.protocol:9s} {cell.config['setting']:10s} "
            f"seed {cell.config['seed']}: {eval_set.primary_metric} {shown}")
    if work_dir.exists():  # only once every record of the cell is safe on disk
        shutil.rmtree(work_dir, ignore_errors=True)
        if not any(work_dir.parent.iterdir()):
            work_dir.parent.rmdir()
    heads.done(key, shared)
    _release(views, train_view if read else None, val_view if read else None, eval_sets)
    return written


def _release(views: Views, train_view: tasks.View, val_view: tasks.View | None,
             eval_sets: list[tasks.EvalSet]) -> None:
    for view in (train_view, val_view, *[e.view for e in eval_sets]):
        if view is not None:
            views.release(view)


def _score(base: dict[str, Any], eval_set: tasks.EvalSet, scores: np.ndarray, known: features.ViewData,
           cell: Cell, model: Model, config: RunConfig, out: Path, views: Views,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """The record of one eval set: metrics from the scores, predictions kept beside it.

    A metadata file that is not there is one line: the grouped metrics are left out of the
    record (which says so) and every other metric is still scored.
    """
    started = time.perf_counter()
    groups, eval_facts = None, {"name": eval_set.name, "main": eval_set is cell.task.eval_sets[0],
                                "position": cell.task.eval_sets.index(eval_set),  # the report keeps the task's order
                                "dataset": eval_set.view.dataset,
                                "split": eval_set.view.split, "target": eval_set.view.target,
                                "class_subset": list(eval_set.class_subset) if eval_set.class_subset else None}
    specs, keys = list(eval_set.metrics), None
    if eval_set.metadata is not None:
        path, feature = eval_set.metadata_path(config.data_dir), eval_set.metadata.get("id_feature")
        eval_facts["metadata"] = {"path": str(path), "id_column": eval_set.metadata["id_column"],
                                  **({"id_feature": feature} if feature else {})}
        if path.is_file():
            keys = views.join_keys(eval_set.view, feature) if feature else known.ids
            groups, unused = metadata.join(path, eval_set.metadata["id_column"], keys,
                                           metrics.metadata_columns(specs))
            eval_facts["metadata"].update(sha256=metadata.file_sha256(path), unused_rows=unused)
        else:
            grouped = [spec for spec in specs if metrics.spec_columns(spec)]
            specs = [spec for spec in specs if not metrics.spec_columns(spec)]
            eval_facts["metadata"]["missing"] = True
            log(f"{cell.task.id} / {eval_set.name}: metadata file {path} is missing, so "
                f"{', '.join(grouped) or 'no metric'} left out (the others are scored); put the CSV there "
                f"(`vtabkit data prepare --tasks {cell.task.id}` or by hand) and re-run with a new --out")
    values, by_group = metrics.compute(specs, scores, known.targets, target_kind=eval_set.view.target,
                                       metadata=groups) if specs else ({}, {})
    stored = predictions.compact(known.ids, scores, known.targets, target_kind=eval_set.view.target)
    if keys is not None and eval_set.metadata.get("id_feature"):
        stored["metadata_keys"] = np.asarray(keys).astype(str)  # what the join used, for --verify
    name = f"{cell.task.id}-{cell.protocol}-{cell.config['setting']}-s{cell.config['seed']}-{eval_set.name}"
    relative = Path(results.PREDICTIONS_DIR) / f"{name}-{cell.cell_id(model)}.npz"
    digest = predictions.save(out / relative, stored)
    record = dict(base, eval_set=eval_set.name, eval=eval_facts, metrics=values,
                  primary_metric=eval_set.primary_metric,
                  predictions={"path": relative.as_posix(), "sha256": digest})
    if by_group:
        record["metrics_by_group"] = by_group
    record["metrics_s"] = time.perf_counter() - started
    return record
