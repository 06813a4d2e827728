"""The task/suite schema: every mistake is one clear error naming the file and the field."""

import textwrap

import pytest

from vtabkit import regimes, tasks
from vtabkit.errors import UserError

GOOD_TASK = """
task: my_task
family: natural
dataset: mnist:3.0.1
num_classes: 10
splits:
  train800: train[:800]
  val200: train[800:1000]
  train800val200: train[:800]+train[800:1000]
  test: test
"""


def _registry(tmp_path, files: dict[str, str]) -> tasks.Registry:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tasks.Registry([tmp_path])


def test_good_task_loads_with_defaults(tmp_path):
    task = _registry(tmp_path, {"t.yaml": GOOD_TASK}).tasks["my_task"]
    assert task.tfds_name == "mnist:3.0.1"
    assert task.dataset_name == "mnist" and task.dataset_version == "3.0.1"
    assert task.label == {"rule": "feature", "key": "label"}
    train, val = task.regime_views(regimes.parse("1k"))
    assert (train.split, val.split) == ("train[:800]", "train[800:1000]")
    assert [e.name for e in task.eval_sets] == ["test"] and task.eval_sets[0].view.split == "test"
    assert task.target == "single" and task.eval_sets[0].metrics == ("top1",)


@pytest.mark.parametrize("change, message", [
    ("colour: red\n", "unknown field 'colour'"),
    ("num_classes: ten\n", "field 'num_classes' must be a int"),
    ("family: cosmic\n", "field 'family' is 'cosmic'"),
    ("dataset: mnist\n", "must pin a version"),
    ("label: {rule: no_such_rule}\n", "unknown label rule 'no_such_rule'"),
    ("label: {rule: floor_divide, key: x}\n", "missing a required argument: 'divisor'"),
    ("label: {rule: feature, colour: 3}\n", "unexpected keyword argument 'colour'"),
])
def test_schema_errors_name_file_and_field(tmp_path, change, message):
    key = change.split(":")[0]
    kept = "\n".join(line for line in GOOD_TASK.splitlines() if not line.startswith(key + ":"))
    with pytest.raises(UserError, match=message) as error:
        _registry(tmp_path, {"bad.yaml": kept + "\n" + change})
    assert "bad.yaml" in str(error.value)


def test_missing_field(tmp_path):
    text = GOOD_TASK.replace("num_classes: 10\n", "")
    with pytest.raises(UserError, match="bad.yaml: missing required field 'num_classes'"):
        _registry(tmp_path, {"bad.yaml": text})


def test_unknown_split_name_and_missing_regime(tmp_path):
    with pytest.raises(UserError, match="unknown split 'validation'"):
        _registry(tmp_path, {"a.yaml": GOOD_TASK.replace("val200:", "validation:")})
    no_test = "\n".join(line for line in GOOD_TASK.splitlines() if "test" not in line)
    with pytest.raises(UserError, match="needs a test split, or declare 'eval_sets'"):
        _registry(tmp_path, {"a.yaml": no_test})


def test_invalid_yaml_reports_line(tmp_path):
    with pytest.raises(UserError, match=r"bad.yaml: line \d+ is not valid YAML"):
        _registry(tmp_path, {"bad.yaml": "task: [unclosed\nfamily: natural\n"})


def test_duplicate_ids_and_unknown_suite_task(tmp_path):
    with pytest.raises(UserError, match="already defined"):
        _registry(tmp_path, {"a.yaml": GOOD_TASK, "b.yaml": GOOD_TASK})
    suite = "suite: s\nregime: 1k\ntasks: [my_task, ghost]\n"
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(UserError, match="suite 's' lists unknown task 'ghost'"):
        _registry(other, {"a.yaml": GOOD_TASK, "s.yaml": suite})


def test_file_that_is_neither_task_nor_suite(tmp_path):
    with pytest.raises(UserError, match="needs a 'task:' or 'suite:' field"):
        _registry(tmp_path, {"x.yaml": "name: something\n"})


def test_task_hash_follows_content_not_formatting(tmp_path):
    def task_hash(folder: str, text: str) -> str:
        (tmp_path / folder).mkdir()
        return _registry(tmp_path / folder, {"t.yaml": text}).tasks["my_task"].hash

    reformatted = "# a comment\n" + GOOD_TASK.replace("num_classes: 10", "num_classes:    10")
    assert task_hash("a", GOOD_TASK) == task_hash("b", reformatted)
    assert task_hash("c", GOOD_TASK) != task_hash("d", GOOD_TASK.replace("test: test", "test: test[:50%]"))


def test_user_task_dir_adds_to_builtins(tmp_path):
    (tmp_path / "t.yaml").write_text(GOOD_TASK)
    ids = tasks.list_tasks([tmp_path])
    assert "my_task" in ids and "lite_digits" in ids
    assert tasks.get_task("my_task", [tmp_path]).num_classes == 10
    with pytest.raises(UserError, match="does not exist"):
        tasks.list_tasks([tmp_path / "nowhere"])


def test_builtin_lite_suite():
    suite = tasks.get_suite("lite")
    assert suite.regime == "1k"
    assert set(suite.tasks) == {"lite_digits", "lite_dsprites_loc", "lite_dsprites_ori", "lite_count"}
    for task_id in suite.tasks:
        task = tasks.get_task(task_id)
        train, val = task.regime_views(regimes.parse("1k"))
        assert task.splits["train800val200"] == f"{train.split}+{val.split}"
