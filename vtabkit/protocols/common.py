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


def check_splits(train, val, test, num_classes) -> tuple[tuple[np.ndarray, np.ndarray],
                                                         tuple[np.ndarray, np.ndarray] | None,
                                                         tuple[np.ndarray, np.ndarray], int]:
    """The three splits checked (one feature width across them) and num_classes as an int."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer; got {num_classes!r}")
    num_classes = int(num_classes)
    train = check_split(train, "train", num_classes)
    dim = train[0].shape[1]
    test = check_split(test, "test", num_classes, dim)
    val = None if val is None else check_split(val, "val", num_classes, dim)
    return train, val, test, num_classes


def top1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of exact matches."""
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


Number = (int, float)


def check_setting(protocol: str, config: dict, key: str, kind, ok=lambda value: True,
                  expected: str = "") -> None:
    """One setting: of type ``kind`` (bool is not a number) and accepted by ``ok``."""
    value = config.get(key)
    wrong_type = not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind))
    if wrong_type or not ok(value):
        raise UserError(f"protocol {protocol!r}: setting {key!r} is {value!r}; expected {expected}")


def check_list(protocol: str, config: dict, key: str, kind, ok=lambda value: True, expected: str = "") -> None:
    """A non-empty list setting whose every item is of type ``kind`` and accepted by ``ok``."""
    values = config.get(key)
    items_ok = isinstance(values, list) and values and all(
        isinstance(v, kind) and not isinstance(v, bool) and ok(v) for v in values)
    if not items_ok:
        raise UserError(f"protocol {protocol!r}: setting {key!r} is {values!r}; expected a non-empty list of {expected}")


def _as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)
