"""The CLI starts light: listing commands, reading datasets and scoring results load no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

HEAVY = ("torch", "torchvision", "timm", "faiss")


def modules_after(argv: list[str]) -> tuple[int, set[str]]:
    """Run ``psearch argv`` in a fresh interpreter; (exit code, heavy modules it imported)."""
    code = ("import json, sys\nfrom psearch.cli.main import main\nstatus = 0\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    status = exc.code\n"
            "loaded = {m.split('.')[0] for m in sys.modules}\n"
            f"print('MODULES', json.dumps(sorted(loaded & set({HEAVY!r}))), file=sys.stderr)\n"
            "sys.exit(status)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("MODULES")][-1]
    return done.returncode, set(json.loads(line.removeprefix("MODULES ")))


def test_help_and_version_load_no_torch() -> None:
    assert modules_after(["--help"]) == (0, set())
    assert modules_after(["--version"]) == (0, set())
    assert modules_after(["detect", "--help"]) == (0, set())


def test_data_info_and_evaluate_load_no_torch(cuhk_world, tmp_path) -> None:
    assert modules_after(["data", "info", str(cuhk_world), "--json"]) == (0, set())
    from psearch.data import load_dataset
    from psearch.evaluation import SearchResults, save_results

    dataset = load_dataset(cuhk_world, "cuhk")
    names = [r.name for r in dataset.gallery]
    rng = np.random.default_rng(0)
    boxes = np.concatenate([r.boxes for r in dataset.gallery])
    feats = rng.normal(size=(len(boxes) + len(dataset.queries), 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    results = SearchResults(
        image_names=np.array(names),
        det_image=np.repeat(np.arange(len(names)), [len(r.boxes) for r in dataset.gallery]),
        boxes=boxes, scores=np.ones(len(boxes), np.float32),
        features=feats[:len(boxes)], query_features=feats[len(boxes):])
    save_results(tmp_path / "r.npz", results)
    code, heavy = modules_after(["evaluate", "--data", str(cuhk_world), "--results",
                                 str(tmp_path / "r.npz"), "--out", str(tmp_path / "e.json")])
    assert (code, heavy) == (0, set())
    assert json.loads((tmp_path / "e.json").read_text())  # the report was written
