"""`deployer profile / history / compare / report` on bad input: one line, exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployer.profiling import stats as st
from deployer.profiling import store
from tests.fixtures.runner import require_cached_wheels, tiny_models  # noqa: F401  (fixture)

DEPLOYER = [str(Path(sys.executable).with_name("deployer"))]


def deployer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*DEPLOYER, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _one_error_line(p: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert p.returncode == code, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert any(all(n in ln for n in needles) for ln in lines), p.stderr


def test_profile_rejects_bad_sweeps_before_touching_a_board(tiny_models, tmp_path: Path) -> None:
    m = ["--param", str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin), "--targets", str(tmp_path / "none.yaml")]
    _one_error_line(deployer("profile", "pi", *m, "--sweep", "thread=1,2", cwd=tmp_path), 2, "unknown axis 'thread'")
    _one_error_line(deployer("profile", "pi", *m, "--sweep", "precision=fp32", cwd=tmp_path), 2,
                    "precision=fp32 needs the fp32 model")
    _one_error_line(deployer("profile", "pi", "--param", str(tmp_path / "x.param"), "--bin", str(tiny_models.int8_bin),
                             cwd=tmp_path), 2, "--param", "no such file")
    _one_error_line(deployer("profile", "pi", *m, "--images", str(tmp_path / "nope"), "--shape", "32,32,3",
                             cwd=tmp_path), 2, "--images", "no such file or folder")


def test_history_compare_report_cli(tmp_path: Path) -> None:
    p = deployer("history", "--json", cwd=tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout) == []
    _one_error_line(deployer("compare", "1", "2", cwd=tmp_path), 2, "history.sqlite: no run history yet")
    _one_error_line(deployer("history", "--model", "xyz", cwd=tmp_path), 2, "not a sha256")
    rng = np.random.default_rng(0)
    for median in (10.0, 10.0, 13.0):
        samples = list(rng.normal(median, 0.1, 60))
        store.record_run({"board": "pi", "started_at": "t", "samples_ms": samples, "options": {"threads": 1},
                          "analysis": st.analyze(samples).to_json(), "flags": []}, tmp_path / "results")
    _one_error_line(deployer("compare", "1", "999", cwd=tmp_path), 2, "run 999: not in")
    p = deployer("compare", "1", "3", "--fail-on-regression", "5", cwd=tmp_path)
    assert p.returncode == 1 and "SLOWER" in p.stderr and "Traceback" not in p.stderr
    p = deployer("compare", "1", "2", "--fail-on-regression", "5", "--json", cwd=tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout)["verdict"] == "same"
    _one_error_line(deployer("report", "--out", "r.txt", cwd=tmp_path), 2, "name it *.html")
    p = deployer("report", "--out", "r.html", "--json", cwd=tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout)["runs"] == [1, 2, 3]
    assert (tmp_path / "r.html").read_text().count("data:image/png;base64,") == 3


@pytest.mark.sshd
def test_profile_human_output_on_the_loopback_board(sshd, tiny_models, tmp_path: Path) -> None:
    require_cached_wheels("x86_64")
    p = deployer("profile", "loop", "--targets", str(sshd.targets), "--param", str(tiny_models.int8_param),
                 "--bin", str(tiny_models.int8_bin), "--fp32-param", str(tiny_models.fp32_param),
                 "--fp32-bin", str(tiny_models.fp32_bin), "--sweep", "threads=1,2", "--sweep", "precision=fp32,int8",
                 "--duration", "0.5", "--rounds", "1", "--gate", "cosine>=0.9", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for label in ("threads=1 precision=fp32", "threads=2 precision=int8"):
        assert label in p.stdout
    assert "recommended: threads=" in p.stderr and "on this board" in p.stderr
    assert "parity int8: host int8 vs board int8: cosine mean 1.00000, min 1.00000" in p.stderr
    p = deployer("history", "--json", cwd=tmp_path)
    runs = json.loads(p.stdout)
    assert len(runs) == 4 and {r["label"] for r in runs} == {
        "threads=1 precision=fp32", "threads=2 precision=fp32", "threads=1 precision=int8", "threads=2 precision=int8"}
    assert all(r["kind"] == "sweep" and r["sweep_id"] == 1 for r in runs)
