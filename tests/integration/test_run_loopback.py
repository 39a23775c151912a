"""`deployer run` machinery against a real OpenSSH sshd on 127.0.0.1 (x86 board, native speed).

The loopback board gets the real x86_64 ncnn wheel from the host cache, unpacked by the board's own
python3, and the real runner; these tests cover what does not need ARM: provisioning skips,
streaming, Ctrl-C, dropped links, runner errors, results files.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from deployer.errors import DeployerError, RemoteError
from deployer.remote import runner
from deployer.remote.session import RunOptions, open_session, run_boards
from tests.fixtures.runner import host_output, require_cached_wheels, tiny_models  # noqa: F401  (fixture)

pytestmark = pytest.mark.sshd


@pytest.fixture(scope="module")
def loop(sshd):
    """The loopback board runs the system python3 (Debian's), so it needs that Python's x86_64 wheel."""
    minor = int(os.popen("python3 -c 'import sys;print(sys.version_info[1])'").read())
    require_cached_wheels("x86_64", python=(3, minor))
    inv = sshd.inventory()
    return inv, inv.board("loop")


def runner_pids() -> list[int]:
    """Runner processes on the (loopback) board, found through /proc like `pgrep -f` would."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"bin/runner.py") for part in cmd):
                pids.append(int(d.name))
    return pids


def test_run_provisions_then_skips_and_matches_host(loop, tiny_models, tmp_path: Path) -> None:
    inv, board = loop
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, iterations=3, warmup=1,
                      return_output=True, seed=11, threads=1, fp16=False)
    conn, session = open_session(board, inventory=inv)
    with conn:
        first = session.push(opts)
        second = session.push(opts)
        result = session.run(opts)
    assert first.runtime.path.endswith("/runtime/ncnn-%s-cp311-manylinux_2_28_x86_64" % first.runtime.version)
    assert not second.runtime.unpacked and not second.runtime.uploaded and second.uploaded == []
    assert result.facts["machine"] == "x86_64" and result.facts["ncnn_version"] == first.runtime.version
    assert len(result.samples_ms) == 3 and result.stats["count"] == 3 and not result.partial
    values = runner.make_input_values(32 * 32 * 3, "random", 11)
    shape, expected = host_output(tiny_models.int8_param, tiny_models.int8_bin, values, [32, 32, 3])
    assert result.output["shape"] == list(shape)
    assert result.output["values"] == expected  # same x86 wheel on both sides: bit-identical

    # a whole run through run_boards saves an atomic results file
    [saved] = run_boards([board], opts, inventory=inv, results_dir=tmp_path / "results")
    files = list((tmp_path / "results" / "loop").glob("*.json"))
    assert [str(f) for f in files] == [saved.saved_to]
    assert not list((tmp_path / "results" / "loop").glob(".*tmp*"))


def test_a_run_times_its_own_model_when_another_run_pushes_one_of_the_same_name(loop, tiny_models, tmp_path: Path,
                                                                               monkeypatch) -> None:
    """Two `run`s on one board of two models both named m.param/m.bin: the second one's upload
    replaced models/m.* after the first one's push and before its runner started, and the first
    run timed (and returned the output of) the other model. Each run now links its files into a
    folder of its own under the board lock; the folder is gone after the run."""
    import shutil

    from deployer.profiling import hook

    inv, board = loop
    mine, other = tmp_path / "mine", tmp_path / "other"
    for folder, (param, bin_) in ((mine, (tiny_models.int8_param, tiny_models.int8_bin)),
                                  (other, (tiny_models.fp32_param, tiny_models.fp32_bin))):
        folder.mkdir()
        shutil.copy(param, folder / "m.param")
        shutil.copy(bin_, folder / "m.bin")
    opts = RunOptions(param=mine / "m.param", bin=mine / "m.bin", iterations=1, warmup=0, return_output=True,
                      seed=11, threads=1, fp16=False)
    before_run = hook.before_run

    def other_run_pushes(conn):   # the second deployer's push lands right before our runner starts
        conn2, session2 = open_session(board, inventory=inv)
        with conn2:
            session2.push(replace(opts, param=other / "m.param", bin=other / "m.bin"))
        return before_run(conn)

    monkeypatch.setattr(hook, "before_run", other_run_pushes)
    conn, session = open_session(board, inventory=inv)
    with conn:
        result = session.run(opts)
        left = conn.run(["sh", "-c", f"ls -A {session.layout.tmp}; exit 0"]).stdout.split()
    values = runner.make_input_values(32 * 32 * 3, "random", 11)
    assert result.output["values"] == host_output(mine / "m.param", mine / "m.bin", values, [32, 32, 3])[1]
    assert left == []


def test_timing_lines_stream_live(loop, tiny_models) -> None:
    inv, board = loop
    arrivals: list[tuple[float, dict]] = []
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, shape="384,384,3",
                      iterations=40, warmup=1)
    conn, session = open_session(board, inventory=inv, on_event=lambda e: arrivals.append((time.perf_counter(), e)))
    with conn:
        result = session.run(opts)
    iters = [t for t, e in arrivals if e.get("type") == "iter"]
    assert len(iters) == 40
    compute_s = sum(result.samples_ms[1:]) / 1000
    assert iters[-1] - iters[0] >= 0.5 * compute_s > 0


def test_ctrl_c_kills_the_remote_runner(loop, tiny_models) -> None:
    inv, board = loop
    seen = []

    def interrupt(event: dict) -> None:
        seen.append(event)
        if event.get("type") == "iter" and event["i"] == 2:
            assert runner_pids(), "runner should be running on the board now"
            raise KeyboardInterrupt

    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, shape="384,384,3", duration=60)
    conn, session = open_session(board, inventory=inv, on_event=interrupt)
    t0 = time.monotonic()
    with conn, pytest.raises(KeyboardInterrupt):
        session.run(opts)
    deadline = time.monotonic() + 10
    while runner_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner_pids() == []
    assert time.monotonic() - t0 < 30


def test_dropped_connection_is_one_clear_error(loop, sshd, tiny_models) -> None:
    inv, board = loop

    def cut(event: dict) -> None:
        if event.get("type") == "iter" and event["i"] == 1:
            assert sshd.server.kill_sessions() > 0

    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, shape="384,384,3", duration=30)
    conn, session = open_session(board, inventory=inv, on_event=cut)
    with conn, pytest.raises(RemoteError) as err:
        session.run(opts)
    assert err.value.exit_code == 3
    assert "loop" in str(err.value) and "connection lost" in str(err.value)
    m = re.search(r"after (\d+) timed iteration", str(err.value))
    assert m and int(m.group(1)) >= 2  # lines already received are counted
    deadline = time.monotonic() + 10
    while runner_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner_pids() == []  # no orphaned runner once its pipe is gone


def test_runner_error_names_board_and_blob(loop, tiny_models) -> None:
    inv, board = loop
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, output_blob="prob", iterations=1)
    conn, session = open_session(board, inventory=inv)
    with conn, pytest.raises(DeployerError) as err:
        session.run(opts)
    assert type(err.value) is DeployerError
    assert "loop: runner: ValueError: output blob 'prob' is not a blob" in str(err.value)


def test_silent_runner_is_killed_after_the_idle_timeout(loop, wide_models_host) -> None:
    """One inference longer than the idle timeout: the board process is killed, one clear error."""
    inv, board = loop
    opts = RunOptions(param=wide_models_host.int8_param, bin=wide_models_host.int8_bin, shape="1024,1024,3",
                      iterations=1, warmup=1, threads=1, idle_timeout=1.0)
    conn, session = open_session(board, inventory=inv)
    t0 = time.monotonic()
    with conn, pytest.raises(RemoteError) as err:
        session.run(opts)
    assert time.monotonic() - t0 < 30
    assert "printed nothing for 1 s" in str(err.value) and "loop" in str(err.value)
    deadline = time.monotonic() + 10
    while runner_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner_pids() == []


@pytest.fixture(scope="module")
def wide_models_host(tmp_path_factory):
    from tests.fixtures.runner import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("wide_host"), size=64, widths=(64, 128))
