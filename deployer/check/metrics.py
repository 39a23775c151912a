"""How far an int8 output is from its fp32 reference, as a few numbers people already know.

Every function takes the fp32 reference first and the int8 result second; arrays of any shape are
flattened. The aggregates (`summarize`) are what gates are written against, so their definitions
live here and nowhere else:

- cosine: mean over inputs of the cosine similarity of the flattened outputs
  (1.0 when both are all-zero, 0.0 when exactly one is).
- psnr: mean over inputs of 10*log10(peak^2 / mse) in dB, peak = max |fp32| of that input;
  inputs whose outputs are identical (infinite PSNR) are left out of the mean; psnr is None
  (JSON null) when every input matched exactly, and a gate on it then passes.
- max_abs: the largest |fp32 - int8| over all inputs and elements.
- top1_agreement: fraction of inputs where int8's argmax equals fp32's argmax.
- top5_agreement: fraction of inputs where fp32's argmax is among int8's 5 largest values.
- top1_agreement_clear: the same rate over the inputs fp32 itself decides clearly (its best class
  leads the second by at least NEAR_TIE_MARGIN in softmax probability); `top1_near_ties` counts the
  others. On a near-tie any change of the output, even fp16 storage of one layer, can swap the two
  classes: MobileNetV2's 120-view eval set has 4 inputs whose two best classes differ by less than
  0.01, and quantizing only the final classifier (output cosine 0.9999) already flips one of them.
  The plain rate stays the headline and the default gate; this one says how many of its misses are
  coin flips, and can be gated on (`top1_agreement_clear>=0.97`) when that is the question.
Top-k metrics exist only for classifier-like outputs (one non-trivial dimension, >= 2 values;
top-5 needs >= 5). Agreement rates come with their 95 % Wilson score interval
(`top1_agreement_ci`): 10 of 11 agreeing inputs says "somewhere between 0.62 and 0.98", and a
report that hides this invites decisions taken on noise. When the inputs come in groups (the
profile's `eval.group`: six views of one photo), the interval counts the groups' evidence, not the
views' (grouped_interval): 6 misses spread over 4 of 20 photos are less certain than 6 of 120
independent photos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

HIGHER_IS_BETTER = {"cosine": True, "psnr": True, "max_abs": False, "top1_agreement": True, "top5_agreement": True,
                    "min_cosine": True, "top1_agreement_clear": True}
NEAR_TIE_MARGIN = 0.05    # softmax probability by which fp32's best class must lead its second to count as clear
METRIC_NAMES = tuple(HIGHER_IS_BETTER)


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def _check_same_size(ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, t = _flat(ref), _flat(test)
    if r.size != t.size:
        raise ValueError(f"outputs differ in size: fp32 has {r.size} values, int8 has {t.size}")
    return r, t


def l2(x: np.ndarray) -> float:
    """Euclidean norm without BLAS: OpenBLAS threads spinning next to ncnn's OpenMP threads made
    a 60-input RNet check take 24 s instead of 0.2 s on a busy 2-core machine."""
    return float(np.sqrt(np.sum(x * x)))


def cosine(ref: np.ndarray, test: np.ndarray) -> float:
    r, t = _check_same_size(ref, test)
    nr, nt = l2(r), l2(t)
    if nr == 0.0 and nt == 0.0:
        return 1.0
    if nr == 0.0 or nt == 0.0:
        return 0.0
    return float(np.clip(np.sum(r * t) / (nr * nt), -1.0, 1.0))


def psnr(ref: np.ndarray, test: np.ndarray) -> float:
    """Peak is the fp32 output's own max |value|, so logits and probabilities are both judged fairly."""
    r, t = _check_same_size(ref, test)
    mse = float(np.mean((r - t) ** 2)) if r.size else 0.0
    if mse == 0.0:
        return math.inf
    peak = float(np.max(np.abs(r))) if r.size else 0.0
    if peak == 0.0:
        return -math.inf
    return 10.0 * math.log10(peak * peak / mse)


def max_abs_error(ref: np.ndarray, test: np.ndarray) -> float:
    r, t = _check_same_size(ref, test)
    return float(np.max(np.abs(r - t))) if r.size else 0.0


WILSON_Z = 1.959963984540054     # two-sided 95 %


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial rate: unlike p +- z*sqrt(p(1-p)/n) it stays inside
    [0, 1] and does not collapse to a point at 0/n or n/n, which is where small eval sets live."""
    if n <= 0:
        return (0.0, 1.0)
    return _wilson(successes / n, n, z)


def grouped_interval(outcomes: Sequence[bool], groups: Sequence[str] | None = None,
                     z: float = WILSON_Z) -> tuple[float, float]:
    """95 % interval for a rate whose inputs come in groups (views or crops of one photo).

    Views of one photo tend to agree or miss together, so counting them as independent draws claims
    more certainty than the photos give. The between-group spread of the outcomes gives the design
    effect (cluster-robust variance over binomial variance); the Wilson interval is then taken at
    the effective size n / deff. It is never narrower than the plain Wilson interval (deff >= 1),
    equals it when every input is its own group, and approaches Wilson over the groups when each
    group is all-agree or all-miss. With no miss at all there is no spread to measure: each group
    then counts once (the conservative end)."""
    n = len(outcomes)
    hits = sum(bool(o) for o in outcomes)
    if groups is None or n == 0:
        return wilson_interval(hits, n, z)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group keys for {n} outcomes")
    per: dict[str, list[int]] = {}
    for g, o in zip(groups, outcomes):
        per.setdefault(g, []).append(int(bool(o)))
    k = len(per)
    if k == n:
        return wilson_interval(hits, n, z)
    p = hits / n
    if 0 < p < 1 and k > 1:
        spread = sum((sum(v) - p * len(v)) ** 2 for v in per.values())
        cluster_var = k / (k - 1) * spread / (n * n)
        deff = max(1.0, cluster_var / (p * (1 - p) / n))
    else:
        deff = n / k
    return _wilson(p, max(1.0, n / deff), z)


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def is_classifier_like(a: np.ndarray) -> bool:
    """One non-trivial axis with at least two values: logits or class probabilities."""
    shape = np.shape(a)
    return sum(1 for d in shape if d > 1) == 1 and int(np.prod(shape)) >= 2


def top1_agrees(ref: np.ndarray, test: np.ndarray) -> bool:
    r, t = _check_same_size(ref, test)
    return int(np.argmax(r)) == int(np.argmax(t))


def top1_margin(ref: np.ndarray) -> float:
    """How clearly fp32 picks its class: best minus second-best softmax probability. An output that
    already is a probability vector (non-negative, sums to 1) is taken as it is, logits go through
    softmax, so the margin means the same for both."""
    r = _flat(ref)
    if r.size < 2:
        return 1.0
    if np.all(r >= 0) and abs(float(np.sum(r)) - 1.0) < 1e-3:
        p = r
    else:
        e = np.exp(r - np.max(r))
        p = e / np.sum(e)
    second, first = np.partition(p, -2)[-2:]
    return float(first - second)


def top1_disagreements(refs: list[np.ndarray], tests: list[np.ndarray]) -> list[dict]:
    """Every input whose int8 argmax differs from fp32's: {index, fp32_class, int8_class, fp32_margin,
    near_tie}, clear flips first (largest fp32 margin first): the inputs worth looking at."""
    rows = []
    for i, (r, t) in enumerate(zip(refs, tests)):
        a, b = int(np.argmax(_flat(r))), int(np.argmax(_flat(t)))
        if a != b:
            m = top1_margin(r)
            rows.append({"index": i, "fp32_class": a, "int8_class": b, "fp32_margin": round(m, 4),
                         "near_tie": m < NEAR_TIE_MARGIN})
    return sorted(rows, key=lambda d: -d["fp32_margin"])


def topk_contains(ref: np.ndarray, test: np.ndarray, k: int) -> bool:
    """fp32's top-1 class is among int8's k best (ties broken by index, like argsort)."""
    r, t = _check_same_size(ref, test)
    best = int(np.argmax(r))
    order = np.argsort(-t, kind="stable")
    return best in order[:k].tolist()


@dataclass
class OutputSummary:
    """Aggregates for one output blob over all compared inputs."""

    name: str
    count: int
    cosine: float
    min_cosine: float
    psnr: float | None          # None when every input matched exactly (infinite PSNR)
    max_abs: float
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    top1_agreement_ci: tuple[float, float] | None = None    # 95 % Wilson interval
    top5_agreement_ci: tuple[float, float] | None = None
    top1_agreement_clear: float | None = None                # over inputs fp32 decides clearly (None: none does)
    top1_agreement_clear_ci: tuple[float, float] | None = None
    top1_near_ties: int | None = None                        # inputs whose fp32 margin < NEAR_TIE_MARGIN
    groups: int | None = None                                # distinct eval groups the intervals count (None: ungrouped)
    per_input_cosine: list[float] = field(default_factory=list)
    per_input_top1: list[bool] = field(default_factory=list)    # int8 argmax == fp32 argmax, per input
    per_input_clear: list[bool] = field(default_factory=list)   # fp32 decides clearly (no near-tie), per input

    def value(self, metric: str) -> float | None:
        if metric == "psnr" and self.psnr is None:
            return math.inf
        return getattr(self, metric)


def summary_dict(s: OutputSummary) -> dict:
    """The summary for reports: aggregates only (per-input lists stay in memory)."""
    from dataclasses import asdict

    d = asdict(s)
    d.pop("per_input_cosine", None)
    d.pop("per_input_top1", None)
    d.pop("per_input_clear", None)
    for key in ("top1_agreement_ci", "top5_agreement_ci", "top1_agreement_clear_ci"):
        if d.get(key) is not None:
            d[key] = [round(v, 4) for v in d[key]]
    return d


def summarize(name: str, refs: list[np.ndarray], tests: list[np.ndarray],
              groups: Sequence[str] | None = None) -> OutputSummary:
    """Aggregate one output's per-input comparisons into the gate metrics. `groups` (one key per
    input, e.g. the photo a view was cut from) makes the agreement intervals count groups
    (grouped_interval); the rates themselves are per input either way."""
    if not refs or len(refs) != len(tests):
        raise ValueError(f"output {name}: need the same non-zero number of fp32 and int8 results")
    cos = [cosine(r, t) for r, t in zip(refs, tests)]
    psnrs = [psnr(r, t) for r, t in zip(refs, tests)]
    finite = [p for p in psnrs if math.isfinite(p)]
    if len(finite) == len(psnrs):
        mean_psnr: float | None = float(np.mean(finite))
    elif any(p == -math.inf for p in psnrs):
        mean_psnr = -math.inf
    elif finite:
        # exact matches would make the mean infinite; average the inputs that have an error
        mean_psnr = float(np.mean(finite))
    else:
        mean_psnr = None
    summary = OutputSummary(
        name=name,
        count=len(refs),
        cosine=float(np.mean(cos)),
        min_cosine=float(np.min(cos)),
        psnr=mean_psnr,
        max_abs=max(max_abs_error(r, t) for r, t in zip(refs, tests)),
        per_input_cosine=cos,
    )
    if is_classifier_like(refs[0]):
        agrees = [top1_agrees(r, t) for r, t in zip(refs, tests)]
        summary.per_input_top1 = agrees
        summary.top1_agreement = float(np.mean(agrees))
        summary.top1_agreement_ci = grouped_interval(agrees, groups)
        if groups is not None:
            summary.groups = len(set(groups))
        decided = [top1_margin(r) >= NEAR_TIE_MARGIN for r in refs]
        summary.per_input_clear = decided
        clear = [a for a, d in zip(agrees, decided) if d]
        summary.top1_near_ties = len(agrees) - len(clear)
        if clear:
            summary.top1_agreement_clear = float(np.mean(clear))
            summary.top1_agreement_clear_ci = grouped_interval(
                clear, None if groups is None else [g for g, d in zip(groups, decided) if d])
        if int(np.prod(np.shape(refs[0]))) >= 5:
            in5 = [topk_contains(r, t, 5) for r, t in zip(refs, tests)]
            summary.top5_agreement = float(np.mean(in5))
            summary.top5_agreement_ci = grouped_interval(in5, groups)
    return summary
