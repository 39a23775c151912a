"""Automatic mixed precision: keep the fewest layers fp32 that make the accuracy gate hold.

Cost is what makes this usable: one candidate = build the int8 model, load it in ncnn, run the
held-out inputs (int8 MobileNetV2 on x86 is ~0.1 s per input). Trying subsets is out of the
question, so we rank once on a tiny probe and then search greedily on all held-out inputs:

1. Sensitivity (N candidates on a 4-input probe): for every int8 layer L, quantize everything
   except L and measure the output error (1 - cosine, averaged over outputs and inputs); the
   benefit of keeping L fp32 is the drop against the all-int8 model. (A cheaper screen that ranked
   layers by the relative error each adds to its own output was tried and rejected: on
   MobileNetV2 it ranked the projection convs first and missed the first depthwise conv, which
   is by far the most sensitive layer at the network's output.)
2. Greedy: try layers fp32 in order of benefit, re-checking the gates on all held-out inputs;
   a layer is kept only if it lowers the error (single-layer benefits do not simply add up),
   until the gates hold, the budget (`max_fp32_layers`) is spent or 2x budget layers were tried.
3. Prune: drop any chosen layer whose removal still passes.
If the budget cannot buy the gate, the all-int8 model is returned (extra fp32 layers that do not
meet the gate are pure cost) and the report shows what was tried.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deployer.check.crosscheck import Outputs, Sample, compare_outputs
from deployer.check.gates import Gate, GateResult, evaluate_gates
from deployer.check.metrics import OutputSummary
from deployer.check.net import NcnnNet

Progress = Callable[[str, int, int], None]     # (phase, done, total)


def output_error(summaries: dict[str, OutputSummary]) -> float:
    """One number to rank candidates by: mean (1 - cosine) over outputs. Lower is better."""
    return float(np.mean([1.0 - s.cosine for s in summaries.values()]))


@dataclass
class Evaluation:
    exclude: frozenset[str]
    outputs: dict[str, OutputSummary]
    gates: list[GateResult]
    int8_layers: list[str]

    @property
    def error(self) -> float:
        return output_error(self.outputs)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


class Evaluator:
    """Builds int8 candidates from one fp32 model + table and scores them on held-out inputs.

    The fp32 reference outputs are computed once; every candidate is written to a private temp
    folder (ncnn's load_model_mem may keep pointers into a Python buffer, files are safe).
    """

    def __init__(self, model: Any, samples: list[Sample], reference: list[Outputs], gates: list[Gate],
                 *, threads: int = 2, float_storage: str = "fp16") -> None:
        self.model = model
        self.samples = samples
        self.reference = reference
        self.gates = gates
        self.threads = threads
        self.float_storage = float_storage
        self.outputs = list(reference[0]) if reference else []
        self._tmp = tempfile.TemporaryDirectory(prefix="deployer-eval-")
        self.count = 0

    def close(self) -> None:
        self._tmp.cleanup()

    def build(self, table: Any, exclude: frozenset[str] | set[str]) -> tuple[Any, Any]:
        from deployer.quant.int8 import quantize_model

        return quantize_model(self.model, table, exclude=frozenset(exclude), float_storage=self.float_storage)

    def evaluate(self, table: Any, exclude: frozenset[str] | set[str] = frozenset(),
                 subset: int | None = None) -> Evaluation:
        qmodel, report = self.build(table, exclude)
        folder = Path(self._tmp.name)
        param, binf = folder / "candidate.param", folder / "candidate.bin"
        qmodel.save(param, binf)
        net = NcnnNet(param, binf, threads=self.threads)
        n = len(self.samples) if subset is None else min(subset, len(self.samples))
        tests = [net.run(s, self.outputs) for s in self.samples[:n]]
        del net
        self.count += 1
        summaries = compare_outputs(self.reference[:n], tests)
        gates = evaluate_gates(self.gates, summaries) if subset is None else []
        return Evaluation(frozenset(exclude), summaries, gates, list(report.quantized))


@dataclass
class MixedResult:
    keep_fp32: list[str]                 # chosen by the search (user's own keep_fp32 not included)
    passed: bool
    evaluation: Evaluation
    sensitivity: list[dict] = field(default_factory=list)   # [{layer, error_without, benefit}], best first
    candidates_evaluated: int = 0
    steps: list[dict] = field(default_factory=list)
    budget: int = 0


def default_budget(num_layers: int) -> int:
    """At most an eighth of the int8 layers (>= 1): beyond that int8 stops paying for itself."""
    return max(1, num_layers // 8)


def rank_layers(evaluator: Evaluator, table: Any, base_exclude: frozenset[str], layers: list[str],
                baseline_error: float, probe: int, progress: Progress | None = None) -> list[dict]:
    ranked = []
    for i, name in enumerate(layers):
        ev = evaluator.evaluate(table, base_exclude | {name}, subset=probe)
        ranked.append({"layer": name, "error_without": ev.error, "benefit": baseline_error - ev.error})
        if progress:
            progress("sensitivity", i + 1, len(layers))
    ranked.sort(key=lambda r: r["benefit"], reverse=True)
    return ranked


def search(evaluator: Evaluator, table: Any, base_exclude: frozenset[str], start: Evaluation,
           *, max_fp32_layers: int | None = None, probe: int = 4,
           progress: Progress | None = None) -> MixedResult:
    """Fewest extra fp32 layers (beyond `base_exclude`) for which every gate holds."""
    first = evaluator.count
    if start.passed or not evaluator.gates:
        return MixedResult([], start.passed, start, candidates_evaluated=0)
    layers = [n for n in start.int8_layers if n not in base_exclude]
    budget = default_budget(len(layers)) if max_fp32_layers is None else min(max_fp32_layers, len(layers))
    if budget == 0:
        return MixedResult([], False, start)

    probe_base = evaluator.evaluate(table, base_exclude, subset=probe)
    ranking = rank_layers(evaluator, table, base_exclude, layers, probe_base.error, probe, progress)

    chosen: list[str] = []
    best = start
    steps = []
    trials = ranking[: 2 * budget]
    for i, row in enumerate(trials):
        if row["benefit"] <= 0:
            break   # the rest do not help even on their own
        trial = chosen + [row["layer"]]
        ev = evaluator.evaluate(table, base_exclude | set(trial))
        steps.append({"keep_fp32": trial, "error": ev.error, "passed": ev.passed})
        if progress:
            progress("greedy", i + 1, len(trials))
        if ev.passed or ev.error < best.error:
            chosen, best = trial, ev     # a layer that makes things worse in company is skipped
        if best.passed or len(chosen) >= budget:
            break

    if best.passed and len(chosen) > 1:
        for name in list(reversed(chosen[:-1])):
            trial = [c for c in chosen if c != name]
            ev = evaluator.evaluate(table, base_exclude | set(trial))
            if ev.passed:
                chosen, best = trial, ev
                steps.append({"keep_fp32": list(chosen), "error": ev.error, "passed": True, "pruned": name})
    if not best.passed:
        # out of reach within the budget: extra fp32 layers that do not buy the gate are pure cost,
        # so hand back the all-int8 model and let the report show what was tried
        chosen, best = [], start
    return MixedResult(chosen, best.passed, best, ranking, evaluator.count - first, steps, budget)
