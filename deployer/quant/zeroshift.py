"""Asymmetric int8 activations in stock ncnn: shift a ReLU/ReLU6 output so its codes use both signs.

ncnn quantizes a layer's input symmetrically, `round(x * scale)` clamped to +-127. A ReLU6 output
is never negative, so it only ever uses codes 0..127: half the grid, twice the rounding step an
asymmetric (zero-point) scheme would have. In MobileNetV2 every depthwise and every projecting 1x1
convolution reads such a blob, and those two kinds carry most of its int8 error.

The shift gets the missing bit back with nothing but float parameters ncnn already has. For a
convolution P whose fused activation is ReLU or Clip(0, hi), read only by one convolution C:

    P: bias - c, Clip(0, hi) -> Clip(-c, hi - c)     (clip(y, 0, hi) - c == clip(y - c, -c, hi - c))
    C: bias + c * sum(w), border padded with -c instead of 0

computes the same function in fp32 (with C's weights on their int8 grid, below), while C's int8
input x - c spans [-c, c] for x in [0, 2c]. With c = T / 2, T being the clipping threshold the calibration method chose for C's input
(127 / scale), the clip stays where the method put it and the rounding step halves; x = 0 (most
of a ReLU output) lands exactly on code -127. The correction C adds is computed with the int8
weights C really uses (`c * sum(w_q)`): with the fp32 weights, every output channel would carry
c * sum(w - w_q) of error, more than the shift saves. C's padding: ncnn pads an int8 input after
quantizing it and casts the layer's `pad_value` straight to a code, so the int8 .param carries
the code (-127) where the fp32 one carries -c.

Only where the consumer ends up int8 (a float consumer gains nothing), and only for depthwise and
1x1 consumers. 3x3 consumers were measured on the digits CNN (conv-ReLU-conv, 3x3 stride 1, whose
weights ncnn's rule keeps to 6 bits for its int8 Winograd, deployer.quant.weights, so the input
step is not what limits them): output 1 - cosine 0.00102 -> 0.00107 with kl, 0.00102 -> 0.00101
with maxabs, no gain; they are left out until a model shows one.

Measured on MobileNetV2 (the demo's 44 calibration crops, 120 ImageNet eval views, x86 host with
ARM's exact int8 maths, each method's own table). Output 1 - cosine with c = T/2: seq 0.0082 ->
0.0058, percentile 0.0139 -> 0.0076, kl 0.0215 -> 0.0148, maxabs 0.0299 -> 0.0153; one layer int8
at a time (the rest fp32) every shifted layer's error drops, the first 1x1 (conv_2) 4x. Top-1
agreement does not follow. Over 6 calibration subsets (36 of the 44 crops each) at c = T/2 it fell
in 10 of 12 runs (once equal, once up): seq 0.922 -> 0.906, percentile 0.940 -> 0.908 (means), while
cosine rose in all 12;
at c = 0.75 T (clip 1.5 T) seq kept its agreement (0.925 both, 4 subsets) with the same cosine gain,
percentile still lost 0.015. Intermediate blobs show why the error falls and suggest why agreement
need not: the random part of each layer's error shrinks, its per-channel mean part (a bias) does
not. So `quantize` tries c = 0.5, 0.75 and 1.0 T and keeps the shift only when the eval score
(cosine + agreement on clear inputs for a classifier, the task metric otherwise) improves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from deployer.ncnn.activation import FLT32_MAX, relu_bounds
from deployer.quant.int8 import as_scale_table, quantize_rows
from deployer.quant.refine import set_bias
from deployer.quant.table import CalibrationTable

# c = fraction * T. 0.5 keeps the method's clip and halves the step; 0.75 moves the clip to 1.5 T
# with 3/4 of the step; 1.0 keeps the step and doubles the range. `quantize` tries each (below).
FRACTIONS = (0.5, 0.75, 1.0)
_CONSUMERS = ("Convolution", "ConvolutionDepthWise")


@dataclass(frozen=True)
class Pair:
    """A producer whose output only `consumer` reads, and whether the consumer pads that input."""

    producer: str
    consumer: str
    padded: bool


def _pads(layer: Any) -> bool:
    return any(int(layer.get(pid, 0)) != 0 for pid in (4, 14, 15, 16))


def _shiftable_consumer(layer: Any) -> bool:
    if layer.type not in _CONSUMERS or int(layer.get(19, 0)) or float(layer.get(18, 0.0)) != 0.0:
        return False
    if layer.type == "ConvolutionDepthWise":
        return int(layer.get(7, 1)) == int(layer.get(0, 0))          # true depthwise: one channel a group
    k = int(layer.get(1, 0))
    return k == 1 and int(layer.get(11, k)) == 1


def pairs(model: Any) -> list[Pair]:
    """Every producer -> consumer pair of `model` (fp32) the shift applies to."""
    graph = model.graph
    found = []
    for producer in graph.layers:
        if producer.type not in _CONSUMERS or int(producer.get(19, 0)) or relu_bounds(producer) is None:
            continue
        readers = graph.consumers(producer.tops[0])
        if len(readers) == 1 and _shiftable_consumer(readers[0]):
            found.append(Pair(producer.name, readers[0].name, _pads(readers[0])))
    return found


def _layer_weights(model: Any, name: str) -> dict[str, Any]:
    return {w.name: w for w in model.weights.get(name, [])}


def _int8_weights(weight: np.ndarray, wscales: list[float], rows: int) -> np.ndarray:
    """The weights the consumer's int8 kernel really multiplies by (codes / scale; 0 for a zero scale)."""
    codes = quantize_rows(weight, wscales, rows).astype(np.float64).reshape(rows, -1)
    s = np.asarray(wscales, np.float64).reshape(rows, 1)
    return np.divide(codes, s, out=np.zeros_like(codes), where=s > 0)


def apply(model: Any, table: CalibrationTable, found: list[Pair], exclude: frozenset[str] | set[str],
          fraction: float = 0.5) -> tuple[Any, CalibrationTable, dict[str, float], dict[str, float]]:
    """A shifted copy of the fp32 `model` and the table that goes with it.

    Offsets come from `table` (c = fraction * 127 / the consumer's input scale). A pair is skipped
    when its consumer stays float (in `exclude`, or without scales in the table). Returns
    (model, table, {consumer: int8 pad code}, {consumer: offset}); the pad codes go into the int8
    .param (deployer.quant.int8.quantize_model's `pad_codes`)."""
    scales = as_scale_table(table)
    out = copy.copy(model)
    out.weights = dict(model.weights)
    out.graph = copy.deepcopy(model.graph)
    new_table = copy.deepcopy(table)
    pad_codes: dict[str, float] = {}
    offsets: dict[str, float] = {}
    for pair in found:
        bottom = scales.blob.get(pair.consumer)
        wkey = f"{pair.consumer}_param_0"
        if pair.consumer in exclude or not bottom or not bottom[0] > 0 or wkey not in scales.weight:
            continue
        scale = np.float32(bottom[0]) / np.float32(fraction)
        c = np.float32(127.0) / scale
        producer, consumer = out.graph.layer(pair.producer), out.graph.layer(pair.consumer)
        for name in (producer.name, consumer.name):        # set_bias edits the list: never the caller's
            out.weights[name] = list(out.weights.get(name, []))
        lo, hi = relu_bounds(producer) or (0.0, FLT32_MAX)
        pw = _layer_weights(out, producer.name)
        bias = np.asarray(pw["bias"].data, np.float32) if "bias" in pw else np.zeros(int(producer.get(0, 0)), np.float32)
        set_bias(out, producer, bias - c)
        producer.params[9] = 3
        producer.params[10] = [float(np.float32(lo) - c), float(np.float32(hi) - c) if hi < FLT32_MAX else FLT32_MAX]
        cw = _layer_weights(out, consumer.name)
        rows = int(consumer.get(0, 0))
        wq = _int8_weights(np.asarray(cw["weight"].data, np.float32), scales.weight[wkey], rows)
        cbias = np.asarray(cw["bias"].data, np.float64) if "bias" in cw else np.zeros(rows, np.float64)
        set_bias(out, consumer, (cbias + float(c) * wq.sum(axis=1)).astype(np.float32))
        if pair.padded:
            consumer.params[18] = float(-c)
            pad_codes[consumer.name] = float(-np.rint(c * scale))
        new_table.set_activation(consumer.name, [float(scale)])
        offsets[consumer.name] = float(c)
    return out, new_table, pad_codes, offsets

