"""deployer.quant.speedcost: reading a board's per-layer times, and every way the file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.native.layers import compare, report
from deployer.quant.speedcost import check_same_model, load_layer_times, mac_estimate, measured_cost


def _run_doc(board: str = "pi4", with_fp32: bool = True) -> dict:
    """A `deployer run --layers --fp32-param` result built by the same functions the run uses."""
    int8 = report({"layers": [{"index": 0, "name": "conv_0", "type": "Convolution", "ms": [2.0, 3.0, 2.5]},
                              {"index": 1, "name": "relu_1", "type": "ReLU", "ms": [0.5, 0.5, 0.5]},
                              {"index": 2, "name": "fc_2", "type": "InnerProduct", "ms": [1.0, 1.0, 1.2]}]})
    fp32 = report({"layers": [{"index": 0, "name": "conv_0", "type": "Convolution", "ms": [4.0, 4.5, 5.0]},
                              {"index": 1, "name": "relu_1", "type": "ReLU", "ms": [0.5, 0.6, 0.5]},
                              {"index": 2, "name": "fc_2", "type": "InnerProduct", "ms": [1.5, 1.5, 1.5]}]})
    if with_fp32:
        int8["vs_fp32"] = compare(int8, fp32)
    return {"ok": True, "board": board, "options": {"threads": 2}, "layers": int8}


def _write(tmp_path: Path, doc, name: str = "run.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_measured_cost_is_the_boards_fp32_minus_int8_time_of_the_float_layers(tmp_path):
    times = load_layer_times(_write(tmp_path, _run_doc()))
    assert times.board == "pi4" and times.threads == 2
    check_same_model(times, {"in0": "Input", "conv_0": "Convolution", "relu_1": "ReLU", "fc_2": "InnerProduct",
                             "fc_3": "InnerProduct"})
    cost = measured_cost(times, ["conv_0"])
    assert cost["source"] == "board" and cost["all_int8_ms"] == pytest.approx(2.5 + 0.5 + 1.0)
    assert cost["extra_ms"] == pytest.approx(4.5 - 2.5)
    assert cost["est_time_vs_all_int8"] == pytest.approx((4.0 + 2.0) / 4.0, abs=1e-4)
    assert measured_cost(times, [])["est_time_vs_all_int8"] == 1.0
    # a second head's layer the run never reached (it extracts one output) is listed, not guessed
    cost = measured_cost(times, ["conv_0", "fc_3"])
    assert cost["extra_ms"] == pytest.approx(2.0) and cost["untimed"] == ["fc_3"] and "fc_3" in cost["note"]


def test_a_multi_board_json_needs_exactly_one_timed_board(tmp_path):
    one = _write(tmp_path, {"boards": [_run_doc("a", with_fp32=False), _run_doc("b")]})
    assert load_layer_times(one).board == "b"
    two = _write(tmp_path, {"boards": [_run_doc("a"), _run_doc("b")]}, "two.json")
    with pytest.raises(DeployerError, match="has 2 boards"):
        load_layer_times(two)


@pytest.mark.parametrize("doc, words", [
    ("{not json", "not a JSON run result"),
    ({"rows": []}, "not a `deployer run` result"),
    ({"board": "pi4", "ok": True}, "without --layers"),
    (_run_doc(with_fp32=False), "without --fp32-param"),
    ({"board": "pi4", "layers": {"vs_fp32": {"layers": {"conv_0": {"fp32_ms": 1.0}}}}}, "malformed"),
])
def test_the_wrong_file_is_one_line_naming_it_and_the_fix(tmp_path, doc, words):
    path = _write(tmp_path, doc)
    with pytest.raises(DeployerError) as err:
        load_layer_times(path)
    assert words in str(err.value) and str(path) in str(err.value) and "--layers" in str(err.value)
    assert "\n" not in str(err.value)


def test_times_of_another_model_fail_before_any_work(tmp_path):
    times = load_layer_times(_write(tmp_path, _run_doc()))
    with pytest.raises(DeployerError, match="times layer 'fc_2' \\(InnerProduct\\) but this model has no such layer"):
        check_same_model(times, {"conv_0": "Convolution", "relu_1": "ReLU"})
    with pytest.raises(DeployerError, match="times layer 'relu_1' \\(ReLU\\) but this model has a Clip: .*another model"):
        check_same_model(times, {"conv_0": "Convolution", "relu_1": "Clip", "fc_2": "InnerProduct"})
    with pytest.raises(DeployerError, match="missing.json: run result file not found"):
        load_layer_times(tmp_path / "missing.json")


def test_mac_estimate_is_a_ceiling_with_int8_twice_as_fast():
    est = mac_estimate({"a": 300, "b": 100}, ["b"])
    assert est["source"] == "estimate" and est["fp32_mac_share"] == 0.25
    assert est["est_time_vs_all_int8"] == pytest.approx(1 + 0.25 * (est["int8_speedup_assumed"] - 1))
