"""Fine-tune throughput: vtabkit's training loop vs the model's bare train step.

vtabkit's loop draws each batch from host memory by (seed, step), shards it over the devices and
runs the compiled step (with gradient accumulation when micro_batch_size < batch_size). The bare
step is the same compiled step on one batch that already sits on the device, i.e. the ceiling.
The ratio is the data-feeding overhead.

    python benchmarks/bench_finetune.py --model vit_tiny --batch-size 64 --steps 30
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from vtabkit.models.registry import create_model
from vtabkit.protocols import finetune, merge_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    model = create_model(args.model)
    config = merge_config("finetune", {"batch_size": args.batch_size,
                                       "micro_batch_size": args.micro_batch_size or args.batch_size})
    trainer = finetune.Trainer(model, 10, config)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1000, model.resolution, model.resolution, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=1000).astype(np.int32)

    def loop(fixed_batch: bool) -> float:
        params = trainer.init_params()
        opt_state = jax.device_put(trainer.optimizer.init(params), trainer.replicated)
        batch = trainer.batch_at(images, labels, 0, 0)
        key = jax.random.key(0)
        params, opt_state, loss = trainer.step(params, opt_state, *batch, jnp.float32(0.01), key)  # compile
        loss.block_until_ready()
        started = time.perf_counter()
        for step in range(args.steps):
            if not fixed_batch:
                batch = trainer.batch_at(images, labels, 0, step)
            params, opt_state, loss = trainer.step(params, opt_state, *batch, jnp.float32(0.01),
                                                   jax.random.fold_in(key, step))
        loss.block_until_ready()
        return args.steps / (time.perf_counter() - started)

    bare = loop(fixed_batch=True)
    ours = loop(fixed_batch=False)
    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), model {args.model} "
          f"at {model.resolution}px, batch {trainer.batch} (accumulation {trainer.accumulation})")
    print(f"| bare train step | {bare:.2f} steps/s | {bare * trainer.batch:.0f} img/s |")
    print(f"| vtabkit loop    | {ours:.2f} steps/s | {ours * trainer.batch:.0f} img/s | ratio {ours / bare:.2f} |")


if __name__ == "__main__":
    main()
