"""BiT: pre-activation ResNet (v2) with GroupNorm and weight-standardised convolutions, in Flax.

Parameter names follow big_vision's ``models/bit_paper.py`` (the BiT paper model):

    root_block/conv_root/kernel (7, 7, 3, 64w)
    block{s}/unit{u:02d}/gn1, conv1, gn2, conv2, gn3, conv3[, conv_proj]   s = 1..4, u = 01..
        gn*: {scale, bias} of shape (1, 1, 1, C); conv*: {kernel} (no bias)
    norm-pre-head/{scale, bias} (1, 1, 1, C)
    head/{kernel, bias}                                                   only with num_classes

The original BiT release (``gs://bit_models/BiT-*.npz``, keys ``resnet/...``) is converted by
`vtabkit.models.checkpoints`. Numerics follow the original BiT code (big_transfer/bit_jax): weight
standardisation with eps 1e-10, GroupNorm(32) with eps 1e-5, 7x7/2 root conv with padding 3, and the
3x3/2 max-pool on an input padded with *zeros* (big_transfer, its PyTorch port and timm do this;
big_vision's re-implementation pads with -inf, which differs only at borders).

``__call__(images, train=False)`` returns ``(logits_or_None, out)``; ``out["pre_logits"]`` is the
global average of the final (GroupNorm, ReLU) feature map.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

BLOCKS: dict[int, list[int]] = {26: [2, 2, 2, 2], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def standardize(x, axis, eps: float):
    """Zero mean, unit variance along ``axis`` (variance as mean of squares, like BiT)."""
    x = x - jnp.mean(x, axis=axis, keepdims=True)
    return x / jnp.sqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


class GroupNorm(nn.Module):
    """GroupNorm as BiT computes it; params shaped (1, 1, 1, C) as in the BiT checkpoints."""
    groups: int = 32

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        x = standardize(x.reshape(n, h, w, self.groups, c // self.groups), axis=(1, 2, 4), eps=1e-5)
        x = x.reshape(n, h, w, c)
        return (x * self.param("scale", nn.initializers.ones, (1, 1, 1, c))
                + self.param("bias", nn.initializers.zeros, (1, 1, 1, c)))


class StdConv(nn.Module):
    """Bias-free conv whose kernel is standardised per output channel before use."""
    features: int
    kernel_size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.he_normal(), (k, k, x.shape[-1], self.features))
        kernel = standardize(kernel, axis=(0, 1, 2), eps=1e-10)
        pad = (k - 1) // 2  # symmetric "fixed" padding of the original BiT code: 3 for 7x7, 1 for 3x3
        return jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), [(pad, pad), (pad, pad)],
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


class RootBlock(nn.Module):
    """7x7/2 standardised conv, then 3x3/2 max-pool over a zero-padded input."""
    width: int

    @nn.compact
    def __call__(self, x):
        x = StdConv(self.width, 7, 2, name="conv_root")(x)
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class ResidualUnit(nn.Module):
    """Pre-activation bottleneck; the stride sits on the 3x3 conv; projection on the activation."""
    nmid: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        nout = 4 * self.nmid
        residual = x
        x = nn.relu(GroupNorm(name="gn1")(x))
        if x.shape[-1] != nout or self.stride != 1:
            residual = StdConv(nout, 1, self.stride, name="conv_proj")(x)
        x = StdConv(self.nmid, 1, name="conv1")(x)
        x = nn.relu(GroupNorm(name="gn2")(x))
        x = StdConv(self.nmid, 3, self.stride, name="conv2")(x)
        x = nn.relu(GroupNorm(name="gn3")(x))
        x = StdConv(nout, 1, name="conv3")(x)
        return x + residual


class ResNetStage(nn.Module):
    """``units`` residual units at one resolution; the first one may downsample."""
    units: int
    nmid: int
    first_stride: int = 1

    @nn.compact
    def __call__(self, x):
        for u in range(self.units):
            x = ResidualUnit(self.nmid, self.first_stride if u == 0 else 1, name=f"unit{u + 1:02d}")(x)
        return x


class ResNetV2(nn.Module):
    """BiT ResNet-v2; ``depth`` 26/50/101/152 or a list of units per stage; ``width`` multiplier."""
    num_classes: int | None = None
    depth: int | Sequence[int] = 50
    width: int = 1

    @nn.compact
    def __call__(self, images, train: bool = False) -> tuple[Any, dict[str, Any]]:
        del train  # no dropout or batch statistics
        blocks = BLOCKS[self.depth] if isinstance(self.depth, int) else list(self.depth)
        width = 64 * self.width
        out = {}
        x = RootBlock(width, name="root_block")(jnp.asarray(images, jnp.float32))
        for s, units in enumerate(blocks):
            x = out[f"stage{s + 1}"] = ResNetStage(units, width * 2 ** s, 1 if s == 0 else 2,
                                                   name=f"block{s + 1}")(x)
        x = nn.relu(GroupNorm(name="norm-pre-head")(x))
        x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))
        logits = None
        if self.num_classes:
            logits = out["logits"] = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                                              name="head")(x)
        return logits, out


def resnet_v2(depth: int = 50, width: int = 1, **kwargs: Any) -> ResNetV2:
    """BiT-R{depth}x{width}, e.g. ``resnet_v2(50, 1)`` for BiT R50x1."""
    return ResNetV2(depth=depth, width=width, **kwargs)
