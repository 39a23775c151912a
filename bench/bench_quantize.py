"""Quantization benchmark: every calibration method on real models, int8 vs fp32 on the host.

    .venv/bin/python bench/bench_quantize.py [--models mobilenet_v2,mtcnn_onet,digits_cnn,yolov8n,ppocr_det]
        [--methods kl,aciq,eq,maxabs,percentile,mse,seq,quantize] [--threads 2] [--runs 30]
        [--out bench/results/quantize.json] [--merge] [--json]

Per model and method it measures: calibration wall time and images/s (`deployer ncnn2table`, the
drop-in CLI a user runs, so Python start-up is included), the ncnn2int8 conversion time, the task
metric of int8 against the true-fp32 model (fp16 off) on held-out inputs (deployer.check.tasks:
classifiers top-1/top-5 agreement with the 95 % Wilson interval and accuracy on labels; YOLOv8n
mAP@0.5 and mAP@0.5:0.95 of int8 boxes against fp32 boxes; PP-OCR's text map the IoU of the maps
thresholded at 0.3), mean/min output cosine, the .bin size ratio, and median int8 vs fp32 latency
in the stock ncnn wheel in the same process. `quantize` is `deployer quantize` with its defaults
(method=auto, chosen on the task metric) and the model's task in the profile; `seq` is `deployer
quantize` with method seq (deployer.quant.seqcal: a quantize-only method, no ncnn2table drop-in)
and no mixed precision. `--merge` replaces only the measured rows in an existing --out file.

Calibration and held-out data never overlap: MobileNetV2, YOLOv8n and PP-OCR det calibrate on 44
crops of skimage/sklearn photos (YOLOv8n letterboxed, as .npy, since ncnn2table cannot letterbox);
MobileNetV2 is scored on foolbox's 20 labelled ImageNet photos, YOLOv8n on views of the photos with
people (examples.yolo), PP-OCR det on text photos (bench_techniques.text_views); MTCNN on 50 / 150
lfw_subset crops; digits on 200 training / 450 test digits. `quantize` picks its method on a
separate eval set where the default holdout would not do (YOLOv8n: other random crops of the same
photos; PP-OCR: other rendered text), never on the scoring inputs. A method that fails is recorded
with its error, not fatal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deployer.check.metrics import cosine  # noqa: E402
from deployer.check.tasks import TaskSpec, task_metrics  # noqa: E402
from examples import data, evaluate, zoo  # noqa: E402
from examples.infer import NcnnRunner  # noqa: E402
from bench.bench_techniques import TECH_MODELS, bench_techniques  # noqa: E402

err = Console(stderr=True, highlight=False)
METHODS = ("kl", "aciq", "eq", "maxabs", "percentile", "mse", "seq", "quantize")
PIPELINE = {"quantize": None, "seq": {"method": "seq", "mixed": False}}   # rows run through `deployer quantize`
DEFAULT_MODELS = ("mobilenet_v2", "mtcnn_onet", "digits_cnn", "yolov8n", "ppocr_det")


@dataclass
class Case:
    """A model plus its calibration folder and held-out inputs (preprocessed) with labels."""

    model: zoo.ZooModel
    calib: data.DataSet
    inputs: list[np.ndarray]
    labels: np.ndarray | None          # None: no labels, agreement with fp32 only
    heldout_name: str
    task: TaskSpec                     # how int8 is judged against fp32 (deployer.check.tasks)
    choice_eval: Path | None = None    # list file `deployer quantize` chooses its method on (else its holdout)

    def predictions(self, outputs: list[dict[str, np.ndarray]]) -> list:
        """Argmax of the first output (classifiers)."""
        first = self.model.outputs[0]
        return [int(o[first].reshape(-1).argmax()) for o in outputs]

    def accuracy(self, outputs: list[dict[str, np.ndarray]]) -> float | None:
        if self.labels is None or self.task.type != "classification":
            return None
        return float(np.mean(np.array(self.predictions(outputs)) == self.labels))

    def calib_npy(self, work: Path) -> data.DataSet | None:
        """Calibration as preprocessed .npy when ncnn2table's own preprocessing cannot express the
        model's (letterbox), so the statistics see the tensors inference sees."""
        if self.model.preprocess.resize != "letterbox":
            return None
        return data.npy_inputs(self.calib, self.model.preprocess, self.model.input_shape, work / "calib-npy")


@dataclass
class MethodResult:
    method: str
    calib_seconds: float | None = None
    images_per_s: float | None = None
    convert_seconds: float | None = None
    accuracy: float | None = None
    top1_agreement: float | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    bin_bytes: int | None = None
    bin_ratio: float | None = None
    latency_ms: float | None = None
    fp32_latency_ms: float | None = None      # measured interleaved with this method's int8 model
    speedup: float | None = None
    latency_min_ms: float | None = None
    fp32_latency_min_ms: float | None = None
    speedup_min: float | None = None
    task: dict | None = None                  # task metrics vs fp32 (deployer.check.tasks), see task_summary
    error: str | None = None
    extra: dict = field(default_factory=dict)


def _list_file(files: list[Path], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{f}\n" for f in files))
    return path


def make_case(name: str, work: Path) -> Case:
    model = zoo.build(name)
    data_root = zoo.cache_root() / "data"
    first = model.outputs[0]
    if name == "mobilenet_v2":
        calib = data.calibration_photos(data_root / "calibration")
        samples = data.imagenet_samples()
        inputs = evaluate.image_inputs(model, [p for p, _ in samples])
        return Case(model, calib, inputs, np.array([y for _, y in samples]), "foolbox ImageNet (20)",
                    TaskSpec("classification", output=first))
    if name.startswith("mtcnn_") and name != "mtcnn_pnet":
        calib = data.lfw_images(data_root / "lfw-calibration", "calibration")
        inputs, labels = evaluate.lfw_inputs(model, data.lfw_split()[1])
        return Case(model, calib, inputs, labels, "lfw_subset held-out (150)", TaskSpec("classification", output=first))
    if name == "digits_cnn":
        calib = data.digits_images(data_root / "digits-calibration", "train", limit=200)
        inputs, labels = evaluate.digits_inputs(model, "test")
        return Case(model, calib, inputs, labels, "digits test (450)", TaskSpec("classification", output=first))
    if name == "yolov8n":
        from examples import yolo

        calib = data.calibration_photos(data_root / "calibration")
        views = yolo.detection_views(data_root / "yolo-eval")            # the set bench_techniques scores on
        # quantize chooses on other random crops of the same photos (whole/mirrored views, _0/_1, are in both)
        other = yolo.detection_views(data_root / "yolo-eval-seed1", seed=1)
        choice = _list_file([f for f in other.files if not f.stem.endswith(("_0", "_1"))], work / "choice.txt")
        return Case(model, calib, evaluate.image_inputs(model, views.files), None,
                    f"photos with people ({len(views.files)} views, boxes vs fp32)",
                    TaskSpec("detection", output=first, num_classes=18), choice)
    if name == "ppocr_det":
        from bench.bench_techniques import text_views

        calib = data.calibration_photos(data_root / "calibration")
        views = text_views(work / "text-views")
        other = [f for f in text_views(work / "text-views-seed1", seed=1) if not f.stem.endswith("_0")]
        return Case(model, calib, evaluate.image_inputs(model, views), None,
                    f"text photos ({len(views)}: page, coffee, rendered; maps vs fp32)",
                    TaskSpec("dense", output=first, threshold=0.3), _list_file(other, work / "choice.txt"))
    raise SystemExit(f"bench: no held-out set for {name!r}; choose from {', '.join(DEFAULT_MODELS)}, mtcnn_rnet")


def run_all(runner: NcnnRunner, case: Case) -> list[dict[str, np.ndarray]]:
    return [runner.run({case.model.inputs[0]: x}, case.model.outputs) for x in case.inputs]


def paired_latency_ms(fp32: NcnnRunner, int8: NcnnRunner, case: Case, runs: int,
                      min_seconds: float = 1.0) -> tuple[float, float, float, float]:
    """Median and minimum forward time (all outputs) of fp32 and int8, interleaved one forward each:
    (fp32 median, int8 median, fp32 min, int8 min). The minimum is the steadier figure when other
    processes compete for the cores.

    Alternating keeps load from other processes and clock changes from favouring either side, so
    the ratio stays meaningful on a busy machine even when the absolute numbers are not. At least
    `runs` pairs and `min_seconds`, after 3 warm-up pairs.
    """
    x = {case.model.inputs[0]: case.inputs[0]}
    times: tuple[list[float], list[float]] = ([], [])
    started = time.perf_counter()
    pairs = 0
    while pairs < runs + 3 or time.perf_counter() - started < min_seconds:
        order = ((fp32, times[0]), (int8, times[1]))
        for runner, bucket in order if pairs % 2 else order[::-1]:
            t0 = time.perf_counter()
            runner.run(x, case.model.outputs)
            if pairs >= 3:
                bucket.append((time.perf_counter() - t0) * 1000)
        pairs += 1
    return statistics.median(times[0]), statistics.median(times[1]), min(times[0]), min(times[1])


def task_summary(case: Case, ref: list[dict[str, np.ndarray]], test: list[dict[str, np.ndarray]]) -> dict:
    """The task metrics of `test` against `ref` (and the labels), without per-class detail."""
    labels = None if case.labels is None else [int(y) for y in case.labels]
    tm = task_metrics(case.task, ref, test, labels if case.task.type == "classification" else None)
    d = tm["detail"]
    if case.task.type == "detection":
        return {"map50": tm["map50"], "map50_95": tm["map50_95"], "images": d["images"],
                "reference_boxes": d["reference_boxes"]}
    if case.task.type == "dense":
        return {"mask_iou": tm["mask_iou"], "mask_iou_min": tm["mask_iou_min"], "threshold": d["threshold"],
                "images": d["images"], "reference_pixels": d["reference_pixels"]}
    lo, hi = d["top1_interval"]
    return {"top1_agreement": tm["top1_agreement"], "top1_ci95": [round(lo, 4), round(hi, 4)],
            "top5_agreement": tm["top5_agreement"], "images": d["images"],
            "accuracy_fp32": d["accuracy_fp32"], "accuracy_int8": d["accuracy_int8"]}


def compare(case: Case, ref: list[dict[str, np.ndarray]], test: list[dict[str, np.ndarray]], res: MethodResult) -> None:
    """Task metrics on the first output (class / face prob, boxes, text map), cosine over all
    outputs concatenated."""
    res.task = task_summary(case, ref, test)
    res.accuracy = case.accuracy(test)
    if case.task.type == "classification":
        res.top1_agreement = res.task["top1_agreement"]
    cat = lambda o: np.concatenate([o[b].reshape(-1) for b in case.model.outputs])  # noqa: E731
    cos = [cosine(cat(r), cat(t)) for r, t in zip(ref, test)]
    res.cosine_mean, res.cosine_min = float(np.mean(cos)), float(np.min(cos))


def _ncnn2table_args(case: Case, table: Path, method: str, threads: int) -> list[str]:
    pre, (c, h, w) = case.model.preprocess, case.model.input_shape
    fmt = lambda v: "[" + ",".join(f"{x:g}" if x == int(x) else f"{x:.9g}" for x in v) + "]"  # noqa: E731
    npy = case.calib_npy(table.parent)
    if npy is not None:
        return [str(case.model.param), str(case.model.bin), str(npy.list_file), str(table),
                f"shape=[{w},{h},{c}]", "type=1", f"thread={threads}", f"method={method}"]
    return [str(case.model.param), str(case.model.bin), str(case.calib.list_file), str(table),
            f"mean={fmt(pre.mean)}", f"norm={fmt(pre.norm)}", f"shape=[{w},{h},{c}]", f"pixel={pre.pixel}",
            f"thread={threads}", f"method={method}"]


def _deployer(args: list[str], timeout: float) -> None:
    exe = Path(sys.executable).with_name("deployer")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "deployer.cli"]
    try:
        proc = subprocess.run(cmd + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:.0f} s: deployer {args[0]}") from None
    if proc.returncode != 0:
        lines = [ln.strip(" │╭╮╰╯─") for ln in (proc.stderr or proc.stdout).splitlines()]
        lines = [ln for ln in lines if ln] or [f"exit {proc.returncode}"]
        useful = [ln for ln in lines if ln not in ("Error", "Traceback (most recent call last):")
                  and not ln.startswith(("Usage:", "Try "))] or lines
        raise RuntimeError(useful[-1][:200])


def calibrate_and_convert(case: Case, method: str, work: Path, threads: int,
                          timeout: float) -> tuple[Path, Path, float, float]:
    """One method end to end; returns (int8 param, int8 bin, calibration s, conversion s).

    `quantize` and `seq` run the whole pipeline (its own calibration, method choice and conversion),
    so their conversion time is folded into the calibration column.
    """
    out_param, out_bin = work / f"{method}.param", work / f"{method}.bin"
    if method in PIPELINE:
        profile = write_profile(case, work / f"{method}.yaml", out_dir=work / method, threads=threads,
                                quantize=PIPELINE[method])
        t0 = time.perf_counter()
        _deployer(["quantize", "--profile", str(profile), "--json"], timeout)
        seconds = time.perf_counter() - t0
        produced = sorted((work / method).glob("*.param"))
        if not produced:
            raise RuntimeError("deployer quantize wrote no .param")
        return produced[0], produced[0].with_suffix(".bin"), seconds, 0.0
    table = work / f"{method}.table"
    t0 = time.perf_counter()
    _deployer(["ncnn2table", *_ncnn2table_args(case, table, method, threads)], timeout)
    calib_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _deployer(["ncnn2int8", str(case.model.param), str(case.model.bin), str(out_param), str(out_bin), str(table)],
              timeout)
    return out_param, out_bin, calib_s, time.perf_counter() - t0


def write_profile(case: Case, path: Path, out_dir: Path, threads: int, quantize: dict | None = None) -> Path:
    """A deployer profile (profiles/*.yaml schema) for `deployer quantize`: default settings, or the
    `quantize:` section given."""
    import yaml

    profile = {"model": {"param": str(case.model.param), "bin": str(case.model.bin)},
               "inputs": [case.model.input_spec()], "calibration": {"images": [str(case.calib.list_file)]},
               "task": case.task.to_dict(), "out": str(out_dir), "name": case.model.name, "threads": threads}
    if case.choice_eval is not None:
        profile["eval"] = {"images": [str(case.choice_eval)]}
    if quantize:
        profile["quantize"] = quantize
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def bench_model(name: str, methods: list[str], threads: int, runs: int, work: Path, timeout: float) -> dict:
    case = make_case(name, work)
    fp32 = NcnnRunner(case.model.param, case.model.bin, threads=threads)
    ref = run_all(fp32, case)
    fp32_acc = case.accuracy(ref)
    fp32_ms = paired_latency_ms(fp32, fp32, case, runs)[0]
    fp32_bytes = case.model.bin.stat().st_size
    acc = "-" if fp32_acc is None else f"{fp32_acc:.3f}"
    err.print(f"[bold]{name}[/]: fp32 accuracy {acc}, {fp32_ms:.2f} ms, {len(case.calib.files)} calibration images, "
              f"held-out {case.heldout_name}")
    results = []
    for method in methods:
        res = MethodResult(method)
        with err.status(f"{name}: {method}"):
            try:
                param, binf, res.calib_seconds, res.convert_seconds = calibrate_and_convert(
                    case, method, work, threads, timeout)
                res.images_per_s = len(case.calib.files) / res.calib_seconds
                int8 = NcnnRunner(param, binf, threads=threads)
                compare(case, ref, run_all(int8, case), res)
                if method in PIPELINE:
                    chosen = json.loads(param.with_suffix(".json").read_text())
                    res.extra = {"chosen": chosen["method"], "method_choice": chosen.get("method_choice"),
                                 "eval_count": chosen["eval"]["count"], "eval_source": chosen["eval"]["source"],
                                 "scores": {m: r.get("score_by", r["score"]) for m, r in chosen["methods"].items()}}
                res.bin_bytes = binf.stat().st_size
                res.bin_ratio = res.bin_bytes / fp32_bytes
                (res.fp32_latency_ms, res.latency_ms,
                 res.fp32_latency_min_ms, res.latency_min_ms) = paired_latency_ms(fp32, int8, case, runs)
                res.speedup = res.fp32_latency_ms / res.latency_ms
                res.speedup_min = res.fp32_latency_min_ms / res.latency_min_ms
            except Exception as exc:  # a missing/broken method must not hide the others' numbers
                res.error = f"{type(exc).__name__}: {exc}"[:240]
        acc = "-" if res.accuracy is None else f"{res.accuracy:.3f}"
        err.print(f"  {method:<10} " + (f"[red]{res.error}[/]" if res.error else
                  f"{metric_text(res.task)} cos {res.cosine_mean:.4f} acc {acc} "
                  f"calib {res.calib_seconds:.1f}s int8/fp32 {res.latency_ms:.2f}/{res.fp32_latency_ms:.2f} ms"
                  + (f" (chose {res.extra['chosen']})" if res.extra.get("chosen") else "")))
        results.append(res)
    return {"model": name, "task": case.task.type, "heldout": case.heldout_name,
            "calibration_images": len(case.calib.files), "heldout_images": len(case.inputs),
            "fp32": {"accuracy": fp32_acc, "latency_ms": fp32_ms, "bin_bytes": fp32_bytes,
                     "bin_sha256": hashlib.sha256(case.model.bin.read_bytes()).hexdigest()},
            "methods": [r.__dict__ for r in results]}


def metric_text(task: dict | None) -> str:
    """One task metric in words: top-1 agreement [95 % interval], mAP@0.5 / @0.5:0.95, or mask IoU."""
    f = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    if not task:
        return "-"
    if "map50" in task:
        return f"mAP50 {f(task['map50'])} / 50-95 {f(task['map50_95'])}"
    if "mask_iou" in task:
        return f"mask IoU {f(task['mask_iou'])} (min {f(task['mask_iou_min'])})"
    lo, hi = task["top1_ci95"]
    return f"top-1 {f(task['top1_agreement'])} [{lo:.3f}, {hi:.3f}]"


def render(report: dict, console: Console) -> None:
    host = report["host"]
    table = Table(title=f"int8 vs fp32 on the host ({host['threads']} threads, ncnn {host['ncnn']})")
    for col in ("model", "method", "calib s", "img/s", "acc", "fp32 acc", "vs fp32 (task metric)", "cos mean",
                "cos min", "bin ratio", "int8 ms", "fp32 ms", "speedup"):
        table.add_column(col, justify="left" if col in ("model", "method", "vs fp32 (task metric)") else "right")
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    errors = []
    for m in report["models"]:
        for r in m["methods"]:
            if r["error"]:
                errors.append(f"{m['model']} {r['method']}: {r['error']}")
                table.add_row(m["model"], r["method"], "[red]failed[/]", *["-"] * 10)
                continue
            table.add_row(m["model"], r["method"], f(r["calib_seconds"], ".1f"), f(r["images_per_s"], ".1f"),
                          f(r["accuracy"], ".3f"), f(m["fp32"]["accuracy"], ".3f"),
                          metric_text(r.get("task")) + (f" (chose {r['extra']['chosen']})" if r["extra"].get("chosen") else ""),
                          f(r["cosine_mean"], ".4f"), f(r["cosine_min"], ".4f"), f(r["bin_ratio"], ".3f"),
                          f(r["latency_ms"], ".2f"), f(r["fp32_latency_ms"], ".2f"), f(r["speedup"], ".2f"))
    console.print(table)
    for line in errors:
        console.print(f"[red]failed[/] {line}", soft_wrap=True)


def host_info(threads: int) -> dict:
    import ncnn

    return {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "threads": threads, "ncnn": getattr(ncnn, "__version__", "?"),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--runs", type=int, default=30, help="minimum timed fp32+int8 pairs per latency figure")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per deployer command")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quantize.json")
    ap.add_argument("--json", action="store_true", help="print the JSON report to stdout instead of the table")
    ap.add_argument("--techniques", action="store_true",
                    help="per-technique accuracy (bias correction, learnt rounding) with task metrics instead; "
                         f"models default to {','.join(TECH_MODELS)}; JSON to bench/results/quantize_techniques.json")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other models' and methods' rows already in --out; replace only those measured")
    args = ap.parse_args(argv)
    if args.techniques:
        return techniques_main(args, argv or sys.argv[1:])
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    report = {"host": host_info(args.threads), "models": []}
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        for name in [m for m in args.models.split(",") if m]:
            work = Path(tmp) / name
            work.mkdir()
            report["models"].append(bench_model(name, methods, args.threads, args.runs, work, args.timeout))
    if args.merge and args.out.exists():
        report = merge(json.loads(args.out.read_text()), report)
    from deployer import fsutil

    fsutil.write_text(args.out, json.dumps(report, indent=2) + "\n")
    return _emit(report, args.out, args.json, render, 160)


def same_fp32(a: dict, b: dict) -> bool:
    """The same fp32 original: by .bin hash where both runs recorded it, else by size and fp32 accuracy."""
    if a.get("bin_sha256") and b.get("bin_sha256"):
        return a["bin_sha256"] == b["bin_sha256"]
    return a["bin_bytes"] == b["bin_bytes"] and a["accuracy"] == b["accuracy"]


def merge(old: dict, new: dict) -> dict:
    """`old` with `new`'s rows in place of the same (model, method) rows, in METHODS order. `host`
    stays the full run's; each later run's host block is listed in `merged`, and its rows carry
    that run's date in `measured`. A model whose fp32 original differs from the one the rows in `old`
    were scored against (its .bin hash, else its size and fp32 accuracy: the digits CNN is trained on
    each machine) is refused: its rows would not be comparable."""
    models = {m["model"]: m for m in old["models"]}
    for m in new["models"]:
        if m["model"] in models and not same_fp32(models[m["model"]]["fp32"], m["fp32"]):
            raise SystemExit(f"--merge: {m['model']}'s fp32 model is not the one the rows in --out were scored "
                             "against (trained or converted anew?); re-run every method for it without --merge")
        for r in m["methods"]:
            r["measured"] = new["host"]["date"]
        if m["model"] not in models:
            models[m["model"]] = m
            continue
        kept = models[m["model"]]
        names = {r["method"] for r in m["methods"]}
        kept["methods"] = [r for r in kept["methods"] if r["method"] not in names] + m["methods"]
    order = {name: i for i, name in enumerate(METHODS)}
    for m in models.values():
        m["methods"].sort(key=lambda r: order.get(r["method"], len(order)))
    return {"host": old["host"], "merged": old.get("merged", []) + [new["host"]], "models": list(models.values())}


def _emit(report: dict, out: Path, as_json: bool, render_fn: Callable[[dict, Console], None], width: int) -> int:
    """Print the report as JSON or as a table (pointing at the saved JSON)."""
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        render_fn(report, Console(highlight=False, width=None if sys.stdout.isatty() else width))
        err.print(f"JSON: {out}")
    return 0


def techniques_main(args: argparse.Namespace, argv: list[str]) -> int:
    models = args.models.split(",") if "--models" in " ".join(argv) else list(TECH_MODELS)
    out = args.out if "--out" in " ".join(argv) else ROOT / "bench" / "results" / "quantize_techniques.json"
    report = {"host": host_info(args.threads), "models": []}
    with tempfile.TemporaryDirectory(prefix="bench-techniques-") as tmp:
        for name in [m for m in models if m]:
            started = time.perf_counter()
            err.print(f"[bold]{name}[/]")
            res = bench_techniques(name, Path(tmp), args.threads, log=err.print)
            res["seconds"] = round(time.perf_counter() - started, 1)
            report["models"].append(res)
            from deployer import fsutil

            fsutil.write_text(out, json.dumps(report, indent=2) + "\n")     # partial results survive
    return _emit(report, out, args.json, render_techniques, 180)


def render_techniques(report: dict, console: Console) -> None:
    table = Table(title=f"int8 vs fp32 per technique ({report['host']['threads']} threads, ncnn {report['host']['ncnn']})")
    for col in ("model", "eval", "method", "techniques", "task metric", "cos mean", "cos min", "refine s"):
        table.add_column(col, justify="left" if col in ("model", "eval", "method", "techniques", "task metric") else "right")
    for m in report["models"]:
        for r in m["rows"]:
            if "top1_agreement" in r:
                lo, hi = r["top1_ci95"]
                metric = f"top-1 {r['top1_agreement']:.3f} [{lo:.3f}, {hi:.3f}]"
            elif "map50" in r:
                metric = "-" if r["map50"] is None else f"mAP50 {r['map50']:.3f} / 50-95 {r['map50_95']:.3f}"
            else:
                metric = "-" if r["mask_iou"] is None else f"mask IoU {r['mask_iou']:.3f}"
            table.add_row(m["model"], f"{m['eval_count']}", r["method"], r["techniques"], metric,
                          f"{r['cosine_mean']:.4f}", f"{r['cosine_min']:.4f}", f"{r['refine_seconds']:.1f}")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
