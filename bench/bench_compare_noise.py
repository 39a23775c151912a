"""How often does `deployer compare` call two runs of the *same* model different?

    .venv/bin/python -m bench.bench_compare_noise [--runs 12] [--duration 3]

Starts one emulated arm64 board (its own targets folder), runs one small fp32 conv net `--runs`
times back to back with `deployer run` (each a new runner process, as a user runs it), then judges
every comparison that should come out `same` in three ways (deployer.profiling.stats):
- within runs: one run a side, no history (the only test `compare` had before): adjacent pairs;
- one run a side + the run-to-run spread of the other runs (what `compare A B` does now when the
  history holds repeats of a model on that board);
- sets: disjoint 2-run and 3-run sets, interleaved (1,3 vs 2,4 ...), judged on run medians, alone
  and pooled with the other runs' spread (what `compare 1,3 2,4` does with repeats in the history).
A false verdict is anything but `same` at the default --min-effect (3 %).
Writes bench/results/compare_noise.json and prints a table.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deployer.profiling import stats as st  # noqa: E402
from deployer.profiling import store  # noqa: E402
from deployer.profiling.compare import kept_samples, rows_spread  # noqa: E402
from tests.fixtures.runner import stack_model  # noqa: E402

DEPLOYER = [sys.executable, "-m", "deployer.cli"]


def _cli(*args: str, cwd: Path) -> dict:
    p = subprocess.run([*DEPLOYER, *args, "--json"], capture_output=True, text=True, cwd=cwd, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"deployer {' '.join(args[:2])} failed: {p.stderr.strip()[-400:]}")
    return json.loads(p.stdout)


def _tally(verdicts: list[str]) -> dict:
    wrong = sum(v != "same" for v in verdicts)
    return {"comparisons": len(verdicts), "not_same": wrong, "verdicts": verdicts}


def judge(rows: list[store.RunRow]) -> dict:
    samples = [kept_samples(r) for r in rows]
    n = len(rows)
    within = [st.compare_run_sets([samples[i]], [samples[i + 1]]).comparison.verdict for i in range(n - 1)]
    history = []
    for i in range(n - 1):
        spread = rows_spread(rows, {rows[i].id, rows[i + 1].id})
        history.append(st.compare_run_sets([samples[i]], [samples[i + 1]], spread=spread).comparison.verdict)
    sets: dict[str, list[str]] = {}
    for k in (2, 3):
        for with_spread in (False, True):
            out = []
            for start in range(0, n - 2 * k + 1, 2 * k):
                block = list(range(start, start + 2 * k))
                a, b = block[0::2], block[1::2]
                spread = rows_spread(rows, {rows[i].id for i in block}) if with_spread else None
                out.append(st.compare_run_sets([samples[i] for i in a], [samples[i] for i in b],
                                               spread=spread).comparison.verdict)
            sets[f"sets_of_{k}" + ("_plus_spread" if with_spread else "")] = out
    return {"within_runs": _tally(within), "one_run_plus_spread": _tally(history),
            **{key: _tally(v) for key, v in sets.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare_noise.json")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        work = Path(tmp)
        targets = work / "targets"
        up = subprocess.run([*DEPLOYER, "sim", "up", "--arch", "arm64", "--targets-dir", str(targets), "--json"],
                            capture_output=True, text=True, cwd=work, timeout=1800)
        if up.returncode != 0:
            raise SystemExit(f"sim up failed: {up.stderr.strip()[-400:]}")
        board = json.loads(up.stdout)["boards"][0]["name"]
        try:
            param, binf = stack_model(work, "m", blocks=2)
            t0 = time.monotonic()
            ids = []
            for i in range(args.runs):
                r = _cli("run", board, "--targets", str(targets / "sim.yaml"), "--param", str(param), "--bin",
                         str(binf), "--duration", str(args.duration), "--warmup", "0", "--threads", "1",
                         "--no-int8", "--no-fp16", cwd=work)
                ids.append(r["history_id"])
                console.print(f"run {i + 1}/{args.runs}: median {r.get('median_ms', 0):.2f} ms", highlight=False)
            rows = [store.get_run(work / "results", i) for i in ids]
            seconds = time.monotonic() - t0
        finally:
            subprocess.run([*DEPLOYER, "sim", "down", "--targets-dir", str(targets)], capture_output=True,
                           cwd=work, timeout=600)
    medians = [float(r.median_ms or 0) for r in rows]
    spread = rows_spread(rows, set())
    from bench.bench_quantize import host_info

    result = {"host": {**host_info(1), "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
              "board": "emulated arm64 (qemu-user, shared host)", "runs": args.runs, "duration_s": args.duration,
              "seconds": round(seconds, 1), "run_medians_ms": [round(m, 3) for m in medians],
              "run_to_run": spread.to_json() if spread else None, **judge(rows)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    table = Table(title=f"same model, {args.runs} runs of {args.duration:g} s: verdicts other than `same` "
                        "(--min-effect 3 %)")
    for c in ("judged", "comparisons", "not same"):
        table.add_column(c)
    for key, label in (("within_runs", "one run a side, within-run test"),
                       ("one_run_plus_spread", "one run a side + run-to-run spread"),
                       ("sets_of_2", "2 runs a side (run medians)"),
                       ("sets_of_2_plus_spread", "2 runs a side + run-to-run spread"),
                       ("sets_of_3", "3 runs a side (run medians)"),
                       ("sets_of_3_plus_spread", "3 runs a side + run-to-run spread")):
        table.add_row(label, str(result[key]["comparisons"]), str(result[key]["not_same"]))
    console.print(table)
    console.print(f"run medians {min(medians):.2f}-{max(medians):.2f} ms; run-to-run spread "
                  f"{spread.pct:.1f}% (sd of log medians)" if spread else "", highlight=False)


if __name__ == "__main__":
    main()
