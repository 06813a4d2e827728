"""Feature-extraction throughput (images/s) of the built-in Flax backbones.

Two measurements per model:

* ``model``: the jitted ``apply`` on a fixed synthetic batch already on the device, at the model's
  native resolution — the ceiling the accelerator allows (no data pipeline, no host transfer).
* ``pipeline`` (``--pipeline``): `vtabkit.features.compute_features` on a real task split (default
  ``lite_digits`` test, prepared locally from scikit-learn's digits): TFDS read, decode, resize,
  host->device transfer (overlapping the previous batch's compute), padded fixed-size batches.
  The first pass includes compilation; the second pass is compared with model-only (ratio).
  Target on a GPU: ratio >= 0.9 for ViT-B/16 at 224 px.

    python benchmarks/bench_extract.py                       # all built-ins, batch 64
    python benchmarks/bench_extract.py --models vit_tiny,vit_s16 --batch-size 32 --iters 5 --pipeline

Random-init weights: throughput does not depend on the values.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import vtabkit
from vtabkit.models import zoo

DEFAULT_MODELS = list(zoo.BUILTINS)


def bench_model(name: str, batch_size: int, iters: int) -> dict:
    model = vtabkit.create_model(name)
    params = jax.device_put(model.params)
    images = jax.device_put(jnp.asarray(
        np.random.default_rng(0).uniform(-1, 1, (batch_size, model.resolution, model.resolution, 3)), jnp.float32))
    forward = jax.jit(model.apply)
    start = time.perf_counter()
    features = forward(params, images).block_until_ready()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(iters):
        features = forward(params, images)
    features.block_until_ready()
    elapsed = time.perf_counter() - start
    return {"model": name, "resolution": model.resolution, "dim": int(features.shape[1]),
            "batch": batch_size, "compile_s": round(compile_s, 2),
            "images_per_s": round(batch_size * iters / elapsed, 1)}


def bench_pipeline(name: str, batch_size: int, task_id: str, split: str, data_dir: str) -> dict:
    from vtabkit import features

    model = vtabkit.create_model(name)
    task = vtabkit.get_task(task_id)
    result = {"model": name, "task": f"{task_id}:{split}", "batch": batch_size}
    for run in ("first", "second"):  # first: dataset preparation (own builders) + compilation
        start = time.perf_counter()
        feats, _, _ = features.compute_features(model, task.view(split), data_dir=data_dir, batch_size=batch_size)
        elapsed = time.perf_counter() - start
        result[f"{run}_s"] = round(elapsed, 2)
        result[f"{run}_images_per_s"] = round(len(feats) / elapsed, 1)
    # The same pass waiting for each batch before reading the next (what extraction did before the
    # overlap), to show in one run what the overlap buys.
    overlapping = features.dispatch_function

    def blocking(model, batch_size):
        run, size = overlapping(model, batch_size)
        return (lambda images: np.asarray(run(images))), size

    features.dispatch_function = blocking
    try:
        start = time.perf_counter()
        features.compute_features(model, task.view(split), data_dir=data_dir, batch_size=batch_size)
        result["blocking_images_per_s"] = round(len(feats) / (time.perf_counter() - start), 1)
    finally:
        features.dispatch_function = overlapping
    result["images"] = len(feats)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--pipeline", action="store_true", help="also time compute_features on a task split")
    parser.add_argument("--task", default="lite_digits")
    parser.add_argument("--split", default="test", help="a split name of the task (train800, test, ...)")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default: a temporary one)")
    args = parser.parse_args()

    print(f"devices: {jax.devices()}")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="vtabkit-bench-")
    rows = []
    for name in args.models.split(","):
        row = bench_model(name, args.batch_size, args.iters)
        print(row, flush=True)
        if args.pipeline:  # end to end right after model-only, same process: the ratio is what counts
            pipeline = bench_pipeline(name, args.batch_size, args.task, args.split, data_dir)
            print(pipeline, flush=True)
            row["end_to_end_images_per_s"] = pipeline["second_images_per_s"]
            row["ratio"] = round(pipeline["second_images_per_s"] / row["images_per_s"], 2)
            row["blocking_images_per_s"] = pipeline["blocking_images_per_s"]
        rows.append(row)
    if args.pipeline:
        print("\n| model | resolution | batch | model-only img/s | end-to-end img/s | ratio | "
              "end-to-end without overlap img/s |\n|---|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['model']} | {row['resolution']} | {row['batch']} | {row['images_per_s']} | "
                  f"{row['end_to_end_images_per_s']} | {row['ratio']} | {row['blocking_images_per_s']} |")


if __name__ == "__main__":
    main()
