"""Accuracy gates: `top1_agreement>=0.99`, `cosine@out0>=0.98`, `max_abs<0.5`.

A gate names a metric from deployer.check.metrics, optionally one output (`@blob`), a comparison
and a number. Without `@blob` it must hold for every output where the metric exists (top-k only
exists for classifier-like outputs), so one bad head cannot hide behind a good one.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

from deployer.check.metrics import METRIC_NAMES, OutputSummary
from deployer.check.tasks import TASK_METRICS
from deployer.errors import DeployerError

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}
_GATE_RE = re.compile(r"^\s*([A-Za-z0-9_]+)(?:@(\S+?))?\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+|inf)\s*$")
# The values each bounded metric takes (metrics.py, tasks/): a gate outside them can never hold or
# never fail, so it is a typo (cosine>=2, top1_agreement>=99 for 0.99), not a gate. psnr is
# unbounded (negative when the error outgrows the peak, +inf when exact).
_RANGES: dict[str, tuple[float, float]] = {
    "cosine": (-1.0, 1.0), "min_cosine": (-1.0, 1.0), "max_abs": (0.0, math.inf),
    **{m: (0.0, 1.0) for m in ("top1_agreement", "top5_agreement", "top1_agreement_clear", "top1_agreement_low",
                               "map50", "map50_95", "mask_iou", "mask_iou_min", "map50_low", "map50_95_low",
                               "mask_iou_low")},
}


def _pointless(op: str, t: float, lo: float, hi: float) -> str | None:
    """Why `value OP t` is decided for every value in [lo, hi]; None for a real gate."""
    never = {">=": t > hi, ">": t >= hi, "<=": t < lo, "<": t <= lo, "==": not lo <= t <= hi}[op]
    always = {">=": t <= lo, ">": t < lo, "<=": t >= hi, "<": t > hi, "==": False}[op]
    return "can never hold" if never else "can never fail" if always else None


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float
    output: str | None = None

    @property
    def text(self) -> str:
        where = f"@{self.output}" if self.output else ""
        # .10g, not :g: a threshold like 0.99999999 must not be reported as 1
        return f"{self.metric}{where}{self.op}{self.threshold:.10g}"

    def holds(self, value: float) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return _OPS[self.op](value, self.threshold)


@dataclass
class GateResult:
    gate: str
    passed: bool
    observed: dict[str, float | None]   # output name -> metric value
    worst_output: str | None
    # 95 % intervals of the observed values, for metrics that carry one (agreement rates, mAP, mask
    # IoU); `settled`: every interval lies on one side of the threshold, so the verdict is not a coin
    # flip of which photos were in the eval set. None when the metric has no interval.
    intervals: dict[str, list[float]] | None = None
    settled: bool | None = None


# output metric -> its interval attribute on OutputSummary
_INTERVAL_OF = {"top1_agreement": "top1_agreement_ci", "top5_agreement": "top5_agreement_ci",
                "top1_agreement_clear": "top1_agreement_clear_ci"}


def _with_intervals(res: GateResult, gate: Gate, intervals: dict[str, Any]) -> GateResult:
    """`res` with the observed values' intervals and whether each lies wholly on one side of the threshold."""
    found = {k: [float(v[0]), float(v[1])] for k, v in intervals.items() if v is not None}
    if found and gate.op != "==":
        res.intervals = {k: [round(lo, 4), round(hi, 4)] for k, (lo, hi) in found.items()}
        res.settled = all(gate.holds(lo) == gate.holds(hi) for lo, hi in found.values())
    return res


def parse_gate(text: str, where: str = "--gate") -> Gate:
    """`where` names the flag or profile field so a typo points at its source."""
    m = _GATE_RE.match(str(text))
    if not m:
        raise DeployerError(
            f"{where}: cannot parse gate {text!r}",
            hint="write METRIC[@OUTPUT]OP NUMBER, e.g. 'top1_agreement>=0.99' or 'cosine@out0>=0.98'",
        )
    metric, output, op, number = m.groups()
    known = METRIC_NAMES + tuple(TASK_METRICS)
    if metric not in known:
        close = difflib.get_close_matches(metric, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known metrics: {', '.join(known)}"
        raise DeployerError(f"{where}: unknown gate metric {metric!r} in {text!r}", hint=hint)
    try:
        threshold = float(number)
    except ValueError:      # the pattern admits '.', 'e', '1-2': one line, not a traceback
        raise DeployerError(f"{where}: {number!r} in {text!r} is not a number",
                            hint="write METRIC[@OUTPUT]OP NUMBER, e.g. 'top1_agreement>=0.99'") from None
    if metric in _RANGES:
        lo, hi = _RANGES[metric]
        why = _pointless(op, threshold, lo, hi)
        if why:
            raise DeployerError(f"{where}: gate {text!r} {why}: {metric} is between {lo:g} and {hi:g}")
    return Gate(metric=metric, op=op, threshold=threshold, output=output)


def parse_gates(texts: list[str], where: str = "--gate") -> list[Gate]:
    return [parse_gate(t, where) for t in texts]


def evaluate_gate(gate: Gate, outputs: dict[str, OutputSummary], task: dict | None = None) -> GateResult:
    if gate.metric in TASK_METRICS:          # mAP, mask IoU...: one number from the profile's task
        if not task or gate.metric not in task:
            raise DeployerError(f"gate {gate.text}: {gate.metric} is a {TASK_METRICS[gate.metric]} metric",
                                hint=f"declare `task: {TASK_METRICS[gate.metric]}` in the profile")
        value = task[gate.metric]
        ok = value is not None and gate.holds(value)
        res = GateResult(gate=gate.text, passed=ok, observed={"task": value}, worst_output=None if ok else "task")
        return _with_intervals(res, gate, {"task": (task.get("intervals") or {}).get(gate.metric)})
    if gate.output is not None:
        if gate.output not in outputs:
            raise DeployerError(
                f"gate {gate.text}: the model has no output {gate.output!r}",
                hint=f"outputs: {', '.join(outputs)}",
            )
        candidates = {gate.output: outputs[gate.output]}
    else:
        candidates = outputs
    observed = {name: s.value(gate.metric) for name, s in candidates.items() if s.value(gate.metric) is not None}
    if not observed and gate.metric == "top1_agreement_clear" and any(s.top1_near_ties for s in candidates.values()):
        raise DeployerError(f"gate {gate.text}: fp32 decides none of the eval inputs clearly (all are near-ties)",
                            hint="use more or other eval inputs, or gate on top1_agreement")
    if not observed:
        raise DeployerError(
            f"gate {gate.text}: no output has metric {gate.metric!r} (top-k needs a classifier-like output)",
            hint=f"outputs: {', '.join(outputs)}; pick one with {gate.metric}@OUTPUT or use cosine/psnr",
        )
    failing = [name for name, v in observed.items() if not gate.holds(v)]
    worst = failing[0] if failing else None
    res = GateResult(gate=gate.text, passed=not failing, observed=observed, worst_output=worst)
    attr = _INTERVAL_OF.get(gate.metric)
    return _with_intervals(res, gate, {name: getattr(candidates[name], attr) for name in observed} if attr else {})


def evaluate_gates(gates: list[Gate], outputs: dict[str, OutputSummary], task: dict | None = None) -> list[GateResult]:
    return [evaluate_gate(g, outputs, task) for g in gates]
