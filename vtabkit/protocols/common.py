"""Input checks and scores shared by the frozen-feature protocols."""

from __future__ import annotations

import numpy as np

from vtabkit.errors import UserError


def check_split(pair, name: str, num_classes: int, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``(x, y)`` pair: 2-D finite features, integer labels in [0, num_classes)."""
    try:
        x, y = pair
    except (TypeError, ValueError):
        raise UserError(f"{name} must be an (x, y) pair of arrays") from None
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2:
        raise UserError(f"{name} features must be 2-D (examples, dim), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{name} labels must be 1-D with one label per example "
                        f"({len(x)} examples, labels of shape {y.shape})")
    if len(y) == 0:
        raise UserError(f"{name} split is empty")
    if dim is not None and x.shape[1] != dim:
        raise UserError(f"{name} features have dim {x.shape[1]}, train features have {dim}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise UserError(f"{name} labels must be integers in [0, {num_classes})")
    if not np.isfinite(x).all():
        raise UserError(f"{name} features contain NaN or inf")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def top1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of exact matches."""
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))
