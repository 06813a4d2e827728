"""k-NN evaluation of frozen features (DINO / DINOv2).

Features are L2-normalised; each query's k most cosine-similar bank examples vote for their
label with weight exp(similarity / T), T = 0.07; the class with the largest total wins (ties go
to the lower class index). With multi-hot targets each class scores the weighted share of
the neighbours that carry it. Scores are logit-like (`scores_from_votes`).

How k is settled (DINO has no val split; vtabkit never chooses k on test):

- **no val split**: the bank is the train split and k is the configured ``k`` (20).
- **val split given**: k is chosen among ``ks`` = {10, 20, 100, 200} on val with the train
  split as the bank (best val top-1, or mAP for multi-hot targets; ties go to the smaller k),
  then the eval sets are scored with the bank train + val — the VTAB habit of refitting on
  train+val once hyper-parameters are fixed.

A k larger than the bank is capped at the bank size, visibly (``k_used``, ``k_capped``).

Similarities are computed on device with jax.numpy, ``chunk_size`` test examples at a time, so
memory stays at chunk_size x bank_size whatever the test size; products run at full float32
precision so neighbours do not depend on the accelerator's matmul defaults. The bank is padded
to shape buckets (``common.bucket``: padded bank rows get similarity -inf, so they are never
neighbours; zero feature columns; padded classes get no votes and are cut off), so the banks of
a suite share a few compiles; ``SHAPE_BUCKETS = False`` keeps the exact shapes. At or below
``host_max_size`` (bank examples x width) NumPy computes the same votes on the host, with no
compile (``details.solver``: ``host`` or ``device``).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vtabkit import metrics
from vtabkit.protocols import merge_config
from vtabkit.protocols.common import (FitContext, Number, bucket, check_list, check_setting, check_splits,
                                      headline, one_blas_thread, solver_for, target_kind)

DESCRIPTION = "k-NN: cosine similarity, votes weighted by exp(sim/0.07), k in 10/20/100/200 (DINO)"
INPUT = "features"
TARGETS = ("single", "multi")

_NAME = "knn"

SHAPE_BUCKETS = True
BANK_FLOOR, WIDTH_FLOOR, CLASS_FLOOR = 256, 64, 16

Split = tuple[np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Input checks, settings and cells
# ---------------------------------------------------------------------------------------------

def check_config(config: dict[str, Any]) -> None:
    check_list(_NAME, config, "ks", int, lambda v: v > 0, "positive integers")
    check_setting(_NAME, config, "k", int, lambda v: v > 0, "a positive integer")
    check_setting(_NAME, config, "chunk_size", int, lambda v: v > 0, "a positive integer")
    check_setting(_NAME, config, "temperature", Number, lambda v: v > 0, "a positive number")
    check_setting(_NAME, config, "host_max_size", Number, lambda v: v >= 0, "a number >= 0 (0: never)")


def cells(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One cell: k-NN has no sampling, so a single setting ``"default"`` with seed 0."""
    return [{**config, "setting": "default", "seed": 0}]


# ---------------------------------------------------------------------------------------------
# Chunked, weighted k-NN on device
# ---------------------------------------------------------------------------------------------

def _l2_normalise(x: jax.Array) -> jax.Array:
    # A zero vector stays zero (similarity 0 to everything) instead of becoming NaN.
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    return x / jnp.maximum(norm, jnp.finfo(x.dtype).tiny)


@partial(jax.jit, static_argnames=("ks", "num_classes", "multi"))
def _votes_chunk(bank: jax.Array, bank_targets: jax.Array, queries: jax.Array, temperature: jax.Array,
                 ks: tuple[int, ...], num_classes: int, multi: bool, bank_mask: jax.Array | None = None) -> jax.Array:
    """Weighted votes of one chunk of queries for each k, shape (len(ks), chunk, C).

    Single labels: the total weight per class. Multi-hot targets: the weighted share of the
    neighbours that carry each class, in [0, 1]. Bank rows where ``bank_mask`` is False are
    padding: their similarity is -inf, below every real row (k never exceeds the real rows).
    """
    similarity = jnp.matmul(_l2_normalise(queries), bank.T, precision=jax.lax.Precision.HIGHEST)
    if bank_mask is not None:
        similarity = jnp.where(bank_mask, similarity, -jnp.inf)
    top_similarity, top_index = jax.lax.top_k(similarity, max(ks))  # sorted, best first
    weights = jnp.exp(top_similarity / temperature)
    neighbours = bank_targets[top_index]
    rows = jnp.arange(queries.shape[0])[:, None]
    votes = []
    for k in ks:  # the k nearest are a prefix of the max(ks) nearest
        if multi:
            share = jnp.einsum("qk,qkc->qc", weights[:, :k], neighbours[:, :k].astype(weights.dtype),
                               precision=jax.lax.Precision.HIGHEST)
            votes.append(share / weights[:, :k].sum(axis=1, keepdims=True))
        else:
            zeros = jnp.zeros((queries.shape[0], num_classes), weights.dtype)
            votes.append(zeros.at[rows, neighbours[:, :k]].add(weights[:, :k]))
    return jnp.stack(votes)


def _nearest_host(similarity: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` largest entries, largest first, ties to the lower index
    (``jax.lax.top_k``'s order).

    ``argpartition`` finds them in linear time but picks arbitrarily among entries equal to the
    k-th value; the rows where such a tie straddles the cut are redone by a stable full sort.
    """
    if k >= similarity.shape[1]:
        return np.argsort(-similarity, axis=1, kind="stable")
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(similarity, top, axis=1)
    kth = values.min(axis=1, keepdims=True)
    straddles = (similarity == kth).sum(1) > (values == kth).sum(1)
    # Sort the k by value (descending), then index: lexsort's last key is the primary one.
    order = np.lexsort((top, -values), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    if straddles.any():
        top[straddles] = np.argsort(-similarity[straddles], axis=1, kind="stable")[:, :k]
    return top


@one_blas_thread
def _votes_host(bank_x: np.ndarray, bank_y: np.ndarray, query_x: np.ndarray, temperature: float,
                ks: tuple[int, ...], num_classes: int, multi: bool, chunk_size: int) -> np.ndarray:
    """``_votes_chunk`` in NumPy over all queries, ``chunk_size`` at a time: (len(ks), m, C).

    The same float type as the device path (float32 unless jax_enable_x64), the same
    normalisation, neighbour order (ties to the lower bank index) and vote sums, so the votes
    agree to float rounding (products summed in another order) and neighbours are the same
    except where two similarities tie within that rounding.
    """
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    normalise = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(dtype).tiny)  # noqa: E731
    bank = normalise(np.asarray(bank_x, dtype))
    targets = np.asarray(bank_y, dtype if multi else np.int64)
    out = np.zeros((len(ks), len(query_x), num_classes), dtype)
    for start in range(0, len(query_x), chunk_size):
        queries = normalise(np.asarray(query_x[start:start + chunk_size], dtype))
        similarity = queries @ bank.T
        nearest = _nearest_host(similarity, max(ks))
        weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / dtype.type(temperature))
        rows = np.arange(len(queries))[:, None]
        for i, k in enumerate(ks):  # the k nearest are a prefix of the max(ks) nearest
            block = out[i, start:start + len(queries)]
            if multi:
                block[:] = np.einsum("qk,qkc->qc", weights[:, :k], targets[nearest[:, :k]])
                block /= weights[:, :k].sum(axis=1, keepdims=True)
            else:  # the weights summed per (query, class) cell
                cells = (rows * num_classes + targets[nearest[:, :k]]).ravel()
                block[:] = np.bincount(cells, weights[:, :k].ravel(), len(queries) * num_classes).reshape(block.shape)
    return out


def knn_votes(bank_x: np.ndarray, bank_y: np.ndarray, query_x: np.ndarray, num_classes: int,
              ks: Sequence[int], temperature: float = 0.07, chunk_size: int = 256,
              solver: str = "device") -> dict[int, np.ndarray]:
    """Weighted k-NN votes (m, C) of ``query_x`` for each k in ``ks`` (capped at the bank size).

    ``bank_y`` holds int labels or multi-hot rows. Queries go through in chunks of
    ``chunk_size``; on the device the last chunk is padded to the same shape (one compilation)
    and its padding dropped; ``solver="host"`` computes the same votes in NumPy (no compile).
    """
    dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless jax_enable_x64
    multi = np.ndim(bank_y) == 2
    if solver == "host":
        used = tuple(sorted({min(int(k), len(bank_y)) for k in ks}))
        stacked = _votes_host(bank_x, bank_y, query_x, temperature, used, int(num_classes), multi, int(chunk_size))
        by_used = dict(zip(used, stacked))
        return {int(k): by_used[min(int(k), len(bank_y))] for k in ks}
    (size, width), classes = np.shape(bank_x), int(num_classes)
    if SHAPE_BUCKETS:
        # Zero columns keep norms and similarities; padded classes are never a neighbour's label.
        size, width, classes = bucket(size, BANK_FLOOR), bucket(width, WIDTH_FLOOR), bucket(classes, CLASS_FLOOR)
        chunk_size = int(chunk_size)  # every chunk, even of a short query set, has one shape
    else:
        chunk_size = min(chunk_size, len(query_x))
    bank = _l2_normalise(jnp.asarray(_padded(np.asarray(bank_x, dtype), (size, width))))
    target_shape = (size, classes) if multi else (size,)
    bank_targets = jnp.asarray(_padded(np.asarray(bank_y, np.uint8 if multi else np.int32), target_shape))
    bank_mask = jnp.asarray(np.arange(size) < len(bank_y)) if SHAPE_BUCKETS else None
    used = tuple(sorted({min(int(k), len(bank_y)) for k in ks}))
    temperature_array = jnp.asarray(temperature, dtype)
    outputs = []
    for start in range(0, len(query_x), chunk_size):
        chunk = np.asarray(query_x[start:start + chunk_size], dtype)
        padded = _padded(chunk, (chunk_size, width))
        votes = _votes_chunk(bank, bank_targets, jnp.asarray(padded), temperature_array, used,
                             classes, multi, bank_mask)
        outputs.append((votes, len(chunk)))  # stays on device; jax runs ahead
    stacked = np.concatenate([np.asarray(v)[:, :n, :num_classes] for v, n in outputs], axis=1)
    by_used = dict(zip(used, stacked))
    return {int(k): by_used[min(int(k), len(bank_y))] for k in ks}


def _padded(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def knn_predict(bank_x: np.ndarray, bank_y: np.ndarray, query_x: np.ndarray, num_classes: int,
                ks: Sequence[int], temperature: float = 0.07,
                chunk_size: int = 256, solver: str = "device") -> dict[int, np.ndarray]:
    """Predicted classes ``{k: (m,)}`` of single-label k-NN (ties go to the lower class index)."""
    votes = knn_votes(bank_x, bank_y, query_x, num_classes, ks, temperature, chunk_size, solver)
    return {k: np.argmax(v, axis=1) for k, v in votes.items()}


def scores_from_votes(votes: np.ndarray, multi: bool) -> np.ndarray:
    """Logit-like scores: log of the vote shares (softmax gives the shares back), or for
    multi-hot targets the logit of each class's share (sigmoid gives it back; 0.5 = half the
    neighbours' weight). Clipped so that a class without votes stays finite."""
    votes = np.asarray(votes, np.float64)
    if multi:
        share = np.clip(votes, 1e-7, 1 - 1e-7)
        return np.log(share) - np.log1p(-share)
    share = votes / votes.sum(axis=1, keepdims=True)
    return np.log(np.maximum(share, np.finfo(np.float64).tiny))


@dataclasses.dataclass
class KnnHead:
    """The bank a query is compared with, and the k chosen."""

    bank_x: np.ndarray
    bank_y: np.ndarray
    k: int
    num_classes: int
    temperature: float
    chunk_size: int
    solver: str = "device"


def predict(head: KnnHead, x: np.ndarray) -> np.ndarray:
    votes = knn_votes(head.bank_x, head.bank_y, x, head.num_classes, [head.k], head.temperature,
                      head.chunk_size, head.solver)[head.k]
    return scores_from_votes(votes, np.ndim(head.bank_y) == 2)


def _val_scores(bank: Split, queries: Split, num_classes: int, ks: Sequence[int],
                config: dict[str, Any], solver: str) -> dict[int, float]:
    """Top-1 (mAP for multi-hot targets) of every k on the held-out ``queries``."""
    multi = np.ndim(bank[1]) == 2
    votes = knn_votes(bank[0], bank[1], queries[0], num_classes, ks, float(config["temperature"]),
                      int(config["chunk_size"]), solver)
    score = metrics.get_metric("map" if multi else "top1").function
    return {k: float(score(scores_from_votes(v, multi), queries[1])) for k, v in votes.items()}


# ---------------------------------------------------------------------------------------------
# Fit, predict, evaluate
# ---------------------------------------------------------------------------------------------

def fit(train: Split, val: Split | None, *, num_classes: int, target: str, config: dict[str, Any],
        context: FitContext | None = None) -> tuple[KnnHead, dict[str, Any]]:
    """Settle k (on val when there is one, bank = train) and build the bank (train + val).

    Without val, k is the configured ``k``. A k larger than the bank is capped at the bank
    size, and the details say so (``k_used``, ``k_capped``).
    """
    ks = sorted(set(config["ks"]))
    details: dict[str, Any] = {}
    # Bank examples x width (the work per query) at or below host_max_size: NumPy, no compile.
    bank_size = len(train[1]) + (0 if val is None else len(val[1]))
    solver = solver_for(bank_size * train[0].shape[1], config["host_max_size"])
    if val is None:
        k, selection, bank = int(config["k"]), "default", train
    else:
        val_scores = _val_scores(train, val, num_classes, ks, config, solver)
        best = max(val_scores.values())
        k = min(k for k, score in val_scores.items() if score == best)  # ties: smaller k
        selection = "val"
        bank = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
        details[f"val_{'map' if target == 'multi' else 'top1'}_at_k"] = {str(k): s for k, s in val_scores.items()}
    used = min(k, len(bank[1]))
    head = KnnHead(bank[0], bank[1], used, num_classes, float(config["temperature"]), int(config["chunk_size"]),
                   solver)
    details.update(k=k, k_used=used, k_capped=used < k, k_selection=selection,
                   temperature=float(config["temperature"]), bank_size=int(len(bank[1])), solver=solver)
    return head, details


def evaluate_features(train: Split, val: Split | None, test: Split, num_classes: int,
                      config: dict[str, Any] | None = None) -> dict[str, Any]:
    """k-NN top-1 (``map`` for multi-hot labels) of frozen features; ``config`` keys override
    ``protocols/knn.yaml``.

    Returns the headline score, ``k`` (chosen on val, or the configured ``k`` without val),
    ``k_used`` (capped at the bank size), ``k_selection``, ``temperature``, ``bank_size``,
    ``num_test`` and, with val, the val score per k (dict keys are k as strings).
    """
    config = merge_config(_NAME, config)
    train, val, test, num_classes = check_splits(train, val, test, num_classes)
    head, details = fit(train, val, num_classes=num_classes, target=target_kind(train[1]), config=config)
    return {**headline(predict(head, test[0]), test[1]), **details, "num_test": int(len(test[1]))}
