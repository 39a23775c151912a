"""Does calibrating on the eval domain (ImageNet photos) beat the demo's non-ImageNet calibration crops?

    .venv/bin/python bench/bench_calib_domain.py [--methods seq,percentile]

The demo calibrates MobileNetV2 on 44 crops of scikit-image / scikit-learn / matplotlib photos and
judges it on 6 views of each of 20 foolbox ImageNet photos. If the gap to a 0.97 top-1 agreement
came from that domain mismatch, in-domain calibration would close part of it. Cross-fitting tests
this without ever calibrating on a judged input: the 20 photos are split in two halves of 10
(imagenet_00..09, imagenet_10..19); each half is judged once calibrated on the other half's 60
views and once on the demo's crops (all layers int8, no mixed precision). Misses are summed over
both halves, so each row covers all 120 views.

Writes bench/results/calib_domain.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def halves(views: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split the views by photo: photos 00-09 and photos 10-19 (views of one photo stay together)."""
    first, second = [], []
    for v in views:
        m = re.match(r"imagenet_(\d+)_", v.name)
        if not m:
            raise SystemExit(f"{v}: not an imagenet view name")
        (first if int(m.group(1)) < 10 else second).append(v)
    return first, second


def judge(method: str, model, calib: Path, evalset: Path, out: Path, threads: int) -> dict:
    """All-int8 quantize with one method; the eval half's numbers from quantize's own report."""
    from bench.demo_mobilenet import quantize_all_int8

    report = quantize_all_int8(model, calib, evalset, method, out, threads)[1].report
    o = report["heldout"]["outputs"]["out0"]
    return {"count": o["count"], "misses": round(o["count"] * (1 - o["top1_agreement"])),
            "cosine": o["cosine"], "min_cosine": o["min_cosine"], "near_ties": o["top1_near_ties"]}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from bench.bench_quantize import host_info
    from deployer import fsutil
    from bench.demo_mobilenet import demo_data
    from deployer.check.samples import list_inputs

    ap = argparse.ArgumentParser(description="in-domain vs demo calibration, cross-fitted over the 20 ImageNet photos")
    ap.add_argument("--methods", default="seq,percentile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "calib_domain.json")
    args = ap.parse_args(argv)
    model, crops, eval_list = demo_data()
    views = list_inputs(eval_list)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-domain-") as tmp:
        lists = []
        for i, half in enumerate(halves(views)):
            lists.append(Path(tmp) / f"half{i}.txt")
            lists[-1].write_text("".join(f"{p}\n" for p in half))
        for method in [m for m in args.methods.split(",") if m]:
            for source in ("imagenet (other half)", "demo crops"):
                parts = []
                for i, evalset in enumerate(lists):
                    calib = lists[1 - i] if source.startswith("imagenet") else crops
                    parts.append(judge(method, model, calib, evalset, Path(tmp) / f"{method}-{i}", args.threads))
                n = sum(p["count"] for p in parts)
                misses = sum(p["misses"] for p in parts)
                row = {"method": method, "calibration": source, "inputs": n, "misses": misses,
                       "top1_agreement": round(1 - misses / n, 4),
                       "cosine": round(sum(p["cosine"] * p["count"] for p in parts) / n, 5),
                       "min_cosine": round(min(p["min_cosine"] for p in parts), 4), "halves": parts}
                rows.append(row)
                print(f"{method:<11} calibrated on {source:<22} agreement {row['top1_agreement']:.3f} "
                      f"({misses} misses in {n})  cosine {row['cosine']:.4f}  min {row['min_cosine']:.3f}", flush=True)
    report = {"host": host_info(args.threads), "seconds": round(time.perf_counter() - started, 1),
              "eval": "foolbox ImageNet views (20 photos x 6), cross-fitted in two halves of 10 photos",
              "results": rows}
    fsutil.write_text(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
