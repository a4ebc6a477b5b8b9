"""HOG baseline: containment suppression, window trimming and the switch that turns both off."""

from __future__ import annotations

import numpy as np
import torch

from psearch.baselines.hog import HogDetector, containment_keep


def test_containment_drops_boxes_nested_in_a_higher_scoring_one():
    boxes = torch.tensor([[0., 0, 100, 200],     # 0: big, best
                          [10, 10, 50, 100],      # 1: inside 0 -> dropped
                          [150, 0, 200, 100],     # 2: apart -> kept
                          [140, -10, 210, 120],   # 3: contains 2 (kept: 2 scores higher)
                          [90, 0, 160, 100]])     # 4: overlaps 0 and 2 by < 0.8 of itself
    assert containment_keep(boxes, 0.8).tolist() == [0, 2, 4]
    # a box suppressed by a dropped box survives: greedy, as NMS
    chain = torch.tensor([[0., 0, 100, 100], [50, 0, 150, 100], [60, 0, 150, 100]])
    assert containment_keep(chain, 0.8).tolist() == [0, 1]
    assert containment_keep(chain, 1.0).tolist() == [0, 1, 2]  # ratio never exceeds 1: off
    assert containment_keep(chain[:1], 0.8).tolist() == [0]


def test_suppress_trims_windows_and_can_be_switched_off():
    windows = torch.tensor([[0., 0, 64, 128], [8, 16, 40, 80], [200, 0, 264, 128]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    old = HogDetector(contain=None, shrink=(0, 0))
    boxes, kept = old.suppress(windows, scores, (120, 240))
    np.testing.assert_allclose(boxes, [[0, 0, 64, 120], [8, 16, 40, 80], [200, 0, 240, 120]])
    np.testing.assert_allclose(kept, [0.9, 0.8, 0.7])
    new = HogDetector(contain=0.8, shrink=(0.25, 0.125))
    boxes, kept = new.suppress(windows, scores, (120, 240))
    # window 0 trimmed to [16, 16, 48, 112]; window 1 ([16, 24, 32, 72]) lies inside it
    np.testing.assert_allclose(boxes, [[16, 16, 48, 112], [216, 16, 240, 112]])
    np.testing.assert_allclose(kept, [0.9, 0.7])
    assert new.describe()["contain"] == 0.8 and old.describe()["contain"] is None


def test_detect_matches_windows_then_suppress(cuhk_world):
    from psearch.core.media import read_image
    from psearch.data import load_dataset

    image = read_image(load_dataset(cuhk_world, "cuhk").gallery[0].path)
    hog = HogDetector(upscale=2.0)
    [(boxes, scores)] = hog.detect([image], score_thresh=0.1)
    assert len(boxes) > 0
    raw_boxes, raw_scores = hog.windows(image, 0.1)
    again = hog.suppress(raw_boxes, raw_scores, image.shape[:2])
    np.testing.assert_array_equal(boxes, again[0])
    assert np.all(np.diff(scores) <= 0)


def test_registry_passes_the_containment_threshold_to_hog_only():
    from psearch.registry import load_detector

    assert load_detector("hog", contain=0.5).contain == 0.5
    assert load_detector("hog", contain=1.0).contain is None  # >= 1: off
    assert load_detector("hog").contain == HogDetector().contain
