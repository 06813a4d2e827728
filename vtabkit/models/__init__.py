"""Models: the registry (`create_model`, `register_model`) and the built-in backbones."""

from vtabkit.models.model import Model
from vtabkit.models.registry import create_model, list_models, register_model

__all__ = ["Model", "create_model", "list_models", "register_model"]
