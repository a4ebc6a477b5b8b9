"""Scoring re-ID features on ground-truth boxes and re-embedding a run's detected boxes."""

from __future__ import annotations

import numpy as np

from psearch.baselines import ColorHistogramEmbedder
from psearch.data import load_dataset
from psearch.evaluation import SearchResults, evaluate_search
from psearch.reid.evaluate import evaluate_gt_boxes, ground_truth_results, reembed_results


def test_ground_truth_results_hold_every_test_box_with_score_one(cuhk_world):
    dataset = load_dataset(cuhk_world, "cuhk")
    results = ground_truth_results(ColorHistogramEmbedder(), dataset)
    assert len(results.boxes) == sum(len(r.boxes) for r in dataset.gallery)
    assert np.all(results.scores == 1.0)
    assert results.query_features.shape == (len(dataset.queries), results.features.shape[1])
    headline = evaluate_gt_boxes(ColorHistogramEmbedder(), dataset)
    assert headline["mAP"] == evaluate_search(dataset, results, gallery_size=20)["mAP"]


def test_reembed_keeps_boxes_and_order_and_swaps_features(cuhk_world):
    dataset = load_dataset(cuhk_world, "cuhk")
    colour = ColorHistogramEmbedder()
    truth = ground_truth_results(colour, dataset)
    # The same boxes shuffled across images, with random features: re-embedding must give each
    # row the colour feature of its own box, whatever the row order.
    order = np.random.default_rng(0).permutation(len(truth.boxes))
    rng_feats = np.random.default_rng(1).normal(size=truth.features.shape).astype(np.float32)
    shuffled = SearchResults(image_names=truth.image_names, det_image=truth.det_image[order],
                             boxes=truth.boxes[order], scores=truth.scores[order],
                             features=rng_feats / np.linalg.norm(rng_feats, axis=1, keepdims=True),
                             query_features=None)
    again = reembed_results(colour, dataset, shuffled)
    np.testing.assert_array_equal(again.boxes, shuffled.boxes)
    np.testing.assert_array_equal(again.det_image, shuffled.det_image)
    np.testing.assert_allclose(again.features, truth.features[order], atol=1e-6)
    np.testing.assert_allclose(again.query_features, truth.query_features, atol=1e-6)


def test_evaluate_reports_the_requested_ranks(cuhk_world):
    from psearch.evaluation import evaluate

    dataset = load_dataset(cuhk_world, "cuhk")
    results = ground_truth_results(ColorHistogramEmbedder(), dataset)
    default = evaluate(dataset, results)
    ranks = evaluate(dataset, results, topk=range(1, 11))
    for name, metrics in default["search"].items():
        cmc = [ranks["search"][name][f"top{k}"] for k in range(1, 11)]
        assert cmc == sorted(cmc)  # a CMC curve never falls
        assert [metrics[f"top{k}"] for k in (1, 5, 10)] == [cmc[0], cmc[4], cmc[9]]
