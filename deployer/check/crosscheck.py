"""fp32 vs int8 on the same held-out inputs, in the stock ncnn wheel: outputs, per-layer error, gates.

The per-layer view is what makes a bad int8 model fixable: it shows at which conv the error enters
(and which layers to keep fp32). A requantized conv (int8_scale_term > 100) hands its consumer raw
int8 codes, and extract() returns those codes as floats; they are divided by the layer's
`top_blob_int8_scales` (= its consumer's input scale) to be comparable with fp32. A layer whose
output the int8 model carries shifted (deployer.quant.zeroshift) gets its offset added back, read
from the two .param files (deployer.ncnn.activation.shift_offsets).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deployer.check.gates import Gate, GateResult, evaluate_gates
from deployer.check.metrics import OutputSummary, cosine, l2, summarize, summary_dict, top1_disagreements
from deployer.check.net import NcnnNet, prepare
from deployer.check.samples import Sample
from deployer.errors import DeployerError

Outputs = dict[str, np.ndarray]         # output blob name -> array
Progress = Callable[[int, int], None]   # (done, total)

QUANTIZABLE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")


@dataclass
class QuantizedLayer:
    name: str
    type: str
    blob: str                   # the layer's output blob
    top_scale: float | None     # set when the output is requantized int8 (8 > 100)
    offset: float = 0.0         # the int8 model carries this output shifted by -offset (deployer.quant.zeroshift)


@dataclass
class LayerError:
    """How far one int8 layer's output is from fp32, averaged over inputs (errors accumulate downstream)."""

    layer: str
    type: str
    blob: str
    requantized: bool
    cosine: float
    rel_error: float            # ||int8 - fp32|| / ||fp32||
    max_abs: float


@dataclass
class CheckResult:
    fp32: dict[str, str]
    int8: dict[str, str]
    count: int
    outputs: dict[str, OutputSummary]
    layers: list[LayerError] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    source: str = ""            # where the inputs came from ("--images", "eval.images", ...)
    task: dict | None = None     # task metrics when the profile declares a task (deployer.check.tasks)
    disagreements: dict[str, list[dict]] = field(default_factory=dict)   # output -> metrics.top1_disagreements

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        outs = {name: summary_dict(s) for name, s in self.outputs.items()}
        return {
            "ok": self.passed,
            "fp32": self.fp32,
            "int8": self.int8,
            "inputs": self.count,
            "source": self.source,
            "outputs": outs,
            "task": self.task,
            "layers": [asdict(e) for e in self.layers],
            "gates": [asdict(g) for g in self.gates],
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "top1_disagreements": self.disagreements,
            "notes": self.notes,
        }


def quantized_layers(int8_param: str | os.PathLike, int8_bin: str | os.PathLike,
                     fp32_param: str | os.PathLike | None = None) -> list[QuantizedLayer]:
    """Every conv/dw/fc that runs int8, with the requantize scale read from the int8 .bin and, given
    the fp32 .param, the activation shift its output carries (deployer.ncnn.activation)."""
    from deployer.ncnn.activation import shift_offsets
    from deployer.ncnn.model import NcnnModel
    from deployer.ncnn.param import read_param

    model = NcnnModel.load(int8_param, int8_bin)
    offsets = shift_offsets(read_param(Path(fp32_param)), model.graph) if fp32_param is not None else {}
    found = []
    for layer in model.graph.layers:
        if layer.type not in QUANTIZABLE or not layer.tops:
            continue
        term = int(layer.get(8, 0) or 0)
        if not term:
            continue
        top_scale = None
        if term > 100:
            weights = {w.name: w for w in model.weights.get(layer.name, [])}
            if "top_scales" not in weights:
                raise DeployerError(f"{int8_bin}: layer {layer.name} has 8={term} but no top_blob_int8_scales")
            top_scale = float(np.asarray(weights["top_scales"].data).ravel()[0])
        found.append(QuantizedLayer(layer.name, layer.type, layer.tops[0], top_scale, offsets.get(layer.name, 0.0)))
    return found


def run_outputs(net: NcnnNet, samples: list[Sample], outputs: list[str],
                progress: Progress | None = None) -> list[Outputs]:
    results = []
    for i, sample in enumerate(samples):
        results.append(net.run(sample, outputs))
        if progress:
            progress(i + 1, len(samples))
    return results


def compare_outputs(refs: list[Outputs], tests: list[Outputs],
                    groups: list[str] | None = None) -> dict[str, OutputSummary]:
    """Per-output summaries; `groups` (a key per input) makes agreement intervals count groups."""
    names = list(refs[0]) if refs else []
    return {n: summarize(n, [r[n] for r in refs], [t[n] for t in tests], groups) for n in names}


def _layer_metrics(ref: np.ndarray, test: np.ndarray) -> tuple[float, float, float]:
    r = ref.astype(np.float64).ravel()
    t = test.astype(np.float64).ravel()
    norm = l2(r)
    diff = r - t
    rel = l2(diff) / norm if norm > 0 else float(l2(diff) > 0)
    return cosine(r, t), rel, float(np.max(np.abs(diff))) if diff.size else 0.0


def crosscheck(
    fp32: tuple[str | os.PathLike, str | os.PathLike],
    int8: tuple[str | os.PathLike, str | os.PathLike],
    samples: list[Sample],
    *,
    gates: list[Gate] | None = None,
    outputs: list[str] | None = None,
    per_layer: bool = True,
    threads: int = 2,
    progress: Progress | None = None,
    task: object = None,
    groups: list[str] | None = None,
    task_where: str = "task",
) -> CheckResult:
    """Run both models on every sample and compare; gates are evaluated on the output summaries."""
    if not samples:
        raise DeployerError("no inputs to compare on", hint="give held-out images with --images or a profile")
    started = time.monotonic()
    layers = quantized_layers(*int8, fp32_param=fp32[0]) if per_layer else []
    net32 = NcnnNet(*fp32, threads=threads, intermediates=per_layer)
    net8 = NcnnNet(*int8, threads=threads, intermediates=per_layer)
    outs = outputs or net32.output_names
    missing = [o for o in outs if o not in net8.output_names and o not in _blob_names(int8[0])]
    if missing:
        raise DeployerError(f"{int8[0]}: has no output {missing[0]!r} (the fp32 model has)",
                            hint="are these two files the same model?")
    for name in net32.input_names:
        if name not in samples[0]:
            raise DeployerError(f"{fp32[0]}: input {name!r} has no data", hint=f"samples give {', '.join(samples[0])}")

    refs, tests = [], []
    acc: dict[str, list[tuple[float, float, float]]] = {q.name: [] for q in layers}
    blobs = [q.blob for q in layers]
    prepare([(net32, [*outs, *blobs]), (net8, [*outs, *blobs])], samples[0])   # both first forwards, one child
    for i, sample in enumerate(samples):
        r = net32.run(sample, [*outs, *blobs])
        t = net8.run(sample, [*outs, *blobs])
        if i == 0:
            _check_same_sizes(r, t, [*outs, *blobs], fp32[0], int8[0])
        refs.append({o: r[o] for o in outs})
        tests.append({o: t[o] for o in outs})
        for q in layers:
            got = (t[q.blob] / q.top_scale if q.top_scale else t[q.blob]) + q.offset
            acc[q.name].append(_layer_metrics(r[q.blob], got))
        if progress:
            progress(i + 1, len(samples))

    result = CheckResult(
        fp32={"param": str(fp32[0]), "bin": str(fp32[1])},
        int8={"param": str(int8[0]), "bin": str(int8[1])},
        count=len(samples),
        outputs=compare_outputs(refs, tests, groups),
    )
    for name, summary in result.outputs.items():
        if summary.top1_agreement is not None:
            result.disagreements[name] = top1_disagreements([r[name] for r in refs], [t[name] for t in tests])
    for q in layers:
        vals = np.asarray(acc[q.name])
        result.layers.append(LayerError(q.name, q.type, q.blob, q.top_scale is not None,
                                        cosine=float(vals[:, 0].mean()), rel_error=float(vals[:, 1].mean()),
                                        max_abs=float(vals[:, 2].max())))
    if task is not None:            # deployer.check.tasks.TaskSpec: mAP / mask IoU / agreement + interval
        from deployer.check.tasks import check_task_outputs, evaluate_task, with_intervals

        check_task_outputs(task, refs, task_where)  # type: ignore[arg-type]  # errors name the profile's task
        metrics, parts = evaluate_task(task, refs, tests, groups=groups)  # type: ignore[arg-type]
        result.task = with_intervals(metrics, parts, groups)
    if gates:
        result.gates = evaluate_gates(gates, result.outputs, result.task)
    if per_layer and not layers:
        result.notes.append("the int8 model has no int8 conv/fc layers")
    result.seconds = time.monotonic() - started
    return result


def _check_same_sizes(ref: Outputs, test: Outputs, blobs: list[str], fp32_param: str | os.PathLike,
                      int8_param: str | os.PathLike) -> None:
    """int8 keeps every blob's size, so a size that differs means --int8-param is another model that
    happens to share blob names (MTCNN PNet vs RNet): one line here, not a ValueError from the metrics."""
    for name in blobs:
        if np.asarray(ref[name]).size != np.asarray(test[name]).size:
            raise DeployerError(f"{int8_param}: blob {name!r} has shape {list(np.shape(test[name]))} where "
                                f"{Path(fp32_param).name} has {list(np.shape(ref[name]))}",
                                hint=f"is it the int8 version of {Path(fp32_param).name}? quantize that model")


def _blob_names(param: str | os.PathLike) -> set[str]:
    from deployer.ncnn.param import read_param

    return set(read_param(Path(param)).blob_names)
