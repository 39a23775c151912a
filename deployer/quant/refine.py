"""Accuracy beyond calibration: per-layer weight refinements applied after the table is chosen.

`quantize` picks activation scales (the method) first; then, with those scales fixed, it can
(1) learn each layer's weight rounding on calibration data (deployer.quant.adaround),
(2) correct each layer's bias for the mean error int8 leaves in its output (deployer.quant.biascorr),
(3) shift ReLU/ReLU6 outputs so their int8 codes use both signs (`shift`, deployer.quant.zeroshift:
it changes the consumers' input scales too, and goes on top of whatever weights (1)-(2) leave).
(1) and (2) are written back into a copy of the *fp32* model — rounded weights as exactly `code / scale`,
corrections into the float bias — so the ordinary int8 conversion (deployer.quant.int8) turns it
into the intended int8 codes and the files are stock ncnn files.

Not here: cross-layer equalization. It evens out per-tensor *weight* ranges across channels, but
ncnn already gives every output channel (every depthwise group) its own weight scale, and
MobileNetV2's ReLU6 is not scale-invariant (relu6(x/s)*s clips at 6s), so the rescaled fp32 model
would not even compute the same function. Measured anyway on MobileNetV2 (120 ImageNet views) in
the form that stays exact: scaling up only expand-conv output channels whose calibration maximum
times the factor stays below 6 (margin 0.3, so held-out values up to 3x the calibration max are
not clipped), undone in the following depthwise conv. Cosine 0.9861 -> 0.9888 with percentile,
but 0.9918 -> 0.9902 on top of method `seq` (deployer.quant.seqcal), which is what helps: not kept.

Also measured and not kept (MobileNetV2, method seq, same 120 views; cosine / top-1 agreement,
seq alone 0.9918 / 0.925 in that run: seq's table, and with it the near-ties it flips, differs a
little between runs): each layer's int8 side taken from the int8 network itself (upstream
errors included) instead of its fp32 input re-quantized. All layers at once, every layer also
corrects the upstream error its predecessors already correct: biascorr 0.500 / 0.117, adaround
0.922 / 0.792. Layer by layer, rebuilding the int8 net after each correction (empirical bias
correction, 140 s): 0.965 / 0.875, a little above the local correction (0.956 / 0.858) and still
far below seq alone (a guess at why: seq's scales clip hard and were chosen without a correction).

Where MobileNetV2's int8 error is (seq table, 120 views, output 1 - cosine 0.0082 all int8): quantizing
one layer kind alone costs depthwise 0.0045, project 1x1 0.0031, first conv 0.0004, expand 1x1 +
last conv 0.0006, classifier 0.0001 (which still flips one near-tie); int8 *weights* alone
(activations fp32) 0.0044. The first depthwise conv alone: 0.0037, 0.0018 of it from its weights.
So half is weight rounding, but layer-output-aware rounding recovers little of it: GPTQ-style
error-compensated rounding (input Gram from the calibration patches) on every layer cosine
0.9918 -> 0.9931, on the depthwise layers only -> 0.9923; per-channel weight scales searched for the
output error (clip 0.5-1.0 x absmax) -> 0.9925, with GPTQ on top 0.9925; top-1 agreement 0.933-0.950
for all (0.950 without them), agreement on clearly decided inputs 0.982 -> 0.973 with GPTQ. Not kept
(measured with a script on these functions, 2026-11-30). Equalizing the first conv's output channels
into the first depthwise conv (small-range channels scaled up to a common calibration max of 3, fp32
output unchanged to 2e-7) moved seq's cosine by +0.0001 (measured on a calibration set without one of
the 11 photos): the error is not in those channels' resolution.

Also measured and not kept (2026-12-01, a throwaway script): end-to-end tuning through the whole
network, QAT-style. A torch re-implementation of ncnn's int8 forward (the seq table's scales, round
half away from zero, straight-through gradients; on the 120 eval views it matched stock ncnn to
cosine 0.99173 vs 0.99164) trained every float bias, and optionally every weight's rounding (the
AdaRound relaxation, jointly), with Adam on the output error against fp32 over the 44 calibration
crops and their mirror images; the result was written as ordinary files and scored in stock ncnn.
It fits the calibration photos (their logit MSE -60 % with biases, -72 % with rounding too) and does
not carry over to the ImageNet eval photos: cosine 0.9916 -> 0.9924 / agreement 0.950 -> 0.925
(biases, MSE), 0.9913 / 0.933 (biases, softmax KL), 0.9907 / 0.933 (biases + rounding). With a few
dozen crops of a dozen photos, anything trained on them learns those photos.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from deployer.ncnn.modelbin import Weight
from deployer.quant.adaround import optimise_rounding
from deployer.quant.arith import round_half_away
from deployer.quant.biascorr import bias_shift
from deployer.quant.layerdata import QUANTIZED_TYPES, LayerData, collect_layer_data

Progress = Callable[[str, int, int], None]
TECHNIQUES = ("adaround", "biascorr", "shift")


@dataclass
class RefineReport:
    techniques: list[str]
    layers: int = 0
    rounding_improved: int = 0                      # layers where learnt rounding beat nearest
    rounding_loss: dict[str, float] = field(default_factory=dict)   # layer -> error vs nearest (1.0 = same)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        worst = sorted(self.rounding_loss.items(), key=lambda kv: kv[1])[:5]
        return {"techniques": self.techniques, "layers": self.layers, "rounding_improved": self.rounding_improved,
                "best_rounding_gains": {k: round(v, 4) for k, v in worst}, "seconds": self.seconds}


def _table_scales(table: Any, name: str) -> tuple[np.ndarray | None, float | None]:
    from deployer.quant.int8 import as_scale_table

    st = as_scale_table(table)
    w = st.weight.get(f"{name}_param_0")
    b = st.blob.get(name)
    return (None if w is None else np.asarray(w, np.float32)), (None if not b else float(b[0]))


def _weights(model: Any, name: str) -> dict[str, Weight]:
    return {w.name: w for w in model.weights.get(name, [])}


def set_bias(model: Any, layer: Any, bias: np.ndarray) -> None:
    """Replace (or add, setting bias_term) `layer`'s float bias in `model.weights[layer.name]`, in place."""
    ws = model.weights.setdefault(layer.name, [])
    for i, w in enumerate(ws):
        if w.name == "bias":
            ws[i] = Weight(name="bias", data=bias.astype(np.float32), storage=w.storage, tagged=w.tagged)
            return
    layer.params[1 if layer.type == "InnerProduct" else 5] = 1          # bias_term
    pos = next(i for i, w in enumerate(ws) if w.name == "weight") + 1
    ws.insert(pos, Weight(name="bias", data=bias.astype(np.float32), storage="raw", tagged=False))


@dataclass
class Refinement:
    """New fp32 weights / biases per layer; `apply(exclude)` puts them into a copy of the model.

    Layers that end up fp32 (mixed precision, keep_fp32) keep their original weights and bias: the
    corrections compensate int8 errors they no longer have."""

    model: Any
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    biases: dict[str, np.ndarray] = field(default_factory=dict)
    report: RefineReport = field(default_factory=lambda: RefineReport([]))

    def apply(self, exclude: frozenset[str] | set[str] = frozenset()) -> Any:
        out = copy.copy(self.model)
        out.weights = dict(self.model.weights)
        out.graph = copy.deepcopy(self.model.graph)
        for name in set(self.weights) | set(self.biases):
            if name in exclude:
                continue
            layer = out.graph.layer(name)
            ws = list(out.weights.get(name, []))
            if name in self.weights:
                ws = [Weight(name="weight", data=self.weights[name], storage="fp32", tagged=True)
                      if w.name == "weight" else w for w in ws]
            out.weights[name] = ws
            if name in self.biases:
                set_bias(out, layer, self.biases[name])
        return out


def refine(model: Any, param: Any, bin_: Any, table: Any, samples: list[dict[str, np.ndarray]],
           techniques: list[str], *, exclude: frozenset[str] = frozenset(), threads: int = 2,
           iters: int = 300, progress: Progress | None = None) -> Refinement:
    """Refined weights for `model` (an NcnnModel loaded from `param`/`bin_`) and this `table`.

    Layers in `exclude` and layers the table does not cover are left alone.
    """
    result = Refinement(model, report=RefineReport(list(techniques)))
    report = result.report
    if not techniques:
        return result
    layers, wscales, ascales = [], {}, {}
    for layer in model.graph.layers:
        if layer.type not in QUANTIZED_TYPES or layer.name in exclude or int(layer.get(19, 0)):
            continue
        ws, a = _table_scales(table, layer.name)
        if ws is None or a is None or "weight" not in _weights(model, layer.name):
            continue
        layers.append(layer)
        wscales[layer.name], ascales[layer.name] = ws, a
    with _one_blas_thread():
        if "adaround" in techniques or "biascorr" in techniques:
            t0 = time.monotonic()
            # one ncnn thread: the nets are small per call and OpenMP workers spinning next to numpy
            # made a 50-input MTCNN pass take 30 s instead of 1 s on a busy 2-core machine
            data = collect_layer_data(param, bin_, layers, ascales, samples, threads=1, progress=progress)
            report.seconds["collect"] = round(time.monotonic() - t0, 3)
            t0 = time.monotonic()
            for i, layer in enumerate(layers):
                if layer.name in data:
                    _refine_layer(result, layer, wscales[layer.name], data[layer.name], techniques, iters)
                if progress:
                    progress("refine", i + 1, len(layers))
            report.seconds["refine"] = round(time.monotonic() - t0, 3)
        report.layers = len(layers)
    return result


@contextlib.contextmanager
def _one_blas_thread():
    """The (rows x K) @ (K x K) products are small: BLAS threads only spin against ncnn's and
    other processes' threads (20 s instead of 1 s per layer on a loaded 2-core host)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:               # optional: without it BLAS keeps its own thread count
        yield
        return
    with threadpool_limits(1):
        yield


def _refine_layer(result: Refinement, layer: Any, scales: np.ndarray, data: LayerData, techniques: list[str],
                  iters: int) -> None:
    """Learnt rounding for one layer, stored as fp32 weights exactly on the int8 grid (`code / scale`)
    so the int8 writer's round-to-nearest reproduces the learnt codes; then the local bias correction
    (biascorr.bias_shift) for whichever codes the layer ends up with."""
    report = result.report
    flat = np.asarray(_weights(result.model, layer.name)["weight"].data, np.float32)
    geo = data.geometry
    g, og = geo.groups, geo.out_per_group
    w = flat.reshape(g, og, -1)
    s = np.asarray(scales, np.float32)
    s = np.repeat(s.reshape(g, 1), og, axis=1) if s.size == g and og > 1 else s.reshape(g, og)
    # the code range the table's scale implies: 31 for ncnn's 6-bit 3x3s1 convs, else 127
    levels = 31 if float(np.max(np.abs(w) * s[..., None])) <= 31.5 else 127
    codes = np.clip(round_half_away(w * s[..., None]), -levels, levels)
    if "adaround" in techniques:
        res = optimise_rounding(w, s, levels, data, iters=iters)
        report.rounding_loss[layer.name] = res.loss / res.loss_nearest if res.loss_nearest > 0 else 1.0
        report.rounding_improved += int(res.improved)
        codes = res.codes
        if res.improved:
            result.weights[layer.name] = (codes / s[..., None]).astype(np.float32).reshape(-1)
    if "biascorr" in techniques:
        a = (codes / s[..., None]).astype(np.float32)
        wts = _weights(result.model, layer.name)
        shift = bias_shift(w, a, data).reshape(-1)
        old = np.asarray(wts["bias"].data, np.float32) if "bias" in wts else np.zeros(shift.size, np.float32)
        result.biases[layer.name] = old + shift


def parse_techniques(raw: Any, where: str) -> list[str]:
    """`refine: [adaround, biascorr]`, `refine: none` or a comma list; unknown names are errors."""
    from deployer.errors import DeployerError

    if isinstance(raw, str):
        items = [x.strip() for x in raw.split(",") if x.strip()]
    elif isinstance(raw, (list, tuple)):
        items = [str(x).strip() for x in raw]
    else:
        raise DeployerError(f"{where}: expected a list of techniques, got {type(raw).__name__}",
                            hint=f"e.g. [{', '.join(TECHNIQUES)}] or none")
    if items in (["none"], ["off"], []):
        return []
    bad = [x for x in items if x not in TECHNIQUES]
    if bad:
        raise DeployerError(f"{where}: unknown technique {bad[0]!r}", hint=f"choose from {', '.join(TECHNIQUES)} or none")
    return list(dict.fromkeys(items))


# What `quantize` runs when the profile says nothing (bench/bench_quantize.py --techniques measures
# each technique; a technique goes in here only when it helps there). Whatever runs is also kept
# per model only if it raises the eval score (refine_step).
DEFAULT_TECHNIQUES: list[str] = []


def refine_step(evaluator: Any, model: Any, param: Any, bin_: Any, table: Any, samples: list[dict[str, np.ndarray]],
                techniques: list[str], base_exclude: frozenset[str], start: Any, *, threads: int = 2,
                progress: Progress | None = None) -> tuple[dict, Any]:
    """Refine the chosen table's weights and keep the result only if the eval score improves.

    With `shift`, each of zeroshift.FRACTIONS is one candidate (on top of the refined weights) and
    the best-scoring one is compared with the start. Returns (report entry, the Evaluation to
    continue with). When kept, `evaluator.prepare` / `evaluator.shift_pairs` make every later
    candidate (mixed precision, the final model) start from the refined weights and the shift.
    """
    if not techniques:
        return {"ran": False, "techniques": []}, start
    from deployer.quant import zeroshift

    t0 = time.monotonic()
    weight_techniques = [t for t in techniques if t != "shift"]
    pairs = zeroshift.pairs(model) if "shift" in techniques else []
    if not weight_techniques and not pairs:
        return {"ran": False, "techniques": list(techniques), "shift": {"pairs": 0},
                "reason": "shift: no ReLU/ReLU6 conv output is read by a single depthwise or 1x1 conv"}, start
    refinement = refine(model, param, bin_, table, samples, weight_techniques, exclude=base_exclude,
                        threads=threads, progress=progress)
    evaluator.prepare = refinement.apply if weight_techniques else None
    evaluator.shift_pairs = pairs
    tried: dict[float, Any] = {}
    for fraction in (zeroshift.FRACTIONS if pairs else (None,)):
        evaluator.shift_fraction = fraction or 0.5
        tried[fraction] = evaluator.evaluate(table, base_exclude)
    fraction, ev = max(tried.items(), key=lambda kv: (kv[1].score, -kv[1].error))
    kept = ev.score > start.score or (ev.score == start.score and ev.error < start.error)
    if kept:
        evaluator.shift_fraction = fraction or 0.5
    else:
        evaluator.prepare = None
        evaluator.shift_pairs = []
    info = {"ran": True, "kept": kept,
            "score_before": round(float(start.score), 6), "score_after": round(float(ev.score), 6),
            "error_before": start.error, "error_after": ev.error, "calibration_inputs": len(samples),
            "seconds": round(time.monotonic() - t0, 3), **refinement.report.to_dict(),
            "techniques": list(techniques)}
    if "shift" in techniques:
        offsets = zeroshift.apply(model, table, pairs, base_exclude, fraction or 0.5)[3] if pairs else {}
        info["shift"] = {"pairs": len(offsets), "fraction": fraction,
                         "tried": {str(f): {"score": round(float(e.score), 6), "error": e.error}
                                   for f, e in tried.items() if f is not None},
                         "offsets": {k: round(v, 6) for k, v in offsets.items()}}
    return info, (ev if kept else start)
