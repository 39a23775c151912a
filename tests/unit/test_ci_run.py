""".ci/run's verdict, with `make test` replaced by a stand-in that prints what pytest would: a red or
empty pytest run must never end in a green CI run, and the closing pytest line is repeated last."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ci(tmp_path: Path, output: str, code: int) -> subprocess.CompletedProcess:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "make").write_text(f"#!/bin/sh\nprintf '%b' '{output}'\nexit {code}\n")
    (fake / "make").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", CI_TIMEOUT="60")
    return subprocess.run(["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("output, code, want_rc, verdict", [
    ("...\\n412 passed, 2 skipped in 301.20s (0:05:01)\\n", 0, 0, "ci: pytest: 412 passed, 2 skipped in 301.20s (0:05:01)"),
    ("F..\\n1 failed, 411 passed in 299.00s\\n", 2, 2, "ci: pytest: 1 failed, 411 passed in 299.00s"),
    ("\\nno tests ran in 0.01s\\n", 2, 2, "ci: pytest: no tests ran in 0.01s"),
    ("\\n3 skipped in 0.20s\\n", 0, 5, "ci: FAILED: pytest ran no tests"),
    ("setup: pip failed\\n", 2, 2, "ci: FAILED before pytest finished (set-up or collection); see above"),
])
def test_ci_run_verdict(tmp_path: Path, output: str, code: int, want_rc: int, verdict: str) -> None:
    res = _ci(tmp_path, output, code)
    assert res.returncode == want_rc, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert verdict in lines
    assert lines[-1].startswith("ci: finished in ") and lines[-1].endswith(f"exit {want_rc}")
