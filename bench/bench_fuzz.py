"""Bigger fuzz run than the CI tier: N seeded cases spread over every input family.

    python bench/bench_fuzz.py --count 5000 --seed 7 [--families param,bin] [--jobs 2] [--keep]

Same cases and promises as tests/fuzz (no traceback, no signal, no hang, one error line and exit 2
for bad input, nothing half-written); prints a table per family (cases, exit codes, CPU and wall
seconds, broken promises) and writes bench/results/fuzz.json. Replaying one failure: its line shows
the command; `--keep` leaves every case folder (inputs included) under the work folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fuzz import corpus  # noqa: E402
from tests.fuzz.cases import FAMILIES  # noqa: E402
from tests.fuzz.harness import Runner  # noqa: E402
from tests.fuzz.suite import CI_COUNTS, run_family  # noqa: E402


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=5000, help="total cases, split like the CI tier's counts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep every case folder")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.json")
    args = ap.parse_args(argv)

    from examples import zoo

    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown family {unknown[0]} (known: {', '.join(FAMILIES)})")
    weight = sum(CI_COUNTS[f] for f in families)
    counts = {f: max(1, round(args.count * CI_COUNTS[f] / weight)) for f in families}

    work = args.work or Path(tempfile.mkdtemp(prefix="deployer-fuzz-"))
    pnet, onet = zoo.build("mtcnn_pnet"), zoo.build("mtcnn_onet")
    runner = Runner(base_env={"DEPLOYER_CACHE": str(work / "cache"), "DEPLOYER_PROGRESS_SECONDS": "3600",
                              "COLUMNS": "200", "OMP_NUM_THREADS": "1"}, jobs=args.jobs)
    base = corpus.build(work / "base", (pnet.param, pnet.bin), (onet.param, onet.bin), runner, seed=args.seed)

    rows, failures = [], []
    started = time.monotonic()
    for family in families:
        cpu0 = _cpu()
        res = run_family(family, counts[family], args.seed, base, runner, work / "cases", keep=args.keep)
        rows.append({"family": family, "cases": res.cases, "exit_codes": dict(sorted(res.exit_codes.items())),
                     "failures": len(res.failures), "wall_s": round(res.seconds, 1),
                     "cpu_s": round(_cpu() - cpu0, 1)})
        failures += [f.replace(str(work), "<work>") for f in res.failures]   # no machine paths in results
        print(f"{family:<8} {res.cases:>6} cases  {res.seconds:7.1f} s wall  {rows[-1]['cpu_s']:7.1f} s cpu  "
              f"exit {rows[-1]['exit_codes']}  broken: {len(res.failures)}", flush=True)
    total = sum(r["cases"] for r in rows)
    wall = time.monotonic() - started
    print(f"{'total':<8} {total:>6} cases  {wall:7.1f} s wall  seed {args.seed}  broken: {len(failures)}")
    for line in failures[:50]:
        print(line)
    result = {"seed": args.seed, "jobs": args.jobs, "cases": total, "wall_s": round(wall, 1),
              "broken": len(failures), "families": rows, "failures": failures[:200]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
