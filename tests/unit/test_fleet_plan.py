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


def test_absurd_bake_is_refused_before_any_wave():
    """`--bake 99999999999s` used to pass the plan, switch wave 1, then die in time.sleep (OverflowError, exit 4)."""
    from deployer.fleet.rollout import MAX_BAKE_S

    assert parse_duration(f"{MAX_BAKE_S}s") == MAX_BAKE_S and parse_duration("168h") == MAX_BAKE_S
    for bad in ("99999999999s", "9" * 400, "169h"):
        with pytest.raises(DeployerError, match="--bake .*at most 7 days"):
            parse_duration(bad)


@pytest.mark.parametrize("kw, needle", [
    # NaN passed every `x < 0` check: a NaN deadline never fired, a NaN lock wait became 0, a NaN
    # latency budget never failed; inf lock waits crashed on int(inf); a negative budget failed every board
    ({"deadline": float("nan")}, "--deadline"), ({"deadline": float("inf")}, "--deadline"),
    ({"lock_wait": float("nan")}, "--lock-wait"), ({"lock_wait": float("inf")}, "--lock-wait"),
    ({"lock_wait": 1e300}, "--lock-wait"), ({"max_latency": -1.0}, "--max-latency"),
    ({"max_latency": 0.0}, "--max-latency"), ({"max_latency": float("nan")}, "--max-latency"),
])
def test_fleet_options_refuse_nan_and_absurd_numbers(kw, needle):
    from deployer.cli.fleet import _options

    with pytest.raises(DeployerError, match=needle):
        _options(**kw)
    assert _options(deadline=30.0, lock_wait=0.0, max_latency=50.0).health.max_latency_ms == 50.0


@pytest.mark.parametrize("persist", [float("nan"), float("inf"), -1.0])
def test_persist_must_be_finite(persist):
    """--persist inf left a controller process running for ever; NaN slipped through as 'off'."""
    from deployer.cli.fleet import _call

    with pytest.raises(DeployerError, match="--persist"):
        _call("local", persist)


@pytest.mark.parametrize("env", ["nan", "inf", "-1"])
def test_bad_persist_from_the_environment_names_the_variable(env, monkeypatch):
    """DEPLOYER_PERSIST=nan was reported as `--persist must be ...`, a flag the user never gave."""
    from deployer.cli.fleet import _call

    monkeypatch.setenv("DEPLOYER_PERSIST", env)
    with pytest.raises(DeployerError, match=f"^DEPLOYER_PERSIST='{env}' must be 0"):
        _call("local", None)
    with pytest.raises(DeployerError, match="^--persist must be 0"):     # the flag still wins and is named
        _call("local", float(env))


@pytest.mark.parametrize("state, needle", [
    ({"release": "r", "boards": {"b1": "notadict"}}, "board 'b1': expected an object"),
    ({"release": "r", "boards": {"b1": {"switched": True, "previous": 5}}}, "previous must be a release id"),
    ({"release": ["r"], "boards": {}}, "release must be a release id"),
])
def test_damaged_rollout_state_is_one_line(tmp_path, state, needle):
    """A hand-edited rollouts/<group>.json crashed --resume and rollback --rollout (AttributeError, exit 4)."""
    import json

    from deployer.fleet.rollout import load_state, state_path

    state_path(tmp_path, "g").write_text(json.dumps(state))
    with pytest.raises(DeployerError, match=f"unreadable rollout state .*{needle}"):
        load_state(tmp_path, "g")


def test_ctrl_c_lets_the_boards_already_started_finish_before_unwinding():
    """The CLI removes the release's temporary folder as it unwinds from Ctrl-C: a board still running
    then failed with FileNotFoundError on the release's manifest. Started boards finish first, and
    their results are reported (a rollout's state must list a board switched after the Ctrl-C)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from deployer.fleet.fanout import fan_out
    from deployer.fleet.ops import BoardResult

    finished = []
    started = threading.Event()

    def op(board):
        if board.name == "slow":
            started.set()
            time.sleep(0.5)
            finished.append(board.name)
        return BoardResult(board.name, True, None)

    reported = []

    def ctrl_c(result):
        reported.append(result.board)
        if len(reported) == 1:
            started.wait(5)
            raise KeyboardInterrupt

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(KeyboardInterrupt):
            fan_out(pool, [B("fast"), B("slow"), B("later")], op, (), max_parallel=2, on_result=ctrl_c)
        assert finished == ["slow"]
    assert reported == ["fast", "slow"]      # a rollout records the switch of the board that finished


def test_an_interrupted_controller_client_waits_for_the_controllers_answer():
    """Same through the persistent controller: the client says it went away (EOF: no further board
    starts) but unwinds, removing the release's files, only once the running boards are done."""
    import socket
    import threading
    import time

    from deployer.fleet import controller

    client, server = socket.socketpair()
    order = []

    def serve():
        controller._recv(server)
        controller._send(server, ("event", {"board": "b1"}))
        while server.recv(4096):          # until the client's EOF
            pass
        order.append("eof")
        time.sleep(0.2)                   # the running board finishes
        order.append("result")
        controller._send(server, ("result", "report"))
        server.close()

    def ctrl_c(event):
        raise KeyboardInterrupt

    thread = threading.Thread(target=serve)
    thread.start()
    with pytest.raises(KeyboardInterrupt):
        controller._remote(client, "deploy", (), {}, 1.0, ctrl_c)
    order.append("unwound")
    thread.join(5)
    assert order == ["eof", "result", "unwound"]


def test_a_terminated_controller_removes_its_socket_and_empty_log(tmp_path):
    """SIGTERM (a shutdown, `kill`) ended the controller on the spot: its socket and log stayed in
    the deployer cache."""
    import signal
    import subprocess
    import sys
    import time

    sock, log = tmp_path / "c.sock", tmp_path / "c.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deployer.fleet.controller", "--socket", str(sock),
                                 "--persist", "60"], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 15
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".start.lock"]   # shared by every controller


def test_a_client_that_connects_as_the_idle_controller_exits_is_served(tmp_path, monkeypatch):
    """The controller exited after `persist` idle seconds by closing its listener, dropping a client
    that had connected since its last look: that command failed with "the fleet controller process
    ended in the middle of the command". It now unlinks the socket first and serves such a client."""
    import socket
    import threading

    from deployer.fleet import controller
    from deployer.ssh import pool

    monkeypatch.setattr(pool, "_active", None)
    server = controller._Server(tmp_path / "c.sock", 0.0)
    client: list[socket.socket] = []
    reap = server.pool.reap

    def a_client_connects_now() -> int:     # right after select() found nothing, before the idle check
        if not client:
            client.append(controller._connect(server.path))
            controller._send(client[0], {"op": "stop"})
        return reap()

    monkeypatch.setattr(server.pool, "reap", a_client_connects_now)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    with client[0]:
        assert controller._recv(client[0]) == ("result", True)
    assert not server.path.exists()
