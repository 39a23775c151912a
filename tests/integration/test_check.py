"""`deployer check`: fp32 vs int8 in the stock ncnn wheel, per-layer error, gates and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.check.crosscheck import crosscheck
from deployer.check.gates import parse_gates
from deployer.check.samples import list_inputs, load_samples
from deployer.inputs.spec import InputSpec
from deployer.ncnn.model import NcnnModel
from deployer.quant.int8 import quantize_model
from deployer.quant.table import read_table
from tests.fixtures.quantize import MTCNN_INPUT, rnet_quantized  # noqa: F401

DEPLOYER = str(Path(sys.executable).parent / "deployer")
SPEC = InputSpec(shape=(24, 24), pixel="RGB", mean=MTCNN_INPUT["mean"], norm=MTCNN_INPUT["norm"])


@pytest.fixture(scope="module")
def heldout_samples(lfw_heldout):
    return load_samples([list_inputs(lfw_heldout.list_file)[:60]], [SPEC], ["in0"])


@pytest.fixture(scope="module")
def broken_int8(tmp_path_factory, rnet_quantized, mtcnn_rnet):
    """The good table with ONE conv's input scale 40x too large: its input saturates at +-127."""
    _, result = rnet_quantized
    table = read_table(result.paths.table)
    convs = [k for k in table.order if "_param_" not in k]
    victim = convs[1]
    table.set_activation(victim, table.activation_scale(victim) * 40)
    qmodel, report = quantize_model(NcnnModel.load(mtcnn_rnet.param, mtcnn_rnet.bin), table)
    folder = tmp_path_factory.mktemp("broken")
    param, binf = folder / "broken_int8.param", folder / "broken_int8.bin"
    qmodel.save(param, binf)
    return param, binf, victim, report.quantized


def test_good_model_passes_gates(rnet_quantized, mtcnn_rnet, heldout_samples):
    _, result = rnet_quantized
    res = crosscheck((mtcnn_rnet.param, mtcnn_rnet.bin), (result.paths.param, result.paths.bin), heldout_samples,
                     gates=parse_gates(["top1_agreement@out0>=0.95", "cosine@out0>=0.99"]))
    assert res.passed
    assert res.count == 60
    assert set(res.outputs) == {"out0", "out1"}
    assert res.outputs["out0"].top1_agreement >= 0.95
    # every int8 conv/fc is reported, in graph order, and none is far off
    assert [e.layer for e in res.layers] == [n for n in result.report["int8_layers"]]
    assert all(e.cosine > 0.95 for e in res.layers)   # (RNet has PReLU between convs: no requantize)


def test_per_layer_error_shows_where_it_enters(broken_int8, mtcnn_rnet, heldout_samples):
    param, binf, victim, _ = broken_int8
    res = crosscheck((mtcnn_rnet.param, mtcnn_rnet.bin), (param, binf), heldout_samples,
                     gates=parse_gates(["cosine>=0.98"]))
    assert not res.passed
    names = [e.layer for e in res.layers]
    at = names.index(victim)
    before, hit = res.layers[:at], res.layers[at]
    assert before and all(e.cosine > 0.99 for e in before)     # clean until the broken layer...
    assert hit.cosine < min(e.cosine for e in before) - 0.05   # ...which is where the error enters
    assert hit.rel_error > 3 * max(e.rel_error for e in before)


def test_cli_exit_codes_and_json(rnet_quantized, broken_int8, mtcnn_rnet, lfw_heldout, tmp_path):
    profile, result = rnet_quantized
    env = dict(os.environ, COLUMNS="200")
    base = [DEPLOYER, "check", "--param", str(mtcnn_rnet.param), "--bin", str(mtcnn_rnet.bin),
            "--images", str(lfw_heldout.list_file), "--count", "40", "--shape", "24,24", "--pixel", "RGB",
            "--mean", "127.5,127.5,127.5", "--norm", "0.0078125,0.0078125,0.0078125",
            "--gate", "top1_agreement@out0>=0.95", "--json"]
    good = subprocess.run(base + ["--int8-param", str(result.paths.param), "--int8-bin", str(result.paths.bin)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert good.returncode == 0, good.stderr
    data = json.loads(good.stdout)
    assert data["ok"] is True and data["inputs"] == 40 and data["gates"][0]["passed"] is True

    param, binf, _, _ = broken_int8
    bad = subprocess.run(base + ["--int8-param", str(param), "--int8-bin", str(binf)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1
    data = json.loads(bad.stdout)
    assert data["ok"] is False and data["gates"][0]["passed"] is False
    assert "gate failed: top1_agreement@out0>=0.95" in bad.stderr
    assert "Traceback" not in bad.stderr

    # profile mode: the int8 files come from the profile's out folder, images from its held-out split
    via_profile = subprocess.run([DEPLOYER, "check", "--profile", str(profile), "--no-layers"],
                                 capture_output=True, text=True, env=env, timeout=300)
    assert via_profile.returncode == 0, via_profile.stderr
    assert "top1_agreement@out0>=0.95: pass" in via_profile.stderr


def test_cli_bad_input_is_one_line(mtcnn_rnet, tmp_path):
    proc = subprocess.run([DEPLOYER, "check", "--param", str(mtcnn_rnet.param), "--bin", str(mtcnn_rnet.bin),
                           "--int8-param", str(tmp_path / "nope.param"), "--int8-bin", str(tmp_path / "nope.bin"),
                           "--images", str(tmp_path), "--shape", "24,24"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="300"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "vulkan" not in ln.lower()]
    assert lines == [f"error: {tmp_path}: folder has no images or .npy files (supported: "
                     ".jpg, .jpeg, .png, .bmp, .ppm, .pgm, .pnm, .tif, .tiff, .webp, .npy)"]


def test_run_check_defaults_to_the_eval_set_quantize_decided_on(rnet_quantized, lfw_heldout):
    """`check` with a profile and no --images judges on the same inputs as `quantize` (the
    profile's eval set, here the held-out share), and says when they are too few."""
    from deployer.profile import load_profile
    from deployer.quant.pipeline import run_check

    profile_path, result = rnet_quantized
    prof = load_profile(profile_path)
    checked = run_check(prof)
    report = result.report
    assert checked.count == report["eval"]["count"] and checked.source == report["eval"]["source"]
    out0 = checked.to_dict()["outputs"]["out0"]
    assert out0["top1_agreement"] == pytest.approx(report["heldout"]["outputs"]["out0"]["top1_agreement"])
    lo, hi = out0["top1_agreement_ci"]
    assert lo <= out0["top1_agreement"] <= hi
    # RNet's softmax decides most crops clearly: the clear rate is over those, near-ties counted apart
    assert 0 <= out0["top1_near_ties"] < checked.count
    lo, hi = out0["top1_agreement_clear_ci"]
    assert lo <= out0["top1_agreement_clear"] <= hi
    # every input whose class changed is listed once, named by its file
    rows = checked.to_dict()["top1_disagreements"]["out0"]
    assert len(rows) == checked.outputs["out0"].per_input_top1.count(False)
    assert all(not checked.outputs["out0"].per_input_top1[r["index"]] and Path(r["input"]).is_file() for r in rows)
    assert any("eval.min_count=50" in n for n in checked.notes)         # a dozen held-out crops: too few
    # explicit images replace the eval set; 150 of them are enough
    many = run_check(prof, images=[lfw_heldout.list_file], per_layer=False)
    assert many.count == 150 and many.source == "--images" and not any("min_count" in n for n in many.notes)
    assert many.passed == all(g.passed for g in many.gates)
    # eval.group: the same inputs, intervals counting groups of them (here ten faces a group)
    from deployer.check.metrics import grouped_interval
    from deployer.check.samples import group_keys
    from deployer.profile import Override

    pattern = r"^(lfw_\d\d)\d_"
    grouped = run_check(load_profile(profile_path, [Override("eval.group", pattern, "--eval-group")]),
                        images=[lfw_heldout.list_file], per_layer=False)
    keys = group_keys(list_inputs(lfw_heldout.list_file), pattern)
    s, plain = grouped.outputs["out0"], many.outputs["out0"]
    assert s.groups == len(set(keys)) >= 15 and plain.groups is None
    assert s.top1_agreement == plain.top1_agreement and s.per_input_top1 == plain.per_input_top1
    assert s.top1_agreement_ci == grouped_interval(s.per_input_top1, keys)
    assert s.top1_agreement_ci[0] <= plain.top1_agreement_ci[0]


def test_int8_model_of_another_network_is_one_line(mtcnn_rnet, mtcnn_pnet, lfw_heldout, tmp_path):
    """PNet shares RNet's blob names (in0, out0, out1) but not their sizes: comparing them was a
    ValueError from the metrics (exit 4)."""
    proc = subprocess.run([DEPLOYER, "check", "--param", str(mtcnn_rnet.param), "--bin", str(mtcnn_rnet.bin),
                           "--int8-param", str(mtcnn_pnet.param), "--int8-bin", str(mtcnn_pnet.bin),
                           "--images", str(lfw_heldout.list_file), "--shape", "24,24", "--count", "5", "--json"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="300"))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "vulkan" not in ln.lower()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {mtcnn_pnet.param}: blob 'out0' has shape [2, 7, 7] where "
                                                   f"{Path(mtcnn_rnet.param).name} has [2]"), lines
    assert json.loads(proc.stdout)["ok"] is False
