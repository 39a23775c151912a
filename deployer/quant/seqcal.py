"""Method `seq`: each layer's activation scale chosen for the error of its *output*, on the inputs
the int8 network really feeds it.

The histogram methods (kl, mse, percentile) judge one blob's values alone: they neither know
which input channels the layer's weights amplify nor what the layer's ReLU6 clips away, and they
calibrate every layer on fp32 activations although, in the int8 network, each layer receives its
predecessors' int8 errors. Here, starting from another method's scales (percentile by default):

1. the model is quantized with those scales, without requantize fusion (deployer.quant.int8
   `fuse=False`) so every int8 blob reads back as float, and run on the calibration inputs next
   to the fp32 model;
2. for each conv/dw/fc layer, at a random sample of output positions, the int8 network's input
   patches (deployer.quant.layerdata.patches) and the fp32 network's output are kept;
3. each candidate input scale (the start scale and a grid of clip thresholds from 0.15 to 1 times
   the input's absmax) quantizes the patches as ncnn does, multiplies them by the layer's int8
   weights, adds the float bias and applies the fused activation; the scale with the smallest
   mean squared error against the fp32 output wins.

Only the table changes (one activation scale per layer, weight scales as the start method's), so
the files are ordinary ncnn int8 files. Measured on MobileNetV2 (bench/bench_techniques.py).

Measured and not kept: a second pass from the first pass's scales (the first judges every layer on
inputs made with percentile's upstream scales, the second on inputs made with seq's own). On
MobileNetV2's 120 ImageNet views it moved cosine by -0.0002 / +0.0003 and top-1 agreement by
+1 / +3 views in two runs (bench_techniques; a script with the build/ lists): noise, for +60 s.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deployer.quant.arith import activation, layer_activation, round_half_away
from deployer.quant.layerdata import (
    Geometry,
    geometry,
    patches,
    positions_of,
    quantize_activation,
)

if TYPE_CHECKING:
    from deployer.quant.collect import CollectJob
    from deployer.quant.methods import LayerScales
    from deployer.quant.weights import CalibModel, QuantLayer

Progress = Callable[[str, int, int], None]
POSITIONS_PER_INPUT = 128
ELEMENTS_PER_LAYER = 1 << 22                # patch values kept per layer: each candidate re-quantizes them all
GRID = np.geomspace(0.15, 1.0, 40)          # clip thresholds as a share of the int8 input's absmax
MEMORY_BUDGET = 256 << 20                   # bytes of samples held at once (layers run in batches)


@dataclass
class _Samples:
    inputs: list[np.ndarray] = field(default_factory=list)    # (P, G, K) int8-network input patches
    outputs: list[np.ndarray] = field(default_factory=list)   # (P, C) fp32-network outputs


def int8_weights(ql: QuantLayer, geo: Geometry, weight_scales: np.ndarray) -> np.ndarray:
    """(G, Og, K) dequantized int8 weights as ncnn2int8 writes them (6-bit codes where ncnn uses them)."""
    w = np.asarray(ql.weight, np.float32).reshape(geo.groups, geo.out_per_group, -1)
    s = np.asarray(weight_scales, np.float32)
    if s.size == geo.groups and geo.out_per_group > 1:
        s = np.repeat(s.reshape(geo.groups, 1), geo.out_per_group, axis=1)
    s = s.reshape(geo.groups, geo.out_per_group)[..., None]
    levels = 31 if ql.is_6bit else 127
    return (np.clip(round_half_away(w * s), -levels, levels) / s).astype(np.float32)


def output_error(x: np.ndarray, y: np.ndarray, a: np.ndarray, bias: np.ndarray, act: tuple[int, list[float]],
                 scale: float) -> float:
    """Mean squared error of the int8 layer's output (input quantized with `scale`) against `y`."""
    xq = quantize_activation(x, scale)
    out = np.einsum("pgk,gok->pgo", xq, a, optimize=True).reshape(x.shape[0], -1) + bias
    out = activation(out, act[0], act[1])
    return float(np.mean(np.square(out - y, dtype=np.float32)))


def best_scale(ql: QuantLayer, samples: _Samples, start: LayerScales) -> tuple[float, float, float]:
    """(scale, its error, the start scale's error) for one layer."""
    geo = geometry(ql.layer)
    a = int8_weights(ql, geo, start.weight_scales)
    bias = ql.bias if ql.bias is not None else np.zeros(ql.num_output, np.float32)
    act = layer_activation(ql.layer)
    x = np.concatenate(samples.inputs)
    y = np.concatenate(samples.outputs)
    absmax = float(np.max(np.abs(x))) if x.size else 0.0
    start_err = output_error(x, y, a, bias, act, start.input_scale)
    if absmax == 0:
        return start.input_scale, start_err, start_err
    best, best_err = start.input_scale, start_err
    for share in GRID:
        s = float(np.float32(127.0 / (absmax * share)))
        err = output_error(x, y, a, bias, act, s)
        if err < best_err:
            best, best_err = s, err
    return best, best_err, start_err


def _patch_size(ql: QuantLayer) -> int:
    """Values in one output position's patch (all groups)."""
    geo = geometry(ql.layer)
    return int(np.asarray(ql.weight).size // max(geo.out_per_group, 1))


def _per_input(ql: QuantLayer, nfiles: int) -> int:
    """Output positions sampled per calibration input: up to POSITIONS_PER_INPUT, fewer for wide
    layers (a 960-channel depthwise conv has 960 outputs per position already)."""
    if ql.type == "InnerProduct":
        return 1
    return int(min(POSITIONS_PER_INPUT, max(4, ELEMENTS_PER_LAYER // (max(nfiles, 1) * _patch_size(ql)))))


def _batches(layers: list[QuantLayer], nfiles: int) -> list[list[QuantLayer]]:
    out: list[list[QuantLayer]] = [[]]
    used = 0
    for ql in layers:
        need = 4 * nfiles * _per_input(ql, nfiles) * (_patch_size(ql) + ql.num_output)
        if out[-1] and used + need > MEMORY_BUDGET:
            out.append([])
            used = 0
        out[-1].append(ql)
        used += need
    return out


def _collect(fp_runner, q_runner, job: CollectJob, layers: list[QuantLayer], nfiles: int,
             rng: np.random.Generator) -> dict[str, _Samples]:
    from deployer.quant.collect import extract, feed

    samples = {ql.name: _Samples() for ql in layers}
    bottoms = list(dict.fromkeys(ql.bottom for ql in layers))
    tops = list(dict.fromkeys(ql.top for ql in layers))
    for i in range(nfiles):
        ex = feed(fp_runner, job, i)
        y = {b: np.array(extract(ex, b, job, i), np.float32) for b in tops}
        ex = feed(q_runner, job, i)
        x = {b: np.array(extract(ex, b, job, i), np.float32) for b in bottoms}
        for ql in layers:
            geo = geometry(ql.layer)
            n = positions_of(x[ql.bottom], geo)
            per = _per_input(ql, nfiles)
            pick = None if n <= per else np.sort(rng.choice(n, per, replace=False))
            out = y[ql.top].reshape(ql.num_output, -1)
            samples[ql.name].inputs.append(patches(x[ql.bottom], geo, pick))
            samples[ql.name].outputs.append(np.ascontiguousarray((out if pick is None else out[:, pick]).T))
    return samples


def seq_search(model: CalibModel, job: CollectJob, start: list[LayerScales], *, threads: int = 1,
               progress: Progress | None = None, seed: int = 0) -> list[LayerScales]:
    """New input scales for `start` (one LayerScales per model.quant_layers entry, same order).

    `threads` is accepted for the method interface only: the two nets run one ncnn thread each,
    like the statistics collection, and layers are searched one after the other in numpy."""
    from dataclasses import replace

    from deployer.ncnn.model import NcnnModel
    from deployer.quant.calibration import build_table
    from deployer.quant.collect import Runner
    from deployer.quant.int8 import quantize_model

    by_name = {ls.name: ls for ls in start}
    layers = [ql for ql in model.quant_layers if ql.name in by_name]
    nfiles = len(job.files[0]) if job.files else 0
    if not layers or nfiles == 0:
        return start
    fp32 = NcnnModel.load(model.param_path, model.bin_path)
    q, _ = quantize_model(fp32, build_table(model, start), fuse=False)
    result = dict(by_name)
    rng = np.random.default_rng(seed)
    done = 0
    with tempfile.TemporaryDirectory(prefix="deployer-seq-") as tmp:
        qparam, qbin = Path(tmp) / "q.param", Path(tmp) / "q.bin"
        q.save(qparam, qbin)
        fp_runner, q_runner = Runner(model.param_path, model.bin_path), Runner(qparam, qbin)
        for batch in _batches(layers, nfiles):
            samples = _collect(fp_runner, q_runner, job, batch, nfiles, rng)
            for ql in batch:
                scale, _, _ = best_scale(ql, samples.pop(ql.name), by_name[ql.name])
                result[ql.name] = replace(by_name[ql.name], input_scale=scale,
                                          threshold=float(127.0 / scale))
                done += 1
                if progress:
                    progress("seq", done, len(layers))
        del fp_runner, q_runner
    return [result[ls.name] for ls in start]
