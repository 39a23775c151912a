"""YOLOv8n as a detector: mAP of int8 boxes vs fp32 boxes as a gate, the preprocessing failure mode
users hit with ncnn int8 YOLOv8, and boxes from an emulated Raspberry Pi drawn on the photo."""

from __future__ import annotations

import json

import pytest

from deployer.check.net import NcnnNet
from deployer.check.samples import load_samples
from deployer.check.tasks import parse_task, task_metrics
from deployer.profile import Override, load_profile
from deployer.quant.pipeline import run_quantize
from tests.fixtures.models import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def yolo_views(tmp_path_factory):
    from examples import yolo

    return yolo.detection_views(tmp_path_factory.mktemp("yolo-eval"), per_photo=4)


@pytest.fixture(scope="module")
def yolo_quantized(tmp_path_factory, yolov8n, calib_photos, yolo_views):
    out = tmp_path_factory.mktemp("yolo-int8")
    prof = load_profile(ROOT / "profiles" / "yolov8n.yaml", [
        Override("model.param", str(yolov8n.param), "--param"), Override("model.bin", str(yolov8n.bin), "--bin"),
        Override("calibration.images", [str(calib_photos.list_file)], "--calib"),
        Override("calibration.count", 24, "--count"),
        Override("eval.images", [str(yolo_views.list_file)], "--eval"),
        Override("quantize.candidates", ["kl", "mse"], "--candidates"),
        Override("quantize.mixed", False, "--no-mixed"), Override("quantize.refine", "none", "--refine"),
        Override("out", str(out), "--out")])
    return prof, run_quantize(prof)


def _heads(param, bin_, samples):
    net = NcnnNet(param, bin_, threads=2)
    return [net.run(s, ["out0"]) for s in samples]


def test_detection_task_metrics_gate_the_int8_detector(yolo_quantized):
    prof, result = yolo_quantized
    report = json.loads(result.paths.report.read_text())
    task = report["task"]
    assert task["detail"]["reference_boxes"] >= 10          # the eval photos really have boxes to find
    assert task["map50"] >= 0.85, task
    assert 0 < task["map50_95"] <= task["map50"]
    gate = next(g for g in report["gate"]["results"] if g["gate"].startswith("map50>="))
    threshold = float(gate["gate"].split(">=")[1])
    assert gate["observed"] == {"task": task["map50"]}
    assert gate["passed"] == (task["map50"] >= threshold)
    # and whether the evidence settles it: the interval wholly on one side of the threshold, or not
    lo, hi = task["intervals"]["map50"]
    assert gate["intervals"] == {"task": [lo, hi]} and gate["settled"] == ((lo >= threshold) == (hi >= threshold))
    assert task["detail"]["per_class"]          # per-class AP, by class name
    # with their uncertainty: bootstrap intervals over the 9 photos (the profile's eval.group), not the 36 views
    iv = task["intervals"]
    assert iv["over"] == 9 and iv["unit"] == "photos (eval.group)" and iv["draws"] >= 900
    for name in ("map50", "map50_95"):
        lo, hi = iv[name]
        assert 0 <= lo <= task[name] <= hi <= 1 and hi - lo > 0, (name, task[name], iv[name])


def test_preprocessing_mismatch_is_the_failure_mode_deployer_avoids(yolo_quantized, yolov8n, calib_photos,
                                                                   yolo_views, tmp_path):
    """What ncnn users did (Tencent/ncnn#5916): ncnn2table with its ImageNet-style stretch resize and
    mean/norm while the app feeds letterboxed RGB/255. The int8 model is then calibrated for inputs
    it never sees and its boxes fall apart; deployer calibrates with the profile's own letterbox."""
    from deployer.inputs.spec import InputSpec
    from deployer.ncnn.model import NcnnModel
    from deployer.quant.calibration import Calibrator, InputSet
    from deployer.quant.int8 import quantize_model
    from deployer.quant.weights import load_model

    prof, result = yolo_quantized
    files = [str(p) for p in calib_photos.files[:24]]
    naive = InputSpec(shape=(320, 320), pixel="RGB", mean=(123.675, 116.28, 103.53),
                      norm=(0.017125, 0.017507, 0.017429))
    table = Calibrator(load_model(yolov8n.param, yolov8n.bin), [naive], InputSet([files], files), threads=2).table("kl")
    q, _ = quantize_model(NcnnModel.load(yolov8n.param, yolov8n.bin), table)
    q.save(tmp_path / "naive.param", tmp_path / "naive.bin")

    samples = load_samples([yolo_views.files], prof.inputs, ["in0"])    # the letterbox the app uses
    ref = _heads(yolov8n.param, yolov8n.bin, samples)
    spec = parse_task({"type": "detection", "num_classes": 18})
    bad = task_metrics(spec, ref, _heads(tmp_path / "naive.param", tmp_path / "naive.bin", samples))
    good = task_metrics(spec, ref, _heads(result.paths.param, result.paths.bin, samples))
    assert good["map50"] >= 0.85
    assert bad["map50"] < good["map50"] - 0.15, (bad["map50"], good["map50"])


@pytest.mark.boards
def test_boxes_from_an_emulated_pi_are_drawn_next_to_fp32(yolo_quantized, yolo_views, sim_boards, tmp_path):
    """The seed's use case: int8 YOLOv8n on a (emulated) Raspberry Pi 4, boxes decoded on the host."""
    from PIL import Image

    from examples import yolo
    from tests.fixtures.runner import require_cached_wheels

    require_cached_wheels("aarch64")
    prof, result = yolo_quantized
    image = next(p for p in yolo_views.files if p.name == "astronaut_0.png")
    res = yolo.board_boxes(prof, sim_boards.targets, sim_boards.pi4, image)
    assert res.facts["machine"] == "aarch64"
    # the board ran the very int8 files on the very tensor the host would: the same head up to ARM's
    # own int8/float kernels (not bit-identical for this model), and the same boxes
    from deployer.check.metrics import cosine
    from deployer.check.tasks.detection import box_iou, decode_yolov8
    from deployer.inputs.tensor import load_array

    host = NcnnNet(result.paths.param, result.paths.bin, threads=1).run({"in0": load_array(image, prof.inputs[0])},
                                                                       ["out0"])["out0"]
    assert res.board_output.shape == host.shape
    assert cosine(host, res.board_output) >= 0.999
    host_det, board_det = decode_yolov8(host, 18), decode_yolov8(res.board_output, 18)
    assert len(host_det) == len(board_det) and len(board_det)
    assert box_iou(host_det.boxes, board_det.boxes).max(1).min() >= 0.9
    # and its boxes are fp32's: the astronaut's face, same class, overlapping

    faces = [i for i, c in enumerate(res.fp32.classes) if yolo.YOLO_CLASSES[int(c)] == "FACE_FEMALE"]
    assert faces, res.to_dict()
    ref = res.fp32.boxes[faces[0]]
    same = res.int8.boxes[res.int8.classes == res.fp32.classes[faces[0]]]
    assert len(same) and box_iou(ref, same).max() >= 0.8, res.to_dict()
    png = yolo.draw_panels(res.image, [("fp32 (host)", res.fp32), ("int8 (sim-1)", res.int8)], tmp_path / "boxes.png")
    with Image.open(png) as im:
        assert im.size == (2 * res.image.shape[1], res.image.shape[0] + 22)
