"""Input checks and input types shared by the protocols."""

from __future__ import annotations

import dataclasses
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from vtabkit.errors import UserError
from vtabkit.tasks import View


@dataclasses.dataclass
class Images:
    """The images of a data view, for protocols that go back to the model (fine-tuning).

    ``rows`` keeps a subset of the view's examples (a data regime); None keeps them all.
    """

    view: View
    targets: np.ndarray
    ids: np.ndarray
    data_dir: str | None = None
    rows: np.ndarray | None = None


@dataclasses.dataclass
class FitContext:
    """What a protocol that goes back to the model needs besides its inputs."""

    model: Any = None
    work_dir: Path | None = None
    log: Callable[[str], None] = print
    progress: bool = False  # progress bars on the terminal


def target_kind(y: np.ndarray) -> str:
    """``single`` for 1-D labels, ``multi`` for a 2-D multi-hot array."""
    return "single" if np.ndim(y) == 1 else "multi"


def check_split(pair, name: str, num_classes: int, dim: int | None = None,
                target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``(x, y)`` pair: 2-D finite features; integer labels in [0, num_classes)
    (``single``) or a 0/1 multi-hot (N, num_classes) array (``multi``)."""
    try:
        x, y = pair
    except (TypeError, ValueError):
        raise UserError(f"{name} must be an (x, y) pair of arrays") from None
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2:
        raise UserError(f"{name} features must be 2-D (examples, dim), got shape {x.shape}")
    target = target or target_kind(y)
    if len(y) != len(x) or (target == "single" and y.ndim != 1) or \
            (target == "multi" and y.shape[1:] != (num_classes,)):
        form = "1-D with one label per example" if target == "single" else f"(examples, {num_classes}) multi-hot"
        raise UserError(f"{name} labels must be {form} ({len(x)} examples, labels of shape {y.shape})")
    if len(y) == 0:
        raise UserError(f"{name} split is empty")
    if dim is not None and x.shape[1] != dim:
        raise UserError(f"{name} features have dim {x.shape[1]}, train features have {dim}")
    if target == "single" and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes):
        raise UserError(f"{name} labels must be integers in [0, {num_classes})")
    if target == "multi" and not np.isin(y, (0, 1)).all():
        raise UserError(f"{name} multi-hot labels must be 0 or 1")
    if not np.isfinite(x).all():
        raise UserError(f"{name} features contain NaN or inf")
    return x.astype(np.float32, copy=False), y.astype(np.int64 if target == "single" else np.uint8, copy=False)


def check_splits(train, val, test, num_classes) -> tuple[tuple[np.ndarray, np.ndarray],
                                                         tuple[np.ndarray, np.ndarray] | None,
                                                         tuple[np.ndarray, np.ndarray] | None, int]:
    """The splits checked (one feature width and one target kind across them) and num_classes
    as an int. ``test`` may be None (a fit without scoring)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer; got {num_classes!r}")
    num_classes = int(num_classes)
    train = check_split(train, "train", num_classes)
    dim, target = train[0].shape[1], target_kind(train[1])
    test = None if test is None else check_split(test, "test", num_classes, dim, target)
    val = None if val is None else check_split(val, "val", num_classes, dim, target)
    return train, val, test, num_classes


def headline(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The array API's headline score: ``top1`` for labels, ``map`` for multi-hot targets."""
    from vtabkit import metrics

    name = "top1" if target_kind(y) == "single" else "map"
    return {name: metrics.get_metric(name).function(scores, y)}


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


def solver_for(size: float, host_max_size: float) -> str:
    """``host`` (NumPy/SciPy, no compile) for a problem of ``size`` at or below ``host_max_size``
    (a probe's setting; 0: never), else ``device`` (compiled JAX)."""
    return "host" if size <= float(host_max_size) else "device"


def one_blas_thread(function: Callable) -> Callable:
    """Run ``function`` with NumPy's BLAS on one thread: the host paths' matrices are small, and
    with JAX's CPU threads in the process OpenBLAS's own contend with them (measured: the first
    768 x 768 eigh took 4 s on 2 threads, 0.2 s on one; k-NN votes at 1000 x 768 2.5x slower)."""
    @wraps(function)
    def limited(*args, **kwargs):
        with threadpool_limits(1, user_api="blas"):
            return function(*args, **kwargs)
    return limited


def bucket(n: int, floor: int) -> int:
    """The smallest size of the ladder floor·{1, 1.5}·2^k that holds ``n``.

    Compiled solvers see only these sizes, so problems of many shapes share a few compiles; the
    ladder's steps (1.5x, then 4/3x) bound the padding to half of the real size.
    """
    size = floor
    while True:
        for step in (size, size * 3 // 2):
            if n <= step:
                return step
        size *= 2
