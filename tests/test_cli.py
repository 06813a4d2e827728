"""End to end through the command line, on the offline `lite` suite."""

import hashlib
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from vtabkit import cli, results

LITE_TASKS = {"lite_digits": 10, "lite_dsprites_loc": 16, "lite_dsprites_ori": 16, "lite_count": 6}


def _run(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory, data_dir):
    """One full `vtabkit run --model pixels --suite lite` shared by the tests below."""
    out = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("features")
    args = ["run", "--model", "pixels", "--suite", "lite", "--out", str(out), "--data-dir", data_dir,
            "--cache-dir", str(cache), "--quiet"]
    assert cli.main(args) == 0
    return out, args


def test_lite_run_writes_one_record_per_task_with_provenance(lite_run):
    out, _ = lite_run
    records = results.read_records(out / "results.jsonl")
    assert sorted(r["task"] for r in records) == sorted(LITE_TASKS)
    for record in records:
        assert record["protocol"] == "linear" and record["regime"] == "1k"
        assert record["splits"]["train"] == "train[:800]" and record["splits"]["val"] == "train[800:1000]"
        assert len(record["split_ids"]["train"]) == 16 and record["dataset_version"] == "1.0.0"
        assert record["model_fingerprint"] and record["task_hash"] and record["vtabkit_version"]
        assert record["details"]["num_train"] == 800 and record["details"]["num_val"] == 200
        assert record["num_examples"]["train"] == 800 and record["num_examples"]["val"] == 200
        assert record["num_examples"]["eval"] in (797, 1000)  # digits: 1797 - 1000 images for test
        assert {"features_s", "fit_s", "predict_s", "metrics_s", "compilations"} <= set(record["timings"])
        assert record["eval_set"] == "test" and record["primary_metric"] == "top1"
        assert record["schema_version"] == 2 and record["predictions"]["sha256"]
        assert record["command"][:2] == ["vtabkit", "run"] and "--suite" in record["command"]
        environment = record["environment"]
        assert {"jax", "flax", "optax", "numpy"} <= set(environment["versions"])
        assert environment["cpu"] and environment["device_kind"]
        assert record["features_from_cache"] == {"train": False, "val": False, "eval": False}


def test_lite_run_counts_its_compilations(lite_run):
    out, _ = lite_run
    records = results.read_records(out / "results.jsonl")
    # The first record carries the solver's compiles; the run's total is the sum over records.
    assert all(r["timings"]["compilations"] >= 0 for r in records)
    assert sum(r["timings"]["compilations"] + r["timings"]["compile_cache_hits"] for r in records) >= 1


def test_lite_scores_where_pixels_are_informative(lite_run):
    out, _ = lite_run
    scores = {r["task"]: r["metrics"]["top1"] for r in results.read_records(out / "results.jsonl")}
    assert scores["lite_digits"] > 0.9          # real digits: raw pixels are a strong baseline
    assert scores["lite_dsprites_loc"] > 0.5    # x position is linear in pixels; chance is 1/16
    # Orientation and counting are hard for raw pixels (as VTAB's structured tasks are for weak
    # representations); they only have to be valid scores, not above chance.
    assert all(0.0 <= score <= 1.0 for score in scores.values())


def test_rerun_skips_finished_cells(lite_run, capsys):
    out, args = lite_run
    before = (out / "results.jsonl").read_text()
    code, stdout, _ = _run(args, capsys)
    assert code == 0 and "0 new result(s)" in stdout and stdout.count("all cells already") == 4
    assert (out / "results.jsonl").read_text() == before


def test_report_markdown_and_csv(lite_run, capsys):
    out, _ = lite_run
    code, stdout, _ = _run(["report", str(out)], capsys)
    assert code == 0 and "| mean over tasks (plain) | all |" in stdout and "structured mean (3 tasks)" in stdout
    scores = {r["task"]: 100 * r["metrics"]["top1"] for r in results.read_records(out / "results.jsonl")}
    code, csv_text, _ = _run(["report", str(out), "--format", "csv"], capsys)
    overall = [line for line in csv_text.splitlines() if line.startswith("mean over tasks (plain),")][0]
    assert abs(float(overall.split(",")[3]) - sum(scores.values()) / 4) < 0.01


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "nope", "--suite", "lite"], "unknown model 'nope'"),
    (["run", "--model", "pixels", "--suite", "nope"], "unknown suite 'nope'"),
    (["run", "--model", "pixels", "--suite", "lite", "--tasks", "cifar100"], "not in suite 'lite'"),
    (["run", "--model", "pixels", "--suite", "lite", "--protocol", "magic"], "unknown protocol 'magic'"),
    (["run", "--model", "pixels"], "name a suite"),
    (["run", "--model", "missing.py:f", "--suite", "lite"], "model file missing.py does not exist"),
    (["report", "/nonexistent/run"], "does not exist"),
    (["list", "tasks", "--tasks-dir", "/nonexistent"], "does not exist"),
])
def test_user_mistakes_are_one_line_and_exit_2(args, message, capsys):
    code, _, err = _run(args, capsys)
    assert code == 2
    assert err.startswith("vtabkit: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_bad_yaml_in_tasks_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "broken.yaml").write_text("task: x\nfamily: natural\nnum_classes: [\n")
    code, _, err = _run(["list", "tasks", "--tasks-dir", str(tmp_path)], capsys)
    assert code == 2 and "broken.yaml" in err and "not valid YAML" in err


def test_model_from_file(tmp_path, data_dir, capsys):
    model_file = tmp_path / "my_model.py"
    model_file.write_text(textwrap.dedent("""
        import jax.numpy as jnp
        import vtabkit

        def mean_colour():
            return vtabkit.Model(apply=lambda params, x: jnp.mean(x, axis=(1, 2)), resolution=16)
    """))
    out = tmp_path / "run"
    code, stdout, err = _run(["run", "--model", f"{model_file}:mean_colour", "--suite", "lite", "--tasks",
                              "lite_digits", "--out", str(out), "--data-dir", data_dir, "--quiet"], capsys)
    assert code == 0, err
    [record] = results.read_records(out / "results.jsonl")
    assert record["model"].endswith("my_model.py:mean_colour") and 0.0 < record["metrics"]["top1"] <= 1.0


def test_list_commands(capsys):
    for what, expected in [("tasks", "lite_dsprites_ori"), ("suites", "lite"), ("models", "pixels"),
                           ("protocols", "linear")]:
        code, stdout, _ = _run(["list", what], capsys)
        assert code == 0 and expected in stdout


def test_help_shows_examples(capsys):
    for command in ("run", "list", "report", "compare", "data"):
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0 and "example:" in capsys.readouterr().out


SLOW_MODEL = """
import time
import numpy as np
import vtabkit

def slow_pixels():
    def apply(params, images):
        time.sleep(0.3)  # slow enough that the kill lands between two tasks, on any machine
        return np.asarray(images).reshape(len(images), -1)[:, ::16]
    return vtabkit.Model(apply=apply, resolution=16, jittable=False, fingerprint="slow-pixels")
"""


def test_killed_run_resumes_without_losing_or_duplicating(tmp_path, data_dir):
    model_file = tmp_path / "slow.py"
    model_file.write_text(SLOW_MODEL)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vtabkit", "run", "--model", f"{model_file}:slow_pixels", "--suite", "lite",
               "--out", str(out), "--data-dir", data_dir, "--cache-dir", str(tmp_path / "cache"), "--quiet",
               "--batch-size", "64"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = out / "results.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not path.exists() or path.read_text().count("\n") < 1):
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.kill()  # SIGKILL: no clean-up code runs
    process.wait()
    kept = results.read_records(path)
    assert 1 <= len(kept) < 4
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    final = results.read_records(path)
    assert sorted(r["task"] for r in final) == sorted(LITE_TASKS)
    assert len(results.done_cells(final)) == len(final) == 4
    assert final[:len(kept)] == kept  # what was written before the kill is untouched
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_model_args_reach_the_factory(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    base = ["run", "--model", "pixels", "--suite", "lite", "--tasks", "lite_digits", "--out", str(out),
            "--data-dir", data_dir, "--quiet"]
    assert _run(base + ["--model-arg", "resolution=8"], capsys)[0] == 0
    [record] = results.read_records(out / "results.jsonl")
    assert record["preprocessing"]["resolution"] == 8
    code, _, err = _run(base + ["--model-arg", "colour=red"], capsys)
    assert code == 2 and "could not be built" in err and "resolution" in err


@pytest.mark.parametrize("body, message", [
    ("raise RuntimeError('no weights here')", "could not be built: RuntimeError: no weights here"),
    ("return vtabkit.Model(apply=lambda p, x: x, resolution='abc')", "resolution 'abc'"),
    ("return vtabkit.Model(apply=lambda p, x: x @ x, resolution=8)", "failed on a batch of"),
])
def test_broken_user_models_are_one_line(tmp_path, data_dir, capsys, body, message):
    (tmp_path / "m.py").write_text(f"import vtabkit\n\ndef factory():\n    {body}\n")
    code, _, err = _run(["run", "--model", f"{tmp_path / 'm.py'}:factory", "--suite", "lite", "--tasks",
                         "lite_digits", "--out", str(tmp_path / "run"), "--data-dir", data_dir, "--quiet"], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_each_task_and_protocol_runs_once(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, _, _ = _run(["run", "--model", "pixels", "--suite", "lite", "--tasks", "lite_digits,lite_digits",
                       "--protocol", "linear,linear", "--out", str(out), "--data-dir", data_dir, "--quiet",
                       "--model-arg", "resolution=8"], capsys)
    assert code == 0 and len(results.read_records(out / "results.jsonl")) == 1


COUNTING_MODEL = """
import numpy as np
import vtabkit

SEEN = {path!r}

def counting_pixels():
    def apply(params, images):
        with open(SEEN, "a") as stream:
            stream.write(f"{{len(images)}}\\n")
        return np.asarray(images).reshape(len(images), -1)[:, ::8]
    return vtabkit.Model(apply=apply, resolution=16, jittable=False, fingerprint="counting")
"""


def test_all_frozen_protocols_share_one_pass_over_the_images(tmp_path, data_dir, capsys):
    seen = tmp_path / "seen.txt"
    (tmp_path / "m.py").write_text(COUNTING_MODEL.format(path=str(seen)))
    out = tmp_path / "run"
    code, stdout, err = _run(["run", "--model", f"{tmp_path / 'm.py'}:counting_pixels", "--suite", "lite",
                              "--tasks", "lite_digits", "--protocol", "linear,fewshot,knn", "--batch-size", "100",
                              "--out", str(out), "--data-dir", data_dir, "--quiet", "--no-cache"], capsys)
    assert code == 0, err
    batches = [int(n) for n in seen.read_text().split()]
    assert len(batches) == 8 + 2 + 8  # train800, val200, test (797 → 8 padded batches): one pass each
    records = results.read_records(out / "results.jsonl")
    assert sorted({r["protocol"] for r in records}) == ["fewshot", "knn", "linear"]
    assert len([r for r in records if r["protocol"] == "fewshot"]) == 12  # 4 shots x 3 seeds
    code, report, _ = _run(["report", str(out)], capsys)
    assert " ± " in report and report.index("/ 5shot") < report.index("/ 10shot")  # shots in numeric order


def test_shards_cover_the_suite_and_report_together(tmp_path, data_dir, capsys):
    outs = [tmp_path / f"shard{i}" for i in range(3)]
    for index, out in enumerate(outs):
        code, _, err = _run(["run", "--model", "pixels", "--model-arg", "resolution=8", "--suite", "lite",
                             "--shard", f"{index}/3", "--out", str(out), "--data-dir", data_dir, "--quiet"], capsys)
        assert code == 0, err
    tasks_per_shard = [sorted(r["task"] for r in results.read_records(out / "results.jsonl")) for out in outs]
    assert tasks_per_shard == [["lite_count", "lite_digits"], ["lite_dsprites_loc"], ["lite_dsprites_ori"]]
    code, report, _ = _run(["report", *map(str, outs)], capsys)
    assert code == 0 and "| mean over tasks (plain) | all | " in report and "of 4 tasks" not in report
    code, _, err = _run(["run", "--model", "pixels", "--suite", "lite", "--shard", "3/3"], capsys)
    assert code == 2 and "index must be in 0..2" in err


def test_finetune_through_the_runner(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, _, err = _run(["run", "--model", "vit_tiny", "--suite", "lite", "--tasks", "lite_digits", "--protocol",
                         "finetune", "--set", "finetune.sweep=quick", "--set", "finetune.batch_size=32",
                         "--set", "finetune.micro_batch_size=16", "--out", str(out), "--data-dir", data_dir,
                         "--quiet"], capsys)
    assert code == 0, err
    [record] = results.read_records(out / "results.jsonl")
    assert record["protocol"] == "finetune" and record["setting"] == "quick"
    assert record["details"]["steps"] == 50 and record["details"]["accumulation"] == 2
    assert record["timings"]["features_s"] == 0.0  # fine-tuning alone extracts no frozen features
    assert not (out / "work").exists()  # checkpoints are removed once the record is stored
    code, _, err = _run(["run", "--model", "pixels", "--suite", "lite", "--protocol", "finetune",
                         "--out", str(out), "--data-dir", data_dir], capsys)
    assert code == 2 and "fine-tuning needs a Flax model" in err


WEIGHTS_MODEL = """
import numpy as np
import vtabkit

def projected(weights):
    w = np.load(weights)  # the weights live outside params: only the file identifies them
    def apply(params, images):
        return np.asarray(images).reshape(len(images), -1) @ w
    return vtabkit.Model(apply=apply, resolution=8, jittable=False)
"""


def test_changed_weights_file_is_never_a_stale_feature(tmp_path, data_dir, capsys):
    (tmp_path / "m.py").write_text(WEIGHTS_MODEL)
    weights = tmp_path / "w.npy"

    def run(out, *extra):
        code, stdout, err = _run(["run", "--model", f"{tmp_path / 'm.py'}:projected", "--model-arg",
                                  f"weights={weights}", "--suite", "lite", "--tasks", "lite_digits", "--out",
                                  str(tmp_path / out), "--data-dir", data_dir, "--quiet", *extra], capsys)
        assert code == 0, err
        [record] = results.read_records(tmp_path / out / "results.jsonl")
        return record, stdout

    cache = ["--cache-dir", str(tmp_path / "cache")]
    np.save(weights, np.random.default_rng(0).normal(size=(8 * 8 * 3, 32)))  # a random projection
    first, stdout = run("first", *cache)
    assert first["model_metadata"]["files"]["weights"] == {"path": str(weights),
                                                           "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert "not cached" not in stdout and list((tmp_path / "cache").glob("*.npz"))
    np.save(weights, np.zeros((8 * 8 * 3, 32)))  # same path, weights that see nothing
    second, _ = run("second", *cache)
    fresh, _ = run("fresh", "--no-cache")  # the new weights, computed from scratch
    assert second["model_fingerprint"] != first["model_fingerprint"]
    assert second["model_metadata"]["files"]["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert second["metrics"]["top1"] == fresh["metrics"]["top1"] != first["metrics"]["top1"]
    assert first["metrics"]["top1"] > 0.5 and second["metrics"]["top1"] < 0.3  # constant features: ~chance


ANONYMOUS_MODEL = """
import numpy as np
import vtabkit

def anonymous():
    def apply(params, images):
        with open({path!r}, "a") as stream:
            stream.write("batch\\n")
        return np.asarray(images).reshape(len(images), -1)[:, ::8]
    return vtabkit.Model(apply=apply, resolution=8, jittable=False)
"""


def test_model_without_identity_is_not_cached_and_says_so_once(tmp_path, data_dir, capsys):
    seen = tmp_path / "seen.txt"
    (tmp_path / "m.py").write_text(ANONYMOUS_MODEL.format(path=str(seen)))
    counts = []
    for out in ("first", "second"):
        code, stdout, err = _run(["run", "--model", f"{tmp_path / 'm.py'}:anonymous", "--suite", "lite",
                                  "--tasks", "lite_digits", "--out", str(tmp_path / out), "--data-dir", data_dir,
                                  "--cache-dir", str(tmp_path / "cache"), "--quiet"], capsys)
        assert code == 0, err
        assert stdout.count("not cached") == 1 and "Model.identity" in stdout
        counts.append(len(seen.read_text().splitlines()))
    assert counts[1] == 2 * counts[0] > 0  # the second run called the model again, as often
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npz"))
