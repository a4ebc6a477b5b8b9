"""PRW loader (see ``/work/shared/specs/datasets.md``).

Layout read::

    ROOT/frames/<name>.jpg                   every frame; name c<camera>s<sequence>_<frame>
    ROOT/annotations/<name>.jpg.mat          K x 5 [id x y w h] under box_new, anno_file or
                                             anno_previous (the first one present)
    ROOT/frame_train.mat, frame_test.mat     img_index_train / img_index_test: names without .jpg
    ROOT/query_info.txt                      <id> <x> <y> <w> <h> <name without .jpg> per line

Boxes: ids below 0 (PRW uses -2) are unlabeled. By default (``boxes="reference"``) boxes are
read the way SeqNet and the codebases derived from it read them, since the published PRW
figures come from those: gallery annotations clip negative ``[x y w h]`` values to 0, convert to
``(x, y, x + w, y + h)`` and truncate to integers; query boxes convert the unclipped ``x y w h``
to corners, truncate to integers and then clip to 0. ``boxes="exact"`` keeps the fractional
coordinates instead (queries clipped like the annotations, so that a query box equals its
person's annotation). A box whose w or h is <= 0 after that is skipped. Skips, clips and frames
in neither split are counted in the notes. ID_train.mat and ID_test.mat are not read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.progress import progress_bar
from psearch.data.annotations import UNLABELED_PID, ImageRecord, PersonSearchDataset, QueryRecord
from psearch.data.matfile import load_first_variable, load_mat, strings, xywh_to_xyxy

FRAME_DIR = "frames"
ANNOTATION_DIR = "annotations"
BOX_VARIABLES = ("box_new", "anno_file", "anno_previous")
SPLIT_FILES = {
    "train": ("frame_train.mat", "img_index_train"),
    "test": ("frame_test.mat", "img_index_test"),
}
QUERY_FILE = "query_info.txt"
CAMERA = re.compile(r"c(\d)")


def is_prw(root: Path) -> bool:
    """Whether ``root`` looks like a PRW tree (has ``frame_test.mat`` and ``annotations/``)."""
    root = Path(root)
    return (root / SPLIT_FILES["test"][0]).is_file() and (root / ANNOTATION_DIR).is_dir()


def camera_of(name: str, where: str) -> int:
    """The camera of a PRW frame: the digit after ``c`` in ``c<camera>s<sequence>_<frame>``."""
    match = CAMERA.match(name)
    if match is None:
        raise PsearchError(f"{where}: frame name {name!r} does not start with c<camera>")
    return int(match.group(1))


BOX_CONVENTIONS = ("reference", "exact")


def load_prw(root: str | os.PathLike, notes: list[str] | None = None,
             boxes: str = "reference") -> PersonSearchDataset:
    """Load a PRW tree. Load notes (skipped and clipped boxes) are appended to ``notes``;
    ``boxes``: "reference" (integer boxes, as SeqNet) or "exact" (see the module docstring)."""
    if boxes not in BOX_CONVENTIONS:
        raise PsearchError(f"PRW boxes {boxes!r}: expected one of {', '.join(BOX_CONVENTIONS)}")
    integer = boxes == "reference"
    root = Path(root)
    notes = [] if notes is None else notes
    splits = {
        split: _read_split(root / file, variable) for split, (file, variable) in SPLIT_FILES.items()
    }
    both = set(splits["train"]) & set(splits["test"])
    if both:
        raise PsearchError(
            f"{root / SPLIT_FILES['test'][0]}: frame {sorted(both)[0]!r} is in both splits"
        )
    frame_dir = root / FRAME_DIR
    if not frame_dir.is_dir():
        raise PsearchError(f"{frame_dir}: frame folder not found")
    present = set(os.listdir(frame_dir))
    listed = [*splits["train"], *splits["test"]]
    missing = [n for n in listed if n not in present]
    if missing:
        raise PsearchError(
            f"{frame_dir}: {len(missing)} of {len(listed)} frames of the split files are missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        )
    unlisted = sum(1 for n in present if n.endswith(".jpg")) - len(listed)
    if unlisted > 0:
        notes.append(f"{frame_dir}: {unlisted} frames are in neither split file (ignored)")

    records: dict[str, list[ImageRecord]] = {"train": [], "test": []}
    skipped = clipped = 0
    progress = progress_bar(
        total=len(listed), desc="reading PRW annotations", unit="frame", enabled=None, leave=False
    )
    with progress:
        for split, names in splits.items():
            for name in names:
                frame_boxes, pids, n_skipped, n_clipped = _read_frame(
                    root / ANNOTATION_DIR / f"{name}.mat", integer
                )
                skipped += n_skipped
                clipped += n_clipped
                records[split].append(
                    ImageRecord(
                        name=name,
                        path=frame_dir / name,
                        boxes=frame_boxes,
                        pids=pids,
                        camera=camera_of(name, str(root / SPLIT_FILES[split][0])),
                        split=split,
                    )
                )
                progress.update()
    if skipped:
        notes.append(
            f"{root / ANNOTATION_DIR}: skipped {skipped} boxes with w or h <= 0 after clipping"
        )
    if clipped:
        notes.append(
            f"{root / ANNOTATION_DIR}: clipped {clipped} boxes with negative coordinates to 0"
        )
    queries = _read_queries(root / QUERY_FILE, set(splits["test"]), set(splits["train"]),
                            integer)
    return PersonSearchDataset(
        name=root.name or "prw",
        root=root,
        train=records["train"],
        gallery=records["test"],
        queries=queries,
    )


def _frame_file(name: str) -> str:
    """A split-file or query entry (``c1s1_000151``) as the frame's file name."""
    return name if name.endswith(".jpg") else f"{name}.jpg"


def _read_split(path: Path, variable: str) -> list[str]:
    names = [
        _frame_file(n) for n in strings(load_mat(path, variable)[variable], f"{path}: {variable}")
    ]
    if len(set(names)) != len(names):
        raise PsearchError(f"{path}: {variable} lists a frame twice")
    return names


def _read_frame(path: Path, integer: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """An annotation file -> (boxes float32 [K, 4] x1y1x2y2, pids int64 [K], skipped, clipped);
    ``integer``: corners truncated to integers, as the reference code does."""
    variable, data = load_first_variable(path, BOX_VARIABLES)
    data = np.asarray(data)
    if data.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0, 0
    if data.dtype.kind not in "iuf" or data.ndim != 2 or data.shape[1] != 5:
        raise PsearchError(
            f"{path}: {variable} must be a K x 5 number matrix [id x y w h], got {data.shape}"
        )
    data = data.astype(np.float64)
    if not np.isfinite(data).all():
        raise PsearchError(f"{path}: {variable} holds NaN or infinite values")
    ids = data[:, 0]
    if (ids != np.round(ids)).any():
        raise PsearchError(f"{path}: {variable} has non-integer person ids")
    xywh = data[:, 1:]
    clipped = int((xywh < 0).any(axis=1).sum())
    corners = xywh_to_xyxy(np.clip(xywh, 0, None), dtype=np.float64)
    if integer:
        corners = np.trunc(corners)
    valid = (corners[:, 2] > corners[:, 0]) & (corners[:, 3] > corners[:, 1])
    pids = np.where(ids < 0, UNLABELED_PID, ids).astype(np.int64)
    return corners[valid].astype(np.float32), pids[valid], int((~valid).sum()), clipped


def _read_queries(path: Path, test_frames: set[str], train_frames: set[str],
                  integer: bool) -> list[QueryRecord]:
    """query_info.txt -> queries; CRLF or LF line ends, blank lines ignored."""
    if not path.is_file():
        raise PsearchError(f"{path}: file not found")
    queries = []
    with open(path, encoding="utf-8", newline="") as f:
        for number, line in enumerate(f, start=1):
            fields = line.rstrip("\r\n").split()
            if not fields:
                continue
            where = f"{path}: line {number}"
            if len(fields) != 6:
                raise PsearchError(
                    f"{where}: expected '<id> <x> <y> <w> <h> <frame>', got {len(fields)} fields"
                )
            try:
                pid = int(fields[0])
                xywh = np.array([float(v) for v in fields[1:5]])
            except ValueError:
                raise PsearchError(f"{where}: id must be an integer and x y w h numbers") from None
            if pid < 0 or not np.isfinite(xywh).all():
                raise PsearchError(f"{where}: bad query id {pid} or non-finite box")
            if integer:  # corners, truncated, then clipped: the reference order
                box = np.clip(np.trunc(xywh_to_xyxy(xywh, dtype=np.float64)[0]), 0, None)
            else:
                box = xywh_to_xyxy(np.clip(xywh, 0, None), dtype=np.float64)[0]
            if box[2] <= box[0] or box[3] <= box[1]:
                raise PsearchError(f"{where}: query box has zero width or height")
            frame = _frame_file(fields[5])
            if frame not in test_frames:
                kind = "a training frame" if frame in train_frames else "not a known frame"
                raise PsearchError(
                    f"{where}: query frame {frame!r} is {kind}; queries must be test frames"
                )
            queries.append(
                QueryRecord(
                    image=frame, box=box.astype(np.float32), pid=pid,
                    camera=camera_of(frame, where)
                )
            )
    return queries
