"""Link cuts at random moments of a deploy: 50 of them, each followed by a re-run. Needs root.

    python bench/bench_fleet_cuts.py [--cuts 50] [--seed 2026] [--table-mb 1.5]

A private OpenSSH sshd on loopback (the one the tests use, tests/fixtures/sshd.py) serves one board;
each trial deploys a new release (every other one with the on-board health check) and, at a random
stage (lock, upload at a random byte, commit, switch, gc, runtime, health) plus a random delay of up to
30 ms, kills every live sshd session - what a cut link or a rebooting router does to a deploy. Then it
records what the board serves (the old or the new release, whole: every file's sha256 as its
manifest says; never a mix), and re-runs the deploy, which must complete and send exactly the bytes
the board did not have yet (resumed parts count as had). The same trial code runs 24 cuts in CI
(tests/integration/test_fleet.py). Prints a table and writes bench/results/fleet_cuts.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deployer.fleet.health import HealthPolicy  # noqa: E402
from deployer.fleet.ops import DeployOptions  # noqa: E402
from deployer.targets import load_targets  # noqa: E402
from tests.fixtures.fleet import cut_trials  # noqa: E402
from tests.fixtures.runner import build_tiny_models  # noqa: E402
from tests.fixtures.sshd import loopback_sshd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--table-mb", type=float, default=1.5, help="size of each release's changing file")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/fleet_cuts.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_fleet_cuts needs root (a private sshd and its test user)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deployer-bench-cuts-") as tmp, loopback_sshd(Path(tmp) / "sshd") as env:
        board = load_targets(env.targets).boards["loop"]
        tiny = build_tiny_models(Path(tmp) / "tiny", size=32)
        trials = cut_trials(board, env.server.kill_sessions, tiny, Path(tmp) / "w", args.cuts, seed=args.seed,
                            table_bytes=int(args.table_mb * 1e6),
                            opts=lambda: DeployOptions(health=HealthPolicy(), lock_wait=5, deadline=120))
    by_stage = collections.Counter(t.stage for t in trials)
    summary = {
        "cuts": len(trials),
        "seed": args.seed,
        "cuts that fired": sum(t.fired for t in trials),
        "cut deploys that failed": sum(not t.first_ok for t in trials),
        "board served the old release after the cut": sum(t.served == "old" for t in trials),
        "board served the new release after the cut": sum(t.served == "new" for t in trials),
        "board served a mix or a broken release": sum(t.served not in ("old", "new") or t.broken is not None
                                                      for t in trials),
        "re-runs that completed, new release whole": sum(t.rerun_ok and t.rerun_broken is None for t in trials),
        "re-runs that re-sent bytes already on the board": sum(t.resent > t.expected for t in trials),
        "re-runs that sent less than was missing": sum(t.resent < t.expected for t in trials),
        "bytes the re-runs sent": sum(t.resent for t in trials),
        "bytes the re-runs needed": sum(t.expected for t in trials),
        "all trials sound": all(t.sound for t in trials),
        "cuts per stage": dict(sorted(by_stage.items())),
        "seconds (all trials)": round(time.perf_counter() - t0, 1),
    }
    table = Table(title=f"{len(trials)} link cuts during deploys (real sshd, sessions killed)", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, str(v))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**summary, "trials": [asdict(t) for t in trials]}, indent=1) + "\n")
    if not summary["all trials sound"]:
        raise SystemExit("some trial left the board in a state it must never be in: see the JSON")


if __name__ == "__main__":
    main()
