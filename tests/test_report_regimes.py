"""The report's metric-against-N section and curves, on a real small run of the lite
multi-label task in three regimes (first:100, first:250, full) with two protocols."""

from __future__ import annotations

import re

import pytest

from vtabkit import cli, report, results


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("sweep")
    code = cli.main(["run", "--model", "pixels", "--model-arg", "resolution=16", "--tasks", "lite_scenes",
                     "--protocol", "linear,knn", "--regime", "first:100,first:250,full", "--data-dir", data_dir,
                     "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _records(run):
    return list(results.read_records(run / results.RESULTS_FILE))


def test_table_has_the_numbers_of_the_records(sweep, capsys):
    assert cli.main(["report", str(sweep)]) == 0
    text = capsys.readouterr().out
    section = text[text.index("## Metric against training examples"):]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| pixels"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    header = next(line for line in section.splitlines() if line.startswith("| model / protocol"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == ["N=100", "N=250", "full (1000)"]
    assert set(rows) == {"pixels / linear", "pixels / knn"}
    for record in _records(sweep):
        column = ["first:100", "first:250", "full"].index(record["regime"])
        assert record["primary_metric"] == "map"
        assert rows[f"pixels / {record['protocol']}"][column] == f"{100 * record['metrics']['map']:.1f}"
    assert "lite_scenes (map, %)" in section


def test_main_table_keeps_first_100_and_first_250_apart(sweep):
    frame = report.load_frame(sweep)
    columns = set(frame["column"])
    assert "pixels / linear / default [first:100]" in columns and "pixels / linear / default [first:250]" in columns
    table = report.score_table(frame)
    assert all(cell.seeds == 1 and cell.std is None for cell in table.cells.values())  # nothing averaged across N


def test_latex_has_the_curve_table(sweep):
    body = report.render(sweep, "latex")
    assert body.count(r"\begin{table}") == 2 and "N=250" in body


def test_plots_write_a_curve_per_task_as_png_and_pdf(sweep, tmp_path, capsys):
    assert cli.main(["report", str(sweep), "--plots", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    for suffix in ("png", "pdf"):
        path = tmp_path / "figs" / f"regimes_lite_scenes.{suffix}"
        assert path.stat().st_size > 1000 and str(path) in out
    assert (tmp_path / "figs" / "regimes_lite_scenes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "figs" / "regimes_lite_scenes.pdf").read_bytes()[:5] == b"%PDF-"


def test_no_section_without_first_n_regimes(tmp_path, sweep):
    lines = [line for line in (sweep / results.RESULTS_FILE).read_text().splitlines() if '"regime": "full"' in line]
    (tmp_path / results.RESULTS_FILE).write_text("\n".join(lines) + "\n")
    (tmp_path / "predictions").symlink_to(sweep / "predictions")
    assert "Metric against training examples" not in report.render(tmp_path, "md")
    assert not re.search(r"regimes_", report.render(tmp_path, "md", plots=tmp_path / "figs"))
