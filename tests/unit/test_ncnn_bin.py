"""deployer.ncnn.modelbin / half / model: .bin layouts, storage tags, fp16, errors.

The layout table is checked against the real ncnn wheel: each layer type is loaded through a
DataReader that records the size of every read ncnn makes (tests/fixtures/ncnnio.py), and the
sequence must equal what `weight_layout` predicts - tag reads and payload reads alike.
"""

from __future__ import annotations

import struct

import ncnn
import numpy as np
import pytest

from deployer.errors import DeployerError
from deployer.ncnn import half
from deployer.ncnn.model import NcnnModel
from deployer.ncnn.modelbin import (
    WEIGHTLESS, Weight, encode_weight, read_bin, weight_layout, write_bin,
)
from deployer.ncnn.param import Graph, Layer, format_param, parse_param
from tests.fixtures.ncnnio import (
    CountingReader, count_reads, expected_reads, layer_files, new_net, single_layer_graph,
    synthetic_weights,
)

# (type, params): every layer type with weights, incl. int8 variants and dynamic-weight forms
LAYOUT_CASES = [
    ("Convolution", {0: 4, 1: 3, 5: 1, 6: 108}),
    ("Convolution", {0: 4, 1: 3, 5: 0, 6: 108}),
    ("Convolution", {0: 4, 1: 3, 5: 1, 6: 108, 8: 2}),
    ("Convolution", {0: 4, 1: 3, 5: 1, 6: 108, 8: 102}),
    ("Convolution", {0: 4, 1: 3, 5: 1, 6: 108, 19: 1}),
    ("ConvolutionDepthWise", {0: 4, 1: 3, 5: 1, 6: 36, 7: 4}),
    ("ConvolutionDepthWise", {0: 4, 1: 3, 5: 1, 6: 36, 7: 4, 8: 1}),
    ("ConvolutionDepthWise", {0: 4, 1: 3, 5: 1, 6: 36, 7: 4, 8: 101}),
    ("ConvolutionDepthWise", {0: 4, 1: 3, 5: 1, 6: 36, 7: 4, 8: 2}),
    ("ConvolutionDepthWise", {0: 4, 1: 3, 5: 1, 6: 36, 7: 4, 8: 102}),
    ("ConvolutionDepthWise", {0: 4, 1: 3, 5: 1, 6: 36, 7: 4, 19: 1}),
    ("Convolution1D", {0: 4, 1: 3, 5: 1, 6: 48}),
    ("Convolution1D", {0: 4, 1: 3, 5: 1, 6: 48, 19: 1}),
    ("Convolution3D", {0: 4, 1: 3, 5: 1, 6: 432}),
    ("ConvolutionDepthWise1D", {0: 4, 1: 3, 5: 1, 6: 12, 7: 4}),
    ("ConvolutionDepthWise1D", {0: 4, 1: 3, 5: 1, 6: 12, 7: 4, 19: 1}),
    ("ConvolutionDepthWise3D", {0: 4, 1: 3, 5: 1, 6: 108, 7: 4}),
    ("Deconvolution", {0: 4, 1: 3, 5: 1, 6: 144}),
    ("Deconvolution", {0: 4, 1: 3, 5: 1, 6: 144, 28: 1}),
    ("Deconvolution1D", {0: 4, 1: 3, 5: 1, 6: 48}),
    ("Deconvolution1D", {0: 4, 1: 3, 5: 1, 6: 48, 28: 1}),
    ("Deconvolution3D", {0: 4, 1: 3, 5: 1, 6: 432}),
    ("DeconvolutionDepthWise", {0: 4, 1: 3, 5: 1, 6: 36, 7: 4}),
    ("DeconvolutionDepthWise", {0: 4, 1: 3, 5: 1, 6: 36, 7: 4, 28: 1}),
    ("DeconvolutionDepthWise1D", {0: 4, 1: 3, 5: 1, 6: 12, 7: 4}),
    ("DeconvolutionDepthWise1D", {0: 4, 1: 3, 5: 1, 6: 12, 7: 4, 28: 1}),
    ("DeconvolutionDepthWise3D", {0: 4, 1: 3, 5: 1, 6: 108, 7: 4}),
    ("DeformableConv2D", {0: 4, 1: 3, 5: 1, 6: 144}),
    ("InnerProduct", {0: 4, 1: 1, 2: 64}),
    ("InnerProduct", {0: 4, 1: 1, 2: 64, 8: 2}),
    ("InnerProduct", {0: 4, 1: 0, 2: 64, 8: 102}),       # no top scale: IP never requantizes
    ("BatchNorm", {0: 4}),
    ("Scale", {0: 4, 1: 1}),
    ("Scale", {0: 4}),
    ("Scale", {0: -233}),
    ("Bias", {0: 4}),
    ("PReLU", {0: 4}),
    ("Normalize", {3: 4}),
    ("MemoryData", {0: 3}),
    ("MemoryData", {0: 3, 1: 2}),
    ("MemoryData", {0: 3, 1: 2, 2: 4}),
    ("MemoryData", {0: 3, 1: 2, 11: 2, 2: 4}),
    ("MemoryData", {0: 3, 21: 0}),
    ("Embed", {0: 4, 1: 10, 2: 1, 3: 40}),
    ("Embed", {0: 4, 1: 10, 2: 1, 3: 40, 18: 2}),
    ("LayerNorm", {0: 4, 2: 1}),
    ("LayerNorm", {0: 4, 2: 0}),
    ("GroupNorm", {0: 2, 1: 4, 3: 1}),
    ("GroupNorm", {0: 2, 1: 4, 3: 0}),
    ("InstanceNorm", {0: 4, 2: 1}),
    ("InstanceNorm", {0: 4, 2: 0}),
    ("RMSNorm", {0: 4, 2: 1}),
    ("RMSNorm", {0: 4, 2: 0}),
    ("MultiHeadAttention", {0: 8, 1: 2, 2: 64}),
    ("MultiHeadAttention", {0: 8, 1: 2, 2: 48, 3: 6, 4: 5}),
    ("MultiHeadAttention", {0: 8, 1: 2, 2: 64, 18: 2}),
    ("Gemm", {4: 1, 5: 1, 6: 1, 7: 2, 8: 3, 9: 4, 10: 3}),
    ("Gemm", {4: 1, 5: 0, 6: 1, 7: 2, 8: 3, 9: 4, 10: 0}),
    ("Gemm", {4: 0, 5: 1, 6: 1, 7: 2, 8: 3, 9: 4, 10: 1}),
    ("Gemm", {4: 1, 5: 1, 6: 1, 7: 2, 8: 3, 9: 4, 10: 2}),
    ("Gemm", {4: 1, 5: 1, 6: 1, 7: 2, 8: 3, 9: 4, 10: 4}),
    ("Gemm", {4: 1, 5: 1, 6: 1, 7: 2, 8: 3, 9: 4, 10: -1}),
    ("Gemm", {4: 1, 5: 1, 6: 0, 7: 2, 8: 3, 9: 4, 18: 2}),
    ("RNN", {0: 4, 1: 12}),
    ("RNN", {0: 4, 1: 24, 2: 2}),
    ("RNN", {0: 4, 1: 12, 8: 2}),
    ("LSTM", {0: 4, 1: 48}),
    ("LSTM", {0: 4, 1: 96, 2: 2}),
    ("LSTM", {0: 2, 1: 48, 3: 4}),
    ("LSTM", {0: 4, 1: 48, 8: 2}),
    ("GRU", {0: 4, 1: 36}),
    ("GRU", {0: 4, 1: 72, 2: 2}),
    ("GRU", {0: 4, 1: 36, 8: 2}),
    ("Quantize", {0: 4}),
    ("Dequantize", {0: 4, 1: 4}),
    ("Dequantize", {0: 1}),
    ("Requantize", {0: 4, 1: 4, 2: 4}),
    ("Requantize", {0: 1, 1: 1}),
    ("Padding", {6: 4}),
    ("SDPA", {18: 2}),
]


def _case_id(case):
    t, p = case
    return t + "-" + ",".join(f"{k}={v}" for k, v in p.items())


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[_case_id(c) for c in LAYOUT_CASES])
def test_layout_matches_what_ncnn_reads(case):
    layer = Layer(case[0], "L", [], ["out"], dict(case[1]))
    param_text, bin_data = layer_files(layer)
    ret, reads, consumed = count_reads(param_text, bin_data)
    assert ret == 0
    assert reads == expected_reads(layer)
    assert consumed == len(bin_data)


# params that make ncnn's load_param accept the layer; the rest load with defaults
_WEIGHTLESS_PARAMS = {"Pooling": {1: 2}, "Pooling1D": {1: 2}, "Pooling3D": {1: 2},
                      "Reshape": {0: 16}, "Fold": {1: 2, 20: 4, 21: 4}, "Unfold": {1: 2},
                      "Spectrogram": {0: 8}, "InverseSpectrogram": {0: 8}, "ROIAlign": {0: 2, 1: 2},
                      "PriorBox": {0: [1.0]}, "BinaryOp": {1: 1, 2: 0.5},
                      "Einsum": {0: [ord(ch) for ch in "ij->i"]},    # the equation as char codes
                      "YoloDetectionOutput": {0: 2, 1: 2, 4: [1.0, 1.0, 2.0, 2.0]},
                      "Yolov3DetectionOutput": {0: 2, 1: 1, 4: [1.0, 1.0], 5: [0.0], 6: [32.0]}}
# types ncnn's CMake leaves out unless asked (WITH_LAYER_argmax / _spp OFF): the wheel has no creator
_NOT_IN_WHEEL = {"ArgMax", "SPP"}


def test_types_left_out_of_the_wheel_are_the_known_ones():
    """If a wheel starts building one of these, it moves into the load test below."""
    assert _NOT_IN_WHEEL <= WEIGHTLESS
    assert {t for t in sorted(WEIGHTLESS) if ncnn.create_layer(t) is None} == _NOT_IN_WHEEL


@pytest.mark.parametrize("type_", sorted(WEIGHTLESS - _NOT_IN_WHEEL))
def test_weightless_types_read_nothing(type_):
    layer = Layer(type_, "L", [], ["out"], dict(_WEIGHTLESS_PARAMS.get(type_, {})))
    assert weight_layout(layer) == []
    net = new_net()
    assert net.load_param_mem(format_param(single_layer_graph(layer))) == 0
    reader = CountingReader(b"")
    assert net.load_model(reader) == 0
    assert reader.reads == []


@pytest.mark.parametrize("storage", ["fp16", "int8"])
@pytest.mark.parametrize("case", [("Convolution", {0: 3, 1: 3, 5: 1, 6: 27, 8: 2}),
                                  ("InnerProduct", {0: 3, 1: 1, 2: 15, 8: 2}),
                                  ("ConvolutionDepthWise", {0: 3, 1: 3, 5: 1, 6: 27, 7: 3, 8: 101}),
                                  ("LSTM", {0: 3, 1: 12 * 3, 8: 2})],
                         ids=lambda case: case[0])
def test_fp16_and_int8_storage_with_odd_counts(case, storage):
    layer = Layer(case[0], "L", [], ["out"], dict(case[1]))
    param_text, bin_data = layer_files(layer, storage=storage)
    assert len(bin_data) % 4 == 0
    ret, reads, consumed = count_reads(param_text, bin_data)
    assert ret == 0 and reads == expected_reads(layer, storage) and consumed == len(bin_data)
    graph = single_layer_graph(layer)
    weights = read_bin(graph, bin_data)
    tagged = [w for w in weights["L"] if w.tagged]
    assert tagged and all(w.storage == storage for w in tagged)
    assert write_bin(graph, weights) == bin_data


def _memorydata_decode(tag_and_payload: bytes, count: int) -> np.ndarray:
    """What ncnn itself decodes a tagged buffer to: a MemoryData layer with load_type 0."""
    graph = Graph(layers=[Layer("MemoryData", "md", [], ["out"], {0: count, 21: 0})])
    net = new_net()
    assert net.load_param_mem(format_param(graph)) == 0
    assert net.load_model(CountingReader(tag_and_payload)) == 0
    ret, mat = net.create_extractor().extract("out")
    assert ret == 0
    return np.array(mat).ravel()


def test_fp16_decode_matches_ncnn_for_every_bit_pattern():
    bits = np.arange(65536, dtype=np.uint16)
    data = struct.pack("<I", 0x01306B47) + bits.tobytes()
    theirs = _memorydata_decode(data, bits.size)
    ours = read_bin(Graph(layers=[Layer("MemoryData", "md", [], ["o"], {0: 65536, 21: 0})]),
                    data)["md"][0].data
    assert np.array_equal(ours.view(np.uint32), half.float16_to_float32(bits).view(np.uint32))
    # x86 hardware conversion quiets signalling NaNs; value-wise every pattern must agree
    snan = ((bits & 0x7C00) == 0x7C00) & ((bits & 0x3FF) != 0) & ((bits & 0x200) == 0)
    assert np.array_equal(ours[~snan].view(np.uint32), theirs[~snan].view(np.uint32))
    assert np.isnan(ours[snan]).all() and np.isnan(theirs[snan]).all()


def test_int8_and_codebook_decode_match_ncnn():
    values = np.array([-127, -1, 0, 1, 5, 127, -128], dtype=np.int8)
    data = struct.pack("<I", 0x000D4B38) + values.tobytes() + b"\0"
    graph = Graph(layers=[Layer("MemoryData", "md", [], ["o"], {0: 7, 21: 0})])
    ours = read_bin(graph, data)["md"][0]
    assert ours.storage == "int8" and np.array_equal(ours.data, values)
    assert np.array_equal(_memorydata_decode(data, 7), values.astype(np.float32))

    lut = np.linspace(-1, 1, 256).astype(np.float32)
    idx = np.array([0, 255, 128, 7, 7], dtype=np.uint8)
    data = struct.pack("<I", 0x00000101) + lut.tobytes() + idx.tobytes() + b"\0\0\0"
    graph = Graph(layers=[Layer("MemoryData", "md", [], ["o"], {0: 5, 21: 0})])
    ours = read_bin(graph, data)["md"][0]
    assert ours.storage == "codebook"
    assert np.array_equal(ours.data, lut[idx])
    assert np.array_equal(_memorydata_decode(data, 5), lut[idx])
    assert write_bin(graph, {"md": [ours]}) == data          # unchanged codebook round-trips
    ours.data = ours.data * 2
    with pytest.raises(DeployerError, match="codebook weights cannot be re-encoded"):
        write_bin(graph, {"md": [ours]})


@pytest.mark.parametrize("value, nearest, pnnx, truncated", [
    (1.0, 0x3C00, 0x3C00, 0x3C00),
    (-2.0, 0xC000, 0xC000, 0xC000),
    (65504.0, 0x7BFF, 0x7BFF, 0x7BFF),                   # largest half
    (65519.0, 0x7BFF, 0x7BFF, 0x7BFF),
    (65520.0, 0x7C00, 0x7C00, 0x7BFF),                   # tie at the top: inf unless truncating
    (1e6, 0x7C00, 0x7C00, 0x7C00),
    (1.0 + 2.0 ** -11, 0x3C00, 0x3C01, 0x3C00),         # tie, even below: RNE down, pnnx up
    (-(1.0 + 2.0 ** -11), 0xBC00, 0xBC01, 0xBC00),
    (1.0 + 3 * 2.0 ** -11, 0x3C02, 0x3C02, 0x3C01),     # tie, odd below: both round up
    (1.0 + 3 * 2.0 ** -12, 0x3C01, 0x3C01, 0x3C00),     # 0.75 ulp
    (1.0 - 2.0 ** -12, 0x3C00, 0x3C00, 0x3BFF),         # rounding carries into the exponent
    (2.0 ** -14, 0x0400, 0x0400, 0x0400),               # smallest normal half
    (2.0 ** -14 * (1 - 2.0 ** -12), 0x0400, 0x0000, 0x0000),
    (2.0 ** -15, 0x0200, 0x0000, 0x0000),               # subnormal half: only IEEE keeps it
    (-1e-30, 0x8000, 0x8000, 0x8000),
    (float("inf"), 0x7C00, 0x7C00, 0x7C00),
    (float("-inf"), 0xFC00, 0xFC00, 0xFC00),
    (float("nan"), 0x7E00, 0x7E00, 0x7E00),
])
def test_fp32_to_fp16_bit_patterns(value, nearest, pnnx, truncated):
    """Expected bits worked out by hand from IEEE binary16 and each tool's rounding rule."""
    x = np.array([value], dtype=np.float32)
    assert half.float32_to_float16(x)[0] == nearest
    assert half.float32_to_float16(x, rounding="nearest")[0] == nearest
    assert half.float32_to_float16(x, rounding="pnnx")[0] == pnnx
    assert half.float32_to_float16(x, rounding="truncate")[0] == truncated


def test_unknown_rounding_is_refused():
    with pytest.raises(ValueError, match="rounding must be one of"):
        half.float32_to_float16(np.ones(2, np.float32), rounding="up")


def test_nearest_rounding_matches_ncnn_cast_layer():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(20000) * 10.0 ** rng.integers(-9, 6, 20000)).astype(np.float32)
    theirs = np.array(ncnn.cast_float32_to_float16(ncnn.Mat(x))).view(np.uint16)
    assert np.array_equal(half.float32_to_float16(x, rounding="nearest"), theirs)


def test_fp16_conversion_loads_in_ncnn_with_expected_values():
    """Convert an fp32 InnerProduct to fp16 storage; ncnn computes with exactly the rounded weights."""
    layer = Layer("InnerProduct", "fc", ["in0"], ["out"], {0: 3, 1: 1, 2: 15})
    graph = Graph(layers=[Layer("Input", "in0", [], ["in0"], {0: 5}), layer])
    rng = np.random.default_rng(3)
    w = rng.standard_normal(15).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    weights = {"fc": [Weight("weight", half.round_trip(w), "fp16", True), Weight("bias", b, "raw", False)]}
    x = rng.standard_normal(5).astype(np.float32)
    net = new_net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.load_param_mem(format_param(graph))
    assert net.load_model(CountingReader(write_bin(graph, weights))) == 0
    ex = net.create_extractor()
    ex.input("in0", ncnn.Mat(x))
    out = np.array(ex.extract("out")[1])
    expected = half.round_trip(w).reshape(3, 5).astype(np.float64) @ x + b
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_unchanged_fp16_keeps_its_padding_bytes_changed_one_is_re_encoded():
    graph = Graph(layers=[Layer("MemoryData", "md", [], ["o"], {0: 3, 21: 0})])
    payload = half.float32_to_float16(np.array([1.0, 2.0, 3.0], np.float32)).tobytes()
    data = struct.pack("<I", 0x01306B47) + payload + b"\x83\x22"      # pnnx pads with 0x2283
    weights = read_bin(graph, data)
    assert write_bin(graph, weights) == data
    weights["md"][0].data = weights["md"][0].data * 2
    out = write_bin(graph, weights)
    assert out[-2:] == b"\0\0"
    assert np.array_equal(read_bin(graph, out)["md"][0].data, [2.0, 4.0, 6.0])


def test_changing_storage_re_encodes_even_if_data_is_unchanged():
    graph = Graph(layers=[Layer("MemoryData", "md", [], ["o"], {0: 3, 21: 0})])
    payload = half.float32_to_float16(np.array([1.0, 2.0, 3.0], np.float32)).tobytes()
    weights = read_bin(graph, struct.pack("<I", 0x01306B47) + payload + b"\0\0")
    weights["md"][0].storage = "fp32"
    out = write_bin(graph, weights)
    assert out == struct.pack("<I", 0) + np.array([1.0, 2.0, 3.0], np.float32).tobytes()
    weights["md"][0].storage = "int8"
    with pytest.raises(DeployerError, match="int8 storage needs int8 data"):
        write_bin(graph, weights)
    weights["md"][0].data = np.array([1, 2, 3], np.int8)
    assert write_bin(graph, weights) == struct.pack("<I", 0x000D4B38) + bytes([1, 2, 3, 0])


CONV_PARAM = ("7767517\n2 2\nInput in0 0 1 in0 0=4 1=4 2=2\n"
              "Convolution conv_12 1 1 in0 out 0=4 1=3 5=1 6=72\n")


def _conv_bin() -> bytes:
    return struct.pack("<I", 0) + np.ones(72, np.float32).tobytes() + np.zeros(4, np.float32).tobytes()


def test_truncated_bin_names_file_layer_offset_and_size():
    data = _conv_bin()[:200]
    with pytest.raises(DeployerError) as err:
        read_bin(parse_param(CONV_PARAM), data, source="mnv2.bin")
    assert str(err.value) == (
        "mnv2.bin: layer conv_12 (Convolution) needs 72 fp32 values for weight at offset 4 but the "
        "file ends at 200; the .bin does not match the .param")


def test_bin_errors_are_one_line():
    graph = parse_param(CONV_PARAM)
    with pytest.raises(DeployerError, match=r"mnv2.bin: 8 bytes left over after the last layer"):
        read_bin(graph, _conv_bin() + b"\0" * 8, source="mnv2.bin")
    with pytest.raises(DeployerError,
                       match=r"layer conv_12 \(Convolution\) needs 4 raw fp32 values for bias"):
        read_bin(graph, _conv_bin()[:-4], source="mnv2.bin")
    with pytest.raises(DeployerError, match=r"needs the storage tag of weight at offset 0"):
        read_bin(graph, b"", source="mnv2.bin")
    odd = parse_param("7767517\n2 2\nInput in0 0 1 in0\nMyOp x 1 1 in0 out\n")
    with pytest.raises(DeployerError, match=r"m.bin: layer x: unknown layer type 'MyOp'"):
        read_bin(odd, b"", source="m.bin")
    bad_param = parse_param("7767517\n2 2\nInput in0 0 1 in0\nInnerProduct fc 1 1 in0 out 0=2 2=1.5\n")
    with pytest.raises(DeployerError, match=r"layer fc \(InnerProduct\): param 2 must be an integer"):
        read_bin(bad_param, b"", source="m.bin")


def test_write_bin_checks_weights_against_params():
    graph = parse_param(CONV_PARAM)
    weights = read_bin(graph, _conv_bin())
    weights["conv_12"][0].data = weights["conv_12"][0].data[:10]
    with pytest.raises(DeployerError, match=r"conv_12 \(Convolution\) weight needs 72 values but has 10"):
        write_bin(graph, weights)
    weights = read_bin(graph, _conv_bin())
    graph.layer("conv_12").params[8] = 2          # int8 now, but no scales given
    with pytest.raises(DeployerError, match=r"needs 4 weight arrays \(weight, bias, weight_scales, "
                                            r"bottom_scales\) but has 2"):
        write_bin(graph, weights)
    graph = parse_param(CONV_PARAM)
    weights["conv_12"][1].tagged = True
    with pytest.raises(DeployerError, match="bias must be raw fp32"):
        write_bin(graph, weights)
    weights = read_bin(graph, _conv_bin())
    weights["ghost"] = weights["conv_12"]
    with pytest.raises(DeployerError, match="weights given for 'ghost', which is not a layer"):
        write_bin(graph, weights)
    with pytest.raises(DeployerError, match="int8 storage needs int8 data"):
        encode_weight(Weight("weight", np.ones(4, np.float32), "int8", True))
    with pytest.raises(DeployerError, match="unknown storage 'bf16'"):
        encode_weight(Weight("weight", np.ones(4, np.float32), "bf16", True))


def test_int8_quantized_conv_weights_written_like_ncnn2int8():
    """Tag 0x000D4B38, int8 bytes padded to 4, then raw bias / scales, as ncnn-int8.md §3.2."""
    graph = parse_param(CONV_PARAM.replace("6=72", "6=72 8=2"))
    q = np.arange(-36, 36, dtype=np.int8)
    weights = {"conv_12": [Weight("weight", q, "int8", True),
                           Weight("bias", np.zeros(4, np.float32), "raw", False),
                           Weight("weight_scales", np.full(4, 50.0, np.float32), "raw", False),
                           Weight("bottom_scales", np.array([20.0], np.float32), "raw", False)]}
    data = write_bin(graph, weights)
    assert data[:4] == bytes([0x38, 0x4B, 0x0D, 0x00])
    assert data[4:76] == q.tobytes()
    assert len(data) == 4 + 72 + 16 + 16 + 4
    ret, reads, consumed = count_reads(format_param(graph), data)
    assert ret == 0 and consumed == len(data)


# ------------------------------------------------------------------------------------- NcnnModel

def test_model_load_save_round_trip_and_lookup(tmp_path):
    (tmp_path / "m.param").write_text(CONV_PARAM)
    (tmp_path / "m.bin").write_bytes(_conv_bin())
    model = NcnnModel.load(tmp_path / "m.param", tmp_path / "m.bin")
    assert model.weight("conv_12", "weight").data.shape == (72,)
    assert model.weight("conv_12", "bias").storage == "raw"
    with pytest.raises(DeployerError, match=r"conv_12 \(Convolution\) has no weight 'slope'; it has: "
                                            r"weight, bias"):
        model.weight("conv_12", "slope")
    model.save(tmp_path / "out.param", tmp_path / "out.bin")
    assert (tmp_path / "out.param").read_text() == CONV_PARAM
    assert (tmp_path / "out.bin").read_bytes() == _conv_bin()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.param", "out.bin", "out.param"]


def test_model_save_writes_nothing_when_model_is_inconsistent(tmp_path):
    (tmp_path / "m.param").write_text(CONV_PARAM)
    (tmp_path / "m.bin").write_bytes(_conv_bin())
    model = NcnnModel.load(tmp_path / "m.param", tmp_path / "m.bin")
    model.layer("conv_12").params[0] = 8          # num_output changed, bias not
    with pytest.raises(DeployerError, match="bias needs 8 values but has 4"):
        model.save(tmp_path / "out.param", tmp_path / "out.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.param"]


def test_model_load_missing_bin(tmp_path):
    (tmp_path / "m.param").write_text(CONV_PARAM)
    with pytest.raises(DeployerError, match="m.bin: file not found"):
        NcnnModel.load(tmp_path / "m.param", tmp_path / "m.bin")


def test_synthetic_weights_cover_layout():
    layer = Layer("LSTM", "L", [], ["o"], {0: 2, 1: 48, 3: 4, 8: 2})
    names = [w.name for w in synthetic_weights(layer)]
    assert names == ["weight_xc", "bias_c", "weight_hc", "weight_hr", "weight_xc_scales",
                     "weight_hc_scales"]


def test_duplicate_names_on_layers_with_weights_are_refused():
    from deployer.ncnn.param import parse_param as _parse

    text = ("7767517\n3 3\nInput in 0 1 in\nScale s 1 1 in a 0=2\nScale s 1 1 a b 0=2\n")
    graph = _parse(text)
    data = np.zeros(4, "<f4").tobytes()
    with pytest.raises(DeployerError, match="both named 's'"):
        read_bin(graph, data, "dup.bin")
