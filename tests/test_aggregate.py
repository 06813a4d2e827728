"""Suite means: the plain mean and the mean of group means, pinned to the published ViT-B/16 figures."""

import math

import pytest

from vtabkit import aggregate, tasks

# ViT-B/16 (ImageNet-21k) full fine-tuning per task, VTAB-1k suite order by family (VPT, Jia et al. 2022,
# as re-published by V-PETL Bench); the reference facts give plain mean 65.57, group mean 68.96.
VIT_B16_FULL = {"cifar100": 68.9, "caltech101": 87.7, "dtd": 64.3, "flowers102": 97.2, "pets": 86.9,
                "svhn": 87.4, "sun397": 38.8, "camelyon": 79.7, "eurosat": 95.7, "resisc45": 84.2,
                "retinopathy": 73.9, "clevr_count": 56.3, "clevr_dist": 58.6, "dmlab": 41.7, "kitti_dist": 65.5,
                "dsprites_loc": 57.5, "dsprites_ori": 46.7, "smallnorb_azi": 25.7, "smallnorb_ele": 29.1}


def _families():
    suite = tasks.get_suite("vtab1k")
    return suite.tasks, {task: tasks.get_task(task).family for task in suite.tasks}


def test_both_means_match_the_published_convention_gap():
    suite_tasks, families = _families()
    summary = aggregate.summarize(VIT_B16_FULL, families, suite_tasks)
    assert summary.complete and summary.completeness == "19 of 19 tasks"
    assert summary.plain_mean == pytest.approx(65.57, abs=0.01)
    assert summary.group_mean == pytest.approx(68.96, abs=0.01)
    assert summary.family_means["specialized"] == pytest.approx((79.7 + 95.7 + 84.2 + 73.9) / 4)


@pytest.mark.parametrize("gap", [None, math.nan, "absent"])
def test_a_missing_task_gives_a_count_not_a_mean(gap):
    suite_tasks, families = _families()
    scores = dict(VIT_B16_FULL)
    if gap == "absent":
        del scores["dmlab"]
    else:
        scores["dmlab"] = gap
    summary = aggregate.summarize(scores, families, suite_tasks)
    assert summary.plain_mean is None and summary.group_mean is None
    assert summary.completeness == "18 of 19 tasks"
    assert summary.family_means["structured"] is None and summary.family_means["natural"] is not None
