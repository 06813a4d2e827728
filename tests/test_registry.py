"""The model registry: decorator, entry points, files; fingerprints; declared input checks."""

from importlib import metadata

import jax.numpy as jnp
import pytest

import vtabkit
from vtabkit.errors import UserError
from vtabkit.models import registry


def _mean_model(resolution: int = 8, pool: str = "mean") -> vtabkit.Model:
    reduce = jnp.mean if pool == "mean" else jnp.max
    return vtabkit.Model(apply=lambda p, x: reduce(x, axis=(1, 2)), resolution=resolution)


def test_decorator_registers_and_lists():
    vtabkit.register_model("test_mean_model")(_mean_model)
    assert "test_mean_model" in vtabkit.list_models()
    model = vtabkit.create_model("test_mean_model")
    assert model.name == "test_mean_model" and model.resolution == 8


def test_entry_point_models_are_found(monkeypatch):
    entry = metadata.EntryPoint(name="from_plugin", value="tests.test_registry:_mean_model",
                                group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: [entry] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.delitem(registry._FACTORIES, "from_plugin", raising=False)
    assert "from_plugin" in vtabkit.list_models()
    assert vtabkit.create_model("from_plugin").resolution == 8


def test_factory_arguments_change_the_fingerprint_defaults_do_not():
    vtabkit.register_model("test_pool_model")(_mean_model)
    default = vtabkit.create_model("test_pool_model").fingerprint
    assert vtabkit.create_model("test_pool_model", pool="mean").fingerprint == default
    assert vtabkit.create_model("test_pool_model", pool="max").fingerprint != default


@pytest.mark.parametrize("fields, message", [
    ({"resolution": 0}, "resolution 0"),
    ({"resolution": 8, "value_range": "wide"}, "value_range 'wide'"),
    ({"resolution": 8, "mean": (0.5, 0.5, 0.5)}, "both mean and std"),
    ({"resolution": 8, "mean": (0.5, 0.5, 0.5), "std": (1.0, 0.0, 1.0)}, "std > 0"),
])
def test_unusable_input_declarations_are_one_line_errors(fields, message):
    vtabkit.register_model("test_bad_input")(lambda: vtabkit.Model(apply=lambda p, x: x, **fields))
    with pytest.raises(UserError, match=message):
        vtabkit.create_model("test_bad_input")
