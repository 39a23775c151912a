"""bench/bench_quantize.py end to end on the smallest real model, so the bench cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_quantize_runs_and_reports_every_column(tmp_path, mtcnn_rnet):
    out = tmp_path / "quantize.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_quantize.py"), "--models", "mtcnn_rnet",
                           "--methods", "maxabs", "--runs", "3", "--out", str(out), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    (model,) = report["models"]
    assert model["model"] == "mtcnn_rnet" and model["heldout_images"] == 150
    (res,) = model["methods"]
    assert res["error"] is None, res["error"]
    # RNet is easy to quantize (the reference notes measured 100 % with max-abs on these crops)
    assert res["top1_agreement"] >= 0.95 and res["accuracy"] >= 0.95
    assert 0.2 < res["bin_ratio"] < 0.5                   # int8 weights + fp16 rest vs fp32
    assert res["latency_ms"] > 0 and res["calib_seconds"] > 0
