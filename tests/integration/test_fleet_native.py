"""Fleet commands on a board without Python (`sim up --image minimal`, emulated arm64): the health
check runs the static native runner, bit-identical to the host's unpacked reference; status names
the runtime; rollback works."""

from __future__ import annotations

import base64
import struct

import pytest

from deployer.fleet.ops import DeployOptions, deploy_board, list_board, rollback_board
from deployer.fleet.release import build_release
from deployer.targets import load_targets
from tests.fixtures.fleet import model_dir
from tests.fixtures.native import native_builds  # noqa: F401
from tests.fixtures.runner import build_tiny_models

pytestmark = [pytest.mark.boards, pytest.mark.slow]


@pytest.fixture(scope="module")
def minimal_arm64(tmp_path_factory):
    from tests.fixtures.boards import board_skip_reason
    from tests.fixtures.tiers import unavailable

    reason = board_skip_reason()
    if reason:
        unavailable(reason)
    from deployer.sim.manager import sim_down, sim_up

    base = tmp_path_factory.mktemp("fleet-minimal")
    state = base / "state"
    try:
        up = sim_up(arch="arm64", count=1, targets_dir=base / "targets", state_dir=state, image="minimal")
        yield up.targets, up.added[0].name
    finally:
        sim_down(state_dir=state)


def test_deploy_health_status_rollback_on_a_board_without_python(minimal_arm64, native_builds, tmp_path):  # noqa: F811
    build = native_builds["aarch64"]          # built at set-up, or this test is unavailable
    targets, name = minimal_arm64
    board = load_targets(targets).boards[name]
    assert board.runtime == "native"
    tiny = build_tiny_models(tmp_path / "tiny", size=32)
    opts = DeployOptions(deadline=900, lock_wait=30)
    r0 = build_release(model_dir(tmp_path, tiny, 0), workdir=tmp_path / "w0")
    r1 = build_release(model_dir(tmp_path, tiny, 1), workdir=tmp_path / "w1")

    first = deploy_board(board, r0, opts)
    assert first.ok and first.release == r0.id, first.error
    assert first.extra["runtime_kind"] == "native" and first.extra["runtime_version"] == build.version
    assert first.to_json()["runtime"] == f"native {build.version}"
    h = first.health
    assert h["runtime"] == "native" and h["machine"] == "aarch64" and h["ncnn"] == build.version
    assert h["gate"] == "identical" and h["identical"] is True and h["max_abs_diff"] == 0.0

    second = deploy_board(board, r1, opts)
    assert second.ok and second.release == r1.id and second.previous == r0.id, second.error
    assert second.health["identical"] is True

    status = list_board(board, opts, "current")
    assert status.ok and status.release == r1.id
    assert status.extra["runtime_kind"] == "native" and status.extra["runtime_version"] == build.version
    assert status.extra["runtime"] == f"native {build.version}"

    # the gate is real on this path: a reference one ulp off fails bit identity, r1 stays current
    r2 = build_release(model_dir(tmp_path, tiny, 2), workdir=tmp_path / "w2")
    values = list(struct.unpack(f"<{len(base64.b64decode(r2.expected['data'])) // 4}f",
                                base64.b64decode(r2.expected["data"])))
    values[0] = struct.unpack("<f", struct.pack("<i", struct.unpack("<i", struct.pack("<f", values[0]))[0] + 1))[0]
    r2.expected = dict(r2.expected, data=base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode())
    bad = deploy_board(board, r2, opts)
    assert not bad.ok and bad.release == r1.id and bad.health["identical"] is False, bad.error
    assert "health check" in bad.error and bad.exit_code == 1

    back = rollback_board(board, None, opts)
    assert back.ok and back.release == r0.id and back.previous == r1.id, back.error
    assert list_board(board, opts, "current").release == r0.id
