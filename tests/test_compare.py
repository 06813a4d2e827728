"""`vtabkit compare`: paired bootstrap intervals and McNemar p-values pinned against direct computations."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from scipy.stats import binomtest

from runs_for_tests import noisy_scores, write_record
from vtabkit import cli, compare, metrics, predictions, report_examples
from vtabkit.errors import UserError

N = 240


def _pair(tmp_path, accuracies=(0.8, 0.7), shuffle_b=True, tasks=(("t1", "natural"), ("t2", "structured"))):
    rng = np.random.default_rng(0)
    data = {}
    for task, family in tasks:
        targets = rng.integers(0, 6, N)
        ids = np.array([f"{task}-{i}" for i in range(N)])
        for run, accuracy in zip("ab", accuracies):
            scores = noisy_scores(targets, 6, accuracy, rng)
            order = rng.permutation(N) if (run == "b" and shuffle_b) else np.arange(N)
            write_record(tmp_path / run, task, family, scores[order], targets[order], ids=ids[order], model=run)
            data[task, run] = dict(zip(ids[order], zip(scores[order], targets[order])))
    return data


def _direct_interval(by_id_a, by_id_b, key, metric, n_resamples, seed=0):
    """A hand-written loop: one resample at a time, the metric recomputed on both runs' rows."""
    ids = list(by_id_a)  # run A's order, which compare keeps
    scores_a = np.array([by_id_a[i][0] for i in ids]); targets = np.array([by_id_a[i][1] for i in ids])
    scores_b = np.array([by_id_b[i][0] for i in ids])
    function = metrics.get_metric(metric).function
    rng = np.random.default_rng(compare._task_seed(seed, key))
    differences = []
    for _ in range(n_resamples):
        rows = rng.integers(0, len(ids), size=len(ids))
        differences.append(100 * (function(scores_a[rows], targets[rows]) - function(scores_b[rows], targets[rows])))
    return np.percentile(differences, [2.5, 97.5])


def test_paired_bootstrap_matches_a_direct_loop(tmp_path):
    data = _pair(tmp_path)
    rows, summaries, _ = compare.compare(tmp_path / "a", tmp_path / "b", n_resamples=300)
    for row in rows:
        low, high = _direct_interval(data[row.task, "a"], data[row.task, "b"],
                                     (row.task, "test", "linear", "default", "1k"), "top1", 300)
        assert (row.low, row.high) == pytest.approx((low, high), abs=1e-9)
        assert row.diff == pytest.approx(100 * (metrics.top1(*_arrays(data[row.task, "a"]))
                                                - metrics.top1(*_arrays(data[row.task, "b"]))))
    # The suite mean: resample r of the suite is the mean of resample r of every task.
    suite = np.mean([row.samples for row in rows], axis=0)
    assert (summaries[0].low, summaries[0].high) == pytest.approx(tuple(np.percentile(suite, [2.5, 97.5])))
    assert summaries[0].diff == pytest.approx(np.mean([row.diff for row in rows]))


def _arrays(by_id):
    return np.array([v[0] for v in by_id.values()]), np.array([v[1] for v in by_id.values()])


def test_other_metrics_are_recomputed_on_every_resample(tmp_path):
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 4, 150)
    by_id = {}
    for run, accuracy in zip("ab", (0.6, 0.5)):
        scores = noisy_scores(targets, 4, accuracy, rng) / 4
        write_record(tmp_path / run, "t", "natural", scores, targets, metric="mean_per_class_recall")
        by_id[run] = dict(zip([f"t-{i}" for i in range(150)], zip(scores, targets)))
    (row,), _, _ = compare.compare(tmp_path / "a", tmp_path / "b", n_resamples=120)
    low, high = _direct_interval(by_id["a"], by_id["b"], ("t", "test", "linear", "default", "1k"),
                                 "mean_per_class_recall", 120)
    assert (row.low, row.high) == pytest.approx((low, high), abs=1e-9) and row.p_mcnemar is None


def test_self_compare_is_exactly_zero(tmp_path):
    _pair(tmp_path)
    rows, summaries, _ = compare.compare(tmp_path / "a", tmp_path / "a", n_resamples=200)
    assert all((row.diff, row.low, row.high, row.verdict) == (0.0, 0.0, 0.0, "tie") for row in rows)
    assert (summaries[0].diff, summaries[0].low, summaries[0].high) == (0.0, 0.0, 0.0)
    assert (summaries[0].wins, summaries[0].ties, summaries[0].losses) == (0, 2, 0)


def test_runs_on_different_test_examples_are_refused_naming_the_task(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 50)
    write_record(tmp_path / "a", "dtd", "natural", noisy_scores(targets, 3, 0.5, rng), targets)
    other_ids = np.array([f"dtd-{i}" for i in range(1, 51)])  # one id differs: another split
    write_record(tmp_path / "b", "dtd", "natural", noisy_scores(targets, 3, 0.5, rng), targets, ids=other_ids)
    with pytest.raises(UserError, match="dtd") as error:
        compare.compare(tmp_path / "a", tmp_path / "b", n_resamples=10)
    assert "\n" not in str(error.value) and "different test examples" in str(error.value)


def test_mcnemar_matches_scipy_binomtest_on_discordant_counts(tmp_path):
    data = _pair(tmp_path, accuracies=(0.75, 0.65))
    rows, _, _ = compare.compare(tmp_path / "a", tmp_path / "b", n_resamples=50)
    for row in rows:
        ids = list(data[row.task, "a"])
        right_a = np.array([np.argmax(data[row.task, "a"][i][0]) == data[row.task, "a"][i][1] for i in ids])
        right_b = np.array([np.argmax(data[row.task, "b"][i][0]) == data[row.task, "b"][i][1] for i in ids])
        only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
        assert only_a + only_b > 0
        assert row.p_mcnemar == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-12)


def test_seeds_are_averaged_with_their_spread(tmp_path):
    rng = np.random.default_rng(5)
    targets = rng.integers(0, 5, 100)
    per_seed = {"a": [], "b": []}
    for run, accuracy in zip("ab", (0.7, 0.5)):
        for seed in range(3):
            record = write_record(tmp_path / run, "t", "natural", noisy_scores(targets, 5, accuracy, rng), targets,
                                  protocol="fewshot", setting="10shot", seed=seed)
            per_seed[run].append(100 * record["metrics"]["top1"])
        write_record(tmp_path / run, "t", "natural", noisy_scores(targets, 5, accuracy, rng), targets,
                     protocol="fewshot", setting="5shot", seed=0)
    rows, _, _ = compare.compare(tmp_path / "a", tmp_path / "b", n_resamples=100)
    assert [r.setting for r in rows] == ["5shot", "10shot"]  # shots in numeric order, not as text
    row = rows[1]
    assert row.seeds_a == row.seeds_b == 3 and rows[0].seeds_a == 1
    assert row.a == pytest.approx(np.mean(per_seed["a"])) and row.a_std == pytest.approx(np.std(per_seed["a"], ddof=1))
    assert row.diff == pytest.approx(np.mean(per_seed["a"]) - np.mean(per_seed["b"]))


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    n, covered, trials = 200, 0, 300
    for trial in range(trials):
        targets = rng.integers(0, 2, n)
        # Model A is right with p 0.75, B with 0.70, correlated through a shared difficulty.
        hard = rng.random(n)
        sides = []
        for threshold in (0.75, 0.70):
            right = hard < threshold
            scores = np.zeros((n, 2), np.float32)
            scores[np.arange(n), np.where(right, targets, 1 - targets)] = 1.0
            arrays = predictions.compact(np.arange(n).astype(str), scores, targets, target_kind="single")
            sides.append(report_examples.Examples(arrays["ids"], "top1", arrays))
        _, samples_a = report_examples.seed_mean_distribution([sides[0]], 1000, trial)
        _, samples_b = report_examples.seed_mean_distribution([sides[1]], 1000, trial)
        low, high = np.percentile(samples_a - samples_b, [2.5, 97.5])
        covered += low <= 0.05 <= high
    assert 0.91 <= covered / trials <= 0.985


def test_cli_compare_formats_and_one_line_errors(tmp_path, capsys):
    _pair(tmp_path)
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "50",
                     "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("task,family,eval_set") and "suite mean (2 tasks)" in out
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "50"]) == 0
    assert "| t1 | test |" in capsys.readouterr().out
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex; apt-get install texlive-latex-recommended")
def test_compare_latex_compiles(tmp_path):
    _pair(tmp_path)
    body = compare.render(tmp_path / "a", tmp_path / "b", "latex", n_resamples=50)
    (tmp_path / "c.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[paperwidth=50cm]"
                                    "{geometry}\n\\begin{document}\n" + body + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "c.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
