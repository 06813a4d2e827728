"""The `fewshot` suite pinned to the standard few-shot set of the ViT/BiT papers (big_vision)."""

import pytest
import tensorflow_datasets as tfds

from vtabkit import tasks

# From the reference facts: dataset, train split, test split, classes.
EXPECTED = {
    "fewshot_imagenet": ("imagenet2012", "train[:65000]", "validation", 1000),
    "fewshot_cifar100": ("cifar100", "train", "test", 100),
    "fewshot_pets": ("oxford_iiit_pet", "train", "test", 37),
    "fewshot_birds": ("caltech_birds2011", "train", "test", 200),
    "fewshot_caltech": ("caltech101", "train", "test", 102),
    "fewshot_cars": ("cars196", "train", "test", 196),
    "fewshot_col_hist": ("colorectal_histology", "train[:2000]", "train[2000:]", 8),
    "fewshot_dtd": ("dtd", "train", "test", 47),
    "fewshot_uc_merced": ("uc_merced", "train[:1000]", "train[1000:]", 21),
}


def test_suite_lists_the_standard_set():
    suite = tasks.get_suite("fewshot")
    assert set(suite.tasks) == set(EXPECTED) and suite.protocols == ("fewshot",) and suite.regime == "full"


@pytest.mark.parametrize("task_id", sorted(EXPECTED))
def test_task_matches_reference(task_id):
    task = tasks.get_task(task_id)
    dataset, train, test, classes = EXPECTED[task_id]
    assert (task.dataset_name, task.splits["train"], task.splits["test"], task.num_classes) == (
        dataset, train, test, classes)
    assert "val" not in task.splits  # few-shot λ is fixed or chosen on training data, never on test
    builder = tfds.builder_cls(task.dataset_name)
    assert task.dataset_version in {str(builder.VERSION)} | {str(v) for v in builder.SUPPORTED_VERSIONS}
    label = builder(data_dir="/nonexistent", version=task.dataset_version).info.features["label"]
    assert label.num_classes == classes


def test_manual_downloads_are_marked():
    marked = {t for t in EXPECTED if tasks.get_task(t).manual_download}
    assert marked == {"fewshot_imagenet", "fewshot_cars"}
