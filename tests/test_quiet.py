"""A quiet terminal: real `vtabkit` processes print vtabkit's own lines, nothing else.

Run as subprocesses with the environment a user has (no TF_CPP_MIN_LOG_LEVEL, no warning
filters), on fresh data and cache dirs so that vtabkit's offline builder generates its data.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def user_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS", "TFDS_DATA_DIR", "VTABKIT_TASKS_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env["VTABKIT_CACHE"] = str(tmp_path / "vtabkit-cache")
    env["HOME"] = str(tmp_path / "home")  # nothing may land in the real ~/tensorflow_datasets
    return env


def vtabkit(args: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vtabkit", *args], capture_output=True, text=True,
                          env=user_env(tmp_path), cwd=tmp_path, timeout=timeout)


def test_a_run_prints_only_vtabkit_lines(tmp_path):
    out = tmp_path / "run"
    done = vtabkit(["run", "--model", "pixels", "--suite", "lite", "--tasks", "lite_digits", "--quiet",
                    "--out", str(out), "--data-dir", str(tmp_path / "fresh-tfds"),
                    "--cache-dir", str(tmp_path / "fresh-cache")], tmp_path)
    assert done.returncode == 0, done.stderr
    # vtabkit's one line per result (task, eval set, protocol, setting, seed, score) and the summary.
    allowed = [re.compile(r"lite_digits +(\w+ +)?linear +default +seed 0: top1 \d+\.\d%"),
               re.compile(re.escape(f"1 new result(s) in {out / 'results.jsonl'}; see `vtabkit report {out}`"))]
    lines = done.stdout.splitlines()
    for line in lines:
        assert any(pattern.fullmatch(line) for pattern in allowed), f"unexpected line on stdout: {line!r}"
    assert len(lines) == 2
    assert done.stderr == "", f"unexpected stderr: {done.stderr[:500]!r}"
    assert (tmp_path / "fresh-tfds" / "vtabkit_digits" / "1.0.0").is_dir()  # it did generate, silently


def test_a_user_error_is_exactly_one_line(tmp_path):
    done = vtabkit(["run", "--model", "nope", "--suite", "lite", "--out", str(tmp_path / "run"),
                    "--data-dir", str(tmp_path / "tfds")], tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("vtabkit: error: unknown model 'nope'") and done.stderr.count("\n") == 1


def test_listing_builtin_tasks_stays_cheap():
    # The definition checks that need TFDS run for --tasks-dir folders only: listing the
    # built-in tasks must not load TensorFlow (seconds of start-up).
    code = ("import sys\nfrom vtabkit import cli\nassert cli.main(['list', 'tasks']) == 0\n"
            "assert 'tensorflow' not in sys.modules, 'listing imported TensorFlow'\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VTABKIT_TASKS_DIR", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
