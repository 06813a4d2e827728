"""Fine-tuning's images on disk: read back by row exactly as an in-memory array would give them."""

import numpy as np
import pytest

from vtabkit import image_store
from vtabkit.image_store import ImageStore


def _batches(images, size):
    for start in range(0, len(images), size):
        yield images[start:start + size]


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(53, 5, 4, 3), dtype=np.uint8)


def test_rows_read_back_like_fancy_indexing(images, tmp_path):
    store = ImageStore.write(_batches(images, 16), tmp_path / "a.u8")
    assert store.shape == images.shape and len(store) == 53
    index = np.array([52, 0, 7, 7, 31, 0])  # unordered, repeated: as a sampled batch is
    np.testing.assert_array_equal(store[index], images[index])
    assert (tmp_path / "a.u8").stat().st_size == images.nbytes


def test_subset_and_concatenate_need_no_copy(images, tmp_path):
    train = ImageStore.write(_batches(images[:40], 7), tmp_path / "train.u8")
    val = ImageStore.write(_batches(images[40:], 7), tmp_path / "val.u8")
    rows = np.array([3, 9, 39, 1])
    np.testing.assert_array_equal(train.subset(rows)[np.arange(4)], images[rows])
    joined = image_store.concatenate([train.subset(rows), val])
    expected = np.concatenate([images[rows], images[40:]])
    np.testing.assert_array_equal(joined[np.arange(len(joined))], expected)
    np.testing.assert_array_equal(joined[np.array([5, 0, 16])], expected[[5, 0, 16]])


def test_a_temporary_store_removes_its_files(images):
    store = ImageStore.in_temporary_dir(_batches(images, 10))
    path = store.files[0]
    subset = store.subset(np.arange(5))
    del store
    assert path.exists()  # a subset still reads it
    del subset
    import gc
    gc.collect()
    assert not path.exists()


def test_too_little_disk_is_one_line_before_any_work(tmp_path, monkeypatch):
    from vtabkit.errors import UserError
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 90, 10))
    with pytest.raises(UserError, match=r"keeps its 1000 decoded images on disk .* free space there"):
        image_store.check_space(tmp_path / "work" / "images", 1000, (8, 8, 3))
    image_store.check_space(tmp_path, 0, (8, 8, 3))  # nothing to store: nothing to check
