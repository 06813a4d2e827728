"""Multi-process runs: 2 local CPU processes on jax.distributed (gloo), each with 2 simulated
devices, against the single-process run of the same command."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vtabkit import distributed, runner, source
from vtabkit.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600  # the machine is shared: generous, each launch normally takes well under a minute


def _gloo_available() -> bool:
    import jax

    return hasattr(jax.config, "jax_cpu_collectives_implementation")


needs_gloo = pytest.mark.skipif(not _gloo_available(), reason="this jax has no CPU collectives (gloo) option")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _environment(devices: int = 2) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("JAX_PLATFORMS", None)
    return env


def _launch(*commands: list[str], devices: int = 2) -> list[tuple[int, str, str]]:
    """Start every command at once (one per process, each with ``devices`` CPU devices) and wait for all."""
    processes = [subprocess.Popen([sys.executable, "-m", "vtabkit", *command], env=_environment(devices), cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    outcomes = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        outcomes.append((process.returncode, out, err))
    return outcomes


def _two_processes(base: list[str], per_process: list[list[str]], timeout_s: int = 120):
    port = _free_port()
    return _launch(*[[*base, *extra, "--coordinator", f"localhost:{port}", "--num-processes", "2",
                      "--process-id", str(index), "--distributed-timeout", str(timeout_s)]
                     for index, extra in enumerate(per_process)])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def _predictions(out: Path, record: dict) -> dict:
    with np.load(out / record["predictions"]["path"]) as stored:
        return {name: stored[name] for name in stored.files}


@pytest.mark.parametrize("split, sizes", [
    ("train[:800]", {"train": 1797}),
    ("train[800:1000]", {"train": 1797}),
    ("test", {"test": 797}),
    ("train[:3]+test[5:7]", {"train": 10, "test": 10}),
    ("train[10%:35%]+test", {"train": 101, "test": 3}),
])
def test_shares_tile_the_split_in_order(split, sizes):
    def positions(text):  # the examples a split string reads, in order, by brute force
        return [(name, i) for name, begin, end in source.absolute_ranges(text, sizes) for i in range(begin, end)]

    expected = positions(split)
    for count in range(1, 7):
        parts = [distributed.share(split, sizes, index, count) for index in range(count)]
        read = [example for part, _, _ in parts if part for example in positions(part)]
        assert read == expected  # every example once, in split order
        lengths = [end - start for _, start, end in parts]
        assert sum(lengths) == len(expected) and max(lengths) - min(lengths) <= 1
        assert all(len(positions(part)) == end - start for part, start, end in parts if part)
        assert [start for _, start, _ in parts] == [sum(lengths[:i]) for i in range(count)]


def test_cluster_detection_reads_the_scheduler_environment():
    assert distributed.cluster_detected({}) is None
    assert distributed.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) is None  # sbatch, not srun
    assert distributed.cluster_detected({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "4"}) == "SLURM"
    assert distributed.cluster_detected({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}) is None
    assert distributed.cluster_detected({"OMPI_COMM_WORLD_SIZE": "2"}) == "Open MPI"


def test_flags_are_checked_before_joining():
    with pytest.raises(UserError, match="--process-id missing"):
        distributed.initialize(coordinator="localhost:1234", num_processes=2)
    with pytest.raises(UserError, match="must be in 0..1"):
        distributed.initialize(coordinator="localhost:1234", num_processes=2, process_id=2)
    with pytest.raises(UserError, match="not HOST:PORT"):
        distributed.initialize(coordinator="localhost", num_processes=2, process_id=1)
    with pytest.raises(UserError, match="--distributed off"):
        distributed.initialize(coordinator="localhost:1234", num_processes=2, process_id=1, mode="off")


@needs_gloo
def test_finetune_is_data_parallel_over_two_processes(tmp_path, data_dir):
    """2 processes x 2 devices train on the same 4-device mesh as 1 process x 4 devices: the same
    global batches, so the same tuned network and the same records."""
    base = ["run", "--model", "vit_tiny", "--suite", "lite", "--tasks", "lite_digits", "--protocol", "finetune",
            "--set", "finetune.sweep=quick", "--set", "finetune.batch_size=32", "--set", "finetune.micro_batch_size=16",
            "--data-dir", data_dir, "--quiet", "--no-cache"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    [(code, _, err)] = _launch([*base, "--out", str(single), "--distributed", "off"], devices=4)
    assert code == 0, err
    outcomes = _two_processes(base, [["--out", str(multi)], ["--out", str(tmp_path / "out1")]])
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    assert not (tmp_path / "out1").exists()
    [expected], [got] = _records(single), _records(multi)
    assert got["details"]["processes"] == 2 and got["details"]["devices"] == 4 == expected["details"]["devices"]
    assert got["details"]["checkpoints"] is False and expected["details"]["checkpoints"] is True
    assert got["details"]["final_losses"] == pytest.approx(expected["details"]["final_losses"], rel=1e-5)
    assert got["metrics"] == pytest.approx(expected["metrics"], abs=1e-6)
    assert got["split_ids"] == expected["split_ids"]
    pa, pb = _predictions(single, expected), _predictions(multi, got)
    assert list(pa["ids"]) == list(pb["ids"])
    np.testing.assert_allclose(pa["scores"], pb["scores"], rtol=1e-4, atol=1e-4)


@needs_gloo
def test_two_processes_give_the_single_process_records_and_resume(tmp_path, data_dir):
    base = ["run", "--model", "pixels", "--suite", "lite", "--tasks", "lite_digits", "--protocol", "linear,knn",
            "--batch-size", "64", "--data-dir", data_dir, "--quiet"]  # 797 test images: shares of 399 + 398
    single, multi = tmp_path / "single", tmp_path / "multi"
    [(code, _, err)] = _launch([*base, "--out", str(single), "--no-cache", "--distributed", "off"])
    assert code == 0, err
    # Process 1 gets its own --out and --cache-dir: it must never create either.
    others = [["--out", str(tmp_path / f"out{i}"), "--cache-dir", str(tmp_path / f"cache{i}")] for i in range(2)]
    others[0][1] = str(multi)
    outcomes = _two_processes(base, others)
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    assert outcomes[1][1] == "" and outcomes[1][2] == ""  # process 1 says nothing (no gloo chatter either)
    assert not (tmp_path / "out1").exists() and not (tmp_path / "cache1").exists()
    expected, got = _records(single), _records(multi)
    assert len(got) == len(expected) == 2  # records written once

    def same(a, b):
        assert (a["task"], a["protocol"], a["eval_set"]) == (b["task"], b["protocol"], b["eval_set"])
        assert a["metrics"] == b["metrics"] and a["split_ids"] == b["split_ids"]
        assert a["num_examples"] == b["num_examples"]
        pa, pb = _predictions(single, a), _predictions(multi, b)
        assert list(pa["ids"]) == list(pb["ids"])  # example order kept across the two shares
        np.testing.assert_array_equal(pa["scores"], pb["scores"])

    for a, b in zip(expected, got):
        same(a, b)
    assert got[0]["environment"]["processes"] == 2 and got[0]["environment"]["devices"] == 4

    # Killed while writing the second record: a torn last line. The rerun (features now from
    # process 0's cache, broadcast) writes only that record again.
    lines = (multi / "results.jsonl").read_text().splitlines(keepends=True)
    (multi / "results.jsonl").write_text(lines[0] + lines[1][:40])
    outcomes = _two_processes(base, others)
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    assert "1 new result(s)" in outcomes[0][1]
    got = _records(multi)
    assert len(got) == 2
    same(expected[1], got[1])
    assert got[1]["features_from_cache"]["eval"] is True
    assert not (tmp_path / "out1").exists() and not (tmp_path / "cache1").exists()


@needs_gloo
def test_processes_that_disagree_stop_in_one_line(tmp_path, data_dir):
    base = ["run", "--model", "pixels", "--suite", "lite", "--tasks", "lite_digits", "--data-dir", data_dir,
            "--quiet", "--out", str(tmp_path / "run")]
    outcomes = _two_processes(base, [["--protocol", "linear"], ["--protocol", "knn"]])
    for code, out, err in outcomes:
        assert code == 2 and out == "", (code, out, err)
        assert len(err.strip().splitlines()) == 1 and "differs in: protocols" in err, err
    assert not (tmp_path / "run").exists()


@needs_gloo
def test_unreachable_coordinator_fails_in_one_line_within_the_timeout(tmp_path):
    port = _free_port()  # nobody serves it
    started = time.monotonic()
    [(code, out, err)] = _launch(["run", "--model", "pixels", "--suite", "lite", "--out", str(tmp_path / "run"),
                                  "--coordinator", f"localhost:{port}", "--num-processes", "2",
                                  "--process-id", "1", "--distributed-timeout", "3"])
    elapsed = time.monotonic() - started
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "cannot reach the coordinator" in err, err
    assert elapsed < 3 + 120  # the start-up (imports) on a loaded machine plus our 3 s, not JAX's 300 s
    assert not (tmp_path / "run").exists()
