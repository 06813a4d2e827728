"""Published reference numbers: the transcriptions are pinned by the means their sources quote."""

import pytest

from vtabkit import aggregate, get_suite, get_task, reference
from vtabkit.errors import UserError

SUITE = get_suite("vtab1k").tasks
FAMILIES = {task: get_task(task).family for task in SUITE}


def _summary(rows):
    return aggregate.summarize(dict(zip(rows["task"], rows["score"])), FAMILIES, SUITE)


def test_names_and_long_format():
    assert {"vtab_leaderboard", "vtab1k_published", "vit_b16_in21k"} <= set(reference.names())
    for name in reference.names():
        frame = reference.load(name)
        assert list(frame.columns) == ["reference", *reference.COLUMNS]
        assert (frame["citation"].str.len() > 10).all()  # every number is cited
        valid_tasks = set(SUITE) | set(reference.MEAN_TASKS) | set(FAMILIES.values())
        assert set(frame["task"]) <= valid_tasks
        per_task = frame[frame["task"].isin(SUITE)]
        assert (per_task["averaging"] == "").all() and (frame.loc[~frame.index.isin(per_task.index), "averaging"] != "").all()
        assert ((frame["score"] >= 0) & (frame["score"] <= 100)).all()
        assert not frame.duplicated(["method", "task", "protocol", "regime", "citation"]).any()


def test_leaderboard_has_16_resnet50_methods_per_task_for_1k_and_full():
    frame = reference.load("vtab_leaderboard")
    assert frame["method"].nunique() == 16 and set(frame["architecture"]) == {"ResNet-50"}
    counts = frame.groupby(["method", "regime"])["task"].apply(lambda t: sorted(t) == sorted(SUITE))
    assert counts.all() and len(counts) == 32


def test_leaderboard_means_match_the_means_the_sources_quote():
    """Every mean row of vtab1k_published that comes from the leaderboard equals the mean of the
    per-task transcription (1 decimal, as quoted), e.g. Sup-100% 66.4 / 73.5 / 82.5 / 52.1 / 89.7."""
    per_task = reference.load("vtab_leaderboard")
    quoted = reference.load("vtab1k_published")
    quoted = quoted[quoted["method"].isin(set(per_task["method"]))]
    assert len(quoted) == 16 + 2 * 3 + 2  # all 1k means; family and full means of Sup-100% and Sup-Rotation-100%
    for _, row in quoted.iterrows():
        rows = per_task[(per_task["method"] == row["method"]) & (per_task["regime"] == row["regime"])]
        summary = _summary(rows)
        computed = summary.plain_mean if row["task"] == "mean" else summary.family_means[row["task"]]
        assert round(computed, 1) == pytest.approx(row["score"]), (row["method"], row["task"], row["regime"])
    sup = per_task[(per_task["method"] == "Sup-100%") & (per_task["regime"] == "1k")].set_index("task")["score"]
    assert sup["cifar100"] == pytest.approx(57.0, abs=0.05) and sup["smallnorb_ele"] == pytest.approx(35.4, abs=0.05)


def test_vit_b16_per_task_gives_the_two_averaging_conventions():
    frame = reference.load("vit_b16_in21k")
    full = _summary(frame[frame["protocol"] == "finetune"])
    linear = _summary(frame[frame["protocol"] == "linear"])
    assert (round(full.group_mean, 2), round(full.plain_mean, 2)) == (68.97, 65.57)
    assert (round(linear.group_mean, 2), round(linear.plain_mean, 2)) == (57.64, 52.94)
    flagged = frame[frame["note"].str.contains("UNVERIFIED")]
    assert list(zip(flagged["task"], flagged["protocol"])) == [("cifar100", "linear")]


def test_paper_means_carry_std_and_averaging():
    frame = reference.load("vtab1k_published").set_index("method")
    assert frame.loc["ViT-H/14 (JFT)", "score"] == 77.63 and frame.loc["ViT-H/14 (JFT)", "std"] == 0.23
    assert frame.loc["Mixer-L/16 (ImageNet-21k)", "averaging"] == "plain mean over the 19 tasks"


def test_unknown_reference_is_one_line():
    with pytest.raises(UserError, match="unknown reference 'nope'; shipped references: .*vtab_leaderboard"):
        reference.load("nope")
