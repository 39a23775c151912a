"""The `deployer quantize` command as a user runs it: flags only, profile + flags, gates, MobileNetV2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOYER = str(Path(sys.executable).parent / "deployer")
ENV = dict(os.environ, COLUMNS="200")


def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([DEPLOYER, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def test_quantize_with_flags_only(tmp_path, mtcnn_rnet, lfw_calibration):
    proc = run("quantize", "--param", mtcnn_rnet.param, "--bin", mtcnn_rnet.bin, "--calib", lfw_calibration.list_file,
               "--mean", "127.5,127.5,127.5", "--norm", "0.0078125,0.0078125,0.0078125", "--shape", "24,24",
               "--pixel", "RGB", "--method", "maxabs", "--out", tmp_path / "out", "--name", "rnet", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["method"] == "maxabs" and report["gate"]["passed"] is None
    for key in ("param", "bin", "table", "report"):
        assert Path(report["files"][key]).is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "rnet_int8.bin", "rnet_int8.json", "rnet_int8.param", "rnet_int8.table"]
    assert json.loads((tmp_path / "out" / "rnet_int8.json").read_text()) == report


def test_failing_gate_exits_1_and_says_why(tmp_path, mtcnn_rnet, lfw_calibration):
    proc = run("quantize", "--param", mtcnn_rnet.param, "--bin", mtcnn_rnet.bin, "--calib", lfw_calibration.list_file,
               "--mean", "127.5,127.5,127.5", "--norm", "0.0078125,0.0078125,0.0078125", "--shape", "24,24",
               "--pixel", "RGB", "--method", "kl", "--gate", "max_abs<=0", "--no-mixed", "--out", tmp_path / "out")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "gate max_abs<=0: FAIL" in proc.stderr
    assert f"error: gate failed: max_abs<=0 (files written to {tmp_path / 'out'})" in proc.stderr
    report = json.loads((tmp_path / "out" / "model_int8.json").read_text())
    assert report["ok"] is False and report["mixed"] == {"ran": False}


def test_bad_flag_value_is_one_line(tmp_path, mtcnn_rnet, lfw_calibration):
    proc = run("quantize", "--param", mtcnn_rnet.param, "--bin", mtcnn_rnet.bin, "--calib", lfw_calibration.list_file,
               "--shape", "24,24", "--pixel", "RBG", "--out", tmp_path / "out")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["error: --pixel: unknown pixel format 'RBG' (did you mean 'RGB'?)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_mobilenet_v2_defaults_agree_with_fp32(tmp_path, mobilenet_v2, calib_photos, imagenet_views,
                                              imagenet_heldout):
    """The README profile on real photos: calibrate on skimage/sklearn crops, decide on 120 views of
    foolbox's ImageNet photos, then check on the 20 originals. The profile's gate must hold (exit 0):
    that is what `make demo` promises."""
    out = tmp_path / "out"
    proc = run("quantize", "--profile", ROOT / "profiles" / "mobilenet_v2.yaml", "--param", mobilenet_v2.param,
               "--bin", mobilenet_v2.bin, "--calib", calib_photos.list_file, "--eval", imagenet_views.list_file,
               "--out", out, "--json", timeout=1800)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["gate"]["passed"] is True
    assert report["sizes"]["fp32_bin"] / report["sizes"]["int8_bin"] >= 3.5
    # the profile's eval.group: the 120 views' intervals count their 20 photos
    assert report["eval"]["groups"] == 20 and report["heldout"]["outputs"]["out0"]["groups"] == 20
    # and the method choice survives resampling those photos (measured: seq in 1000 of 1000 draws, and
    # with any one photo left out; its score leads percentile's by 0.032)
    st = report["method_stability"]
    assert st["chosen"] == report["method"] and st["settled"] and st["share"] >= 0.9, st
    assert st["leave_one_out"]["of"] == 20 and st["leave_one_out"]["holds"] >= 19, st
    # each agreement gate says whether its interval (over the photos) settles it
    g = next(g for g in report["gate"]["results"] if g["gate"].startswith("top1_agreement>="))
    lo, hi = report["heldout"]["outputs"]["out0"]["top1_agreement_ci"]
    threshold = float(g["gate"].split(">=")[1])
    assert g["intervals"] == {"out0": [lo, hi]} and g["settled"] == (lo >= threshold)

    check = run("check", "--param", mobilenet_v2.param, "--bin", mobilenet_v2.bin,
                "--int8-param", report["files"]["param"], "--int8-bin", report["files"]["bin"],
                "--images", imagenet_heldout.list_file, "--shape", "224,224", "--pixel", "RGB",
                "--mean", "123.675,116.28,103.53", "--norm", "0.017124754,0.017507003,0.017429194",
                "--gate", "top1_agreement>=0.95", "--json")
    assert check.returncode == 0, check.stderr
    data = json.loads(check.stdout)
    assert data["inputs"] == 20
    assert data["outputs"]["out0"]["top1_agreement"] >= 0.95
    assert data["outputs"]["out0"]["cosine"] >= 0.98
    assert any(layer["requantized"] for layer in data["layers"])


def test_refine_flag_says_what_it_did_and_rejects_unknown_names(tmp_path, mtcnn_rnet, lfw_calibration):
    common = ["quantize", "--param", mtcnn_rnet.param, "--bin", mtcnn_rnet.bin, "--calib", lfw_calibration.list_file,
              "--mean", "127.5,127.5,127.5", "--norm", "0.0078125,0.0078125,0.0078125", "--shape", "24,24",
              "--pixel", "RGB", "--method", "maxabs"]
    # RNet's activations are PReLU layers: nothing to shift, said in one line, no evaluation spent on it
    proc = run(*common, "--refine", "shift", "--out", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    assert "refine shift: not run (shift: no ReLU/ReLU6 conv output is read by a single depthwise or 1x1 conv)" \
        in proc.stderr
    report = json.loads((tmp_path / "a" / "model_int8.json").read_text())
    assert report["refine"]["ran"] is False and report["refine"]["shift"] == {"pairs": 0}
    proc = run(*common, "--refine", "shift,gptq", "--out", tmp_path / "b")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--refine: unknown technique 'gptq'" in proc.stderr and "adaround, biascorr, shift" in proc.stderr
    assert not (tmp_path / "b").exists()
