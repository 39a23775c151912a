"""Fuzz tier: >= 1000 seeded mutations of every user input, through the real CLI.

Seed: DEPLOYER_FUZZ_SEED (default tests.fuzz.suite.CI_SEED); counts per family: CI_COUNTS. A
failure lists each broken promise with the command line, so a case can be replayed by hand.
Bigger runs: `python bench/bench_fuzz.py --count 5000 --seed N`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz import corpus
from tests.fuzz.cases import FAMILIES
from tests.fuzz.harness import Runner
from tests.fuzz.suite import CI_COUNTS, CI_SEED, run_family

SEED = int(os.environ.get("DEPLOYER_FUZZ_SEED", CI_SEED))


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory, mtcnn_pnet, mtcnn_onet):
    logs = tmp_path_factory.mktemp("fuzz-cache")
    runner = Runner(base_env={"DEPLOYER_CACHE": str(logs), "DEPLOYER_PROGRESS_SECONDS": "3600",
                              "COLUMNS": "200", "OMP_NUM_THREADS": "1"}, jobs=2)
    base = corpus.build(tmp_path_factory.mktemp("fuzz-base"), (mtcnn_pnet.param, mtcnn_pnet.bin),
                        (mtcnn_onet.param, mtcnn_onet.bin), runner)
    return runner, base


def test_fuzz_tier_has_at_least_1000_cases() -> None:
    assert set(CI_COUNTS) == set(FAMILIES)
    assert sum(CI_COUNTS.values()) >= 1000


@pytest.mark.parametrize("family", FAMILIES)
def test_fuzz_family_keeps_every_promise(family: str, fuzz_env, tmp_path: Path) -> None:
    runner, base = fuzz_env
    result = run_family(family, CI_COUNTS[family], SEED, base, runner, tmp_path)
    assert result.cases == CI_COUNTS[family]
    # the family must really reach both outcomes: bad input refused (2), and not everything refused
    assert result.exit_codes.get(2, 0) > 0, result.exit_codes
    assert not result.failures, (f"{len(result.failures)} of {result.cases} {family} cases broke a promise "
                                 f"(seed {SEED}):\n" + "\n".join(result.failures[:15]))
