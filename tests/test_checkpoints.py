"""big_vision ``.npz`` checkpoints: round trips, the older public formats, errors, URLs, fingerprints.

Every checkpoint here is written by the test itself in the format of the public release it stands
for (no weights can be downloaded): big_vision (flat "/" keys), the ViT/AugReg release (pre-linen
module numbers, position embedding under Transformer/posembed_input with a cls row), ViTs saved
with nn.scan, the original BiT release ("resnet/..." TF names) and train-state prefixes.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading

import jax
import numpy as np
import pytest

import vtabkit
from vtabkit import paths
from vtabkit.errors import UserError
from vtabkit.models import checkpoints, zoo
from vtabkit.models.mixer import MlpMixer
from vtabkit.models.model import fingerprint
from vtabkit.models.resnet_v2 import ResNetV2
from vtabkit.models.vit import ViT

TINY_VIT = dict(patch_size=(8, 8), width=32, depth=2, mlp_dim=64, num_heads=2)


def _params(module, resolution, seed=0):
    """Random params where biases, norms and the cls token are non-trivial too."""
    flat = checkpoints.flatten(zoo.init_or_load(module, resolution, seed=seed))
    rng = np.random.default_rng(seed + 100)
    for key, value in flat.items():
        if key.endswith(("bias", "scale")) or key == "cls":
            flat[key] = (value + 0.1 * rng.standard_normal(value.shape)).astype(np.float32)
    return checkpoints.unflatten(flat)


def _features(module, params, resolution, n=3):
    images = np.random.default_rng(1).uniform(-1, 1, (n, resolution, resolution, 3)).astype(np.float32)
    return np.asarray(jax.jit(module.apply)({"params": params}, images)[1]["pre_logits"])


def _write(flat, path):
    np.savez(path, **flat)
    return str(path)


@pytest.mark.parametrize("module,resolution", [
    (ViT(**TINY_VIT), 32),
    (ViT(**TINY_VIT, pool_type="gap", posemb="sincos2d", rep_size=True), 32),
    (ResNetV2(depth=[1, 1, 1, 1]), 32),
    (MlpMixer(patch_size=(8, 8), hidden_dim=32, num_blocks=2, tokens_mlp_dim=16, channels_mlp_dim=64), 32),
], ids=["vit", "vit_gap_sincos_prelogits", "resnet_v2", "mixer"])
def test_round_trip_is_exact(tmp_path, module, resolution):
    params = _params(module, resolution)
    path = tmp_path / "ckpt.npz"
    checkpoints.save_npz(params, path)
    with np.load(path) as stored:  # flat big_vision keys
        assert all("/" in key or key in ("cls", "pos_embedding") for key in stored.files)
    loaded = zoo.init_or_load(module, resolution, checkpoint=str(path))
    _assert_same(loaded, params)  # identical arrays, identical tree: identical features


def _assert_same(loaded, params, **tolerance):
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    check = functools.partial(np.testing.assert_allclose, **tolerance) if tolerance else np.testing.assert_array_equal
    jax.tree.map(lambda a, b: check(np.asarray(a), np.asarray(b)), loaded, params)


def _to_augreg_format(params):
    """The ViT / AugReg release layout: pre-linen numbering, posemb with a cls row, a head."""
    flat = checkpoints.flatten(params)
    out = {}
    for key, value in flat.items():
        key = re.sub(r"MultiHeadDotProductAttention_0", "MultiHeadDotProductAttention_1", key)
        key = re.sub(r"LayerNorm_1", "LayerNorm_2", key)
        key = re.sub(r"MlpBlock_0", "MlpBlock_3", key)
        out[key] = np.asarray(value)
    posemb, cls = out.pop("pos_embedding"), out["cls"]
    cls_row = np.full_like(cls, 0.25)  # old layout: cls gets its own embedding row, added after concat
    out["cls"] = cls - cls_row
    out["Transformer/posembed_input/pos_embedding"] = np.concatenate([cls_row, posemb], axis=1)
    out["head/kernel"] = np.ones((posemb.shape[-1], 21843), np.float32)  # dropped on load
    out["head/bias"] = np.zeros((21843,), np.float32)
    return out


def test_augreg_release_format_loads_into_the_registered_model(tmp_path):
    module = zoo.CHECKPOINTS["augreg_vit_ti16"]["build"]()
    params = _params(module, 224)
    path = _write(_to_augreg_format(params), tmp_path / "Ti_16-i21k.npz")
    model = vtabkit.create_model("augreg_vit_ti16", checkpoint=path)
    assert model.name == "augreg_vit_ti16" and model.resolution == 224 and model.value_range == (-1.0, 1.0)
    assert model.metadata["checkpoint"] == path and "augreg" in model.metadata["checkpoint_url"]
    assert model.module is not None and model.jittable
    # Renaming is exact; folding the cls row back into the cls token rounds in float32.
    _assert_same(model.params, params, atol=1e-6)


def test_scan_and_train_state_formats(tmp_path):
    module = ViT(**TINY_VIT)
    params = _params(module, 32)
    flat = checkpoints.flatten(params)
    stacked = {}
    for key in list(flat):
        if key.startswith("Transformer/encoderblock_"):
            block, rest = key[len("Transformer/encoderblock_"):].split("/", 1)
            stacked.setdefault(rest, {})[int(block)] = np.asarray(flat.pop(key))
    for rest, blocks in stacked.items():
        flat[f"Transformer/encoderblock/{rest}"] = np.stack([blocks[i] for i in sorted(blocks)])
    path = _write({f"params/img/{k}": np.asarray(v) for k, v in flat.items()}, tmp_path / "two_tower.npz")
    _assert_same(zoo.init_or_load(module, 32, checkpoint=path + ":img"), params)
    with pytest.raises(UserError, match="no sub-tree 'txt'"):
        checkpoints.read_npz(path + ":txt")


def _to_big_transfer_format(params):
    """The original BiT release: TF names under resnet/, GroupNorm as (C,), head as a 1x1 conv."""
    out = {}
    for key, value in checkpoints.flatten(params).items():
        value = np.asarray(value)
        if key == "root_block/conv_root/kernel":
            out["resnet/root_block/standardized_conv2d/kernel"] = value
        elif key.startswith("norm-pre-head/"):
            out["resnet/group_norm/" + ("gamma" if key.endswith("scale") else "beta")] = value.reshape(-1)
        else:
            unit, layer, leaf = key.rsplit("/", 2)
            if layer == "conv_proj":
                out[f"resnet/{unit}/a/proj/standardized_conv2d/kernel"] = value
            elif layer.startswith("conv"):
                out[f"resnet/{unit}/{'abc'[int(layer[-1]) - 1]}/standardized_conv2d/kernel"] = value
            else:
                name = "gamma" if leaf == "scale" else "beta"
                out[f"resnet/{unit}/{'abc'[int(layer[-1]) - 1]}/group_norm/{name}"] = value.reshape(-1)
    out["resnet/head/conv2d/kernel"] = np.zeros((1, 1, 2048, 10), np.float32)
    out["resnet/head/conv2d/bias"] = np.zeros((10,), np.float32)
    return out


def test_big_transfer_release_format(tmp_path):
    module = ResNetV2(depth=[1, 1, 1, 1])
    params = _params(module, 32)
    path = _write(_to_big_transfer_format(params), tmp_path / "BiT-M-R50x1.npz")
    _assert_same(zoo.init_or_load(module, 32, checkpoint=path), params)


def test_resolution_change_resizes_the_position_grid(tmp_path):
    module = ViT(**TINY_VIT)
    params = _params(module, 32)  # 4x4 patch grid
    grid = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0), indexing="ij"), -1)  # (4, 4, 2): (row, col)
    params["pos_embedding"] = np.tile(grid.reshape(1, 16, 2), (1, 1, 16)).astype(np.float32)  # linear in position
    path = tmp_path / "ckpt.npz"
    checkpoints.save_npz(params, path)
    loaded = zoo.init_or_load(module, 56, checkpoint=str(path))  # 7x7 grid
    posemb = loaded["pos_embedding"].reshape(7, 7, -1)
    # Bilinear resampling keeps a linear ramp linear, corners on corners (scipy.ndimage.zoom, order 1).
    expected = np.stack(np.meshgrid(np.linspace(0, 3, 7), np.linspace(0, 3, 7), indexing="ij"), -1)
    np.testing.assert_allclose(posemb[..., :2], expected, atol=1e-5)
    np.testing.assert_array_equal(loaded["cls"], params["cls"])  # the cls token is left alone
    assert _features(module, loaded, 56).shape == (3, 32)
    model = vtabkit.create_model("vit_tiny", checkpoint=_write(
        checkpoints.flatten(_params(zoo.BUILTINS["vit_tiny"][0](), 32)), tmp_path / "tiny.npz"), resolution=64)
    assert model.resolution == 64 and model.params["pos_embedding"].shape == (1, 64, 64)


def _tiny_vit_checkpoint(tmp_path, **changes):
    flat = {k: np.asarray(v) for k, v in checkpoints.flatten(_params(ViT(**TINY_VIT), 32)).items()}
    for key, value in changes.items():
        if value is None:
            del flat[key]
        else:
            flat[key] = value
    return _write(flat, tmp_path / "bad.npz")


def _load_tiny(path):
    return zoo.init_or_load(ViT(**TINY_VIT), 32, checkpoint=path)


def test_missing_key_is_named(tmp_path):
    key = "Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel"
    with pytest.raises(UserError, match=f"missing 1 parameter.*{key}"):
        _load_tiny(_tiny_vit_checkpoint(tmp_path, **{key: None}))


def test_unexpected_key_is_named(tmp_path):
    path = _tiny_vit_checkpoint(tmp_path, **{"Transformer/encoderblock_2/LayerNorm_0/scale": np.ones(32, np.float32)})
    with pytest.raises(UserError, match="parameter.*the model does not: Transformer/encoderblock_2/LayerNorm_0/scale"):
        _load_tiny(path)


def test_misshaped_key_names_both_shapes(tmp_path):
    key = "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"
    path = _tiny_vit_checkpoint(tmp_path, **{key: np.zeros((32, 128), np.float32)})
    with pytest.raises(UserError, match=re.escape(f"{key} has shape (32, 128), the model expects (32, 64)")):
        _load_tiny(path)


def test_head_is_dropped_but_other_architectures_are_refused(tmp_path):
    path = _tiny_vit_checkpoint(tmp_path, **{"head/kernel": np.zeros((32, 5), np.float32),
                                             "head/bias": np.zeros((5,), np.float32)})
    assert "head" not in _load_tiny(path)
    with pytest.raises(UserError, match="right architecture"):
        zoo.init_or_load(ResNetV2(depth=[1, 1, 1, 1]), 32, checkpoint=path)


def test_bad_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        checkpoints.read_npz(str(tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(UserError, match="not a readable .npz"):
        checkpoints.read_npz(str(tmp_path / "junk.npz"))


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www over HTTP on localhost; yields (folder, base URL, stop function)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", stop
    if thread.is_alive():
        stop()


def test_url_is_downloaded_once_into_the_cache(http_server, tmp_path):
    folder, base, stop = http_server
    params = _params(ViT(**TINY_VIT), 32)
    checkpoints.save_npz(params, folder / "tiny.npz")
    path = checkpoints.fetch(f"{base}/tiny.npz")
    assert path.parent == paths.cache_dir() / "checkpoints" and path.name.endswith("-tiny.npz")
    stop()  # offline from now on: the cached copy is used
    loaded = _load_tiny(f"{base}/tiny.npz")
    np.testing.assert_array_equal(loaded["embedding"]["kernel"], params["embedding"]["kernel"])
    assert not list(path.parent.glob("*.part"))


def test_unreachable_url_says_to_pass_a_local_path(monkeypatch):
    def offline(url, timeout=None):
        raise checkpoints.urllib.error.URLError(f"no route to {url}")
    monkeypatch.setattr(checkpoints.urllib.request, "urlopen", offline)
    with pytest.raises(UserError) as error:
        checkpoints.fetch("gs://vit_models/augreg/x.npz")
    message = str(error.value)
    assert "\n" not in message
    assert "could not fetch checkpoint https://storage.googleapis.com/vit_models/augreg/x.npz" in message
    assert "pass the local file" in message
    # The registered public checkpoints go the same way (their URL is never contacted here).
    with pytest.raises(UserError, match="could not fetch checkpoint https://storage.googleapis.com/bit_models/"):
        vtabkit.create_model("bit_m_r50x1")
    assert not list((paths.cache_dir() / "checkpoints").glob("*"))  # nothing half-written


def test_fingerprint_is_stable_across_loads_and_sees_every_weight(tmp_path):
    builtin = zoo.BUILTINS["vit_tiny"][0]()
    params = _params(builtin, 32)
    path = tmp_path / "tiny.npz"
    checkpoints.save_npz(params, path)
    first = vtabkit.create_model("vit_tiny", checkpoint=str(path))
    second = vtabkit.create_model("vit_tiny", checkpoint=str(path))
    assert first.fingerprint == second.fingerprint == fingerprint(second)
    assert first.fingerprint != vtabkit.create_model("vit_tiny").fingerprint  # random init differs
    flat = {k: np.asarray(v).copy() for k, v in checkpoints.flatten(params).items()}
    flat["Transformer/encoderblock_1/MlpBlock_0/Dense_1/bias"][3] += 1e-6  # one value, barely
    changed = vtabkit.create_model("vit_tiny", checkpoint=_write(flat, tmp_path / "changed.npz"))
    assert changed.fingerprint != first.fingerprint


def _torch_pt(path):
    torch = pytest.importorskip("torch")
    torch.save({"conv.weight": torch.zeros(2, 3)}, path)


def _safetensors(path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file({"conv.weight": np.zeros((2, 3), np.float32)}, str(path))


@pytest.mark.parametrize("write, says", [
    (_torch_pt, "looks like a PyTorch checkpoint"),
    (_safetensors, "looks like a safetensors file"),
    (lambda path: np.save(open(path, "wb"), np.zeros(3)), "is a single .npy array"),
    (lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)), "is not a zip archive"),
])
def test_wrong_checkpoint_format_is_one_line_naming_the_expected_one(tmp_path, write, says):
    path = tmp_path / "weights.bin"
    write(path)
    with pytest.raises(UserError) as raised:
        vtabkit.create_model("vit_tiny", checkpoint=str(path))
    message = str(raised.value)
    assert says in message and "expected a big_vision .npz" in message and "\n" not in message
    checkpoints.save_npz({"a": {"b": np.ones(2, np.float32)}}, path)  # the right format passes the check
    assert checkpoints.read_npz(str(path))["a/b"].tolist() == [1.0, 1.0]
