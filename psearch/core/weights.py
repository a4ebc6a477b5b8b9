"""Published pretrained weights, used from the local caches and downloaded only on request.

psearch never downloads by itself. A command given ``--download`` (``train-detector``,
``train-reid``) or ``psearch weights fetch`` lets the libraries fetch their published files
through their own mechanisms, into their own caches:

- torchvision (ImageNet backbones, COCO Faster R-CNN): ``WeightsEnum.get_state_dict`` into the
  torch hub cache, ``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch``);
- timm (re-ID backbones): the Hugging Face hub cache, ``$HF_HUB_CACHE`` (default
  ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``), or torch hub for timm's URL-only weights.

Without the opt-in a missing file is one ``PsearchError`` naming it; with it, a failed download
(offline) is one error naming the file and the address it was fetched from.

>>> with allow_downloads():                   # what --download does around model building
...     model = build_detector({"weights": "coco", "backbone": "resnet50_fpn"})
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from psearch.core.errors import PsearchError

_DOWNLOADS = contextvars.ContextVar("psearch_downloads", default=False)
HF_FILES = ("model.safetensors", "pytorch_model.bin")
"""Files timm looks for in a Hugging Face repository, in its order of preference."""
TIMM_BACKBONES = ("resnet18", "resnet50")
"""timm backbones of the shipped re-ID presets (``psearch weights list``)."""


@contextlib.contextmanager
def allow_downloads(enabled: bool = True) -> Iterator[None]:
    """Within this block, missing pretrained weights are downloaded (``--download``)."""
    token = _DOWNLOADS.set(enabled)
    try:
        yield
    finally:
        _DOWNLOADS.reset(token)


def downloads_allowed() -> bool:
    return _DOWNLOADS.get()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- torchvision --------------------------------------------------------------------------------

def torchvision_file(weights: Any) -> Path:
    """Where torchvision's hub cache keeps the file of a weights enum entry."""
    import torch

    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def torchvision_weights(weights: Any, what: str) -> Path:
    """The cached file of a torchvision weights entry; downloaded first when allowed."""
    path = torchvision_file(weights)
    if path.is_file():
        return path
    if not downloads_allowed():
        raise PsearchError(f"{path}: {what} weights not in the torch hub cache; pass --download "
                           "to fetch them (online), copy the file there, or train from scratch "
                           "with model.weights=null")
    try:
        weights.get_state_dict(progress=True)  # torchvision's download into the hub cache
    except Exception as exc:  # URLError, HTTPError, hash or disk errors
        raise PsearchError(f"{path}: cannot download {what} weights from {weights.url} "
                           f"({_reason(exc)}); is this machine online?") from None
    if not path.is_file():
        raise PsearchError(f"{path}: {what} weights were not written to the torch hub cache")
    return path


# -- timm -----------------------------------------------------------------------------------

def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at each call."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _timm_cfg(name: str) -> Any:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise PsearchError(f"{name}: timm publishes no pretrained weights for this model")
    return cfg


def timm_expected_file(name: str) -> Path:
    """Where timm's weights of ``name`` would be cached (for messages and listings)."""
    cfg = _timm_cfg(name)
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.split("@")[0]
        filename = cfg.hf_hub_filename or HF_FILES[0]
        return hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / filename
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)


def timm_cached_file(name: str) -> Path | None:
    """The locally cached pretrained weights file of timm model ``name``, or None."""
    cfg = _timm_cfg(name)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else HF_FILES):
            hit = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(),
                                         revision=revision or None)
            if isinstance(hit, str):
                return Path(hit)
        return None
    path = timm_expected_file(name)
    return path if path.is_file() else None


def timm_weights(name: str) -> Path:
    """The cached file of timm's pretrained ``name``; downloaded first when allowed."""
    path = timm_cached_file(name)
    if path is not None:
        return path
    expected = timm_expected_file(name)
    if not downloads_allowed():
        raise PsearchError(f"{expected}: timm's pretrained {name} weights are not cached; pass "
                           "--download to fetch them (online), or a local file with --set "
                           "model.pretrained_file=PATH")
    cfg = _timm_cfg(name)
    try:
        if cfg.hf_hub_id:
            from timm.models import load_state_dict_from_hf

            extra = {"filename": cfg.hf_hub_filename} if cfg.hf_hub_filename else {}
            # timm's own fetch (safetensors first) into the Hugging Face cache
            load_state_dict_from_hf(cfg.hf_hub_id, cache_dir=hf_cache_dir(), **extra)
        else:
            import torch

            torch.hub.load_state_dict_from_url(cfg.url, map_location="cpu")
    except Exception as exc:
        source = cfg.hf_hub_id and f"huggingface.co/{cfg.hf_hub_id}" or cfg.url
        raise PsearchError(f"{expected}: cannot download timm's {name} weights from {source} "
                           f"({_reason(exc)}); is this machine online?") from None
    path = timm_cached_file(name)
    if path is None:
        raise PsearchError(f"{expected}: timm's {name} weights were not written to the cache")
    return path
