"""deployer.ncnn.param: every .param syntax, byte-identical round trips, clear errors.

Where a test feeds text that ncnn itself must accept, the real ncnn wheel loads it too, so the
parser is checked against ncnn's own reading, not against our idea of it.
"""

from __future__ import annotations

import ncnn
import pytest

from deployer.errors import DeployerError
from deployer.ncnn.param import Graph, Layer, format_param, parse_param, read_param

PNNX_STYLE = (
    "7767517\n"
    "5 6\n"
    "Input                    in0                      0 1 in0\n"
    "Convolution              conv_0                   1 1 in0 1 0=8 1=3 11=3 12=1 13=1 14=1 2=1 3=1 "
    "4=1 5=1 6=216\n"
    "Split                    splitncnn_0              1 2 1 2 3\n"
    "ReLU                     relu_1                   1 1 2 4 0=1.000000e-01\n"
    "BinaryOp                 add_0                    2 1 4 3 out0 0=0\n"
)

HAND_WRITTEN = (
    "7767517\r\n"
    "4  5\r\n"
    "Input\tdata 0 1 data 0=16 1=16 2=3\r\n"
    "\r\n"
    "Convolution conv1   1 1 data c1 0=8 1=3 4=1 5=1 6=216 9=1\r\n"
    "Clip   clip 1 1 c1 c2 0=0. 1=6.0E0\r\n"
    "Slice sl 1 2 c2 out a2 -23300=2,-233,-233 1=0"          # no final newline
)


def ncnn_accepts(text: str) -> bool:
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    return net.load_param_mem(text) == 0


MULTI_LINE = "7767517\n3 3\nInput in 0 1 in\nReLU r 1 1\n  in out 0=0.5  31=1\nSigmoid s 1 1 out o2\n\n\n"


@pytest.mark.parametrize("text", [PNNX_STYLE, HAND_WRITTEN, MULTI_LINE], ids=["pnnx", "hand", "multiline"])
def test_unchanged_file_round_trips_byte_identical(text):
    assert ncnn_accepts(text)
    assert format_param(parse_param(text)) == text


def test_header_counts_and_layers():
    g = parse_param(PNNX_STYLE)
    assert [lay.name for lay in g.layers] == ["in0", "conv_0", "splitncnn_0", "relu_1", "add_0"]
    conv = g.layer("conv_0")
    assert conv.type == "Convolution"
    assert conv.bottoms == ["in0"] and conv.tops == ["1"]
    assert list(conv.params) == [0, 1, 11, 12, 13, 14, 2, 3, 4, 5, 6]    # file order kept
    assert conv.get(6, 0) == 216 and conv.get(8, 0) == 0


@pytest.mark.parametrize("token, expected", [
    ("1=1", 1), ("1=-7", -7), ("1=+3", 3),
    ("1=1.0", 1.0), ("1=1.", 1.0), ("1=.5", 0.5), ("1=1e-5", 1e-5), ("1=2E3", 2000.0),
    ("1=-1.000000e+00", -1.0),
])
def test_scalar_int_vs_float_decided_like_ncnn(token, expected):
    text = f"7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out {token}\n"
    assert ncnn_accepts(text)
    value = parse_param(text).layer("r").params[1]
    assert value == expected
    assert type(value) is type(expected)


def test_arrays_old_and_modern_style():
    text = ("7767517\n2 2\nInput in 0 1 in\n"
            "Noop r 1 1 in out -23303=3,1,2,-3 -23310=2,0.1,6.0 5=4,5 6=1.5,2.5 7=1.0,2\n")
    assert ncnn_accepts(text)
    p = parse_param(text).layer("r").params
    assert p[3] == [1, 2, -3] and all(type(v) is int for v in p[3])
    assert p[10] == [0.1, 6.0] and all(type(v) is float for v in p[10])
    assert p[5] == [4, 5]
    assert p[6] == [1.5, 2.5]
    # ncnn types each element on its own: a float first element does not make "2" a float
    assert p[7] == [1.0, 2] and type(p[7][1]) is int
    assert format_param(parse_param(text)) == text


def test_strings_plain_and_quoted():
    text = '7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 4=hello 5="with space" 6=a1.5\n'
    assert ncnn_accepts(text)
    g = parse_param(text)
    p = g.layer("r").params
    assert p[4] == "hello" and p[5] == "with space" and p[6] == "a1.5"
    assert g.layer("r").tops == ["out"]
    assert format_param(g) == text


def test_shape_hints_and_feature_mask_are_kept():
    text = ("7767517\n2 2\nInput in 0 1 in 0=16 1=16 2=3 -23330=5,3,16,16,1,3\n"
            "ReLU r 1 1 in out -23330=4,3,16,16,3 31=8\n")
    assert ncnn_accepts(text)
    g = parse_param(text)
    assert g.layer("in").params[30] == [3, 16, 16, 1, 3]
    assert g.layer("r").params[30] == [3, 16, 16, 3]
    assert g.layer("r").params[31] == 8
    g.layer("r").params[0] = 0.5
    out = format_param(g)
    assert "-23330=4,3,16,16,3 31=8 0=5.000000e-01" in out
    assert ncnn_accepts(out)


def test_modified_layer_written_in_modelwriter_style_others_untouched():
    g = parse_param(HAND_WRITTEN)
    conv = g.layer("conv1")
    conv.params[8] = 2
    conv.params[10] = [0.0, 6.0]
    out = format_param(g)
    lines = out.split("\r\n")
    assert lines[0] == "7767517" and lines[1] == "4  5"               # header untouched
    assert lines[2] == "Input\tdata 0 1 data 0=16 1=16 2=3"           # other layers untouched
    assert lines[4] == ("%-24s %-24s 1 1 data c1" % ("Convolution", "conv1")
                        + " 0=8 1=3 4=1 5=1 6=216 9=1 8=2 -23310=2,0.000000e+00,6.000000e+00")
    assert ncnn_accepts(out)
    reparsed = parse_param(out)
    assert reparsed.layer("conv1").params == conv.params


def test_int_to_float_change_counts_as_modification():
    g = parse_param(PNNX_STYLE)
    g.layer("add_0").params[0] = 0.0          # was int 0: ncnn would read the bits differently
    out = format_param(g)
    assert "add_0" in out and " 0=0.000000e+00" in out
    assert g.layer("add_0").modified


def test_layer_count_and_blob_count_recomputed_when_layers_change():
    g = parse_param(PNNX_STYLE)
    relu = g.layer("relu_1")
    extra = Layer("Sigmoid", "sig_9", ["out0"], ["out1"])
    g.layers.append(extra)
    out = format_param(g)
    assert out.startswith("7767517\n6 7\n")
    assert out.endswith("%-24s %-24s 1 1 out0 out1\n" % ("Sigmoid", "sig_9"))
    assert ncnn_accepts(out)
    g.layers.remove(extra)
    g.layers.remove(relu)
    g.layer("add_0").bottoms = ["2", "3"]
    out = format_param(g)
    assert out.startswith("7767517\n4 5\n")
    assert ncnn_accepts(out)


def test_numpy_scalars_are_written_as_their_kind():
    import numpy as np

    g = parse_param(PNNX_STYLE)
    g.layer("conv_0").params[0] = np.int64(16)
    g.layer("relu_1").params[0] = np.float32(0.25)
    out = format_param(g)
    assert " 0=16 " in out and " 0=2.500000e-01" in out
    g.layer("relu_1").params[0] = object()
    with pytest.raises(DeployerError, match="cannot write param value"):
        format_param(g)


def test_graph_helpers():
    g = parse_param(PNNX_STYLE)
    assert g.producer("1").name == "conv_0"
    assert g.producer("in0").name == "in0"
    assert g.producer("nope") is None
    assert [lay.name for lay in g.consumers("3")] == ["add_0"]
    assert [lay.name for lay in g.consumers("1")] == ["splitncnn_0"]
    assert g.input_names == ["in0"]
    assert g.output_names == ["out0"]
    assert g.blob_names == ["in0", "1", "2", "3", "4", "out0"]
    assert g.index("relu_1") == 3
    with pytest.raises(DeployerError, match="no layer named 'conv_9'"):
        g.layer("conv_9")


def test_read_param_from_file(tmp_path):
    path = tmp_path / "net.param"
    path.write_bytes(HAND_WRITTEN.encode())
    assert format_param(read_param(path)) == HAND_WRITTEN
    with pytest.raises(DeployerError, match="missing.param: file not found"):
        read_param(tmp_path / "missing.param")
    (tmp_path / "bin.param").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DeployerError, match="bin.param: not a text .param"):
        read_param(tmp_path / "bin.param")


BAD = [
    ("", "line 1: magic is 'nothing'"),
    ("7767518\n1 1\nInput in 0 1 in\n", "magic is '7767518', expected 7767517"),
    ("7767517\n", "line 2: missing layer count"),
    ("7767517\n1 x\nInput in 0 1 in\n", "blob count must be a positive integer, got 'x'"),
    ("7767517\n0 1\n", "layer count must be a positive integer, got '0'"),
    ("7767517\n2 2\nInput in 0 1 in\n", "line 2 says 2 layers but the file has 1"),
    ("7767517\n2 1\nInput in 0 1 in\nReLU r 1 1 in out\n", "line 2 says 1 blobs but the layers use 2"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in\n",
     "line 4 (layer r): declares 1 bottoms and 1 tops but lists only 1 blob names"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in 0=1\n",
     "line 4 (layer r): declares 1 bottoms and 1 tops but lists only 1 blob names"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r x 1 in out\n", "(layer r): bottom count must be"),
    ("7767517\n2 1\nInput in 0 1 in\nReLU r 1 1 in in\n",
     "line 4 (layer r): blob 'in' is already produced by layer in"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 32=1\n", "param id 32 in '32=1' is out of range"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out -23340=1,2\n", "param id 40"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out -23303=3,1,2\n",
     "array param 3 says 3 elements but has 2"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 0=1.2.3\n", "cannot read '1.2.3'"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 0=12-4\n", "cannot read '12-4'"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 0=0.1234567890123456\n",
     "longer than ncnn's 15 characters"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 4=\"open\n", "unterminated quoted string"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 0=1 0=2\n", "param id 0 is given twice"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 0=\n", "param '0=' has no value"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 0=9999999999\n", "does not fit a 32-bit int"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU\n", "layer 'ReLU' has no name"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out\n 0=1\n",
     "line 4 (layer r): param '0=1' starts a new line"),
    ("7767517\n2 2\nInput in 0 1 in\nReLU r 1 1 in out 0=1 slope 1=2\n",
     "line 4 (layer r): unknown syntax 'slope'"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m[:30] for _, m in BAD])
def test_malformed_param_gives_one_line_error_naming_file_and_place(text, message):
    with pytest.raises(DeployerError) as err:
        parse_param(text, source="net.param")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("net.param: ")
    assert message in msg


def test_write_refuses_invalid_graphs():
    g = Graph(layers=[Layer("Input", "in", [], ["in put"])])
    with pytest.raises(DeployerError, match="invalid name/blob 'in put'"):
        format_param(g)
    g = Graph(layers=[Layer("Input", "in", [], ["in"], {40: 1})])
    with pytest.raises(DeployerError, match="param id 40"):
        format_param(g)


def test_new_graph_written_from_scratch_loads_in_ncnn():
    g = Graph(layers=[
        Layer("Input", "data", [], ["data"], {0: 8, 1: 8, 2: 3}),
        Layer("Clip", "clip", ["data"], ["c"], {0: -1.0, 1: 1.0}),
        Layer("Slice", "split", ["c"], ["out", "out_b"], {0: [-233, -233], 1: 0}),
        Layer("Noop", "named", ["out", "out_b"], ["out2"], {4: "has space", 5: "word"}),
    ])
    text = format_param(g)
    assert text.splitlines()[1] == "4 5"
    assert " -23300=2,-233,-233 1=0" in text and ' 4="has space" 5=word' in text
    assert ncnn_accepts(text)
    assert parse_param(text) == g


def test_duplicate_weightless_layer_names_are_accepted_like_ncnn():
    # pnnx's YOLOv8 export has two Split layers named splitncnn_0; stock ncnn loads it.
    text = ("7767517\n4 6\nInput in 0 1 in\nSplit s 1 2 in a b\nSplit s 1 2 a c d\n"
            "Concat cat 3 1 b c d out\n")
    graph = parse_param(text)
    assert [lay.name for lay in graph.layers].count("s") == 2
    assert format_param(graph) == text
