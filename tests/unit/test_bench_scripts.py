"""`make bench` and bench/README run every script as a file (`python bench/bench_x.py`): that puts
bench/ first on sys.path, not the repository root, so a script importing `examples` or `bench.*`
without adding the root died with ModuleNotFoundError before doing anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py")) + ["ncnn_io.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_runs_as_a_file(script: str) -> None:
    res = subprocess.run([sys.executable, f"bench/{script}", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("usage:"), res.stdout[:500]
