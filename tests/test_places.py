"""Bad places fail first, in one line; one run per --out at a time (vtabkit.places)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vtabkit import cli, places, results, runner
from vtabkit.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a run gets as far as building a model or computing features."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the place was checked too late: work had started")
    monkeypatch.setattr(runner, "create_model", forbidden)
    monkeypatch.setattr(runner.features, "load_or_compute", forbidden)


def _run(args, capsys):
    code = cli.main(["run", "--model", "pixels", "--suite", "lite", "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.err


def _one_line(err: str) -> str:
    assert err.startswith("vtabkit: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_out_that_is_a_file(tmp_path, data_dir, no_work, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    code, err = _run(["--out", str(target), "--data-dir", data_dir], capsys)
    assert code == 2 and "is a file" in _one_line(err) and str(target) in err
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("exists", [True, False])
def test_out_that_is_a_results_file(tmp_path, data_dir, no_work, capsys, exists):
    target = tmp_path / "run" / "results.jsonl"
    if exists:
        target.parent.mkdir()
        target.write_text("")
    code, err = _run(["--out", str(target), "--data-dir", data_dir], capsys)
    assert code == 2 and "is a results file" in _one_line(err) and f"--out {target.parent}" in err


@pytest.mark.parametrize("flag", ["--out", "--cache-dir", "--data-dir"])
def test_places_that_cannot_be_written(tmp_path, data_dir, no_work, capsys, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = blocker / "sub"  # a folder cannot be made under a file, whoever runs the test
    chosen = {"--out": str(tmp_path / "run"), "--cache-dir": str(tmp_path / "cache"),
              "--data-dir": str(tmp_path / "fresh-tfds")}  # fresh: lite's data must be generated
    chosen[flag] = str(bad)
    code, err = _run([arg for pair in chosen.items() for arg in pair], capsys)
    assert code == 2 and _one_line(err).startswith(f"vtabkit: error: {flag} {bad}: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out(tmp_path, data_dir, no_work, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, err = _run(["--out", str(folder / "run"), "--data-dir", data_dir], capsys)
    finally:
        folder.chmod(0o755)
    assert code == 2 and "cannot be written" in _one_line(err)


def test_read_only_data_dir_is_fine_when_nothing_is_generated(tmp_path):
    places.check_data_dir(tmp_path / "a-file" / "x", needs_writing=False)  # no write: no check
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match="--data-dir"):
        places.check_data_dir(tmp_path / "a-file" / "x", needs_writing=True)


def test_lock_is_exclusive_and_released(tmp_path):
    out = tmp_path / "run"
    with places.run_lock(out):
        assert (out / places.LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(UserError, match="another vtabkit run"):
            with places.run_lock(out):
                pass
    with places.run_lock(out):  # released when the first run ended
        pass


def test_a_second_run_on_a_locked_out_refuses_in_one_line(tmp_path, data_dir):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / places.LOCK_FILE, "w") as held:  # this test process is "the first run"
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-m", "vtabkit", "run", "--model", "pixels", "--suite", "lite",
                               "--out", str(out), "--data-dir", data_dir, "--quiet"],
                              capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"vtabkit: error: another vtabkit run (pid {os.getpid()}) is writing to {out}; "
                           "wait for it to finish (this command then resumes where it stopped), "
                           "or give this run another --out\n")
    assert not (out / results.RESULTS_FILE).exists()  # it wrote nothing


def test_run_accepts_keywords(tmp_path, data_dir):
    out = tmp_path / "run"
    common = dict(model="pixels", suite="lite", tasks=["lite_digits"], data_dir=data_dir,
                  cache_dir=tmp_path / "cache", progress=False)
    written = runner.run(out=str(out), log=lambda line: None, **common)
    assert [(r["task"], r["protocol"]) for r in written] == [("lite_digits", "linear")]
    assert results.read_records(out / results.RESULTS_FILE) == written
    # The same run as a RunConfig: every cell is done, nothing new.
    assert runner.run(runner.RunConfig(out=out, **common), log=lambda line: None) == []
    with pytest.raises(UserError, match="unknown option.*modle"):
        runner.run(modle="pixels", suite="lite")


def test_places_constant_agrees_with_results():
    assert places.RESULTS_FILE == results.RESULTS_FILE
