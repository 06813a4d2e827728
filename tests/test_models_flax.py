"""The Flax backbones: big_vision parameter trees, the (logits, out) convention, the built-ins."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vtabkit
from vtabkit import features
from vtabkit.models import checkpoints, zoo
from vtabkit.models.mixer import MlpMixer, mixer
from vtabkit.models.resnet_v2 import ResNetV2, StdConv
from vtabkit.models.vit import ViT, vit


def _shapes(module, resolution):
    dummy = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    tree = jax.eval_shape(module.init, jax.random.PRNGKey(0), dummy)["params"]
    return {key: tuple(value.shape) for key, value in checkpoints.flatten(tree).items()}


def test_vit_b16_tree_is_big_vision_s():
    shapes = _shapes(vit("B/16", num_classes=1000), 224)
    block = "Transformer/encoderblock_11/"
    mha = block + "MultiHeadDotProductAttention_0/"
    expected = {
        "embedding/kernel": (16, 16, 3, 768), "embedding/bias": (768,),
        "pos_embedding": (1, 196, 768), "cls": (1, 1, 768),
        block + "LayerNorm_0/scale": (768,), block + "LayerNorm_1/bias": (768,),
        mha + "query/kernel": (768, 12, 64), mha + "query/bias": (12, 64),
        mha + "key/kernel": (768, 12, 64), mha + "value/kernel": (768, 12, 64),
        mha + "out/kernel": (12, 64, 768), mha + "out/bias": (768,),
        block + "MlpBlock_0/Dense_0/kernel": (768, 3072), block + "MlpBlock_0/Dense_1/kernel": (3072, 768),
        "Transformer/encoder_norm/scale": (768,), "head/kernel": (768, 1000), "head/bias": (1000,),
    }
    assert {key: shapes[key] for key in expected} == expected
    assert "Transformer/encoderblock_12/LayerNorm_0/scale" not in shapes and "pre_logits/kernel" not in shapes
    # Same count as timm's vit_base_patch16_224 (85,798,656 without head) minus its cls position row.
    assert sum(np.prod(s) for key, s in shapes.items() if not key.startswith("head/")) == 85_798_656 - 768


def test_vit_options_add_the_right_parameters():
    gap = _shapes(vit("S/16", pool_type="gap", posemb="sincos2d", rep_size=True), 224)
    assert "cls" not in gap and "pos_embedding" not in gap and gap["pre_logits/kernel"] == (384, 384)
    with pytest.raises(ValueError, match="unknown ViT size"):
        vit("Q/16")


def test_bit_r50x1_tree_is_big_vision_s():
    shapes = _shapes(ResNetV2(depth=50, width=1, num_classes=10), 224)
    expected = {
        "root_block/conv_root/kernel": (7, 7, 3, 64),
        "block1/unit01/gn1/scale": (1, 1, 1, 64), "block1/unit01/conv1/kernel": (1, 1, 64, 64),
        "block1/unit01/conv2/kernel": (3, 3, 64, 64), "block1/unit01/conv3/kernel": (1, 1, 64, 256),
        "block1/unit01/conv_proj/kernel": (1, 1, 64, 256), "block1/unit03/gn3/bias": (1, 1, 1, 64),
        "block2/unit01/conv_proj/kernel": (1, 1, 256, 512), "block3/unit06/conv2/kernel": (3, 3, 256, 256),
        "block4/unit03/conv3/kernel": (1, 1, 512, 2048), "norm-pre-head/scale": (1, 1, 1, 2048),
        "head/kernel": (2048, 10),
    }
    assert {key: shapes[key] for key in expected} == expected
    assert "block1/unit02/conv_proj/kernel" not in shapes and "block4/unit04/gn1/scale" not in shapes
    assert sum(np.prod(s) for key, s in shapes.items() if not key.startswith("head/")) == 23_500_352  # = timm


def test_mixer_b16_tree_is_big_vision_s():
    shapes = _shapes(mixer("B/16"), 224)
    expected = {
        "stem/kernel": (16, 16, 3, 768), "stem/bias": (768,),
        "MixerBlock_11/LayerNorm_0/scale": (768,), "MixerBlock_11/LayerNorm_1/bias": (768,),
        "MixerBlock_0/token_mixing/Dense_0/kernel": (196, 384), "MixerBlock_0/token_mixing/Dense_1/kernel": (384, 196),
        "MixerBlock_0/channel_mixing/Dense_0/kernel": (768, 3072), "pre_head_layer_norm/scale": (768,),
    }
    assert {key: shapes[key] for key in expected} == expected
    assert sum(np.prod(s) for s in shapes.values()) == 59_111_472  # = timm's mixer_b16_224 without head


@pytest.mark.parametrize("module", [
    ViT(patch_size=(8, 8), width=32, depth=1, mlp_dim=64, num_heads=2, num_classes=5),
    ResNetV2(depth=[1, 1, 1, 1], num_classes=5),
    MlpMixer(patch_size=(8, 8), hidden_dim=32, num_blocks=1, tokens_mlp_dim=8, channels_mlp_dim=64, num_classes=5),
], ids=["vit", "resnet_v2", "mixer"])
def test_logits_and_pre_logits(module):
    """The big_vision convention: (logits, out) with out["pre_logits"]; no head, no logits."""
    params = zoo.init_or_load(module, 32, seed=0)
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    for train in (False, True):
        logits, out = jax.eval_shape(lambda p, x: module.apply({"params": p}, x, train=train), params, images)
        assert logits.shape == (2, 5) and out["pre_logits"].ndim == 2
    params.pop("head")
    logits, out = jax.eval_shape(lambda p, x: module.clone(num_classes=None).apply({"params": p}, x), params, images)
    assert logits is None and out["pre_logits"].shape[0] == 2


def test_gradients_flow_for_fine_tuning():
    # gap pooling: with "tok", depth 1 and the zero-initialised cls token, query/key of the only
    # block get exactly zero gradient (the cls query is 0), which is right but hides the check.
    module = ViT(patch_size=(8, 8), width=32, depth=1, mlp_dim=64, num_heads=2, num_classes=5, pool_type="gap")
    params = zoo.init_or_load(module, 32, seed=0)
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)

    def loss(params):
        logits, _ = module.apply({"params": params}, images, train=True)
        return jnp.sum(logits ** 2)
    grads = jax.jit(jax.grad(loss))(params)  # jit: eager differentiation takes minutes on a CPU
    norms = {key: float(np.abs(g).sum()) for key, g in checkpoints.flatten(grads).items()}
    assert all(np.isfinite(list(norms.values())))
    assert all(norm > 0 for key, norm in norms.items() if key.endswith("kernel"))


def test_weight_standardisation_ignores_kernel_scale():
    conv = StdConv(8, 3)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 6, 6, 4)), jnp.float32)
    params = {"params": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)}}
    scaled = jax.tree.map(lambda k: 3.0 * k + 0.5, params)  # per-channel affine changes of the kernel
    apply = jax.jit(conv.apply)
    np.testing.assert_allclose(apply(scaled, x), apply(params, x), atol=1e-4)


def test_builtins_are_registered_with_their_facts():
    names = vtabkit.list_models()
    for name in ("vit_tiny", "vit_ti16", "vit_s16", "vit_b16", "resnet50x1", "mixer_b16",
                 "augreg_vit_b16", "augreg_vit_s16", "mixer_b16_i21k", "bit_m_r50x1"):
        assert name in names
    assert zoo.BUILTINS["resnet50x1"][1] == 224 and zoo.CHECKPOINTS["augreg_vit_b16"]["resolution"] == 224
    assert all(entry["url"].startswith("https://storage.googleapis.com/") for entry in zoo.CHECKPOINTS.values())


def test_vit_tiny_is_seeded_and_fast():
    model = vtabkit.create_model("vit_tiny")
    assert (model.name, model.resolution, model.value_range, model.jittable) == ("vit_tiny", 32, (-1.0, 1.0), True)
    assert model.module is not None and model.metadata["architecture"].startswith("ViT-tiny")
    assert model.fingerprint == vtabkit.create_model("vit_tiny", seed=0).fingerprint
    assert model.fingerprint != vtabkit.create_model("vit_tiny", seed=1).fingerprint

    run, batch = features.batch_function(model, 250)
    images = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)).astype(np.float32)
    run(images)  # compile
    start = time.perf_counter()
    feats = np.concatenate([run(images) for _ in range(-(-1000 // batch))])
    elapsed = time.perf_counter() - start
    assert feats.shape[1] == 64 and np.isfinite(feats).all() and feats.std(axis=0).mean() > 1e-3
    assert elapsed < 10, f"1000 images took {elapsed:.1f}s"  # ~0.5 s on a 2-core CPU


@pytest.mark.parametrize("name", ["resnet50x1", "mixer_b16", "vit_s16"])
def test_builtin_shapes_without_running_them(name):
    """Built-ins at their native size: parameters exist, the output is (N, D) (shape-only, fast)."""
    model = vtabkit.create_model(name, seed=3)
    out = jax.eval_shape(model.apply, model.params,
                         jax.ShapeDtypeStruct((2, model.resolution, model.resolution, 3), jnp.float32))
    assert out.shape == (2, {"resnet50x1": 2048, "mixer_b16": 768, "vit_s16": 384}[name])
    assert model.metadata["init"] == "random (seed 3)"
