"""Rollout planning (waves, failure budget, durations, resume) and executor parsing: pure logic."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from deployer.errors import DeployerError
from deployer.fleet.executor import parse_executor
from deployer.fleet.rollout import failure_budget, parse_duration, parse_waves, plan_rollout, wave_sizes


@dataclass
class B:
    name: str


def test_waves_are_cumulative_targets():
    assert wave_sizes(parse_waves("1,10%,50%,100%"), 200) == [1, 19, 80, 100]
    assert wave_sizes(parse_waves("1,10%,50%,100%"), 3) == [1, 1, 1]
    assert wave_sizes(parse_waves("1,10%"), 10) == [1, 9]          # whoever is left forms a last wave
    assert wave_sizes(parse_waves("5"), 2) == [2]
    assert wave_sizes(parse_waves("50%,10%,100%"), 10) == [5, 5]   # a smaller target adds nothing


@pytest.mark.parametrize("bad", ["", "0", "x", "10%%", "150%", "1,-2", "0%"])
def test_bad_waves_are_refused(bad):
    with pytest.raises(DeployerError, match="--waves"):
        parse_waves(bad)


def test_failure_budget():
    assert failure_budget("5%", 200) == 10
    assert failure_budget("5%", 10) == 0
    assert failure_budget("3", 10) == 3
    for bad in ("-1", "x", "101%"):
        with pytest.raises(DeployerError, match="--max-failures"):
            failure_budget(bad, 10)


def test_durations():
    assert parse_duration("30s") == 30 and parse_duration("2m") == 120 and parse_duration("0") == 0
    assert parse_duration("250ms") == 0.25
    with pytest.raises(DeployerError, match="--bake"):
        parse_duration("soon")


def test_plan_and_resume():
    boards = [B(f"b{i}") for i in range(1, 11)]
    plan = plan_rollout("g", boards, "m-1", parse_waves("1,50%,100%"), "10%", 4, 0.0, None, False)
    assert [len(w) for w in plan.waves] == [1, 4, 5] and plan.budget == 1
    assert [n for w in plan.waves for n in w] == [b.name for b in boards]
    done = {"release": "m-1", "boards": {"b1": {"ok": True, "release": "m-1"}, "b2": {"ok": False},
                                          "b3": {"ok": True, "release": "m-0"}}}
    plan = plan_rollout("g", boards, "m-1", parse_waves("100%"), "0", 4, 0.0, done, True)
    assert plan.skipped == ["b1"] and plan.waves[0][0] == "b2"
    with pytest.raises(DeployerError, match="--resume"):
        plan_rollout("g", boards, "m-2", parse_waves("100%"), "0", 4, 0.0, done, True)


def test_executor_specs():
    assert parse_executor(None).local and parse_executor("local").local
    spec = parse_executor("dask://10.0.0.5:8786")
    assert spec.kind == "dask" and spec.address == "tcp://10.0.0.5:8786"
    for bad in ("dask://", "dask://host", "ray://x:1", "threads"):
        with pytest.raises(DeployerError, match="--executor"):
            parse_executor(bad)
