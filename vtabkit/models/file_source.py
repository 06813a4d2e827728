"""Model source ``path/to/file.py[:factory]``: a factory defined in a Python file.

Without ``:factory`` the file's one model is used: the one it registers with
``@vtabkit.register_model``, else the one function it defines annotated ``-> vtabkit.Model``
(or called ``model``). The file's sha256 goes into the record and the fingerprint in place of
its path, so the same file reached through another path is the same model.

A model source declares `claims` (which names it resolves), `check` (fail early, without
building) and `resolve` (the factory and facts for the record); see `vtabkit.models.registry`.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from vtabkit.errors import UserError
from vtabkit.models.model import REGISTERED_ATTRIBUTE, Model, file_sha256


def claims(name: str) -> bool:
    """Whether ``name`` is a ``path/to/file.py[:factory]`` spec rather than a registered name."""
    return name.endswith(".py") or ".py:" in name


def _split(name: str) -> tuple[Path, str]:
    """``path/to/file.py[:factory]`` → (an existing path, the factory's name or "")."""
    path_text, attr = (name.rsplit(":", 1) if ".py:" in name else (name, ""))
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; use --model path/to/file.py:factory")
    return path, attr


def check(name: str) -> None:
    """Fail now, with one line, if the file does not exist."""
    _split(name)


def _import(path: Path) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location(f"vtabkit_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's code: report it in one line
        raise UserError(f"could not import model file {path}: {type(error).__name__}: {error}") from error
    return module


def _returns_model(function: Callable[..., Any]) -> bool:
    annotation = inspect.signature(function).return_annotation
    # With `from __future__ import annotations` the annotation is the text as written.
    return annotation is Model or (isinstance(annotation, str) and annotation.split(".")[-1] == "Model")


def _only_factory(module: ModuleType, path: Path) -> str:
    """The name of the file's one model factory, or a one-line error listing the candidates."""
    defined = {name: value for name, value in vars(module).items()
               if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")}
    registered = [name for name, value in defined.items() if hasattr(value, REGISTERED_ATTRIBUTE)]
    candidates = registered or [name for name, value in defined.items()
                                if name == "model" or _returns_model(value)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise UserError(f"model file {path} defines {len(candidates)} models ({', '.join(candidates)}); "
                        f"pick one: --model {path}:{candidates[0]}")
    functions = f" (its functions: {', '.join(defined)})" if defined else ""
    raise UserError(f"model file {path} registers no model and defines no function returning vtabkit.Model"
                    f"{functions}; name the factory: --model {path}:FACTORY")


def resolve(name: str) -> tuple[Callable[..., Model], dict[str, Any]]:
    """The factory named by ``name`` and the file's facts for the record (``model_file``)."""
    path, attr = _split(name)
    module = _import(path)
    attr = attr or _only_factory(module, path)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"model file {path} has no callable {attr!r}; use --model path/to/file.py:factory")
    return factory, {"model_file": {"path": str(path), "factory": attr, "sha256": file_sha256(path)}}
