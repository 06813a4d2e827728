"""Evaluation protocols, selected by name.

Each protocol is a module in this package with:

- ``DESCRIPTION``: one line for ``vtabkit list protocols``;
- ``USES_FEATURES``: True for frozen-feature protocols (they get cached features), False for
  protocols that go back to the model (fine-tuning);
- ``cells(config) -> list[dict]``: the independent result cells of one task (e.g. one per
  shots x seed); each cell is a complete config with scalar choices plus ``setting`` (str) and
  ``seed`` (int), and becomes one result record;
- ``evaluate_features(train, val, test, num_classes, config=None) -> dict`` (frozen-feature
  protocols): ``train``/``val``/``test`` are ``(x, y)`` pairs of numpy arrays (``val`` may be
  None); returns at least ``top1`` (fraction in [0, 1]) and the selected hyper-parameters.

A module may also define ``check_config(config)``, which `merge_config` calls to reject bad
types and ranges with one clear line. Settings live in ``protocols/<name>.yaml`` (shipped as
``vtabkit._protocols``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import yaml

from vtabkit.errors import UserError
from vtabkit.paths import definitions_dir

PROTOCOLS = ("linear", "fewshot", "knn", "finetune")


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
