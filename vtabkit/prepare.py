"""Dataset status and preparation behind `vtabkit data status|prepare` (and `vtabkit run`'s checks).

Everything here talks to TFDS directly: a task names a TFDS builder with a pinned version
(``clevr:3.1.0``); a dataset is *prepared* when TFDS has written that version under the data dir.
vtabkit's own builders (``vtabkit_*``) generate their data and never need a download. Manual
datasets (RESISC45, Kaggle retinopathy) need files placed in ``<data_dir>/downloads/manual/``
first; ``prepare_datasets`` prints the exact steps and carries on with the others.

Mistakes the user can fix come back as one-line `UserError`s (status reports them as
``problem`` instead of raising, so one broken task does not hide the others).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from vtabkit import downloads, metadata, quiet, source
from vtabkit.errors import UserError
from vtabkit.source import absolute_ranges, data_root, first_line, is_prepared, split_sizes
from vtabkit.tasks import Task


# Modules TFDS builders import lazily while *preparing* (reading needs none of them). Checked
# before a download starts, so nobody downloads 30 GB to learn that OpenCV is missing.
_PREPARE_MODULES: dict[str, tuple[str, ...]] = {
    "sun397": ("cv2",), "diabetic_retinopathy_detection": ("cv2",), "kitti": ("cv2",),
    "oxford_flowers102": ("scipy",), "svhn_cropped": ("scipy",),
    "patch_camelyon": ("h5py",), "dsprites": ("h5py",), "so2sat": ("h5py",),
    "bigearthnet": ("apache_beam",),  # an Apache Beam builder: TFDS runs it on Beam's DirectRunner
    "imagenet2012_corrupted": ("cv2", "skimage", "scipy"),  # TFDS computes the corruptions itself
}
_PIP_NAMES = {"cv2": "opencv-python-headless", "skimage": "scikit-image", "apache_beam": "apache-beam"}
# Datasets big enough that running out of disk half-way is the likely failure: checked before a
# download starts. Needed = the builder's registered download sizes (its checksums file) not yet
# local, plus this allowance for the built TFDS dataset (an estimate, not measured here: BigEarthNet
# reads its 65 GiB archive without extracting it and writes 590,326 encoded 120x120 RGB patches).
GiB = 1024 ** 3
_BUILD_BYTES: dict[str, int] = {"bigearthnet": 20 * GiB}
# Datasets whose TFDS download is automatic on paper but breaks in practice: treated like manual
# downloads (steps in the task's `manual_download`); TFDS picks the files up from the manual folder.
_EFFECTIVELY_MANUAL: dict[str, tuple[str, ...]] = {"so2sat": ("training.h5", "validation.h5")}
# What the TFDS builders read from the manual folder (from their `_split_generators`).
_MANUAL_ENTRIES: dict[str, tuple[str, ...]] = {
    "resisc45": ("NWPU-RESISC45",),
    "diabetic_retinopathy_detection": ("train", "test", "sample", "trainLabels.csv"),
    "imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
    "imagenet2012_real": ("ILSVRC2012_img_val.tar",),
    "imagenet2012_corrupted": ("ILSVRC2012_img_val.tar",),
}

# Outcomes of `prepare_datasets`, per dataset.
READY = "ready"                   # was already prepared
PREPARED = "prepared"             # prepared (downloaded or generated) now
MANUAL = "manual download needed"
NEEDS_PACKAGE = "missing package"
NO_SPACE = "not enough disk space"
UNAVAILABLE = "unavailable"       # this TFDS cannot produce the pinned dataset version
OFFLINE = "offline"               # the download host cannot be reached from this machine
FAILED = "failed"
_GOOD = (READY, PREPARED)


def _base_name(task: Task, dataset: str | None = None) -> str:
    """TFDS builder name without config or version (``eurosat/rgb`` → ``eurosat``) of ``dataset``
    (default: the task's own)."""
    return (dataset or task.tfds_name).split(":")[0].split("/")[0]


def _is_own(task: Task) -> bool:
    return source.is_own(task.tfds_name)


def open_builder(task: Task, data_dir: str | Path | None):
    """The TFDS builder of ``task``'s pinned dataset (prepared or not); errors name the task."""
    return source.open_builder(task.tfds_name, data_dir, f"task {task.id!r}")


def _data_dir_flag(data_dir: str | Path | None) -> str:
    return f" --data-dir {data_dir}" if data_dir else ""


def generation_problem(builder) -> str | None:
    """Why the installed TFDS cannot *generate* this version (it may still read it), or None.

    TFDS only generates a builder's canonical version and its newest supported one; older pins
    (e.g. ``kitti:3.1.0`` under TFDS 4.9, which generates only 3.3.0) must come prepared.
    """
    import tensorflow_datasets as tfds

    version = builder.version
    canonical = getattr(builder, "canonical_version", None)
    versions = list(getattr(builder, "versions", []) or [])
    if getattr(version, "tfds_version_to_prepare", None):
        return (f"{builder.name}:{version} can only be generated with tensorflow-datasets "
                f"{version.tfds_version_to_prepare} or older")
    if canonical is None or not versions:
        return None
    generatable = sorted({str(canonical), str(max(versions))})
    if str(version) not in generatable:
        return (f"tensorflow-datasets {tfds.__version__} can read {builder.name}:{version} but only "
                f"generates {', '.join(generatable)}")
    return None


def manual_dir(builder) -> Path:
    """Where TFDS looks for manually downloaded files: ``<data_dir>/downloads/manual``."""
    return data_root(builder) / "downloads" / "manual"


def needs_manual_download(builder) -> bool:
    """Whether the builder needs files placed by hand (TFDS says so, or its download is
    effectively manual, like So2Sat's FTP server)."""
    name = str(getattr(builder, "name", ""))
    return bool(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)) or name in _EFFECTIVELY_MANUAL


def missing_manual_files(task: Task, builder, dataset: str | None = None) -> list[str]:
    """Entries of the manual folder that the builder will read but that are not there yet."""
    folder = manual_dir(builder)
    expected = _MANUAL_ENTRIES.get(_base_name(task, dataset)) or _EFFECTIVELY_MANUAL.get(_base_name(task, dataset))
    if expected is None:  # a builder we have no list for: TFDS itself only needs a non-empty folder
        return [] if folder.is_dir() and any(folder.iterdir()) else [str(folder)]
    return [str(folder / entry) for entry in expected if not (folder / entry).exists()]


def manual_instructions(task: Task, builder) -> str:
    """The task's manual steps with the real data dir filled in (TFDS's text as a fallback)."""
    text = task.manual_download or " ".join(str(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", "")).split())
    return text.replace("<data_dir>", str(data_root(builder)))


def missing_modules(task: Task, dataset: str | None = None) -> list[str]:
    """Python modules that preparing ``task``'s dataset (or ``dataset``) imports but that are not installed."""
    return [name for name in _PREPARE_MODULES.get(_base_name(task, dataset), ())
            if importlib.util.find_spec(name) is None]


def _pip_command(modules: list[str]) -> str:
    return "pip install " + " ".join(_PIP_NAMES.get(name, name) for name in modules)


def _gib(size: float) -> str:
    return f"{size / GiB:.1f} GiB"


def _existing_parent(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (the data dir may not exist yet)."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_needs(task: Task, builder) -> tuple[int, int] | None:
    """``(bytes needed, bytes free)`` in the data dir for a dataset checked for space, else None.

    Needed: the registered download sizes of the files not yet local (manual folder or TFDS's
    download cache) plus the allowance for the built dataset (`_BUILD_BYTES`).
    """
    base = _base_name(task)
    if base not in _BUILD_BYTES:
        return None
    root = data_root(builder)
    try:
        infos = builder.url_infos or {}
    except Exception:  # no checksums file: only the build allowance is known
        infos = {}
    pending = set(downloads.files_to_fetch(builder, manual_dir(builder), root / "downloads"))
    needed = _BUILD_BYTES[base] + sum(int(getattr(info, "size", 0) or 0) for url, info in infos.items() if url in pending)
    return needed, shutil.disk_usage(_existing_parent(root)).free


def space_problem(task: Task, builder) -> str | None:
    """One line when the data dir has less free space than preparing needs, else None."""
    needs = disk_needs(task, builder)
    if needs is None or needs[1] >= needs[0]:
        return None
    needed, free = needs
    return (f"preparing {task.tfds_name} needs about {_gib(needed)} free in {data_root(builder)} "
            f"(download plus the built dataset), only {_gib(free)} free; free space or pass "
            "--data-dir on a bigger disk (or one where it is already prepared)")


def requirements_line(task: Task, builder) -> str | None:
    """What preparing a big dataset needs, said before it starts (None for the others)."""
    needs = disk_needs(task, builder)
    if needs is None:
        return None
    modules = _PREPARE_MODULES.get(_base_name(task), ())
    have = ", ".join(f"{_PIP_NAMES.get(m, m)} ({'installed' if importlib.util.find_spec(m) else 'missing'})"
                     for m in modules)
    return (f"{task.tfds_name} needs {have or 'no extra package'} and about {_gib(needs[0])} free disk "
            f"in {data_root(builder)} ({_gib(needs[1])} free); if it is already prepared elsewhere, "
            "pass that TFDS data dir with --data-dir instead")


def _other_versions(builder) -> list[str]:
    """Other versions of the same dataset/config already prepared in the data dir."""
    folder = Path(builder.data_path).parent
    if not folder.is_dir():
        return []
    return sorted(child.name for child in folder.iterdir()
                  if child.name != str(builder.version) and (child / "dataset_info.json").exists())


def _fix(task: Task, builder, data_dir: str | Path | None) -> str:
    """One line: what to do so that ``task``'s unprepared dataset becomes readable."""
    prepare = f"`vtabkit data prepare --tasks {task.id}{_data_dir_flag(data_dir)}`"
    problem = generation_problem(builder)
    if problem:
        found = _other_versions(builder)
        also = f" (found {', '.join(found)} in the data dir, which the task does not read)" if found else ""
        return (f"{problem}{also}; copy a {task.dataset_name}/{task.dataset_version} folder "
                f"prepared elsewhere (or with a tensorflow-datasets release that generates it) "
                f"into {data_root(builder)}")
    if needs_manual_download(builder):
        return f"manual download: {manual_instructions(task, builder)}"
    modules = missing_modules(task)
    step = f"run `{_pip_command(modules)}`, then {prepare}" if modules else f"run {prepare}"
    needs = disk_needs(task, builder)
    if needs:
        return f"{step} (about {_gib(needs[0])} of disk), or pass --data-dir DIR where it is already prepared"
    return step


def missing_fix(task: Task, data_dir: str | Path | None) -> str:
    """One line: what to do so that ``task``'s dataset becomes readable."""
    return _fix(task, open_builder(task, data_dir), data_dir)


def missing_dataset_fix(dataset: str, data_dir: str | Path | None, task: Task | None = None) -> str:
    """One line for a pinned dataset that is not a task's own (e.g. an eval set's); with the
    ``task`` that reads it, that task's manual steps and prepare command."""
    builder = source.open_builder(dataset, data_dir)
    problem = generation_problem(builder)
    if problem:
        return f"{problem}; copy a prepared {dataset} into {data_root(builder)}"
    if needs_manual_download(builder):
        if task is not None and task.manual_download:
            steps = manual_instructions(task, builder)
        else:
            steps = " ".join(str(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or
                                 f"place {', '.join(_EFFECTIVELY_MANUAL.get(builder.name, ()))} in {manual_dir(builder)}").split())
        return f"{dataset} needs a manual download: {steps}"
    named = task.id if task is not None else "TASK"
    return (f"{dataset} is not prepared in {data_root(builder)}; run `vtabkit data prepare --tasks "
            f"{named}{_data_dir_flag(data_dir)}`" + ("" if task is not None else " for a task that reads it"))


def dataset_status(task: Task, data_dir: str | Path | None) -> dict[str, Any]:
    """What is known about ``task``'s dataset in ``data_dir``; never raises for user mistakes.

    Keys: ``task``, ``dataset`` (pinned ``name:version``), ``version``, ``data_dir``,
    ``prepared``, ``own_builder`` (generated by vtabkit, no download), ``manual_download``,
    ``other_versions`` (other prepared versions found), ``tfds_package`` (installed
    tensorflow-datasets), ``tfds_splits`` (examples per TFDS split, when prepared),
    ``task_splits`` (examples per task split, None when unknown), ``problem`` (one line or
    None) and ``fix`` (one line or None).
    """
    tfds = source.tfds()
    status: dict[str, Any] = {
        "task": task.id, "dataset": task.tfds_name, "version": task.dataset_version,
        "data_dir": str(data_dir) if data_dir else None, "prepared": False,
        "own_builder": _is_own(task), "manual_download": bool(task.manual_download),
        "other_versions": [], "tfds_package": tfds.__version__, "tfds_splits": {},
        "task_splits": {name: None for name in task.splits}, "problem": None, "fix": None,
    }
    try:
        builder = open_builder(task, data_dir)
    except UserError as error:
        status["problem"] = str(error)
        return status
    status["data_dir"] = str(data_root(builder))
    status["manual_download"] = status["manual_download"] or needs_manual_download(builder)
    status["other_versions"] = _other_versions(builder)
    if not is_prepared(builder):
        if status["own_builder"]:
            status["fix"] = "none needed: generated on first use (or by `vtabkit data prepare`)"
        else:
            status["problem"] = f"{task.tfds_name} is not prepared in {data_root(builder)}"
            status["fix"] = _fix(task, builder, data_dir)
        return status
    status["prepared"] = True
    status["version"] = str(builder.info.version)
    status["tfds_splits"] = sizes = split_sizes(builder)
    for name, split in task.splits.items():
        try:
            status["task_splits"][name] = sum(end - start for _, start, end in absolute_ranges(split, sizes))
        except UserError as error:
            status["problem"] = f"task split {name!r}: {error}"
    return status


def eval_dataset_problem(task: Task, dataset: str, data_dir: str | Path | None) -> str | None:
    """None when ``dataset`` (one of ``task``'s eval sets') can be read, else the one-line fix."""
    try:
        builder = source.open_builder(dataset, data_dir, f"task {task.id!r}")
    except UserError as error:
        return str(error)
    if is_prepared(builder) or source.is_own(dataset):
        return None
    return missing_dataset_fix(dataset, data_dir, task)


def missing_datasets(tasks: Iterable[Task], data_dir: str | Path | None) -> list[tuple[Task, str]]:
    """The tasks whose own data (what the head is fitted on) cannot be read yet, each with the
    one-line fix. Eval sets on other datasets: `missing_eval_sets`."""
    missing = []
    for task in tasks:
        status = dataset_status(task, data_dir)
        if not (status["prepared"] or (status["own_builder"] and status["problem"] is None)):
            missing.append((task, status["fix"] or status["problem"]))
    return missing


def missing_eval_sets(task: Task, data_dir: str | Path | None) -> list[tuple[str, str]]:
    """``(eval set name, one-line fix)`` for each eval set of ``task`` on another dataset that
    cannot be read yet (each dataset is checked once)."""
    problems = {dataset: eval_dataset_problem(task, dataset, data_dir) for dataset in task.datasets[1:]}
    return [(e.name, problems[e.view.dataset]) for e in task.eval_sets if problems.get(e.view.dataset)]


@dataclasses.dataclass
class PrepareSummary:
    """Outcome per dataset (``name:version``): ``(status, detail)``; status is one of this
    module's READY, PREPARED, MANUAL, NEEDS_PACKAGE, NO_SPACE, UNAVAILABLE, OFFLINE, FAILED."""

    outcomes: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(status in _GOOD for status, _ in self.outcomes.values())

    def count(self, status: str) -> int:
        return sum(1 for state, _ in self.outcomes.values() if state == status)

    def lines(self) -> list[str]:
        width = max((len(name) for name in self.outcomes), default=0)
        return [f"{name:{width}s}  {status}{': ' + detail if detail else ''}"
                for name, (status, detail) in self.outcomes.items()]


def _prepare_one(task: Task, data_dir: str | Path | None, log: Callable[[str], None],
                 dataset: str | None = None) -> tuple[str, str]:
    """Prepare one dataset (``dataset``, default the task's own, via the first task that names
    it); returns ``(status, detail)``."""
    tfds = source.tfds()
    dataset = dataset or task.tfds_name
    own = source.is_own(dataset)
    try:
        builder = source.open_builder(dataset, data_dir, f"task {task.id!r}")
    except UserError as error:
        return FAILED, str(error)
    if is_prepared(builder):
        return READY, ""
    if not own:
        problem = generation_problem(builder)
        if problem:
            return UNAVAILABLE, (_fix(task, builder, data_dir) if dataset == task.tfds_name
                                 else missing_dataset_fix(dataset, data_dir, task))
        if needs_manual_download(builder):  # the long step first: it is what the user must do
            absent = missing_manual_files(task, builder, dataset)
            if absent:
                log(f"{dataset}: manual download needed; missing {', '.join(absent)}")
                log(f"  {manual_instructions(task, builder)}")
                return MANUAL, f"see the steps above; missing {', '.join(absent)}"
        needs = requirements_line(task, builder)
        if needs:  # a long build: say what it takes before anything starts
            log(needs)
        modules = missing_modules(task, dataset)
        if modules:
            return NEEDS_PACKAGE, f"preparing {dataset} needs `{_pip_command(modules)}`"
        short = space_problem(task, builder)
        if short:
            return NO_SPACE, short
        blocked = downloads.unreachable(builder, manual_dir(builder), data_root(builder) / "downloads")
        if blocked:  # in seconds, instead of minutes of TFDS retries
            return OFFLINE, offline_fix(task, builder, data_dir, blocked)
    log(f"{dataset}: {'generating' if own else 'downloading and preparing'} "
        f"into {data_root(builder)} ...")
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir(builder)))
    try:
        if own:
            quiet.prepare_silently(builder, download_config=config)
        else:
            builder.download_and_prepare(download_config=config)
    except Exception as error:  # network, disk, corrupt archive...: report it and go on
        if downloads.is_connection_error(error):
            reason = f"{type(error).__name__}: {first_line(error)}"
            urls = tuple(downloads.files_to_fetch(builder, manual_dir(builder), data_root(builder) / "downloads"))
            return OFFLINE, offline_fix(task, builder, data_dir, downloads.Unreachable(urls, (), reason))
        return FAILED, f"{type(error).__name__}: {first_line(error)}"
    return PREPARED, ""


def offline_fix(task: Task, builder, data_dir: str | Path | None, blocked: downloads.Unreachable) -> str:
    """One line: the download cannot happen here, and the two ways round it."""
    root = data_root(builder)
    where = f"cannot reach {', '.join(blocked.hosts)}" if blocked.hosts else "the download failed"
    shown = ", ".join(blocked.urls[:3]) + (f" and {len(blocked.urls) - 3} more" if len(blocked.urls) > 3 else "")
    by_hand = (f"; or download {shown} by hand into {manual_dir(builder)} (same file names) and run this "
               "command again") if blocked.urls else ""
    return (f"{where} ({blocked.reason}); run `vtabkit data prepare --tasks {task.id}` on a machine "
            f"with internet, then copy the {task.dataset_name.split('/')[0]} folder of its data dir "
            f"into {root}{by_hand}")


def prepare_datasets(tasks: Iterable[Task], data_dir: str | Path | None,
                     log: Callable[[str], None] = print) -> PrepareSummary:
    """Download and prepare every distinct dataset that ``tasks`` read, carrying on past failures.

    Manual datasets whose files are not in place get their exact steps logged and are skipped.
    The summary (also logged at the end) says what happened to each dataset.
    """
    summary = PrepareSummary()
    firsts: dict[str, Task] = {}
    for task in tasks:
        for dataset in task.datasets:  # its own, then its eval sets' (ReaL, ImageNet-C, ...)
            firsts.setdefault(dataset, task)
    for name, task in firsts.items():
        status, detail = _prepare_one(task, data_dir, log, name)
        summary.outcomes[name] = (status, detail)
        if status != MANUAL:  # manual steps were logged in full already
            log(f"{name}: {status}{': ' + detail if detail else ''}")
    good = sum(summary.count(status) for status in _GOOD)
    log(f"summary: {good} of {len(summary.outcomes)} dataset(s) ready")
    for line in summary.lines():
        log(f"  {line}")
    return summary


def _ids_only_decoders(features) -> Any:
    """Decoders that parse as little as possible: one scalar feature (TFDS cannot parse none),
    or, failing that, every feature left undecoded."""
    import tensorflow_datasets as tfds

    for name, feature in features.items():
        if getattr(feature, "shape", None) == () and not isinstance(feature, tfds.features.Image):
            return tfds.decode.PartialDecoding({name: feature})
    return {name: tfds.decode.SkipDecoding() for name in features.keys()}


def split_ids_hash(task: Task, split_name: str, data_dir: str | Path | None) -> str:
    """Short sha256 (16 hex digits) of the TFDS example ids that task split ``split_name`` selects.

    What is hashed: the ``tfds_id`` of every example of the split string, in TFDS index order
    (files in order, examples in file order; read with one file at a time so the order does not
    depend on read parallelism), each followed by a newline. An id names the shard file and the
    position in it (``clevr-train.tfrecord-00003-of-00016__41``); its file-format part
    (``.tfrecord``/``.array_record``) is dropped so both storage formats of the same preparation
    hash alike. Equal hashes mean the same examples in the same order of the same TFDS
    preparation. Only ids are read: images and other features stay undecoded.
    """
    if split_name not in task.splits:
        raise UserError(f"task {task.id!r} has no split {split_name!r}; "
                        f"it has {', '.join(task.splits)}")
    tfds = source.tfds()
    builder = open_builder(task, data_dir)
    if not is_prepared(builder):
        if not _is_own(task):
            raise UserError(f"task {task.id!r}: {task.tfds_name} is not prepared in "
                            f"{data_root(builder)}; {_fix(task, builder, data_dir)}")
        quiet.prepare_silently(builder)
    read_config = tfds.ReadConfig(add_tfds_id=True, try_autocache=False, interleave_cycle_length=1)
    dataset = builder.as_dataset(split=task.splits[split_name], shuffle_files=False,
                                 read_config=read_config,
                                 decoders=_ids_only_decoders(builder.info.features))
    ids = dataset.map(lambda example: example["tfds_id"]).as_numpy_iterator()
    return source.ids_hash(source.example_id(tfds_id) for tfds_id in ids)


# ----------------------------------------------------------------------------- eval-set metadata

MISSING = "missing"  # a metadata file that is not in place (and could not be fetched or copied)


def metadata_status(task: Task, data_dir: str | Path | None) -> list[tuple[str, Path, bool, str]]:
    """Per eval set of ``task`` with a metadata file: (eval set, path, present, fix line)."""
    rows = []
    for eval_set in task.eval_sets:
        if eval_set.metadata is None:
            continue
        path = eval_set.metadata_path(str(data_dir) if data_dir else None)
        rows.append((eval_set.name, path, path.is_file(), "" if path.is_file() else _metadata_fix(task, eval_set, path)))
    return rows


def _metadata_fix(task: Task, eval_set, path: Path) -> str:
    url = eval_set.metadata.get("url")
    fetch = f"run `vtabkit data prepare --tasks {task.id}` (fetches {url}), or " if url else ""
    return (f"{fetch}put the CSV at {path}, or pass `--siscore-metadata DIR` to `vtabkit data prepare` "
            f"with DIR/{path.parent.name}/{path.name}")


def _local_candidates(folder: Path, eval_set, path: Path) -> list[Path]:
    """Where a local copy may sit in ``folder``: ``<variant>/metadata.csv`` (the data-dir layout)
    or the URL's last folder (SI-Score's bucket: ``object_<variant>/metadata.csv``)."""
    candidates = [folder / path.parent.name / path.name]
    url = eval_set.metadata.get("url")
    if url:
        parts = Path(url.split("://", 1)[-1]).parts
        candidates.append(folder / Path(*parts[-2:]))
    return list(dict.fromkeys(candidates))


def prepare_metadata(tasks: Iterable[Task], data_dir: str | Path | None, local_dir: str | Path | None = None,
                     log: Callable[[str], None] = print) -> PrepareSummary:
    """Put every eval set's metadata file in place: already there, copied from ``local_dir``, or
    fetched from the URL the task declares; each file's columns are checked. Outcomes are keyed
    ``task/eval set``."""
    import shutil

    summary = PrepareSummary()
    for task in tasks:
        for eval_set in task.eval_sets:
            if eval_set.metadata is None:
                continue
            name, path = f"{task.id}/{eval_set.name}", eval_set.metadata_path(str(data_dir) if data_dir else None)
            try:
                status, detail = _place_metadata(task, eval_set, path, local_dir, shutil)
                if status in _GOOD:
                    metadata.check_columns(path, eval_set.metadata_columns())
            except UserError as error:
                status, detail = FAILED, str(error)
            summary.outcomes[name] = (status, detail)
            log(f"{name} metadata: {status}{': ' + detail if detail else ''}")
    return summary


def _place_metadata(task: Task, eval_set, path: Path, local_dir, shutil) -> tuple[str, str]:
    if local_dir is not None:
        folder = Path(local_dir).expanduser()
        for candidate in _local_candidates(folder, eval_set, path):
            if candidate.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(candidate, path)
                return PREPARED, f"copied {candidate} to {path}"
        if path.is_file():
            return READY, str(path)
        looked = " or ".join(str(c) for c in _local_candidates(folder, eval_set, path))
        return MISSING, f"no {looked}; put the file there, or at {path}"
    if path.is_file():
        return READY, str(path)
    url = eval_set.metadata.get("url")
    if not url:
        return MISSING, _metadata_fix(task, eval_set, path)
    try:
        downloads.fetch_file(url, path)
    except Exception as error:  # offline, HTTP error, full disk: say where the file goes instead
        return (OFFLINE if downloads.is_connection_error(error) else FAILED,
                f"could not fetch {url} ({type(error).__name__}: {first_line(error)}); download it by hand "
                f"to {path}, or pass --siscore-metadata DIR with DIR/{path.parent.name}/{path.name}")
    return PREPARED, f"fetched {url}"
