"""Native runner speed vs ncnn's benchncnn loop built by the same recipe, on the emulated board CPUs.

    python bench/bench_native.py [--arch aarch64,armv7l] [--size 224] [--rounds 3] [--iterations 5]
                                 [--threads 1] [--json-only]

Check (issue 9): the native runner's median is within 3 % of benchncnn's for the same model, arch and
threads. benchncnn.cpp is not in ncnn's PyPI sdist, so bench/native/benchloop.cpp re-states its
measurement (options, pool allocators, timed create_extractor + input + extract) for one model and is
linked against the very same libncnn.a as the runner (deployer.native.build.link_program).

Both executables run under qemu-user with the emulated board's core (QEMU_CPU cortex-a72 for the
arm64 Pi 4, cortex-a15 for armhf), exactly how the emulated boards execute them; rounds alternate
which one goes first. On a quiet machine (load average below the core count for the whole run) the
check is the ratio of wall-clock medians. On a loaded one it is CPU time per inference (the CPU-time
difference between a run with 1 and one with 1+N timed iterations, so start-up, load and warm-up
cancel out): under qemu-user that is the emulated work itself, and it stays comparable while other
jobs make wall times swing by 2-3x. Both ratios and the load average are always reported. Absolute times
under emulation mean little; the ratio is the result. Also reported per run: peak RSS, model load and first-inference
time, and the build's time and binary sizes.

Model: the zoo's MobileNetV2 quantized to int8 by deployer (ncnn2table kl + ncnn2int8), input
SIZExSIZEx3. Writes bench/results/native.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples import data as zoo_data  # noqa: E402
from examples import zoo  # noqa: E402

QEMU_CPU = {"aarch64": "cortex-a72", "armv7l": "cortex-a15"}
BASELINE = ROOT / "bench" / "native" / "benchloop.cpp"


def int8_mobilenet(folder: Path, size: int) -> tuple[Path, Path]:
    model = zoo.build("mobilenet_v2")
    photos = zoo_data.calibration_photos(zoo.cache_root() / "data" / "calibration")
    listing = folder / "list.txt"
    listing.write_text("\n".join(str(f) for f in photos.files[:8]) + "\n")
    table, param, bin_ = folder / "m.table", folder / "m-int8.param", folder / "m-int8.bin"
    cli = [sys.executable, "-m", "deployer.cli"]
    subprocess.run([*cli, "ncnn2table", str(model.param), str(model.bin), str(listing), str(table),
                    "mean=[123.675,116.28,103.53]", "norm=[0.017125,0.017507,0.017429]", f"shape=[{size},{size}]",
                    "pixel=RGB", "thread=2", "method=kl"], check=True, capture_output=True)
    subprocess.run([*cli, "ncnn2int8", str(model.param), str(model.bin), str(param), str(bin_), str(table)],
                   check=True, capture_output=True)
    return param, bin_


def baseline_exe(build) -> Path:
    """benchloop linked against the build's libncnn.a (cached next to the runner)."""
    from deployer.native import build as nb

    exe = build.folder / "benchloop"
    if exe.is_file() and exe.stat().st_mtime >= BASELINE.stat().st_mtime:
        return exe
    tc = nb.toolchain(build.arch)
    bdir = nb.build_dir(build.version, tc, build.flags["library_key"])
    nb.link_program(bdir, tc, build.version, [BASELINE], exe, build.folder / "build.log")
    return exe


def run(argv: list[str], arch: str) -> tuple[subprocess.CompletedProcess, float]:
    """(process, CPU seconds it used): under qemu-user the CPU time is the emulated work itself, which
    stays comparable while a shared machine's load makes wall times swing by 2-3x."""
    env = dict(os.environ, QEMU_CPU=QEMU_CPU[arch])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_arch(arch: str, param: Path, bin_: Path, size: int, rounds: int, iterations: int, threads: int) -> dict:
    """Per round and executable: a run with 1 timed iteration and one with 1+N; the CPU-time
    difference / N is the per-inference cost without start-up, load and warm-up. Wall-clock medians
    of the timed iterations are reported too."""
    from deployer.native.build import find_build

    build = find_build(arch)
    if build is None:
        raise SystemExit(f"no native {arch} runtime; run: deployer runtime build --arch {arch}")
    base = baseline_exe(build)
    shape = f"{size},{size},3"

    def native(n: int) -> tuple[list[float], float, dict]:
        p, cpu = run([str(build.runner), "--param", str(param), "--bin", str(bin_), "--shape", shape,
                      "--iterations", str(n), "--warmup", "1", "--threads", str(threads), "--fp16", "1",
                      "--fill", "0.01"], arch)  # benchncnn's input, so only the harness differs
        stats = json.loads(p.stdout.splitlines()[-1])
        return stats["samples_ms"], cpu, stats

    def baseline(n: int) -> tuple[list[float], float, dict]:
        p, cpu = run([str(base), str(param), str(bin_), shape, str(n), str(threads), "1", "1"], arch)
        return json.loads(p.stdout)["samples_ms"], cpu, {}

    wall: dict[str, list[float]] = {"native": [], "benchncnn_loop": []}
    cpu_ms: dict[str, list[float]] = {"native": [], "benchncnn_loop": []}
    runs = []
    load = [os.getloadavg()[0]]
    for r in range(rounds):
        order = (("native", native), ("benchncnn_loop", baseline))
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            _, cpu1, _ = fn(1)
            samples, cpu_n, stats = fn(1 + iterations)
            wall[name] += samples[1:]
            cpu_ms[name].append((cpu_n - cpu1) / iterations * 1000.0)
            if stats:
                runs.append({k: stats.get(k) for k in ("median_ms", "peak_rss_kb", "load_ms", "first_inference_ms",
                                                       "startup_ms")})
        load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_ms.items()}
    ratio_cpu = cpu_med["native"] / cpu_med["benchncnn_loop"]
    ratio_wall = med["native"] / med["benchncnn_loop"]
    # a quiet machine (load below its core count the whole run): the wall-clock medians are the check;
    # a loaded one: CPU time per inference, the only figure the other jobs do not move
    quiet = max(load) < (os.cpu_count() or 1)
    checked = ratio_wall if quiet else ratio_cpu
    return {"arch": arch, "qemu_cpu": QEMU_CPU[arch], "threads": threads, "size": size,
            "native_median_ms": med["native"], "benchncnn_loop_median_ms": med["benchncnn_loop"],
            "ratio_wall": ratio_wall, "quiet_machine": quiet, "checked_ratio": "wall" if quiet else "cpu",
            "native_cpu_ms_per_inference": cpu_med["native"],
            "benchncnn_loop_cpu_ms_per_inference": cpu_med["benchncnn_loop"], "ratio_cpu": ratio_cpu,
            "within_3_percent": abs(checked - 1) <= 0.03, "at_most_3_percent_slower": checked <= 1.03,
            "ratio_min": min(wall["native"]) / min(wall["benchncnn_loop"]), "load_average": load,
            "native_min_ms": min(wall["native"]), "benchncnn_loop_min_ms": min(wall["benchncnn_loop"]),
            "samples": {"wall_ms": wall, "cpu_ms_per_inference": cpu_ms}, "runner_runs": runs,
            "build": {"version": build.version, "key": build.key, "runner_bytes": build.size,
                      "layers_bytes": build.layers_size, "times_s": build.times_s}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="aarch64,armv7l")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        param, bin_ = int8_mobilenet(Path(tmp), args.size)
        t0 = time.monotonic()
        results = [bench_arch(a.strip(), param, bin_, args.size, args.rounds, args.iterations, args.threads)
                   for a in args.arch.split(",") if a.strip()]
    doc = {"bench": "native", "model": f"mobilenet_v2 int8 {args.size}x{args.size}", "rounds": args.rounds,
           "iterations_per_round": args.iterations, "wall_s": time.monotonic() - t0, "results": results}
    out = ROOT / "bench" / "results" / "native.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if not args.json_only:
        print(f"{'arch':8} {'cpu':11} {'native cpu ms':>14} {'benchncnn cpu ms':>17} {'ratio':>6} {'<=3%':>5} "
              f"{'wall ratio':>10} {'RSS MB':>7} {'load ms':>8} {'1st ms':>8} {'binary MB':>10} {'load avg':>9}")
        for r in results:
            run0 = r["runner_runs"][-1]
            print(f"{r['arch']:8} {r['qemu_cpu']:11} {r['native_cpu_ms_per_inference']:14.1f} "
                  f"{r['benchncnn_loop_cpu_ms_per_inference']:17.1f} {r['ratio_cpu']:6.3f} "
                  f"{'yes' if r['within_3_percent'] else 'NO':>5} {r['ratio_wall']:10.3f} "
                  f"{run0['peak_rss_kb'] / 1024:7.1f} {run0['load_ms']:8.1f} {run0['first_inference_ms']:8.1f} "
                  f"{r['build']['runner_bytes'] / 1e6:10.2f} {max(r['load_average']):9.1f}")
    print(json.dumps({k: v for k, v in doc.items() if k != "results"} |
                     {"results": [{k: v for k, v in r.items() if k not in ("samples", "runner_runs")}
                                  for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
