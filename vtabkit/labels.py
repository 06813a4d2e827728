"""Named, parameterised label rules referenced from task YAML (``label: {rule: ..., ...}``).

Each rule maps one TFDS example (a dict of tf tensors, nested dicts for sequence features) to
an int64 scalar label. Feature keys may name nested features with ``/``
(``objects/pixel_coords``). Rules are graph-safe so they run inside ``tf.data.map``. TensorFlow is imported inside the
rules so that listing and validating tasks does not pay for its start-up.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from vtabkit.errors import UserError

Example = dict[str, Any]
_RULES: dict[str, Callable[..., Any]] = {}


def label_rule(name: str) -> Callable:
    """Decorator: register a label rule under ``name``."""
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        _RULES[name] = function
        return function
    return decorate


def feature(example: Example, key: str) -> Any:
    """The (possibly nested, ``a/b``) feature ``key`` of ``example``."""
    value: Any = example
    for part in key.split("/"):
        value = value[part]
    return value


@label_rule("feature")
def feature_label(example: Example, key: str = "label") -> Any:
    """The feature as it is (most classification datasets)."""
    import tensorflow as tf
    return tf.cast(feature(example, key), tf.int64)


@label_rule("floor_divide")
def floor_divide(example: Example, key: str, divisor: float) -> Any:
    """floor(value / divisor): groups an integer attribute into coarser classes
    (dSprites x position 32 → 16 with divisor 2; orientation 40 → 16 with divisor 2.5)."""
    import tensorflow as tf
    value = tf.cast(feature(example, key), tf.float64)
    return tf.cast(tf.math.floor(value / divisor), tf.int64)


@label_rule("count")
def count(example: Example, key: str, offset: int = 0) -> Any:
    """Number of entries of a sequence feature plus ``offset`` (CLEVR count: objects − 3)."""
    import tensorflow as tf
    return tf.cast(tf.shape(feature(example, key))[0] + offset, tf.int64)


@label_rule("offset")
def offset(example: Example, key: str, offset: int) -> Any:
    """An integer feature shifted by ``offset`` (a count stored as a number)."""
    import tensorflow as tf
    return tf.cast(feature(example, key), tf.int64) + offset


@label_rule("min_distance_bin")
def min_distance_bin(example: Example, key: str, thresholds: list[float], column: int | None = None,
                     filter_key: str | None = None, filter_below: float | None = None,
                     default: float | None = None) -> Any:
    """Bin the smallest distance among objects.

    d = min over objects of ``feature(key)`` (its ``column`` when the feature is a matrix),
    counting only objects whose ``filter_key`` is < ``filter_below`` when a filter is given;
    ``default`` when no object counts. The label is the index of the largest threshold strictly
    below d, so a d exactly on a threshold falls into the lower bin (CLEVR/KITTI distance).
    """
    import tensorflow as tf
    values = tf.cast(feature(example, key), tf.float64)
    if column is not None:
        values = values[:, column]
    if filter_key is not None:
        keep = tf.cast(feature(example, filter_key), tf.float64) < filter_below
        values = tf.boolean_mask(values, keep)
    fallback = tf.constant(default if default is not None else float("inf"), tf.float64)
    distance = tf.cond(tf.size(values) > 0, lambda: tf.reduce_min(values), lambda: fallback)
    below = tf.cast(tf.constant(thresholds, tf.float64) < distance, tf.int64)
    return tf.reduce_sum(below) - 1


def validate_rule(spec: dict[str, Any], where: str) -> None:
    """Check that ``spec`` names a known rule with parameters it accepts (at load time)."""
    name = spec.get("rule", "feature")
    if name not in _RULES:
        raise UserError(f"{where}: unknown label rule {name!r}; known rules: {', '.join(sorted(_RULES))}")
    params = {k: v for k, v in spec.items() if k != "rule"}
    signature = inspect.signature(_RULES[name])
    try:
        signature.bind(None, **params)
    except TypeError as error:
        raise UserError(f"{where}: label rule {name!r}: {error}") from None


def apply_rule(spec: dict[str, Any], example: Example) -> Any:
    """The label of ``example`` under rule ``spec`` (``{rule: name, **params}``)."""
    params = {k: v for k, v in spec.items() if k != "rule"}
    return _RULES[spec.get("rule", "feature")](example, **params)


def list_rules() -> list[str]:
    return sorted(_RULES)
