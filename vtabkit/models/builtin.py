"""Built-in models: the ``pixels`` baseline here, the Flax backbones from ``zoo``."""

from __future__ import annotations

import importlib.util

import jax.numpy as jnp

from vtabkit.models.model import Model
from vtabkit.models.registry import register_model


@register_model("pixels")
def pixels(resolution: int = 32) -> Model:
    """Raw pixels resized to ``resolution`` and flattened: the classic lower baseline."""
    def apply(params, images):
        del params
        return jnp.reshape(images, (images.shape[0], -1))
    # No weights: the code (vtabkit's own, versioned in every cache key) is the whole identity.
    return Model(apply=apply, resolution=resolution, value_range=(0.0, 1.0), identity="pixels",
                 metadata={"architecture": "pixels"})


# The Flax backbones register themselves on import.
if importlib.util.find_spec("vtabkit.models.zoo") is not None:
    importlib.import_module("vtabkit.models.zoo")
