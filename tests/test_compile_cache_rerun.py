"""Issue 14 point 1: a second `vtabkit run` (fresh process, same command) compiles nothing.

The first run fills JAX's persistent cache under VTABKIT_CACHE/jax; the second, with the same
arguments in a new process, loads every executable from it. Compilations are counted from the
records' timings (each record carries those done since the previous one, so they sum to the
run's), and `vtabkit cache ls` lists the folder.
"""

import json
import os
import subprocess
import sys
import textwrap

TASK = textwrap.dedent("""
    task: tiny_digits
    family: natural
    dataset: vtabkit_digits:1.0.0
    num_classes: 10
    splits:
      train800: train[:120]
      val200: train[120:160]
      train800val200: train[:160]
      test: test[:100]
""")
SUITE = "suite: tiny\nregime: 1k\ndescription: one small digits task\ntasks: [tiny_digits]\nprotocols: [linear]\n"


def _vtabkit(args, env):
    done = subprocess.run([sys.executable, "-m", "vtabkit", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _compiles(out):
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return (sum(r["timings"]["compilations"] for r in records), sum(r["timings"]["compile_cache_hits"] for r in records),
            {r["protocol"] for r in records})


def test_second_run_compiles_nothing(tmp_path, data_dir):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_digits.yaml").write_text(TASK)
    (tasks / "tiny.yaml").write_text(SUITE)
    env = dict(os.environ, VTABKIT_CACHE=str(tmp_path / "cache"))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    # The worktree's package first, as the test process sees it.
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         env.get("PYTHONPATH", "")])
    command = ["run", "--model", "pixels", "--tasks-dir", str(tasks), "--suite", "tiny", "--data-dir", data_dir,
               "--protocol", "linear,fewshot,knn", "--set", "fewshot.shots=[1,5]", "--set", "fewshot.seeds=[0]",
               # the device paths (these tiny problems would otherwise be solved on the host)
               "--set", "fewshot.host_max_size=0", "--set", "knn.host_max_size=0", "--quiet"]
    _vtabkit([*command, "--out", str(tmp_path / "first")], env)
    _vtabkit([*command, "--out", str(tmp_path / "second")], env)
    first, second = _compiles(tmp_path / "first"), _compiles(tmp_path / "second")
    assert first[2] == second[2] == {"linear", "fewshot", "knn"}
    assert first[0] >= 3 and first[1] == 0  # every protocol compiled something the first time
    assert second[0] == 0, f"the second run compiled {second[0]} times"
    # ... and loaded them from disk instead (less one: its features come from the feature cache)
    assert second[1] >= first[0] - 1
    listing = _vtabkit(["cache", "ls"], env)
    entries = [line for line in listing.splitlines() if line.startswith("JAX compilation cache:")]
    assert entries and str(tmp_path / "cache" / "jax") in entries[0]
    assert int(entries[0].split(": ")[1].split()[0]) >= first[0] - 1
