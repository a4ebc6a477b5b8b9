"""The re-ID model API: ReidModel.from_checkpoint / embed_crops / embed_boxes, and its errors."""

import numpy as np
import pytest
import timm
import torch

from psearch.core.boxes import crop_boxes
from psearch.core.checkpoint import save_checkpoint
from psearch.core.errors import PsearchError
from psearch.reid import ReidModel
from psearch.reid.model import build_reid_net

TINY = {"backbone": "test_resnet", "input_size": [64, 32], "dim": 256}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("reid") / "reid.pt"
    net = build_reid_net(TINY).eval()
    save_checkpoint(path, "reid", {"model": TINY}, net.state_dict())
    return path


def test_embed_crops_gives_unit_vectors_of_model_dim_for_crops_of_any_size(checkpoint):
    model = ReidModel.from_checkpoint(checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    sizes = [(80, 30), (9, 5), (300, 200)]
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    feats = model.embed_crops(crops)
    assert model.dim == 256
    assert feats.shape == (3, 256) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert model.embed_crops([]).shape == (0, 256)


def test_embed_boxes_equals_embedding_the_cropped_pixels(checkpoint):
    model = ReidModel.from_checkpoint(checkpoint, device="cpu", batch_size=2)
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 40, 100], [50.5, 0, 90, 60], [100, 30, 160, 120]], np.float32)
    crops = [image[20:100, 10:40], image[0:60, 50:90], image[30:120, 100:160]]
    np.testing.assert_allclose(model.embed_boxes(image, boxes), model.embed_crops(crops),
                               atol=1e-6)


def test_crop_boxes_clips_to_the_image_and_keeps_at_least_one_pixel():
    image = np.zeros((50, 40, 3), np.uint8)
    crops = crop_boxes(image, np.array([[-10, -5, 100, 100], [39.5, 49.5, 39.6, 49.6]]))
    assert crops[0].shape == (50, 40, 3)
    assert crops[1].shape == (1, 1, 3)


def test_pretrained_file_initialises_the_backbone(tmp_path):
    source = timm.create_model("test_resnet")
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    net = build_reid_net({**TINY, "pretrained_file": str(tmp_path / "weights.pth")})
    for name, value in net.backbone.state_dict().items():
        assert torch.equal(value, source.state_dict()[name]), name


def test_missing_pretrained_file_is_a_one_line_error(tmp_path):
    with pytest.raises(PsearchError, match="pretrained weights file not found"):
        build_reid_net({**TINY, "pretrained_file": str(tmp_path / "absent.pth")})


def test_unknown_backbone_is_refused():
    with pytest.raises(PsearchError, match="not a timm model"):
        build_reid_net({**TINY, "backbone": "no_such_net"})


def test_checkpoint_whose_weights_do_not_match_its_config_is_refused(tmp_path):
    net = build_reid_net(TINY)
    save_checkpoint(tmp_path / "bad.pt", "reid", {"model": {**TINY, "dim": 128}}, net.state_dict())
    with pytest.raises(PsearchError, match="weights do not match"):
        ReidModel.from_checkpoint(tmp_path / "bad.pt", device="cpu")


def test_detector_or_corrupt_checkpoint_is_refused(tmp_path):
    save_checkpoint(tmp_path / "det.pt", "detector", {"model": {}}, {})
    with pytest.raises(PsearchError, match="expected a 'reid' checkpoint"):
        ReidModel.from_checkpoint(tmp_path / "det.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PsearchError, match="not a readable psearch checkpoint"):
        ReidModel.from_checkpoint(tmp_path / "junk.pt")
