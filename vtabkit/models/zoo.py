"""The Flax model zoo: random-init built-ins and well-known public checkpoints, all registered.

Built-ins (random init, seeded; ``checkpoint=`` loads weights of the same architecture instead):
``vit_tiny`` (32 px, for tests), ``vit_ti16``, ``vit_s16``, ``vit_b16``, ``resnet50x1``, ``mixer_b16``.

Public checkpoints (fetched once into ``cache_dir()/checkpoints``; ``checkpoint=/path/x.npz`` reads a
local copy): see `CHECKPOINTS`. All use inputs in [-1, 1] — big_vision's ``value_range(-1, 1)``,
vit_jax's ``(x - 127.5) / 127.5`` and BiT's ``Normalize(0.5, 0.5)`` are the same map.

Every model's ``apply`` returns ``out["pre_logits"]`` of its Flax module (no classifier head), and
``module`` is set so fine-tuning can call ``module.apply({"params": params}, images, train=True)``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from vtabkit.models import checkpoints
from vtabkit.errors import UserError
from vtabkit.models.model import Model
from vtabkit.models.registry import register_model

VALUE_RANGE = (-1.0, 1.0)


# Module builders import Flax only when a model is built: listing models should not pay for it.
def vit(variant: str | None = None, **kwargs: Any) -> Any:
    from vtabkit.models.vit import ViT, vit as build
    return build(variant, **kwargs) if variant else ViT(**kwargs)


def mixer(variant: str, **kwargs: Any) -> Any:
    from vtabkit.models.mixer import mixer as build
    return build(variant, **kwargs)


def resnet_v2(depth: int, width: int, **kwargs: Any) -> Any:
    from vtabkit.models.resnet_v2 import resnet_v2 as build
    return build(depth, width, **kwargs)


def flax_model(module: Any, params: Any, *, name: str, resolution: int,
               value_range: tuple[float, float] = VALUE_RANGE, metadata: dict[str, Any] | None = None) -> Model:
    """Wrap a module whose ``__call__`` returns ``(logits, {"pre_logits": ...})`` as a `Model`.

    A module built with ``num_classes`` keeps its classifier: ``Model.logits`` (what
    ``--protocol model_head`` scores).
    """
    def apply(params, images):
        return module.apply({"params": params}, images)[1]["pre_logits"]

    classes = getattr(module, "num_classes", None)

    def logits(params, images):
        return module.apply({"params": params}, images)[0]
    return Model(apply=apply, params=params, resolution=resolution, value_range=value_range,
                 module=module, name=name, metadata=dict(metadata or {}),
                 logits=logits if classes else None, num_classes=classes or None)


def random_params(shapes: Any, seed: int) -> dict[str, Any]:
    """Seeded random weights for a tree of parameter shapes, drawn with numpy.

    LeCun-normal kernels (fan-in of a query/key/value kernel (D, heads, D/heads) is D), unit
    norm scales, zero biases and cls token, N(0, 1/D) position embeddings. Drawn with numpy
    because ``module.init`` spends seconds compiling its random-number code on a CPU.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for key, leaf in sorted(checkpoints.flatten(shapes).items()):
        parent, _, name = key.rpartition("/")
        shape = tuple(leaf.shape)
        if name == "kernel":
            fan_in = shape[0] if parent.rsplit("/", 1)[-1] in ("query", "key", "value") else int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif name == "pos_embedding":
            value = rng.standard_normal(shape) / np.sqrt(shape[-1])
        elif name == "scale":
            value = np.ones(shape)
        elif name in ("bias", "cls"):
            value = np.zeros(shape)
        else:
            raise ValueError(f"no random-init rule for parameter {key}")
        params[key] = value.astype(leaf.dtype)
    return checkpoints.unflatten(params)


def init_or_load(module: Any, resolution: int, *, seed: int = 0, checkpoint: str | None = None) -> Any:
    """Random params (seeded) for Flax ``module`` at ``resolution``, or those of ``checkpoint``."""
    import jax
    import jax.numpy as jnp

    dummy = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    # Both paths need only the parameter shapes; eval_shape computes nothing.
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), dummy)["params"]
    if checkpoint is None:
        return random_params(shapes, seed)
    return checkpoints.load(checkpoint, shapes)


# ----------------------------------------------------------------------------- random-init built-ins

# name -> (module builder, native resolution, architecture description)
BUILTINS: dict[str, tuple[Callable[[], Any], int, str]] = {
    "vit_tiny": (lambda: vit(patch_size=(8, 8), width=64, depth=2, mlp_dim=256, num_heads=2, pool_type="gap"),
                 32, "ViT-tiny/8 (width 64, depth 2, heads 2, gap)"),
    "vit_ti16": (lambda: vit("Ti/16"), 224, "ViT-Ti/16"),
    "vit_s16": (lambda: vit("S/16"), 224, "ViT-S/16"),
    "vit_b16": (lambda: vit("B/16"), 224, "ViT-B/16"),
    "resnet50x1": (lambda: resnet_v2(50, 1), 224, "BiT ResNet-v2 R50x1"),
    "mixer_b16": (lambda: mixer("B/16"), 224, "Mixer-B/16"),
}


def _builtin_factory(name: str) -> Callable[..., Model]:
    build, native, architecture = BUILTINS[name]

    def factory(seed: int = 0, checkpoint: str | None = None, resolution: int | None = None,
                num_classes: int | None = None) -> Model:
        module, resolution = build(), resolution or native
        if num_classes:  # keep a classifier head (random init, or the checkpoint's)
            module = module.clone(num_classes=int(num_classes))
        params = init_or_load(module, resolution, seed=seed, checkpoint=checkpoint)
        init = f"random (seed {seed})" if checkpoint is None else "checkpoint"
        return flax_model(module, params, name=name, resolution=resolution,
                          metadata={"architecture": architecture, "init": init, "checkpoint": checkpoint})
    factory.__doc__ = (f"{architecture} at {native} px, random init (seeded) or ``checkpoint=``; "
                       "``num_classes=`` keeps a classifier head.")
    return factory


for _name in BUILTINS:
    register_model(_name)(_builtin_factory(_name))


# ----------------------------------------------------------------------------- public checkpoints

def _gs(path: str) -> str:
    return "https://storage.googleapis.com/" + path


# name -> module builder, URL, native resolution, description. Upstream (pre-training) checkpoints,
# as VTAB evaluates them; the classifier heads they carry are dropped on load, except with
# ``head=true`` for the ImageNet-1k ones (``head=1000``), whose heads ``--protocol model_head`` scores.
CHECKPOINTS: dict[str, dict[str, Any]] = {
    # AugReg ViTs, ImageNet-21k, 300 epochs (Steiner et al. 2021, "How to train your ViT?"); the
    # recommended checkpoints of google-research/vision_transformer. Class token, no pre-logits layer.
    "augreg_vit_ti16": dict(build=lambda: vit("Ti/16"), resolution=224, architecture="ViT-Ti/16",
                            url=_gs("vit_models/augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz"),
                            description="ViT-Ti/16 AugReg, ImageNet-21k"),
    "augreg_vit_s16": dict(build=lambda: vit("S/16"), resolution=224, architecture="ViT-S/16",
                           url=_gs("vit_models/augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz"),
                           description="ViT-S/16 AugReg, ImageNet-21k"),
    "augreg_vit_b16": dict(build=lambda: vit("B/16"), resolution=224, architecture="ViT-B/16",
                           url=_gs("vit_models/augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz"),
                           description="ViT-B/16 AugReg, ImageNet-21k"),
    "augreg_vit_b32": dict(build=lambda: vit("B/32"), resolution=224, architecture="ViT-B/32",
                           url=_gs("vit_models/augreg/B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0.npz"),
                           description="ViT-B/32 AugReg, ImageNet-21k"),
    "augreg_vit_l16": dict(build=lambda: vit("L/16"), resolution=224, architecture="ViT-L/16",
                           url=_gs("vit_models/augreg/L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0.npz"),
                           description="ViT-L/16 AugReg, ImageNet-21k"),
    # big_vision's plain ViT-S/16 baseline on ImageNet-1k (Beyer et al. 2022), config vit_s16_i1k.
    "bv_vit_s16_i1k": dict(head=1000, build=lambda: vit("S/16", pool_type="gap", posemb="sincos2d", rep_size=True),
                           resolution=224, architecture="ViT-S/16 (gap, sincos2d, pre-logits)",
                           url=_gs("big_vision/vit_s16_i1k_300ep.npz"),
                           description="ViT-S/16 big_vision baseline, ImageNet-1k, 300 epochs"),
    # MLP-Mixer (Tolstikhin et al. 2021).
    "mixer_b16_i21k": dict(build=lambda: mixer("B/16"), resolution=224, architecture="Mixer-B/16",
                           url=_gs("mixer_models/imagenet21k/Mixer-B_16.npz"),
                           description="Mixer-B/16, ImageNet-21k"),
    "mixer_b16_i1k": dict(head=1000, build=lambda: mixer("B/16"), resolution=224, architecture="Mixer-B/16",
                          url=_gs("mixer_models/imagenet1k/Mixer-B_16.npz"),
                          description="Mixer-B/16, ImageNet-1k"),
    # BiT (Kolesnikov et al. 2020), original release of google-research/big_transfer.
    "bit_m_r50x1": dict(build=lambda: resnet_v2(50, 1), resolution=224, architecture="BiT ResNet-v2 R50x1",
                        url=_gs("bit_models/BiT-M-R50x1.npz"), description="BiT-M R50x1, ImageNet-21k"),
    "bit_s_r50x1": dict(head=1000, build=lambda: resnet_v2(50, 1), resolution=224, architecture="BiT ResNet-v2 R50x1",
                        url=_gs("bit_models/BiT-S-R50x1.npz"), description="BiT-S R50x1, ImageNet-1k"),
}


def _checkpoint_factory(name: str) -> Callable[..., Model]:
    entry = CHECKPOINTS[name]

    def factory(checkpoint: str | None = None, resolution: int | None = None, head: bool = False) -> Model:
        source = checkpoint or entry["url"]
        module, resolution = entry["build"](), resolution or entry["resolution"]
        if head:  # keep the checkpoint's ImageNet-1k classifier (`--protocol model_head`)
            if not entry.get("head"):
                raise UserError(f"{name} has no ImageNet-1k classifier head to keep (its head is for "
                                "another label space or absent); drop head=true and use --protocol linear")
            module = module.clone(num_classes=entry["head"])
        params = init_or_load(module, resolution, checkpoint=source)
        return flax_model(module, params, name=name, resolution=resolution,
                          metadata={"architecture": entry["architecture"], "init": "checkpoint",
                                    "checkpoint": source, "checkpoint_url": entry["url"],
                                    "description": entry["description"]})
    factory.__doc__ = (f"{entry['description']} ({entry['url']}); ``checkpoint=`` reads a local copy"
                       + ("; ``head=true`` keeps its ImageNet-1k classifier." if entry.get("head") else "."))
    return factory


for _name in CHECKPOINTS:
    register_model(_name)(_checkpoint_factory(_name))
