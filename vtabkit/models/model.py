"""What a model *is*: the `Model` record, its fingerprint, its declared input and its limits.

This module sits below the registry and every model source (``timm:``/``hf:``/``open_clip:``,
``path/to/file.py:factory``): they all build `Model` objects and none of them is imported here.

The fingerprint is the identity of the features a model computes. It covers the model's name (or,
for a model file, the file's content and factory name: the path it was reached by does not
matter), the preprocessing, the factory's arguments (the *content* of any argument naming a file),
the weights in ``params`` and an identity the model may declare itself (``Model.identity``, e.g. a
PyTorch ``state_dict`` hash). A model none of which identifies its weights is not cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vtabkit.errors import UserError

# Set by `register_model` on each factory it registers, so a model file's registered factory can
# be found among the file's attributes (the file source never imports the registry).
REGISTERED_ATTRIBUTE = "__vtabkit_model_name__"


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
        ``(logits_or_none, {'pre_logits': ...})``-style outputs, see ``vtabkit.models.zoo``).
    identity: what identifies weights that live outside ``params`` (e.g. a hash of the weights
        file or of a torch ``state_dict``); hashed into the fingerprint. A model with no params,
        no file argument and no identity cannot be told apart from an edited copy, so its
        features are not cached.
    fingerprint: identity of everything that determines the features; `create_model` computes
        it. A value given by the factory is kept as the model's declared ``identity``.
    metadata: free-form facts (architecture, checkpoint source) written into result records.
    logits: optional ``logits(params, images) -> (N, num_classes)``: the model's own classifier
        (e.g. its ImageNet head), same input as ``apply``. Scored by the ``model_head`` protocol.
    num_classes: the width of ``logits`` (required with it).
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
    identity: str = ""
    fingerprint: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    logits: Callable[[Any, Any], Any] | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        # A fingerprint written by the model's author is their statement of its identity.
        if self.fingerprint and not self.identity:
            self.identity = self.fingerprint

    def preprocessing(self) -> dict[str, Any]:
        """The input facts that change the features, for cache keys and records."""
        return {"resolution": self.resolution, "value_range": list(self.value_range),
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std), "resize": "bilinear"}

    @property
    def cacheable(self) -> bool:
        """Whether something identifies the weights, so cached features cannot be stale."""
        return bool(self.identity or self.metadata.get("files") or _has_leaves(self.params))

    @property
    def identity_note(self) -> str:
        """One line: why this model's features are not cached ("" when they are)."""
        if self.cacheable:
            return ""
        return (f"model {self.name or 'this model'!r} has no params, no file argument and no Model.identity, "
                "so nothing identifies its weights: its features are computed every run, not cached "
                "(set Model.identity, e.g. a hash of its weights, to cache them)")


def cache_note(model: Model) -> str | None:
    """The line to log once per run when ``model``'s features will not be cached, else None."""
    return model.identity_note or None


def _has_leaves(params: Any) -> bool:
    if params is None:
        return False
    import jax  # deferred: listing models should not pay for JAX start-up

    return bool(jax.tree_util.tree_leaves(params))


# ----------------------------------------------------------------------------- fingerprint

def fingerprint(model: Model) -> str:
    """A stable hash of everything `Model` knows determines its features (see the module doc).

    Weights are hashed leaf by leaf in tree order (shape, dtype and bytes), so two checkpoints
    that differ in any value get different fingerprints and their cached features never mix.
    """
    import jax  # deferred: listing models should not pay for JAX start-up

    digest = hashlib.sha256()
    source = model.metadata.get("model_file")
    # A model file is named by what it contains, not by the path it was reached through.
    digest.update((f"file:{source['sha256']}:{source['factory']}" if source else model.name).encode())
    digest.update(repr(sorted(model.preprocessing().items())).encode())
    digest.update(f"identity:{model.identity}".encode())
    digest.update(repr(sorted(model.metadata.get("factory_args", {}).items())).encode())
    digest.update(repr(sorted((arg, entry["sha256"]) for arg, entry in model.metadata.get("files", {}).items()))
                  .encode())
    leaves_with_paths = jax.tree_util.tree_flatten_with_path(model.params)[0] if model.params is not None else []
    for path, leaf in leaves_with_paths:
        array = np.asarray(leaf)
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and bytes, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(f"{file.relative_to(path).as_posix()}\0".encode())
        with open(file, "rb") as stream:
            while chunk := stream.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _existing_path(value: Any) -> Path | None:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return None
    try:
        path = Path(value).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError):  # e.g. a name too long for the file system
        return None


def describe_arguments(factory: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """The factory's arguments (defaults filled in) split into text and hashed files.

    Every argument may change what ``apply`` computes, so all go into the fingerprint: one naming
    an existing file or directory by the sha256 of its content (whatever path reached it), the
    others as text. ``checkpoint`` given as a URL is left out: a model loading it into ``params``
    is identified by them, and a URL alone does not identify what it serves.
    """
    try:
        bound = inspect.signature(factory).bind(**kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
    except (TypeError, ValueError):  # signature not introspectable: take the arguments as given
        arguments = dict(kwargs)
    text, files = {}, {}
    for key, value in sorted(arguments.items()):
        if (path := _existing_path(value)) is not None:
            files[key] = {"path": str(value), "sha256": file_sha256(path)}
        elif key != "checkpoint":
            text[key] = repr(value)
    return text, files


# ----------------------------------------------------------------------------- declared input

def check_input_spec(model: Model, name: str) -> None:
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


def normalise(model: Model, images, xp):
    """Map [0, 255] pixels to the model's declared value range (and mean/std)."""
    low, high = model.value_range
    images = images * ((high - low) / 255.0) + low
    if model.mean is not None:
        images = (images - xp.asarray(model.mean, images.dtype)) / xp.asarray(model.std, images.dtype)
    return images


# ----------------------------------------------------------------------------- what a model can do

def require_head(model: Model, num_classes: int, task_id: str) -> None:
    """One line unless ``model`` declares its own classifier with ``num_classes`` outputs."""
    name = model.name or "this model"
    if model.logits is None:
        raise UserError(f"protocol 'model_head' scores the model's own classifier, but {name} declares "
                        "none (Model.logits); use --protocol linear (or fewshot) to fit a head instead")
    if model.num_classes != num_classes:
        raise UserError(f"{name}'s own classifier has {model.num_classes} classes but task {task_id!r} has "
                        f"{num_classes}; use --protocol linear for this task")


def logits_model(model: Model) -> Model:
    """``model`` with its classifier logits as the features it computes (own fingerprint, so the
    cached logits never mix with its features)."""
    import hashlib

    derived = hashlib.sha256(f"{model.fingerprint}:logits".encode()).hexdigest()[:16]
    scorer = dataclasses.replace(model, apply=model.logits, fingerprint=derived)
    scorer.identity = model.identity and f"{model.identity}:logits"  # cacheable exactly when model is
    return scorer


def is_flax(model: Model) -> bool:
    """Whether ``model`` is a differentiable Flax model (what fine-tuning needs)."""
    return model.jittable and model.module is not None


def require_flax(model: Model, purpose: str = "fine-tuning") -> None:
    """Raise a one-line `UserError` unless ``model`` is a Flax model."""
    if not is_flax(model):
        kind = "a PyTorch model" if model.metadata.get("framework") == "torch" else "not a Flax model"
        raise UserError(f"{purpose} needs a Flax model, but {model.name or 'this model'} is {kind}; "
                        "use a frozen-feature protocol (linear, fewshot, knn) or a Flax model")


# Raised when code that needs concrete values (numpy, Python `if`, int()) meets a jit tracer.
_TRACER_ERRORS = ("TracerArrayConversionError", "ConcretizationTypeError", "TracerBoolConversionError",
                  "TracerIntegerConversionError", "NonConcreteBooleanIndexError")


def apply_failure(model: Model, error: BaseException, batch_size: int, image_shape: tuple[int, ...]) -> str:
    """One line for ``model.apply`` failing on a real batch; names ``jittable=False`` when the
    failure is numpy (or Python control flow) meeting ``jax.jit``'s traced arrays."""
    kind = type(error).__name__
    first_line = (str(error).splitlines() or [""])[0]
    if model.jittable and kind in _TRACER_ERRORS:
        return (f"model {model.name!r} calls numpy or Python on traced arrays inside jax.jit ({kind}); "
                "declare vtabkit.Model(..., jittable=False) to run apply on numpy batches, "
                "or use jax.numpy throughout")
    return (f"model {model.name!r} failed on a batch of {batch_size} images of shape "
            f"{tuple(image_shape)}: {kind}: {first_line}")
