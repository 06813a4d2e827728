"""Result records survive crashes: no torn lines, no lost or duplicated cells."""

import json

import pytest

from vtabkit import results
from vtabkit.errors import UserError


def _record(task: str, seed: int = 0) -> dict:
    return {"model_fingerprint": "abc", "task": task, "task_hash": "h", "regime": "1k",
            "protocol": "linear", "setting": "default", "seed": seed, "metrics": {"top1": 0.5}}


def test_append_and_read_round_trip(tmp_path):
    path = tmp_path / "results.jsonl"
    results.append_record(path, _record("a"))
    results.append_record(path, _record("b"))
    assert [r["task"] for r in results.read_records(path)] == ["a", "b"]
    assert path.read_text().count("\n") == 2


def test_torn_last_line_is_ignored_then_cut_before_the_next_append(tmp_path):
    path = tmp_path / "results.jsonl"
    results.append_record(path, _record("a"))
    with open(path, "a") as stream:  # what a crash in the middle of a write leaves behind
        stream.write(json.dumps(_record("b"))[:25])
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert [r["task"] for r in results.read_records(path)] == ["a"]
    results.append_record(path, _record("b"))
    assert [r["task"] for r in results.read_records(path)] == ["a", "b"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_corrupted_middle_line_is_a_user_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"task": "a"}\nnot json\n{"task": "b"}\n')
    with pytest.raises(UserError, match="results.jsonl:2 is not a JSON record"):
        results.read_records(path)


def test_cell_key_separates_seeds_and_ignores_metrics():
    first, second = _record("a", seed=0), _record("a", seed=1)
    assert results.cell_key(first) != results.cell_key(second)
    assert results.cell_key(first) == results.cell_key(dict(first, metrics={"top1": 0.9}))
    assert results.done_cells([first, second]) == {results.cell_key(first), results.cell_key(second)}


def test_long_torn_tail_cuts_only_the_torn_line(tmp_path):
    path = tmp_path / "results.jsonl"
    for task in "abc":
        results.append_record(path, _record(task))
    with open(path, "a") as stream:
        stream.write('{"task": "' + "x" * (3 << 20))  # a torn line longer than one read block
    results.append_record(path, _record("d"))
    assert [r["task"] for r in results.read_records(path)] == ["a", "b", "c", "d"]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    results.append_record(path, _record("a"))
    with open(path, "a") as stream:
        stream.write(json.dumps(_record("b")))  # written whole, newline lost
    results.append_record(path, _record("c"))
    assert [r["task"] for r in results.read_records(path)] == ["a", "b", "c"]


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    import numpy as np

    path = tmp_path / "results.jsonl"
    results.append_record(path, dict(_record("a"), details={"losses": [float("nan"), 1.0], "x": np.float32(2.5),
                                                           "grid": np.array([1.0, np.inf])}))
    [stored] = results.read_records(path)
    assert stored["details"] == {"losses": [None, 1.0], "x": 2.5, "grid": [1.0, None]}
