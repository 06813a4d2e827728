"""PyTorch backbones as vtabkit models: ``timm:<name>``, ``hf:<repo>``, ``open_clip:<arch>/<tag>``.

Optional (``pip install "vtabkit[torch]"``); torch and friends are imported only when such a model
is built. A torch model is a `Model` with ``jittable=False``: it receives normalised NHWC numpy
batches, runs under ``torch.inference_mode()`` on its own device (CUDA when available) and returns
numpy features. Its preprocessing comes from the model's own config (timm's pretrained config,
the Hugging Face image processor, open_clip's ``preprocess_cfg``); vtabkit resizes to the declared
resolution directly (no resize-then-crop), which is recorded in the metadata.

Fine-tuning needs a differentiable Flax model; `vtabkit.models.model.require_flax` says so clearly
for torch models.

As a model source (see `vtabkit.models.registry`) this module declares `claims`, `check` and
`resolve`. A torch model's weights live in the module, not in ``params``: its ``identity`` is a hash
of the ``state_dict``, so the fingerprint changes whenever any weight does.
"""

from __future__ import annotations

import hashlib
import importlib
from functools import partial
from typing import Any, Callable

import numpy as np

from vtabkit.errors import UserError
from vtabkit.models.model import Model, fingerprint

PREFIXES = ("timm:", "hf:", "open_clip:")
INSTALL_HINT = 'pip install "vtabkit[torch]"'


def is_torch_spec(name: str) -> bool:
    """Whether ``name`` is routed to `create_torch_model`."""
    return name.startswith(PREFIXES)


claims = is_torch_spec  # the model-source interface


def check(name: str) -> None:
    """Nothing to check before building: the name is looked up (or downloaded) only then."""


def resolve(name: str) -> tuple[Callable[..., Model], dict[str, Any]]:
    """The factory for ``name`` (its one argument: ``pretrained``); no extra facts to record."""
    return partial(create_torch_model, name), {}


def _require(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError(f"{package} is needed for this model but could not be imported ({error}); "
                        f"install it: {INSTALL_HINT}") from None
    except RuntimeError as error:  # e.g. a torchvision build whose compiled ops do not match torch
        raise UserError(f"{package} could not be imported ({error}); install a torchvision/torch "
                        "pair built for each other") from None


def _weights_hash(net: Any) -> str:
    """Hash of every tensor in the state dict (name, shape, dtype, bytes) for the fingerprint."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def torch_model(net: Any, forward: Callable[[Any], Any], *, name: str, resolution: int,
                mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                metadata: dict[str, Any] | None = None, device: str | None = None,
                classifier: Callable[[Any], Any] | None = None, num_classes: int | None = None) -> Model:
    """Wrap torch module ``net`` and ``forward(nchw_tensor) -> (N, D) tensor`` as a `Model`;
    ``classifier(nchw_tensor) -> (N, num_classes)`` is the model's own head, when it has one.

    Images arrive NHWC in [0, 1] (then normalised with ``mean``/``std`` by vtabkit).
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net = net.eval().to(device)

    def through(function):
        def run(params, images):
            del params  # the weights live in ``net``
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
            with torch.inference_mode():
                out = function(x.to(device))
            return out.float().cpu().numpy()
        return run
    apply = through(forward)

    model = Model(apply=apply, resolution=int(resolution), value_range=(0.0, 1.0),
                  mean=None if mean is None else tuple(float(v) for v in mean),
                  std=None if std is None else tuple(float(v) for v in std),
                  jittable=False, name=name, identity=f"torch-state-dict:{_weights_hash(net)}",
                  metadata={"framework": "torch", "device": str(device), **(metadata or {})},
                  logits=None if classifier is None else through(classifier),
                  num_classes=num_classes if classifier is not None else None)
    model.fingerprint = fingerprint(model)  # create_model recomputes it, with the factory's arguments
    return model


def timm_model(net: Any, name: str, **kwargs: Any) -> Model:
    """A timm model object as a `Model`: pre-logits features, timm's own data config."""
    timm_data = _require("timm.data", "timm")
    config = timm_data.resolve_model_data_config(net)
    _, height, width = config["input_size"]
    if height != width:
        raise UserError(f"{name} wants {height}x{width} inputs; vtabkit feeds square images only")

    def forward(x):
        return net.forward_head(net.forward_features(x), pre_logits=True)
    metadata = {"architecture": type(net).__name__, "source": name,
                "timm_crop_pct": config.get("crop_pct"), "timm_interpolation": config.get("interpolation")}
    # A timm classifier (num_classes > 0) keeps its head: `--protocol model_head` scores it.
    classes = int(getattr(net, "num_classes", 0) or 0)
    return torch_model(net, forward, name=name, resolution=height, mean=config["mean"], std=config["std"],
                       metadata=metadata, classifier=net if classes else None, num_classes=classes or None,
                       **kwargs)


def _create_timm(name: str, spec: str, pretrained: bool) -> Model:
    timm = _require("timm", "timm")
    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}; see timm.list_models()")
    try:
        net = timm.create_model(name, pretrained=pretrained)
    except Exception as error:  # a download (Hugging Face Hub) or weight-loading failure
        raise UserError(f"could not load pretrained weights for {spec} ({type(error).__name__}: {error}); "
                        "they come from the Hugging Face Hub: check the connection or the HF cache") from None
    return timm_model(net, spec)


def _hf_resolution(processor: Any) -> int:
    size = (processor.crop_size if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None)
            else processor.size)
    if isinstance(size, int):
        return size
    size = dict(size)
    return int(size.get("height") or size.get("shortest_edge") or size.get("width"))


def _create_hf(repo: str, spec: str) -> Model:
    transformers = _require("transformers", "transformers")
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(repo)
        net = transformers.AutoModel.from_pretrained(repo)
    except Exception as error:
        raise UserError(f"could not load {spec} ({type(error).__name__}: {error}); it comes from the "
                        "Hugging Face Hub (or a local folder saved with save_pretrained)") from None

    def forward(x):
        if hasattr(net, "get_image_features"):  # CLIP-style two-tower models: the image embedding
            out = net.get_image_features(pixel_values=x)
            return out if hasattr(out, "ndim") else out.pooler_output
        out = net(pixel_values=x)
        if getattr(out, "pooler_output", None) is not None:
            return out.pooler_output.reshape(len(x), -1)
        hidden = out.last_hidden_state  # no pooler: average the tokens (or the spatial map)
        return hidden.mean(dim=1) if hidden.ndim == 3 else hidden.mean(dim=(2, 3))
    rescale = float(getattr(processor, "rescale_factor", 1 / 255))
    if abs(rescale * 255 - 1) > 1e-6:
        raise UserError(f"{spec}: image processor rescales by {rescale}, vtabkit supports 1/255 only")
    normalize = getattr(processor, "do_normalize", True)
    return torch_model(net, forward, name=spec, resolution=_hf_resolution(processor),
                       mean=processor.image_mean if normalize else None,
                       std=processor.image_std if normalize else None,
                       metadata={"architecture": type(net).__name__, "source": spec})


def _create_open_clip(arch: str, tag: str, spec: str) -> Model:
    open_clip = _require("open_clip", "open_clip_torch")
    try:
        net, _, _ = open_clip.create_model_and_transforms(arch, pretrained=tag or None)
    except Exception as error:
        raise UserError(f"could not create {spec} ({type(error).__name__}: {error}); "
                        "see open_clip.list_pretrained()") from None
    config = getattr(net.visual, "preprocess_cfg", None) or {
        "size": net.visual.image_size, "mean": net.visual.image_mean, "std": net.visual.image_std}
    size = config["size"]
    resolution = size if isinstance(size, int) else size[0]
    return torch_model(net, net.encode_image, name=spec, resolution=resolution, mean=config["mean"],
                       std=config["std"], metadata={"architecture": arch, "source": spec, "pretrained": tag})


def create_torch_model(spec: str, pretrained: bool = True) -> Model:
    """Build ``timm:<name>``, ``hf:<repo or local dir>`` or ``open_clip:<arch>/<tag>``.

    ``pretrained=False`` (timm only) builds randomly initialised weights, for tests.
    """
    kind, _, rest = spec.partition(":")
    _require("torch", "PyTorch")
    if not rest:
        raise UserError(f"model {spec!r} names no model after {kind}:")
    if kind == "timm":
        return _create_timm(rest, spec, pretrained)
    if kind == "hf":
        return _create_hf(rest, spec)
    if kind == "open_clip":
        arch, _, tag = rest.partition("/")
        return _create_open_clip(arch, tag, spec)
    raise UserError(f"unknown model prefix in {spec!r}; use one of {', '.join(PREFIXES)}")
