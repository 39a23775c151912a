"""Letterbox detector through the README's YOLOv8n profile: int8 keeps fp32's detections."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.profile import Override, load_profile
from deployer.quant.pipeline import run_quantize
from tests.fixtures.models import ROOT


@pytest.mark.slow
def test_yolov8n_int8_keeps_the_face(tmp_path, yolov8n, calib_photos):
    import skimage.data

    from examples import yolo
    from examples.evaluate import _iou, detect

    views = yolo.detection_views(tmp_path / "eval", per_photo=2)

    prof = load_profile(ROOT / "profiles" / "yolov8n.yaml", [
        Override("model.param", str(yolov8n.param), "--param"), Override("model.bin", str(yolov8n.bin), "--bin"),
        Override("calibration.images", [str(calib_photos.list_file)], "--calib"),
        Override("calibration.count", 24, "--count"), Override("quantize.mixed", False, "--no-mixed"),
        Override("eval.images", [str(views.list_file)], "--eval"),
        Override("out", str(tmp_path / "out"), "--out"),
    ])
    result = run_quantize(prof)
    report = result.report
    assert report["sizes"]["ratio"] >= 3.0          # SiLU/concat heads keep some float work, weights still shrink
    assert report["heldout"]["outputs"]["out0"]["cosine"] >= 0.95

    astronaut = skimage.data.astronaut()
    ref = [d for d in detect(yolov8n, astronaut) if d.label == "FACE_FEMALE"]
    got = [d for d in detect(yolov8n, astronaut, result.paths.param, result.paths.bin) if d.label == "FACE_FEMALE"]
    assert ref and got
    iou = _iou(np.array(ref[0].box), np.array([got[0].box]))[0]
    assert iou >= 0.7, (ref[0], got[0])
    assert abs(got[0].score - ref[0].score) < 0.15
