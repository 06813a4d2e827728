"""The model's own classifier as the head (``head: model``): nothing is fitted.

For models that declare their classifier (`vtabkit.Model.logits`, e.g. an ImageNet-1k head of a
Flax ViT/Mixer/BiT checkpoint or a timm classifier), the scores on every eval set are those
logits, unchanged. The runner gives this protocol the eval sets' logits only (``INPUT =
"logits"``): no train or val data is read, and a model without a classifier, or one whose
classifier has another number of classes than the task, is refused in one line before any work
(`vtabkit.models.model.require_head`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DESCRIPTION = "the model's own classifier logits (e.g. its ImageNet-1k head); nothing fitted"
INPUT = "logits"
TARGETS = ("single", "set")
HEAD = "model"  # what the record's ``head`` field says


def cells(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(config, setting="default", seed=0)]


def fit(train: Any, val: Any, *, num_classes: int, target: str, config: dict[str, Any],
        context: Any = None) -> tuple[int, dict[str, Any]]:
    """Nothing to fit: the head is the model's classifier with ``num_classes`` outputs."""
    return num_classes, {"head": HEAD, "fitted": False}


def predict(head: int, x: np.ndarray) -> np.ndarray:
    """The logits themselves (``x`` holds them), after a shape check."""
    from vtabkit.errors import UserError

    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != head:
        raise UserError(f"the model's classifier returned logits of shape {x.shape}; expected (N, {head})")
    return x
