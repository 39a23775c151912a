"""Stop-gap .bin reader for calibration until `deployer.ncnn.model` lands.

Calibration only needs the fp32 weights of Convolution / ConvolutionDepthWise / InnerProduct (and
the static-only Embed / RNN / LSTM / GRU / MultiHeadAttention), but the .bin is one sequential
stream, so every weighted layer before them must be skipped by size. This knows the load sequence of
the layers pnnx and ncnn's converters commonly emit; anything else is a clear error.
`deployer.quant.weights.load_model` prefers `deployer.ncnn.model.NcnnModel` whenever it imports.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from deployer.errors import DeployerError
from deployer.ncnn.param import Graph, Layer

_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_BF16 = 0x0002C056


def _seq(layer: Layer) -> list[tuple[str, int, bool]]:
    g = layer.get
    t = layer.type
    if t in ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise",
             "Convolution1D", "Convolution3D", "ConvolutionDepthWise1D", "ConvolutionDepthWise3D",
             "Deconvolution1D", "Deconvolution3D", "DeconvolutionDepthWise1D",
             "DeconvolutionDepthWise3D"):
        if g(19, 0):  # dynamic weight: nothing in .bin
            return []
        if g(8, 0):
            raise DeployerError(f"layer {layer.name} is already int8 (8={g(8, 0)}); calibrate the fp32 model")
        out = [("weight", int(g(6, 0)), True)]
        if g(5, 0):
            out.append(("bias", int(g(0, 0)), False))
        return out
    if t == "InnerProduct":
        if g(8, 0):
            raise DeployerError(f"layer {layer.name} is already int8 (8={g(8, 0)}); calibrate the fp32 model")
        out = [("weight", int(g(2, 0)), True)]
        if g(1, 0):
            out.append(("bias", int(g(0, 0)), False))
        return out
    if t == "BatchNorm":
        c = int(g(0, 0))
        return [("slope", c, False), ("mean", c, False), ("var", c, False), ("bias", c, False)]
    if t == "PReLU":
        return [("slope", int(g(0, 0)), False)]
    if t == "Scale":
        n = int(g(0, 0))
        if n == -233:
            return []
        return [("scale", n, False)] + ([("bias", n, False)] if g(1, 0) else [])
    if t == "Bias":
        return [("bias", int(g(0, 0)), False)]
    if t in ("LayerNorm", "InstanceNorm", "RMSNorm"):
        n = int(g(0, 0))
        if not g(2, 1):
            return []
        return [("gamma", n, False)] + ([] if t == "RMSNorm" else [("beta", n, False)])
    if t == "GroupNorm":
        n = int(g(1, 0))
        return [("gamma", n, False), ("beta", n, False)] if g(3, 1) else []
    if t == "Embed":
        out = [("weight", int(g(3, 0)), True)]
        if g(2, 0):
            out.append(("bias", int(g(0, 0)), False))
        return out
    if t in ("RNN", "LSTM", "GRU"):
        num_output, wsize, direction = int(g(0, 0)), int(g(1, 0)), int(g(2, 0))
        nd = 2 if direction == 2 else 1
        gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[t]
        hidden = int(g(3, num_output)) if t == "LSTM" else num_output
        bias = gates * num_output * nd if t != "GRU" else 4 * num_output * nd
        out = [("weight_xc", wsize, True), ("bias_c", bias, True),
               ("weight_hc", gates * num_output * hidden * nd, True)]
        if t == "LSTM" and hidden != num_output:
            out.append(("weight_hr", hidden * num_output * nd, True))
        return out
    if t == "MemoryData":
        n = max(int(g(0, 0)), 1) * max(int(g(1, 0)), 1) * max(int(g(11, 0)), 1) * max(int(g(2, 0)), 1)
        return [("data", n, False)]
    weightless = {"Input", "Split", "ReLU", "ReLU6", "Clip", "Sigmoid", "Swish", "HardSwish",
                  "HardSigmoid", "Mish", "TanH", "ELU", "GELU", "SELU", "Pooling", "Pooling1D",
                  "Pooling3D", "BinaryOp", "UnaryOp", "Concat", "Slice", "Reshape", "Permute",
                  "Flatten", "Softmax", "Interp", "Crop", "Padding", "Eltwise", "Dropout",
                  "Noop", "ShuffleChannel", "PixelShuffle", "Reorg", "Squeeze", "ExpandDims",
                  "Reduction", "Yolov3DetectionOutput", "DetectionOutput", "Dequantize",
                  "Quantize", "Requantize", "Exp", "Log", "Power", "AbsVal", "Threshold",
                  "LRN", "MVN", "Normalize", "Tile", "CopyTo", "Gemm", "MatMul", "Cast",
                  "Sigmoid", "Erf", "Einsum", "Flip", "Shrink", "Fold", "Unfold",
                  "SDPA", "GridSample", "CumulativeSum", "CELU", "DeepCopy", "Diag", "Spectrogram"}
    if t in weightless:
        if t == "Gemm" and (g(7, 0) or g(8, 0)):
            raise DeployerError(f"layer {layer.name}: Gemm with constant operands is not supported by "
                                "the calibration weight reader yet")
        return []
    raise DeployerError(f"layer {layer.name}: don't know how type {t} stores weights in .bin; "
                        "calibration cannot read this model yet")


def read_weights(graph: Graph, bin_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Layer name -> {weight name -> fp32 1-D array}, for every layer with weights."""
    path = Path(bin_path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DeployerError(f"{path}: cannot read ({err.strerror})") from None
    pos = 0
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer in graph.layers:
        seq = _seq(layer)
        if not seq:
            continue
        got: dict[str, np.ndarray] = {}
        for name, count, tagged in seq:
            where = f"{path.name}: layer {layer.name} {name} at byte {pos}"
            if count < 0:
                raise DeployerError(f"{where}: negative size {count} in .param")
            if tagged:
                if pos + 4 > len(data):
                    raise DeployerError(f"{where}: file ends early (truncated .bin?)")
                (tag,) = struct.unpack_from("<I", data, pos)
                pos += 4
                if tag == _TAG_FP16:
                    nbytes = count * 2
                    arr = np.frombuffer(data, "<f2", count, pos).astype(np.float32)
                    pos += (nbytes + 3) // 4 * 4
                elif tag == 0:
                    arr = np.frombuffer(data, "<f4", count, pos).copy() if pos + 4 * count <= len(data) else None
                    pos += 4 * count
                elif tag in (_TAG_INT8, _TAG_BF16):
                    raise DeployerError(f"{where}: weights are already int8/bf16; calibrate the fp32 model")
                else:
                    raise DeployerError(f"{where}: unknown weight tag 0x{tag:08x}; .bin does not match .param")
            else:
                arr = np.frombuffer(data, "<f4", count, pos).copy() if pos + 4 * count <= len(data) else None
                pos += 4 * count
            if arr is None or pos > len(data):
                raise DeployerError(f"{where}: file ends early; .bin does not match .param")
            got[name] = arr
        out[layer.name] = got
    if pos != len(data):
        raise DeployerError(f"{path.name}: {len(data) - pos} bytes left over after the last layer; "
                            ".bin does not match .param")
    return out
