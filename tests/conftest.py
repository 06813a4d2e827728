"""Shared fixtures: an isolated TFDS data dir, feature cache and task folder per test session."""

import os
import textwrap

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A TFDS data dir shared by the tests (vtabkit's own builders prepare into it once)."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never touch the user's ~/.cache/vtabkit from tests.
    monkeypatch.setenv("VTABKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def mnist_task_dir(tmp_path):
    """A folder with one task on TFDS mnist, for tests under tfds.testing.mock_data."""
    folder = tmp_path / "mock_tasks"
    folder.mkdir()
    (folder / "mock_mnist.yaml").write_text(textwrap.dedent("""
        task: mock_mnist
        family: natural
        dataset: mnist:3.0.1
        num_classes: 10
        splits:
          train800: train[:800]
          val200: train[800:1000]
          train800val200: train[:800]+train[800:1000]
          test: test
    """))
    return folder
