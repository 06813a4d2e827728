"""MLP-Mixer in Flax linen, with the parameter names of big_vision / vit_jax ``mlp_mixer``.

    stem/{kernel (p, p, 3, D), bias}
    MixerBlock_{i}/LayerNorm_0, token_mixing/Dense_{0,1}, LayerNorm_1, channel_mixing/Dense_{0,1}
    pre_head_layer_norm/{scale, bias}
    head/{kernel, bias}                       only with num_classes

The public Mixer checkpoints (``gs://mixer_models/...``) use exactly these names.
``__call__(images, train=False)`` returns ``(logits_or_None, out)``; ``out["pre_logits"]`` is the
mean over tokens after the final LayerNorm.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Hidden width, blocks, token-MLP and channel-MLP widths (Mixer paper, table 1).
VARIANTS: dict[str, dict[str, int]] = {
    "S": dict(hidden_dim=512, num_blocks=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "B": dict(hidden_dim=768, num_blocks=12, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "L": dict(hidden_dim=1024, num_blocks=24, tokens_mlp_dim=512, channels_mlp_dim=4096),
}


class MlpBlock(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.mlp_dim)(x))  # tanh-approximate GELU, as the checkpoints were trained
        return nn.Dense(x.shape[-1])(y)


class MixerBlock(nn.Module):
    """Token mixing (MLP across patches), then channel mixing (MLP across features)."""
    tokens_mlp_dim: int
    channels_mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = jnp.swapaxes(nn.LayerNorm()(x), 1, 2)
        x = x + jnp.swapaxes(MlpBlock(self.tokens_mlp_dim, name="token_mixing")(y), 1, 2)
        y = nn.LayerNorm()(x)
        return x + MlpBlock(self.channels_mlp_dim, name="channel_mixing")(y)


class MlpMixer(nn.Module):
    num_classes: int | None = None
    patch_size: tuple[int, int] = (16, 16)
    hidden_dim: int = 768
    num_blocks: int = 12
    tokens_mlp_dim: int = 384
    channels_mlp_dim: int = 3072

    @nn.compact
    def __call__(self, images, train: bool = False) -> tuple[Any, dict[str, Any]]:
        del train  # no dropout / stochastic depth here
        x = nn.Conv(self.hidden_dim, self.patch_size, strides=self.patch_size, padding="VALID",
                    name="stem")(jnp.asarray(images, jnp.float32))
        n, h, w, c = x.shape
        x = jnp.reshape(x, (n, h * w, c))
        for _ in range(self.num_blocks):
            x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim)(x)
        x = nn.LayerNorm(name="pre_head_layer_norm")(x)
        out = {"pre_logits": jnp.mean(x, axis=1)}
        logits = None
        if self.num_classes:
            logits = out["logits"] = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                                              name="head")(out["pre_logits"])
        return logits, out


def mixer(variant: str = "B/16", **kwargs: Any) -> MlpMixer:
    """A Mixer by size name, e.g. ``mixer("B/16")``; keyword arguments override the variant."""
    size, _, patch = variant.partition("/")
    if size not in VARIANTS:
        raise ValueError(f"unknown Mixer size {size!r}; one of {sorted(VARIANTS)}")
    config = dict(VARIANTS[size], **({"patch_size": (int(patch), int(patch))} if patch else {}))
    return MlpMixer(**{**config, **kwargs})
