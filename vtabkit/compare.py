"""`vtabkit compare RUN_A RUN_B`: paired differences with confidence intervals, task by task.

For every (task, eval set, protocol, setting, regime) both runs have, the two runs' stored
predictions are joined by example id (refused in one line when the ids differ) and the primary
metric is recomputed on every bootstrap resample of the examples: the *same* rows for both
runs and for every seed, so the interval is of the paired difference. Several seeds (few-shot)
are compared as the mean over seeds, with the spread over seeds shown beside each score.

The suite mean difference (one per protocol / setting / regime, over the main eval sets) is
the mean of the per-task differences on each resample index: each task resamples its own
examples (its stream seeded from ``--seed`` and the task), and resample r of the suite is the
mean of resample r of every task. A *win* is a difference whose interval excludes 0 in A's
favour (lower is better for ece, nll, brier); an interval that contains 0 is a tie.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from vtabkit import metrics, report_examples, stats
from vtabkit.errors import UserError
from vtabkit.report import load_records
from vtabkit.report_latex import table
from vtabkit.report_table import setting_order

FORMATS = ("md", "csv", "latex")
_KEY = ("task", "eval_set", "protocol", "setting", "regime")


@dataclasses.dataclass
class Row:
    """One compared (task, eval set, protocol, setting, regime); scores ×100."""

    task: str
    family: str
    eval_set: str
    main: bool
    protocol: str
    setting: str
    regime: str
    metric: str
    n: int
    seeds_a: int
    seeds_b: int
    a: float
    a_std: float | None
    b: float
    b_std: float | None
    diff: float
    low: float
    high: float
    p_mcnemar: float | None
    verdict: str  # "A", "B" or "tie"
    samples: np.ndarray = dataclasses.field(repr=False, default=None)


@dataclasses.dataclass
class Summary:
    """The suite mean difference of one protocol / setting / regime."""

    protocol: str
    setting: str
    regime: str
    tasks: int
    diff: float
    low: float
    high: float
    wins: int
    ties: int
    losses: int


def _grouped(run_dir: Path, which: str) -> dict[tuple, dict[int, tuple[Path, dict]]]:
    """key → seed → (run dir, record); one model and one set of settings per key."""
    cells: dict[tuple, dict[int, tuple[Path, dict]]] = {}
    for where, record in load_records(run_dir):
        key = tuple(str(record.get(field, "")) for field in _KEY)
        seeds = cells.setdefault(key, {})
        if record["seed"] in seeds:
            raise UserError(f"{which} ({run_dir}) holds several results for {key[0]} / {key[1]} {key[2]} "
                            f"{key[3]} seed {record['seed']} (other models or settings); give compare one "
                            "model and one setting per run directory")
        seeds[record["seed"]] = (where, record)
    return cells


def _task_seed(seed: int, key: tuple) -> int:
    # Each task gets its own resample stream (tasks are independent samples), reproducible from --seed.
    return (seed * 1_000_003 + zlib.crc32("/".join(key).encode())) % (2 ** 63)


def _verdict(low: float, high: float, higher_is_better: bool) -> str:
    if low > 0 or high < 0:
        a_higher = low > 0
        return "A" if a_higher == higher_is_better else "B"
    return "tie"


def _mcnemar(a: dict[int, report_examples.Examples], b: dict[int, report_examples.Examples]) -> float | None:
    """Exact McNemar on matched seeds; with several, the largest p (the most cautious)."""
    if len(a) == 1 and len(b) == 1:
        pairs = [(next(iter(a.values())), next(iter(b.values())))]
    else:
        pairs = [(a[seed], b[seed]) for seed in sorted(set(a) & set(b))]
    values = []
    for first, second in pairs:
        correct_a, correct_b = first.correct(), second.correct()
        if correct_a is None or correct_b is None:
            return None
        values.append(stats.mcnemar_exact(correct_a > 0.5, correct_b > 0.5))
    return max(values) if values else None


def _compare_cell(key: tuple, cell_a: dict, cell_b: dict, n_resamples: int, seed: int) -> Row:
    record = next(iter(cell_a.values()))[1]
    where = f"task {key[0]} / {key[1]} ({key[2]} {key[3]})"
    metric_a = {r["primary_metric"] for _, r in cell_a.values()}
    metric_b = {r["primary_metric"] for _, r in cell_b.values()}
    if metric_a != metric_b or len(metric_a) != 1:
        raise UserError(f"{where}: the runs score different primary metrics ({', '.join(sorted(metric_a | metric_b))})")
    a = {s: report_examples.load(run_dir, r) for s, (run_dir, r) in sorted(cell_a.items())}
    reference = next(iter(a.values()))
    a = {s: report_examples.aligned(reference, examples, where) for s, examples in a.items()}
    b = {s: report_examples.aligned(reference, report_examples.load(run_dir, r), where)
         for s, (run_dir, r) in sorted(cell_b.items())}
    task_seed = _task_seed(seed, key)
    value_a, samples_a = report_examples.seed_mean_distribution(list(a.values()), n_resamples, task_seed)
    value_b, samples_b = report_examples.seed_mean_distribution(list(b.values()), n_resamples, task_seed)
    samples = 100.0 * (samples_a - samples_b)  # same rows in both: the paired difference per resample
    low, high = stats.percentile_interval(samples)
    name = metric_a.pop()
    higher = metrics.get_metric(name.partition("@")[0]).higher_is_better

    def spread(cell: dict[int, report_examples.Examples]) -> float | None:
        return float(np.std([100.0 * e.score() for e in cell.values()], ddof=1)) if len(cell) > 1 else None

    return Row(task=key[0], family=record["family"], eval_set=key[1], main=record.get("eval", {}).get("main", True),
               protocol=key[2], setting=key[3], regime=key[4], metric=name, n=reference.n, seeds_a=len(a),
               seeds_b=len(b), a=100.0 * value_a, a_std=spread(a), b=100.0 * value_b, b_std=spread(b),
               diff=100.0 * value_a - 100.0 * value_b, low=low, high=high, p_mcnemar=_mcnemar(a, b),
               verdict=_verdict(low, high, higher), samples=samples)


def compare(run_a: Path, run_b: Path, *, n_resamples: int = stats.DEFAULT_RESAMPLES,
            seed: int = stats.DEFAULT_SEED) -> tuple[list[Row], list[Summary], list[str]]:
    """Rows per compared cell, suite summaries, and notes (cells only one run has)."""
    cells_a, cells_b = _grouped(Path(run_a), "RUN_A"), _grouped(Path(run_b), "RUN_B")
    common = [key for key in cells_a if key in cells_b]
    if not common:
        raise UserError(f"{run_a} and {run_b} share no task / eval set / protocol / setting; "
                        "compare runs of the same suite and protocol")
    rows = [_compare_cell(key, cells_a[key], cells_b[key], n_resamples, seed) for key in common]
    rows.sort(key=lambda row: (row.protocol, setting_order(row.setting), row.regime, _suite_position(row.task),
                               not row.main, row.eval_set))
    summaries = []
    for (protocol, setting, regime), group in _groups(rows).items():
        main = [row for row in group if row.main]
        samples = np.mean([row.samples for row in main], axis=0)
        low, high = stats.percentile_interval(samples)
        verdicts = [row.verdict for row in main]
        summaries.append(Summary(protocol, setting, regime, len(main), float(np.mean([row.diff for row in main])),
                                 low, high, verdicts.count("A"), verdicts.count("tie"), verdicts.count("B")))
    notes = [f"only in {which}: {' / '.join(key[:2])} {key[2]} {key[3]} {key[4]}"
             for which, mine, theirs in (("A", cells_a, cells_b), ("B", cells_b, cells_a))
             for key in mine if key not in theirs]
    return rows, summaries, notes


def _groups(rows: list[Row]) -> dict[tuple, list[Row]]:
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.protocol, row.setting, row.regime), []).append(row)
    return {key: group for key, group in groups.items() if any(row.main for row in group)}


_ORDER: dict[str, int] = {}


def _suite_position(task: str) -> tuple:
    """Tasks in the order of the suites that list them (VTAB's order), unknown tasks last by name."""
    if not _ORDER:
        from vtabkit import tasks

        for suite in tasks.registry().suites.values():
            for task_id in suite.tasks:
                _ORDER.setdefault(task_id, len(_ORDER))
    return (_ORDER.get(task, len(_ORDER)), task)


def frame(rows: list[Row], summaries: list[Summary]) -> pd.DataFrame:
    """The comparison as one numeric table (the csv format): cell rows, then suite-mean rows."""
    columns = ["task", "family", "eval_set", "protocol", "setting", "regime", "metric", "n", "seeds_a", "a",
               "a_std", "seeds_b", "b", "b_std", "diff", "ci_low", "ci_high", "p_mcnemar", "verdict",
               "wins", "ties", "losses"]
    records = [{**{field: getattr(row, field) for field in ("task", "family", "eval_set", "protocol", "setting",
                                                          "regime", "metric", "n", "seeds_a", "a", "a_std",
                                                          "seeds_b", "b", "b_std", "diff", "p_mcnemar",
                                                          "verdict")},
                "ci_low": row.low, "ci_high": row.high} for row in rows]
    records += [{"task": f"suite mean ({summary.tasks} tasks)", "family": "all", "eval_set": "main",
                 "protocol": summary.protocol, "setting": summary.setting, "regime": summary.regime,
                 "diff": summary.diff, "ci_low": summary.low, "ci_high": summary.high,
                 "wins": summary.wins, "ties": summary.ties, "losses": summary.losses} for summary in summaries]
    table = pd.DataFrame.from_records(records, columns=columns)
    return table.astype({column: "Int64" for column in ("n", "seeds_a", "seeds_b", "wins", "ties", "losses")})


def _score_text(value: float, spread: float | None, seeds: int) -> str:
    return f"{value:.2f}" if spread is None else f"{value:.2f} ± {spread:.2f} ({seeds} seeds)"


def _p_text(p: float | None) -> str:
    return "–" if p is None else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


def render(run_a: Path, run_b: Path, output_format: str = "md", *, n_resamples: int = stats.DEFAULT_RESAMPLES,
           seed: int = stats.DEFAULT_SEED) -> str:
    """The comparison of two run directories as markdown, csv or LaTeX."""
    if output_format not in FORMATS:
        raise UserError(f"unknown compare format {output_format!r}; use one of {', '.join(FORMATS)}")
    rows, summaries, notes = compare(run_a, run_b, n_resamples=n_resamples, seed=seed)
    if output_format == "csv":
        return frame(rows, summaries).to_csv(index=False)
    header = ["task", "eval set", "protocol / setting", "metric", "A", "B", "A − B", "95% CI", "p (McNemar)",
              "better"]
    lines = [[row.task, row.eval_set, f"{row.protocol} / {row.setting}" + (f" [{row.regime}]" if row.regime else ""),
              row.metric, _score_text(row.a, row.a_std, row.seeds_a), _score_text(row.b, row.b_std, row.seeds_b),
              f"{row.diff:+.2f}", f"[{row.low:+.2f}, {row.high:+.2f}]",
              _p_text(row.p_mcnemar) + (f" (max of {min(row.seeds_a, row.seeds_b)} seeds)"
                                        if row.p_mcnemar is not None and min(row.seeds_a, row.seeds_b) > 1 else ""),
              row.verdict]
             for row in rows]
    first_summary = len(lines)
    lines += [[f"suite mean ({s.tasks} tasks)", "main", f"{s.protocol} / {s.setting}" + (f" [{s.regime}]" if s.regime else ""),
               "", "", "", f"{s.diff:+.2f}", f"[{s.low:+.2f}, {s.high:+.2f}]", "",
               f"A {s.wins} / tie {s.ties} / B {s.losses}"] for s in summaries]
    caption = (f"A = {run_a}, B = {run_b}. Primary metric ×100, mean over seeds (± std over seeds); "
               f"95% paired percentile bootstrap over test examples ({n_resamples} resamples, seed {seed}); "
               "better: the run the interval favours (tie: it contains 0).")
    if output_format == "latex":
        return table(header, lines, rules_before=[first_summary], caption=caption, text_columns=4)
    text = [caption, "", _markdown(header, lines)]
    if notes:
        text += ["", "Not compared (in one run only):", ""] + [f"- {note}" for note in notes]
    return "\n".join(text)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header))] + [line(row) for row in rows])

