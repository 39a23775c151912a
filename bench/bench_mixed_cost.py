"""What mixed precision's float layers cost in time on a board: predicted from per-layer board times,
then checked by timing the mixed model itself (needs root: it starts an emulated arm64 board).

    sudo .venv/bin/python bench/bench_mixed_cost.py [--iterations 5] [--check-iterations 20]
                                                     [--max-slowdown 2%] [--threads 2] [--json-only]

Steps, all through the deployer CLI on the demo's MobileNetV2 profile (the make-demo model and data,
built here from the wheels under $DEPLOYER_CACHE), method seq:
1. quantize all layers int8 (`--no-mixed`);
2. time it per layer on the emulated board against the fp32 model
   (`deployer run --layers --fp32-param`): the file `quantize --layer-times` reads;
3. quantize twice with a gate all-int8 cannot meet (top-1 agreement >= 0.99) so mixed precision runs:
   once with the profile's byte budget (10 %), once with a time budget (`--max-slowdown`), both
   given the board times: the reports' predicted extra ms and the MAC ceiling;
4. check each prediction: time the mixed model per layer against the all-int8 one in one run
   (`--fp32-param` is just "the other model" there) and sum the kept layers' differences (what the
   prediction models) and all layers' (the whole network, run-to-run drift included).

Board milliseconds under qemu-user rank layers; they are not a real Cortex-A72's. Writes
bench/results/mixed_cost.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.demo_mobilenet import PROFILE, demo_data  # noqa: E402

GATES = ["top1_agreement>=0.99", "cosine>=0.985"]
CLI = [sys.executable, "-m", "deployer.cli"]


def deployer(*args: str, timeout: float = 1800) -> dict[str, Any]:
    """One deployer command with --json; its JSON (exit 1 = a failed gate is expected here)."""
    proc = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise SystemExit(f"deployer {args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def quantize(model: Any, calib: Path, evalset: Path, out: Path, *extra: str) -> dict[str, Any]:
    return deployer("quantize", "--profile", str(PROFILE), "--param", str(model.param), "--bin", str(model.bin),
                    "--calib", str(calib), "--eval", str(evalset), "--method", "seq", "--out", str(out), *extra)


def time_layers(board: str, targets: Path, results: Path, a: tuple[Path, Path], b: tuple[Path, Path],
                iterations: int, threads: int) -> dict[str, Any]:
    """Per-layer medians of model a (`int8_ms`) and model b (`fp32_ms`) on the board, one run each."""
    return deployer("run", board, "--targets", str(targets), "--param", str(a[0]), "--bin", str(a[1]),
                    "--shape", "224,224,3", "--layers", "--fp32-param", str(b[0]), "--fp32-bin", str(b[1]),
                    "-n", str(iterations), "--warmup", "1", "--threads", str(threads), "--no-fp16",
                    "--results", str(results))


def check(name: str, report: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """The prediction in a quantize report against the mixed model timed beside all-int8."""
    rows = measured["layers"]["vs_fp32"]["layers"]         # int8_ms: mixed model, fp32_ms: all-int8 model
    kept = list(report["speed"]["fp32_layers"])
    kept_ms = sum(rows[n]["int8_ms"] - rows[n]["fp32_ms"] for n in kept)
    whole = measured["layers"]["vs_fp32"]
    out0 = report["heldout"]["outputs"]["out0"]
    return {"set": name, "fp32_layers": kept, "extra_bytes": report["sizes"]["mixed_cost_bytes"],
            "predicted_ms": report["speed"]["extra_ms"], "all_int8_ms": report["speed"]["all_int8_ms"],
            "predicted_ratio": report["speed"]["est_time_vs_all_int8"],
            "measured_kept_layers_ms": round(kept_ms, 3),
            "measured_other_layers_ms": round(whole["int8_sum_ms"] - whole["fp32_sum_ms"] - kept_ms, 3),
            "measured_whole_ratio": round(whole["int8_sum_ms"] / whole["fp32_sum_ms"], 4),
            "top1_agreement": out0["top1_agreement"], "cosine": out0["cosine"],
            "budget": report["mixed"].get("byte_budget") if name == "byte budget" else report["mixed"].get("time_budget_ms")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations of the per-layer board run")
    ap.add_argument("--check-iterations", type=int, default=20, help="timed iterations of each check run")
    ap.add_argument("--max-slowdown", default="2%")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_mixed_cost needs root (it starts an emulated board in a network namespace)")
    from deployer.sim.manager import sim_down, sim_up

    t0 = time.monotonic()
    model, calib, evalset = demo_data()
    with tempfile.TemporaryDirectory(prefix="bench-mixed-") as tmp:
        t = Path(tmp)
        all_int8 = quantize(model, calib, evalset, t / "all", "--no-mixed")
        all_files = (Path(all_int8["files"]["param"]), Path(all_int8["files"]["bin"]))
        up = sim_up(arch="arm64", count=1, targets_dir=t / "targets", state_dir=t / "state")
        try:
            board, targets = up.added[0].name, up.targets
            timed = time_layers(board, targets, t / "results", all_files, (model.param, model.bin),
                                args.iterations, args.threads)
            times = timed["saved_to"]
            gate = [g for x in GATES for g in ("--gate", x)]
            by_bytes = quantize(model, calib, evalset, t / "bytes", *gate, "--layer-times", times)
            by_time = quantize(model, calib, evalset, t / "time", *gate, "--layer-times", times,
                               "--max-slowdown", args.max_slowdown)
            ceiling = quantize(model, calib, evalset, t / "ceiling", *gate)     # no times: the MAC estimate
            rows = []
            for name, rep in (("byte budget", by_bytes), ("time budget", by_time)):
                files = (Path(rep["files"]["param"]), Path(rep["files"]["bin"]))
                rows.append(check(name, rep, time_layers(board, targets, t / "results", files, all_files,
                                                         args.check_iterations, args.threads)))
            rows[0]["mac_ceiling_ratio"] = ceiling["speed"]["est_time_vs_all_int8"]
        finally:
            sim_down(state_dir=t / "state")
    v = timed["layers"]["vs_fp32"]
    doc = {"bench": "mixed_cost", "model": "mobilenet_v2 (demo profile, method seq)", "gates": GATES,
           "board": {"arch": "arm64", "cpu": timed["facts"].get("cpu_model") or "cortex-a72 (qemu-user)",
                     "threads": args.threads, "iterations": args.iterations,
                     "check_iterations": args.check_iterations},
           "all_int8": {"layers_sum_ms": round(v["int8_sum_ms"], 3), "fp32_layers_sum_ms": round(v["fp32_sum_ms"], 3),
                        "top1_agreement": all_int8["heldout"]["outputs"]["out0"]["top1_agreement"],
                        "cosine": all_int8["heldout"]["outputs"]["out0"]["cosine"]},
           "sets": rows, "wall_s": round(time.monotonic() - t0, 1),
           "note": "qemu-user milliseconds rank layers; they are not a real Cortex-A72's"}
    out = ROOT / "bench" / "results" / "mixed_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if not args.json_only:
        print(f"all int8: layers {v['int8_sum_ms']:.1f} ms, fp32 {v['fp32_sum_ms']:.1f} ms on the emulated board")
        print(f"{'set':12} {'layers':>6} {'+bytes':>7} {'budget':>12} {'predicted ms':>13} {'measured ms':>12} "
              f"{'others ms':>10} {'whole x':>8} {'agree':>6} {'cosine':>7}")
        for r in rows:
            budget = f"{r['budget']:,} B" if r["set"] == "byte budget" else f"{r['budget']:.1f} ms"
            print(f"{r['set']:12} {len(r['fp32_layers']):6d} {r['extra_bytes']:7d} {budget:>12} "
                  f"{r['predicted_ms']:13.2f} {r['measured_kept_layers_ms']:12.2f} {r['measured_other_layers_ms']:10.2f} "
                  f"{r['measured_whole_ratio']:8.3f} {r['top1_agreement']:6.3f} {r['cosine']:7.4f}")
        print(f"MAC ceiling for the byte-budget set: x{rows[0]['mac_ceiling_ratio']:.3f}")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
