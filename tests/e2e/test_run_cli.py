"""`deployer run / push / runtime` as a user types them, against the real loopback sshd board."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.runner import require_cached_wheels, tiny_models  # noqa: F401  (fixture)

DEPLOYER = [str(Path(sys.executable).with_name("deployer"))]


def deployer(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    return subprocess.run([*DEPLOYER, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.sshd
def test_run_json_and_results_file(sshd, tiny_models, tmp_path: Path) -> None:
    require_cached_wheels("x86_64")
    p = deployer("run", "loop", "--targets", str(sshd.targets), "--param", str(tiny_models.int8_param),
                 "--bin", str(tiny_models.int8_bin), "-n", "4", "--warmup", "1", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] is True and out["board"] == "loop" and out["machine"] == "x86_64"
    assert len(out["samples_ms"]) == out["count"] == 4
    for key in ("median_ms", "mean_ms", "min_ms", "p90_ms", "p99_ms", "std_ms"):
        assert isinstance(out[key], float)
    assert out["min_ms"] <= out["median_ms"] <= out["p99_ms"]
    # nothing set in targets or flags: ncnn's own defaults (physical big cores, fp16 on)
    import ncnn

    assert out["options"]["threads"] == ncnn.get_physical_big_cpu_count() and out["options"]["fp16"] is True
    assert out["probe"]["glibc"] and out["probe"]["wheel_arch"] == "x86_64" and "models" not in out["probe"]
    saved = Path(out["saved_to"])
    assert not saved.is_absolute() and saved.parts[:2] == ("results", "loop")
    assert json.loads((tmp_path / saved).read_text())["samples_ms"] == out["samples_ms"]


@pytest.mark.sshd
def test_push_then_human_run(sshd, tiny_models, tmp_path: Path) -> None:
    require_cached_wheels("x86_64")
    p = deployer("push", "loop", "--targets", str(sshd.targets), "--param", str(tiny_models.fp32_param),
                 "--bin", str(tiny_models.fp32_bin), "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)                   # one board: its object (several: {"ok", "boards"})
    assert report["ok"] is True and report["board"] == "loop"
    assert report["files"]["param"].endswith("/models/tiny.param")
    p = deployer("run", "loop", "--targets", str(sshd.targets), "--param", str(tiny_models.fp32_param),
                 "--bin", str(tiny_models.fp32_bin), "-n", "3", "--no-int8", "--no-fp16", "--threads", "1", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["options"]["fp16"] is False and out["options"]["int8"] is False and out["options"]["threads"] == 1


@pytest.mark.sshd
def test_missing_wheel_is_one_line_with_fetch_command(sshd, tiny_models, tmp_path: Path) -> None:
    p = deployer("run", "loop", "--targets", str(sshd.targets), "--param", str(tiny_models.int8_param),
                 "--bin", str(tiny_models.int8_bin), env={"DEPLOYER_CACHE": str(tmp_path / "empty")}, cwd=tmp_path)
    assert p.returncode == 2
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "run: deployer runtime fetch --arch x86_64 --python 3.11" in " ".join(p.stderr.split())


@pytest.mark.sshd
def test_probe_json_and_table(sshd) -> None:
    import platform

    p = deployer("probe", "loop", "--targets", str(sshd.targets), "--json")
    assert p.returncode == 0, p.stderr
    facts = json.loads(p.stdout)
    assert facts["wheel_arch"] == platform.machine() and facts["python"].startswith("3.")
    p = deployer("probe", "loop", "--targets", str(sshd.targets))
    assert p.returncode == 0, p.stderr
    assert "wheel_arch" in p.stdout and platform.machine() in p.stdout


def test_bad_input_errors_exit_2(tmp_path: Path, tiny_models) -> None:
    targets = tmp_path / "t.yaml"
    targets.write_text("boards:\n  pi:\n    host: 10.0.0.1\n    user: pi\n")
    cases = [
        (["run", "nosuch", "--targets", str(targets), "--param", str(tiny_models.int8_param), "--bin",
          str(tiny_models.int8_bin)], "nosuch"),
        (["run", "pi", "--targets", str(targets), "--param", str(tmp_path / "x.param"), "--bin",
          str(tiny_models.int8_bin)], "x.param: no such file"),
        (["run", "pi", "--targets", str(targets), "--param", str(tiny_models.int8_param), "--bin",
          str(tiny_models.int8_bin), "--shape", "3,a"], "--shape"),
        (["run", "pi", "--param", str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin)], "no targets"),
        (["runtime", "fetch", "--arch", "mips", "--python", "3.11"], "mips"),
    ]
    for args, needle in cases:
        p = deployer(*args, cwd=tmp_path, timeout=30)
        assert p.returncode == 2, (args, p.stderr)
        assert needle in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_runtime_list_json(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / "ncnn-1.0.20261020-cp311-cp311-manylinux_2_31_armv7l.whl").write_bytes(b"x")
    p = deployer("runtime", "list", "--json", env={"DEPLOYER_CACHE": str(cache)})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [w["platforms"] for w in out["wheels"]] == [["manylinux_2_31_armv7l"]]


@pytest.mark.boards
@pytest.mark.slow
def test_run_a_group_of_emulated_boards(sim_boards, tiny_models, tmp_path: Path) -> None:
    require_cached_wheels("aarch64", "armv7l")
    groups = tmp_path / "groups.yaml"
    groups.write_text(f"groups:\n  arm: [{sim_boards.pi4}, {sim_boards.armhf}]\n")
    p = deployer("run", "arm", "--targets", str(sim_boards.targets), "--targets", str(groups),
                 "--param", str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin),
                 "-n", "3", "--warmup", "1", "--threads", "1", "--no-fp16", "--compare", "--json", cwd=tmp_path,
                 timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    boards = doc["boards"]
    assert doc["ok"] is True and [b["board"] for b in boards] == [sim_boards.pi4, sim_boards.armhf]
    assert [b["machine"] for b in boards] == ["aarch64", "armv7l"]
    assert all(b["count"] == 3 and b["cpu"] for b in boards)
    for b in boards:
        assert (tmp_path / b["saved_to"]).is_file()
        # the host ran the same runner on x86: ARM int8 output within 1e-6 of it
        assert b["host_compare"]["max_abs_diff"] <= 1e-6 and b["host_compare"]["count"] == 10
        assert "output" not in b  # --compare alone does not dump the tensor


@pytest.mark.sshd
def test_ctrl_c_on_the_host_stops_the_board(sshd, tiny_models, tmp_path: Path) -> None:
    require_cached_wheels("x86_64")
    import signal
    import time

    from tests.integration.test_run_loopback import runner_pids

    proc = subprocess.Popen([*DEPLOYER, "run", "loop", "--targets", str(sshd.targets), "--param",
                             str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin), "--shape", "384,384,3",
                             "--duration", "60", "--threads", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not runner_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runner_pids(), "the runner never started on the board"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while runner_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runner_pids() == []
    assert not (tmp_path / "results").exists()  # nothing half-written


@pytest.mark.sshd
def test_human_output(sshd, tiny_models, tmp_path: Path) -> None:
    require_cached_wheels("x86_64")
    p = deployer("run", "loop", "--targets", str(sshd.targets), "--param", str(tiny_models.int8_param),
                 "--bin", str(tiny_models.int8_bin), "-n", "3", "--threads", "1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "median" in p.stdout and "loop" in p.stdout
    assert "threads 1" in p.stderr and "results/loop/" in p.stderr


@pytest.mark.sshd
def test_group_keeps_going_past_a_dead_board(sshd, tiny_models, tmp_path: Path) -> None:
    require_cached_wheels("x86_64")
    from tests.fixtures.sshd import free_port

    extra = tmp_path / "fleet.yaml"
    extra.write_text(
        f"boards:\n  dead:\n    host: 127.0.0.1\n    port: {free_port()}\n    user: {sshd.user}\n"
        f"    key: {sshd.client_key}\n    known_hosts: {sshd.known_hosts}\n    retries: 0\n    timeout: 2\n"
        "groups:\n  fleet: [dead, loop]\n")
    p = deployer("run", "fleet", "--targets", str(sshd.targets), "--targets", str(extra), "--param",
                 str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin), "-n", "2", "--threads", "1",
                 "--json", cwd=tmp_path)
    assert p.returncode == 3, p.stderr
    doc = json.loads(p.stdout)
    dead, loop = doc["boards"]
    assert doc["ok"] is False and dead["ok"] is False and dead["exit_code"] == 3 and dead["board"] == "dead" and "Connection refused" in dead["error"]
    assert loop["ok"] is True and loop["count"] == 2
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("error:")][0].startswith("error: board 'dead'")
