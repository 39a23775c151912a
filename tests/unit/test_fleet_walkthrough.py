"""Fleet findings of the newcomer walkthrough, without boards: what `status` expects after a stopped
rollout, what a Ctrl-C shows, --shape for models without an input size, readable plans, the added
last wave, the undo hint, the failed health check's name, and board names said once."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.fleet import rollout as ro
from deployer.fleet import service
from deployer.fleet.controller import interrupted_result
from deployer.fleet.executor import ExecutorSpec
from deployer.fleet.ops import BoardResult, DeployOptions, _failed
from deployer.fleet.release import build_release
from tests.fixtures.fleet import model_dir
from tests.fixtures.runner import build_tiny_models

LOCAL = ExecutorSpec("local")


@dataclass
class B:
    name: str


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("walk_tiny"), size=16)


def _state(folder: Path, group: str, release: str, status: str, switched: tuple[str, ...] = ()) -> None:
    boards = {n: {"ok": True, "release": release, "switched": True, "previous": "m-0"} for n in switched}
    ro.state_path(folder, group).parent.mkdir(parents=True, exist_ok=True)
    ro.state_path(folder, group).write_text(json.dumps({"group": group, "release": release, "status": status,
                                                        "boards": boards}))


def _serving(monkeypatch, release: str) -> None:
    """Every board answers the status read with `release`."""
    def fake_fan_out(pool, boards, op, args, **kw):
        return [BoardResult(b.name, True, release, extra={"reachable": True}) for b in boards], []
    monkeypatch.setattr(service, "fan_out", fake_fan_out)


# 1 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["stopped", "failed", "interrupted", "running"])
def test_status_expects_nothing_from_an_unfinished_rollout(tmp_path, monkeypatch, status):
    """A failed canary, then a rollback: every board was called drifting from the refused release."""
    _state(tmp_path, "tag:sim", "m-2", status)
    _serving(monkeypatch, "m-1")
    rep = service.status([B("a"), B("b")], DeployOptions(), executor=LOCAL, max_parallel=2, group="tag:sim",
                         state_dir=tmp_path)
    assert rep.extra["expected"] is None and rep.extra["summary"]["drift"] == 0
    assert all(r.extra["drift"] is None for r in rep.results)
    assert rep.extra["last_rollout"] == {"release": "m-2", "status": status, "switched": []}


def test_status_expects_the_release_of_a_done_rollout(tmp_path, monkeypatch):
    _state(tmp_path, "g", "m-2", "done", ("a",))
    _serving(monkeypatch, "m-1")
    rep = service.status([B("a")], DeployOptions(), executor=LOCAL, max_parallel=1, group="g", state_dir=tmp_path)
    assert rep.extra["expected"] == "m-2" and rep.extra["expected_from"] == "the last rollout"
    assert rep.results[0].extra["drift"] is True


def test_status_text_says_the_last_rollout_stopped(tmp_path, monkeypatch, capsys):
    from deployer.cli.fleet import _status_text

    _state(tmp_path, "tag:sim", "m-2", "stopped")
    _serving(monkeypatch, "m-1")
    rep = service.status([B("a")], DeployOptions(), executor=LOCAL, max_parallel=1, group="tag:sim",
                         state_dir=tmp_path)
    _status_text("tag:sim", rep)
    cap = capsys.readouterr()
    text = " ".join((cap.out + cap.err).split())
    assert "expected: not set" in text and "drift not checked" in text
    assert "the last rollout to tag:sim (m-2) is stopped, so it sets no expected release" in text


# 2 -------------------------------------------------------------------------------------------

def _slow_ok(board, release, opts, on_event=None):
    if board.name == "b2":
        raise KeyboardInterrupt          # Ctrl-C while b1 is still working
    time.sleep(0.3)
    return BoardResult(board.name, True, release.id, action="deployed", stage="done", previous="m-0")


@dataclass
class R:
    id: str = "m-1"


def test_an_interrupted_deploy_carries_where_every_board_ended(monkeypatch):
    monkeypatch.setattr(service, "deploy_board", _slow_ok)
    with pytest.raises(KeyboardInterrupt) as exc:
        service.deploy([B("b1"), B("b2"), B("b3")], R(), DeployOptions(), executor=LOCAL, max_parallel=2)
    report = interrupted_result(exc.value)
    assert [r.board for r in report.results] == ["b1"] and report.results[0].action == "deployed"
    assert report.extra["not_started"] == ["b2", "b3"]


def test_an_interrupted_rollout_records_it_and_carries_its_report(tmp_path, monkeypatch):
    monkeypatch.setattr(ro, "deploy_board", _slow_ok)
    boards = [B("b1"), B("b2"), B("b3")]
    with pytest.raises(KeyboardInterrupt) as exc:
        service.rollout("g", boards, R(), DeployOptions(), waves="1,100%", max_failures="0", max_parallel=1,
                        bake="0", executor=LOCAL, state_dir=tmp_path)
    plan, report = interrupted_result(exc.value)
    doc = report.to_json()
    assert doc["interrupted"] and not doc["ok"] and doc["switched"] == ["b1"]
    assert doc["waves_done"] == 1 and doc["not_started"] == ["b2", "b3"]
    assert ro.load_state(tmp_path, "g")["status"] == "interrupted"


def test_interrupted_cli_prints_the_boards_then_exits_130(tiny, tmp_path, monkeypatch, capsys):
    from deployer.cli import build_app
    from deployer.cli.common import run_app
    from deployer.fleet import controller

    targets = tmp_path / "t.yaml"
    targets.write_text("boards:\n  b1: {host: 127.0.0.1, port: 1}\n  b2: {host: 127.0.0.1, port: 1}\n"
                       "groups:\n  g: [b1, b2]\n")
    part = BoardResult("b1", True, "x", action="deployed", previous="m-0")

    def call(name, boards, release, *a, **kw):
        err = KeyboardInterrupt()
        err.fleet_result = service.FleetReport("deploy", [part], release.id, 1.0, {"not_started": ["b2"]})
        raise err

    monkeypatch.setattr(controller, "call", call)
    args = ["deploy", "g", "--model", str(model_dir(tmp_path, tiny)), "--targets", str(targets), "--persist", "0"]
    assert run_app(build_app(), [*args, "--json"]) == 130
    doc = json.loads(capsys.readouterr().out)
    assert doc["interrupted"] is True and doc["not_started"] == ["b2"]
    assert [(b["board"], b["release"], b["action"]) for b in doc["boards"]] == [("b1", "x", "deployed")]
    assert run_app(build_app(), args) == 130
    cap = capsys.readouterr()
    assert "(interrupted)" in cap.out and "b1" in cap.out
    assert "1 board(s) not started: b2" in " ".join(cap.err.split()) and cap.err.rstrip().endswith("interrupted")


def test_a_resumed_rollout_with_nothing_left_says_so(capsys):
    from deployer.cli.fleet import _rollout_summary

    rep = service.FleetReport("rollout", [BoardResult(n, True, "m-1", action="done-earlier") for n in "ab"], "m-1",
                              0.1, {"stopped": False, "budget": 0, "waves": [], "waves_done": 0, "not_started": [],
                                    "skipped": ["a", "b"], "failed": [], "switched": ["a", "b"]})
    _rollout_summary("g", rep, 2)
    out = " ".join(capsys.readouterr().err.split())
    assert "0/0" not in out and "no wave left: 2 board(s) done by an earlier run" in out


# 3 and 6 -------------------------------------------------------------------------------------

def _shapeless(tmp_path: Path, tiny) -> Path:
    d = model_dir(tmp_path, tiny, 7)
    param = d / "tiny_int8.param"
    param.write_text(param.read_text().replace(" 0=16 1=16 2=3", "", 1))
    return d


def test_a_model_without_input_size_needs_shape_or_no_health(tiny, tmp_path):
    d = _shapeless(tmp_path, tiny)
    with pytest.raises(DeployerError, match=r"tiny_int8.param.*pass --shape W,H,C.*or --no-health") as exc:
        build_release(d, workdir=tmp_path / "w0")
    assert exc.value.exit_code == 2
    with build_release(d, health=False) as unchecked:
        assert unchecked.expected is None
    a = build_release(d, workdir=tmp_path / "w1", shape=[16, 16, 3])
    b = build_release(d, workdir=tmp_path / "w2", shape=[16, 16, 3])
    assert a.expected is not None and a.shape == [16, 16, 3] and a.id == b.id     # same model + options: same id
    # the health data is part of the payload, so --no-health names another release (release.py says why)
    assert unchecked.id != a.id


def test_shape_that_contradicts_the_input_layer_is_refused(tiny, tmp_path):
    with pytest.raises(DeployerError, match="--shape 8,8,3 differs from the input size 16,16,3"):
        build_release(model_dir(tmp_path, tiny, 8), workdir=tmp_path / "w", shape=[8, 8, 3])
    from deployer.ncnn.validate import parse_shape_option as parse_shape

    assert parse_shape("224,224,3") == [224, 224, 3]
    with pytest.raises(DeployerError, match="--shape"):
        parse_shape("224x224")


# 4 and 5 -------------------------------------------------------------------------------------

def test_plans_read_well_on_a_terminal():
    from deployer.cli.fleet import _plan_line

    plan = {"files": {"m.bin": 3_500_000, "m.param": 2_000}, "wave_boards": [["sim-1"], ["sim-2"], ["sim-3", "sim-4"]],
            "last_wave_added": True, "steps": ["connect", "switch"], "skipped": []}
    text = "\n".join(_plan_line(k, v, plan) for k, v in plan.items() if k != "last_wave_added")
    assert "[" not in text and "{" not in text
    assert "m.bin    3.50 MB" in text and "m.param  2.0 kB" in text
    assert "3. 2 board(s): sim-3, sim-4  (added:" in text and "a last wave to 100% is added" in text
    assert "1. connect" in text and "skipped: (none)" in text
    assert _plan_line("bake_s", 30.0, plan) == "bake: 30 s" and _plan_line("size", 31, plan) == "size: 31 B"


def test_an_added_last_wave_is_known_to_the_plan():
    boards = [B(f"s{i}") for i in range(1, 5)]
    plan = ro.plan_rollout("g", boards, "m", ro.parse_waves("1,50%"), "0", 4, 0.0, None, False)
    assert [len(w) for w in plan.waves] == [1, 1, 2] and plan.last_wave_added
    plan = ro.plan_rollout("g", boards, "m", ro.parse_waves("1,50%,100%"), "0", 4, 0.0, None, False)
    assert not plan.last_wave_added
    assert ro.adds_last_wave(["2"], 2) is False and ro.adds_last_wave(["1"], 2) is True


# 7 -------------------------------------------------------------------------------------------

def test_undo_hint_only_when_a_board_switched(capsys):
    from deployer.cli.fleet import _rollout_summary

    def stopped(switched):
        return service.FleetReport("rollout", [BoardResult("a", False, "m-0", action="failed", error="a: no")], "m-1",
                                   0.1, {"stopped": True, "budget": 0, "waves": [1, 3], "waves_done": 1,
                                         "not_started": ["b", "c", "d"], "skipped": [], "failed": [{"board": "a"}],
                                         "switched": switched})
    _rollout_summary("tag:sim", stopped([]), 4)
    err = " ".join(capsys.readouterr().err.split())
    assert "rollback" not in err and "no board was switched" in err
    _rollout_summary("tag:sim", stopped(["a"]), 4)
    assert "undo the 1 switched board(s) with: deployer rollback tag:sim --rollout" in " ".join(
        capsys.readouterr().err.split())


def test_a_blocked_rollback_is_told_to_run_the_rollback_again(tmp_path):
    _state(tmp_path, "g", "m-1", "running", ("a",))
    with ro.state_lock(tmp_path, "g"):
        with pytest.raises(DeployerError, match="another rollout to group g is running") as exc:
            service.rollback([B("a")], None, DeployOptions(), executor=LOCAL, max_parallel=1, state_dir=tmp_path,
                             group="g", use_rollout=True)
    assert "rollback g --rollout` again" in exc.value.hint and "roll out again" not in exc.value.hint


# 8 -------------------------------------------------------------------------------------------

def test_a_latency_failure_names_the_latency_check(monkeypatch):
    import base64

    from deployer.cli.fleet import _health_check
    from deployer.fleet import health
    from deployer.remote.layout import BoardLayout

    data = base64.b64encode(b"\0\0\x80?" * 4).decode()
    expected = {"shape": [4], "data": data, "ncnn": "1", "machine": "aarch64"}
    lines = [{"type": "board", "facts": {"ncnn_version": "2", "machine": "armv7l"}},
             {"type": "output", "shape": [4], "data": data}, {"type": "stats", "median_ms": 12.5}]
    monkeypatch.setattr(health, "_run_whole", lambda conn, argv, policy: (lines, ""))

    @dataclass
    class Rel:
        id: str = "m-1"
        param: str = "m.param"
        bin: str = "m.bin"
        shape: tuple = (2, 2, 1)
        expected: dict = None

    res = health.check(None, BoardLayout(), Rel(expected=expected), health.BoardRuntime("python", "/w", "2"),
                       health.HealthPolicy(max_latency_ms=5))
    assert not res.ok and res.failed == "latency<=5ms" and res.gate == "cosine>=0.99"
    assert _health_check(res.to_json()) == "latency<=5ms"
    assert _health_check({"ok": True, "gate": "identical"}) == "identical"


# 9 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("message", ["a: release m-1 is not on the board", "release m-1 is not on the board"])
def test_the_board_is_named_once(message):
    res = _failed(BoardResult("a", False, None), DeployerError(message), None)
    assert res.error == "a: release m-1 is not on the board"
