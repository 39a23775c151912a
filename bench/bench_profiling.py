"""What does profiling add to a run? The context collector's cost and the statistics' cost.

- Collector: the POSIX sh collector (deployer/profiling/board/context.sh, the one boards run, twice
  per run) vs the baseline of the runner's own Python facts (`python3 -c` importing runner.py and
  calling volatile_state(), which reads less: no per-process CPU, no memory), each a fresh process
  as on a board, interleaved over rounds. On a board under qemu-user or a Pi Zero, interpreter
  start-up dominates, which is why the collector is sh.
- Statistics: analyze() (warm-up search + order-statistic CI + MAD) on 10 000 samples and
  compare_samples() on 5 000 vs 5 000, vs the baseline runner.summarize() (plain min/median/std).

Prints a table, writes bench/results/profiling.json.

    python bench/bench_profiling.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deployer.profiling import context as ctx  # noqa: E402
from deployer.profiling import stats as st  # noqa: E402
from deployer.remote import runner  # noqa: E402

PY_FACTS = "import sys; sys.path.insert(0, sys.argv[1]); from deployer.remote import runner; runner.volatile_state()"


def _time(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    script = ctx.COLLECTOR.read_bytes()
    sh_ms, py_ms = [], []
    for i in range(args.rounds):  # interleaved, alternating which goes first
        pair = [("sh", lambda: subprocess.run(["sh", "-s"], input=script, capture_output=True, check=True)),
                ("py", lambda: subprocess.run([sys.executable, "-S", "-c", PY_FACTS, str(ROOT)], capture_output=True,
                                              check=True))]
        for name, fn in (pair if i % 2 == 0 else pair[::-1]):
            (sh_ms if name == "sh" else py_ms).append(_time(fn, 1)[0])
    rng = np.random.default_rng(0)
    samples = list(rng.lognormal(np.log(20), 0.05, 10_000))
    a, b = rng.lognormal(np.log(20), 0.05, 5_000), rng.lognormal(np.log(21), 0.05, 5_000)
    analyze_ms = _time(lambda: st.analyze(samples), 5)
    summarize_ms = _time(lambda: runner.summarize(samples), 5)
    compare_ms = _time(lambda: st.compare_samples(a, b), 5)
    snap = ctx.collect_local()
    rows = [
        ("context collector (sh, per snapshot)", statistics.median(sh_ms), statistics.median(py_ms),
         "runner.volatile_state() in a fresh python"),
        ("analyze() 10k samples", statistics.median(analyze_ms), statistics.median(summarize_ms),
         "runner.summarize() 10k samples"),
        ("compare_samples() 5k vs 5k", statistics.median(compare_ms), None, "-"),
    ]
    table = Table(title=f"profiling overhead (host, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
                        f"{len(snap.procs)} processes)")
    for col in ("what", "median ms", "baseline ms", "ratio", "baseline"):
        table.add_column(col)
    for what, ms, base, name in rows:
        table.add_row(what, f"{ms:.2f}", "-" if base is None else f"{base:.2f}",
                      "-" if base is None else f"{ms / base:.2f}x", name)
    Console().print(table)
    out = {"rounds": args.rounds, "loadavg": os.getloadavg()[0], "cpu_count": os.cpu_count(), "processes": len(snap.procs),
           "results": [{"what": w, "median_ms": m, "baseline_ms": b, "baseline": n,
                        "ratio": None if b is None else m / b} for w, m, b, n in rows]}
    path = ROOT / "bench" / "results" / "profiling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
