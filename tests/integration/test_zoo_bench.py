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

    # --merge: a later run of one more method joins the file; the rows already there stay as they were
    run = lambda: subprocess.run([sys.executable, str(ROOT / "bench" / "bench_quantize.py"), "--models",  # noqa: E731
                                  "mtcnn_rnet", "--methods", "seq", "--runs", "3", "--out", str(out), "--merge",
                                  "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    proc = run()
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = json.loads(out.read_text())
    (model,) = merged["models"]
    assert [r["method"] for r in model["methods"]] == ["maxabs", "seq"]
    assert model["methods"][0] == res and model["methods"][1]["measured"] == merged["merged"][0]["date"]
    assert model["methods"][1]["error"] is None and model["methods"][1]["top1_agreement"] >= 0.95
    assert merged["host"] == report["host"]
    # rows scored against another fp32 original are not comparable: refused, the file left as it was
    model["fp32"]["bin_sha256"] = "0" * 64
    out.write_text(json.dumps(merged))
    proc = run()
    assert proc.returncode != 0 and "fp32 model is not the one" in proc.stderr
    assert json.loads(out.read_text()) == merged
