"""Does the runner add cost? Its median vs a plain ncnn loop's, same model, same options, interleaved.

Both sides are fresh subprocesses of the same Python with the same ncnn options (1 thread, fp16 off,
int8 on); both time exactly create_extractor + input + extract (every output) per iteration. Rounds alternate which
side goes first so drift (clocks, heat, other load) hits both equally. Headline: the paired ratio
(median over rounds of runner median / plain median); the ratio of the minimum latencies is printed
too because it is the figure least disturbed by other processes. The load average is recorded: on a
busy machine no 5% claim is meaningful. Prints a table and JSON (bench/results/runner.json).

    python bench/bench_runner.py --zoo mobilenet_v2 --rounds 6 --iterations 40   # a real model (examples/zoo.py)
    python bench/bench_runner.py [--param P --bin B --shape W,H,C] [--rounds 6] [--iterations 200]

Without --zoo/--param it uses a small hand-built int8 conv net (tests/fixtures/runner.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deployer.remote import runner  # noqa: E402

PLAIN_LOOP = r"""
import array, json, sys, time
import ncnn
sys.path.insert(0, sys.argv[1])
from deployer.remote.runner import make_input_values, parse_shape
param, bin_, shape, iters, warmup, threads = sys.argv[2], sys.argv[3], parse_shape(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
ncnn.set_cpu_powersave(0); ncnn.set_omp_dynamic(0); ncnn.set_omp_num_threads(threads)
net = ncnn.Net()
o = net.opt
o.num_threads = threads; o.use_int8_inference = True
o.use_fp16_storage = o.use_fp16_packed = o.use_fp16_arithmetic = False
o.use_vulkan_compute = False
net.load_param(param); net.load_model(bin_)
n = 1
for d in shape: n *= d
buf = array.array("f", make_input_values(n, "random", 0))
mat = ncnn.Mat(memoryview(buf).cast("B").cast("f", list(reversed(shape)))).clone()
inp, outs = net.input_names()[0], list(net.output_names())
def infer():  # every output, as the runner (and benchncnn) time one inference
    ex = net.create_extractor(); ex.input(inp, mat)
    return [ex.extract(b)[1] for b in outs][-1]
for _ in range(warmup): infer()
samples = []
for _ in range(iters):
    t = time.perf_counter(); out = infer(); samples.append((time.perf_counter() - t) * 1000.0)
print(json.dumps(samples))
"""


def run_plain(param: str, bin_: str, shape: str, iters: int, warmup: int, threads: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", PLAIN_LOOP, str(ROOT), param, bin_, shape, str(iters), str(warmup),
                          str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_runner(param: str, bin_: str, shape: str, iters: int, warmup: int, threads: int) -> list[float]:
    out = subprocess.run([sys.executable, "-u", runner.__file__, "--param", param, "--bin", bin_, "--shape", shape,
                          "--iterations", str(iters), "--warmup", str(warmup), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    last = json.loads(out.stdout.splitlines()[-1])
    return last["samples_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", help="an examples/zoo.py model name, e.g. mobilenet_v2 (built once, cached)")
    ap.add_argument("--param")
    ap.add_argument("--bin")
    ap.add_argument("--shape", default="224,224,3")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", type=Path, default=ROOT / "bench" / "results" / "runner.json")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    if args.zoo:
        from examples.zoo import build

        model = build(args.zoo)
        c, h, w = model.input_shape
        args.param, args.bin, args.shape = str(model.param), str(model.bin), f"{w},{h},{c}"
    elif not args.param:
        from tests.fixtures.runner import build_tiny_models

        size = int(args.shape.split(",")[0])
        models = build_tiny_models(Path(tmp.name), size=size)
        args.param, args.bin = str(models.int8_param), str(models.int8_bin)

    load_before = os.getloadavg()
    per_round = []
    plain_all: list[float] = []
    runner_all: list[float] = []
    for r in range(args.rounds):
        order = [("plain", run_plain), ("runner", run_runner)]
        if r % 2:
            order.reverse()
        medians = {}
        for name, fn in order:
            samples = fn(args.param, args.bin, args.shape, args.iterations, args.warmup, args.threads)
            (plain_all if name == "plain" else runner_all).extend(samples)
            medians[name] = statistics.median(samples)
        per_round.append(medians)

    plain_med, runner_med = statistics.median(plain_all), statistics.median(runner_all)
    ratio = statistics.median(m["runner"] / m["plain"] for m in per_round)
    ratio_min = min(runner_all) / min(plain_all)
    result = {
        "model": {"zoo": args.zoo, "param": args.param, "shape": args.shape}, "threads": args.threads,
        "rounds": args.rounds, "iterations_per_round": args.iterations, "plain_median_ms": plain_med,
        "runner_median_ms": runner_med, "ratio": ratio, "ratio_of_minimums": ratio_min,
        "within_5pct": abs(ratio - 1) <= 0.05, "per_round_medians_ms": per_round,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
    }
    table = Table(title="runner vs plain ncnn loop (ms, median per round)", title_justify="left")
    table.add_column("round")
    table.add_column("plain")
    table.add_column("runner")
    for i, m in enumerate(per_round):
        table.add_row(str(i), f"{m['plain']:.4f}", f"{m['runner']:.4f}")
    table.add_row("all", f"{plain_med:.4f}", f"{runner_med:.4f}", style="bold")
    table.add_row("min", f"{min(plain_all):.4f}", f"{min(runner_all):.4f}")
    err = Console(stderr=True)
    err.print(table)
    err.print(f"runner / plain: paired median ratio {ratio:.4f} ({'within' if result['within_5pct'] else 'OUTSIDE'} 5%), "
              f"ratio of minimums {ratio_min:.4f}; load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
