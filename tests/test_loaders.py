"""Dataset loaders: CUHK-SYSU and PRW .mat fixtures built by hand, and the folder format."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from psearch.core.errors import PsearchError
from psearch.data import UNLABELED_PID, detect_format, load_dataset
from psearch.data.folder import write_folder

# --- MATLAB structure builders ---------------------------------------------------------------


def struct_array(
    fields: tuple[str, ...], rows: list[tuple], shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A MATLAB struct array (1 x len(rows) by default) as scipy.io.savemat writes it."""
    array = np.zeros(shape or (1, len(rows)), dtype=[(f, object) for f in fields])
    for element, row in zip(array.reshape(-1), rows, strict=True):
        for name, value in zip(fields, row, strict=True):
            element[name] = value
    return array


def cell(values: list, column: bool = True) -> np.ndarray:
    """A MATLAB cell array, N x 1 (or 1 x N)."""
    array = np.empty((len(values), 1) if column else (1, len(values)), dtype=object)
    for i, value in enumerate(values):
        array.flat[i] = value
    return array


def loc(x: float, y: float, w: float, h: float) -> np.ndarray:
    return np.array([[x, y, w, h]], dtype=np.float64)


def no_loc() -> np.ndarray:
    return np.zeros((1, 0))


def write_jpg(path: Path, size: tuple[int, int] = (80, 100)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size[1], size[0], 3), 128, np.uint8))


# --- a small CUHK-SYSU tree ------------------------------------------------------------------

CUHK_BOXES = {  # image -> boxes [x y w h] of Images.mat
    "s1.jpg": [(10, 20, 30, 60), (50, 20, 30, 60), (0, 0, 0, 10)],  # the third has w = 0
    "s2.jpg": [(5, 5, 20, 40), (40, 5, 20, 40)],
    "s3.jpg": [(10, 10, 20, 50), (40, 10, 20, 50)],
    "s4.jpg": [(12, 8, 20, 50)],
    "s5.jpg": [(30, 30, 10, 30)],
    "s6.jpg": [],
}
CUHK_TEST = ["s3.jpg", "s4.jpg", "s5.jpg", "s6.jpg"]


def person(idname: str, scenes: list[tuple[str, tuple]]) -> np.ndarray:
    scene = struct_array(("imname", "idlocate", "ishard"), [(n, loc(*b), 0.0) for n, b in scenes])
    return struct_array(("idname", "nAppear", "scene"), [(idname, float(len(scenes)), scene)])


def make_testg(entries: list[tuple[str, tuple, str, list[tuple[str, tuple | None]]]]) -> np.ndarray:
    """TestG{N}: per query (image, box, idname, gallery [(image, box or None)])."""
    rows = []
    for image, box, idname, gallery in entries:
        query = struct_array(
            ("imname", "idlocate", "ishard", "idname"), [(image, loc(*box), 0.0, idname)]
        )
        g = struct_array(
            ("imname", "idlocate", "ishard"),
            [(n, no_loc() if b is None else loc(*b), 0.0) for n, b in gallery],
        )
        rows.append((query, g))
    return struct_array(("Query", "Gallery"), rows)


def make_cuhk(root: Path, train: list[np.ndarray] | None = None, images: bool = True) -> Path:
    """The tree of CUHK_BOXES: p1 and p2 in training, one query p7 (in s3, also in s4)."""
    ann = root / "annotation"
    proto = ann / "test" / "train_test"
    proto.mkdir(parents=True)
    img = struct_array(
        ("imname", "nAppear", "box"),
        [
            (name, float(len(b)), struct_array(("idlocate",), [(loc(*x),) for x in b]))
            for name, b in CUHK_BOXES.items()
        ],
    )
    scipy.io.savemat(ann / "Images.mat", {"Img": img})
    scipy.io.savemat(ann / "pool.mat", {"pool": cell(CUHK_TEST)})
    if train is None:
        train = [
            person("p1", [("s1.jpg", (10, 20, 30, 60)), ("s2.jpg", (5, 5, 20, 40))]),
            person(
                "p2", [("s2.jpg", (40, 5, 20, 40)), ("s1.jpg", (99, 99, 9, 9))]
            ),  # 2nd matches nothing
        ]
    scipy.io.savemat(proto / "Train.mat", {"Train": cell(train)})
    query = ("s3.jpg", (10, 10, 20, 50), "p7")
    scipy.io.savemat(
        proto / "TestG2.mat",
        {"TestG2": make_testg([(*query, [("s4.jpg", (12, 8, 20, 50)), ("s5.jpg", None)])])},
    )
    scipy.io.savemat(
        proto / "TestG3.mat",
        {
            "TestG3": make_testg(
                [(*query, [("s4.jpg", (12, 8, 20, 50)), ("s6.jpg", None), ("s5.jpg", None)])]
            )
        },
    )
    if images:
        for name in CUHK_BOXES:
            write_jpg(root / "Image" / "SSM" / name)
    return root


def test_cuhk_images_boxes_and_split(tmp_path: Path) -> None:
    notes: list[str] = []
    ds = load_dataset(make_cuhk(tmp_path), "cuhk", notes)
    assert [r.name for r in ds.train] == ["s1.jpg", "s2.jpg"]
    assert [r.name for r in ds.gallery] == CUHK_TEST
    s1 = ds.image("s1.jpg")
    np.testing.assert_array_equal(
        s1.boxes, [[10, 20, 40, 80], [50, 20, 80, 80]]
    )  # zero-width box skipped
    assert s1.boxes.dtype == np.float32 and s1.split == "train"
    assert s1.path == tmp_path / "Image" / "SSM" / "s1.jpg"
    assert ds.image("s6.jpg").boxes.shape == (0, 4)
    assert any("skipped 1 boxes" in n for n in notes)


def test_cuhk_identities_from_train_and_testg(tmp_path: Path) -> None:
    notes: list[str] = []
    ds = load_dataset(make_cuhk(tmp_path), "cuhk", notes)
    assert ds.image("s1.jpg").pids.tolist() == [1, UNLABELED_PID]
    assert ds.image("s2.jpg").pids.tolist() == [1, 2]
    assert ds.image("s3.jpg").pids.tolist() == [7, UNLABELED_PID]  # query box
    assert ds.image("s4.jpg").pids.tolist() == [7]  # gallery box of the query person
    assert ds.image("s5.jpg").pids.tolist() == [UNLABELED_PID]
    assert any("Train.mat: 1 appearances match no box" in n for n in notes)


def test_cuhk_queries_and_protocols(tmp_path: Path) -> None:
    ds = load_dataset(make_cuhk(tmp_path), "cuhk")
    assert len(ds.queries) == 1
    q = ds.queries[0]
    assert (q.image, q.pid, q.box.tolist()) == ("s3.jpg", 7, [10, 10, 30, 60])
    assert sorted(ds.cuhk_protocols) == [2, 3]
    g3 = ds.cuhk_protocols[3][0]
    assert [name for name, _ in g3] == ["s4.jpg", "s6.jpg", "s5.jpg"]
    assert g3[0][1].tolist() == [12, 8, 32, 58] and g3[1][1] is None and g3[2][1] is None
    assert [name for name, _ in ds.cuhk_protocols[2][0]] == ["s4.jpg", "s5.jpg"]


def test_cuhk_single_identity_train_survives_squeeze(tmp_path: Path) -> None:
    make_cuhk(tmp_path, train=[person("p12", [("s2.jpg", (40, 5, 20, 40))])])
    ds = load_dataset(tmp_path, "auto")
    assert ds.image("s2.jpg").pids.tolist() == [UNLABELED_PID, 12]
    assert ds.image("s1.jpg").pids.tolist() == [UNLABELED_PID, UNLABELED_PID]


def test_cuhk_missing_variable_and_unknown_image_are_one_line_errors(tmp_path: Path) -> None:
    root = make_cuhk(tmp_path)
    scipy.io.savemat(root / "annotation" / "pool.mat", {"names": cell(CUHK_TEST)})
    with pytest.raises(PsearchError, match=r"pool\.mat: variable 'pool' missing"):
        load_dataset(root)
    scipy.io.savemat(root / "annotation" / "pool.mat", {"pool": cell([*CUHK_TEST, "s99.jpg"])})
    with pytest.raises(
        PsearchError, match=r"pool\.mat: test image 's99.jpg' is not in Images\.mat"
    ):
        load_dataset(root)


def test_cuhk_query_naming_unknown_image(tmp_path: Path) -> None:
    root = make_cuhk(tmp_path)
    path = root / "annotation" / "test" / "train_test" / "TestG2.mat"
    scipy.io.savemat(
        path, {"TestG2": make_testg([("s42.jpg", (1, 1, 5, 5), "p7", [("s4.jpg", None)])])}
    )
    with pytest.raises(PsearchError, match=r"TestG2\.mat: query p7: unknown image 's42.jpg'"):
        load_dataset(root)


def test_cuhk_missing_image_file_is_reported(tmp_path: Path) -> None:
    root = make_cuhk(tmp_path)
    (root / "Image" / "SSM" / "s4.jpg").unlink()
    with pytest.raises(
        PsearchError, match=r"1 of 6 images listed in Images\.mat are missing \(s4\.jpg\)"
    ):
        load_dataset(root)


def test_cuhk_larger_protocol_must_list_same_queries(tmp_path: Path) -> None:
    root = make_cuhk(tmp_path)
    path = root / "annotation" / "test" / "train_test" / "TestG3.mat"
    scipy.io.savemat(
        path, {"TestG3": make_testg([("s3.jpg", (40, 10, 20, 50), "p7", [("s4.jpg", None)])])}
    )
    ds = load_dataset(root)
    with pytest.raises(PsearchError, match=r"TestG3\.mat: query 1 .* differs"):
        ds.cuhk_protocols[3]


# --- a small PRW tree ------------------------------------------------------------------------

PRW_FRAMES = {  # name without .jpg -> (variable, rows [id x y w h])
    "c1s1_000001": ("box_new", [[1, 10, 20, 30, 40], [-2, -5, 4, 20, 30]]),
    "c2s1_000002": ("anno_file", [[2, 0, 0, 10, 0], [1, 1.5, 2.5, 10, 20]]),  # first has h = 0
    "c1s2_000003": ("anno_previous", [[3, 5, 5, 20, 40], [-2, 30, -3, 10, 20]]),
    "c3s1_000004": ("box_new", [[3, 8, 9, 20, 40]]),
    "c6s2_000005": ("box_new", np.zeros((0, 5))),
}
PRW_TRAIN = ["c1s1_000001", "c2s1_000002"]
PRW_TEST = ["c1s2_000003", "c3s1_000004", "c6s2_000005"]


def make_prw(root: Path, query_lines: list[str] | None = None) -> Path:
    (root / "annotations").mkdir(parents=True)
    for name, (variable, rows) in PRW_FRAMES.items():
        scipy.io.savemat(
            root / "annotations" / f"{name}.jpg.mat", {variable: np.asarray(rows, dtype=np.float64)}
        )
        write_jpg(root / "frames" / f"{name}.jpg")
    scipy.io.savemat(root / "frame_train.mat", {"img_index_train": cell(PRW_TRAIN)})
    scipy.io.savemat(root / "frame_test.mat", {"img_index_test": cell(PRW_TEST)})
    lines = query_lines or ["3 5.0 5.0 20.0 40.0 c1s2_000003", "3 8 9 20 40 c3s1_000004"]
    (root / "query_info.txt").write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    return root


def test_prw_boxes_ids_and_cameras(tmp_path: Path) -> None:
    notes: list[str] = []
    ds = load_dataset(make_prw(tmp_path), "prw", notes)
    assert [r.name for r in ds.train] == ["c1s1_000001.jpg", "c2s1_000002.jpg"]
    assert [r.name for r in ds.gallery] == ["c1s2_000003.jpg", "c3s1_000004.jpg", "c6s2_000005.jpg"]
    assert [r.camera for r in (*ds.train, *ds.gallery)] == [1, 2, 1, 3, 6]
    f1 = ds.image("c1s1_000001.jpg")  # box_new; x = -5 clipped to 0 before adding w
    np.testing.assert_array_equal(f1.boxes, [[10, 20, 40, 60], [0, 4, 20, 34]])
    assert f1.pids.tolist() == [1, UNLABELED_PID]
    f2 = ds.image("c2s1_000002.jpg")  # anno_file; the h = 0 box is skipped
    np.testing.assert_array_equal(f2.boxes, [[1, 2, 11, 22]])  # truncated, as SeqNet does
    assert f2.pids.tolist() == [1]
    boxes = np.concatenate([r.boxes for r in (*ds.train, *ds.gallery)])
    assert np.array_equal(boxes, np.trunc(boxes))  # the reference convention: integer corners
    exact = load_dataset(tmp_path, "prw", [], prw_boxes="exact")
    np.testing.assert_array_equal(exact.image("c2s1_000002.jpg").boxes, [[1.5, 2.5, 11.5, 22.5]])
    f3 = ds.image("c1s2_000003.jpg")  # anno_previous
    np.testing.assert_array_equal(f3.boxes, [[5, 5, 25, 45], [30, 0, 40, 20]])
    assert f3.pids.tolist() == [3, UNLABELED_PID]
    assert ds.image("c6s2_000005.jpg").boxes.shape == (0, 4)
    assert any("skipped 1 boxes" in n for n in notes) and any("clipped 2 boxes" in n for n in notes)


def test_prw_queries_from_crlf_file(tmp_path: Path) -> None:
    ds = load_dataset(
        make_prw(tmp_path, ["3 5.5 -2.0 20.0 40.0 c1s2_000003", "", "3 8 9 20 40 c3s1_000004"])
    )
    assert [(q.image, q.pid, q.camera) for q in ds.queries] == [
        ("c1s2_000003.jpg", 3, 1),
        ("c3s1_000004.jpg", 3, 3),
    ]
    # Reference order: corners (5.5, -2, 25.5, 38), truncated, then clipped to 0.
    np.testing.assert_array_equal(ds.queries[0].box, [5, 0, 25, 38])
    assert ds.cuhk_protocols == {}
    exact = load_dataset(tmp_path, "prw", [], prw_boxes="exact")  # clipped first, fractional
    np.testing.assert_array_equal(exact.queries[0].box, [5.5, 0, 25.5, 40])
    with pytest.raises(PsearchError, match="PRW boxes 'round'"):
        load_dataset(tmp_path, "prw", [], prw_boxes="round")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "3 5 5 20 c1s2_000003",
            r"query_info\.txt: line 1: expected '<id> <x> <y> <w> <h> <frame>', got 5",
        ),
        ("x 5 5 20 40 c1s2_000003", r"query_info\.txt: line 1: id must be an integer"),
        ("3 5 5 20 40 c9s9_000009", r"line 1: query frame 'c9s9_000009.jpg' is not a known frame"),
        ("3 5 5 20 40 c1s1_000001", r"line 1: query frame 'c1s1_000001.jpg' is a training frame"),
        ("3 5 5 0 40 c1s2_000003", r"line 1: query box has zero width"),
    ],
)
def test_prw_malformed_query_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(PsearchError, match=message):
        load_dataset(make_prw(tmp_path, [line]))


def test_prw_annotation_without_box_variable(tmp_path: Path) -> None:
    root = make_prw(tmp_path)
    scipy.io.savemat(root / "annotations" / "c3s1_000004.jpg.mat", {"boxes": np.zeros((1, 5))})
    with pytest.raises(
        PsearchError, match=r"c3s1_000004\.jpg\.mat: none of the variables box_new, anno_file"
    ):
        load_dataset(root)
    scipy.io.savemat(root / "annotations" / "c3s1_000004.jpg.mat", {"box_new": np.zeros((2, 4))})
    with pytest.raises(PsearchError, match=r"c3s1_000004\.jpg\.mat: box_new must be a K x 5"):
        load_dataset(root)


# --- the folder format -----------------------------------------------------------------------


def make_folder(root: Path, annotations: dict) -> Path:
    for image in annotations["images"]:
        write_jpg(root / annotations.get("image_dir", ".") / image["file"])
    (root / "annotations.json").write_text(json.dumps(annotations))
    return root


FOLDER = {
    "image_dir": "images",
    "images": [
        {
            "file": "cam1/a.jpg",
            "split": "train",
            "camera": 1,
            "boxes": [[1, 2, 11, 22], [5, 5, 5, 9]],
            "pids": [4, -1],
        },
        {
            "file": "cam1/b.jpg",
            "split": "test",
            "camera": 1,
            "boxes": [[0, 0, 10, 20], [3, 3, 9, 9]],
            "pids": [8, 5],
        },
        {
            "file": "cam2/c.jpg",
            "split": "test",
            "camera": 2,
            "boxes": [[2, 2, 12, 22], [4, 4, 8, 8]],
            "pids": [5, 8],
        },
        {"file": "cam2/d.jpg", "split": "test", "camera": 2, "boxes": [[1, 1, 7, 7]], "pids": [9]},
    ],
}


def test_folder_records_and_derived_queries(tmp_path: Path) -> None:
    notes: list[str] = []
    ds = load_dataset(make_folder(tmp_path, FOLDER), "auto", notes)
    assert detect_format(tmp_path) == "folder" and ds.name == tmp_path.name
    a = ds.image("cam1/a.jpg")  # the zero-width box [5, 5, 5, 9] is skipped
    assert (a.split, a.camera, a.boxes.tolist(), a.pids.tolist()) == (
        "train",
        1,
        [[1, 2, 11, 22]],
        [4],
    )
    assert a.path == tmp_path / "images" / "cam1" / "a.jpg"
    assert [r.name for r in ds.gallery] == ["cam1/b.jpg", "cam2/c.jpg", "cam2/d.jpg"]
    # pid 5 and 8 are in two test images, pid 9 in one: queries for 5 then 8, first appearances
    assert [(q.pid, q.image, q.box.tolist(), q.camera) for q in ds.queries] == [
        (5, "cam1/b.jpg", [3, 3, 9, 9], 1),
        (8, "cam1/b.jpg", [0, 0, 10, 20], 1),
    ]
    assert any("skipped 1 boxes" in n for n in notes)


def test_folder_explicit_queries_and_errors(tmp_path: Path) -> None:
    data = {**FOLDER, "queries": [{"image": "cam2/c.jpg", "box": [2, 2, 12, 22], "pid": 5}]}
    ds = load_dataset(make_folder(tmp_path, data))
    assert [(q.image, q.pid, q.camera) for q in ds.queries] == [("cam2/c.jpg", 5, 2)]
    data["queries"] = [{"image": "cam9/z.jpg", "box": [2, 2, 12, 22], "pid": 5}]
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(
        PsearchError, match=r"annotations\.json: queries\[0\]: unknown image 'cam9/z.jpg'"
    ):
        load_dataset(tmp_path)
    (tmp_path / "annotations.json").write_text('{"images": [')
    with pytest.raises(PsearchError, match=r"annotations\.json: invalid JSON at line 1"):
        load_dataset(tmp_path)


def test_folder_csv(tmp_path: Path) -> None:
    (tmp_path / "annotations.csv").write_text(
        "file,split,camera,x1,y1,x2,y2,pid\n"
        "a.jpg,train,1,1,2,11,22,4\n"
        "b.jpg,test,2,0,0,10,20,8\n"
        "a.jpg,train,1,5,5,15,25,-1\n"
        "e.jpg,test,3,,,,,\n"
    )
    (tmp_path / "queries.csv").write_text("image,x1,y1,x2,y2,pid\nb.jpg,0,0,10,20,8\n")
    for name in ("a.jpg", "b.jpg", "e.jpg"):
        write_jpg(tmp_path / name)
    ds = load_dataset(tmp_path, "folder")
    assert ds.image("a.jpg").boxes.tolist() == [[1, 2, 11, 22], [5, 5, 15, 25]]
    assert ds.image("a.jpg").pids.tolist() == [4, -1]
    assert ds.image("e.jpg").boxes.shape == (0, 4) and ds.image("e.jpg").camera == 3
    assert [(q.image, q.pid) for q in ds.queries] == [("b.jpg", 8)]


def test_cuhk_to_folder_round_trip_keeps_everything(tmp_path: Path) -> None:
    cuhk = load_dataset(make_cuhk(tmp_path / "cuhk"))
    write_folder(cuhk, tmp_path / "out")
    back = load_dataset(tmp_path / "out")
    assert [(r.name, r.split) for r in (*back.train, *back.gallery)] == [
        (r.name, r.split) for r in (*cuhk.train, *cuhk.gallery)
    ]
    for r in (*cuhk.train, *cuhk.gallery):
        np.testing.assert_array_equal(back.image(r.name).boxes, r.boxes)
        np.testing.assert_array_equal(back.image(r.name).pids, r.pids)
    assert [(q.image, q.pid, q.box.tolist()) for q in back.queries] == [
        (q.image, q.pid, q.box.tolist()) for q in cuhk.queries
    ]
    assert sorted(back.cuhk_protocols) == [2, 3]
    for n in (2, 3):
        for got, want in zip(back.cuhk_protocols[n][0], cuhk.cuhk_protocols[n][0], strict=True):
            assert got[0] == want[0] and (got[1] is None) == (want[1] is None)
    with pytest.raises(PsearchError, match="not empty"):
        write_folder(cuhk, tmp_path / "out")


def test_unknown_root(tmp_path: Path) -> None:
    with pytest.raises(PsearchError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(PsearchError, match="not a known dataset"):
        load_dataset(tmp_path)
