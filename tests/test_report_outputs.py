"""Paper-ready report outputs: LaTeX that a real TeX engine compiles, tidy long csv, intervals,
published reference columns and figures."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from runs_for_tests import noisy_scores, write_record
from vtabkit import cli, report, reference
from vtabkit.report_latex import escape

LITE = [("lite_digits", "natural"), ("lite_dsprites_loc", "structured"), ("lite_dsprites_ori", "structured"),
        ("lite_count", "structured")]


def _runs(tmp_path, models=("vit_b/16_#1", "resnet_50%"), shots=(1, 5)):
    rng = np.random.default_rng(0)
    for offset, model in enumerate(models):
        for task, family in LITE:
            targets = np.random.default_rng(len(task)).integers(0, 4, 120)
            write_record(tmp_path / "run", task, family, noisy_scores(targets, 4, 0.8 - 0.1 * offset, rng), targets,
                         model=model)
            for shot in shots:
                for seed in range(2):
                    write_record(tmp_path / "run", task, family, noisy_scores(targets, 4, 0.3 + 0.05 * shot, rng),
                                 targets, model=model, protocol="fewshot", setting=f"{shot}shot", seed=seed)
    return tmp_path / "run"


def _engine():
    return shutil.which("pdflatex") or shutil.which("lualatex")


@pytest.mark.skipif(_engine() is None, reason="no TeX engine (pdflatex/lualatex); "
                                              "apt-get install texlive-latex-recommended")
def test_latex_compiles_with_a_real_tex_engine(tmp_path):
    run = _runs(tmp_path)
    body = report.render(run, "latex", ci=True)
    assert r"\toprule" in body and r"\textbf{" in body and r"vit\_b/16\_\#1" in body and r"resnet\_50\%" in body
    document = tmp_path / "paper.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=5mm,paperwidth=60cm]"
                        "{geometry}\n\\begin{document}\n" + body + "\n\\end{document}\n")
    done = subprocess.run([_engine(), "-interaction=nonstopmode", "-halt-on-error", document.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000


def test_latex_escapes_every_special_character():
    assert escape("a_b%c#d&e$f{g}h~i^j\\k") == (r"a\_b\%c\#d\&e\$f\{g\}h\textasciitilde{}i"
                                               r"\textasciicircum{}j\textbackslash{}k")


def test_best_value_per_row_is_bold(tmp_path):
    run = _runs(tmp_path, models=("a_good", "b_bad"), shots=())  # columns sort by model: a_good first
    lines = [line for line in report.render(run, "latex").splitlines() if line.startswith("lite")]
    assert len(lines) == 4 and all(line.split(" & ")[2].startswith(r"\textbf{") for line in lines)
    assert not any(r"\textbf{" in line.split(" & ")[3] for line in lines)


def test_long_csv_has_one_row_per_record_and_metric(tmp_path):
    run = _runs(tmp_path)
    frame = pd.read_csv(pd.io.common.StringIO(report.render(run, "long")))
    records = report.load_records(run)
    assert len(frame) == sum(len(record["metrics"]) for _, record in records) == 2 * 4 * (1 + 2 * 2)
    assert {"model", "task", "protocol", "setting", "seed", "metric", "value", "overrides"} <= set(frame.columns)
    assert not frame.duplicated(["model", "task", "protocol", "setting", "seed", "metric"]).any()


def test_ci_is_wilson_for_one_seed_of_accuracy_and_bootstrap_for_seeds(tmp_path):
    run = _runs(tmp_path, models=("m",), shots=(5,))
    frame = report.load_frame(run)
    table = report.score_table(frame)
    from vtabkit import report_intervals

    report_intervals.add_intervals(table, frame, report.load_records(run), n_resamples=300)
    record = next(r for _, r in report.load_records(run) if r["task"] == "lite_count" and r["protocol"] == "linear")
    k, n = round(record["metrics"]["top1"] * 120), 120
    expected = binomtest(k, n).proportion_ci(0.95, method="wilson")
    cell = table.cells["lite_count", "m / linear / default"]
    assert cell.interval == "wilson"
    assert (cell.low, cell.high) == pytest.approx((100 * expected.low, 100 * expected.high), rel=1e-9)
    fewshot = table.cells["lite_count", "m / fewshot / 5shot"]
    assert fewshot.interval == "bootstrap" and fewshot.low < fewshot.mean < fewshot.high


def test_reference_columns_are_marked_published_with_their_averaging(tmp_path):
    run = _runs(tmp_path, models=("m",), shots=())
    text = report.render(run, "md", reference="vit_b16_in21k")
    assert "published (not re-run): ViT-B/16 (ImageNet-21k) [finetune, 1k]" in text
    published = reference.load("vit_b16_in21k")
    assert published["citation"].iloc[0] in text


def test_reference_values_sit_on_the_vtab_rows(tmp_path):
    from vtabkit import report_reference

    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 30)
    write_record(tmp_path, "cifar100", "natural", noisy_scores(targets, 3, 0.5, rng), targets)
    table = report.score_table(report.load_frame(tmp_path))
    assert table.suite == "vtab1k" or table.suite == "vtab"
    columns = report_reference.columns("vit_b16_in21k", table)
    finetune = next(c for c in columns if "[finetune, 1k]" in c.label)
    published = reference.load("vit_b16_in21k")
    expected = published[(published["task"] == "cifar100") & (published["protocol"] == "finetune")]["score"].item()
    assert finetune.values["cifar100"] == expected


def test_plots_are_written_as_png_and_pdf(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    run = _runs(tmp_path, shots=(1, 5, 10))
    assert cli.main(["report", str(run), "--plots", str(tmp_path / "figures")]) == 0
    for name in ("tasks", "families", "fewshot"):
        for suffix in ("png", "pdf"):
            path = tmp_path / "figures" / f"{name}.{suffix}"
            assert path.stat().st_size > 1000, path


def test_cli_report_long_and_ci(tmp_path, capsys):
    run = _runs(tmp_path, models=("m",), shots=())
    assert cli.main(["report", str(run), "--format", "long"]) == 0
    assert capsys.readouterr().out.startswith("model,model_fingerprint,task")
    assert cli.main(["report", str(run), "--ci"]) == 0
    assert "[" in capsys.readouterr().out
    assert cli.main(["report", str(run), "--reference", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
