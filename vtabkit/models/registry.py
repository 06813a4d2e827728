"""The model registry: one ``create_model(name)`` entry point, registration by decorator.

A *model* is a `Model`: a function from a preprocessed NHWC float batch to a 2-D feature array,
plus the input it wants (resolution, value range or mean/std). It is made by a *factory*
registered under a name:

    @vtabkit.register_model("mymodel")
    def mymodel() -> vtabkit.Model:
        return vtabkit.Model(apply=lambda params, x: x.mean(axis=(1, 2)), resolution=64)

Other packages register factories through the ``vtabkit.models`` entry-point group, and the
CLI accepts ``--model path/to/file.py:factory``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vtabkit.errors import UserError

ENTRY_POINT_GROUP = "vtabkit.models"


@dataclasses.dataclass
class Model:
    """A feature extractor and the input it expects.

    apply: ``apply(params, images) -> features``; images are float32 NHWC at ``resolution``,
        already scaled to ``value_range`` (or normalised with ``mean``/``std`` when given);
        features are ``(N, D)``. Must be jit-able when ``jittable`` is True.
    params: pytree passed to ``apply`` (weights); hashed into the fingerprint.
    resolution: square input size in pixels.
    value_range: pixel values are mapped linearly from [0, 255] to this range.
    mean, std: optional per-channel normalisation applied after ``value_range``
        (e.g. ImageNet mean/std with ``value_range=(0, 1)``).
    jittable: False for models that run outside JAX (e.g. PyTorch); they get numpy batches.
    module: the Flax module, for fine-tuning (``module.apply({'params': params}, x)`` must return
        ``(logits_or_none, {'pre_logits': ...})``-style outputs, see ``vtabkit.models.flax_utils``).
    fingerprint: stable identity of weights + preprocessing; computed when not given.
    metadata: free-form facts (architecture, checkpoint source) written into result records.
    """

    apply: Callable[[Any, Any], Any]
    resolution: int
    params: Any = None
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    jittable: bool = True
    module: Any = None
    name: str = ""
    fingerprint: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def preprocessing(self) -> dict[str, Any]:
        """The input facts that change the features, for cache keys and records."""
        return {"resolution": self.resolution, "value_range": list(self.value_range),
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std), "resize": "bilinear"}


_FACTORIES: dict[str, Callable[..., Model]] = {}


def register_model(name: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Decorator: register ``factory`` (no required arguments, returns a `Model`) as ``name``."""
    def decorate(factory: Callable[..., Model]) -> Callable[..., Model]:
        _FACTORIES[name] = factory
        return factory
    return decorate


def _load_entry_points() -> None:
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _FACTORIES:
            _FACTORIES[entry.name] = entry.load()


def _model_file(name: str) -> tuple[Path, str]:
    """``path/to/file.py[:factory]`` → (an existing path, the factory's name; default ``model``)."""
    path_text, _, attr = (name if ".py:" in name else name + ":model").rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; use --model path/to/file.py:factory")
    return path, attr


def _factory_from_file(name: str) -> tuple[Callable[..., Model], str]:
    path, attr = _model_file(name)
    module_spec = importlib.util.spec_from_file_location(f"vtabkit_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's code: report it in one line
        raise UserError(f"could not import model file {path}: {type(error).__name__}: {error}") from error
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"model file {path} has no callable {attr!r}; "
                        "use --model path/to/file.py:factory")
    return factory, hashlib.sha256(path.read_bytes()).hexdigest()[:16]


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


def is_model_file(name: str) -> bool:
    """Whether ``name`` is a ``path/to/file.py[:factory]`` model spec rather than a registered name."""
    return name.endswith(".py") or ".py:" in name


def _is_torch_spec(name: str) -> bool:
    from vtabkit.models.torch_adapter import is_torch_spec  # no torch import: a prefix check

    return is_torch_spec(name)


def check_model_name(name: str) -> None:
    """Fail now, with one line, if ``name`` cannot name a model (without building it)."""
    if is_model_file(name):
        _model_file(name)
    elif not _is_torch_spec(name):
        model_factory(name)


def create_model(name: str, **kwargs: Any) -> Model:
    """Build the model registered as ``name`` (or ``path/to/file.py:factory``)."""
    source_hash = ""
    if is_model_file(name):
        factory, source_hash = _factory_from_file(name)
    elif _is_torch_spec(name):
        from vtabkit.models.torch_adapter import create_torch_model

        factory = partial(create_torch_model, name)
    else:
        factory = model_factory(name)
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
    _check_input_spec(model, name)
    model.name = model.name or name
    model.metadata.setdefault("factory_args", _factory_args(factory, kwargs))
    if not model.fingerprint:
        model.fingerprint = fingerprint(model, extra=source_hash)
    return model


def _factory_args(factory: Callable[..., Model], kwargs: dict[str, Any]) -> dict[str, str]:
    """The factory's arguments with defaults filled in, as text (they go into the fingerprint:
    an argument may change what ``apply`` computes, not only the weights). ``checkpoint`` is
    left out: its content, the weights, is hashed already, whatever path it was read from."""
    try:
        bound = inspect.signature(factory).bind(**kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
    except (TypeError, ValueError):  # signature not introspectable: take the arguments as given
        arguments = dict(kwargs)
    return {key: repr(value) for key, value in sorted(arguments.items()) if key != "checkpoint"}


def _check_input_spec(model: Model, name: str) -> None:
    """The declared input must be usable before any image is read."""
    if isinstance(model.resolution, bool) or not isinstance(model.resolution, int) or model.resolution < 1:
        raise UserError(f"model {name!r} declares resolution {model.resolution!r}; it must be a positive int")
    try:
        low, high = (float(v) for v in model.value_range)
    except (TypeError, ValueError):
        raise UserError(f"model {name!r} declares value_range {model.value_range!r}; "
                        "it must be two numbers, e.g. (0.0, 1.0)") from None
    for field in ("mean", "std"):
        value = getattr(model, field)
        if value is not None and (len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)):
            raise UserError(f"model {name!r} declares {field} {value!r}; it must be three numbers (R, G, B)")
    if (model.mean is None) != (model.std is None) or (model.std is not None and min(model.std) <= 0):
        raise UserError(f"model {name!r} must declare both mean and std (std > 0), or neither")


def fingerprint(model: Model, extra: str = "") -> str:
    """A stable hash of the model's name, weights and preprocessing.

    Weights are hashed leaf by leaf in tree order (shape, dtype and bytes), so two checkpoints
    that differ in any value get different fingerprints and their cached features never mix.
    """
    import jax  # deferred: listing models should not pay for JAX start-up

    digest = hashlib.sha256()
    digest.update(model.name.encode())
    digest.update(repr(sorted(model.preprocessing().items())).encode())
    digest.update(extra.encode())
    digest.update(repr(sorted(model.metadata.get("factory_args", {}).items())).encode())
    leaves_with_paths = jax.tree_util.tree_flatten_with_path(model.params)[0] if model.params is not None else []
    for path, leaf in leaves_with_paths:
        array = np.asarray(leaf)
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("vtabkit.models.builtin")
