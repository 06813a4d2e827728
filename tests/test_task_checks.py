"""Definitions are checked when loaded: one line naming the YAML file and the field."""

from __future__ import annotations

import textwrap

import pytest
import tensorflow_datasets as tfds

from vtabkit import cli, task_checks, tasks
from vtabkit.errors import UserError

DTD_SPLITS = """
splits:
  train800: train[:800]
  val200: validation[:200]
  train800val200: train[:800]+validation[:200]
  test: test
"""


def _folder(tmp_path, name: str, body: str):
    folder = tmp_path / "my_tasks"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return folder, path


def _err(args, capsys):
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_unparsable_split_at_list_and_before_a_run(tmp_path, capsys):
    folder, path = _folder(tmp_path, "my_dtd", """
        task: my_dtd
        family: natural
        dataset: dtd:3.0.1
        num_classes: 47
        splits:
          train800: train[:800
          val200: validation[:200]
          test: test
    """)
    with pytest.raises(ValueError):  # TFDS itself rejects the string (the check is not stricter)
        tfds.core.ReadInstruction.from_spec("train[:800")
    for args in (["list", "tasks", "--tasks-dir", str(folder)],
                 ["run", "--model", "pixels", "--tasks", "my_dtd", "--tasks-dir", str(folder),
                  "--out", str(tmp_path / "run")]):
        err = _err(args, capsys)
        assert f"{path}: field 'splits' → train800: 'train[:800' is not a TFDS split string" in err


def test_num_classes_smaller_than_the_class_label(tmp_path, capsys):
    real = tfds.builder("dtd:3.0.1").info.features["label"].num_classes  # from TFDS, not from us
    folder, path = _folder(tmp_path, "my_dtd", f"""
        task: my_dtd
        family: natural
        dataset: dtd:3.0.1
        num_classes: {real - 7}
        {textwrap.indent(DTD_SPLITS, '        ').strip()}
    """)
    for args in (["list", "tasks", "--tasks-dir", str(folder)],
                 ["run", "--model", "pixels", "--tasks", "my_dtd", "--tasks-dir", str(folder),
                  "--out", str(tmp_path / "run")]):
        err = _err(args, capsys)
        assert f"{path}: field 'num_classes' is {real - 7}, but dtd:3.0.1 feature 'label' has {real} classes" in err


def test_a_good_user_task_lists(tmp_path, capsys):
    folder, _ = _folder(tmp_path, "my_dtd", f"""
        task: my_dtd
        family: natural
        dataset: dtd:3.0.1
        num_classes: 47
        {textwrap.indent(DTD_SPLITS, '        ').strip()}
    """)
    assert cli.main(["list", "tasks", "--tasks-dir", str(folder)]) == 0
    assert "my_dtd" in capsys.readouterr().out


def test_split_of_a_missing_tfds_split_on_prepared_data(tmp_path, data_dir, capsys):
    # lite_digits' dataset has train/test only; a 'validation' split cannot be read.
    folder, path = _folder(tmp_path, "my_digits", """
        task: my_digits
        family: lite
        dataset: vtabkit_digits:1.0.0
        num_classes: 10
        splits:
          train800: train[:800]
          val200: validation[:200]
          test: test
    """)
    task = tasks.get_task("my_digits", [folder])
    from vtabkit import data

    data.builder(task.view("train800"), data_dir)  # generate (offline) so the split sizes are known
    with pytest.raises(UserError, match=rf"{path}: field 'splits' → val200: "):
        task_checks.check_task(task, data_dir)


def test_builtin_tasks_pass_and_are_recognised():
    registry = tasks.registry()
    assert all(task_checks.is_builtin(task) for task in registry.tasks.values())
    for task in registry.tasks.values():
        task_checks.check_split_syntax(task)


def test_every_builtin_task_passes_the_dataset_checks(tmp_path):
    # Builder info from code (nothing prepared): num_classes against each ClassLabel.
    for task in tasks.registry().tasks.values():
        task_checks.check_task(task, tmp_path)
