"""Task metrics: YOLOv8 decode + NMS, mAP against reference boxes, mask IoU, Wilson intervals."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.check.tasks import parse_task, task_metrics
from deployer.check.metrics import wilson_interval
from deployer.check.tasks.classification import classification
from deployer.check.tasks.dense import mask_iou
from deployer.check.tasks.detection import Detections, box_iou, decode_yolov8, mean_average_precision
from deployer.errors import DeployerError


def _head(boxes: list[tuple[float, float, float, float, int, float]], num_classes: int = 3, anchors: int = 50):
    """A YOLOv8-style (4 + C) x anchors head with the given (cx, cy, w, h, class, score) rows."""
    out = np.zeros((4 + num_classes, anchors), np.float32)
    out[:4] = 10.0
    for i, (cx, cy, w, h, c, s) in enumerate(boxes):
        out[:4, i] = (cx, cy, w, h)
        out[4 + c, i] = s
    return out


def test_decode_thresholds_and_suppresses_per_class():
    head = _head([(50, 50, 20, 20, 0, 0.9), (51, 50, 20, 20, 0, 0.8),     # duplicate of the first
                  (51, 50, 20, 20, 1, 0.7),                               # same place, other class
                  (150, 150, 10, 10, 2, 0.2)])                            # below conf
    det = decode_yolov8(head, 3, conf=0.25, iou=0.45)
    assert len(det) == 2
    assert sorted(det.classes.tolist()) == [0, 1]
    np.testing.assert_allclose(det.boxes[det.classes == 0][0], [40, 40, 60, 60])
    agnostic = decode_yolov8(head, 3, conf=0.25, iou=0.45, class_agnostic=True)
    assert len(agnostic) == 1 and agnostic.scores[0] == pytest.approx(0.9)
    # transposed (anchors x (4 + C)) heads decode the same
    assert len(decode_yolov8(head.T, 3)) == 2


def test_box_iou_and_letterbox_undo():
    assert box_iou([0, 0, 10, 10], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])[0].tolist() == \
        pytest.approx([1.0, 1 / 3, 0.0])
    det = Detections(np.array([[10, 20, 30, 40]], np.float32), np.array([0.5], np.float32), np.array([0]))
    np.testing.assert_allclose(det.to_image(0.5, size=(50, 70)).boxes, [[20, 40, 50, 70]])


def test_map_perfect_shifted_and_missing():
    ref = [Detections(np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([0.9, 0.8], np.float32),
                      np.array([0, 1]))]
    same = mean_average_precision(ref, ref)
    assert same.map50 == pytest.approx(1.0) and same.map == pytest.approx(1.0)
    # class 1 box shifted by 4 px out of 20: IoU 2/3 counts at 0.5 to 0.65 (4 of 10 thresholds)
    shifted = [Detections(np.array([[0, 0, 10, 10], [24, 20, 44, 40]], np.float32), ref[0].scores, ref[0].classes)]
    res = mean_average_precision(ref, shifted)
    assert res.map50 == pytest.approx(1.0)
    assert res.per_class[1]["ap"] == pytest.approx(0.4)
    assert res.map < 1.0
    missing = [Detections(ref[0].boxes[:1], ref[0].scores[:1], ref[0].classes[:1])]
    assert mean_average_precision(ref, missing).map50 == pytest.approx(0.5)
    # a confident false positive ranked first halves class 0's precision at full recall
    fp = [Detections(np.array([[60, 60, 70, 70], [0, 0, 10, 10]], np.float32), np.array([0.95, 0.9], np.float32),
                     np.array([0, 0]))]
    assert mean_average_precision(ref[:1], fp).per_class[0]["ap50"] == pytest.approx(0.5, abs=0.01)
    assert mean_average_precision([Detections.empty()], [Detections.empty()]).map50 is None


def test_task_metrics_detection_gate_names():
    ref = {"out0": _head([(50, 50, 20, 20, 0, 0.9), (120, 80, 30, 40, 2, 0.6)])}
    close = {"out0": ref["out0"] + np.float32(0.3) * (np.arange(ref["out0"].size).reshape(ref["out0"].shape) % 3 - 1)
             * (np.arange(7)[:, None] < 4)}
    broken = {"out0": ref["out0"].copy()}
    broken["out0"][0, :2] += 15           # boxes moved by most of their width
    spec = parse_task({"type": "detection", "num_classes": 3})
    good = task_metrics(spec, [ref], [close])
    bad = task_metrics(spec, [ref], [broken])
    assert good["map50"] == pytest.approx(1.0) and good["map50_95"] > 0.8
    assert bad["map50"] == pytest.approx(0.0)


def test_mask_iou():
    a = np.zeros((10, 10), np.float32)
    a[2:6, 2:6] = 0.9
    b = a.copy()
    b[2:6, 6:8] = 0.8            # 8 more pixels: 16 / 24
    res = mask_iou([a, np.zeros_like(a)], [b, np.zeros_like(a)], 0.3)
    assert res.mask_iou == pytest.approx(16 / 24) and res.mask_iou_min == pytest.approx(16 / 24)
    assert mask_iou([np.zeros((3, 3))], [np.zeros((3, 3))]).mask_iou is None
    spec = parse_task({"type": "dense", "threshold": 0.5})
    assert task_metrics(spec, [{"p": a}], [{"p": a * 0.5}])["mask_iou"] == 0.0


def test_classification_interval_and_labels():
    lo, hi = wilson_interval(19, 20)
    assert lo == pytest.approx(0.764, abs=1e-3) and hi == pytest.approx(0.991, abs=1e-3)
    lo_big, _ = wilson_interval(950, 1000)
    assert lo_big > lo
    refs = [np.eye(10)[i % 10] for i in range(20)]
    tests = [r.copy() for r in refs]
    tests[0] = np.eye(10)[5]
    res = classification(refs, tests, labels=[i % 10 for i in range(20)])
    assert res.top1_agreement == pytest.approx(0.95) and res.accuracy_int8 == pytest.approx(0.95)
    assert res.accuracy_fp32 == 1.0 and res.top5_agreement == 1.0


@pytest.mark.parametrize("raw, msg", [({"type": "segmentation"}, "unknown task"), ({"kind": "dense"}, "unknown key"),
                                      ({"type": "detection", "conf": 2}, "between 0 and 1"), (3, "expected a task"),
                                      # these passed and ended as an internal error once outputs were decoded
                                      ({"type": "detection", "num_classes": 0}, r"task.num_classes: must be >= 1"),
                                      ({"type": "detection", "num_classes": 2.7}, r"task.num_classes: expected an int"),
                                      ({"type": "detection", "num_classes": True}, r"task.num_classes: expected an int"),
                                      ({"type": "detection", "class_names": "person"}, r"task.class_names: expected a"),
                                      ({"type": "detection", "class_names": ["a"], "num_classes": 2}, "but num_classes"),
                                      ({"type": "dense", "threshold": float("nan")}, r"task.threshold: expected a fin"),
                                      ({"type": "dense", "output": ["out0"]}, r"task.output: expected a non-empty")])
def test_parse_task_rejects(raw, msg):
    with pytest.raises(DeployerError, match=msg):
        parse_task(raw, "profiles/x.yaml: task")


def test_profile_declares_task_and_refinement(tmp_path):
    from deployer.check.gates import parse_gate
    from deployer.profile import load_profile

    for name in ("m.param", "m.bin"):
        (tmp_path / name).write_text("")
    (tmp_path / "calib").mkdir()
    text = ("model: {param: m.param, bin: m.bin}\ninputs: [{shape: [320, 320], resize: letterbox}]\n"
            "calibration: {images: calib}\ntask: {type: detection, num_classes: 18, conf: 0.3}\n"
            "quantize: {refine: [adaround]}\ngate: [map50>=0.95]\nout: out\n")
    (tmp_path / "p.yaml").write_text(text)
    prof = load_profile(tmp_path / "p.yaml")
    assert prof.task.type == "detection" and prof.task.num_classes == 18 and prof.task.conf == 0.3
    assert prof.quantize.refine == ["adaround"]
    assert parse_gate("mask_iou>=0.9").metric == "mask_iou"
    (tmp_path / "p.yaml").write_text(text.replace("[adaround]", "[adaround, rounding]"))
    with pytest.raises(DeployerError, match=r"p.yaml: quantize.refine: unknown technique 'rounding'"):
        load_profile(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text(text.replace("type: detection", "type: boxes"))
    with pytest.raises(DeployerError, match=r"p.yaml: task.type: unknown task 'boxes'"):
        load_profile(tmp_path / "p.yaml")


def test_task_gate_without_task_is_a_clear_error():
    from deployer.check.gates import evaluate_gates, parse_gates

    with pytest.raises(DeployerError, match="map50 is a detection metric"):
        evaluate_gates(parse_gates(["map50>=0.9"]), {}, None)
    res = evaluate_gates(parse_gates(["map50>=0.9"]), {}, {"map50": 0.85})
    assert not res[0].passed and res[0].observed == {"task": 0.85}


def test_boxes_are_drawn_side_by_side(tmp_path):
    from PIL import Image

    from examples.yolo import draw_panels, letterbox_scale

    img = np.full((60, 80, 3), 200, np.uint8)
    det = Detections(np.array([[10, 10, 40, 30]], np.float32), np.array([0.9], np.float32), np.array([1]))
    png = draw_panels(img, [("fp32", det), ("int8", Detections.empty())], tmp_path / "b.png")
    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB"))
    assert px.shape == (82, 160, 3)
    assert (px[22 + 10, 10:40] != 200).any()          # a box edge in the left panel
    assert (px[22:, 80:] == 200).all()                # right panel: no box
    assert letterbox_scale((640, 480), (320, 320)) == 0.5


def test_task_that_does_not_fit_the_model_is_one_line_naming_the_field():
    """A detection task on a model without a YOLOv8 head used to be an IndexError (exit 4); a dense
    threshold above every fp32 value gave empty masks and a meaningless mask IoU."""
    from deployer.check.tasks import check_task_outputs

    logits = [{"out0": np.array([0.2, 0.8], np.float32)}]
    with pytest.raises(DeployerError, match=r"^p.yaml: task.output: output 'out0' has shape \[2\], not a YOLOv8 head"):
        check_task_outputs(parse_task({"type": "detection", "num_classes": 18}), logits, "p.yaml: task")
    with pytest.raises(DeployerError, match=r"^task.output: output 'out0' has shape \[2\]"):
        task_metrics(parse_task({"type": "detection"}), logits, logits)
    head = [{"out0": _head([(50, 50, 20, 20, 0, 0.9)])}]             # 7 x anchors: 3 classes
    with pytest.raises(DeployerError, match=r"task.num_classes: output 'out0' has shape \[7, \d+\], not a YOLOv8 "
                                            r"head of 22 x anchors"):
        check_task_outputs(parse_task({"type": "detection", "num_classes": 18}), head)
    assert check_task_outputs(parse_task({"type": "detection", "num_classes": 3}), head) == "out0"
    with pytest.raises(DeployerError, match=r"task.threshold: fp32's output 'out0' never exceeds 2 on the 1 eval "
                                            r"inputs \(its largest value is 0.8\)"):
        check_task_outputs(parse_task({"type": "dense", "threshold": 2}), logits)
