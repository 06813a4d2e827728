"""PyTorch side: the weights mean the same in Flax and in timm, and the torch adapter's contract.

The equivalence tests build a small random model in Flax, write it as a big_vision ``.npz``, load
it back through `vtabkit.models.checkpoints`, convert the same arrays into the matching timm model
and compare pre-logits features.

Tolerance: max |flax - timm| <= 1e-4 x max |flax| over the features. Both sides compute in float32
with different op orders (fused qkv vs separate projections, torch vs XLA reductions); measured on
CPU: ViT 3e-7, Mixer ~1e-7, ResNet-v2 5e-6 (deeper, GroupNorm statistics). 1e-4 leaves headroom for
other BLAS builds while any wrong mapping (a transposed kernel, a swapped norm, a missing cls
embedding) breaks agreement at the 1e-1 level. Settings that are *not* numerics noise are matched
explicitly: GELU is the tanh form in big_vision (the checkpoints were trained with it), so timm is
built with ``act_layer="gelu_tanh"`` (its default exact GELU moves features by ~1e-4 relative,
300x more, see the test); LayerNorm eps is 1e-6 in both; BiT's weight-standardisation eps is 1e-10
here and 1e-8 in timm (measured effect < 1e-6).

Torch tests skip with a reason when torch / timm (or transformers, open_clip) cannot be imported.
"""

from __future__ import annotations

import sys
from functools import partial

import jax
import numpy as np
import pytest

from vtabkit.errors import UserError
from vtabkit.models import checkpoints
from vtabkit.models.mixer import MlpMixer
from vtabkit.models.model import Model
from vtabkit.models.resnet_v2 import ResNetV2
from vtabkit.models.model import is_flax, require_flax
from vtabkit.models.torch_adapter import create_torch_model, timm_model
from vtabkit.models.vit import ViT
from vtabkit.models.zoo import init_or_load

TOL = 1e-4


def _import_torch_stack():
    """torch + timm, or skip. Works around one broken-install case, for tests only (see below)."""
    torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install 'vtabkit[torch]'")
    try:
        import timm
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            pytest.skip(f"timm not importable: {error}")
        # PyPI's Linux torchvision wheels are CUDA builds; next to a CPU-only torch their compiled
        # ops cannot load and `import torchvision` fails registering fake kernels for them. timm only
        # uses torchvision's pure-Python parts, so declare the missing op schemas and retry.
        for name in [key for key in sys.modules if key == "torchvision" or key.startswith(("torchvision.", "timm"))]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_torch_stack.library = library  # keep the definitions alive
        try:
            import timm
        except Exception as retry_error:
            pytest.skip(f"timm not importable: {retry_error}")
    except ImportError as error:
        pytest.skip(f"timm not installed ({error}): pip install 'vtabkit[torch]'")
    return torch, timm


@pytest.fixture(scope="module")
def torch_stack():
    return _import_torch_stack()


def _jitter(params, seed):
    """Make every parameter matter: non-trivial biases, norm scales and cls token."""
    rng = np.random.default_rng(seed)
    flat = checkpoints.flatten(params)
    for key, value in flat.items():
        noise = rng.standard_normal(value.shape).astype(np.float32)
        if key.endswith("scale"):
            flat[key] = 1 + 0.1 * noise
        elif key.endswith("bias") or key == "cls":
            flat[key] = 0.1 * noise
        else:
            flat[key] = np.asarray(value)
    return checkpoints.unflatten(flat)


def _roundtrip(module, resolution, tmp_path, seed=0):
    """Random params -> big_vision .npz -> checkpoints.load: (params, flat arrays as loaded)."""
    params = _jitter(init_or_load(module, resolution, seed=seed), seed)
    path = tmp_path / "model.npz"
    checkpoints.save_npz(params, path)
    loaded = init_or_load(module, resolution, checkpoint=str(path))
    return loaded, checkpoints.flatten(loaded)


def _images(resolution, n=4, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, resolution, resolution, 3)).astype(np.float32)


def _relative_difference(torch, net, state_dict, module, params, images):
    """max |ours - timm| / max |ours| over the pre-logits features of ``images``."""
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in state_dict.items()},
                        strict=True)
    net.eval()
    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        theirs = net.forward_head(net.forward_features(x), pre_logits=True).numpy()
    ours = np.asarray(jax.jit(module.apply)({"params": params}, images)[1]["pre_logits"])
    assert ours.shape == theirs.shape
    assert np.abs(ours).max() > 0.1  # a real signal, not two vectors of zeros
    return float(np.abs(ours - theirs).max() / np.abs(ours).max())


def _vit_to_timm(flat, depth, class_token):
    sd = {"patch_embed.proj.weight": flat["embedding/kernel"].transpose(3, 2, 0, 1),
          "patch_embed.proj.bias": flat["embedding/bias"],
          "norm.weight": flat["Transformer/encoder_norm/scale"],
          "norm.bias": flat["Transformer/encoder_norm/bias"]}
    posemb = flat["pos_embedding"]
    width = posemb.shape[-1]
    if class_token:
        # big_vision adds the embedding before prepending cls; timm adds one row per token including cls.
        sd["cls_token"] = flat["cls"]
        sd["pos_embed"] = np.concatenate([np.zeros((1, 1, width), np.float32), posemb], axis=1)
    else:
        sd["pos_embed"] = posemb
    for i in range(depth):
        p, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        mha = p + "MultiHeadDotProductAttention_0/"
        sd[t + "norm1.weight"], sd[t + "norm1.bias"] = flat[p + "LayerNorm_0/scale"], flat[p + "LayerNorm_0/bias"]
        sd[t + "norm2.weight"], sd[t + "norm2.bias"] = flat[p + "LayerNorm_1/scale"], flat[p + "LayerNorm_1/bias"]
        # (D, heads, D/heads) kernels -> one fused (3D, D) torch weight; heads stay in the same order.
        sd[t + "attn.qkv.weight"] = np.concatenate(
            [flat[f"{mha}{n}/kernel"].reshape(width, -1).T for n in ("query", "key", "value")])
        sd[t + "attn.qkv.bias"] = np.concatenate(
            [flat[f"{mha}{n}/bias"].reshape(-1) for n in ("query", "key", "value")])
        sd[t + "attn.proj.weight"] = flat[mha + "out/kernel"].reshape(-1, width).T
        sd[t + "attn.proj.bias"] = flat[mha + "out/bias"]
        for r in range(2):
            sd[t + f"mlp.fc{r + 1}.weight"] = flat[f"{p}MlpBlock_0/Dense_{r}/kernel"].T
            sd[t + f"mlp.fc{r + 1}.bias"] = flat[f"{p}MlpBlock_0/Dense_{r}/bias"]
    return sd


@pytest.mark.parametrize("pool_type", ["tok", "gap"])
def test_vit_matches_timm(torch_stack, tmp_path, pool_type):
    torch, timm = torch_stack
    from timm.models.vision_transformer import VisionTransformer

    module = ViT(patch_size=(8, 8), width=64, depth=2, mlp_dim=256, num_heads=2, pool_type=pool_type)
    params, flat = _roundtrip(module, 32, tmp_path)
    token = pool_type == "tok"
    net = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4.0,
                            qkv_bias=True, class_token=token, global_pool="token" if token else "avg",
                            fc_norm=False, num_classes=0, act_layer="gelu_tanh")
    assert _relative_difference(torch, net, _vit_to_timm(flat, 2, token), module, params, _images(32)) < TOL


def test_vit_exact_gelu_is_a_different_function(torch_stack, tmp_path):
    """Why timm is built with gelu_tanh above: its default exact GELU moves features ~100x more."""
    torch, timm = torch_stack
    from timm.models.vision_transformer import VisionTransformer

    module = ViT(patch_size=(8, 8), width=64, depth=2, mlp_dim=256, num_heads=2, pool_type="tok")
    params, flat = _roundtrip(module, 32, tmp_path)
    differences = {}
    for act in ("gelu_tanh", "gelu"):
        net = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0,
                                global_pool="token", fc_norm=False, act_layer=act)
        differences[act] = _relative_difference(torch, net, _vit_to_timm(flat, 2, True), module, params, _images(32))
    assert differences["gelu"] > 10 * differences["gelu_tanh"]


def _bit_to_timm(flat, blocks):
    def conv(key):
        return flat[key].transpose(3, 2, 0, 1)  # HWIO -> OIHW

    sd = {"stem.conv.weight": conv("root_block/conv_root/kernel"),
          "norm.weight": flat["norm-pre-head/scale"].reshape(-1), "norm.bias": flat["norm-pre-head/bias"].reshape(-1)}
    for s, units in enumerate(blocks):
        for u in range(units):
            p, t = f"block{s + 1}/unit{u + 1:02d}/", f"stages.{s}.blocks.{u}."
            for r in (1, 2, 3):
                sd[t + f"conv{r}.weight"] = conv(f"{p}conv{r}/kernel")
                sd[t + f"norm{r}.weight"] = flat[f"{p}gn{r}/scale"].reshape(-1)
                sd[t + f"norm{r}.bias"] = flat[f"{p}gn{r}/bias"].reshape(-1)
            if p + "conv_proj/kernel" in flat:
                sd[t + "downsample.conv.weight"] = conv(p + "conv_proj/kernel")
    return sd


def test_resnet_v2_matches_timm_bit(torch_stack, tmp_path):
    torch, timm = torch_stack
    from timm.layers import StdConv2d
    from timm.models.resnetv2 import ResNetV2 as TimmResNetV2

    blocks = [1, 1, 1, 1]  # the resnetv2_50x1_bit family with one unit per stage, to stay fast
    module = ResNetV2(depth=blocks, width=1)
    params, flat = _roundtrip(module, 64, tmp_path)
    # Exactly what timm's resnetv2_50x1_bit passes (_create_resnetv2_bit), except the depth.
    net = TimmResNetV2(layers=blocks, width_factor=1, stem_type="fixed",
                       conv_layer=partial(StdConv2d, eps=1e-8), num_classes=0)
    assert _relative_difference(torch, net, _bit_to_timm(flat, blocks), module, params, _images(64)) < TOL


def test_mixer_matches_timm(torch_stack, tmp_path):
    torch, timm = torch_stack
    from timm.layers import get_act_layer
    from timm.models.mlp_mixer import MlpMixer as TimmMixer

    # timm's mixer_b16_224 family: token MLP 0.5 x width, channel MLP 4 x width.
    module = MlpMixer(patch_size=(8, 8), hidden_dim=64, num_blocks=2, tokens_mlp_dim=32, channels_mlp_dim=256)
    params, flat = _roundtrip(module, 32, tmp_path)
    net = TimmMixer(num_classes=0, img_size=32, patch_size=8, num_blocks=2, embed_dim=64, mlp_ratio=(0.5, 4.0),
                    act_layer=get_act_layer("gelu_tanh"))
    sd = {"stem.proj.weight": flat["stem/kernel"].transpose(3, 2, 0, 1), "stem.proj.bias": flat["stem/bias"],
          "norm.weight": flat["pre_head_layer_norm/scale"], "norm.bias": flat["pre_head_layer_norm/bias"]}
    for i in range(2):
        p, t = f"MixerBlock_{i}/", f"blocks.{i}."
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
            sd[t + norm + ".weight"], sd[t + norm + ".bias"] = flat[p + ln + "/scale"], flat[p + ln + "/bias"]
        for ours, theirs in (("token_mixing", "mlp_tokens"), ("channel_mixing", "mlp_channels")):
            for r in range(2):
                sd[f"{t}{theirs}.fc{r + 1}.weight"] = flat[f"{p}{ours}/Dense_{r}/kernel"].T
                sd[f"{t}{theirs}.fc{r + 1}.bias"] = flat[f"{p}{ours}/Dense_{r}/bias"]
    assert _relative_difference(torch, net, sd, module, params, _images(32)) < TOL


# ----------------------------------------------------------------------------- the adapter

def test_timm_adapter_contract(torch_stack):
    torch, timm = torch_stack
    from vtabkit import features

    model = create_torch_model("timm:vit_tiny_patch16_224", pretrained=False)
    assert model.name == "timm:vit_tiny_patch16_224" and model.jittable is False and model.module is None
    assert model.resolution == 224 and model.value_range == (0.0, 1.0)
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.5, 0.5, 0.5)  # from timm's pretrained_cfg
    assert model.metadata["framework"] == "torch" and model.fingerprint
    images = np.random.default_rng(0).uniform(0, 1, (3, 224, 224, 3)).astype(np.float32)
    feats = model.apply(model.params, images)
    assert isinstance(feats, np.ndarray) and feats.shape == (3, 192)
    # The batch function vtabkit uses: uint8-range input, normalised with the model's mean/std.
    run, _ = features.batch_function(model, 3)
    np.testing.assert_allclose(run(images * 255), model.apply(None, (images - 0.5) / 0.5), atol=1e-5)



def test_timm_model_wraps_an_object_and_fingerprints_its_weights(torch_stack):
    torch, timm = torch_stack
    net = timm.create_model("resnet18", pretrained=False)
    model = timm_model(net, "timm:resnet18")
    assert model.apply(None, np.zeros((2, 224, 224, 3), np.float32)).shape == (2, 512)
    assert model.mean == pytest.approx((0.485, 0.456, 0.406))
    # timm's classifier head is the model's own head (`--protocol model_head`): net(x) itself.
    images = np.random.default_rng(1).uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
    assert model.num_classes == 1000
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(model.logits(None, images), expected, rtol=1e-4, atol=1e-4)
    assert timm_model(net, "timm:resnet18").fingerprint == model.fingerprint  # stable
    with torch.no_grad():
        net.conv1.weight[0, 0, 0, 0] += 1e-3  # one weight changes -> the fingerprint changes
    assert timm_model(net, "timm:resnet18").fingerprint != model.fingerprint


def test_unknown_timm_model_is_a_user_error(torch_stack):
    with pytest.raises(UserError, match="unknown timm model"):
        create_torch_model("timm:no_such_model_xyz", pretrained=False)


def test_hf_adapter_from_local_folder(torch_stack, tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64)
    transformers.ViTModel(config).save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                   image_std=[0.25] * 3).save_pretrained(tmp_path)
    model = create_torch_model(f"hf:{tmp_path}")
    assert model.resolution == 32 and model.mean == (0.5,) * 3 and model.std == (0.25,) * 3
    feats = model.apply(None, np.zeros((2, 32, 32, 3), np.float32))
    assert feats.shape == (2, 32)  # the pooled output


def test_open_clip_adapter_random_init(torch_stack):
    pytest.importorskip("open_clip", reason="open_clip_torch not installed")
    model = create_torch_model("open_clip:ViT-S-32")  # no tag: random init, nothing downloaded
    assert model.resolution == 224 and model.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert model.apply(None, np.zeros((2, 224, 224, 3), np.float32)).ndim == 2


# ----------------------------------------------------------------------------- no torch needed

def test_fine_tuning_needs_flax():
    import vtabkit

    flax_model = vtabkit.create_model("vit_tiny")
    assert is_flax(flax_model)
    require_flax(flax_model)
    torch_like = Model(apply=lambda p, x: x, resolution=8, jittable=False, name="timm:x",
                       metadata={"framework": "torch"})
    assert not is_flax(torch_like)
    with pytest.raises(UserError, match="fine-tuning needs a Flax model, but timm:x is a PyTorch model"):
        require_flax(torch_like)


def test_missing_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(UserError, match=r'pip install "vtabkit\[torch\]"'):
        create_torch_model("timm:vit_tiny_patch16_224")


def test_bad_prefix_is_a_user_error(monkeypatch):
    pytest.importorskip("torch")
    with pytest.raises(UserError, match="unknown model prefix"):
        create_torch_model("tf:resnet")
