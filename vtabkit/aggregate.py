"""Suite means, computed one way for every output (report, compare, leaderboard).

VTAB, BiT, ViT and Mixer headline the plain mean over the 19 tasks; the parameter-efficient
fine-tuning literature headlines the mean of the three group means. The two differ by several
points (ViT-B/16 full fine-tuning: 65.6 vs 69.0), so both are computed, each under its own
name, and neither is computed over fewer tasks than the suite has: an incomplete column gets a
completeness count ("18 of 19 tasks") instead of a mean.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class SuiteSummary:
    """The means of one column of per-task scores over a suite."""

    plain_mean: float | None  # unweighted mean over the suite's tasks; None when incomplete
    group_mean: float | None  # unweighted mean of the family means; None when incomplete
    family_means: dict[str, float | None]  # None for a family missing a task
    tasks_present: int
    tasks_expected: int

    @property
    def complete(self) -> bool:
        return self.tasks_present == self.tasks_expected

    @property
    def completeness(self) -> str:
        return f"{self.tasks_present} of {self.tasks_expected} tasks"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarize(scores: Mapping[str, float | None], families: Mapping[str, str],
              suite_tasks: Sequence[str] | None = None) -> SuiteSummary:
    """Plain mean, mean of family means and per-family means of ``scores`` (task → score).

    ``families``: task → family. ``suite_tasks``: the tasks a complete column has (default: the
    tasks in ``scores``). A task with no score (missing, None or NaN) makes every mean it takes
    part in None.
    """
    expected = list(suite_tasks) if suite_tasks is not None else list(scores)
    present = {task: float(scores[task]) for task in expected
               if scores.get(task) is not None and not math.isnan(float(scores[task]))}
    by_family: dict[str, list[str]] = {}
    for task in expected:
        by_family.setdefault(families[task], []).append(task)
    family_means = {family: (_mean([present[t] for t in members]) if all(t in present for t in members) else None)
                    for family, members in by_family.items()}
    complete = len(present) == len(expected) and bool(expected)
    return SuiteSummary(plain_mean=_mean(list(present.values())) if complete else None,
                        group_mean=_mean(list(family_means.values())) if complete else None,
                        family_means=family_means, tasks_present=len(present), tasks_expected=len(expected))
