"""Where a run writes: checked before any work, and one run per output directory at a time.

A run writes ``results.jsonl`` under ``--out``, features under ``--cache-dir`` and, for vtabkit's
own datasets, generated data under ``--data-dir``. A place that cannot be written would
otherwise fail with a traceback after the work is done; here it is one line, first. Two runs on
one ``--out`` would each append the cells the other is computing, so a run holds an exclusive
lock on ``<out>/.vtabkit-run.lock`` (``fcntl.flock``: released by the OS when the process dies,
so a killed run never leaves a stale lock); a second run refuses at once, in one line.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from vtabkit.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".vtabkit-run.lock"
RESULTS_FILE = "results.jsonl"  # as vtabkit.results names it (places sits below results)


def writable_dir_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as a folder to write into, or None when it can.

    Tries for real (creates the folder and a temporary file in it, then removes the file):
    permission bits say nothing about read-only mounts, and root passes every ``os.access``.
    """
    folder = Path(path).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vtabkit-write-test-"):
            pass
    except OSError as error:
        return f"{folder} cannot be written ({error.strerror or type(error).__name__})"
    return None


def check_writable(path: str | Path, flag: str) -> None:
    """Raise a one-line `UserError` naming ``flag`` when ``path`` cannot be written."""
    problem = writable_dir_problem(path)
    if problem:
        raise UserError(f"{flag} {path}: {problem}; give a folder you can write to")


def check_out(out: str | Path) -> None:
    """``--out`` must be a run folder (or not exist yet) that can be written."""
    out = Path(out)
    if out.name == RESULTS_FILE or (out.suffix == ".jsonl" and not out.is_dir()):
        raise UserError(f"--out {out} is a results file; give its run folder instead: --out {out.parent}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder (results go to <folder>/{RESULTS_FILE})")
    check_writable(out, "--out")


def check_data_dir(data_dir: str | Path | None, needs_writing: bool) -> None:
    """The TFDS data dir must be writable when something will be generated into it.

    A read-only data dir with everything prepared is fine (a lab's shared copy).
    """
    if not needs_writing:
        return
    folder = data_dir or os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets"
    check_writable(folder, "--data-dir")


@contextlib.contextmanager
def run_lock(out: str | Path) -> Iterator[None]:
    """Hold ``out``'s run lock for the block; a `UserError` at once when another run holds it.

    A folder this call created is removed again when the run wrote nothing into it (it stopped
    at a check), so a mistake leaves no empty run folder behind.
    """
    created = not Path(out).exists()
    check_out(out)
    if fcntl is None:
        yield
        return
    path = Path(out) / LOCK_FILE
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise UserError(f"another vtabkit run{who} is writing to {out}; wait for it to finish "
                            "(this command then resumes where it stopped), or give this run another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            if created and [entry.name for entry in Path(out).iterdir()] == [LOCK_FILE]:
                path.unlink()
                Path(out).rmdir()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
