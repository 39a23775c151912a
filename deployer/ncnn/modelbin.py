"""ncnn .bin: the concatenated `load_model` reads of every layer, in layer order.

The file has no index and no lengths, so reading it means knowing, for every layer type, what its
`load_model` reads given its params: `weight_layout`. Each read is either tagged (`mb.load(n, 0)`:
a 4-byte storage tag, then fp32 / fp16 / int8 / codebook data, padded to 4 bytes) or raw
(`mb.load(n, 1)`: n fp32, no tag). The counts here were checked against the ncnn wheel's own
loader (tests/unit/test_ncnn_bin.py feeds it through a byte-counting DataReader).

Weights we did not touch are written back from the exact bytes they were read from, so fp16
padding (pnnx pads odd counts with 0x2283) and codebook indices survive a round trip.
"""

from __future__ import annotations

import numbers
import struct
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from deployer.errors import DeployerError
from deployer.ncnn import half
from deployer.ncnn.param import Graph, Layer

TAG_FP32 = 0x00000000
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_SCALED = 0x0002C056     # "raw data with extra scaling": fp32 payload, same as fp32 for us

STORAGES = ("fp32", "fp16", "int8", "raw", "scaled", "codebook")
_TAG_OF = {"fp32": TAG_FP32, "fp16": TAG_FP16, "int8": TAG_INT8, "scaled": TAG_SCALED}


@dataclass(eq=False)
class Weight:
    """One `mb.load` result. `data` is 1-D: float32 for fp32/fp16/raw/scaled/codebook, int8 for int8."""

    name: str
    data: np.ndarray
    storage: str = "fp32"
    tagged: bool = True
    # The exact bytes read (after the tag, padding included), and the storage and data they
    # decoded to; reused on write while both still match, so unchanged weights stay byte-identical.
    _encoded: bytes | None = field(default=None, repr=False, compare=False)
    _decoded: np.ndarray | None = field(default=None, repr=False, compare=False)
    _encoded_storage: str | None = field(default=None, repr=False, compare=False)

    @property
    def count(self) -> int:
        return int(self.data.size)


LayoutEntry = tuple[str, int, bool]


# ----------------------------------------------------------------------------- per-type layouts

def _i(layer: Layer, pid: int, default: int) -> int:
    """An int param; ncnn would reinterpret a float's bits as an int, so a float is an error."""
    value = layer.params.get(pid, default)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise DeployerError(
            f"layer {layer.name} ({layer.type}): param {pid} must be an integer, got {value!r}")
    return int(value)


def _conv_like(layer: Layer, *, dynamic_id: int | None, int8: str | None) -> list[LayoutEntry]:
    """Convolution/ConvolutionDepthWise/Deconvolution family: weight, bias, optional int8 scales."""
    num_output = _i(layer, 0, 0)
    if dynamic_id is not None and _i(layer, dynamic_id, 0):
        return []
    out: list[LayoutEntry] = [("weight", _i(layer, 6, 0), True)]
    if _i(layer, 5, 0):
        out.append(("bias", num_output, False))
    term = _i(layer, 8, 0) if int8 else 0
    if int8 == "conv" and term:
        out += [("weight_scales", num_output, False), ("bottom_scales", 1, False)]
    elif int8 == "dw" and term:
        group = _i(layer, 7, 1)
        if term in (1, 101):
            out += [("weight_scales", group, False), ("bottom_scales", 1, False)]
        elif term in (2, 102):
            out += [("weight_scales", 1, False), ("bottom_scales", 1, False)]
    if term > 100:
        out.append(("top_scales", 1, False))
    return out


def _convolution(layer: Layer) -> list[LayoutEntry]:
    return _conv_like(layer, dynamic_id=19, int8="conv")


def _convolution_dw(layer: Layer) -> list[LayoutEntry]:
    return _conv_like(layer, dynamic_id=19, int8="dw")


def _conv_plain(dynamic_id: int | None) -> Callable[[Layer], list[LayoutEntry]]:
    return lambda layer: _conv_like(layer, dynamic_id=dynamic_id, int8=None)


def _inner_product(layer: Layer) -> list[LayoutEntry]:
    num_output = _i(layer, 0, 0)
    out: list[LayoutEntry] = [("weight", _i(layer, 2, 0), True)]
    if _i(layer, 1, 0):
        out.append(("bias", num_output, False))
    if _i(layer, 8, 0):
        out += [("weight_scales", num_output, False), ("bottom_scales", 1, False)]
    return out


def _batchnorm(layer: Layer) -> list[LayoutEntry]:
    c = _i(layer, 0, 0)
    return [("slope", c, False), ("mean", c, False), ("var", c, False), ("bias", c, False)]


def _scale(layer: Layer) -> list[LayoutEntry]:
    n = _i(layer, 0, 0)
    if n == -233:      # scale comes from a second bottom blob
        return []
    out: list[LayoutEntry] = [("scale", n, False)]
    if _i(layer, 1, 0):
        out.append(("bias", n, False))
    return out


def _single_raw(name: str, pid: int) -> Callable[[Layer], list[LayoutEntry]]:
    def layout(layer: Layer) -> list[LayoutEntry]:
        return [(name, _i(layer, pid, 0), False)]
    return layout


def _memorydata(layer: Layer) -> list[LayoutEntry]:
    w, h, d, c = _i(layer, 0, 0), _i(layer, 1, 0), _i(layer, 11, 0), _i(layer, 2, 0)
    tagged = _i(layer, 21, 1) == 0    # load_type: 1 raw (default), 0 tagged
    if d:
        n = w * h * d * c
    elif c:
        n = w * h * c
    elif h:
        n = w * h
    elif w:
        n = w
    else:
        return []
    return [("data", n, tagged)]


def _embed(layer: Layer) -> list[LayoutEntry]:
    out: list[LayoutEntry] = [("weight", _i(layer, 3, 0), True)]
    if _i(layer, 2, 0):
        out.append(("bias", _i(layer, 0, 0), False))
    if _i(layer, 18, 0):
        out.append(("weight_scales", 1, False))
    return out


def _affine_pair(size_id: int, affine_id: int, affine_default: int,
                 beta: bool = True) -> Callable[[Layer], list[LayoutEntry]]:
    def layout(layer: Layer) -> list[LayoutEntry]:
        if not _i(layer, affine_id, affine_default):
            return []
        n = _i(layer, size_id, 0)
        out: list[LayoutEntry] = [("gamma", n, False)]
        if beta:
            out.append(("beta", n, False))
        return out
    return layout


def _multiheadattention(layer: Layer) -> list[LayoutEntry]:
    embed_dim = _i(layer, 0, 0)
    wds = _i(layer, 2, 0)
    kdim = _i(layer, 3, embed_dim)
    vdim = _i(layer, 4, embed_dim)
    qdim = wds // embed_dim if embed_dim else 0
    out: list[LayoutEntry] = [
        ("q_weight", embed_dim * qdim, True), ("q_bias", embed_dim, False),
        ("k_weight", embed_dim * kdim, True), ("k_bias", embed_dim, False),
        ("v_weight", embed_dim * vdim, True), ("v_bias", embed_dim, False),
        ("out_weight", qdim * embed_dim, True), ("out_bias", qdim, False),
    ]
    if _i(layer, 18, 0):
        out += [("q_weight_scales", embed_dim, False), ("k_weight_scales", embed_dim, False),
                ("v_weight_scales", embed_dim, False), ("out_weight_scales", 1, False)]
    return out


def _gemm(layer: Layer) -> list[LayoutEntry]:
    const_a, const_b, const_c = _i(layer, 4, 0), _i(layer, 5, 0), _i(layer, 6, 0)
    m, n, k = _i(layer, 7, 0), _i(layer, 8, 0), _i(layer, 9, 0)
    broadcast_c = _i(layer, 10, 0)
    out: list[LayoutEntry] = []
    if const_a:
        out.append(("A", m * k, True))
    if const_b:
        out.append(("B", n * k, True))
    if const_c and broadcast_c != -1:
        count = {0: 1, 1: m, 2: m, 3: m * n, 4: n}.get(broadcast_c)
        if count is None:
            raise DeployerError(
                f"layer {layer.name} (Gemm): constant_broadcast_type_C (param 10) = {broadcast_c}"
                " is not one of -1, 0, 1, 2, 3, 4")
        out.append(("C", count, True))
    if _i(layer, 18, 0):
        if const_a:
            out.append(("A_scales", m, False))
        if const_b:
            out.append(("B_scales", 1, False))
    return out


def _rnn_family(gates: int, kind: str) -> Callable[[Layer], list[LayoutEntry]]:
    def layout(layer: Layer) -> list[LayoutEntry]:
        num_output = _i(layer, 0, 0)
        wds = _i(layer, 1, 0)
        dirs = 2 if _i(layer, 2, 0) == 2 else 1
        hidden = _i(layer, 3, num_output) if kind == "lstm" else num_output
        rows = hidden * gates
        bias_rows = hidden * (4 if kind == "gru" else gates)
        out: list[LayoutEntry] = [
            ("weight_xc", wds, True),
            ("bias_c", bias_rows * dirs, True),
            ("weight_hc", num_output * rows * dirs, True),
        ]
        if kind == "lstm" and num_output != hidden:
            out.append(("weight_hr", hidden * num_output * dirs, True))
        if _i(layer, 8, 0):
            out += [("weight_xc_scales", rows * dirs, False),
                    ("weight_hc_scales", rows * dirs, False)]
        return out
    return layout


def _quantize(layer: Layer) -> list[LayoutEntry]:
    return [("scale", _i(layer, 0, 1), False)]


def _dequantize(layer: Layer) -> list[LayoutEntry]:
    out: list[LayoutEntry] = [("scale", _i(layer, 0, 1), False)]
    if _i(layer, 1, 0):
        out.append(("bias", _i(layer, 1, 0), False))
    return out


def _requantize(layer: Layer) -> list[LayoutEntry]:
    out: list[LayoutEntry] = [("scale_in", _i(layer, 0, 1), False),
                              ("scale_out", _i(layer, 1, 1), False)]
    if _i(layer, 2, 0):
        out.append(("bias", _i(layer, 2, 0), False))
    return out


def _padding(layer: Layer) -> list[LayoutEntry]:
    n = _i(layer, 6, 0)
    return [("pad_data", n, False)] if n else []


LAYOUTS: dict[str, Callable[[Layer], list[LayoutEntry]]] = {
    "Convolution": _convolution,
    "ConvolutionDepthWise": _convolution_dw,
    "Convolution1D": _conv_plain(19),
    "Convolution3D": _conv_plain(None),
    "ConvolutionDepthWise1D": _conv_plain(19),
    "ConvolutionDepthWise3D": _conv_plain(None),
    "Deconvolution": _conv_plain(28),
    "Deconvolution1D": _conv_plain(28),
    "Deconvolution3D": _conv_plain(None),
    "DeconvolutionDepthWise": _conv_plain(28),
    "DeconvolutionDepthWise1D": _conv_plain(28),
    "DeconvolutionDepthWise3D": _conv_plain(None),
    "DeformableConv2D": _conv_plain(None),
    "InnerProduct": _inner_product,
    "BatchNorm": _batchnorm,
    "Scale": _scale,
    "Bias": _single_raw("bias", 0),
    "PReLU": _single_raw("slope", 0),
    "Normalize": _single_raw("scale", 3),
    "MemoryData": _memorydata,
    "Embed": _embed,
    "LayerNorm": _affine_pair(0, 2, 1),
    "GroupNorm": _affine_pair(1, 3, 1),
    "InstanceNorm": _affine_pair(0, 2, 1),
    "RMSNorm": _affine_pair(0, 2, 1, beta=False),
    "MultiHeadAttention": _multiheadattention,
    "Gemm": _gemm,
    "RNN": _rnn_family(1, "rnn"),
    "LSTM": _rnn_family(4, "lstm"),
    "GRU": _rnn_family(3, "gru"),
    "Quantize": _quantize,
    "Dequantize": _dequantize,
    "Requantize": _requantize,
    "Padding": _padding,
}

# Every other layer type registered in ncnn reads nothing from the .bin (checked against the wheel).
WEIGHTLESS = frozenset("""
AbsVal ArgMax BNLL Concat Crop Dropout Eltwise ELU Exp Flatten Input Log LRN MVN Pooling Power
Proposal Reduction ReLU Reshape ROIPooling Sigmoid Slice Softmax Split SPP TanH Threshold Tile
BinaryOp UnaryOp Squeeze ExpandDims Permute PriorBox DetectionOutput Interp ShuffleChannel Clip
Reorg YoloDetectionOutput Yolov3DetectionOutput PSROIPooling ROIAlign Packing Cast HardSigmoid
SELU HardSwish Noop PixelShuffle DeepCopy Mish StatisticsPooling Swish Softplus GELU Pooling1D
Pooling3D MatMul Einsum GLU Fold Unfold GridSample CumulativeSum CopyTo Erf Diag CELU Shrink
Spectrogram InverseSpectrogram Flip SDPA RotaryEmbed
""".split())


def weight_layout(layer: Layer) -> list[LayoutEntry]:
    """(name, count, tagged) for each read the layer's load_model makes, in order."""
    if layer.type in LAYOUTS:
        entries = LAYOUTS[layer.type](layer)
        for name, count, _ in entries:
            if count < 0:
                raise DeployerError(
                    f"layer {layer.name} ({layer.type}): {name} would have {count} elements; "
                    "check its params")
        return entries
    if layer.type in WEIGHTLESS:
        return []
    raise DeployerError(
        f"layer {layer.name}: unknown layer type {layer.type!r}; deployer cannot tell what it "
        "stores in the .bin (custom layers are not supported)")


# ----------------------------------------------------------------------------------------- read

def _align4(n: int) -> int:
    return (n + 3) & ~3


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def take(self, nbytes: int, layer: Layer, what: str) -> memoryview:
        end = self.pos + nbytes
        if end > len(self.data):
            raise DeployerError(
                f"{self.source}: layer {layer.name} ({layer.type}) needs {what} at offset "
                f"{self.pos} but the file ends at {len(self.data)}; the .bin does not match the .param")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk


def _read_one(rd: _Reader, layer: Layer, name: str, count: int, tagged: bool) -> Weight:
    if not tagged:
        raw = rd.take(4 * count, layer, f"{count} raw fp32 values for {name}")
        return Weight(name, np.frombuffer(raw, dtype="<f4").astype(np.float32), "raw", False)
    tag_bytes = rd.take(4, layer, f"the storage tag of {name}")
    tag = struct.unpack("<I", tag_bytes)[0]
    if tag == TAG_FP16:
        nbytes = _align4(2 * count)
        enc = bytes(rd.take(nbytes, layer, f"{count} fp16 values for {name}"))
        data = half.float16_to_float32(np.frombuffer(enc[:2 * count], dtype="<u2"))
        return Weight(name, data, "fp16", True, enc, data.copy(), "fp16")
    if tag == TAG_INT8:
        nbytes = _align4(count)
        enc = bytes(rd.take(nbytes, layer, f"{count} int8 values for {name}"))
        data = np.frombuffer(enc[:count], dtype=np.int8).copy()
        return Weight(name, data, "int8", True, enc, data.copy(), "int8")
    if tag in (TAG_FP32, TAG_SCALED):
        raw = rd.take(4 * count, layer, f"{count} fp32 values for {name}")
        storage = "fp32" if tag == TAG_FP32 else "scaled"
        return Weight(name, np.frombuffer(raw, dtype="<f4").astype(np.float32), storage, True)
    # any other nonzero tag is ncnn's legacy 8-bit codebook: 256 fp32 values + uint8 indices
    table = rd.take(256 * 4, layer, f"the 256-entry codebook of {name}")
    idx = rd.take(_align4(count), layer, f"{count} codebook indices for {name}")
    lut = np.frombuffer(table, dtype="<f4").astype(np.float32)
    data = lut[np.frombuffer(idx[:count], dtype=np.uint8)]
    enc = bytes(tag_bytes) + bytes(table) + bytes(idx)
    return Weight(name, data, "codebook", True, enc, data.copy(), "codebook")


def read_bin(graph: Graph, data: bytes, source: str = "<bin>") -> dict[str, list[Weight]]:
    """Layer name -> its weights in load order (layers without weights are left out)."""
    rd = _Reader(data, source)
    out: dict[str, list[Weight]] = {}
    for layer in graph.layers:
        try:
            layout = weight_layout(layer)
        except DeployerError as err:
            raise DeployerError(f"{source}: {err}") from None
        if layout:
            if layer.name in out:
                raise DeployerError(
                    f"{source}: two layers with weights are both named {layer.name!r}; weights and "
                    "calibration tables are keyed by layer name, so rename one in the .param")
            out[layer.name] = [_read_one(rd, layer, *entry) for entry in layout]
    if rd.pos != len(rd.data):
        extra = len(rd.data) - rd.pos
        raise DeployerError(
            f"{source}: {extra} bytes left over after the last layer (read {rd.pos} of "
            f"{len(rd.data)}); the .bin does not match the .param")
    return out


# ---------------------------------------------------------------------------------------- write

def encode_weight(w: Weight) -> bytes:
    """Bytes for one weight: tag + padded payload for tagged weights, plain fp32 for raw ones."""
    if w.storage not in STORAGES:
        raise DeployerError(f"weight {w.name}: unknown storage {w.storage!r}; use one of {STORAGES}")
    if w.storage == "raw" or not w.tagged:
        if w.storage not in ("raw", "fp32"):
            raise DeployerError(f"weight {w.name}: untagged weights are fp32; got storage {w.storage}")
        return np.ascontiguousarray(w.data, dtype="<f4").tobytes()
    if (w._encoded is not None and w._encoded_storage == w.storage
            and w._decoded is not None and _same_bits(w.data, w._decoded)):
        if w.storage == "codebook":
            return w._encoded
        return struct.pack("<I", _TAG_OF[w.storage]) + w._encoded
    if w.storage in ("fp32", "scaled"):
        return struct.pack("<I", _TAG_OF[w.storage]) + np.ascontiguousarray(w.data, "<f4").tobytes()
    if w.storage == "fp16":
        bits = half.float32_to_float16(np.asarray(w.data, dtype=np.float32).ravel())
        body = bits.astype("<u2").tobytes()
        return struct.pack("<I", TAG_FP16) + body + b"\0" * (_align4(len(body)) - len(body))
    if w.storage == "int8":
        arr = np.asarray(w.data)
        if arr.dtype != np.int8:
            raise DeployerError(f"weight {w.name}: int8 storage needs int8 data, got {arr.dtype}")
        body = arr.ravel().tobytes()
        return struct.pack("<I", TAG_INT8) + body + b"\0" * (_align4(len(body)) - len(body))
    raise DeployerError(
        f"weight {w.name}: changed codebook weights cannot be re-encoded; store them as fp32 or fp16")


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.asarray(a)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def write_bin(graph: Graph, weights: dict[str, list[Weight]]) -> bytes:
    """Serialize in layer order, checking every layer's weights against what its params say."""
    parts: list[bytes] = []
    known = {layer.name for layer in graph.layers}
    for name in weights:
        if name not in known and weights[name]:
            raise DeployerError(f"cannot write .bin: weights given for {name!r}, which is not a layer")
    for layer in graph.layers:
        layout = weight_layout(layer)
        have = weights.get(layer.name, [])
        if len(have) != len(layout):
            raise DeployerError(
                f"cannot write .bin: layer {layer.name} ({layer.type}) needs {len(layout)} weight "
                f"arrays ({', '.join(n for n, _, _ in layout) or 'none'}) but has {len(have)}")
        for w, (wname, count, tagged) in zip(have, layout):
            if w.data.size != count:
                raise DeployerError(
                    f"cannot write .bin: layer {layer.name} ({layer.type}) {wname} needs {count} "
                    f"values but has {w.data.size}; update the params or the data")
            if w.tagged != tagged:
                kind = "tagged" if tagged else "raw fp32"
                raise DeployerError(
                    f"cannot write .bin: layer {layer.name} ({layer.type}) {wname} must be {kind}")
            parts.append(encode_weight(w))
    return b"".join(parts)
