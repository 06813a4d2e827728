"""Fine-tune throughput: vtabkit's training loop vs the model's bare train step.

vtabkit's loop draws each batch from host memory by (seed, step), shards it over the devices and
runs the compiled step (with gradient accumulation when micro_batch_size < batch_size). The bare
step is the same compiled step on one batch that already sits on the device, i.e. the ceiling.
The ratio is the data-feeding overhead.

    python benchmarks/bench_finetune.py --model vit_tiny --batch-size 64 --steps 30
    python benchmarks/bench_finetune.py --memory --images 45000 --resolution 224

``--memory`` measures peak host memory (max RSS, each variant in a fresh process) of holding a
training split of ``--images`` decoded images: in a host array (what fine-tuning did before) vs
the on-disk `vtabkit.image_store.ImageStore` it uses now, then drawing 20 batches of 512 from it.
The images are synthetic batches of 256 (the data pipeline's batch), so only the storage differs.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from vtabkit.models.registry import create_model
from vtabkit.protocols import finetune, merge_config


MEMORY_SCRIPT = """
import resource, sys, tempfile
import numpy as np
from vtabkit.image_store import ImageStore
mode, count, resolution = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
def batches():
    for start in range(0, count, 256):
        yield rng.integers(0, 256, size=(min(256, count - start), resolution, resolution, 3), dtype=np.uint8)
if mode == "memory":
    images = np.concatenate(list(batches()))
else:
    images = ImageStore.write(batches(), tempfile.mkdtemp(dir=sys.argv[4]) + "/train.u8")
for step in range(20):
    batch = images[np.random.default_rng(step).choice(count, 512)].astype(np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def memory(count: int, resolution: int) -> None:
    import subprocess
    import sys
    import tempfile

    size_gb = count * resolution * resolution * 3 / 1e9
    print(f"{count} images at {resolution}px ({size_gb:.1f} GB of uint8), then 20 batches of 512")
    with tempfile.TemporaryDirectory(prefix="vtabkit-bench-", dir=".") as scratch:
        for mode in ("memory", "disk"):
            done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, mode, str(count), str(resolution), scratch],
                                  capture_output=True, text=True, check=True)
            label = "host array (before)" if mode == "memory" else "ImageStore on disk (now)"
            print(f"| {label} | peak host memory {float(done.stdout.split()[-1]):.2f} GiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--memory", action="store_true", help="peak host memory: host array vs on-disk store")
    parser.add_argument("--images", type=int, default=45000)
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args()
    if args.memory:
        memory(args.images, args.resolution)
        return
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
