"""Calibration speed: `deployer ncnn2table` per method on MobileNetV2, 224x224 images.

    python bench/bench_calibration.py [--images 64] [--threads 2] [--methods kl,aciq,...] [--repeat 3]
                                      [--eq] [--json-only] [--ncnn2table PATH]

Target (issue #2): method=kl thread=2 with 64 images in <= 2.5 s on a 2-core machine (ncnn's own
ncnn2table: ~1.7 s). Prints a table, then one JSON object. Wall time is what the user waits;
CPU time (this process + workers) shows whether a busy machine, not the code, set the wall time.
The model is the zoo's pnnx fp32 export of torchvision MobileNetV2 (examples/zoo.py); images are
deterministic crops of the photos bundled in installed wheels, written as 224x224 JPEGs.

`--ncnn2table PATH`: also time an ncnn2table binary (a reference build of ncnn's tool, kept outside
this repo) on the same list, thread count and methods it has (kl, aciq), in the same run. Its wall
time includes process start; ours is in-process (`cli_wall_s` adds the `deployer ncnn2table`
subprocess for the same comparison). Its tables differ from ours on colour JPEGs by design
(stb_image vs libjpeg-turbo decoding, see deployer/inputs/decode.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from examples import data as zoo_data  # noqa: E402
from examples import zoo  # noqa: E402

IMAGENET_BGR = dict(mean="[103.53,116.28,123.675]", norm="[0.017429,0.017507,0.017125]")


def cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def write_images(folder: Path, count: int) -> Path:
    crops = zoo_data.random_crops(zoo_data.available_photos(), count, seed=0, max_side=512)
    paths = []
    for stem, pixels in crops:
        p = folder / f"{stem}.jpg"
        Image.fromarray(pixels).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR).save(p, quality=95)
        paths.append(str(p))
    lst = folder / "list.txt"
    lst.write_text("\n".join(paths) + "\n")
    return lst


def run_once(model, lst: Path, table: Path, method: str, threads: int) -> tuple[float, float]:
    from deployer.quant import ncnn2table as lib
    from deployer.quant.table import write_table

    argv = [str(model.param), str(model.bin), str(lst), str(table), f"mean={IMAGENET_BGR['mean']}", f"norm={IMAGENET_BGR['norm']}", "shape=[224,224,3]",
            "pixel=BGR", f"thread={threads}", f"method={method}"]
    if method == "percentile":
        argv.append("percentile=99.99")
    c0, t0 = cpu_seconds(), time.perf_counter()
    result = lib.run(lib.parse_args(argv))
    write_table(table, result.table)
    return time.perf_counter() - t0, cpu_seconds() - c0


def ncnn_argv(model, lst: Path, table: Path, method: str, threads: int) -> list[str]:
    return [str(model.param), str(model.bin), str(lst), str(table), f"mean={IMAGENET_BGR['mean']}",
            f"norm={IMAGENET_BGR['norm']}", "shape=[224,224,3]", "pixel=BGR", f"thread={threads}",
            f"method={method}"]


def run_subprocess(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one external command (CPU from the children's rusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def shared_collection(model, lst: Path, methods: list[str], threads: int) -> dict:
    """Collect once, then every method: the pipeline's way of comparing methods."""
    from deployer.quant.calibration import Calibrator
    from deployer.quant.ncnn2table import input_specs, parse_args, read_lists
    from deployer.quant.weights import load_model

    args = parse_args([str(model.param), str(model.bin), str(lst), "x.table",
                       f"mean={IMAGENET_BGR['mean']}", f"norm={IMAGENET_BGR['norm']}",
                       "shape=[224,224,3]", "pixel=BGR"])
    t0 = time.perf_counter()
    m = load_model(model.param, model.bin)
    cal = Calibrator(m, input_specs(args, 1), read_lists(args.lists), threads=threads)
    cal.stats(kl="kl" in methods)
    collect_s = time.perf_counter() - t0
    per = {}
    for name in methods:
        t = time.perf_counter()
        cal.layer_scales(name)
        per[name] = round(time.perf_counter() - t, 3)
    return {"collect_s": round(collect_s, 3), "methods_s": per,
            "total_s": round(time.perf_counter() - t0, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="kl,aciq,maxabs,percentile,mse")
    ap.add_argument("--repeat", type=int, default=3, help="runs per method; the best wall time is reported")
    ap.add_argument("--eq", action="store_true", help="also time method=eq (minutes on MobileNetV2)")
    ap.add_argument("--json-only", action="store_true")
    ap.add_argument("--ncnn2table", type=Path, metavar="PATH",
                    help="optional baseline: an ncnn2table binary timed on the same inputs (kl, aciq)")
    opts = ap.parse_args()
    if opts.ncnn2table is not None and not os.access(opts.ncnn2table, os.X_OK):
        ap.error(f"--ncnn2table {opts.ncnn2table}: not an executable file")

    model = zoo.build("mobilenet_v2")
    methods = [m for m in opts.methods.split(",") if m] + (["eq"] if opts.eq else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lst = write_images(Path(tmp), opts.images)
        for method in methods:
            runs = [run_once(model, lst, Path(tmp) / f"{method}.table", method, opts.threads)
                    for _ in range(1 if method == "eq" else opts.repeat)]
            rows.append(_row("deployer", method, opts, runs))
            if opts.ncnn2table is not None and method in ("kl", "aciq"):
                exe = str(Path(sys.executable).with_name("deployer"))
                cli = [run_subprocess([exe, "ncnn2table", *ncnn_argv(model, lst, Path(tmp) / f"cli_{method}.table",
                                                                      method, opts.threads)])
                       for _ in range(opts.repeat)]
                rows.append(_row("deployer-cli", method, opts, cli))
                ref = [run_subprocess([str(opts.ncnn2table), *ncnn_argv(model, lst, Path(tmp) / f"ncnn_{method}.table",
                                                                        method, opts.threads)])
                       for _ in range(opts.repeat)]
                rows.append(_row("ncnn2table", method, opts, ref))
        shared = shared_collection(model, lst, [m for m in methods if m != "eq"], opts.threads)
    result = {"benchmark": "calibration", "model": "mobilenet_v2 (pnnx fp32)", "cpus": os.cpu_count(),
              "loadavg_1m": round(os.getloadavg()[0], 2), "target_kl_s": 2.5, "rows": rows,
              "shared_collection": shared}
    if opts.ncnn2table is not None:
        result["ncnn2table"] = str(opts.ncnn2table)
    if not opts.json_only:
        print(f"{'tool':<13} {'method':<11} {'images':>6} {'threads':>7} {'wall s':>8} {'cpu s':>8} {'img/s':>7}")
        for r in rows:
            print(f"{r['tool']:<13} {r['method']:<11} {r['images']:>6} {r['threads']:>7} {r['wall_s']:>8.3f} "
                  f"{r['cpu_s']:>8.3f} {r['images_per_s']:>7.1f}")
        print(f"one collection ({shared['collect_s']:.3f} s) then all methods: {shared['methods_s']} "
              f"-> {shared['total_s']:.3f} s total; load average {result['loadavg_1m']}")
    print(json.dumps(result))
    return 0


def _row(tool: str, method: str, opts, runs: list[tuple[float, float]]) -> dict:
    """Best-of-`runs` wall time (the least disturbed run), with its CPU time."""
    wall, cpu = min(runs)
    return {"tool": tool, "method": method, "images": opts.images, "threads": opts.threads,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "images_per_s": round(opts.images / wall, 1),
            "all_wall_s": [round(r[0], 3) for r in runs]}


if __name__ == "__main__":
    raise SystemExit(main())
