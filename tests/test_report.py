"""The report never averages what must stay apart, and its means are the ones it names."""

import pytest

from vtabkit import report, report_render, results


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


def _value(table, label, column):
    row = next(row for row in report_render.display_rows(table) if row.label == label)
    return report_render.value(table, row, column)


def test_plain_mean_and_group_mean_are_both_given_and_labelled(tmp_path):
    frame = _write(tmp_path, [_record("a", "natural", 0.9), _record("b", "structured", 0.5),
                              _record("c", "structured", 0.1)])
    table = report.score_table(frame)
    column = table.columns[0]
    assert _value(table, report_render.PLAIN, column)[0] == pytest.approx(50.0)       # (90+50+10)/3
    assert _value(table, report_render.GROUP, column)[0] == pytest.approx(60.0)       # (90+30)/2
    assert _value(table, "structured mean (2 tasks)", column)[0] == pytest.approx(30.0)
    assert _value(table, "natural mean (1 task)", column)[0] == pytest.approx(90.0)
    text = report.render(tmp_path)
    assert report_render.PLAIN in text and report_render.GROUP in text


def test_an_incomplete_suite_shows_its_completeness_not_a_mean(tmp_path):
    suite = ["lite_digits", "lite_dsprites_loc", "lite_dsprites_ori", "lite_count"]  # tasks/lite/lite.yaml
    frame = _write(tmp_path, [_record(task, "x", 0.5) for task in reversed(suite[:3])])
    table = report.score_table(frame)
    assert table.suite == "lite" and [row.label for row in table.rows] == suite[:3]  # the suite's order
    assert _value(table, report_render.PLAIN, table.columns[0]) == (None, "3 of 4 tasks")
    assert "3 of 4 tasks" in report.render(tmp_path) and "3 of 4 tasks" in report.render(tmp_path, "csv")


@pytest.mark.parametrize("change, tag", [
    ({"model_fingerprint": "bbbbbbbb"}, "[fp bbbbbb]"),
    ({"regime": "full"}, "[full]"),
    ({"config_hash": "c2"}, "[cfg c2]"),
])
def test_other_weights_regimes_and_settings_get_their_own_column(tmp_path, change, tag):
    frame = _write(tmp_path, [_record("a", "natural", 0.9), _record("a", "natural", 0.5, **change)])
    table = report.score_table(frame)
    assert len(table.columns) == 2 and any(tag in column for column in table.columns)
    assert sorted(table.cells["a", column].mean for column in table.columns) == [50.0, 90.0]  # never 70


def test_overridden_settings_label_the_column_as_key_value(tmp_path):
    frame = _write(tmp_path, [_record("a", "natural", 0.9, protocol_config={"max_iter": 1000, "seed": 0}),
                              _record("a", "natural", 0.5, config_hash="c2",
                                      protocol_config={"max_iter": 50, "l2_grid": [1.0], "seed": 0})])
    assert sorted(report.score_table(frame).columns) == ["m / linear / default",
                                                         "m / linear / default (l2_grid=[1.0], max_iter=50)"]


def test_changed_task_definition_gets_its_own_row(tmp_path):
    frame = _write(tmp_path, [_record("a", "natural", 0.9), _record("a", "natural", 0.5, task_hash="h-new")])
    table = report.score_table(frame)
    assert sorted(row.label for row in table.rows) == ["a [task h-a]", "a [task h-new]"]
    # Neither definition is silently the task of the suite: no mean over it.
    assert _value(table, report_render.PLAIN, table.columns[0]) == (None, "0 of 1 tasks")


def test_shots_sort_as_numbers_and_seeds_show_mean_and_std(tmp_path):
    records = [_record("a", "natural", 0.5 + 0.1 * seed, protocol="fewshot", setting=f"{shots}shot", seed=seed)
               for shots in (25, 10, 5, 1) for seed in range(3)]
    frame = _write(tmp_path, records)
    table = report.score_table(frame)
    assert table.columns == [f"m / fewshot / {shots}shot" for shots in (1, 5, 10, 25)]
    cell = table.cells["a", "m / fewshot / 10shot"]
    assert (cell.mean, cell.std, cell.seeds) == (pytest.approx(60.0), pytest.approx(10.0), 3)
    for output_format in ("md", "latex"):
        assert "60.0 ± 10.0" in report.render(tmp_path, output_format).replace(r"$\pm$", "±")
    assert "m / fewshot / 10shot std" in report.render(tmp_path, "csv")


def test_markdown_rows_are_plain_task_names_not_tuples(tmp_path):
    _write(tmp_path, [_record("a", "natural", 0.9)])
    assert "| a | natural | 90.0 |" in report.render(tmp_path) and "('" not in report.render(tmp_path)
