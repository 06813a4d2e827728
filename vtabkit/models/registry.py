"""The model registry: one ``create_model(name)`` entry point, registration by decorator.

A *model* is a `Model` (see `vtabkit.models.model`): a function from a preprocessed NHWC float
batch to a 2-D feature array, plus the input it wants. It is made by a *factory* registered
under a name:

    @vtabkit.register_model("mymodel")
    def mymodel() -> vtabkit.Model:
        return vtabkit.Model(apply=lambda params, x: x.mean(axis=(1, 2)), resolution=64)

Other packages register factories through the ``vtabkit.models`` entry-point group. Names with
a syntax of their own (``path/to/file.py:factory``, ``timm:``/``hf:``/``open_clip:``) belong to a
*model source*: a module in `SOURCES` with three plain functions, ``claims(name) -> bool``,
``check(name)`` (fail early, without building) and ``resolve(name) -> (factory, facts)``. The
registry imports a source only when it needs to ask it; sources import `model`, never this module.
"""

from __future__ import annotations

import importlib
import inspect
from importlib import metadata
from types import ModuleType
from typing import Any, Callable

from vtabkit.errors import UserError
from vtabkit.models.model import REGISTERED_ATTRIBUTE, Model, check_input_spec, describe_arguments, fingerprint

__all__ = ["ENTRY_POINT_GROUP", "SOURCES", "Model", "check_model_name", "create_model", "fingerprint",
           "list_models", "model_factory", "register_model"]

ENTRY_POINT_GROUP = "vtabkit.models"

# Model sources, asked in this order; each is imported on first use.
SOURCES: list[str] = ["vtabkit.models.file_source", "vtabkit.models.torch_adapter"]

_FACTORIES: dict[str, Callable[..., Model]] = {}


def register_model(name: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Decorator: register ``factory`` (no required arguments, returns a `Model`) as ``name``."""
    def decorate(factory: Callable[..., Model]) -> Callable[..., Model]:
        _FACTORIES[name] = factory
        try:  # lets a model file's registered factory be found among its attributes
            setattr(factory, REGISTERED_ATTRIBUTE, name)
        except (AttributeError, TypeError):  # e.g. a builtin or a bound method
            pass
        return factory
    return decorate


def _load_entry_points() -> None:
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _FACTORIES:
            _FACTORIES[entry.name] = entry.load()


def list_models() -> list[str]:
    """Names of all registered models (built-ins, entry points)."""
    _load_builtins()
    _load_entry_points()
    return sorted(_FACTORIES)


def model_factory(name: str) -> Callable[..., Model]:
    """The factory registered as ``name``, without building the model."""
    _load_builtins()
    if name not in _FACTORIES:
        _load_entry_points()
    if name not in _FACTORIES:
        raise UserError(f"unknown model {name!r}; see `vtabkit list models`, register one with "
                        "@vtabkit.register_model, or pass --model path/to/file.py:factory")
    return _FACTORIES[name]


def _source_for(name: str) -> ModuleType | None:
    """The model source that claims ``name``, if any (imported now, not before)."""
    for module_name in SOURCES:
        source = importlib.import_module(module_name)
        if source.claims(name):
            return source
    return None


def check_model_name(name: str) -> None:
    """Fail now, with one line, if ``name`` cannot name a model (without building it)."""
    source = _source_for(name)
    if source is not None:
        source.check(name)
    else:
        model_factory(name)


def create_model(name: str, **kwargs: Any) -> Model:
    """Build the model registered as ``name`` (or ``path/to/file.py:factory``, ``timm:...``)."""
    source = _source_for(name)
    factory, facts = source.resolve(name) if source is not None else (model_factory(name), {})
    try:
        model = factory(**kwargs)
    except UserError:
        raise
    except TypeError as error:
        params = ", ".join(inspect.signature(factory).parameters)
        raise UserError(f"model {name!r} could not be built: {error} (factory arguments: {params})") from error
    except Exception as error:  # the factory is the user's code: one line, not a traceback
        raise UserError(f"model {name!r} could not be built: {type(error).__name__}: {error}") from error
    if not isinstance(model, Model):
        raise UserError(f"model factory {name!r} returned {type(model).__name__}, not a vtabkit.Model")
    check_input_spec(model, name)
    model.name = model.name or name
    arguments, files = describe_arguments(factory, kwargs)
    model.metadata.setdefault("factory_args", arguments)
    if files:
        model.metadata["files"] = files
    model.metadata.update(facts)
    model.fingerprint = fingerprint(model)  # always: a stale given value would hide changed weights
    return model


_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("vtabkit.models.builtin")
