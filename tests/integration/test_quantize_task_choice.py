"""`quantize` with method auto chooses by what the model is for: a detector's method by mAP of its
int8 boxes against fp32's, not by cosine over the raw head (issue 8). Kept small: 24 calibration
crops, 18 eval views, three methods, no mixed precision or refinement."""

from __future__ import annotations

import json

import pytest

from deployer.profile import Override, load_profile
from deployer.quant.choice import TIE
from deployer.quant.pipeline import run_quantize
from tests.fixtures.models import ROOT

# 20 s of CPU, 40-70 s wall on the shared 2-core machine: slow tier (the choice rule itself is
# covered quickly by tests/unit/test_method_score.py)
pytestmark = pytest.mark.slow


def test_detector_method_is_chosen_by_map_and_reported(tmp_path, yolov8n, calib_photos):
    from examples import yolo

    views = yolo.detection_views(tmp_path / "eval", per_photo=2)
    prof = load_profile(ROOT / "profiles" / "yolov8n.yaml", [
        Override("model.param", str(yolov8n.param), "--param"), Override("model.bin", str(yolov8n.bin), "--bin"),
        Override("calibration.images", [str(calib_photos.list_file)], "--calib"),
        Override("calibration.count", 24, "--count"),
        Override("eval.images", [str(views.list_file)], "--eval"),
        Override("quantize.method", "auto", "--method"),
        Override("quantize.candidates", ["kl", "percentile", "mse"], "--candidates"),
        Override("quantize.mixed", False, "--no-mixed"), Override("quantize.refine", "none", "--refine"),
        # a gate on the evidence: the lower end of mAP@0.5's bootstrap interval over the photos
        Override("gate", ["map50>=0.5", "map50_low>=0.3"], "--gate"),
        Override("out", str(tmp_path / "out"), "--out")])
    result = run_quantize(prof)
    report = json.loads(result.paths.report.read_text())        # what users read, not the in-memory dict
    rows = report["methods"]
    assert set(rows) == {"kl", "percentile", "mse"}
    for row in rows.values():
        task = row["task"]
        assert task["detail"]["images"] == len(views.files) and task["detail"]["reference_boxes"] >= 5
        assert 0 < task["map50_95"] <= task["map50"] <= 1
        # the score a detector is ranked on is its mAP, then mAP@0.5:0.95
        assert row["score"] == pytest.approx(task["map50"], abs=1e-6)
        assert row["score_by"] == {"map50": pytest.approx(task["map50"], abs=1e-6),
                                   "map50_95": pytest.approx(task["map50_95"], abs=1e-6)}
    assert report["method_choice"].startswith("map50, then map50_95")
    kl, mse = rows["kl"]["task"], rows["mse"]["task"]
    # on YOLOv8n kl clips the head's activations and loses boxes: mse keeps them
    assert mse["map50"] > kl["map50"] + TIE, (kl["map50"], mse["map50"])
    assert report["method"] == "mse"
    assert report["task"]["map50"] == pytest.approx(mse["map50"])
    # and the choice is not the raw head's: percentile has the best cosine but loses boxes
    cosine = {m: row["outputs"]["out0"]["cosine"] for m, row in rows.items()}
    assert max(cosine, key=cosine.get) == "percentile", cosine
    assert rows["percentile"]["task"]["map50"] < mse["map50"] - TIE
    # the stability of that choice is resampled on the same mAP (boxes matched once per image)
    st = report["method_stability"]
    photos = {f.name.rsplit("_", 1)[0] for f in views.files}       # the profile's eval.group: 2 views per photo
    assert st["chosen"] == "mse" and st["resamples"] == 200 and st["unit"] == "photos (eval.group)"
    assert st["units"] == st["leave_one_out"]["of"] == len(photos) == len(views.files) // 2
    assert sum(st["wins"].values()) == pytest.approx(1.0) and st["settled"] == (st["share"] >= 0.5)
    # map50_low is the lower end of the reported interval, and the gate judged that number
    low = next(g for g in report["gate"]["results"] if g["gate"] == "map50_low>=0.3")
    assert low["observed"]["task"] == report["task"]["map50_low"] == pytest.approx(report["task"]["intervals"]["map50"][0],
                                                                                  abs=1e-4)
    assert report["task"]["map50_low"] <= report["task"]["map50"] and low["passed"] == (report["task"]["map50_low"] >= 0.3)
