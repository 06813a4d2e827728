"""The model registry: decorator, entry points, files; fingerprints; declared input checks."""

import hashlib
from importlib import metadata

import jax.numpy as jnp
import numpy as np
import pytest

import vtabkit
from vtabkit.errors import UserError
from vtabkit.models import model as model_module
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


# ----------------------------------------------------------------------------- identity and files

FILE_MODEL = """
import numpy as np
import vtabkit

def f(weights="w.npy", scale=1.0):
    w = np.load(weights)
    return vtabkit.Model(apply=lambda p, x: np.asarray(x).reshape(len(x), -1)[:, :len(w)] * w * scale,
                         resolution=8, jittable=False)
"""


def test_same_model_file_through_another_path_is_the_same_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "m.py").write_text(FILE_MODEL)
    np.save(tmp_path / "w.npy", np.arange(3.0))
    direct = vtabkit.create_model("m.py:f")
    around = vtabkit.create_model("./x/../m.py:f", weights="./x/../w.npy")
    absolute = vtabkit.create_model(f"{tmp_path / 'm.py'}:f", weights=str(tmp_path / "w.npy"))
    assert direct.fingerprint == around.fingerprint == absolute.fingerprint
    assert direct.metadata["model_file"]["sha256"] == hashlib.sha256((tmp_path / "m.py").read_bytes()).hexdigest()
    # The record names the weights file and the sha256 of its bytes.
    assert direct.metadata["files"] == {"weights": {"path": "w.npy",
                                                    "sha256": hashlib.sha256((tmp_path / "w.npy").read_bytes())
                                                    .hexdigest()}}
    assert direct.cacheable and direct.identity_note == ""
    assert vtabkit.create_model("m.py:f", scale=2.0).fingerprint != direct.fingerprint
    (tmp_path / "m.py").write_text(FILE_MODEL + "\n# an edit\n")  # other source: another model
    assert vtabkit.create_model("m.py:f").fingerprint != direct.fingerprint


def test_weights_file_content_not_path_decides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(FILE_MODEL)
    np.save(tmp_path / "w.npy", np.arange(3.0))
    first = vtabkit.create_model("m.py:f").fingerprint
    np.save(tmp_path / "copy.npy", np.arange(3.0))
    assert vtabkit.create_model("m.py:f", weights="copy.npy").fingerprint == first
    np.save(tmp_path / "w.npy", np.arange(3.0) + 1)  # the same path, new weights
    assert vtabkit.create_model("m.py:f").fingerprint != first


def test_directory_arguments_hash_their_files(tmp_path):
    folder = tmp_path / "weights"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.bin").write_bytes(b"one")
    vtabkit.register_model("test_dir_model")(lambda folder: _mean_model())
    first = vtabkit.create_model("test_dir_model", folder=str(folder))
    (folder / "sub" / "a.bin").write_bytes(b"two")
    second = vtabkit.create_model("test_dir_model", folder=str(folder))
    assert first.fingerprint != second.fingerprint and second.cacheable
    # Independent check of the directory hash: relative name, a NUL, the bytes.
    expected = hashlib.sha256(b"sub/a.bin\0two").hexdigest()
    assert second.metadata["files"]["folder"]["sha256"] == expected


def test_what_identifies_a_model():
    def numpy_model(**fields):
        return vtabkit.Model(apply=lambda p, x: x, resolution=8, jittable=False, **fields)
    assert not numpy_model().cacheable and "Model.identity" in numpy_model().identity_note
    assert model_module.cache_note(numpy_model(name="n")).count("\n") == 0
    assert numpy_model(identity="sha:abc").cacheable and model_module.cache_note(numpy_model(identity="x")) is None
    assert numpy_model(fingerprint="given").cacheable  # an author-given fingerprint is a declared identity
    assert numpy_model(params={"w": np.ones(2)}).cacheable and not numpy_model(params={}).cacheable
    # A declared identity is part of the fingerprint.
    vtabkit.register_model("test_identity")(lambda identity="a": numpy_model(identity=identity))
    assert vtabkit.create_model("test_identity").fingerprint != vtabkit.create_model("test_identity",
                                                                                     identity="b").fingerprint
    assert vtabkit.create_model("pixels").cacheable  # no weights at all: declared as such


# ----------------------------------------------------------------------------- file.py without :factory

@pytest.mark.parametrize("body, chosen", [
    ("@vtabkit.register_model('test_file_registered')\ndef mine():\n    return _make()\n\n"
     "def helper() -> vtabkit.Model:\n    return _make()\n", "mine"),
    ("def helper(x):\n    return x\n\ndef only() -> vtabkit.Model:\n    return _make()\n", "only"),
    ("from __future__ import annotations\n\ndef only() -> vtabkit.Model:\n    return _make()\n", "only"),
    ("def model():\n    return _make()\n", "model"),
])
def test_file_without_factory_uses_its_one_model(tmp_path, body, chosen):
    path = tmp_path / "one.py"
    future, body = ("from __future__ import annotations\n", body.split("\n\n", 1)[1]) \
        if body.startswith("from __future__") else ("", body)  # annotations read as text
    path.write_text(future + "import jax.numpy as jnp\nimport vtabkit\n\n"
                    "def _make():\n    return vtabkit.Model(apply=lambda p, x: jnp.mean(x, axis=(1, 2)), resolution=8)\n\n"
                    + body)
    model = vtabkit.create_model(str(path))
    assert model.metadata["model_file"]["factory"] == chosen


@pytest.mark.parametrize("body, message", [
    ("def a() -> vtabkit.Model:\n    pass\n\ndef b() -> vtabkit.Model:\n    pass\n", r"defines 2 models \(a, b\)"),
    ("def a(x):\n    return x\n", r"defines no function returning vtabkit.Model \(its functions: a\)"),
])
def test_file_without_factory_lists_the_candidates_in_one_line(tmp_path, body, message):
    path = tmp_path / "many.py"
    path.write_text("import vtabkit\n\n" + body)
    with pytest.raises(UserError, match=message) as raised:
        vtabkit.create_model(str(path))
    assert "\n" not in str(raised.value) and f"--model {path}:" in str(raised.value)


# ----------------------------------------------------------------------------- layering

def test_registry_knows_sources_only_through_its_table():
    import ast
    from pathlib import Path

    folder = Path(model_module.__file__).parent
    imports = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        imports[path.stem] = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree)
                              if isinstance(node, ast.ImportFrom) and node.module
                              and node.module.startswith("vtabkit.models")}
    assert "registry" not in imports["model"] | imports["file_source"] | imports["torch_adapter"]
    assert imports["model"] == set() and not {"torch_adapter", "file_source"} & imports["registry"]
    for name, targets in imports.items():  # no two modules import each other
        assert all(name not in imports.get(target, set()) for target in targets), name
