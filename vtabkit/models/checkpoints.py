"""Load big_vision-style ``.npz`` checkpoints into the Flax parameter trees of vit / mixer / resnet_v2.

A big_vision ``.npz`` is a flat mapping ``"a/b/c" -> array`` of the parameter tree. `load` reads one
(from a local path, or a URL fetched once into ``cache_dir()/checkpoints``), converts the older
public formats to the current names, checks it against the model's own (randomly initialised)
tree and returns a tree of the same structure. Every disagreement is a `UserError` naming the key.

Older formats converted here (facts from big_vision's vit.py / bit_paper.py and vit_jax):
- pre-linen module numbering (``LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
  MlpBlock_3`` in the ViT / AugReg releases) -> linen's per-class numbering (``..._0, ..._0, _1, _0``);
- ViT position embedding under ``Transformer/posembed_input/`` (or ``Transformer/``) -> top level,
  and an embedding that includes the cls token's entry (h*w + 1 rows) -> cls += that row;
- the original BiT release (``resnet/block1/unit01/a/standardized_conv2d/kernel`` ...) -> the
  ``root_block / block*/unit* / norm-pre-head`` tree of `vtabkit.models.resnet_v2`;
- a ViT saved with ``scan=True`` (blocks stacked under ``Transformer/encoderblock/``) -> one
  ``encoderblock_{i}`` per block;
- a ``params/`` or ``opt/target/`` prefix (big_vision / old Flax train states), and bfloat16
  arrays stored as raw 2-byte records.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vtabkit import paths
from vtabkit.errors import UserError

URL_SCHEMES = ("http://", "https://", "gs://")


# ----------------------------------------------------------------------------- flat <-> tree

def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}``."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save_npz(params: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a parameter tree as a big_vision ``.npz`` (flat ``/``-joined keys)."""
    with open(path, "wb") as stream:  # an open file: np.savez would otherwise append ".npz"
        np.savez(stream, **{key: np.asarray(value) for key, value in flatten(params).items()})


# ----------------------------------------------------------------------------- reading

def fetch(source: str) -> Path:
    """A local file for ``source``: a path as is, a URL downloaded once into the cache.

    ``gs://bucket/x`` is read over HTTPS from ``storage.googleapis.com`` (public buckets).
    """
    if not source.startswith(URL_SCHEMES):
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"checkpoint file {path} does not exist; pass a local .npz path or a URL")
        return path
    url = "https://storage.googleapis.com/" + source[len("gs://"):] if source.startswith("gs://") else source
    # The URL's hash keeps two files with the same basename apart.
    name = f"{hashlib.sha256(url.encode()).hexdigest()[:8]}-{url.rstrip('/').rsplit('/', 1)[-1]}"
    target = paths.cache_dir() / "checkpoints" / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
    paths.readable_mode(handle)
    print(f"vtabkit: downloading {url} to {target}", file=sys.stderr)  # can take minutes: say why
    try:
        with os.fdopen(handle, "wb") as stream, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 22):
                stream.write(chunk)
        os.replace(temporary, target)  # never leave a half-downloaded file under the final name
    except (urllib.error.URLError, OSError, ValueError) as error:
        Path(temporary).unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        raise UserError(f"could not fetch checkpoint {url} ({reason}); download it where there is "
                        "internet and pass the local file instead, e.g. checkpoint=/path/to/file.npz") from None
    return target


def _recover_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.dtype("V2"):  # bfloat16 saved by numpy as raw 2-byte records
        import ml_dtypes
        array = array.view(ml_dtypes.bfloat16)
    return array.astype(np.float32) if array.dtype != np.float32 else array


def _format_problem(path: Path) -> str:
    """What ``path`` is when it is recognisably not an ``.npz`` of plain arrays ("" otherwise).

    An ``.npz`` is a zip of ``.npy`` members. A PyTorch ``.pt`` is a zip too (of pickles), so
    the members are looked at, not only the first bytes.
    """
    with open(path, "rb") as stream:
        head = stream.read(16)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.namelist()
        except zipfile.BadZipFile:
            return "is a damaged zip file"
        if any(member.endswith("data.pkl") for member in members):
            return "looks like a PyTorch checkpoint (torch.save)"
        others = [member for member in members if not member.endswith(".npy")]
        return f"is a zip with non-array members ({_show(others, 3)})" if others else ""
    if head.startswith(b"\x93NUMPY"):
        return "is a single .npy array (np.save)"
    if head[:1] == b"\x80":
        return "looks like a pickle (e.g. a legacy torch.save file)"
    if head.startswith(b"\x89HDF"):
        return "looks like an HDF5 file (e.g. Keras .h5)"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "looks like a safetensors file"
    return "is not a zip archive (an .npz is one)"


def read_npz(source: str) -> dict[str, np.ndarray]:
    """The flat float32 arrays of a checkpoint; ``file.npz:img`` selects the sub-tree ``img/``."""
    subtree = ""
    if match := re.fullmatch(r"(.*\.npz):([\w/]+)", source):
        source, subtree = match.group(1), match.group(2).strip("/") + "/"
    path = fetch(source)
    if problem := _format_problem(path):
        raise UserError(f"checkpoint {path} is not a readable .npz: it {problem}; expected a big_vision "
                        ".npz (np.savez of the parameter tree, '/'-joined names), e.g. the model's .npz release")
    try:
        with np.load(path, allow_pickle=False) as stored:
            flat = {key: _recover_dtype(stored[key]) for key in stored.files}
    except (OSError, ValueError) as error:
        raise UserError(f"checkpoint {path} is not a readable .npz file ({error})") from None
    for prefix in ("params/", "opt/target/"):  # train-state checkpoints keep params under these
        if flat and all(key.startswith(prefix) for key in flat):
            flat = {key[len(prefix):]: value for key, value in flat.items()}
    if subtree:  # e.g. the image tower "img" of a two-tower (SigLIP) checkpoint
        flat = {key[len(subtree):]: value for key, value in flat.items() if key.startswith(subtree)}
        if not flat:
            raise UserError(f"checkpoint {path} has no sub-tree {subtree[:-1]!r}")
    return flat


# ----------------------------------------------------------------------------- format conversion

def _renumber_pre_linen(tree: dict[str, Any]) -> dict[str, Any]:
    """Pre-linen Flax numbered submodules globally (``LayerNorm_0, Dense_1``); linen per class.

    Renumber ``Name_<i>`` siblings per ``Name`` in natural order. Linen trees are unchanged.
    """
    def natural(key: str):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]

    renamed, counts = {}, {}
    for key in sorted(tree, key=natural):
        value = tree[key]
        if match := re.fullmatch(r"(.*)_(\d+)", key):
            base = match.group(1)
            key = f"{base}_{counts.get(base, 0)}"
            counts[base] = counts.get(base, 0) + 1
        renamed[key] = _renumber_pre_linen(value) if isinstance(value, dict) else value
    return renamed


def _convert_vit_posemb(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for old in ("Transformer/posembed_input/pos_embedding", "Transformer/pos_embedding"):
        if old in flat:
            flat["pos_embedding"] = flat.pop(old)
    posemb = flat.get("pos_embedding")
    if posemb is not None and posemb.ndim == 3:
        tokens = posemb.shape[1]
        grid = int(round(np.sqrt(tokens - 1)))
        if tokens > 1 and grid * grid + 1 == tokens:
            # Old ViT code concatenated [cls] first and then added the embedding; adding that row to
            # the cls token and dropping it is the same computation with today's layout.
            flat["pos_embedding"] = posemb[:, 1:]
            if "cls" in flat:
                flat["cls"] = flat["cls"] + posemb[:, :1]
    return flat


def _convert_big_transfer(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The original BiT release (TF names under ``resnet/``) -> `resnet_v2` names."""
    def gn(array):
        return array.reshape(1, 1, 1, -1)

    out = {}
    for key, value in flat.items():
        key = re.sub(r"/standardized_conv2d_\d+/", "/standardized_conv2d/", key)  # odd names in some files
        if key == "resnet/root_block/standardized_conv2d/kernel":
            out["root_block/conv_root/kernel"] = value
        elif key in ("resnet/group_norm/gamma", "resnet/group_norm/beta"):
            out["norm-pre-head/" + ("scale" if key.endswith("gamma") else "bias")] = gn(value)
        elif key == "resnet/head/conv2d/kernel":
            out["head/kernel"] = value.reshape(value.shape[-2:])  # a 1x1 conv in TF, a Dense here
        elif key == "resnet/head/conv2d/bias":
            out["head/bias"] = value
        elif match := re.fullmatch(r"resnet/(block\d+/unit\d+)/a/proj/standardized_conv2d/kernel", key):
            out[f"{match.group(1)}/conv_proj/kernel"] = value
        elif match := re.fullmatch(r"resnet/(block\d+/unit\d+)/([abc])/standardized_conv2d/kernel", key):
            out[f"{match.group(1)}/conv{'abc'.index(match.group(2)) + 1}/kernel"] = value
        elif match := re.fullmatch(r"resnet/(block\d+/unit\d+)/([abc])/group_norm/(gamma|beta)", key):
            leaf = "scale" if match.group(3) == "gamma" else "bias"
            out[f"{match.group(1)}/gn{'abc'.index(match.group(2)) + 1}/{leaf}"] = gn(value)
        else:
            out[key] = value  # reported as unexpected by `load`
    return out


def convert(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Any supported public format -> the names of this package's Flax modules."""
    if any(key.startswith("resnet/") for key in flat):
        return _convert_big_transfer(flat)
    for key in [key for key in flat if key.startswith("Transformer/encoderblock/")]:
        # A ViT trained with nn.scan stacks its blocks along a leading axis; unstack into blocks.
        stacked = flat.pop(key)
        for i, block in enumerate(stacked):
            flat[key.replace("encoderblock/", f"encoderblock_{i}/", 1)] = block
    flat = flatten(_renumber_pre_linen(unflatten(flat)))
    return _convert_vit_posemb(flat)


# ----------------------------------------------------------------------------- resolution change

def resize_posemb(posemb: np.ndarray, tokens: int) -> np.ndarray:
    """Bilinearly resample a ViT position-embedding grid (1, h*w, D) to ``tokens`` = h'*w' rows.

    Uses ``scipy.ndimage.zoom(order=1)`` as big_vision and vit_jax do, so features match theirs.
    The cls token has its own parameter here and is kept unchanged.
    """
    import scipy.ndimage

    old, new = int(round(np.sqrt(posemb.shape[1]))), int(round(np.sqrt(tokens)))
    if old * old != posemb.shape[1] or new * new != tokens:
        raise UserError(f"cannot resize position embedding of {posemb.shape[1]} tokens to {tokens}: "
                        "only square patch grids are supported")
    grid = posemb.reshape(old, old, -1)
    grid = scipy.ndimage.zoom(grid, (new / old, new / old, 1), order=1)
    return grid.reshape(1, new * new, -1).astype(posemb.dtype)


# ----------------------------------------------------------------------------- loading

def _show(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def load(source: str, template: Mapping[str, Any], *, drop: tuple[str, ...] = ("head",)) -> dict[str, Any]:
    """Checkpoint ``source`` as a tree shaped like ``template`` (the model's params, or only their
    shapes: ``jax.eval_shape(module.init, ...)`` is enough and skips the random initialisation).

    Top-level entries in ``drop`` (the classifier head, by default) are discarded when the model
    has none. A position embedding of another grid size is resized (see `resize_posemb`).
    Raises `UserError` naming missing, unexpected or misshaped keys.
    """
    flat = convert(read_npz(source))
    expected = flatten(template)
    flat = {key: value for key, value in flat.items()
            if key in expected or key.split("/", 1)[0] not in drop}

    missing = [key for key in expected if key not in flat]
    unexpected = [key for key in flat if key not in expected]
    if missing:
        raise UserError(f"checkpoint {source} is missing {len(missing)} parameter(s) the model needs: "
                        f"{_show(missing)}; is it the right architecture / size?")
    if unexpected:
        raise UserError(f"checkpoint {source} has {len(unexpected)} parameter(s) the model does not: "
                        f"{_show(unexpected)}; is it the right architecture / size?")

    params = {}
    for key, want in expected.items():
        got = flat[key]
        if key == "pos_embedding" and got.shape != want.shape and got.ndim == 3 and got.shape[2] == want.shape[2]:
            got = resize_posemb(got, want.shape[1])  # the model runs at another resolution
        elif got.shape != want.shape and np.squeeze(got).shape == np.squeeze(want).shape:
            got = got.reshape(want.shape)  # e.g. GroupNorm params stored as (C,) instead of (1, 1, 1, C)
        if got.shape != want.shape:
            raise UserError(f"checkpoint {source}: parameter {key} has shape {tuple(got.shape)}, "
                            f"the model expects {tuple(want.shape)}; is it the right architecture / size?")
        params[key] = got.astype(want.dtype)
    return unflatten(params)
