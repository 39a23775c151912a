"""quantize_model decisions on small in-memory graphs: which layers go int8, fusion, storage, errors."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.errors import DeployerError
from deployer.ncnn.model import NcnnModel
from deployer.ncnn.modelbin import Weight, weight_layout, write_bin
from deployer.ncnn.param import parse_param
from deployer.quant.arith import quantize_to_int8, round_half_away
from deployer.quant.int8 import quantize_model

CHAIN = """7767517
8 8
Input            input   0 1 data 0=8 1=8 2=4
Convolution      conv1   1 1 data c1 0=4 1=3 4=1 5=1 6=144 9=1
Convolution      conv2   1 1 c1 c2 0=4 1=1 5=1 6=16 9=1
ConvolutionDepthWise dw1 1 1 c2 d1 0=4 1=3 4=1 5=1 6=36 7=4 9=1
Convolution      conv4   1 1 d1 c4 0=6 1=1 5=0 6=24
Deconvolution    deconv  1 1 c4 dc 0=2 1=2 3=2 5=1 6=24
Flatten          flat    1 1 dc f
InnerProduct     fc      1 1 f out 0=3 1=1 2=768
"""

SPLIT = """7767517
7 9
Input            input   0 1 data 0=8 1=8 2=4
Convolution      conv1   1 1 data c1 0=4 1=1 5=1 6=16
Split            split1  1 2 c1 a b
Convolution      conv2   1 1 a c2 0=4 1=1 5=1 6=16
ConvolutionDepthWise dw2 1 1 b c3 0=4 1=3 4=1 5=1 6=36 7=4
Convolution      conv3   1 1 c3 c4 0=4 1=1 5=1 6=16
Pooling          pool    1 1 c4 p 0=1 4=1
"""


def make_model(text: str, seed: int = 0) -> NcnnModel:
    """Random fp32 weights for every layer, in the load order deployer.ncnn expects."""
    graph = parse_param(text)
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in graph.layers:
        entries = weight_layout(layer)
        if entries:
            weights[layer.name] = [
                Weight(name, rng.standard_normal(count).astype(np.float32), "fp32" if tagged else "raw", tagged)
                for name, count, tagged in entries
            ]
    return NcnnModel(graph=graph, weights=weights)


def full_table(model: NcnnModel, drop: tuple[str, ...] = ()) -> dict[str, list[float]]:
    table = {}
    for layer in model.graph.layers:
        if layer.type not in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
            continue
        rows = int(layer.get(7, 1)) if layer.type == "ConvolutionDepthWise" else int(layer.get(0, 0))
        w = np.abs(model.weight(layer.name, "weight").data.reshape(rows, -1)).max(axis=1)
        table[f"{layer.name}_param_0"] = list(127.0 / w)
        table[layer.name] = [10.0 + len(table)]   # distinct per layer so fusion scales are traceable
    for key in drop:
        table.pop(key)
    return table


def terms(model: NcnnModel) -> dict[str, int]:
    return {lay.name: int(lay.get(8, 0)) for lay in model.graph.layers
            if lay.type in ("Convolution", "ConvolutionDepthWise", "InnerProduct")}


def test_round_half_away_from_zero_and_clamp() -> None:
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, 126.5, 127.4, 300.0, -300.0], np.float32)
    assert round_half_away(x).tolist() == [1, -1, 2, -2, 3, -3, 0, 127, 127, 300, -300]
    assert quantize_to_int8(x, 1.0).tolist() == [1, -1, 2, -2, 3, -3, 0, 127, 127, 127, -127]


def test_quantize_to_int8_matches_the_ncnn_wheel() -> None:
    ncnn = pytest.importorskip("ncnn")
    rng = np.random.default_rng(3)
    data = np.concatenate([rng.normal(0, 2, 4000), np.arange(-130, 130) + 0.5, [0.49999997, -0.49999997]]).astype(np.float32)
    scale = np.float32(37.123)
    want = np.array(ncnn.quantize_to_int8(ncnn.Mat(data), ncnn.Mat(np.array([scale], np.float32))), dtype=np.int8)
    mine = quantize_to_int8(data, scale)
    # ncnn's x86 kernel rounds with a +-0.5 add in float32, which only differs from C round()
    # on values a hair below .5 (0.49999997*1.0 is not produced here since scale != 1)
    assert np.array_equal(mine, want.reshape(-1))


def test_chain_fuses_requantize_like_ncnn2int8() -> None:
    model = make_model(CHAIN)
    table = full_table(model)
    q, report = quantize_model(model, table)
    # conv->conv->dw->conv: every producer with an int8 conv consumer gets +100; conv4 feeds a
    # Deconvolution (float) and fc feeds nothing.
    assert terms(q) == {"conv1": 102, "conv2": 102, "dw1": 101, "conv4": 2, "fc": 2}
    top = q.weight("conv1", "top_scales").data
    assert top.tolist() == [np.float32(table["conv2"][0])]
    assert q.weight("dw1", "top_scales").data[0] == np.float32(table["conv4"][0])
    assert report.decision("conv2").requantize_to == "dw1"
    assert set(report.quantized) == {"conv1", "conv2", "dw1", "conv4", "fc"}
    write_bin(q.graph, q.weights)   # the layout deployer.ncnn expects for the changed params


def test_int8_weights_are_the_table_quantization_per_channel() -> None:
    model = make_model(CHAIN)
    table = full_table(model)
    q, _ = quantize_model(model, table)
    w = model.weight("conv1", "weight").data.reshape(4, -1)
    s = np.asarray(table["conv1_param_0"], np.float32)
    want = np.clip(round_half_away(w * s[:, None]), -127, 127)
    got = q.weight("conv1", "weight")
    assert got.storage == "int8" and got.data.dtype == np.int8
    assert np.array_equal(got.data.reshape(4, -1), want)
    # depthwise: one scale per group
    wd = model.weight("dw1", "weight").data.reshape(4, -1)
    sd = np.asarray(table["dw1_param_0"], np.float32)
    assert np.array_equal(q.weight("dw1", "weight").data.reshape(4, -1), np.clip(round_half_away(wd * sd[:, None]), -127, 127))
    assert q.weight("dw1", "weight_scales").data.tolist() == sd.tolist()
    assert q.weight("fc", "bottom_scales").data.tolist() == [np.float32(table["fc"][0])]


def test_param_8_is_written_where_modelwriter_puts_it() -> None:
    model = make_model(CHAIN)
    q, _ = quantize_model(model, full_table(model))
    assert list(q.graph.layer("conv1").params) == [0, 1, 4, 5, 6, 8, 9]
    assert list(q.graph.layer("fc").params) == [0, 1, 2, 8]


def test_float_layers_get_fp16_weights_by_default_and_fp32_on_request() -> None:
    model = make_model(CHAIN)
    table = full_table(model, drop=("conv2", "conv2_param_0"))
    q16, _ = quantize_model(model, table)
    assert q16.weight("conv2", "weight").storage == "fp16"
    assert q16.weight("deconv", "weight").storage == "fp16"
    assert q16.weight("deconv", "bias").storage == "raw"
    q32, report = quantize_model(model, table, float_storage="fp32")
    assert q32.weight("conv2", "weight").storage == "fp32"
    assert q32.weight("deconv", "weight").storage == "fp32"
    assert report.float_storage == "fp32"
    # the input model is not modified
    assert model.weight("conv1", "weight").storage == "fp32"
    assert 8 not in model.graph.layer("conv1").params


@pytest.mark.parametrize("drop, reason", [
    (("conv2", "conv2_param_0"), "not in table"),
    (("conv2_param_0",), "no weight line 'conv2_param_0' in table"),
    (("conv2",), "no activation line 'conv2' in table"),
])
def test_layer_missing_from_table_stays_float_alone(drop, reason) -> None:
    model = make_model(CHAIN)
    q, report = quantize_model(model, full_table(model, drop=drop))
    # unlike ncnn2int8, conv4 (a later Convolution) is still quantized
    assert terms(q) == {"conv1": 2, "conv2": 0, "dw1": 101, "conv4": 2, "fc": 2}
    assert report.decision("conv2").precision == "fp32"
    assert report.decision("conv2").reason == reason
    assert report.kept_float == ["conv2"]
    assert q.weight("conv2", "weight").storage == "fp16"
    assert [w.name for w in q.weights["conv2"]] == ["weight", "bias"]


def test_exclude_keeps_a_layer_float_and_breaks_fusion() -> None:
    model = make_model(CHAIN)
    q, report = quantize_model(model, full_table(model), exclude={"dw1", "nonexistent"})
    assert terms(q) == {"conv1": 102, "conv2": 2, "dw1": 0, "conv4": 2, "fc": 2}
    assert report.decision("dw1").reason == "excluded"
    assert any("nonexistent" in w for w in report.warnings)


def test_split_fusion_needs_every_branch_int8_conv() -> None:
    model = make_model(SPLIT)
    table = full_table(model)
    q, report = quantize_model(model, table)
    # conv1 -> Split -> (conv2, dw2): fused with the scale of split top 0's consumer (conv2)
    assert terms(q)["conv1"] == 102
    assert q.weight("conv1", "top_scales").data[0] == np.float32(table["conv2"][0])
    assert report.decision("conv1").requantize_to == "conv2"
    assert terms(q)["dw2"] == 101 and terms(q)["conv3"] == 2
    # one branch float -> no fusion through the Split
    q2, _ = quantize_model(model, table, exclude={"dw2"})
    assert terms(q2)["conv1"] == 2


def test_table_errors_are_one_line_and_name_the_layer() -> None:
    model = make_model(CHAIN)
    table = full_table(model)
    bad = dict(table, conv2_param_0=table["conv2_param_0"][:3])
    with pytest.raises(DeployerError, match=r"'conv2_param_0' has 3 scales but layer conv2 \(Convolution\) has num_output=4"):
        quantize_model(model, bad)
    bad = dict(table, dw1_param_0=[1.0] * 5)
    with pytest.raises(DeployerError, match="group=4"):
        quantize_model(model, bad)
    bad = dict(table, fc=[1.0, 2.0])
    with pytest.raises(DeployerError, match="'fc' has 2 values"):
        quantize_model(model, bad)
    bad = dict(table, conv1_param_0=[float("inf")] + table["conv1_param_0"][1:])
    with pytest.raises(DeployerError, match="non-finite"):
        quantize_model(model, bad)
    with pytest.raises(DeployerError, match="float_storage"):
        quantize_model(model, table, float_storage="bf16")  # type: ignore[arg-type]


def test_table_keys_without_a_layer_are_warned_about() -> None:
    model = make_model(CHAIN)
    table = dict(full_table(model), ghost=[3.0], ghost_param_0=[1.0, 2.0])
    _, report = quantize_model(model, table)
    assert len(report.warnings) == 1 and "ghost" in report.warnings[0] and "2 table key(s)" in report.warnings[0]


def test_already_int8_model_is_refused() -> None:
    model = make_model(CHAIN)
    q, _ = quantize_model(model, full_table(model))
    with pytest.raises(DeployerError, match="already int8"):
        quantize_model(q, full_table(model))


def test_report_json_shape() -> None:
    model = make_model(CHAIN)
    _, report = quantize_model(model, full_table(model, drop=("fc",)))
    d = report.to_dict()
    assert d["kept_float"] == ["fc"] and "conv1" in d["quantized"]
    fc = next(x for x in d["layers"] if x["name"] == "fc")
    assert fc["precision"] == "fp32" and fc["reason"] == "no activation line 'fc' in table"


WEIGHT_ONLY = """7767517
4 4
Input            input   0 1 x 0=3 1=5
RNN              rnn     1 1 x h 0=4 1=12 2=0
Gemm             gemm    1 1 h g 3=0 5=1 7=0 8=3 9=4
Embed            emb     1 1 g e 0=2 1=7 3=14
"""


def test_weight_only_layers_use_the_table_param_lines() -> None:
    model = make_model(WEIGHT_ONLY)
    table = {"rnn_param_0": [10.0, 20.0, 30.0, 40.0], "rnn_param_1": [5.0] * 4, "emb_param_0": [50.0]}
    q, report = quantize_model(model, table)
    rnn = q.graph.layer("rnn")
    assert rnn.get(8, 0) == 2
    xc = model.weight("rnn", "weight_xc").data.reshape(4, 3)
    assert np.array_equal(q.weight("rnn", "weight_xc").data.reshape(4, 3),
                          quantize_to_int8(xc, np.array([[10.0], [20.0], [30.0], [40.0]], np.float32)))
    assert q.weight("rnn", "weight_hc_scales").data.tolist() == [5.0] * 4
    assert q.weight("rnn", "bias_c").storage == "fp16"          # tagged, not quantized
    assert q.graph.layer("emb").get(18, 0) == 2
    assert q.weight("emb", "weight_scales").data.tolist() == [50.0]
    assert report.decision("rnn").precision == "int8"
    write_bin(q.graph, q.weights)


def test_weight_only_layer_missing_from_table_stays_float() -> None:
    model = make_model(WEIGHT_ONLY)
    q, report = quantize_model(model, {"rnn_param_0": [1.0] * 4, "emb_param_0": [50.0]})
    assert q.graph.layer("rnn").get(8, 0) == 0
    assert report.decision("rnn").reason == "no weight line 'rnn_param_1' in table"
    assert q.graph.layer("emb").get(18, 0) == 2
    with pytest.raises(DeployerError, match="'emb_param_0' has 2 scales"):
        quantize_model(model, {"emb_param_0": [1.0, 2.0]})


def test_gemm_constant_b_is_transposed_and_quantized_with_absmax() -> None:
    model = make_model(WEIGHT_ONLY)
    q, report = quantize_model(model, {})
    gemm = q.graph.layer("gemm")
    assert gemm.get(18, 0) == 2 and gemm.get(3, 0) == 1
    b = model.weight("gemm", "B").data.reshape(4, 3).T          # K=4 rows of N=3 -> N rows of K
    scale = np.float32(127) / np.abs(b).max()
    assert q.weight("gemm", "B_scales").data.tolist() == [scale]
    assert np.array_equal(q.weight("gemm", "B").data.reshape(3, 4), quantize_to_int8(b, scale))
    assert report.decision("gemm").reason.startswith("dynamic")
    write_bin(q.graph, q.weights)
