"""The search and detection protocols on small hand-made cases with hand-computed figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psearch.core.errors import PsearchError
from psearch.data.annotations import (
    UNLABELED_PID,
    ImageRecord,
    PersonSearchDataset,
    QueryRecord,
)
from psearch.evaluation import (
    SearchResults,
    average_precision,
    box_iou,
    evaluate,
    evaluate_detection,
    evaluate_search,
    format_report,
    paired_box_iou,
    query_galleries,
    search_iou_threshold,
    search_protocols,
)

U = UNLABELED_PID


def image(name, boxes, pids, camera=0):
    return ImageRecord(
        name, Path(name), np.array(boxes, np.float32).reshape(-1, 4), pids, camera, "test"
    )


def feat(sim):
    """A unit feature whose dot product with the query feature [1, 0] is exactly ``sim``."""
    return [sim, np.sqrt(1 - sim * sim)]


QUERY_FEAT = [1.0, 0.0]


@pytest.fixture
def prw_like():
    """Person 7 is queried from q.jpg (camera 1) and appears in a, b (camera 2) and d (camera 3)."""
    gallery = [
        image("q.jpg", [[0, 0, 50, 100]], [7], camera=1),
        image("a.jpg", [[10, 10, 60, 110], [100, 0, 150, 100]], [7, U], camera=2),
        image("b.jpg", [[0, 0, 40, 80], [100, 0, 140, 80]], [7, 5], camera=2),
        image("c.jpg", [[0, 0, 50, 100], [200, 0, 250, 100]], [3, 5], camera=1),
        image("d.jpg", [[0, 0, 10, 10]], [7], camera=3),
    ]
    queries = [
        QueryRecord("q.jpg", [0, 0, 50, 100], 7, camera=1),
        QueryRecord("c.jpg", [0, 0, 50, 100], 3, camera=1),  # nobody else is person 3
        QueryRecord("c.jpg", [200, 0, 250, 100], 5, camera=1),  # person 5 is never detected
    ]
    return PersonSearchDataset("prw-like", Path("."), [], gallery, queries)


@pytest.fixture
def prw_detections():
    return {
        "q.jpg": ([[0, 0, 50, 100]], [0.99], [feat(1.0)]),  # the query's own image: excluded
        "a.jpg": (  # the true match is less similar than the unlabeled person next to it
            [[10, 10, 60, 110], [100, 0, 150, 100]],
            [0.9, 0.8],
            [feat(0.6), feat(0.9)],
        ),
        "b.jpg": ([[0, 0, 40, 80]], [0.3], [feat(0.99)]),  # below the score threshold
        "c.jpg": ([[0, 0, 50, 100]], [0.7], [feat(0.7)]),
        "d.jpg": ([[0, 0, 10, 3]], [0.95], [feat(0.5)]),  # IoU 0.3 with a 10x10 person
    }


def test_average_precision_hand_computed():
    # positives at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(5 / 6)


def test_average_precision_groups_tied_scores():
    # the tie at 0.9 is one threshold: precision 1/2 at recall 1/2, then 2/3 at recall 1
    assert average_precision([0, 1, 1], [0.9, 0.9, 0.5]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([1, 0, 1], [0.9, 0.9, 0.5]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_average_precision_without_positive_is_zero():
    assert average_precision([0, 0], [0.3, 0.2]) == 0.0


def test_average_precision_matches_scikit_learn_with_ties():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        labels = rng.random(n) < 0.3
        labels[rng.integers(n)] = True
        scores = rng.integers(0, 5, n) / 4.0  # many ties
        expected = sklearn.average_precision_score(labels, scores)
        assert average_precision(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_small_person_iou_threshold():
    assert search_iou_threshold(np.array([0, 0, 20, 40])) == 0.5  # 800 / 1500 = 0.533 -> 0.5
    assert search_iou_threshold(np.array([0, 0, 10, 10])) == pytest.approx(100 / 400)


def test_search_all_cameras_hand_computed(prw_like, prw_detections):
    metrics = evaluate_search(prw_like, prw_detections, np.array([QUERY_FEAT] * 3))
    # query 7 ranks c 0.9 (neg, a), 0.7 (neg, c), 0.6 (pos, a), 0.5 (pos, d, IoU 0.3 >= 0.25);
    # b holds the person but its only detection scores 0.3: count_gt 3, count_tp 2.
    ap7 = (0.5 * 1 / 3 + 0.5 * 2 / 4) * 2 / 3
    # query 5: its one gallery image (b) has no kept detection: AP 0; query 3 is skipped.
    assert metrics["mAP"] == pytest.approx((ap7 + 0.0) / 2)
    assert metrics["top1"] == 0.0
    assert metrics["top5"] == 0.5
    assert metrics["top10"] == 0.5
    assert metrics["queries"] == 2
    assert metrics["skipped_queries"] == 1


def test_search_cross_camera_drops_the_query_camera(prw_like, prw_detections):
    metrics = evaluate_search(
        prw_like, prw_detections, np.array([QUERY_FEAT] * 3), cross_camera=True
    )
    # query 7 without camera 1 (c.jpg): 0.9 neg, 0.6 pos, 0.5 pos
    ap7 = (0.5 * 1 / 2 + 0.5 * 2 / 3) * 2 / 3
    assert metrics["mAP"] == pytest.approx(ap7 / 2)
    assert metrics["top1"] == 0.0
    assert metrics["top5"] == 0.5


def test_search_marks_only_the_most_similar_overlapping_detection():
    gallery = [image("q.jpg", [[0, 0, 50, 100]], [1]), image("g.jpg", [[0, 0, 50, 100]], [1])]
    dataset = PersonSearchDataset(
        "x", Path("."), [], gallery, [QueryRecord("q.jpg", [0, 0, 50, 100], 1)]
    )
    dets = {
        "g.jpg": (
            [[0, 0, 50, 100], [0, 0, 50, 90], [300, 0, 350, 100]],
            [0.9] * 3,
            [feat(0.5), feat(0.8), feat(0.9)],
        )
    }
    # both overlapping boxes match, but only the more similar (0.8) is the true positive:
    # ranking 0.9 neg, 0.8 pos, 0.5 neg -> AP 1/2, top-1 0, top-5 1
    metrics = evaluate_search(dataset, dets, np.array([QUERY_FEAT]))
    assert metrics["mAP"] == pytest.approx(0.5)
    assert (metrics["top1"], metrics["top5"]) == (0.0, 1.0)


def test_search_ties_between_images_share_one_precision_point():
    gallery = [
        image("q.jpg", [[0, 0, 50, 100]], [1]),
        image("g1.jpg", [[0, 0, 50, 100]], [1]),
        image("g2.jpg", [[0, 0, 50, 100]], [2]),
    ]
    dataset = PersonSearchDataset(
        "x", Path("."), [], gallery, [QueryRecord("q.jpg", [0, 0, 50, 100], 1)]
    )
    dets = {name: ([[0, 0, 50, 100]], [0.9], [feat(0.75)]) for name in ("g1.jpg", "g2.jpg")}
    metrics = evaluate_search(dataset, dets, np.array([QUERY_FEAT]))
    assert metrics["mAP"] == pytest.approx(0.5)  # positive and negative tied at the top
    # the reference ranks with np.argsort(scores)[::-1]: of two tied scores the later comes first
    assert metrics["top1"] == 0.0


def test_query_galleries_exclude_own_frame_and_give_ground_truth(prw_like):
    galleries = query_galleries(prw_like)
    assert [name for name, _ in galleries[0]] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert [gt is not None for _, gt in galleries[0]] == [True, True, False, True]
    np.testing.assert_array_equal(galleries[0][0][1], [10, 10, 60, 110])
    cross = query_galleries(prw_like, cross_camera=True)
    assert [name for name, _ in cross[0]] == ["a.jpg", "b.jpg", "d.jpg"]


def cuhk_dataset():
    gallery = [image(f"s{i}.jpg", [[0, 0, 50, 100]], [1 if i < 3 else 2]) for i in range(6)]
    protocols = {
        2: [[("s1.jpg", np.array([0, 0, 50, 100], np.float32)), ("s2.jpg", None)]],
        3: [
            [("s1.jpg", np.array([0, 0, 50, 100], np.float32)), ("s4.jpg", None), ("s5.jpg", None)]
        ],
        50: [[("s1.jpg", np.array([0, 0, 50, 100], np.float32)), ("s3.jpg", None)]],
    }
    queries = [QueryRecord("s0.jpg", [0, 0, 50, 100], 1)]
    return PersonSearchDataset("cuhk-like", Path("."), [], gallery, queries, protocols)


def test_cuhk_galleries_follow_the_protocol_lists_and_the_full_set():
    dataset = cuhk_dataset()
    assert [n for n, _ in query_galleries(dataset, 3)[0]] == ["s1.jpg", "s4.jpg", "s5.jpg"]
    # full set: TestG50's list, then every other test image except the query's own
    full = query_galleries(dataset, None)[0]
    assert [n for n, _ in full] == ["s1.jpg", "s3.jpg", "s2.jpg", "s4.jpg", "s5.jpg"]
    assert [gt is not None for _, gt in full] == [True, False, False, False, False]
    with pytest.raises(PsearchError, match="TestG100"):
        query_galleries(dataset, 100)


def test_cuhk_gallery_size_changes_the_distractors():
    dataset = cuhk_dataset()
    dets = {
        f"s{i}.jpg": ([[0, 0, 50, 100]], [0.9], [feat(s)])
        for i, s in enumerate([1, 0.5, 0.9, 0.9, 0.2, 0.3])
    }
    q = np.array([QUERY_FEAT])
    assert evaluate_search(dataset, dets, q, gallery_size=2)["mAP"] == pytest.approx(0.5)
    assert evaluate_search(dataset, dets, q, gallery_size=3)["mAP"] == pytest.approx(1.0)
    # full set: s2 (0.9) and s3 (0.9) outrank the match (0.5); s4, s5 do not
    assert evaluate_search(dataset, dets, q, gallery_size=None)["mAP"] == pytest.approx(1 / 3)


def test_detection_hand_computed():
    gallery = [
        image("a.jpg", [[0, 0, 10, 10], [100, 100, 110, 110]], [1, U]),
        image("b.jpg", [[0, 0, 10, 10]], [U]),  # no labeled person
        image("c.jpg", [[0, 0, 10, 10]], [2]),  # never detected
    ]
    dataset = PersonSearchDataset("x", Path("."), [], gallery, [])
    dets = {
        "a.jpg": (
            [[0, 0, 10, 10], [0, 0, 10, 8], [100, 100, 110, 110], [50, 50, 60, 60], [0, 0, 10, 9]],
            [0.9, 0.8, 0.7, 0.6, 0.4],  # the last is below the score threshold
        ),
        "b.jpg": ([[0, 0, 10, 10]], [0.95]),
    }
    # all people: a: 0.9 match, 0.8 (second on person 1) miss, 0.7 match (unlabeled), 0.6 miss;
    # b: 0.95 match. Ranked 1,1,0,1,0: AP = (1 + 1 + 3/4) / 3; recall = 3 of 4.
    all_people = evaluate_detection(dataset, dets)
    assert all_people["recall"] == pytest.approx(3 / 4)
    assert all_people["ap"] == pytest.approx((1 + 1 + 3 / 4) / 3 * 3 / 4)
    assert (all_people["gt"], all_people["detections"]) == (4, 5)
    # labeled: b is skipped entirely; in a only person 1 counts: ranked 1,0,0,0; recall 1 of 2
    labeled = evaluate_detection(dataset, dets, labeled_only=True)
    assert labeled["recall"] == pytest.approx(1 / 2)
    assert labeled["ap"] == pytest.approx(1 * 1 / 2)
    assert (labeled["gt"], labeled["detections"]) == (2, 4)


def test_detection_one_match_per_ground_truth_and_per_detection():
    gallery = [image("a.jpg", [[0, 0, 10, 10], [2, 0, 12, 10]], [1, 2])]
    dataset = PersonSearchDataset("x", Path("."), [], gallery, [])
    # one detection between two people: it matches its best person only
    result = evaluate_detection(dataset, {"a.jpg": ([[1, 0, 11, 10]], [0.9])})
    assert result["recall"] == pytest.approx(1 / 2)


def test_evaluate_runs_the_standard_set_and_formats_percentages(prw_like, prw_detections):
    results = SearchResults.from_per_image(prw_detections, np.array([QUERY_FEAT] * 3))
    report = evaluate(prw_like, results)
    assert list(report["search"]) == ["all-cameras", "cross-camera"]
    assert list(report["detection"]) == ["all", "labeled"]
    table = format_report(report)
    ap7 = (0.5 * 1 / 3 + 0.5 * 2 / 4) * 2 / 3
    assert f"| all-cameras | {100 * ap7 / 2:.1f} | 0.0 | 50.0 | 50.0 | 2 (1 skipped) |" in table


def test_paired_iou_is_the_diagonal_of_the_iou_matrix():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (2, 20, 2))
    a, b = (np.concatenate([p, p + rng.uniform(1, 40, p.shape)], axis=1) for p in xy)
    np.testing.assert_allclose(paired_box_iou(a, b), np.diag(box_iou(a, b)), atol=1e-12)
    # no "+1" pixel convention: a 10x10 box and its left half overlap by exactly 1/2
    assert paired_box_iou([[0, 0, 10, 10]], [[0, 0, 5, 10]])[0] == 0.5


def test_standard_protocols_check_gallery_sizes_up_front(prw_like):
    dataset = cuhk_dataset()
    assert list(search_protocols(dataset)) == ["gallery-50"]  # of 50 and 100, what it has
    assert list(search_protocols(dataset, [2, 3], full_set=True)) == [
        "gallery-2",
        "gallery-3",
        "full-set",
    ]
    with pytest.raises(PsearchError, match="no TestG100 protocol"):
        search_protocols(dataset, [2, 100])
    with pytest.raises(PsearchError, match="CUHK-SYSU only"):
        search_protocols(prw_like, [100])
