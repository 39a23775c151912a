"""Per-technique part of the quantization benchmark (bench/bench_quantize.py --techniques).

For each model: calibrate once (deployer's Calibrator; tables for kl, ncnn's default, mse, and seq:
percentile's scales re-chosen per layer for the int8 network's output error, deployer.quant.seqcal),
then for every technique set (none, biascorr,
adaround, adaround+biascorr, shift) refine the weights on the calibration inputs (shift: the
activation shift of deployer.quant.zeroshift on top of whatever weights), write the int8 files,
load them in the stock ncnn wheel and score them against the true-fp32 model on the eval inputs,
with the task's own metric:

- classification: top-1 agreement with its 95 % interval, top-5 agreement, output cosine;
- detection (YOLOv8n): mAP@0.5 and mAP@0.5:0.95 of int8 boxes against fp32 boxes, cosine;
- dense (PP-OCR det): IoU of the probability maps thresholded at 0.3, cosine.

Eval inputs never take part in calibration or refinement. Views of one photo are correlated: the
MobileNetV2 intervals are grouped by photo with the demo profile's `eval.group` (what `quantize`
and `check` report), the others count every input once (one view per LFW face, few text photos).

Classifiers also get a mixed-precision row per method (`--mixed-gate`, default top-1 agreement
>= 0.99, byte budget 10 % of the all-int8 .bin): deployer.quant.mixed.search with that gate and
budget on the eval inputs (which is what `quantize` decides mixed precision on), the set it keeps
or, if none passes within the budget, the best-scoring cheap set it tried, plus the smallest passing
set it found and that set's extra bytes. `extra_bytes` is always against the same method's
all-int8 .bin.

    python -m bench.bench_techniques --models mobilenet_v2 --methods percentile,seq
merges its rows into bench/results/quantize_techniques.json (rows with the same model, method and
techniques are replaced; others kept).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# `python bench/bench_techniques.py` (README, `make bench`) puts bench/ first on sys.path, not the
# repository root that holds examples/ and bench/ as packages
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from deployer.check.metrics import cosine  # noqa: E402
from deployer.check.net import NcnnNet  # noqa: E402
from deployer.check.samples import group_keys, load_samples  # noqa: E402
from deployer.check.tasks import TaskSpec, task_metrics  # noqa: E402
from deployer.inputs.spec import InputSpec  # noqa: E402
from examples import data, zoo  # noqa: E402

TECHNIQUE_SETS = ([], ["biascorr"], ["adaround"], ["adaround", "biascorr"], ["shift"])
TECH_MODELS = ("mobilenet_v2", "yolov8n", "mtcnn_onet", "ppocr_det")
MIXED_GATE = "top1_agreement>=0.99"
MIXED_BYTE_SHARE = 0.10          # issue 8's target: at most 10 % more weight bytes than all-int8


@dataclass
class TechCase:
    model: zoo.ZooModel
    spec: InputSpec
    calib: list[Path]
    eval: list[Path]
    eval_name: str
    task: TaskSpec
    groups: list[str] | None = None          # eval.group's key per eval input (agreement intervals)


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


def _demo_group_pattern() -> str:
    """The MobileNetV2 profile's eval.group: one home for which views belong to one photo."""
    import yaml

    profile = Path(__file__).resolve().parents[1] / "profiles" / "mobilenet_v2.yaml"
    return yaml.safe_load(profile.read_text())["eval"]["group"]


def make_tech_case(name: str, work: Path) -> TechCase:
    model = zoo.build(name)
    root = zoo.cache_root() / "data"
    spec = _spec(model)
    if name == "mobilenet_v2":
        calib = data.calibration_photos(root / "calibration").files
        views = data.imagenet_views(root / "imagenet-views")
        groups = group_keys(views.files, _demo_group_pattern())
        return TechCase(model, spec, calib, views.files, "foolbox ImageNet views (20 photos x 6)",
                        TaskSpec("classification"), groups)
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
    tm = task_metrics(case.task, [{out: r[out]} for r in ref], [{out: t[out]} for t in test], groups=case.groups)
    if case.task.type == "classification":
        lo, hi = tm["detail"]["top1_interval"]
        res.update(top1_agreement=tm["top1_agreement"], top1_ci95=[round(lo, 4), round(hi, 4)],
                   top1_ci95_over=len(set(case.groups)) if case.groups else len(ref),
                   top5_agreement=tm["top5_agreement"])
    elif case.task.type == "detection":
        res.update(map50=tm["map50"], map50_95=tm["map50_95"], reference_boxes=tm["detail"]["reference_boxes"])
    else:
        res.update(mask_iou=tm["mask_iou"], mask_iou_min=tm["mask_iou_min"],
                   reference_pixels=tm["detail"]["reference_pixels"])
    return res


def _mixed_row(case: TechCase, method: str, table: Any, fp32: Any, evals: list, ref: list[dict], threads: int,
               gate: str, folder: Path) -> dict[str, Any]:
    """Mixed precision on top of `method`'s table: the gate on the eval inputs, a byte budget."""
    from deployer.check.gates import parse_gates
    from deployer.quant.mixed import Evaluator, search

    ev = Evaluator(fp32, evals, ref, parse_gates([gate]), threads=threads, groups=case.groups)
    try:
        t0 = time.perf_counter()
        start = ev.evaluate(table)
        all_int8 = ev.bin_size(table, frozenset())
        budget = int(MIXED_BYTE_SHARE * all_int8)
        res = search(ev, table, frozenset(), start, max_fp32_layers=len(start.int8_layers), max_extra_bytes=budget)
        keep = res.keep_fp32 if res.passed else (res.best_in_budget or {}).get("keep_fp32", [])
        chosen = res.evaluation if res.passed else ev.evaluate(table, set(keep))
        q, _ = ev.build(table, set(keep))
        param, binf = folder / "mixed.param", folder / "mixed.bin"
        q.save(param, binf)
        net = NcnnNet(param, binf, threads=threads)                   # the files themselves, stock ncnn
        test = [net.run(s, case.model.outputs) for s in evals]
        del net
        extra = binf.stat().st_size - all_int8
        smallest = res.smallest_passing or []
        return {"method": method, "techniques": f"mixed ({gate}, <= {MIXED_BYTE_SHARE:.0%} bytes)",
                "refine_seconds": round(time.perf_counter() - t0, 2), "bin_ratio": None,
                "rounding_improved_layers": 0, "gate_passed": res.passed, "keep_fp32": keep,
                "extra_bytes": extra, "extra_bytes_share": round(extra / all_int8, 5),
                "score_check": round(chosen.score, 6), "reason": res.reason,
                "smallest_passing": smallest,
                "smallest_passing_extra_share": (round((ev.bin_size(table, set(smallest)) - all_int8) / all_int8, 4)
                                                 if smallest else None),
                "candidates_evaluated": res.candidates_evaluated, **_score(case, ref, test)}
    finally:
        ev.close()


def bench_techniques(name: str, work: Path, threads: int, methods: tuple[str, ...] = ("kl", "mse", "seq"),
                     log: Any = print, technique_sets: tuple[list[str], ...] = TECHNIQUE_SETS,
                     mixed_gate: str | None = MIXED_GATE, mixed_methods: tuple[str, ...] = ("seq",)) -> dict:
    """Rows per method x technique set; classifiers also a mixed-precision row for `mixed_methods`
    (one search costs about 90 candidate models on MobileNetV2, ~8 min on 2 loaded cores)."""
    from deployer.ncnn.model import NcnnModel
    from deployer.quant import zeroshift
    from deployer.quant.calibration import Calibrator, InputSet
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
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tech-", dir=work) as tmp:
        calibrator = Calibrator(load_model(m.param, m.bin), [case.spec], InputSet.from_lists([case.calib]),
                                threads=threads)
        for method in methods:
            table = calibrator.table(method)
            for tech in technique_sets:
                fractions = zeroshift.FRACTIONS if "shift" in tech else (None,)
                for fraction in fractions:
                    row = _technique_row(fp32, m, method, table, calib, evals, ref, case, tech, fraction, threads,
                                         Path(tmp))
                    rows.append(row)
                    _log_row(log, name, row)
            if mixed_gate and case.task.type == "classification" and method in mixed_methods:
                row = _mixed_row(case, method, table, fp32, evals, ref, threads, mixed_gate, Path(tmp))
                rows.append(row)
                _log_row(log, name, row)
    return {"model": name, "task": case.task.type, "eval": case.eval_name, "eval_count": len(evals),
            "calibration_count": len(calib), "rows": rows}


def _technique_row(fp32: Any, m: Any, method: str, table: Any, calib: list, evals: list, ref: list[dict], case: TechCase,
                   tech: list[str], fraction: float | None, threads: int, tmp: Path) -> dict[str, Any]:
    """One technique set on one method's table: refine, shift (at `fraction`), write, run in stock ncnn."""
    from deployer.quant import zeroshift
    from deployer.quant.int8 import quantize_model
    from deployer.quant.refine import refine

    t0 = time.perf_counter()
    refined = refine(fp32, m.param, m.bin, table, calib, [t for t in tech if t != "shift"], threads=threads)
    model, used_table, pad_codes, shifted = refined.apply(), table, {}, {}
    if fraction is not None:
        model, used_table, pad_codes, shifted = zeroshift.apply(model, table, zeroshift.pairs(fp32), frozenset(),
                                                                fraction)
    refine_s = time.perf_counter() - t0
    q, _ = quantize_model(model, used_table, pad_codes=pad_codes)
    param, binf = tmp / "q.param", tmp / "q.bin"
    q.save(param, binf)
    net = NcnnNet(param, binf, threads=threads)          # stock ncnn wheel loads it
    test = [net.run(s, m.outputs) for s in evals]
    del net
    label = "+".join(tech) or "none"
    if fraction is not None:
        label = label.replace("shift", f"shift({fraction:g})")
    return {"method": method, "techniques": label, "refine_seconds": round(refine_s, 2),
            "bin_ratio": round(m.bin.stat().st_size / binf.stat().st_size, 3), "extra_bytes": 0,
            "rounding_improved_layers": refined.report.rounding_improved, "shifted_pairs": len(shifted),
            **_score(case, ref, test)}


def _log_row(log: Any, name: str, row: dict) -> None:
    log(f"  {name:<12} {row['method']:<4} {row['techniques']:<18} " +
        " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                 if k not in ("method", "techniques", "smallest_passing", "reason")))


def merge_rows(report: dict, result: dict) -> dict:
    """`result` (one model) into a saved report: rows with the same method and techniques replace
    the saved ones, the model's other rows and the other models stay."""
    models = report.setdefault("models", [])
    old = next((m for m in models if m["model"] == result["model"]), None)
    if old is None:
        models.append(result)
        return report
    def key(row: dict) -> tuple[str, str]:
        return row["method"], row["techniques"].split(" (")[0]        # mixed rows: one per method, any gate

    new_keys = {key(r) for r in result["rows"]}
    rows = [r for r in old["rows"] if key(r) not in new_keys] + result["rows"]
    old.update({k: v for k, v in result.items() if k != "rows"}, rows=rows)
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import os

    from bench.bench_quantize import ROOT, host_info
    from deployer import fsutil

    ap = argparse.ArgumentParser(description="int8 techniques per method (merges into the saved results)")
    ap.add_argument("--models", default="mobilenet_v2")
    ap.add_argument("--methods", default="kl,mse,seq")
    ap.add_argument("--techniques", default="none,biascorr,adaround,adaround+biascorr,shift",
                    help="technique sets, comma-separated, + within a set")
    ap.add_argument("--mixed-gate", default=MIXED_GATE, help="gate for the mixed-precision row; 'none' skips it")
    ap.add_argument("--mixed-methods", default="seq", help="methods that get a mixed-precision row")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quantize_techniques.json")
    args = ap.parse_args(argv)
    sets = tuple([] if t == "none" else t.split("+") for t in args.techniques.split(",") if t)
    report = json.loads(args.out.read_text()) if args.out.exists() else {"models": []}
    report["host"] = host_info(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-techniques-") as tmp:
        for name in [m for m in args.models.split(",") if m]:
            started = time.perf_counter()
            res = bench_techniques(name, Path(tmp), args.threads, tuple(args.methods.split(",")),
                                   log=lambda s: print(s, file=sys.stderr, flush=True), technique_sets=sets,
                                   mixed_gate=None if args.mixed_gate == "none" else args.mixed_gate,
                                   mixed_methods=tuple(args.mixed_methods.split(",")))
            res["seconds"] = round(time.perf_counter() - started, 1)
            for row in res["rows"]:
                row["measured"] = report["host"]["date"]      # merged reports mix runs: say which
            merge_rows(report, res)
            fsutil.write_text(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
