"""Run a family of fuzz cases and collect every broken promise (shared by the tests and bench/bench_fuzz.py)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.cases import Base, generate
from tests.fuzz.harness import Runner, check_outcome, summary_line

# Cases per family in the CI tier (>= 1000 in total; the whole tier stays under 3 minutes on 2 cores).
CI_COUNTS = {"param": 200, "bin": 150, "table": 120, "profile": 110, "targets": 100, "sshcfg": 80,
             "image": 130, "numbers": 130}
CI_SEED = 20261130


@dataclass
class FamilyResult:
    family: str
    cases: int
    seconds: float
    exit_codes: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def run_family(family: str, count: int, seed: int, base: Base, runner: Runner, work: Path,
               keep: bool = False) -> FamilyResult:
    cases = generate(family, count, seed, base)
    started = time.monotonic()
    result = FamilyResult(family, len(cases), 0.0)
    batch = 40                                   # folders are removed batch by batch to keep /tmp small
    for start in range(0, len(cases), batch):
        chunk = cases[start:start + batch]
        folders = [work / f"{family}-{start + i:05d}" for i in range(len(chunk))]
        outcomes = runner.run_many(list(zip(chunk, folders)))
        for case, outcome, folder in zip(chunk, outcomes, folders):
            rc = -1 if outcome.rc is None else outcome.rc
            result.exit_codes[rc] = result.exit_codes.get(rc, 0) + 1
            problems = check_outcome(case, outcome, folder)
            if problems:
                result.failures.append(summary_line(case, outcome, problems))
            elif not keep:
                shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result
