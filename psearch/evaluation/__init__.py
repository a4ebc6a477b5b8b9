"""psearch.evaluation: the standard person-search and detection protocols.

>>> from psearch.evaluation import evaluate, load_results, format_report
>>> report = evaluate(dataset, load_results("results.npz"))  # the standard protocols
>>> print(format_report(report))
>>> evaluate_search(dataset, {"s1.jpg": (boxes, scores, feats)}, query_feats, gallery_size=100)
"""

from psearch.evaluation.detection import evaluate_detection, match_detections
from psearch.evaluation.metrics import (
    average_precision,
    box_iou,
    paired_box_iou,
    search_iou_threshold,
)
from psearch.evaluation.pairs import (
    PairResults,
    evaluate_pairs,
    pair_galleries,
    pairs_from_results,
    sample_queries,
)
from psearch.evaluation.protocols import QueryGallery, iter_query_galleries, query_galleries
from psearch.evaluation.report import format_report, write_report_json
from psearch.evaluation.results import SearchResults, load_results, save_results
from psearch.evaluation.search import evaluate_search, search_scores
from psearch.evaluation.standard import evaluate, search_protocols

__all__ = [
    "PairResults",
    "evaluate_pairs",
    "pair_galleries",
    "pairs_from_results",
    "sample_queries",
    "QueryGallery",
    "SearchResults",
    "average_precision",
    "box_iou",
    "evaluate",
    "evaluate_detection",
    "evaluate_search",
    "format_report",
    "iter_query_galleries",
    "load_results",
    "match_detections",
    "paired_box_iou",
    "query_galleries",
    "save_results",
    "search_iou_threshold",
    "search_protocols",
    "search_scores",
    "write_report_json",
]
