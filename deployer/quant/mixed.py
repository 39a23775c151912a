"""Automatic mixed precision: the fewest fp32 layers that make the accuracy gate hold, or why not.

Cost is what shapes the search: one candidate = build the int8 model, load it in ncnn, run the
eval inputs (~25 ms per MobileNetV2 input here). Trying subsets is out of the question, so:

1. Reachable? Keep every int8 layer float and check the gate. If even that fails (e.g. a gate
   tighter than fp16 weight storage allows), no choice of fp32 layers can pass: say so and stop.
2. Sensitivity, measured: for every int8 layer L, quantize everything except L and measure the
   output error (1 - cosine) on a probe of eval inputs spread over the whole set; the benefit of
   keeping L float is the drop against the all-int8 model. (A cheaper screen that ranked layers by
   the error each adds to its own output was tried and rejected: on MobileNetV2 it ranked the
   projection convs first and missed the first depthwise conv, the most sensitive layer at the
   network's output.)
3. Smallest passing prefix of that ranking, by bisection on all eval inputs (keeping more of the
   most sensitive layers float only helps, so "prefix k passes" is monotone in practice): about
   log2(layers) candidates instead of one per layer.
4. Prune: drop any chosen layer whose removal still passes (least sensitive first).
Cheap layers first (`max_extra_bytes`, `time_budget`): before 3, the layers are walked in order of
benefit per share of the tightest budget they take (.bin bytes they add as fp32 with fp16 storage;
board milliseconds from deployer.quant.speedcost), prefix by prefix, while the set fits every budget;
the first passing prefix is pruned (4) and used. On MobileNetV2 the layers that matter
most differ in cost by 2000x (the first depthwise conv adds 148 bytes, the last 1x1 conv 306 KB),
so the benefit order alone spends most of a byte budget on a handful of wide layers; and a top-1
agreement gate is not monotone in the prefix (one near-tie input flips either way), so a short
linear walk over cheap layers finds sets a bisection over the benefit order steps over.
If the set found fits the budget (`max_fp32_layers`) it is used. If not, the gate fails and the
report names the smallest set that would pass, with its size, so the user can raise the budget
knowingly. The files written then are the best set tried within the byte budget when it scores above
all-int8 (the user has accepted that many bytes; on MobileNetV2 five small early layers, 2.7 KB, take
cosine 0.9918 -> 0.9963 and top-1 agreement 0.950 -> 0.958), else the all-int8 model (without a byte
budget nothing was tried within it: fp32 layers that do not buy the gate are then pure cost).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from deployer.check.crosscheck import Outputs, Sample, compare_outputs
from deployer.check.gates import Gate, GateResult, evaluate_gates
from deployer.check.metrics import OutputSummary
from deployer.check.net import NcnnNet
from deployer.quant.choice import Score, score

Progress = Callable[[str, int, int], None]     # (phase, done, total)
PROBE_INPUTS = 24                               # eval inputs used to rank layers by sensitivity
PRUNE_LIMIT = 24                                # prune sets up to this size (one candidate per layer)


def output_error(summaries: dict[str, OutputSummary]) -> float:
    """Mean (1 - cosine) over outputs: a continuous error to rank layers by. Lower is better."""
    return float(np.mean([1.0 - s.cosine for s in summaries.values()]))


@dataclass
class Evaluation:
    exclude: frozenset[str]
    outputs: dict[str, OutputSummary]
    gates: list[GateResult]
    int8_layers: list[str]
    task: dict | None = None          # task metrics (deployer.check.tasks) when the profile declares one
    parts: Any = None                 # their per-input pieces (deployer.check.tasks.TaskParts), for resampling

    @property
    def error(self) -> float:
        return output_error(self.outputs)

    @property
    def rank(self) -> Score:
        """The full Score (every value, for choices that break near-ties on the next one)."""
        return score(self.outputs, self.task)

    @property
    def score(self) -> float:
        """The Score's deciding value (task metric when the task has one), as one number."""
        return self.rank.value

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n): a probe that sees every part of an ordered eval set
    (e.g. every photo of a set listed photo by photo), not just its first entries."""
    if k >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


@dataclass
class Candidate:
    """What one int8 candidate is converted from (Evaluator.candidate)."""

    model: Any                                   # fp32 NcnnModel
    table: Any                                   # the calibration table (shifted scales, if any)
    pad_codes: dict[str, float] = field(default_factory=dict)    # int8 pad codes (deployer.quant.zeroshift)
    offsets: dict[str, float] = field(default_factory=dict)      # consumer -> shift c


class Evaluator:
    """Builds int8 candidates from one fp32 model + table and scores them on the eval inputs.

    The fp32 reference outputs are computed once; every candidate is written to a private temp
    folder (ncnn's load_model_mem may keep pointers into a Python buffer, files are safe).
    """

    def __init__(self, model: Any, samples: list[Sample], reference: list[Outputs], gates: list[Gate],
                 *, threads: int = 2, float_storage: str = "fp16", groups: list[str] | None = None) -> None:
        self.model = model
        self.groups = groups         # eval.group key per sample: agreement intervals count groups
        self.samples = samples
        self.reference = reference
        self.gates = gates
        self.threads = threads
        self.float_storage = float_storage
        self.outputs = list(reference[0]) if reference else []
        self.task: Any = None        # deployer.check.tasks.TaskSpec: task metrics (mAP, mask IoU) for the gates
        self.prepare: Any = None     # exclude -> fp32 model to convert (deployer.quant.refine.Refinement.apply)
        self.shift_pairs: list[Any] = []   # deployer.quant.zeroshift pairs applied to every candidate
        self.shift_fraction = 0.5          # and their offset, as a share of each consumer's threshold
        self._tmp = tempfile.TemporaryDirectory(prefix="deployer-eval-")
        self.count = 0

    def close(self) -> None:
        self._tmp.cleanup()

    def candidate(self, table: Any, exclude: frozenset[str] | set[str]) -> Candidate:
        """The fp32 model, table and int8 pad codes one candidate is converted from: refined
        weights (`prepare`), then the activation shift (`shift_pairs`), when the pipeline kept them."""
        model = self.prepare(frozenset(exclude)) if self.prepare is not None else self.model
        if not self.shift_pairs:
            return Candidate(model, table)
        from deployer.quant import zeroshift

        model, table, pad_codes, offsets = zeroshift.apply(model, table, self.shift_pairs, frozenset(exclude),
                                                           self.shift_fraction)
        return Candidate(model, table, pad_codes, offsets)

    def build(self, table: Any, exclude: frozenset[str] | set[str]) -> tuple[Any, Any]:
        return self.convert(self.candidate(table, exclude), exclude)

    def convert(self, c: Candidate, exclude: frozenset[str] | set[str]) -> tuple[Any, Any]:
        """The int8 model (and ncnn2int8's report) of a candidate."""
        from deployer.quant.int8 import quantize_model

        return quantize_model(c.model, c.table, exclude=frozenset(exclude), float_storage=self.float_storage,
                              pad_codes=c.pad_codes)

    def bin_size(self, table: Any, exclude: frozenset[str] | set[str]) -> int:
        """Bytes of the .bin this candidate would write."""
        return len(self.build(table, exclude)[0].to_bytes()[1])

    def evaluate(self, table: Any, exclude: frozenset[str] | set[str] = frozenset(),
                 subset: int | Sequence[int] | None = None) -> Evaluation:
        """All eval inputs (gates evaluated), or a subset (first n, or these indices; no gates)."""
        qmodel, report = self.build(table, exclude)
        folder = Path(self._tmp.name)
        param, binf = folder / "candidate.param", folder / "candidate.bin"
        qmodel.save(param, binf)
        net = NcnnNet(param, binf, threads=self.threads, isolate=False)   # built by us from a checked model
        if subset is None:
            idx = list(range(len(self.samples)))
        elif isinstance(subset, int):
            idx = list(range(min(subset, len(self.samples))))
        else:
            idx = list(subset)
        tests = [net.run(self.samples[i], self.outputs) for i in idx]
        del net
        self.count += 1
        groups = None if self.groups is None else [self.groups[i] for i in idx]
        summaries = compare_outputs([self.reference[i] for i in idx], tests, groups)
        task = parts = None
        if self.task is not None and subset is None:
            from deployer.check.tasks import INTERVAL_GATES, evaluate_task, with_intervals

            task, parts = evaluate_task(self.task, self.reference, tests, groups=self.groups)
            if any(g.metric in INTERVAL_GATES for g in self.gates):     # ~1000 mAP recomputations: only when asked
                task = with_intervals(task, parts, self.groups)
        gates = evaluate_gates(self.gates, summaries, task) if subset is None else []
        return Evaluation(frozenset(exclude), summaries, gates, list(report.quantized), task, parts)


@dataclass
class MixedResult:
    keep_fp32: list[str]                 # chosen by the search (user's own keep_fp32 not included)
    passed: bool
    evaluation: Evaluation
    sensitivity: list[dict] = field(default_factory=list)   # [{layer, error_without, benefit}], best first
    candidates_evaluated: int = 0
    steps: list[dict] = field(default_factory=list)
    budget: int = 0
    reachable: bool | None = None        # does keeping every int8 layer float meet the gate?
    smallest_passing: list[str] | None = None   # the set found, also when it exceeds the budget
    reason: str = ""
    extra_bytes: dict[str, int] = field(default_factory=dict)   # layer -> .bin bytes it adds as fp32
    best_in_budget: dict | None = None   # the best-scoring cheap prefix tried (keep_fp32, score, extra bytes)


def default_budget(num_layers: int) -> int:
    """At most an eighth of the int8 layers (>= 1): beyond that int8 stops paying for itself."""
    return max(1, num_layers // 8)


def rank_layers(evaluator: Evaluator, table: Any, base_exclude: frozenset[str], layers: list[str],
                baseline_error: float, probe: int | Sequence[int], progress: Progress | None = None) -> list[dict]:
    """Every layer's measured benefit of staying float on the probe inputs, most sensitive first."""
    ranked = []
    for i, name in enumerate(layers):
        ev = evaluator.evaluate(table, base_exclude | {name}, subset=probe)
        ranked.append({"layer": name, "error_without": ev.error, "benefit": baseline_error - ev.error})
        if progress:
            progress("sensitivity", i + 1, len(layers))
    ranked.sort(key=lambda r: r["benefit"], reverse=True)
    return ranked


def layer_bytes(evaluator: Evaluator, table: Any, base_exclude: frozenset[str], layers: list[str]) -> dict[str, int]:
    """.bin bytes each layer adds when kept float (alone), measured by building the candidate."""
    base = evaluator.bin_size(table, base_exclude)
    return {name: evaluator.bin_size(table, base_exclude | {name}) - base for name in layers}


@dataclass(frozen=True)
class Budget:
    """A cap on what the float layers may add: .bin bytes, or board milliseconds (deployer.quant.speedcost).
    `cost` is what each layer adds when kept float alone; a layer without a cost cannot be priced and
    is not used under this budget. A cost may be negative (a layer whose int8 kernel is slower)."""

    unit: str                       # "bytes" | "ms"
    cost: dict[str, float]
    limit: float

    def of(self, keep: Sequence[str]) -> float:
        return float(sum(self.cost.get(k, float("inf")) for k in keep))

    def fits(self, keep: Sequence[str]) -> bool:
        return self.of(keep) <= self.limit

    def share(self, layer: str) -> float:
        """The part of the budget one layer takes (what the cheap-first order divides benefit by)."""
        c = self.cost.get(layer, float("inf"))
        return max(c / self.limit, 1e-9) if self.limit > 0 else (float("inf") if c > 0 else 1e-9)

    def text(self, keep: Sequence[str]) -> str:
        used = sum(self.cost[k] for k in keep if k in self.cost)
        unpriced = [k for k in keep if k not in self.cost]
        text = f"{used:+.3f} ms" if self.unit == "ms" else f"{int(used)} extra bytes"
        if unpriced:
            text += f" plus {len(unpriced)} layer(s) with no {self.unit} cost ({', '.join(unpriced)})"
        return text


def by_benefit_per_cost(ranking: list[dict], budgets: Sequence[Budget]) -> list[str]:
    """Layers that help, most benefit per share of the tightest budget first (layers that do not help,
    or that no budget can price, are left out)."""
    useful = [r for r in ranking if r["benefit"] > 0]
    share = {r["layer"]: max(b.share(r["layer"]) for b in budgets) for r in useful}
    return [r["layer"] for r in sorted(useful, key=lambda r: -r["benefit"] / share[r["layer"]])
            if share[r["layer"]] != float("inf")]


def _prune(evaluator: Evaluator, table: Any, base_exclude: frozenset[str], chosen: list[str], best: Evaluation,
           steps: list[dict], progress: Progress | None,
           budgets: Sequence[Budget] = ()) -> tuple[list[str], Evaluation]:
    """Drop every chosen layer whose removal still passes, the last chosen (least useful) first.
    A drop that would break a budget is not tried (a layer with a negative time cost pays for others)."""
    todo = list(reversed(chosen[:-1]))
    for i, name in enumerate(todo):
        trial = [c for c in chosen if c != name]
        if all(b.fits(trial) for b in budgets):
            ev = evaluator.evaluate(table, base_exclude | set(trial))
            _step(steps, trial, ev, what="prune", dropped=name, **_costs(budgets, trial))
            if ev.passed:
                chosen, best = trial, ev
        if progress:
            progress("prune", i + 1, len(todo))
    return chosen, best


def _in_budget(best: tuple[list[str], Evaluation] | None, budgets: Sequence[Budget]) -> dict | None:
    """The report's view of the best cheap prefix: its layers, score, error and what they add."""
    if best is None:
        return None
    keep, ev = best
    return {"keep_fp32": list(keep), "score": ev.score, "error": ev.error, **_costs(budgets, keep)}


def _costs(budgets: Sequence[Budget], keep: Sequence[str]) -> dict[str, float]:
    """{"extra_bytes": ..., "extra_ms": ...}: what a set adds, per budget."""
    return {f"extra_{b.unit}": int(b.of(keep)) if b.unit == "bytes" else round(b.of(keep), 4) for b in budgets}


def _cost_text(budgets: Sequence[Budget], keep: Sequence[str]) -> str:
    return "".join(f", {b.text(keep)}" for b in budgets)


def _step(steps: list[dict], keep: list[str], ev: Evaluation, **extra: Any) -> None:
    steps.append({"fp32_layers": len(keep), "keep_fp32": list(keep), "error": ev.error,
                  "score": ev.score, "passed": ev.passed, **extra})


def search(evaluator: Evaluator, table: Any, base_exclude: frozenset[str], start: Evaluation,
           *, max_fp32_layers: int | None = None, max_extra_bytes: int | None = None,
           time_budget: tuple[dict[str, float], float] | None = None, probe: int = PROBE_INPUTS,
           progress: Progress | None = None) -> MixedResult:
    """Fewest extra fp32 layers (beyond `base_exclude`) for which every gate holds.

    `max_extra_bytes`: a byte budget (bytes the fp32 layers add to the all-int8 .bin); `time_budget`:
    (board ms each layer adds as float, the most the set may add). With either, the cheap layers
    are tried first (module docstring) and a set over a budget is not used."""
    first = evaluator.count
    if start.passed or not evaluator.gates:
        return MixedResult([], start.passed, start, reason="the all-int8 model meets the gate")
    layers = [n for n in start.int8_layers if n not in base_exclude]
    budget = default_budget(len(layers)) if max_fp32_layers is None else min(max_fp32_layers, len(layers))
    steps: list[dict] = []

    everything = evaluator.evaluate(table, base_exclude | set(layers))
    _step(steps, layers, everything, what="every layer float")
    if not everything.passed:
        return MixedResult([], False, start, [], evaluator.count - first, steps, budget, reachable=False,
                           reason="even with every layer float the gate fails: no choice of fp32 layers "
                                  "can meet it (fp16 weight storage, or a gate tighter than the model allows)")

    probe_idx = spread(len(evaluator.samples), probe)
    probe_base = evaluator.evaluate(table, base_exclude, subset=probe_idx)
    ranking = rank_layers(evaluator, table, base_exclude, layers, probe_base.error, probe_idx, progress)
    order = [r["layer"] for r in ranking]

    extra: dict[str, int] = {}
    budgets: list[Budget] = []
    if max_extra_bytes is not None:
        extra = layer_bytes(evaluator, table, base_exclude, layers)
        budgets.append(Budget("bytes", {k: float(v) for k, v in extra.items()}, float(max_extra_bytes)))
    if time_budget is not None:
        budgets.append(Budget("ms", dict(time_budget[0]), float(time_budget[1])))
    limits = ", ".join(f"{b.limit:g} {b.unit}" for b in budgets)
    best_cheap: tuple[list[str], Evaluation] | None = None      # the best-scoring cheap prefix tried
    if budgets:
        keep: list[str] = []
        for name in by_benefit_per_cost(ranking, budgets):
            if len(keep) >= budget:
                break
            if not all(b.fits(keep + [name]) for b in budgets):
                continue
            keep.append(name)
            ev = evaluator.evaluate(table, base_exclude | set(keep))
            _step(steps, keep, ev, what="cheap prefix", **_costs(budgets, keep))
            if best_cheap is None or ev.score > best_cheap[1].score:
                best_cheap = (list(keep), ev)
            if ev.passed:
                chosen, best = _prune(evaluator, table, base_exclude, keep, ev, steps, progress, budgets)
                return MixedResult(chosen, True, best, ranking, evaluator.count - first, steps, budget,
                                   reachable=True, smallest_passing=chosen, extra_bytes=extra,
                                   best_in_budget=_in_budget(best_cheap, budgets),
                                   reason=f"{len(chosen)} fp32 layer(s){_cost_text(budgets, chosen)} meet the gate "
                                          f"(budget {budget} layers, {limits})")

    # smallest passing prefix of the ranking: prefix 0 (all int8) fails, prefix len(order) passes
    lo, hi, best = 0, len(order), everything
    total = max(1, int(np.ceil(np.log2(max(2, len(order))))))
    done = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ev = evaluator.evaluate(table, base_exclude | set(order[:mid]))
        _step(steps, order[:mid], ev, what="prefix")
        lo, hi, best = (lo, mid, ev) if ev.passed else (mid, hi, best)
        done += 1
        if progress:
            progress("bisect", min(done, total), total)
    chosen = order[:hi]

    if len(chosen) <= PRUNE_LIMIT:
        chosen, best = _prune(evaluator, table, base_exclude, chosen, best, steps, progress)

    found = list(chosen)
    over = [b for b in budgets if not b.fits(found)]
    if not over and len(found) <= budget:
        return MixedResult(found, True, best, ranking, evaluator.count - first, steps, budget,
                           reachable=True, smallest_passing=found, extra_bytes=extra,
                           best_in_budget=_in_budget(best_cheap, budgets),
                           reason=f"{len(found)} fp32 layer(s){_cost_text(budgets, found)} meet the gate "
                                  f"(budget {budget}{''.join(f', {b.limit:g} {b.unit}' for b in budgets)})")
    if over:
        why = (f"the smallest fp32 set found that meets the gate has {len(found)} layers and adds "
               + " and ".join(f"{b.text(found).lstrip('+')}" for b in over)
               + ", over the budget of " + " and ".join(f"{b.limit:g} {b.unit}" for b in over))
    else:
        why = (f"the smallest fp32 set found that meets the gate has {len(found)} layers, over the budget of "
               f"{budget} (raise quantize.max_fp32_layers to {len(found)} to use it)")
    # the gate fails either way: write the best set tried within the budget when it beats all-int8,
    # so the files on disk are the most accurate ones the budget allows, not the least
    in_budget = _in_budget(best_cheap, budgets)
    if best_cheap is not None and in_budget is not None and best_cheap[1].score > start.score:
        keep, ev = best_cheap
        return MixedResult(list(keep), False, ev, ranking, evaluator.count - first, steps, budget,
                           reachable=True, smallest_passing=found, extra_bytes=extra, best_in_budget=in_budget,
                           reason=f"{why}; kept the best set within the budget instead: {len(keep)} fp32 layer(s)"
                                  f"{_cost_text(budgets, keep)}, score {ev.score:.4f} vs {start.score:.4f} all-int8")
    return MixedResult([], False, start, ranking, evaluator.count - first, steps, budget, reachable=True,
                       smallest_passing=found, extra_bytes=extra, best_in_budget=in_budget,
                       reason=f"{why}; kept the all-int8 model")


def layer_macs(param: Path, bin_: Path, graph: Any, sample: Sample, layers: Sequence[str],
               threads: int = 2) -> dict[str, int]:
    """Multiply-accumulates per conv/dw/fc layer for one input: output elements x (weights per
    output channel). The fp32 net is run once to learn every output shape."""
    by_name = {lay.name: lay for lay in graph.layers}
    tops = {n: by_name[n].tops[0] for n in layers if n in by_name and by_name[n].tops}
    net = NcnnNet(param, bin_, threads=threads, intermediates=True)
    got = net.run(sample, list(tops.values()))
    del net
    macs = {}
    for name, top in tops.items():
        layer = by_name[name]
        num_output = max(1, int(layer.get(0, 1)))
        macs[name] = int(got[top].size) * (int(layer.get(6, 0)) // num_output)
    return macs
