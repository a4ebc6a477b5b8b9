"""Pretrained weights: used from the library caches, downloaded only when allowed (simulated:
the caches are temporary folders and the network is replaced by a local copy, or by a failure)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from support import run_cli

from psearch.core.errors import PsearchError
from psearch.core.weights import allow_downloads, downloads_allowed, timm_cached_file

TIMM_NAME, TIMM_REPO = "test_resnet", "timm/test_resnet.r160_in1k"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_downloads_are_off_unless_allowed():
    assert not downloads_allowed()
    with allow_downloads():
        assert downloads_allowed()
        with allow_downloads(False):
            assert not downloads_allowed()
    assert not downloads_allowed()


# -- torchvision (detector) ---------------------------------------------------------------------

def _serve_mobilenet(monkeypatch, calls: list[str]) -> None:
    """torch.hub's download replaced by writing a MobileNetV3 state dict (the 'server')."""
    from torchvision.models import mobilenet_v3_large

    def download(url, dst, *args, **kwargs):
        calls.append(url)
        torch.save(mobilenet_v3_large().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)


def test_torchvision_weights_need_the_cache_or_download(caches, monkeypatch):
    from psearch.detector.model import build_detector

    cfg = {"backbone": "mobilenet_v3_large_fpn", "weights": "imagenet", "min_size": 64,
           "max_size": 128}
    with pytest.raises(PsearchError, match=r"mobilenet_v3_large-\w+\.pth: .*--download") as err:
        build_detector(cfg)
    assert str(caches / "torch" / "hub" / "checkpoints") in str(err.value)
    calls: list[str] = []
    _serve_mobilenet(monkeypatch, calls)
    with allow_downloads():
        build_detector(cfg)
    assert len(calls) == 1 and calls[0].startswith("https://download.pytorch.org/")
    build_detector(cfg)  # now cached: no flag needed, no second download
    assert len(calls) == 1


def test_offline_download_is_one_error_naming_the_file(caches, monkeypatch):
    from psearch.cli.weights import fetch

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PsearchError, match=r"fasterrcnn_resnet50_fpn_coco-\w+\.pth: cannot "
                                           r"download .* from https://\S+ \(URLError"):
        fetch("detector-coco-resnet50_fpn")


# -- timm (re-ID) -------------------------------------------------------------------------------

def _fill_hf_cache(root: Path, value: float = 0.25) -> Path:
    """The Hugging Face cache layout of timm's test_resnet weights, every tensor = value."""
    import timm
    from safetensors.torch import save_file

    state = {k: torch.full_like(v, value) if v.is_floating_point() else v
             for k, v in timm.create_model(TIMM_NAME).state_dict().items()}
    repo = root / f"models--{TIMM_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0123abcd")
    path = repo / "snapshots" / "0123abcd" / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def test_timm_weights_come_from_the_hf_cache(caches):
    from psearch.reid.model import create_backbone

    cfg = {"backbone": TIMM_NAME, "pretrained": True}
    with pytest.raises(PsearchError, match=r"models--timm--test_resnet.*--download"):
        create_backbone(cfg)
    path = _fill_hf_cache(caches / "hf")
    assert timm_cached_file(TIMM_NAME) == path
    backbone = create_backbone(cfg)
    assert torch.all(backbone.conv1[0].weight == 0.25)  # the cached tensors were loaded


def test_timm_download_goes_through_the_hub_and_cli_reports_offline(caches, monkeypatch, capsys):
    import timm.models._hub as hub

    from psearch.reid.model import create_backbone

    calls = []

    def hub_download(repo_id, filename, revision=None, cache_dir=None, **kwargs):
        calls.append((repo_id, filename))
        return str(_fill_hf_cache(Path(cache_dir), 0.5))

    monkeypatch.setattr(hub, "hf_hub_download", hub_download)
    with allow_downloads():
        backbone = create_backbone({"backbone": TIMM_NAME, "pretrained": True})
    assert calls[0] == (TIMM_REPO, "model.safetensors")
    assert torch.all(backbone.conv1[0].weight == 0.5)

    code, out, _ = run_cli(["weights", "list"], capsys)
    assert code == 0 and "missing" in out

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code, out, err = run_cli(["weights", "fetch", "detector-imagenet-resnet18_fpn"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: ") and "resnet18-" in err and "OSError: offline" in err
