"""Fine-tuning: the schedule, a decreasing loss, selection without test data, exact resume,
and the same result on 1 and 4 (simulated) devices."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from vtabkit import features, tasks
from vtabkit.errors import UserError
from vtabkit.image_store import ImageStore
from vtabkit.models.model import Model
from vtabkit.models.vit import ViT
from vtabkit.protocols import finetune, merge_config
from vtabkit.protocols.common import FitContext, Images

SMALL = {"batch_size": 32, "micro_batch_size": 16, "checkpoint_every": 5, "sweep": "quick",
         "sweeps": {"quick": {"lr": [0.05, 0.01], "steps": [12]}}}


def tiny_vit() -> Model:
    module = ViT(patch_size=(8, 8), width=32, depth=1, num_heads=2, mlp_dim=64)
    params = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))["params"]
    return Model(apply=lambda p, x: module.apply({"params": p}, x)[1]["pre_logits"], params=params,
                 resolution=32, value_range=(-1.0, 1.0), module=module, name="tiny_vit")


def test_schedule_warms_up_then_decays_stepwise():
    config = merge_config("finetune", None)
    learning_rate = finetune.schedule(0.1, 1000, config)
    assert float(learning_rate(0)) == 0.0
    assert float(learning_rate(40)) == pytest.approx(0.05)  # halfway through 80 warm-up steps
    assert float(learning_rate(80)) == pytest.approx(0.1)
    assert float(learning_rate(299)) == pytest.approx(0.1) and float(learning_rate(300)) == pytest.approx(0.01)
    assert float(learning_rate(600)) == pytest.approx(0.001) and float(learning_rate(900)) == pytest.approx(1e-4)


def test_default_sweep_is_vtab_lightweight():
    config = merge_config("finetune", None)
    assert config["sweeps"]["lightweight"] == {"lr": [0.1, 0.01], "steps": [2500, 10000]}
    assert config["batch_size"] == 512 and config["momentum"] == 0.9 and config["sweep"] == "lightweight"


@pytest.fixture(scope="module")
def digits_images(data_dir):
    task = tasks.get_task("lite_digits")
    return task, finetune.load_images(task.view("train800"), tiny_vit(), data_dir)


def _images(task, split, data_dir) -> Images:
    targets, ids = features.load_targets(task.view(split), data_dir=data_dir, cache_dir=None)
    return Images(view=task.view(split), targets=targets, ids=ids, data_dir=data_dir)


def test_sweep_selects_on_val_and_the_head_predicts_once(digits_images, data_dir, monkeypatch):
    task, _ = digits_images
    seen = []
    original = finetune.Trainer.logits

    def spying_logits(self, params, view, data_dir):
        seen.append(view.split)
        return original(self, params, view, data_dir)

    monkeypatch.setattr(finetune.Trainer, "logits", spying_logits)
    config = merge_config("finetune", SMALL)
    head, details = finetune.fit(_images(task, "train800", data_dir), _images(task, "val200", data_dir),
                                 num_classes=10, target="single", config=config,
                                 context=FitContext(model=tiny_vit()))
    assert seen == ["train[800:1000]", "train[800:1000]"]  # the choice reads val only
    test = _images(task, "test", data_dir)
    scores = finetune.predict(head, test)
    assert seen[2:] == ["test"] and scores.shape == (797, 10)
    best = max(details["sweep"].values(), key=lambda member: member["val_top1"])
    assert details["sweep"][f"lr={details['lr']:g},steps=12"] == best
    assert details["final_losses"][1] < details["final_losses"][0]  # the loss goes down
    assert details["final_losses"][0] == pytest.approx(np.log(10), rel=1e-4)  # zero head: uniform start
    assert details["accumulation"] == 2 and details["num_train"] == 800 and details["num_val"] == 200
    assert 0.0 <= np.mean(scores.argmax(1) == test.targets) <= 1.0


def test_interrupted_training_resumes_exactly(digits_images, tmp_path, monkeypatch):
    _, (images, labels) = digits_images
    config = merge_config("finetune", SMALL)
    trainer = finetune.Trainer(tiny_vit(), 10, config)
    reference, _ = finetune.train_steps(trainer, images, labels, 0.05, 12, None)

    original_step, calls = trainer.step, []

    def crashing_step(*args):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt  # killed after 7 steps; the checkpoint at step 5 survives
        return original_step(*args)

    monkeypatch.setattr(trainer, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        finetune.train_steps(trainer, images, labels, 0.05, 12, tmp_path / "ckpt")
    monkeypatch.setattr(trainer, "step", original_step)
    resumed, losses = finetune.train_steps(trainer, images, labels, 0.05, 12, tmp_path / "ckpt")
    assert len(losses) == 7  # steps 5..11 only
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_non_flax_model_is_a_clear_error(data_dir):
    model = Model(apply=lambda p, x: x.mean(axis=(1, 2)), resolution=8, name="plain")
    task = tasks.get_task("lite_digits")
    with pytest.raises(UserError, match="fine-tuning needs a Flax model, but plain is not a Flax model"):
        finetune.fit(_images(task, "train800", data_dir), _images(task, "val200", data_dir), num_classes=10,
                     target="single", config=merge_config("finetune", SMALL), context=FitContext(model=model))


def test_bad_batch_settings_are_clear_errors():
    with pytest.raises(UserError, match="multiple of micro_batch_size"):
        finetune.Trainer(tiny_vit(), 10, merge_config("finetune", dict(SMALL, micro_batch_size=12)))
    with pytest.raises(UserError, match="setting 'sweep' is 'huge'; expected one of quick"):
        merge_config("finetune", dict(SMALL, sweep="huge"))


DEVICES_SCRIPT = """
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[2])
from test_finetune import tiny_vit, SMALL
from vtabkit import tasks
from vtabkit.protocols import finetune, merge_config
config = merge_config("finetune", SMALL)
model = tiny_vit()
images, labels = finetune.load_images(tasks.get_task("lite_digits").view("train800"), model, sys.argv[1])
params, losses = finetune.train_steps(finetune.Trainer(model, 10, config), images, labels, 0.05, 6, None)
print(json.dumps({"devices": jax.device_count(), "losses": losses,
                  "head": np.asarray(params["head"]["kernel"]).ravel()[:50].tolist()}))
"""


def test_four_devices_match_one(data_dir, digits_images):
    outputs = []
    for count in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
        done = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT, data_dir, os.path.dirname(__file__)],
                              env=env, capture_output=True, text=True, check=True)
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [o["devices"] for o in outputs] == [1, 4]
    np.testing.assert_allclose(outputs[0]["losses"], outputs[1]["losses"], rtol=1e-4)
    np.testing.assert_allclose(outputs[0]["head"], outputs[1]["head"], atol=1e-5)


def test_out_of_memory_halves_the_micro_batch(digits_images, monkeypatch):
    _, (images, labels) = digits_images
    original_init = finetune.Trainer.__init__
    fits = {"images": 8}  # pretend the device holds this many images at once

    def limited_device(self, model, num_classes, config, **kwargs):
        original_init(self, model, num_classes, config, **kwargs)
        if self.batch // self.accumulation > fits["images"]:
            def out_of_memory(*args):
                raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
            self.step = out_of_memory

    monkeypatch.setattr(finetune.Trainer, "__init__", limited_device)
    config = merge_config("finetune", SMALL)  # batch 32, micro-batch 16
    trainer = finetune.fitting_trainer(tiny_vit(), 10, config, images, labels)
    assert (trainer.batch, trainer.accumulation) == (32, 4)  # micro-batch 16 → 8
    fits["images"] = 0
    with pytest.raises(UserError, match="cannot be split further"):
        finetune.fitting_trainer(tiny_vit(), 10, config, images, labels)


def test_training_from_the_disk_store_equals_training_from_memory(digits_images):
    """Issue 13.4: the images stream from disk; the steps see exactly what an array would give."""
    _, (store, labels) = digits_images
    assert isinstance(store, ImageStore) and store.files[0].exists()
    in_memory = store[np.arange(len(store))]
    trainer = finetune.Trainer(tiny_vit(), 10, merge_config("finetune", SMALL))
    from_disk, disk_losses = finetune.train_steps(trainer, store, labels, 0.05, 4, None)
    from_memory, memory_losses = finetune.train_steps(trainer, in_memory, labels, 0.05, 4, None)
    np.testing.assert_allclose(disk_losses, memory_losses, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(from_disk["head"]["kernel"]), np.asarray(from_memory["head"]["kernel"]),
                               atol=1e-6)
