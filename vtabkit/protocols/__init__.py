"""Evaluation protocols, selected by name.

Every protocol is two steps: *fit* (train, val → a head) and *predict* (head, inputs → scores
of shape (N, C)). The runner fits once per cell and predicts on every eval set of the task;
metrics are computed from the scores (`vtabkit.metrics`), never inside a protocol. Each
protocol is a module in this package with:

- ``DESCRIPTION``: one line for ``vtabkit list protocols``;
- ``INPUT``: ``"features"`` (frozen features: inputs are ``(x, y)`` array pairs),
  ``"images"`` (the protocol goes back to the model: inputs are `common.Images`) or
  ``"logits"`` (the model's own classifier: no train/val inputs, ``predict`` gets the eval
  set's logits; see `model_head`);
- ``TARGETS``: the target kinds it can fit (``single``, ``multi``); others are refused in one
  line before any work (`check_target`);
- ``cells(config) -> list[dict]``: the independent result cells of one task (e.g. one per
  shots x seed) from already merged settings; each cell is a complete config with scalar
  choices plus ``setting`` (str) and ``seed`` (int);
- ``fit(train, val, *, num_classes, target, config, context=None) -> (head, details)``:
  ``val`` may be None; ``details`` (JSON-able) says what was chosen and how;
- ``predict(head, inputs) -> np.ndarray`` of scores (N, C), logit-like (higher = more likely);
- ``evaluate_features(train, val, test, num_classes, config=None) -> dict`` (frozen protocols):
  the one-call API on arrays; returns ``top1`` (``map`` for multi-hot targets) and the
  selected hyper-parameters.

A module may also define ``check_config(config)``, which `merge_config` calls to reject bad
types and ranges with one clear line. Settings live in ``protocols/<name>.yaml`` (shipped as
``vtabkit._protocols``); the runner merges and validates them once and passes the result on.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import yaml

from vtabkit.errors import UserError
from vtabkit.paths import definitions_dir

PROTOCOLS = ("linear", "fewshot", "knn", "finetune", "model_head")


def get_protocol(name: str) -> ModuleType:
    """The protocol module called ``name``."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)} "
                        "(see `vtabkit list protocols`)")
    return importlib.import_module(f"vtabkit.protocols.{name}")


def load_config(name: str) -> dict[str, Any]:
    """The default settings of protocol ``name`` from ``protocols/<name>.yaml``."""
    path = definitions_dir("protocols") / f"{name}.yaml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"protocol {name!r} has no settings file {name}.yaml; "
                        "reinstall vtabkit") from None
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML ({getattr(error, 'problem', error)}); fix or reinstall it") from None
    if not isinstance(config, dict):
        raise UserError(f"protocols/{name}.yaml must be a mapping of settings")
    return config


def merge_config(name: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults from YAML, overridden by the keys of ``config``; unknown keys are an error."""
    merged = load_config(name)
    for key, value in (config or {}).items():
        if key not in merged and key not in ("setting", "seed"):
            raise UserError(f"protocol {name!r} has no setting {key!r}; "
                            f"known settings: {', '.join(sorted(merged))}")
        merged[key] = value
    check = getattr(get_protocol(name), "check_config", None)
    if check is not None:  # types and ranges, before any model or data is touched
        check(merged)
    return merged


def check_target(name: str, target: str) -> None:
    """One line, before any work, when protocol ``name`` cannot fit targets of kind ``target``."""
    accepted = get_protocol(name).TARGETS
    if target not in accepted:
        raise UserError(f"protocol {name!r} cannot fit {target!r} targets (it fits "
                        f"{', '.join(accepted)}); choose another protocol for this task")
