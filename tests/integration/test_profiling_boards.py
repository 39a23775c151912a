"""deployer.profiling on emulated ARM boards: context flags, history + compare, sweep + HTML report.

Boards are shared, so the fake Pi state (cpufreq at half clock on `powersave`, a thermal zone that
heats up mid-run, firmware throttling bits) lives in a private folder on the board that the
collector reads through DEPLOYER_SYSFS_ROOT; the load is a real busy loop on the board.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from deployer.profiling.context import Thresholds
from deployer.remote.session import RunOptions, open_session, save_result
from tests.fixtures.runner import build_tiny_models, require_cached_wheels, stack_model

pytestmark = [pytest.mark.boards, pytest.mark.slow]
DEPLOYER = [str(Path(sys.executable).with_name("deployer"))]


@pytest.fixture(autouse=True, scope="module")
def _wheels() -> None:
    require_cached_wheels("aarch64")


def deployer(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*DEPLOYER, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _board(sim_boards):
    from deployer.targets import load_targets

    inv = load_targets([sim_boards.targets])
    return inv, inv.board(sim_boards.pi4)


def _fake_pi(conn, root: str) -> None:
    """A Pi 4 on `powersave` at 600 of 1500 MHz, 55 C, firmware reporting throttling (0x50005)."""
    script = f"""set -e
R={root}
for c in 0 1 2 3; do
  d=$R/sys/devices/system/cpu/cpu$c/cpufreq; mkdir -p $d
  echo powersave > $d/scaling_governor; echo 600000 > $d/scaling_cur_freq
  echo 600000 > $d/scaling_min_freq; echo 1500000 > $d/scaling_max_freq; echo 1500000 > $d/cpuinfo_max_freq
done
z=$R/sys/class/thermal/thermal_zone0; mkdir -p $z; echo cpu-thermal > $z/type; echo 55000 > $z/temp
mkdir -p $R/usr/bin
printf '#!/bin/sh\\necho throttled=0x50005\\n' > $R/usr/bin/vcgencmd; chmod +x $R/usr/bin/vcgencmd
"""
    conn.run(["sh", "-c", script], check=True)


def test_run_is_flagged_when_the_board_is_not_ready(sim_boards, tmp_path: Path, monkeypatch) -> None:
    models = build_tiny_models(tmp_path / "m", size=32)
    inv, board = _board(sim_boards)
    root = f"/tmp/deployer-sysfs-{uuid.uuid4().hex[:8]}"  # on the board, private to this test
    results = tmp_path / "results"
    conn, session = open_session(board, inventory=inv)
    conn2, _ = open_session(board, inventory=inv)
    with conn, conn2:
        # an undisturbed run first: no governor/clock/throttle/heat flags (the emulated board has no cpufreq)
        calm = session.run(RunOptions(param=models.int8_param, bin=models.int8_bin, duration=1.0, warmup=0, threads=1))
        assert {f["kind"] for f in calm.profiling["flags"]} & {"governor", "clock", "throttled", "temperature"} == set()
        assert calm.profiling["context"]["before"]["mem_total_kb"] > 0

        _fake_pi(conn, root)
        monkeypatch.setenv("DEPLOYER_SYSFS_ROOT", root)
        busy = conn2.stream(["sh", "-c", "while :; do :; done"], check=False)
        heated = []

        def heat_up(event: dict) -> None:  # the board warms up by 12 C while the model runs
            if event.get("type") == "iter" and not heated:
                conn2.run(["sh", "-c", f"echo 67000 > {root}/sys/class/thermal/thermal_zone0/temp"], check=True)
                heated.append(True)

        session.on_event = heat_up
        try:
            result = session.run(RunOptions(param=models.int8_param, bin=models.int8_bin, duration=3.0, warmup=0,
                                            threads=1))
        finally:
            busy.close()
            conn.run(["rm", "-rf", "--", root])
    flags = result.profiling["flags"]
    kinds = {f["kind"] for f in flags}
    assert {"governor", "clock", "throttled", "temperature", "load"} <= kinds, flags
    text = " ".join(f["message"] for f in flags)
    assert "powersave" in text and "600 MHz of 1500 MHz" in text and "0x50005" in text
    assert "55.0 -> 67.0 C" in text and "under-voltage" in text
    busiest = result.profiling["context"]["other_processes"][0]
    assert busiest["comm"] == "sh" and busiest["cpu_pct"] > 5
    # on an idle host the loop gets a whole core; on the shared test machine it may get less, and is
    # then named only when above the threshold (the load average flags the run anyway)
    if busiest["cpu_pct"] > Thresholds().other_cpu_pct:
        assert any(f["kind"] == "load" and f"sh (pid {busiest['pid']})" in f["message"] for f in flags), flags
    # the warnings users see are the same flags, and the run is stored with them
    assert result.warnings() == [f["message"] for f in flags]
    save_result(result, results)
    p = deployer("history", "--results", str(results), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    runs = json.loads(p.stdout)
    assert len(runs) == 1 and runs[0]["id"] == result.profiling["history_id"]
    assert {"governor", "throttled", "load"} <= set(runs[0]["flags"])
    saved = json.loads(Path(result.saved_to).read_text())
    assert saved["history_id"] == runs[0]["id"] and saved["context"]["before"]["cpus"][0]["governor"] == "powersave"


def test_compare_same_model_and_one_more_layer_stack(sim_boards, tmp_path: Path) -> None:
    base = stack_model(tmp_path, "base", blocks=2)
    deeper = stack_model(tmp_path, "deeper", blocks=6)
    common = ["--targets", str(sim_boards.targets), "--duration", "3", "--warmup", "0", "--threads", "1",
              "--no-int8", "--no-fp16", "--json"]

    def measure(model: tuple[Path, Path]) -> int:
        p = deployer("run", sim_boards.pi4, "--param", str(model[0]), "--bin", str(model[1]), *common, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)["history_id"]

    def compare(*args: str) -> tuple[int, dict]:
        p = deployer("compare", *args, "--json", cwd=tmp_path)
        return p.returncode, json.loads(p.stdout)

    # interleaved, so a slow minute of the shared host falls on both models
    a1, b1, a2, a3, b2, a4 = (measure(m) for m in (base, deeper, base, base, deeper, base))
    p = deployer("history", "--board", sim_boards.pi4, "--json", cwd=tmp_path)
    listed = json.loads(p.stdout)
    assert [r["id"] for r in listed] == [a1, b1, a2, a3, b2, a4]
    sha = listed[1]["model_sha256"]
    p = deployer("history", "--model", sha[:10], "--json", cwd=tmp_path)
    assert [r["id"] for r in json.loads(p.stdout)] == [b1, b2]

    # same model: judged on run medians (2 vs 2 runs); runs of one model on an emulated board move by
    # more than a run's own interval (the within-run test called such pairs "slower" in CI)
    _, same = compare(f"{a1},{a3}", f"{a2},{a4}", "--min-effect", "10")
    assert same["verdict"] == "same" and same["basis"] == "runs", same
    assert same["ratio_ci"][0] <= same["ratio"] <= same["ratio_ci"][1]
    rc, slower = compare(f"{a1},{a2},{a3},{a4}", f"{b1},{b2}")
    assert rc == 0 and slower["verdict"] == "slower" and slower["basis"] == "runs", slower
    assert slower["ratio_ci"][0] > 1.2 and slower["p_value"] < 0.05 and slower["cliffs_delta"] > 0.9
    # one run a side: the board's run-to-run spread comes from the other runs of the base model
    _, lone = compare(str(a1), str(b1))
    assert lone["basis"] == "runs+history" and lone["run_to_run"]["runs"] == 3, lone
    assert lone["df"] == 2 and lone["verdict"] in ("slower", "same")
    # CI use: a regression beyond the threshold fails the job, a tolerable one does not
    sets = (f"{a1},{a2},{a3},{a4}", f"{b1},{b2}")
    rc, res = compare(*sets, "--fail-on-regression", "10")
    assert rc == 1 and res["regression"] is True
    rc, res = compare(*sets, "--fail-on-regression", f"{slower['change_pct'] + 50:.0f}")
    assert rc == 0 and res["regression"] is False
    assert compare(sets[1], sets[0])[1]["verdict"] == "faster"
    # the records a real runner writes carry the setup: another model with the same setup is like work
    assert res["same_setup"] and res["setup"]["shape"] == "48x48x3" and res["setup"]["runtime"] in ("native", "python")
    # the same model at a smaller input is other work: named in a warning, and a gate refuses it
    p = deployer("run", sim_boards.pi4, "--param", str(base[0]), "--bin", str(base[1]), "--shape", "24,24,3",
                 *common, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    small = json.loads(p.stdout)["history_id"]
    _, shrunk = compare(str(a1), str(small))
    assert not shrunk["same_setup"], shrunk
    assert any(f"run {a1} vs run {small}: shape 48x48x3 -> 24x24x3" in w for w in shrunk["warnings"]), shrunk
    p = deployer("compare", str(a1), str(small), "--fail-on-regression", "5", cwd=tmp_path)
    assert p.returncode == 2 and "shape 48x48x3 -> 24x24x3" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    p = deployer("history", "--board", sim_boards.pi4, cwd=tmp_path)
    assert p.returncode == 0 and "24x24x3" in p.stdout and "48x48x3" in p.stdout, p.stdout
    p = deployer("history", "--board", "no-such-board", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "" and "no stored runs of board no-such-board in" in p.stderr
    p = deployer("compare", str(a1), "999", cwd=tmp_path)
    assert p.returncode == 2 and "run 999: not in" in p.stderr
    p = deployer("compare", f"{a1},x", str(b1), cwd=tmp_path)
    assert p.returncode == 2 and "A " in p.stderr and "Traceback" not in p.stderr


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    return exe


def _browser(exe: str, *args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


def test_sweep_recommends_and_report_renders(sim_boards, imagenet_heldout, tmp_path: Path) -> None:
    models = build_tiny_models(tmp_path / "m", size=32)
    images = [str(f) for f in imagenet_heldout.files[:2]]
    p = deployer("profile", sim_boards.pi4, "--targets", str(sim_boards.targets),
                 "--param", str(models.int8_param), "--bin", str(models.int8_bin),
                 "--fp32-param", str(models.fp32_param), "--fp32-bin", str(models.fp32_bin), "--shape", "32,32,3",
                 "--sweep", "threads=1,2", "--sweep", "precision=fp32,int8", "--duration", "1.5", "--rounds", "2",
                 "--images", images[0], "--images", images[1], "--mean", "127.5,127.5,127.5",
                 "--norm", "0.0078125,0.0078125,0.0078125", "--gate", "cosine>=0.95", "--gate", "top1_agreement>=0.5",
                 "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    labels = [c["label"] for c in s["configs"]]
    assert len(labels) == 4 and all(len(c["run_ids"]) == 2 for c in s["configs"])
    rec = s["recommendation"]
    assert rec["precision"] in ("fp32", "int8") and rec["threads"] in (1, 2)
    best = min((c for c in s["configs"] if c["accuracy_passed"]), key=lambda c: c["median_ms"])
    assert best["settings"] == rec
    assert "on this board" in s["int8"]["message"]
    if s["int8"]["faster"] and s["int8"]["accuracy_passed"]:
        assert rec["precision"] == "int8" and "int8 pays" in s["int8"]["message"]
    acc = s["accuracy"]["int8"]
    assert acc["real_inputs"] and [r["ref"] + "|" + r["test"] for r in acc["rows"]] == [
        "host fp32|host int8", "host int8|board int8", "host fp32|board int8"]
    # the board computes what the host's int8 predicts, on the same real inputs
    assert acc["rows"][1]["cosine_min"] > 0.9999 and acc["rows"][1]["top1_agreement"] == 1.0
    assert s["accuracy"]["fp32"]["rows"][0]["cosine_min"] > 0.9999
    # gate names mean what they mean in `check`: cosine the mean over the inputs, not the worst one
    (cos_gate,) = [g for g in acc["gates"] if g["gate"] == "cosine>=0.95"]
    assert cos_gate["observed"] == acc["rows"][-1]["cosine_mean"]

    report = tmp_path / "report.html"
    p = deployer("report", "--out", str(report), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["sweeps"] == [s["sweep_id"]] and len(info["runs"]) == 8
    page = report.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") >= 9       # heat map + a distribution/time series per run

    exe = _chromium()
    dom = _browser(exe, "--dump-dom", report.as_uri(), profile=tmp_path / "chrome1")
    assert dom.returncode == 0, dom.stderr[-500:]
    assert f"Recommended: {s['recommendation_label']}" in dom.stdout
    assert "Parity (same preprocessed inputs)" in dom.stdout and "host int8 vs board int8" in dom.stdout
    shot = tmp_path / "shot.png"
    res = _browser(exe, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri(), profile=tmp_path / "chrome2")
    assert shot.is_file(), res.stderr[-500:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    # not blank: many distinct colours (text, the green recommendation box, plot colours)
    colours = np.unique(img.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 50
    green = (img[..., 1] > img[..., 0] + 15) & (img[..., 1] > img[..., 2] + 15)
    assert green.sum() > 500, "the recommendation box is not on screen"
