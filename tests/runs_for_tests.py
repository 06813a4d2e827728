"""Constructed run directories with per-example predictions, for compare and report tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vtabkit import predictions, results


def write_record(run_dir: Path, task: str, family: str, scores: np.ndarray, targets: np.ndarray, *,
                 ids: np.ndarray | None = None, model: str = "m", protocol: str = "linear",
                 setting: str = "default", seed: int = 0, metric: str = "top1", eval_set: str = "test",
                 main: bool = True, protocol_config: dict | None = None, fingerprint: str | None = None) -> dict:
    """Append one schema-2 record whose metrics are computed from ``scores``, with its predictions file."""
    from vtabkit import metrics

    fingerprint = fingerprint or f"fp-{model}"
    ids = np.array([f"{task}-{i}" for i in range(len(targets))]) if ids is None else ids
    arrays = predictions.compact(ids, scores, targets, target_kind="single")
    name = f"{task}-{protocol}-{setting}-s{seed}-{eval_set}-{model}.npz"
    digest = predictions.save(run_dir / "predictions" / name, arrays)
    values, _ = metrics.compute([metric], scores, targets, target_kind="single")
    config = dict(protocol_config or {}, seed=seed, setting=setting)
    record = {"schema_version": 2, "model": model, "model_fingerprint": fingerprint, "task": task,
              "family": family, "task_hash": "h-" + task, "regime": "1k", "protocol": protocol,
              "setting": setting, "seed": seed, "protocol_config": config,
              "config_hash": results.config_hash(config), "eval_set": eval_set,
              "eval": {"main": main, "name": eval_set}, "metrics": values, "primary_metric": metric,
              "num_examples": {"eval": len(targets)},
              "predictions": {"path": f"predictions/{name}", "sha256": digest}}
    results.append_record(run_dir / results.RESULTS_FILE, record)
    return record


def noisy_scores(targets: np.ndarray, classes: int, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Scores whose argmax is the target for about ``accuracy`` of the examples."""
    scores = rng.normal(size=(len(targets), classes)).astype(np.float32)
    right = rng.random(len(targets)) < accuracy
    scores[np.arange(len(targets))[right], targets[right]] += 10.0
    return scores
