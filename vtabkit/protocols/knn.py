"""k-NN evaluation of frozen features (DINO / DINOv2).

Features are L2-normalised; each query's k most cosine-similar bank examples vote for their
label with weight exp(similarity / T), T = 0.07; the class with the largest total wins (ties go
to the lower class index); the score is top-1 on the whole test split. k runs over
``ks`` = {10, 20, 100, 200} by default, each capped at the bank size.

How k is settled (DINO has no val split; vtabkit never chooses k on test):

- **no val split**: the bank is the train split; ``top1_at_k`` reports every k and ``top1`` is
  the one at the default ``k`` (20).
- **val split given**: k is chosen on val with the train split as the bank (best val top-1;
  ties go to the smaller k), then the test split is scored with the bank train + val — the
  VTAB habit of refitting on train+val once hyper-parameters are fixed. ``top1_at_k`` then
  holds test top-1 for every k with that bank (for reference only; ``top1`` is at the chosen k).

Similarities are computed on device with jax.numpy, ``chunk_size`` test examples at a time, so
memory stays at chunk_size x bank_size whatever the test size; products run at full float32
precision so neighbours do not depend on the accelerator's matmul defaults.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vtabkit.protocols import merge_config
from vtabkit.protocols.common import Number, check_list, check_setting, check_splits

DESCRIPTION = "k-NN: cosine similarity, votes weighted by exp(sim/0.07), k in 10/20/100/200 (DINO)"
USES_FEATURES = True

_NAME = "knn"

Split = tuple[np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Input checks, settings and cells
# ---------------------------------------------------------------------------------------------

def check_config(config: dict[str, Any]) -> None:
    check_list(_NAME, config, "ks", int, lambda v: v > 0, "positive integers")
    check_setting(_NAME, config, "k", int, lambda v: v > 0, "a positive integer")
    check_setting(_NAME, config, "chunk_size", int, lambda v: v > 0, "a positive integer")
    check_setting(_NAME, config, "temperature", Number, lambda v: v > 0, "a positive number")


def cells(config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One cell: k-NN has no sampling, so a single setting ``"default"`` with seed 0."""
    config = merge_config(_NAME, config)
    return [{**config, "setting": "default", "seed": 0}]


# ---------------------------------------------------------------------------------------------
# Chunked, weighted k-NN on device
# ---------------------------------------------------------------------------------------------

def _l2_normalise(x: jax.Array) -> jax.Array:
    # A zero vector stays zero (similarity 0 to everything) instead of becoming NaN.
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    return x / jnp.maximum(norm, jnp.finfo(x.dtype).tiny)


@partial(jax.jit, static_argnames=("ks", "num_classes"))
def _predict_chunk(bank: jax.Array, bank_labels: jax.Array, queries: jax.Array,
                   temperature: jax.Array, ks: tuple[int, ...], num_classes: int) -> jax.Array:
    """Predicted classes of one chunk of queries for each k, shape (len(ks), chunk)."""
    similarity = jnp.matmul(_l2_normalise(queries), bank.T, precision=jax.lax.Precision.HIGHEST)
    top_similarity, top_index = jax.lax.top_k(similarity, max(ks))  # sorted, best first
    weights = jnp.exp(top_similarity / temperature)
    labels = bank_labels[top_index]
    rows = jnp.arange(queries.shape[0])[:, None]
    predictions = []
    for k in ks:  # the k nearest are a prefix of the max(ks) nearest
        votes = jnp.zeros((queries.shape[0], num_classes), weights.dtype)
        votes = votes.at[rows, labels[:, :k]].add(weights[:, :k])
        predictions.append(jnp.argmax(votes, axis=1))
    return jnp.stack(predictions)


def knn_predict(bank_x: np.ndarray, bank_y: np.ndarray, query_x: np.ndarray, num_classes: int,
                ks: Sequence[int], temperature: float = 0.07,
                chunk_size: int = 256) -> dict[int, np.ndarray]:
    """Weighted k-NN predictions of ``query_x`` for each k in ``ks`` (capped at the bank size).

    Returns ``{k: predicted classes (m,)}``. Queries go through in chunks of ``chunk_size``;
    the last chunk is padded to the same shape (one compilation) and its padding dropped.
    """
    dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless jax_enable_x64
    bank = _l2_normalise(jnp.asarray(bank_x, dtype))
    bank_labels = jnp.asarray(bank_y, jnp.int32)
    used = tuple(sorted({min(int(k), len(bank_y)) for k in ks}))
    chunk_size = min(chunk_size, len(query_x))
    temperature_array = jnp.asarray(temperature, dtype)
    outputs = []
    for start in range(0, len(query_x), chunk_size):
        chunk = np.asarray(query_x[start:start + chunk_size], dtype)
        padded = np.zeros((chunk_size, chunk.shape[1]), dtype)
        padded[:len(chunk)] = chunk
        predicted = _predict_chunk(bank, bank_labels, jnp.asarray(padded), temperature_array,
                                   used, num_classes)
        outputs.append((predicted, len(chunk)))  # stays on device; jax runs ahead
    stacked = np.concatenate([np.asarray(p)[:, :n] for p, n in outputs], axis=1)
    by_used = dict(zip(used, stacked))
    return {int(k): by_used[min(int(k), len(bank_y))] for k in ks}


def _top1_at_k(bank: Split, queries: Split, num_classes: int, ks: Sequence[int],
               config: dict[str, Any]) -> dict[int, float]:
    predictions = knn_predict(bank[0], bank[1], queries[0], num_classes, ks,
                              float(config["temperature"]), int(config["chunk_size"]))
    return {k: float(np.mean(p == queries[1])) for k, p in predictions.items()}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def evaluate_features(train: Split, val: Split | None, test: Split, num_classes: int,
                      config: dict[str, Any] | None = None) -> dict[str, Any]:
    """k-NN top-1 of frozen features; ``config`` keys override ``protocols/knn.yaml``.

    Returns ``{"top1", "k", "k_used", "k_selection", "top1_at_k", "temperature",
    "bank_size", "num_test"}`` and, when ``val`` is given, ``val_top1_at_k``. ``k`` is the
    chosen k ("val") or the default ``k`` ("default"); ``k_used`` is it capped at the bank size.
    Dict keys of ``*_top1_at_k`` are the k values as strings (stable through JSON).
    """
    config = merge_config(_NAME, config)
    train, val, test, num_classes = check_splits(train, val, test, num_classes)
    ks = sorted(set(config["ks"]) | {config["k"]})
    record: dict[str, Any] = {}
    if val is None:
        k, selection, bank = config["k"], "default", train
    else:
        val_scores = _top1_at_k(train, val, num_classes, ks, config)
        best = max(val_scores.values())
        k = min(k for k, score in val_scores.items() if score == best)  # ties: smaller k
        selection = "val"
        bank = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
        record["val_top1_at_k"] = {str(k): s for k, s in val_scores.items()}
    test_scores = _top1_at_k(bank, test, num_classes, ks, config)
    return {"top1": test_scores[k], "k": k, "k_used": min(k, len(bank[1])),
            "k_selection": selection, "top1_at_k": {str(k): s for k, s in test_scores.items()},
            "temperature": float(config["temperature"]), "bank_size": int(len(bank[1])),
            "num_test": int(len(test[1])), **record}
