"""`make demo`'s path, end to end, as CI runs it: scripts/demo.sh in a private simulator instance
(DEPLOYER_SIM_DIR, its own targets folder) and a temp build folder, so it never touches a user's
boards or the repository's build/. Every step's real result is checked, not just the exit code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deployer.sim.net import netns_names
from deployer.sim.procs import ProcRef
from tests.fixtures.boards import board_skip_reason
from tests.fixtures.tiers import unavailable

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.sh"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update(DEPLOYER_SIM_DIR=str(tmp_path / "state"), DEMO_TARGETS_DIR=str(tmp_path / "targets"),
               DEMO_ROOT=str(tmp_path / "root"), DEPLOYER_PROGRESS_SECONDS="30")
    return env


def _down(env: dict) -> None:
    subprocess.run([str(ROOT / ".venv" / "bin" / "deployer"), "sim", "down", "--targets-dir", env["DEMO_TARGETS_DIR"]],
                   capture_output=True, env=env, timeout=300, cwd=ROOT)


@pytest.fixture
def demo_env(tmp_path: Path):
    reason = board_skip_reason()
    if reason:
        unavailable(reason)
    if not (ROOT / ".venv" / "bin" / "deployer").exists():
        unavailable("scripts/demo.sh runs .venv/bin/deployer: run `make setup` first")
    env = _env(tmp_path)
    yield env
    _down(env)  # the demo leaves its board up on success; never leave one behind


def _run_demo(env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DEMO)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


@pytest.mark.slow
@pytest.mark.boards
def test_demo_runs_every_step_for_real(demo_env, tmp_path: Path) -> None:
    import ncnn

    res = _run_demo(demo_env, timeout=3600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, res.stderr[-4000:]
    assert "\x1b" not in log  # a log file gets no escape codes
    for n in range(1, 7):
        assert f"== {n}/6 " in res.stderr

    build = tmp_path / "root" / "build"
    int8 = build / "mobilenet_v2_int8" / "mobilenet_v2_int8"
    # quantize: the four files, its report says the profile's gate held
    for ext in ("param", "bin", "table", "json"):
        assert int8.with_suffix(f".{ext}").stat().st_size > 0
    report = json.loads(int8.with_suffix(".json").read_text())
    assert report["ok"] is True and report["gate"]["passed"] is True
    assert report["sizes"]["fp32_bin"] / report["sizes"]["int8_bin"] >= 3.5
    # the method was chosen on agreement over the inputs fp32 decides clearly; near-ties are counted apart
    out0 = report["heldout"]["outputs"]["out0"]
    assert report["methods"][report["method"]]["score_by"].keys() == {"cosine+top1_clear"}
    assert 0 <= out0["top1_near_ties"] < report["eval"]["count"]
    assert report["eval"]["groups"] == out0["groups"] == 20        # intervals over the photos, not the views
    lo, hi = out0["top1_agreement_clear_ci"]
    assert lo <= out0["top1_agreement_clear"] <= hi
    # how settled the method choice is, resampled over the 20 photos, is in the report and the log
    st = report["method_stability"]
    assert st["chosen"] == report["method"] and st["units"] == 20 and st["unit"] == "photos (eval.group)"
    assert f"choice: {report['method']} wins " in res.stderr

    # the int8 files load in stock ncnn and classify an input
    net = ncnn.Net()
    net.opt.use_int8_inference = True
    assert net.load_param(str(int8.with_suffix(".param"))) == 0
    assert net.load_model(str(int8.with_suffix(".bin"))) == 0
    ex = net.create_extractor()
    ex.input(net.input_names()[0], ncnn.Mat(np.random.default_rng(0).standard_normal((3, 224, 224)).astype(np.float32)))
    rc, out = ex.extract(net.output_names()[0])
    logits = np.array(out).ravel()
    assert rc == 0 and logits.size == 1000 and np.isfinite(logits).all()

    # check: every gate line passed
    gates = [ln for ln in res.stderr.splitlines() if ln.startswith("gate ")]
    assert gates and all(": pass (" in ln for ln in gates), gates

    # push: the runtime and the model landed on the board
    assert any(ln.startswith("sim-1: runtime ") and "file(s) uploaded" in ln for ln in res.stderr.splitlines())

    # run: 8 timed iterations on the emulated Cortex-A72, output bit-identical to the host's ncnn
    saved = [json.loads(f.read_text()) for f in sorted((build / "results" / "sim-1").glob("*.json"))]
    (result,) = [r for r in saved if r.get("host_compare") is not None]  # step 6 (a later per-layer run may follow)
    assert result["ok"] is True and result["count"] == 8 and result["machine"] == "aarch64"
    assert result["host_compare"]["identical"] is True
    assert "sim-1: output vs host ncnn: bit-identical" in res.stderr

    _fleet_walkthrough(demo_env, tmp_path, int8.parent)


def _fleet_walkthrough(env: dict, tmp_path: Path, model: Path) -> None:
    """docs/fleet.md's "small fleet, from zero" on the demo's own int8 MobileNetV2: three emulated
    Pi 4s, a rollout in waves with the health check on the board, status, a second release, a
    broken one the canary's health check stops, and rollbacks - through the persistent controller,
    as a user's commands run by default."""
    from deployer.fleet import controller

    deployer = str(ROOT / ".venv" / "bin" / "deployer")
    targets = Path(env["DEMO_TARGETS_DIR"]) / "sim.yaml"
    work = tmp_path / "fleet"
    work.mkdir()
    fenv = {**env, "DEPLOYER_PERSIST": "120"}

    def cli(*args: str, code: int = 0) -> dict:
        proc = subprocess.run([deployer, *args, "--json"], capture_output=True, text=True, env=fenv, cwd=work,
                              timeout=900)
        assert proc.returncode == code, (args, proc.stderr[-3000:])
        return json.loads(proc.stdout)

    try:
        cli("sim", "up", "--arch", "arm64", "--count", "3", "--targets-dir", env["DEMO_TARGETS_DIR"])
        t = ("--targets", str(targets))
        first = cli("rollout", "tag:sim", "--model", str(model), "--waves", "1,50%,100%", "--max-failures", "0", *t)
        r1 = first["release"]
        assert first["ok"] and first["waves"] == [1, 1, 1] and len(first["boards"]) == 3
        for b in first["boards"]:
            assert b["ok"] and b["release"] == r1 and b["health"]["ok"] and b["health"]["identical"], b
        st = cli("status", "tag:sim", *t)
        assert all(b["release"] == r1 and b["drift"] is False and b["connection"] == "reused" for b in st["boards"])
        assert st["boards"][0]["model"] and st["boards"][0]["last_health"]["ok"]

        second = tmp_path / "mnv2_second"           # a second release: the same model, another report
        second.mkdir()
        for f in model.iterdir():
            (second / f.name).write_bytes(f.read_bytes())
        report = second / "mobilenet_v2_int8.json"
        report.write_text(json.dumps({**json.loads(report.read_text()), "note": "second release"}))
        two = cli("rollout", "tag:sim", "--model", str(second), "--waves", "1,100%", *t)
        r2 = two["release"]
        assert two["ok"] and r2 != r1 and all(b["release"] == r2 for b in two["boards"])
        assert all(b["sent_bytes"] < 100_000 for b in two["boards"]), "only the changed file travels"

        third = tmp_path / "mnv2_third"
        third.mkdir()
        for f in second.iterdir():
            (third / f.name).write_bytes(f.read_bytes())
        report = third / "mobilenet_v2_int8.json"
        report.write_text(json.dumps({**json.loads(report.read_text()), "note": "third release"}))
        bad = cli("rollout", "tag:sim", "--model", str(third), "--max-latency", "5", "--waves", "1,100%",
                  "--max-failures", "0", *t, code=1)
        assert bad["stopped"] is True and len(bad["failed"]) == 1 and len(bad["not_started"]) == 2
        assert "latency" in bad["failed"][0]["error"]
        assert all(b["release"] == r2 for b in bad["boards"]), "a failed health check leaves the old release"

        nothing = cli("rollback", "tag:sim", "--rollout", *t, code=2)   # the stopped rollout switched none
        assert "switched no board" in json.dumps(nothing)
        back = cli("rollback", "tag:sim", *t)
        assert back["ok"] and all(b["release"] == r1 for b in back["boards"])
        st = cli("status", "tag:sim", "--expect", r1, *t)
        assert st["summary"]["drift"] == 0 and st["summary"]["reachable"] == 3
    finally:
        controller.stop(controller.socket_path(work, fenv))


@pytest.mark.boards
def test_a_failed_demo_says_which_step_and_stops_the_board_it_started(demo_env, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "build").write_text("a file where the build folder should be\n")  # step 2 cannot write
    res = _run_demo(demo_env, timeout=600)
    assert res.returncode != 0
    lines = res.stderr.splitlines()
    assert any(ln.startswith("demo: FAILED at step 2/6 ") for ln in lines), res.stderr[-3000:]
    assert "demo: stopping the board(s) it started: sim-1" in lines
    assert "Traceback" not in res.stderr and "\x1b" not in res.stderr
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["boards"] == []
    assert not (tmp_path / "targets" / "sim.yaml").exists()


@pytest.mark.boards
def test_a_failed_demo_leaves_a_board_that_was_already_up(demo_env, tmp_path: Path) -> None:
    deployer = str(ROOT / ".venv" / "bin" / "deployer")
    up = subprocess.run([deployer, "sim", "up", "--targets-dir", demo_env["DEMO_TARGETS_DIR"], "--json"],
                        capture_output=True, text=True, env=demo_env, timeout=300, cwd=ROOT)
    assert up.returncode == 0, up.stderr
    board = json.loads((tmp_path / "state" / "state.json").read_text())["boards"][0]
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "build").write_text("not a folder\n")
    res = _run_demo(demo_env, timeout=600)
    assert res.returncode != 0 and "demo: FAILED at step 2/6 " in res.stderr
    assert "stopping the board" not in res.stderr
    assert ProcRef(**board["init"]).alive() and f"dsim-{board['slot']}" in netns_names()
