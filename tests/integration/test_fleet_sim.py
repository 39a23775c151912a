"""Fleet operations on emulated boards: light boards (`sim up --arch host`: an sshd per board in its own
network namespace) for a rollout in which boards lose power, and the ARM boards (qemu-user) for the
health gate on real arm64/armhf userlands."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from deployer.fleet import service
from deployer.fleet.executor import ExecutorSpec
from deployer.fleet.health import HealthPolicy
from deployer.fleet.ops import DeployOptions, deploy_board
from deployer.fleet.release import build_release
from deployer.targets import load_targets
from tests.fixtures.boards import board_skip_reason
from tests.fixtures.fleet import model_dir
from tests.fixtures.runner import build_tiny_models

pytestmark = pytest.mark.boards
LOCAL = ExecutorSpec("local")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("fleet_sim_tiny"), size=32)


@pytest.fixture(scope="module")
def light_boards(tmp_path_factory):
    """Six light boards in a private simulator instance (its own state dir and registry)."""
    reason = board_skip_reason()
    if reason:
        pytest.skip(reason)
    import os

    from deployer.sim.manager import sim_down, sim_up

    base = tmp_path_factory.mktemp("light")
    old = os.environ.get("DEPLOYER_SIM_REGISTRY")
    os.environ["DEPLOYER_SIM_REGISTRY"] = str(base / "registry")
    state_dir, targets_dir = base / "state", base / "targets"
    try:
        result = sim_up(arch="host", count=6, targets_dir=targets_dir, state_dir=state_dir)
        yield result.targets, state_dir, [b.name for b in result.added]
    finally:
        sim_down(state_dir=state_dir)
        if old is None:
            os.environ.pop("DEPLOYER_SIM_REGISTRY", None)
        else:
            os.environ["DEPLOYER_SIM_REGISTRY"] = old


def test_light_boards_are_separate_boards(light_boards, tiny, tmp_path):
    targets, state_dir, names = light_boards
    inv = load_targets(targets)
    boards = [inv.boards[n] for n in names]
    rel = build_release(model_dir(tmp_path, tiny, 1), workdir=tmp_path / "w")
    report = service.deploy(boards[:2], rel, DeployOptions(), executor=LOCAL, max_parallel=2)
    assert report.ok, [r.error for r in report.results]
    st = service.status(boards, DeployOptions(), executor=LOCAL, max_parallel=6, expect=rel.id)
    got = {r.board: r.release for r in st.results}
    # the two boards deployed to serve the release; the others, with their own homes, have none
    assert got == {n: (rel.id if n in names[:2] else None) for n in names}
    assert st.extra["summary"]["reachable"] == 6 and st.extra["summary"]["drift"] == 4
    homes = {Path(state_dir, "boards", n, "home", ".deployer", "current").is_symlink() for n in names[:2]}
    assert homes == {True}


def test_boards_powered_off_mid_rollout_fail_alone_within_the_deadline(light_boards, tiny, tmp_path):
    """One board's namespace is destroyed mid-upload (sshd gone), another's link goes silent mid-commit
    (a pulled cable: no reset, nothing answers). Both fail, the silent one at its deadline; the other
    boards finish the rollout inside the failure budget."""
    from deployer.sim.manager import sim_down
    from deployer.sim.state import load_state

    targets, state_dir, names = light_boards
    inv = load_targets(targets)
    boards = [inv.boards[n] for n in names]
    off, silent = names[2], names[3]
    slots = {b.name: b.slot for b in load_state(state_dir).boards}
    rel = build_release(model_dir(tmp_path, tiny, 2), workdir=tmp_path / "w")
    acted: dict[str, float] = {}
    lock = threading.Lock()

    def on_event(ev):
        board, stage = ev.get("board"), ev.get("stage")
        with lock:
            if board == off and stage == "upload" and off not in acted:
                acted[off] = time.monotonic()
                sim_down([off], state_dir=state_dir)
            elif board == silent and stage == "commit" and silent not in acted:
                acted[silent] = time.monotonic()
                subprocess.run(["ip", "-n", f"dsim-{slots[silent]}", "link", "set", "eth0", "down"], check=True)

    deadline = 12.0
    opts = DeployOptions(health=HealthPolicy(), deadline=deadline, lock_wait=5)
    t0 = time.monotonic()
    _, report = service.rollout("all", boards, rel, opts, waves="1,100%", max_failures="2", max_parallel=6,
                                bake="0", executor=LOCAL, state_dir=tmp_path / "rollouts", on_event=on_event)
    took = time.monotonic() - t0
    doc = report.to_json()
    by = {b["board"]: b for b in doc["boards"]}
    assert set(acted) == {off, silent}
    assert {f["board"] for f in doc["failed"]} == {off, silent}
    assert not doc["stopped"] and not doc["not_started"]
    assert all(by[n]["ok"] and by[n]["release"] == rel.id for n in names if n not in (off, silent))
    assert by[silent]["seconds"] <= deadline + 3 and "deadline" in by[silent]["error"]
    assert by[off]["seconds"] <= deadline + 3
    assert took < 3 * deadline
    # the silent board comes back: it still serves its old release, whole (nothing was switched)
    subprocess.run(["ip", "-n", f"dsim-{slots[silent]}", "link", "set", "eth0", "up"], check=True)
    again = deploy_board(inv.boards[silent], rel, opts)
    assert again.ok and again.release == rel.id, again.error


@pytest.mark.slow
def test_arm_boards_health_gate(sim_boards, tiny, tmp_path):
    """arm64 (Cortex-A72) must be bit-identical to the host's reference; armhf passes on cosine."""
    from tests.fixtures.runner import require_cached_wheels

    require_cached_wheels("aarch64", "armv7l")
    inv = load_targets(sim_boards.targets)
    rel = build_release(model_dir(tmp_path, tiny, 3), workdir=tmp_path / "w")
    report = service.deploy([inv.boards[sim_boards.pi4], inv.boards[sim_boards.armhf]], rel,
                            DeployOptions(deadline=900), executor=LOCAL, max_parallel=2)
    by = {r.board: r for r in report.results}
    assert report.ok, [r.error for r in report.results]
    pi4, armhf = by[sim_boards.pi4].health, by[sim_boards.armhf].health
    assert pi4["gate"] == "identical" and pi4["identical"] is True and pi4["machine"] == "aarch64"
    assert armhf["gate"].startswith("cosine") and armhf["cosine"] > 0.99


@pytest.mark.slow
def test_lossy_slow_link_deploy_completes(tiny, tmp_path):
    """A light board behind 200 ms each way and 5 % loss: a deploy (health off, 200 KB) completes,
    and a second one is a no-op."""
    reason = board_skip_reason()
    if reason:
        pytest.skip(reason)
    import os

    from deployer.sim.linkspec import parse_link
    from deployer.sim.manager import sim_down, sim_up

    state_dir, targets_dir = tmp_path / "state", tmp_path / "targets"
    old = os.environ.get("DEPLOYER_SIM_REGISTRY")
    os.environ["DEPLOYER_SIM_REGISTRY"] = str(tmp_path / "registry")
    try:
        up = sim_up(arch="host", count=1, link=parse_link("delay=200,loss=5"), targets_dir=targets_dir,
                    state_dir=state_dir)
        board = load_targets(up.targets).boards[up.added[0].name]
        d = model_dir(tmp_path, tiny, 9)
        (d / "tiny_int8.table").write_bytes(os.urandom(200_000))
        rel = build_release(d, workdir=tmp_path / "w", health=False)
        opts = DeployOptions(health=HealthPolicy(enabled=False), deadline=300)
        res = deploy_board(board, rel, opts)
        assert res.ok and res.release == rel.id, res.error
        again = deploy_board(board, rel, opts)
        assert again.ok and again.action == "unchanged" and again.sent_bytes == 0
    finally:
        sim_down(state_dir=state_dir)
        if old is None:
            os.environ.pop("DEPLOYER_SIM_REGISTRY", None)
        else:
            os.environ["DEPLOYER_SIM_REGISTRY"] = old


def _one_layer(folder: Path, name: str, layer: str, params: str) -> Path:
    """A model of one fp32 layer on a 64x64x16 input: what that layer's kernel alone computes."""
    d = folder / name
    d.mkdir(parents=True)
    (d / f"{name}.param").write_text(f"7767517\n2 2\nInput in0 0 1 in0 0=64 1=64 2=16\n{layer} act 1 1 in0 out0 {params}\n")
    (d / f"{name}.bin").write_bytes(b"")
    return d


def test_layers_called_exact_are_bit_identical_on_the_emulated_pi(sim_boards, tmp_path):
    """deployer.ncnn.exactness is a measured claim, re-measured here: every layer it calls exact gives
    the host's output to the bit on an emulated Cortex-A72 (same ncnn version, aarch64 wheel), and
    Swish - YOLOv8's activation - does not, so a YOLOv8 release is health-gated on cosine there,
    with the reason named, while an exact model keeps the bit-identity gate (test above)."""
    from deployer.ncnn.exactness import inexact_layer
    from deployer.ncnn.param import read_param
    from tests.fixtures.runner import require_cached_wheels

    require_cached_wheels("aarch64")
    inv = load_targets(sim_boards.targets)
    pi4 = inv.boards[sim_boards.pi4]
    cases = {"relu": ("ReLU", ""), "clip": ("Clip", "0=0 1=6"), "hardswish": ("HardSwish", ""),
             "hardsigmoid": ("HardSigmoid", ""), "elu": ("ELU", ""), "maxpool": ("Pooling", "0=0 1=2 2=2"),
             "avgpool": ("Pooling", "0=1 1=2 2=2"), "globalmax": ("Pooling", "0=0 4=1"),
             "swish": ("Swish", "")}
    releases = {}
    for name, (layer, params) in cases.items():
        d = _one_layer(tmp_path, name, layer, params)
        releases[name] = build_release(d, workdir=tmp_path / f"w-{name}")
        exact = inexact_layer(read_param(d / f"{name}.param").layers[1]) is None
        assert exact == (name != "swish"), name
        assert (releases[name].inexact == []) == exact, (name, releases[name].inexact)
    opts = DeployOptions(deadline=900, runtime="python")
    for name, rel in releases.items():
        res = deploy_board(pi4, rel, opts)
        assert res.ok, (name, res.error)
        h = res.health
        if name == "swish":
            assert h["gate"].startswith("cosine") and h["identical"] is False and h["cosine"] > 0.999999, h
            assert "Swish round differently" in h["reason"], h["reason"]
        else:
            assert h["gate"] == "identical" and h["identical"] is True, (name, h)
