"""Vision Transformer (ViT) in Flax linen, with big_vision's parameter names.

The module and parameter names follow big_vision's ``models/vit.py`` so that its ``.npz``
checkpoints load without renaming:

    embedding/{kernel (p, p, 3, D), bias (D,)}       patch embedding (a strided conv)
    pos_embedding (1, h*w, D)                        learned; added *before* the cls token
    cls (1, 1, D)                                    only for pool_type="tok"
    Transformer/encoderblock_{i}/LayerNorm_0, MultiHeadDotProductAttention_0/{query,key,value,out},
        LayerNorm_1, MlpBlock_0/Dense_{0,1}
    Transformer/encoder_norm
    pre_logits/{kernel, bias}                        only with rep_size (then tanh)
    head/{kernel, bias}                              only with num_classes

Older checkpoints (the original ViT and AugReg releases) use pre-linen names and keep the position
embedding elsewhere; `vtabkit.models.checkpoints` converts them.

``__call__(images, train=False)`` returns ``(logits_or_None, out)`` where ``out["pre_logits"]``
is the representation (big_vision's convention).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# Width, depth, MLP width and heads of the standard sizes (ViT paper; AugReg paper table 2).
VARIANTS: dict[str, dict[str, int]] = {
    "mu": dict(width=32, depth=1, mlp_dim=128, num_heads=2),
    "Ti": dict(width=192, depth=12, mlp_dim=768, num_heads=3),
    "S": dict(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "M": dict(width=512, depth=12, mlp_dim=2048, num_heads=8),
    "B": dict(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": dict(width=1024, depth=24, mlp_dim=4096, num_heads=16),
    "H": dict(width=1280, depth=32, mlp_dim=5120, num_heads=16),
}


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> jnp.ndarray:
    """Fixed 2-D sin-cos position embedding (MoCo v3; big_vision's ``posemb="sincos2d"``)."""
    y, x = np.mgrid[:h, :w]
    omega = np.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / (temperature ** omega)
    y = np.einsum("m,d->md", y.flatten(), omega)
    x = np.einsum("m,d->md", x.flatten(), omega)
    pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    return jnp.asarray(pe, jnp.float32)[None]


class MlpBlock(nn.Module):
    """Transformer feed-forward block: Dense -> GELU (tanh approximation, as trained) -> Dense."""
    mlp_dim: int | None = None
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        inits = dict(kernel_init=nn.initializers.xavier_uniform(),
                     bias_init=nn.initializers.normal(stddev=1e-6))
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim or 4 * d, **inits)(x)
        x = nn.gelu(x)  # approximate=True: big_vision and the ViT/AugReg checkpoints use the tanh form
        x = nn.Dropout(rate=self.dropout)(x, deterministic)
        return nn.Dense(d, **inits)(x)


class Encoder1DBlock(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""
    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        y = nn.LayerNorm()(x)  # epsilon 1e-6 (flax default), as big_vision and timm's ViT
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                            kernel_init=nn.initializers.xavier_uniform(),
                                            deterministic=True)(y, y)
        x = x + nn.Dropout(rate=self.dropout)(y, deterministic)
        y = nn.LayerNorm()(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout=self.dropout)(y, deterministic)
        return x + nn.Dropout(rate=self.dropout)(y, deterministic)


class Encoder(nn.Module):
    """A stack of ``depth`` blocks followed by the final LayerNorm."""
    depth: int
    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        for i in range(self.depth):
            x = Encoder1DBlock(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout=self.dropout,
                               name=f"encoderblock_{i}")(x, deterministic)
        return nn.LayerNorm(name="encoder_norm")(x)


class ViT(nn.Module):
    """ViT. ``pool_type``: "tok" (cls token, the ViT/AugReg checkpoints) or "gap" (mean of tokens)."""
    num_classes: int | None = None
    patch_size: tuple[int, int] = (16, 16)
    width: int = 768
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 12
    posemb: str = "learn"  # or "sincos2d" (no parameter)
    pool_type: str = "tok"
    rep_size: int | bool = False  # a Dense+tanh "pre_logits" layer (original ViT i21k checkpoints)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, images, train: bool = False) -> tuple[Any, dict[str, Any]]:
        out = {}
        x = nn.Conv(self.width, self.patch_size, strides=self.patch_size, padding="VALID",
                    name="embedding")(jnp.asarray(images, jnp.float32))
        n, h, w, c = x.shape
        x = jnp.reshape(x, (n, h * w, c))
        if self.posemb == "learn":
            x = x + self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(c)),
                               (1, h * w, c), x.dtype)
        elif self.posemb == "sincos2d":
            x = x + posemb_sincos_2d(h, w, c)
        else:
            raise ValueError(f"unknown posemb {self.posemb!r}")
        if self.pool_type == "tok":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c), x.dtype)
            x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)
        x = nn.Dropout(rate=self.dropout)(x, not train)
        x = out["encoded"] = Encoder(depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                                     dropout=self.dropout, name="Transformer")(x, not train)
        if self.pool_type == "tok":
            x = x[:, 0]
        elif self.pool_type == "gap":
            x = jnp.mean(x, axis=1)
        else:
            raise ValueError(f"unknown pool_type {self.pool_type!r}")
        if self.rep_size:
            rep_size = self.width if self.rep_size is True else self.rep_size
            x = nn.tanh(nn.Dense(rep_size, name="pre_logits")(x))
        out["pre_logits"] = x
        logits = None
        if self.num_classes:
            logits = out["logits"] = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                                              name="head")(x)
        return logits, out


def vit(variant: str = "B/16", **kwargs: Any) -> ViT:
    """A ViT by size name, e.g. ``vit("S/16")``; keyword arguments override the variant's fields."""
    size, _, patch = variant.partition("/")
    if size not in VARIANTS:
        raise ValueError(f"unknown ViT size {size!r}; one of {sorted(VARIANTS)}")
    config = dict(VARIANTS[size], **({"patch_size": (int(patch), int(patch))} if patch else {}))
    return ViT(**{**config, **kwargs})
