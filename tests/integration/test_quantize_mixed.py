"""Automatic mixed precision on a real model: meets a gate the all-int8 model misses, with few fp32 layers."""

from __future__ import annotations

import pytest

from deployer.check.net import NcnnNet
from deployer.errors import DeployerError
from deployer.profile import load_profile
from deployer.quant.pipeline import run_quantize
from tests.fixtures.quantize import rnet_quantized, write_profile  # noqa: F401


def _out1_cosine(report: dict) -> float:
    return report["heldout"]["outputs"]["out1"]["cosine"]


def test_mixed_precision_meets_a_tighter_gate(tmp_path, rnet_quantized, mtcnn_rnet, lfw_calibration):
    base = rnet_quantized[1].report
    method = base["method"]
    c0 = _out1_cosine(base)
    if c0 > 0.9999:
        pytest.skip(f"all-int8 RNet already has box cosine {c0}; no room for a tighter gate")
    target = round(c0 + 0.3 * (1 - c0), 6)           # out of reach for all-int8, reachable with fp32 layers
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            quantize={"method": method, "max_fp32_layers": 3},
                            gate=[f"cosine@out1>={target}"])
    result = run_quantize(load_profile(profile))
    report = result.report
    mixed = report["mixed"]
    assert mixed["ran"] is True
    assert report["gate"]["passed"] is True, mixed
    auto = report["keep_fp32"]["auto"]
    assert 1 <= len(auto) <= 3
    assert set(auto) <= set(report["fp32_layers"])
    assert _out1_cosine(report) >= target > c0
    # the cost is reported and real: fp32 (fp16-stored) weights are bigger than int8 ones
    assert report["sizes"]["mixed_cost_bytes"] == report["sizes"]["int8_bin"] - report["sizes"]["all_int8_bin"] > 0
    assert result.paths.bin.stat().st_size == report["sizes"]["int8_bin"]
    # the sensitivity ranking is recorded, best first, for every int8 layer
    benefits = [row["benefit"] for row in mixed["sensitivity"]]
    assert benefits == sorted(benefits, reverse=True)
    assert len(mixed["sensitivity"]) == len(base["int8_layers"]) - len(base["keep_fp32"]["profile"])
    assert mixed["reachable"] is True and mixed["smallest_passing"] == auto
    # the speed cost is estimated from the MACs moved to float
    speed = report["speed"]
    assert 0 < speed["fp32_macs"] < speed["conv_macs"]
    assert speed["est_time_vs_all_int8"] == pytest.approx(1 + speed["fp32_mac_share"] * (speed["int8_speedup_assumed"] - 1),
                                                          abs=1e-3)
    # the written model is the mixed one: stock ncnn loads it, and the kept layers have no int8 term
    NcnnNet(result.paths.param, result.paths.bin)
    from deployer.ncnn.param import read_param

    graph = read_param(result.paths.param)
    assert all(int(graph.layer(n).get(8, 0)) == 0 for n in auto)


def test_unreachable_gate_keeps_all_int8_and_fails(tmp_path, mtcnn_rnet, lfw_calibration):
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            quantize={"method": "maxabs", "max_fp32_layers": 1}, gate=["max_abs<=0"])
    report = run_quantize(load_profile(profile)).report
    assert report["gate"]["passed"] is False
    assert report["mixed"]["ran"] is True and report["mixed"]["passed"] is False
    assert report["keep_fp32"]["auto"] == [] and report["sizes"]["mixed_cost_bytes"] == 0
    # fp16-stored float layers never give exactly fp32's outputs: no choice of fp32 layers can
    # pass, which one candidate (every layer float) proves; no sensitivity sweep is wasted on it
    assert report["mixed"]["reachable"] is False and report["mixed"]["candidates_evaluated"] == 1
    assert "even with every layer float" in report["mixed"]["reason"]


def _tighter_gate_run(rnet_quantized, mtcnn_rnet, lfw_calibration, tmp_path):
    """(the all-int8 report, quantize(folder, **quantize_fields) -> report) with a box-cosine gate
    all-int8 RNet misses and fp32 layers can meet."""
    base = rnet_quantized[1].report
    c0 = _out1_cosine(base)
    if c0 > 0.9999:
        pytest.skip(f"all-int8 RNet already has box cosine {c0}; no room for a tighter gate")
    gate = [f"cosine@out1>={round(c0 + 0.3 * (1 - c0), 6)}"]

    def quantize(folder: str, **fields) -> dict:
        profile = write_profile(tmp_path / folder, mtcnn_rnet, lfw_calibration.list_file, tmp_path / folder / "out",
                                quantize={"method": base["method"], **fields}, gate=gate)
        return run_quantize(load_profile(profile)).report

    return base, quantize


def test_over_budget_names_the_smallest_set_that_would_pass(tmp_path, rnet_quantized, mtcnn_rnet, lfw_calibration):
    """Budget 0: the search still finds the fp32 layers that meet the gate and says what they cost;
    given that budget, the same search uses them."""
    base, quantize = _tighter_gate_run(rnet_quantized, mtcnn_rnet, lfw_calibration, tmp_path)
    report = quantize("zero", max_fp32_layers=0)
    mixed = report["mixed"]
    assert report["gate"]["passed"] is False and mixed["passed"] is False and mixed["reachable"] is True
    found = mixed["smallest_passing"]
    assert found and report["keep_fp32"]["auto"] == [] and report["sizes"]["mixed_cost_bytes"] == 0
    assert mixed["smallest_passing_bin_bytes"] > report["sizes"]["all_int8_bin"]
    assert f"raise quantize.max_fp32_layers to {len(found)}" in mixed["reason"]
    report = quantize("enough", max_fp32_layers=len(found))
    assert report["gate"]["passed"] is True and sorted(report["keep_fp32"]["auto"]) == sorted(found)
    assert report["sizes"]["int8_bin"] == mixed["smallest_passing_bin_bytes"]


def test_gate_on_missing_output_is_an_input_error(tmp_path, mtcnn_rnet, lfw_calibration):
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            quantize={"method": "maxabs"}, gate=["cosine@logits>=0.9"])
    with pytest.raises(DeployerError, match=r"gate cosine@logits>=0.9: the model has no output 'logits'"):
        run_quantize(load_profile(profile))
    assert not (tmp_path / "out").exists()


def test_byte_budget_from_the_profile_bounds_the_fp32_layers(tmp_path, rnet_quantized, mtcnn_rnet, lfw_calibration):
    """quantize.max_fp32_bytes reaches the search: a generous share meets the gate with the extra
    bytes it reports (the real .bin growth), one byte meets nothing and keeps the all-int8 model."""
    _, quantize = _tighter_gate_run(rnet_quantized, mtcnn_rnet, lfw_calibration, tmp_path)
    report = quantize("a", max_fp32_layers=3, max_fp32_bytes="50%")
    mixed, sizes = report["mixed"], report["sizes"]
    assert report["gate"]["passed"] is True, mixed
    assert mixed["byte_budget"] == int(0.5 * sizes["all_int8_bin"])
    assert 0 < mixed["extra_bytes"] == sizes["int8_bin"] - sizes["all_int8_bin"] <= mixed["byte_budget"]
    report = quantize("b", max_fp32_bytes=1)
    assert report["gate"]["passed"] is False and report["keep_fp32"]["auto"] == []
    assert report["mixed"]["byte_budget"] == 1 and "over the budget of 1 bytes" in report["mixed"]["reason"]
