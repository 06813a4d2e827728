"""Feature extraction: every example once, fixed batch shape, checked output, honest cache keys."""

import dataclasses
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vtabkit import features, tasks
from vtabkit.errors import UserError
from vtabkit.models.model import Model, fingerprint

MOCK = dict(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=100)


def _mean_colour(resolution: int = 8, **kwargs) -> Model:
    model = Model(apply=lambda params, x: jnp.mean(x, axis=(1, 2)), resolution=resolution, name="mean", **kwargs)
    model.fingerprint = fingerprint(model)
    return model


def test_every_example_once_with_padded_last_batch(mnist_task_dir):
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    calls = []

    def apply(params, images):
        calls.append(images.shape)
        return images.reshape(len(images), -1)[:, :4]

    model = Model(apply=apply, resolution=28, jittable=False, name="pixels4")
    with tfds.testing.mock_data(**MOCK):
        feats, labels, ids = features.compute_features(model, task.view("test"), data_dir=None, batch_size=32)
        reference = np.stack([example["image"] for example in tfds.as_numpy(
            tfds.load("mnist", split="test", shuffle_files=False))])
    assert feats.shape == (100, 4) and labels.shape == (100,)  # 100 = 3 x 32 + 4: nothing dropped
    assert list(ids) == [f"mnist-test-00000-of-00001__{i}" for i in range(100)]  # TFDS ids, in order
    assert set(calls) == {(32, 28, 28, 3)}  # one shape for every call, the last batch padded
    np.testing.assert_allclose(feats[:, 0], reference.reshape(100, -1)[:, 0] / 255.0, atol=1e-6)


@pytest.mark.parametrize("apply, message", [
    (lambda p, x: jnp.mean(x, axis=(1, 2, 3)), "must return a 2-D"),
    (lambda p, x: jnp.zeros((3, 5)), "for a batch of 16 images"),
    (lambda p, x: jnp.full((x.shape[0], 2), jnp.nan), "NaN or inf features for 100 of 100"),
])
def test_bad_model_output_names_the_model(mnist_task_dir, apply, message):
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    model = Model(apply=apply, resolution=8, name="broken")
    with tfds.testing.mock_data(**MOCK), pytest.raises(UserError, match=f"model 'broken'.*{message}"):
        features.compute_features(model, task.view("test"), data_dir=None, batch_size=16)


def _numpy_mean(params, images):
    return np.asarray(images).mean(axis=(1, 2))  # numpy: fails on jit's traced arrays


@pytest.mark.parametrize("apply, error", [
    (_numpy_mean, "TracerArrayConversionError"),
    (lambda p, x: x.mean(axis=(1, 2)) if float(x.max()) > 0 else x, "ConcretizationTypeError"),
])
def test_numpy_under_jit_suggests_jittable_false(mnist_task_dir, apply, error):
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    model = Model(apply=apply, resolution=8, name="numpy_model")
    with tfds.testing.mock_data(**MOCK), pytest.raises(UserError) as raised:
        features.compute_features(model, task.view("test"), data_dir=None, batch_size=16)
    message = str(raised.value)
    assert error in message and "jittable=False" in message and "\n" not in message
    model = dataclasses.replace(model, jittable=False)  # as suggested: the same apply, on numpy batches
    with tfds.testing.mock_data(**MOCK):
        feats, _, _ = features.compute_features(model, task.view("test"), data_dir=None, batch_size=16)
    assert feats.shape == (100, 3)


def test_model_nothing_identifies_is_never_cached(mnist_task_dir, tmp_path):
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    calls = []

    def apply(params, images):
        calls.append(1)
        return images.mean(axis=(1, 2))

    model = Model(apply=apply, resolution=8, jittable=False, name="anonymous")
    assert not model.cacheable
    with tfds.testing.mock_data(**MOCK):
        for _ in range(2):
            features.load_or_compute(model, task.view("test"), data_dir=None, cache_dir=tmp_path / "cache",
                                     batch_size=50)
    assert len(calls) == 4 and not (tmp_path / "cache").exists()  # computed twice, nothing stored


def test_cache_key_changes_with_every_input(mnist_task_dir, tmp_path):
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    base = _mean_colour(params={"w": np.zeros(3)})
    other_weights = _mean_colour(params={"w": np.ones(3)})
    other_resolution = _mean_colour(resolution=16, params={"w": np.zeros(3)})
    other_range = _mean_colour(params={"w": np.zeros(3)}, value_range=(-1.0, 1.0))
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "t.yaml").write_text(
        (mnist_task_dir / "mock_mnist.yaml").read_text().replace("test: test", "test: test[:50%]"))
    other_task = tasks.get_task("mock_mnist", [changed])
    key = features.cache_key(base, task.view("test"))
    assert key == features.cache_key(_mean_colour(params={"w": np.zeros(3)}), task.view("test"))
    others = {features.cache_key(m, task.view("test")) for m in (other_weights, other_resolution, other_range)}
    others |= {features.cache_key(base, task.view("train800")), features.cache_key(base, other_task.view("test"))}
    assert key not in others and len(others) == 5


def test_cache_is_keyed_by_the_images_not_the_task(mnist_task_dir, tmp_path):
    """Another task on the same images (other labels, other description) shares the features;
    the labels are keyed apart."""
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    relabelled = tmp_path / "relabelled"
    relabelled.mkdir()
    (relabelled / "t.yaml").write_text((mnist_task_dir / "mock_mnist.yaml").read_text()
                                       .replace("task: mock_mnist", "task: mock_parity\ndescription: odd or even")
                                       .replace("num_classes: 10", "num_classes: 5\n"
                                                "label: {rule: floor_divide, key: label, divisor: 2}"))
    other = tasks.get_task("mock_parity", [relabelled])
    model = _mean_colour(params={"w": np.zeros(3)})
    assert features.cache_key(model, task.view("test")) == features.cache_key(model, other.view("test"))
    assert features.labels_key(task.view("test")) != features.labels_key(other.view("test"))
    described = dataclasses.replace(task, definition=dict(task.definition, description="new words"))
    assert described.hash == task.hash  # documentation does not change what is computed


def test_cache_reuses_features_without_running_the_model(mnist_task_dir, tmp_path):
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    calls = []

    def apply(params, images):
        calls.append(1)
        return images.mean(axis=(1, 2))

    model = Model(apply=apply, resolution=8, jittable=False, name="counted", fingerprint="f1")
    with tfds.testing.mock_data(**MOCK):
        first = features.load_or_compute(model, task.view("test"), data_dir=None, cache_dir=tmp_path, batch_size=50)
        count = len(calls)
        second = features.load_or_compute(model, task.view("test"), data_dir=None, cache_dir=tmp_path, batch_size=50)
    assert count == 2 and len(calls) == 2  # the second call read the cache
    assert not first.from_cache and second.from_cache
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.ids, second.ids)
    np.testing.assert_array_equal(first.targets, second.targets)
    assert not list(tmp_path.glob("*.tmp"))  # no half-written cache entries left behind


SHARDED_SCRIPT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np, tensorflow_datasets as tfds
from vtabkit import features, tasks
from vtabkit.models.model import Model
task = tasks.get_task("mock_mnist", [sys.argv[1]])
weights = np.random.default_rng(0).normal(size=(8 * 8 * 3, 5)).astype(np.float32)
model = Model(apply=lambda p, x: jnp.tanh(x.reshape(len(x), -1) @ p), params=weights, resolution=8,
              name="proj", fingerprint="p")
with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=100):
    feats, labels, _ = features.compute_features(model, task.view("test"), data_dir=None, batch_size=30)
print(json.dumps({"devices": jax.device_count(), "features": feats.tolist()}))
"""


def test_four_simulated_devices_give_the_same_features(mnist_task_dir):
    outputs = []
    for count in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
        done = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(mnist_task_dir)], env=env,
                              capture_output=True, text=True, check=True)
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [o["devices"] for o in outputs] == [1, 4]
    np.testing.assert_allclose(outputs[0]["features"], outputs[1]["features"], atol=1e-5)
    assert len(outputs[1]["features"]) == 100  # batch 30 → 32 on 4 devices, nothing dropped


def test_one_compilation_serves_every_split(mnist_task_dir):
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    traces = []

    def apply(params, images):
        traces.append(images.shape)  # runs once per compilation, not per call
        return jnp.mean(images, axis=(1, 2))

    model = Model(apply=apply, resolution=8, name="traced", fingerprint="t")
    with tfds.testing.mock_data(**MOCK):
        for split in ("train800", "val200", "test"):
            features.compute_features(model, task.view(split), data_dir=None, batch_size=32)
    assert traces == [(32, 8, 8, 3)]


def test_next_batch_is_dispatched_before_the_previous_result_is_waited_for(mnist_task_dir, monkeypatch):
    """The device computes batch i while the host reads and sends batch i+1 (issue 13.3)."""
    task = tasks.get_task("mock_mnist", [mnist_task_dir])
    model = _mean_colour(resolution=8)
    events = []

    class Pending:  # stands for a JAX array still being computed
        def __init__(self, number, images):
            self.number, self.images = number, images

        def __array__(self, dtype=None, copy=None):
            events.append(("wait", self.number))
            return np.asarray(self.images).mean(axis=(1, 2))

    def fake_dispatch(model, batch_size):
        def run(images):
            number = sum(1 for kind, _ in events if kind == "dispatch")
            events.append(("dispatch", number))
            return Pending(number, images)
        return run, batch_size

    monkeypatch.setattr(features, "dispatch_function", fake_dispatch)
    with tfds.testing.mock_data(**MOCK):
        feats, _, _ = features.compute_features(model, task.view("test"), data_dir=None, batch_size=32)
    assert feats.shape == (100, 3)
    assert events == [("dispatch", 0), ("dispatch", 1), ("wait", 0), ("dispatch", 2), ("wait", 1),
                      ("dispatch", 3), ("wait", 2), ("wait", 3)]
