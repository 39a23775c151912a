"""The native runtime on emulated boards: parity with the wheel runner and the host, runtime choice,
per-layer timing over SSH, and boards without Python (`sim up --image minimal`)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.remote.session import RunOptions, compare_outputs, host_reference, open_session
from tests.fixtures.native import native_builds  # noqa: F401
from tests.fixtures.runner import require_cached_wheels, tiny_models  # noqa: F401

pytestmark = [pytest.mark.boards, pytest.mark.slow]


@dataclass
class Int8Model:
    name: str
    param: Path
    bin: Path
    shape: str
    fp32_param: Path
    fp32_bin: Path


def _quantize(src, photos, folder: Path, name: str, shape: list[int], mean: str, norm: str) -> Int8Model:
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "list.txt"
    listing.write_text("\n".join(str(f) for f in photos.files[:4]) + "\n")
    table, param, bin_ = folder / f"{name}.table", folder / f"{name}-int8.param", folder / f"{name}-int8.bin"
    cli = [sys.executable, "-m", "deployer.cli"]
    subprocess.run([*cli, "ncnn2table", str(src.param), str(src.bin), str(listing), str(table), f"mean={mean}",
                    f"norm={norm}", f"shape=[{shape[0]},{shape[1]}]", "pixel=RGB", "thread=1", "method=kl"],
                   check=True, capture_output=True)
    subprocess.run([*cli, "ncnn2int8", str(src.param), str(src.bin), str(param), str(bin_), str(table)],
                   check=True, capture_output=True)
    return Int8Model(name, param, bin_, f"{shape[0]},{shape[1]},3", Path(src.param), Path(src.bin))


@pytest.fixture(scope="module")
def int8_models(mobilenet_v2, mtcnn_onet, calib_photos, tmp_path_factory) -> dict[str, Int8Model]:
    folder = tmp_path_factory.mktemp("native-int8")
    return {
        "mobilenet_v2": _quantize(mobilenet_v2, calib_photos, folder, "mobilenet_v2", [64, 64],
                                  "[123.675,116.28,103.53]", "[0.017125,0.017507,0.017429]"),
        "onet": _quantize(mtcnn_onet, calib_photos, folder, "onet", [48, 48], "[127.5,127.5,127.5]",
                          "[0.0078125,0.0078125,0.0078125]"),
    }


def _board(targets: Path, name: str):
    from deployer.targets import load_targets

    inv = load_targets([targets])
    return inv, inv.board(name)


def _run(targets: Path, name: str, opts: RunOptions):
    inv, board = _board(targets, name)
    conn, session = open_session(board, inventory=inv)
    with conn:
        return session.run(opts)


@pytest.mark.parametrize("attr", ["pi4", "armhf"])
@pytest.mark.parametrize("model", ["mobilenet_v2", "onet"])
def test_native_wheel_and_host_are_bit_identical(sim_boards, native_builds, int8_models, attr: str, model: str) -> None:
    require_cached_wheels("aarch64", "armv7l")
    m = int8_models[model]
    name = getattr(sim_boards, attr)
    outputs = {}
    for runtime in ("native", "python"):
        opts = RunOptions(param=m.param, bin=m.bin, shape=m.shape, iterations=1, warmup=0, threads=1, fp16=False,
                          return_output=True, seed=5, runtime=runtime)
        result = _run(sim_boards.targets, name, opts)
        assert result.to_json()["runtime"]["kind"] == runtime
        outputs[runtime] = result.output
        if runtime == "native":
            assert result.facts["runtime"] == "native" and result.facts["python"] is None
            assert result.options["peak_rss_kb"] > 0 and result.options["load_ms"] > 0
            assert result.options["first_inference_ms"] > 0
            host = host_reference(result, opts)  # the host wheel, unpacked kernels (x86's exact path)
    native_vs_wheel = compare_outputs(outputs["native"], outputs["python"])
    native_vs_host = compare_outputs(outputs["native"], host)
    assert native_vs_wheel["identical"], (model, attr, native_vs_wheel)
    assert native_vs_host["identical"], (model, attr, native_vs_host)


def test_auto_picks_native_and_reports_it_in_json(sim_boards, native_builds, tiny_models, tmp_path) -> None:
    cli = [sys.executable, "-m", "deployer.cli"]
    proc = subprocess.run([*cli, "run", sim_boards.pi4, "--param", str(tiny_models.int8_param), "--bin",
                           str(tiny_models.int8_bin), "-n", "2", "--warmup", "0", "--threads", "1", "--targets",
                           str(sim_boards.targets), "--results", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    doc = json.loads(proc.stdout)
    assert doc["runtime"]["kind"] == "native" and doc["runtime"]["arch"] == "aarch64"
    assert doc["count"] == 2 and doc["options"]["first_inference_ms"] > 0


def test_layers_over_ssh_with_fp32_comparison(sim_boards, native_builds, tiny_models, tmp_path) -> None:
    cli = [sys.executable, "-m", "deployer.cli"]
    proc = subprocess.run([*cli, "run", sim_boards.pi4, "--param", str(tiny_models.int8_param), "--bin",
                           str(tiny_models.int8_bin), "-n", "3", "--warmup", "1", "--threads", "1", "--layers",
                           "--fp32-param", str(tiny_models.fp32_param), "--fp32-bin", str(tiny_models.fp32_bin),
                           "--targets", str(sim_boards.targets), "--results", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    doc = json.loads(proc.stdout)
    layers = doc["layers"]
    names = [ln.split()[1] for ln in tiny_models.int8_param.read_text().splitlines()[2:]
             if ln.strip() and not ln.startswith("Input")]
    assert list(layers["layers"]) == names
    assert doc["runtime"]["flavour"] == "layers"
    vs = layers["vs_fp32"]
    assert set(vs["layers"]) == set(names)
    assert all(v["fp32_ms"] is not None for v in vs["layers"].values())  # same layer names in both models


def test_runtime_python_with_layers_is_one_clear_error(sim_boards, native_builds, tiny_models) -> None:
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, layers=True, runtime="python")
    with pytest.raises(DeployerError) as err:
        _run(sim_boards.targets, sim_boards.pi4, opts)
    assert "--layers needs the native runtime" in str(err.value) and err.value.exit_code == 2


# ---------------------------------------------------------------- boards without Python

@pytest.fixture(scope="module")
def minimal_boards(tmp_path_factory):
    from tests.fixtures.boards import board_skip_reason
    from tests.fixtures.tiers import unavailable

    reason = board_skip_reason()
    if reason:
        unavailable(reason)
    from deployer.sim.manager import sim_down, sim_up

    base = tmp_path_factory.mktemp("sim-minimal")
    state, targets = base / "state", base / "targets"
    names = {}
    try:
        for arch in ("arm64", "armhf"):
            up = sim_up(arch=arch, count=1, targets_dir=targets, state_dir=state, image="minimal")
            names[arch] = up.added[0].name
        yield up.targets, names
    finally:
        sim_down(state_dir=state)


def test_minimal_board_has_no_python_and_probes_with_sh(minimal_boards) -> None:
    from deployer.remote.probe import probe
    from deployer.ssh.connect import connect

    targets, names = minimal_boards
    for arch, name in names.items():
        inv, board = _board(targets, name)
        assert board.runtime == "native"
        with connect(board, inventory=inv) as conn:
            res = conn.run(["sh", "-c", "command -v python3 python || echo none; ls /usr/lib | grep -c python; exit 0"])
            facts = probe(conn)
        assert res.stdout.split()[0] == "none" and res.stdout.split()[-1] == "0", res.stdout
        assert facts.python is None and facts.arch == arch
        assert facts.cpu_model == ("Cortex-A72" if arch == "arm64" else "Cortex-A15")
        assert facts.glibc == "2.36" and facts.disk_free > 0 and facts.mem_total


@pytest.mark.parametrize("arch", ["arm64", "armhf"])
def test_push_and_run_on_minimal_boards(minimal_boards, native_builds, tiny_models, arch: str) -> None:
    native_builds["aarch64" if arch == "arm64" else "armv7l"]  # built, or this test is unavailable
    targets, names = minimal_boards
    name = names[arch]
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, iterations=2, warmup=0,
                      threads=1, fp16=False, return_output=True, seed=9, layers=(arch == "armhf"))
    result = _run(targets, name, opts)
    assert result.runtime["kind"] == "native"
    assert result.stats["count"] == 2 and result.output is not None
    assert compare_outputs(result.output, host_reference(result, opts))["identical"]
    assert (result.layers is not None) == (arch == "armhf")
    inv, board = _board(targets, name)
    conn, session = open_session(board, inventory=inv)
    with conn:
        again = session.push(opts)
        facts = session.probe()
    assert again.uploaded == [] and not again.runtime.uploaded  # nothing re-sent the second time
    assert "tiny_int8.bin" in facts.models


def test_wheel_runtime_on_a_minimal_board_is_a_clear_error(minimal_boards, tiny_models) -> None:
    targets, names = minimal_boards
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, runtime="python")
    with pytest.raises(DeployerError) as err:
        _run(targets, names["arm64"], opts)
    assert "\n" not in str(err.value)


def test_ctrl_c_on_the_host_stops_the_native_runner_on_the_board(sim_boards, native_builds, tiny_models) -> None:
    import time

    inv, board = _board(sim_boards.targets, sim_boards.pi4)

    def interrupt(event: dict) -> None:
        if event.get("type") == "iter" and event["i"] == 1:
            raise KeyboardInterrupt

    def runners(conn) -> list[str]:
        res = conn.run(["sh", "-c", "grep -l 'bin/[d]eployer-runner' /proc/[0-9]*/cmdline 2>/dev/null; exit 0"])
        return [ln for ln in res.stdout.splitlines() if ln.strip() and "/self/" not in ln]

    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, duration=300, threads=1, fp16=False,
                      runtime="native")
    conn, session = open_session(board, inventory=inv, on_event=interrupt)
    with conn:
        with pytest.raises(KeyboardInterrupt):
            session.run(opts)
        deadline = time.monotonic() + 20
        procs = runners(conn)
        while procs and time.monotonic() < deadline:
            time.sleep(0.5)
            procs = runners(conn)
        # and the check does see a running native runner: one started by hand is found (then stopped by pid)
        started = conn.run(["sh", "-c", 'f=$(ls .deployer/bin/deployer-runner-* | head -n 1); "$f" --param '
                                        '.deployer/models/tiny_int8.param --bin .deployer/models/tiny_int8.bin '
                                        '--duration 120 >/dev/null 2>&1 </dev/null & echo $!'])
        seen = runners(conn)
        conn.run(["kill", started.stdout.strip()])
    assert procs == []
    assert len(seen) == 1


def test_quantize_prices_float_layers_with_the_boards_layer_times(sim_boards, native_builds, int8_models, mtcnn_rnet,
                                                                  lfw_calibration, tmp_path) -> None:
    """`run --layers --fp32-param` saves both per-layer timings in its results file; `quantize
    --layer-times` reads that file and prices the layers it keeps float with the board's numbers."""
    import json
    from types import SimpleNamespace

    from deployer.profile import load_profile
    from deployer.quant.pipeline import run_quantize
    from tests.fixtures.quantize import write_profile

    m = int8_models["onet"]
    cli = [sys.executable, "-m", "deployer.cli"]
    proc = subprocess.run([*cli, "run", sim_boards.pi4, "--param", str(m.param), "--bin", str(m.bin), "--shape", m.shape,
                           "-n", "2", "--warmup", "0", "--threads", "1", "--layers", "--output-blob", "out0", "--fp32-param", str(m.fp32_param),
                           "--fp32-bin", str(m.fp32_bin), "--targets", str(sim_boards.targets),
                           "--results", str(tmp_path / "results"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    saved_file = Path(printed["saved_to"])
    saved = json.loads(saved_file.read_text())
    assert saved["layers"]["vs_fp32"] == printed["layers"]["vs_fp32"]   # the file has the fp32 side too
    vs = saved["layers"]["vs_fp32"]["layers"]

    heads = ["linear_5", "linear_6", "linear_7"]        # ONet's three heads: this run extracts out0's only
    untimed = [n for n in heads if n not in vs]
    assert len(untimed) == 2, sorted(vs)
    keep = ["conv_0", "linear_4", *untimed]
    profile = write_profile(tmp_path / "q", SimpleNamespace(param=m.fp32_param, bin=m.fp32_bin),
                            lfw_calibration.list_file, tmp_path / "q" / "out",
                            inputs={"shape": [48, 48], "pixel": "RGB", "mean": [127.5] * 3, "norm": [0.0078125] * 3},
                            quantize={"method": "maxabs", "mixed": False, "keep_fp32": keep,
                                      "layer_times": str(saved_file)}, gate=[])
    speed = run_quantize(load_profile(profile)).report["speed"]
    assert speed["source"] == "board" and speed["board"] == sim_boards.pi4
    all_int8 = sum(v["int8_ms"] for v in vs.values())
    extra = sum(vs[n]["fp32_ms"] - vs[n]["int8_ms"] for n in ("conv_0", "linear_4"))
    assert set(speed["fp32_layers"]) == {"conv_0", "linear_4"} and sorted(speed["untimed"]) == sorted(untimed)
    assert speed["all_int8_ms"] == pytest.approx(all_int8, abs=1e-3)
    assert speed["extra_ms"] == pytest.approx(extra, abs=1e-3)
    assert speed["est_time_vs_all_int8"] == pytest.approx((all_int8 + extra) / all_int8, abs=1e-3)
    # a time budget for mixed precision: no set tried or written adds more than 2 % of all-int8's board time
    profile = write_profile(tmp_path / "t", SimpleNamespace(param=m.fp32_param, bin=m.fp32_bin),
                            lfw_calibration.list_file, tmp_path / "t" / "out",
                            inputs={"shape": [48, 48], "pixel": "RGB", "mean": [127.5] * 3, "norm": [0.0078125] * 3},
                            quantize={"method": "maxabs", "layer_times": str(saved_file), "max_slowdown": "2%"},
                            gate=["cosine@out1>=0.999"])
    report = run_quantize(load_profile(profile)).report
    mixed, limit = report["mixed"], 0.02 * all_int8
    assert mixed["ran"] and mixed["time_budget_ms"] == pytest.approx(limit, abs=1e-3)
    walked = [s for s in mixed["steps"] if s["what"] == "cheap prefix"]
    assert walked and all(s["extra_ms"] <= limit + 1e-6 for s in walked)
    assert all(n in vs for s in walked for n in s["keep_fp32"])        # untimed layers are never priced at 0
    assert report["speed"]["extra_ms"] <= limit + 1e-3 and not report["speed"]["untimed"]

    # the same file given for another model: one line before any calibration work, exit 2
    proc = subprocess.run([*cli, "quantize", "--param", str(mtcnn_rnet.param), "--bin", str(mtcnn_rnet.bin), "--calib",
                           str(lfw_calibration.list_file), "--shape", "24,24", "--mean", "127.5,127.5,127.5", "--norm",
                           "0.0078125,0.0078125,0.0078125", "--layer-times", str(saved_file), "--out",
                           str(tmp_path / "rnet")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "timed on another model?" in proc.stderr, proc.stderr
    assert str(saved_file) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "rnet").exists()


@pytest.mark.parametrize("runtime", ["python", "native"])
def test_runner_ends_itself_when_the_hosts_heartbeats_stop(sim_boards, native_builds, tiny_models, runtime) -> None:
    """A link that dies without the board's sshd noticing left the runner timing for up to --duration
    (days). With --lease S it ends itself (exit 124) after S s without a heartbeat byte on stdin, and
    runs to the end while the bytes come (deployer.remote.lock.heartbeats, as session.run sends them)."""
    import time

    from deployer.native.select import native_argv
    from deployer.remote.lock import heartbeats
    from deployer.remote.session import runner_argv

    require_cached_wheels("aarch64")
    inv, board = _board(sim_boards.targets, sim_boards.pi4)
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, duration=300, threads=1, fp16=False,
                      runtime=runtime)
    conn, session = open_session(board, inventory=inv)
    with conn:
        pushed = session.push(opts)
        assert getattr(pushed.runtime, "kind", "python") == runtime

        def argv(duration: float) -> list[str]:
            opts.duration = duration
            cmd = runner_argv(session.python, pushed.runner, opts, board, pushed.files, pushed.runtime.path, lease=3)
            return native_argv(pushed.runner, cmd, layers=False) if runtime == "native" else cmd

        t0 = time.monotonic()
        silent = conn.stream(argv(300), check=False)      # the host goes quiet: no heartbeat ever
        lines = list(silent)
        silent_s = time.monotonic() - t0
        assert silent.rc == 124 and silent_s < 60, (silent.rc, silent_s, silent.stderr[-300:])
        assert not any('"stats"' in ln for ln in lines)
        kept = conn.stream(argv(8), check=False)
        with heartbeats(kept, 1.0, "test-heartbeat"):
            lines = list(kept)
        assert kept.rc == 0 and any('"type": "stats"' in ln or '"type":"stats"' in ln for ln in lines), kept.stderr
