"""Per-technique part of the quantization benchmark (bench/bench_quantize.py --techniques).

For each model: calibrate once (deployer's Calibrator; tables for kl, ncnn's default, mse, and seq:
percentile's scales re-chosen per layer for the int8 network's output error, deployer.quant.seqcal),
then for every technique set (none, biascorr,
adaround, adaround+biascorr) refine the weights on the calibration inputs, write the int8 files,
load them in the stock ncnn wheel and score them against the true-fp32 model on the eval inputs,
with the task's own metric:

- classification: top-1 agreement with its 95 % Wilson interval, top-5 agreement, output cosine;
- detection (YOLOv8n): mAP@0.5 and mAP@0.5:0.95 of int8 boxes against fp32 boxes, cosine;
- dense (PP-OCR det): IoU of the probability maps thresholded at 0.3, cosine.

Eval inputs never take part in calibration or refinement. Views of one photo are correlated, so
an interval over views is narrower than the photos alone would justify.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from deployer.check.metrics import cosine, wilson_interval
from deployer.check.net import NcnnNet
from deployer.check.samples import load_samples
from deployer.check.tasks import TaskSpec, task_metrics
from deployer.profile import InputSpec
from examples import data, zoo

TECHNIQUE_SETS = ([], ["biascorr"], ["adaround"], ["adaround", "biascorr"])
TECH_MODELS = ("mobilenet_v2", "yolov8n", "mtcnn_onet", "ppocr_det")


@dataclass
class TechCase:
    model: zoo.ZooModel
    spec: InputSpec
    calib: list[Path]
    eval: list[Path]
    eval_name: str
    task: TaskSpec


def _spec(model: zoo.ZooModel) -> InputSpec:
    d = model.input_spec()
    return InputSpec(shape=tuple(d["shape"]), pixel=d["pixel"], mean=list(d["mean"]), norm=list(d["norm"]),
                     resize=d["resize"], pad_value=float(d["pad_value"] or 0.0))


def text_views(out_dir: Path, seed: int = 0) -> list[Path]:
    """Photos with text for a text detector: skimage's page and coffee, plus lines rendered with
    Pillow's built-in font onto crops of the bundled photos (real rendering, generated layout)."""
    import skimage.data

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    base = {n: np.asarray(getattr(skimage.data, n)()) for n in ("page", "coffee")}
    for name, img in base.items():
        img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        h, w = img.shape[:2]
        for k in range(6):
            if k == 0:
                view = img
            else:
                s = rng.uniform(0.6, 1.0)
                ch, cw = int(h * s), int(w * s)
                y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
                view = img[y:y + ch, x:x + cw]
            p = folder / f"{name}_{k}.png"
            Image.fromarray(np.ascontiguousarray(view)).save(p)
            files.append(p)
    photos = data.available_photos()
    words = ["deployer", "int8", "ncnn", "board", "quantize", "sensor 42", "OPEN 9-5", "EXIT", "Raspberry Pi",
             "calibration", "speed 30", "A72"]
    for k, name in enumerate(sorted(photos) * 2):
        img = Image.fromarray(photos[name]).convert("RGB").resize((320, 320))
        draw = ImageDraw.Draw(img)
        for line in range(int(rng.integers(2, 5))):
            text = " ".join(rng.choice(words, size=int(rng.integers(1, 4))))
            y = int(rng.integers(10, 290))
            x = int(rng.integers(5, 120))
            draw.rectangle([x - 3, y - 3, x + 8 * len(text), y + 14], fill=(255, 255, 255))
            draw.text((x, y), text, fill=(0, 0, 0), font_size=int(rng.integers(12, 20)))
        p = folder / f"rendered_{k:02d}_{name}.png"
        img.save(p)
        files.append(p)
    return files


def make_tech_case(name: str, work: Path) -> TechCase:
    model = zoo.build(name)
    root = zoo.cache_root() / "data"
    spec = _spec(model)
    if name == "mobilenet_v2":
        calib = data.calibration_photos(root / "calibration").files
        views = data.imagenet_views(root / "imagenet-views")
        return TechCase(model, spec, calib, views.files, "foolbox ImageNet views (20 photos x 6)",
                        TaskSpec("classification"))
    if name == "yolov8n":
        from examples import yolo

        calib = data.calibration_photos(root / "calibration").files
        views = yolo.detection_views(root / "yolo-eval")
        return TechCase(model, spec, calib, views.files, f"photos with people ({len(views.files)} views)",
                        TaskSpec("detection", num_classes=18))
    if name == "mtcnn_onet":
        calib = data.lfw_images(root / "lfw-calibration", "calibration").files
        held = data.lfw_images(root / "lfw-heldout", "heldout").files
        return TechCase(model, spec, calib, held, "lfw_subset held-out (150)", TaskSpec("classification", output="out0"))
    if name == "ppocr_det":
        calib = data.calibration_photos(root / "calibration").files
        views = text_views(work / "text-views")
        return TechCase(model, spec, calib, views, f"text photos ({len(views)}: page, coffee, rendered)",
                        TaskSpec("dense", threshold=0.3))
    raise SystemExit(f"bench: no technique case for {name!r}; choose from {', '.join(TECH_MODELS)}")


def _score(case: TechCase, ref: list[dict], test: list[dict]) -> dict[str, Any]:
    out = case.task.output or case.model.outputs[0]
    cat = lambda o: np.concatenate([o[b].reshape(-1) for b in case.model.outputs])  # noqa: E731
    cos = [cosine(cat(r), cat(t)) for r, t in zip(ref, test)]
    res: dict[str, Any] = {"cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos))}
    tm = task_metrics(case.task, [{out: r[out]} for r in ref], [{out: t[out]} for t in test])
    if case.task.type == "classification":
        agree = int(round(tm["top1_agreement"] * len(ref)))
        lo, hi = wilson_interval(agree, len(ref))
        res.update(top1_agreement=tm["top1_agreement"], top1_ci95=[round(lo, 4), round(hi, 4)],
                   top5_agreement=tm["top5_agreement"])
    elif case.task.type == "detection":
        res.update(map50=tm["map50"], map50_95=tm["map50_95"], reference_boxes=tm["detail"]["reference_boxes"])
    else:
        res.update(mask_iou=tm["mask_iou"], mask_iou_min=tm["mask_iou_min"],
                   reference_pixels=tm["detail"]["reference_pixels"])
    return res


def bench_techniques(name: str, work: Path, threads: int, methods: tuple[str, ...] = ("kl", "mse", "seq"),
                     log: Any = print) -> dict:
    from deployer.ncnn.model import NcnnModel
    from deployer.quant.calibration import Calibrator
    from deployer.quant.int8 import quantize_model
    from deployer.quant.pipeline import Split, calibration_inputs
    from deployer.quant.refine import refine
    from deployer.quant.weights import load_model

    case = make_tech_case(name, work)
    m = case.model
    inputs = [m.inputs[0]]
    evals = load_samples([case.eval], [case.spec], inputs)
    calib = load_samples([case.calib], [case.spec], inputs)
    ref_net = NcnnNet(m.param, m.bin, threads=threads)
    ref = [ref_net.run(s, m.outputs) for s in evals]
    del ref_net
    fp32 = NcnnModel.load(m.param, m.bin)
    fp32_bytes = m.bin.stat().st_size
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tech-", dir=work) as tmp:
        pre_specs, input_set = calibration_inputs(Split([case.calib], [[]]), [case.spec], Path(tmp))
        calibrator = Calibrator(load_model(m.param, m.bin), pre_specs, input_set, threads=threads)
        for method in methods:
            table = calibrator.table(method)
            for tech in TECHNIQUE_SETS:
                t0 = time.perf_counter()
                refined = refine(fp32, m.param, m.bin, table, calib, list(tech), threads=threads)
                refine_s = time.perf_counter() - t0
                q, _ = quantize_model(refined.apply(), table)
                param, binf = Path(tmp) / "q.param", Path(tmp) / "q.bin"
                q.save(param, binf)
                net = NcnnNet(param, binf, threads=threads)          # stock ncnn wheel loads it
                test = [net.run(s, m.outputs) for s in evals]
                del net
                row = {"method": method, "techniques": "+".join(tech) or "none", "refine_seconds": round(refine_s, 2),
                       "bin_ratio": round(fp32_bytes / binf.stat().st_size, 3),
                       "rounding_improved_layers": refined.report.rounding_improved, **_score(case, ref, test)}
                rows.append(row)
                log(f"  {name:<12} {method:<4} {row['techniques']:<18} " +
                    " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                             if k not in ("method", "techniques")))
    return {"model": name, "task": case.task.type, "eval": case.eval_name, "eval_count": len(evals),
            "calibration_count": len(calib), "rows": rows}
