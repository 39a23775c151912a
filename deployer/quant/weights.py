"""Which layers get calibrated, and their per-channel weight scales, exactly as ncnn2table does.

ncnn2table quantizes Convolution / ConvolutionDepthWise / InnerProduct (activation + weights) and
gives Embed / MultiHeadAttention / RNN / LSTM / GRU weight-only scales. Weight scales are per
output channel (per group for depthwise); 3x3 stride-1 dilation-1 convolutions use the 6-bit range
(31/absmax) in KL and ACIQ because ncnn's int8 Winograd F(4,3) kernel needs it. All arithmetic is
done in float32 like the C++ so the table matches to the last printed digit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deployer.errors import DeployerError
from deployer.ncnn.param import Graph, Layer

CALIBRATED_TYPES = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
STATIC_ONLY_TYPES = ("Embed", "MultiHeadAttention", "RNN", "LSTM", "GRU")

_ALPHA_GAUSSIAN = np.array([0, 1.71063519, 2.15159277, 2.55913646, 2.93620062, 3.28691474,
                            3.6151146, 3.92403714], dtype=np.float32)
_GAUSSIAN_CONST = (0.5 * 0.35) * (1 + math.sqrt(math.pi * math.log(4)))


@dataclass
class QuantLayer:
    """A conv/dw/fc layer as calibration sees it: input blob, shape params, fp32 weights."""

    index: int               # position in the graph (ncnn's layer index)
    layer: Layer
    weight: np.ndarray       # fp32, 1-D, ncnn order
    bias: np.ndarray | None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def type(self) -> str:
        return self.layer.type

    @property
    def bottom(self) -> str:
        return self.layer.bottoms[0]

    @property
    def top(self) -> str:
        return self.layer.tops[0]

    @property
    def num_output(self) -> int:
        return int(self.layer.get(0, 0))

    @property
    def scale_groups(self) -> int:
        """How many weight scales ncnn writes: num_output, or group for depthwise."""
        return int(self.layer.get(7, 1)) if self.type == "ConvolutionDepthWise" else self.num_output

    @property
    def is_6bit(self) -> bool:
        """ncnn2table's condition for 6-bit weights (int8 Winograd F43)."""
        if self.type != "Convolution":
            return False
        g = self.layer.get
        kw = g(1, 0)
        kh = g(11, kw)
        dw = g(2, 1)
        dh = g(12, dw)
        sw = g(3, 1)
        sh = g(13, sw)
        return (kw, kh, dw, dh, sw, sh) == (3, 3, 1, 1, 1, 1)


@dataclass
class CalibModel:
    """The parsed model plus what calibration needs from it."""

    param_path: Path
    bin_path: Path
    graph: Graph
    quant_layers: list[QuantLayer]
    static_layers: list[tuple[Layer, dict[str, np.ndarray]]] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        return self.graph.input_names


def _layer_weights(param_path: Path, bin_path: Path) -> tuple[Graph, dict[str, dict[str, np.ndarray]]]:
    """The graph and every layer's fp32 weights (fp16/codebook storage decoded by deployer.ncnn)."""
    from deployer.ncnn.model import NcnnModel

    model = NcnnModel.load(param_path, bin_path)
    out: dict[str, dict[str, np.ndarray]] = {}
    for lname, ws in model.weights.items():
        for w in ws:
            if w.storage == "int8" and lname in {l.name for l in model.graph.layers
                                                 if l.type in CALIBRATED_TYPES + STATIC_ONLY_TYPES}:
                raise DeployerError(f"{bin_path.name}: layer {lname} already has int8 weights; "
                                    "calibrate the fp32 model, not an int8 one")
        out[lname] = {w.name: np.asarray(w.data, dtype=np.float32) for w in ws if w.storage != "int8"}
    return model.graph, out


def load_model(param_path: str | Path, bin_path: str | Path) -> CalibModel:
    param_path, bin_path = Path(param_path), Path(bin_path)
    if not bin_path.is_file():
        raise DeployerError(f"{bin_path}: model .bin not found")
    graph, weights = _layer_weights(param_path, bin_path)
    if not graph.input_names:
        raise DeployerError(f"{param_path}: the model has no Input layer; ncnn2table needs one per input")
    quant: list[QuantLayer] = []
    static: list[tuple[Layer, dict[str, np.ndarray]]] = []
    for i, layer in enumerate(graph.layers):
        if layer.type in CALIBRATED_TYPES:
            w = weights.get(layer.name, {})
            if "weight" not in w:
                raise DeployerError(f"{param_path.name}: layer {layer.name} ({layer.type}) has no weights "
                                    "in .bin (dynamic weight?); it cannot be calibrated")
            ql = QuantLayer(i, layer, w["weight"], w.get("bias"))
            _check_shape(ql, param_path.name)
            quant.append(ql)
        elif layer.type in STATIC_ONLY_TYPES:
            static.append((layer, weights.get(layer.name, {})))
    return CalibModel(param_path, bin_path, graph, quant, static)


def _check_shape(ql: QuantLayer, source: str) -> None:
    groups = ql.scale_groups
    if groups <= 0 or ql.weight.size == 0 or ql.weight.size % groups:
        raise DeployerError(f"{source}: layer {ql.name}: weight size {ql.weight.size} is not a multiple of "
                            f"{groups} output channels/groups; the .param is inconsistent")


@dataclass
class WeightScales:
    scales: np.ndarray             # float32, one per output channel / group
    zero_channels: list[int]       # channels whose weights are all zero (scale guarded to 1)


def channel_absmax(ql: QuantLayer) -> np.ndarray:
    groups = ql.scale_groups
    return np.abs(ql.weight.reshape(groups, -1)).max(axis=1).astype(np.float32)


def aciq_gaussian_clip(absmax: float | np.ndarray, n: int, bits: int = 8) -> np.ndarray:
    """ncnn's compute_aciq_gaussian_clip: double maths, float alpha, result rounded to float."""
    std = (np.asarray(absmax, dtype=np.float64) * 2 * _GAUSSIAN_CONST) / math.sqrt(2 * math.log(n))
    return (np.float64(_ALPHA_GAUSSIAN[bits - 1]) * std).astype(np.float32)


def weight_scales(ql: QuantLayer, method: str = "kl") -> WeightScales:
    """Per-channel weight scales as ncnn2table computes them for `method` (kl/eq/aciq; others = kl).

    An all-zero channel would give `inf` in ncnn (no guard); we write 1.0 instead, which
    quantizes to the same zeros, and report the channel so the caller can warn.
    """
    absmax = channel_absmax(ql)
    per_channel = ql.weight.size // ql.scale_groups
    levels = np.float32(31 if ql.is_6bit else 127)
    if method == "aciq":
        denom = aciq_gaussian_clip(absmax, per_channel, 6 if ql.is_6bit else 8)
    else:
        denom = absmax
    zero = denom == 0
    with np.errstate(divide="ignore"):
        scales = np.where(zero, np.float32(1), levels / np.where(zero, np.float32(1), denom)).astype(np.float32)
    return WeightScales(scales, [int(i) for i in np.nonzero(zero)[0]])


def static_weight_scales(layer: Layer, weights: dict[str, np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """Weight-only scales for Embed / MHA / RNN / LSTM / GRU: (param index, scales), absmax==0 -> 1."""

    def rows(w: np.ndarray, nrows: int) -> np.ndarray:
        a = np.abs(w.reshape(nrows, -1)).max(axis=1).astype(np.float32)
        with np.errstate(divide="ignore"):
            return np.where(a == 0, np.float32(1), np.float32(127) / np.where(a == 0, 1, a)).astype(np.float32)

    def whole(w: np.ndarray) -> np.ndarray:
        return rows(w, 1)

    need = {"Embed": ["weight"], "RNN": ["weight_xc", "weight_hc"], "LSTM": ["weight_xc", "weight_hc"],
            "GRU": ["weight_xc", "weight_hc"],
            "MultiHeadAttention": ["q_weight", "k_weight", "v_weight", "out_weight"]}[layer.type]
    missing = [n for n in need if n not in weights]
    if missing:
        raise DeployerError(f"layer {layer.name} ({layer.type}): cannot read {', '.join(missing)} from .bin")
    if layer.type == "Embed":
        return [(0, whole(weights["weight"]))]
    if layer.type == "MultiHeadAttention":
        embed_dim = int(layer.get(0, 0))
        return [(0, rows(weights["q_weight"], embed_dim)), (1, rows(weights["k_weight"], embed_dim)),
                (2, rows(weights["v_weight"], embed_dim)), (3, whole(weights["out_weight"]))]
    num_output = int(layer.get(0, 0))
    nd = 2 if int(layer.get(2, 0)) == 2 else 1
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[layer.type]
    hidden = int(layer.get(3, num_output)) if layer.type == "LSTM" else num_output
    nrows = gates * hidden * nd
    return [(0, rows(weights["weight_xc"], nrows)), (1, rows(weights["weight_hc"], nrows))]
