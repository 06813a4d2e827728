"""Fine-tuning: the whole Flax backbone plus a zero-initialised linear head on ``pre_logits``.

The VTAB procedure: each member of the sweep (learning rate x schedule length) is trained on
the train split and scored on val; the best member is retrained on train+val and scored on
test, so test data never takes part in a choice. SGD with momentum, no weight decay, linear
warm-up then step decay. Steps are data-parallel over all local devices (the batch is sharded,
parameters replicated); gradients are accumulated over micro-batches when a batch does not fit.
Training batches are drawn from (seed, step) alone, so a run resumed from its last checkpoint
(orbax) continues exactly where it stopped.

In a multi-process run (`vtabkit.distributed`) the steps are data-parallel over the devices of
every process: each process holds the training images and feeds only the rows of the global
batch that its own devices hold, so the batch (and every number) is the single-process one.
Eval sets are read in per-process shares and their logits gathered. Such a run resumes at
sweep-member granularity: process 0 keeps the finished members, and no mid-member checkpoints
are written (recorded as ``checkpoints: false``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vtabkit import data, distributed, image_store, metrics, source
from vtabkit.errors import UserError
from vtabkit.image_store import ImageStore
from vtabkit.models.model import Model, normalise, require_flax
from vtabkit.protocols import merge_config
from vtabkit.protocols.common import FitContext, Images, Number, check_list, check_setting
from vtabkit.tasks import View

DESCRIPTION = "fine-tune the whole backbone with a linear head; sweep on train/val, retrain on train+val"
INPUT = "images"
# Multi-hot targets train a sigmoid head (binary cross-entropy summed over classes, as the
# linear probe) and the sweep is judged by val mAP instead of top-1.
TARGETS = ("single", "multi")


def check_config(config: dict[str, Any]) -> None:
    def positive_int(key: str) -> None:
        check_setting("finetune", config, key, int, lambda v: v > 0, "a positive integer")

    for key in ("batch_size", "micro_batch_size", "checkpoint_every"):
        positive_int(key)
    check_setting("finetune", config, "seed", int, expected="an integer")
    check_setting("finetune", config, "momentum", Number, lambda v: 0 <= v < 1, "a number in [0, 1)")
    check_setting("finetune", config, "warmup_fraction", Number, lambda v: 0 <= v < 1, "a number in [0, 1)")
    check_setting("finetune", config, "decay_factor", Number, lambda v: v > 0, "a positive number")
    check_list("finetune", config, "decay_at", Number, lambda v: 0 < v <= 1, "numbers in (0, 1]")
    check_setting("finetune", config, "sweeps", dict, lambda v: bool(v), "a mapping of named sweeps")
    check_setting("finetune", config, "sweep", str, lambda v: v in config["sweeps"],
                  f"one of {', '.join(config['sweeps'])}")
    sweep = config["sweeps"][config["sweep"]]
    check_setting("finetune", {"sweep": sweep}, "sweep", dict, lambda v: set(v) == {"lr", "steps"},
                  "a mapping with lr and steps lists")
    check_list("finetune", sweep, "lr", Number, lambda v: v > 0, "positive learning rates")
    check_list("finetune", sweep, "steps", int, lambda v: v > 0, "positive step counts")


def cells(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(config, setting=config["sweep"], seed=int(config["seed"]))]


class WithHead(nn.Module):
    """The backbone's ``pre_logits`` followed by a zero-initialised linear classifier."""
    backbone: nn.Module
    num_classes: int

    @nn.compact
    def __call__(self, images, train: bool = False):
        _, out = self.backbone(images, train=train)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(out["pre_logits"])


def schedule(lr: float, steps: int, config: dict[str, Any]) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr``, then x``decay_factor`` at each ``decay_at`` share of ``steps``."""
    warmup = max(int(round(config["warmup_fraction"] * steps)), 1)
    boundaries: dict[int, float] = {}
    for share in config["decay_at"]:  # decays that round to the same step multiply
        step = max(int(round(share * steps)) - warmup, 0)
        boundaries[step] = boundaries.get(step, 1.0) * config["decay_factor"]
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 optax.piecewise_constant_schedule(lr, boundaries)], [warmup])


def load_images(view: View, model: Model, data_dir: str | None, rows: np.ndarray | None = None,
                directory: Path | None = None) -> tuple[ImageStore, np.ndarray]:
    """All images of ``view`` (or its ``rows``) at the model's resolution, uint8, written to disk
    (``directory``, else a temporary one) and read back by batch; and their labels (in memory)."""
    labels = []

    def image_batches():
        for batch, batch_labels, _, mask in data.batches(view, resolution=model.resolution,
                                                         batch_size=256, data_dir=data_dir):
            labels.append(batch_labels[mask])
            yield np.clip(np.round(batch[mask]), 0, 255).astype(np.uint8)

    image_store.check_space(directory, data.num_examples(view, data_dir), (model.resolution, model.resolution, 3))
    if directory is None:
        store = ImageStore.in_temporary_dir(image_batches())
    else:  # the cell's work directory: removed with it once the results are stored
        name = hashlib.sha256(json.dumps(view.images_facts(), sort_keys=True).encode()).hexdigest()[:16]
        store = ImageStore.write(image_batches(), Path(directory) / f"{name}.u8")
    labels = np.concatenate(labels).astype(np.int32)
    return (store, labels) if rows is None else (store.subset(rows), labels[rows])


def _replicated(tree: Any, sharding: NamedSharding) -> Any:
    """``tree``'s host values placed whole on every device of ``sharding`` (which may span
    processes: each process supplies its own, equal, copy)."""
    def place(leaf):
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
    return jax.tree.map(place, tree)


def _local_copy(tree: Any, sharding: NamedSharding) -> Any:
    """A replicated global ``tree`` as arrays on this process's devices only (for its own eval share)."""
    return jax.device_put(jax.tree.map(lambda leaf: leaf.addressable_data(0), tree), sharding)


class Trainer:
    """Compiled train and predict steps of one (model, task): training is sharded over the
    devices of every process, prediction over this process's devices."""

    def __init__(self, model: Model, num_classes: int, config: dict[str, Any], multi: bool = False):
        self.model, self.config, self.multi = model, config, multi
        self.network = WithHead(model.module, num_classes)
        devices = jax.devices()  # every process's: the global batch is split over all of them
        self.mesh = Mesh(np.array(devices), ("data",))
        self.local_mesh = Mesh(np.array(jax.local_devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.local_replicated = NamedSharding(self.local_mesh, PartitionSpec())
        batch, micro = int(config["batch_size"]), int(config["micro_batch_size"])
        if batch % micro or micro % len(devices):
            raise UserError(f"finetune: batch_size {batch} must be a multiple of micro_batch_size {micro}, "
                            f"and micro_batch_size a multiple of the {len(devices)} devices")
        self.batch, self.accumulation = batch, batch // micro
        self.micro_sharding = NamedSharding(self.mesh, PartitionSpec(None, "data"))
        self.eval_sharding = NamedSharding(self.local_mesh, PartitionSpec("data"))
        self.optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=float(config["momentum"]))
        self.step = self._build_step()
        self.init_optimizer = jax.jit(self.optimizer.init, out_shardings=self.replicated)
        self.logits_step = jax.jit(lambda params, images: self.network.apply(
            {"params": params}, normalise(self.model, images, jnp)))

    def init_params(self) -> Any:
        head = {"kernel": jnp.zeros((self._feature_dim(), self.network.num_classes)),
                "bias": jnp.zeros((self.network.num_classes,))}
        # Copies: the train step donates its inputs, and the model's own weights must survive it.
        # (`_replicated` copies through the host.)
        return _replicated({"backbone": self.model.params, "head": head}, self.replicated)

    def _feature_dim(self) -> int:
        probe = jnp.zeros((1, self.model.resolution, self.model.resolution, 3))
        _, out = jax.eval_shape(lambda p, x: self.model.module.apply({"params": p}, x), self.model.params, probe)
        return out["pre_logits"].shape[-1]

    def _loss(self, params, images, labels, rng):
        logits = self.network.apply({"params": params}, normalise(self.model, images, jnp), train=True,
                                    rngs={"dropout": rng})
        if self.multi:  # labels: (batch, classes) multi-hot
            return optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)).sum(-1).mean()
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def _build_step(self):
        # The learning rate is an argument, so every sweep member and the final retrain share one
        # compiled step.
        @partial(jax.jit, donate_argnums=(0, 1), out_shardings=(self.replicated, self.replicated, self.replicated))
        def step(params, opt_state, images, labels, lr, rng):
            # images: (accumulation, micro, H, W, 3); the step uses the mean micro-batch gradient.
            def accumulate(total, micro):
                micro_images, micro_labels, index = micro
                loss, grads = jax.value_and_grad(self._loss)(params, micro_images, micro_labels,
                                                             jax.random.fold_in(rng, index))
                return jax.tree.map(jnp.add, total, (loss, grads)), None
            zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
            micro_batches = (images, labels, jnp.arange(self.accumulation))
            (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro_batches)
            grads = jax.tree.map(lambda g: g / self.accumulation, grads)
            opt_state.hyperparams["learning_rate"] = lr
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss / self.accumulation
        return step

    def batch_at(self, images: ImageStore | np.ndarray, labels: np.ndarray, seed: int, step: int):
        """The training batch of ``step``: a function of (seed, step) only, so resuming is exact."""
        rng = np.random.default_rng([seed, step])
        index = rng.choice(len(labels), size=self.batch, replace=len(labels) < self.batch)
        index = index.reshape(self.accumulation, self.batch // self.accumulation)

        # Each device's block of the (accumulation, micro) batch, read from the store on the
        # process that owns the device: no process reads rows another process's devices train on.
        def rows(block):
            chosen = index[block[:2]]
            return images[chosen.ravel()].astype(np.float32).reshape(*chosen.shape, *images.shape[1:])
        batch_images = jax.make_array_from_callback((*index.shape, *images.shape[1:]), self.micro_sharding, rows)
        # Multi-hot labels carry a class axis after the (accumulation, micro) axes.
        batch_labels = jax.make_array_from_callback((*index.shape, *labels.shape[1:]), self.micro_sharding,
                                                    lambda block: labels[index[block[:2]]])
        return batch_images, batch_labels

    def logits(self, params, view: View, data_dir: str | None) -> np.ndarray:
        """Logits (N, C) of every example of ``view``, streamed in fixed-size batches (in a
        multi-process run: this process's share of the view, then every share gathered)."""
        if distributed.process_count() == 1:
            return self._local_logits(params, view, data_dir)
        sizes = source.split_sizes(data.builder(view, data_dir))
        part, _, _ = distributed.share(view.split, sizes, distributed.process_index(), distributed.process_count())
        local = (np.zeros((0, self.network.num_classes), np.float32) if part is None else
                 self._local_logits(_local_copy(params, self.local_replicated), dataclasses.replace(view, split=part),
                                    data_dir))
        return distributed.gather_rows(local)

    def _local_logits(self, params, view: View, data_dir: str | None) -> np.ndarray:
        size = -(-256 // len(jax.local_devices())) * len(jax.local_devices())
        outputs = []
        for images, _, _, mask in data.batches(view, resolution=self.model.resolution,
                                               batch_size=size, data_dir=data_dir):
            images = np.clip(np.round(images), 0, 255)  # the same uint8 rounding as the training images
            logits = np.asarray(self.logits_step(params, jax.device_put(images, self.eval_sharding)))
            outputs.append(logits[mask])
        return np.concatenate(outputs)


def train_steps(trainer: Trainer, images: np.ndarray, labels: np.ndarray, lr: float, steps: int,
                checkpoint_dir: Path | None, progress: str | None = None) -> tuple[Any, list[float]]:
    """Train for ``steps``; resumes from the newest checkpoint in ``checkpoint_dir``."""
    import orbax.checkpoint as ocp

    config = trainer.config
    learning_rate = schedule(lr, steps, config)
    params = trainer.init_params()
    opt_state = trainer.init_optimizer(params)
    start, manager = 0, None
    if checkpoint_dir is not None:
        # Synchronous saves: a checkpoint either exists whole or not at all when a run is killed.
        manager = ocp.CheckpointManager(checkpoint_dir.resolve(), options=ocp.CheckpointManagerOptions(
            max_to_keep=1, enable_async_checkpointing=False))
        if manager.latest_step() is not None:
            start = manager.latest_step()
            state = manager.restore(start, args=ocp.args.StandardRestore({"params": params, "opt": opt_state}))
            params, opt_state = state["params"], state["opt"]
    losses, every = [], int(config["checkpoint_every"])
    from tqdm import tqdm

    # Progress on the terminal when asked: the member's name, step, loss and tqdm's ETA.
    bar = tqdm(total=steps, initial=start, desc=progress, unit="step", disable=progress is None, leave=False)
    for step in range(start, steps):
        batch = trainer.batch_at(images, labels, int(config["seed"]), step)
        rng = jax.random.fold_in(jax.random.key(int(config["seed"])), step)  # dropout, if the model has any
        params, opt_state, loss = trainer.step(params, opt_state, *batch, jnp.float32(learning_rate(step)), rng)
        losses.append(float(loss.addressable_data(0)))
        bar.update(1)
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if manager is not None and (step + 1) % every == 0 and (step + 1) < steps:
            manager.save(step + 1, args=ocp.args.StandardSave({"params": params, "opt": opt_state}))
    bar.close()
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    return params, losses


def _out_of_memory(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def fitting_trainer(model: Model, num_classes: int, config: dict[str, Any], images: np.ndarray,
                    labels: np.ndarray) -> Trainer:
    """(Multi-hot ``labels``, 2-D, give a sigmoid-head trainer.)"""
    """A `Trainer` whose micro-batch fits the device: on out-of-memory, halve micro_batch_size
    (more gradient accumulation, the same batch and the same maths) and try again."""
    micro = int(config["micro_batch_size"])
    devices = jax.device_count()
    while True:
        trainer = Trainer(model, num_classes, dict(config, micro_batch_size=micro), multi=np.ndim(labels) == 2)
        params = trainer.init_params()
        opt_state = trainer.init_optimizer(params)
        try:  # one real step compiles and runs the largest allocation there is
            _, _, loss = trainer.step(params, opt_state, *trainer.batch_at(images, labels, 0, 0),
                                      jnp.float32(0.0), jax.random.key(0))
            loss.block_until_ready()
            return trainer
        except Exception as error:  # XLA reports device OOM as a runtime error with this status
            smaller = micro // 2
            if not _out_of_memory(error) or smaller < devices or trainer.batch % smaller or smaller % devices:
                if _out_of_memory(error):
                    raise UserError(f"finetune: a micro-batch of {micro} images does not fit the device "
                                    "memory and cannot be split further; use a smaller model or resolution") from error
                raise
            micro = smaller


@dataclasses.dataclass
class FineTunedHead:
    """The tuned network: its trainer (compiled steps) and its parameters."""

    trainer: Trainer
    params: Any


def predict(head: FineTunedHead, inputs: Images) -> np.ndarray:
    """Logits (N, C) of the tuned network on every image of ``inputs``."""
    logits = head.trainer.logits(head.params, inputs.view, inputs.data_dir)
    return logits if inputs.rows is None else logits[inputs.rows]


def _val_score(trainer: Trainer, params: Any, val: Images) -> float:
    """Val top-1, or val mAP for a sigmoid (multi-hot) head."""
    scores = predict(FineTunedHead(trainer, params), val)
    if trainer.multi:
        return float(metrics.get_metric("map").function(scores, val.targets))
    return float(np.mean(np.argmax(scores, axis=1) == val.targets))


_MEMBER_FIELDS = ("val_top1", "first_loss", "last_loss")


def _shared_members(finished: dict[str, dict], keys: list[str], score: str = "val_top1") -> dict[str, dict]:
    """Process 0's finished sweep members, on every process (scores as float32)."""
    fields = (score, *_MEMBER_FIELDS[1:])
    table = np.full((len(keys), 1 + len(fields)), np.nan, np.float64)
    for row, key in enumerate(keys):
        if key in finished:
            table[row] = [1.0, *[np.nan if finished[key][f] is None else finished[key][f] for f in fields]]
    table = distributed.broadcast(table)
    return {key: {f: (None if np.isnan(value) else float(value)) for f, value in zip(fields, row[1:])}
            for key, row in zip(keys, table) if row[0] == 1.0}


def fit(train: Images, val: Images | None, *, num_classes: int, target: str, config: dict[str, Any],
        context: FitContext | None = None) -> tuple[FineTunedHead, dict[str, Any]]:
    """Sweep on train/val, retrain the best member on train+val: the tuned network is the head.

    ``context.work_dir`` holds checkpoints and finished sweep members, so an interrupted call
    resumes; the caller removes it once the results are stored.
    """
    context = context or FitContext()
    model, work_dir = context.model, context.work_dir
    require_flax(model)
    if val is None:
        raise UserError("finetune needs a validation split to choose among the sweep, and this task "
                        "has none in this regime")
    sweep = config["sweeps"][config["sweep"]]
    members = [(float(lr), int(steps)) for lr in sweep["lr"] for steps in sweep["steps"]]
    image_dir = work_dir / "images" if work_dir else None
    images, labels = load_images(train.view, model, train.data_dir, train.rows, image_dir)
    trainer = fitting_trainer(model, num_classes, config, images, labels)
    score = "val_map" if trainer.multi else "val_top1"
    finished_path = work_dir / "sweep.json" if work_dir else None
    finished = json.loads(finished_path.read_text()) if finished_path and finished_path.exists() else {}
    multi = distributed.process_count() > 1
    if multi:  # process 0's work dir decides which members are done
        shared = _shared_members(finished, [f"lr={lr:g},steps={steps}" for lr, steps in members], score)
        finished = finished if distributed.is_main() else shared
    checkpoints = work_dir if work_dir and not multi else None

    for lr, steps in members:
        key = f"lr={lr:g},steps={steps}"
        if key in finished:  # done before an interruption
            continue
        params, losses = train_steps(trainer, images, labels, lr, steps, checkpoints and checkpoints / key,
                                     progress=f"finetune {key}" if context.progress else None)
        finished[key] = {score: _val_score(trainer, params, val),
                         "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
        if finished_path:
            finished_path.parent.mkdir(parents=True, exist_ok=True)
            finished_path.write_text(json.dumps(finished))
    # Best val score; ties go to the earlier member of the sweep (a fixed, data-independent order).
    keys = [f"lr={lr:g},steps={steps}" for lr, steps in members]
    best = max(range(len(members)), key=lambda i: (finished[keys[i]][score], -i))
    if multi:  # the others' copies of resumed scores went through float32: process 0's choice holds
        best = int(distributed.broadcast(np.array(best, np.int32)))
    best_lr, best_steps = members[best]

    val_images, val_labels = load_images(val.view, model, val.data_dir, val.rows, image_dir)
    images, labels = image_store.concatenate([images, val_images]), np.concatenate([labels, val_labels])
    params, losses = train_steps(trainer, images, labels, best_lr, best_steps, checkpoints and checkpoints / "final",
                                 progress=f"finetune final lr={best_lr:g},steps={best_steps}" if context.progress else None)
    details = {"lr": best_lr, "steps": best_steps, "sweep": finished, "selected_by": score,
               "final_losses": [losses[0], losses[-1]] if losses else None,
               "batch_size": trainer.batch, "micro_batch_size": trainer.batch // trainer.accumulation,
               "accumulation": trainer.accumulation, "devices": jax.device_count(),
               "processes": distributed.process_count(), "checkpoints": not multi,
               "num_train": int(len(labels) - len(val_labels)), "num_val": int(len(val_labels))}
    return FineTunedHead(trainer, params), details
