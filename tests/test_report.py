"""The report never averages what must stay apart, and its means are the ones it names."""

import pytest

from vtabkit import report, results


def _record(task, family, top1, **extra):
    record = {"model": "m", "task": task, "family": family, "protocol": "linear", "setting": "default",
              "seed": 0, "model_fingerprint": "aaaaaaaa", "regime": "1k", "config_hash": "c1",
              "task_hash": "h-" + task, "metrics": {"top1": top1}}
    record.update(extra)
    return record


def _write(tmp_path, records):
    for record in records:
        results.append_record(tmp_path / "results.jsonl", record)
    return report.load_frame(tmp_path)


def test_overall_mean_is_over_tasks_not_families(tmp_path):
    frame = _write(tmp_path, [_record("a", "natural", 0.9), _record("b", "structured", 0.5),
                              _record("c", "structured", 0.1)])
    table = report.score_table(frame)
    column = table.columns[0]
    assert table.loc[("mean", "all (3 tasks)"), column] == pytest.approx(50.0)        # (90+50+10)/3
    assert table.loc[("mean", "structured (2 tasks)"), column] == pytest.approx(30.0)
    assert table.loc[("mean", "natural (1 tasks)"), column] == pytest.approx(90.0)


@pytest.mark.parametrize("change, tag", [
    ({"model_fingerprint": "bbbbbbbb"}, "[fp bbbbbb]"),
    ({"regime": "full"}, "[full]"),
    ({"config_hash": "c2"}, "[cfg c2]"),
])
def test_other_weights_regimes_and_settings_get_their_own_column(tmp_path, change, tag):
    frame = _write(tmp_path, [_record("a", "natural", 0.9), _record("a", "natural", 0.5, **change)])
    table = report.score_table(frame)
    assert len(table.columns) == 2 and any(tag in column for column in table.columns)
    assert sorted(table.loc[("natural", "a")].tolist()) == [50.0, 90.0]  # never averaged to 70


def test_changed_task_definition_gets_its_own_row(tmp_path):
    frame = _write(tmp_path, [_record("a", "natural", 0.9), _record("a", "natural", 0.5, task_hash="h-new")])
    rows = [task for _, task in report.score_table(frame).index]
    assert any(task.startswith("a [task h-new") for task in rows) and "all (2 tasks)" in rows


def test_seed_spread_for_fewshot_like_cells(tmp_path):
    frame = _write(tmp_path, [_record("a", "natural", top1, setting="5shot", seed=seed)
                              for seed, top1 in enumerate([0.5, 0.6, 0.7])])
    spread = report.seed_spread(frame)
    assert spread["count"].tolist() == [3] and spread["mean"].tolist() == pytest.approx([60.0])
    assert spread["std"].tolist() == pytest.approx([10.0])
    assert isinstance(report.render(tmp_path, "latex"), str) and "5shot" in report.render(tmp_path, "csv")
