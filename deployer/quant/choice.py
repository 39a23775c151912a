"""How `quantize` chooses between calibration methods, and how settled that choice is.

The choice is made on a Score (the task metric when the profile has one, else mean cosine +
top-1 agreement on clearly decided inputs), value by value, near-ties to the smaller .bin. A score
that is a mean over every eval input does not flip on one image the way "passes the gate" does,
but two methods can still be closer than the eval set can tell apart. `choice_stability` says
how close, without running any model again: every score is a sum of per-input pieces (cosines,
agreements, mask pixel counts, box matches), so it can be recomputed on resampled eval sets:

- leave one out: drop each photo (eval.group's group, else each input) in turn; does the choice
  hold? This is the issue's own test of a decision "one image cannot flip";
- bootstrap: draw the photos with replacement (a cluster bootstrap: views of one photo move
  together) and count how often each method would win.

A choice the eval set does not settle is reported with a warning; it is still made (the methods
are then about equally good on the evidence there is), but the user learns that more eval photos,
not a rerun, would change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from deployer.check import resample
from deployer.check.metrics import OutputSummary

TIE = 1e-4                 # scores closer than this are a tie, broken by model size
DETECTION_RESAMPLES = 200  # mAP is recomputed per draw and per method (milliseconds each): fewer draws
SETTLED_SHARE = 0.5        # below this bootstrap share the choice gets a warning


@dataclass(frozen=True)
class Score:
    """What choices between candidates are made on, compared value by value (the first decides,
    the next only breaks near-ties), highest best.

    - detection: (mAP@0.5, mAP@0.5:0.95) of int8 boxes against fp32 boxes: cosine over a
      detector's raw head says little about the boxes (YOLOv8n, 72 views: kl and mse differ by
      0.0004 in cosine but by 0.14 in mAP@0.5);
    - dense: (mean mask IoU,) of the thresholded maps;
    - otherwise (classification, or a task metric that is undefined because fp32 finds no box):
      (mean cosine + mean top-1 agreement of the outputs that have one,), the agreement over the
      inputs fp32 decides clearly (metrics.top1_agreement_clear; the plain rate when it decides
      none): a near-tie swaps on any change of the output, so it says nothing about the method.
      MobileNetV2, 120 views, 7 near-ties, calibrated on 10 of the 11 demo photos: plain agreement
      put kl (0.933) above seq (0.925), the clear inputs put seq (0.965) above kl (0.938); with all
      11 photos seq leads either way (0.950 / 0.982) and its lead on the score grows 0.022 -> 0.032.
    All are means over every eval input: unlike "passes the gate", one image moves them by about
    1/n, so near-equal candidates stay near-equal instead of flipping. Mixed precision ranks layers
    by `output_error` on a probe subset instead (a task metric on a few dozen inputs is too coarse
    to order dozens of layers) and decides on the gate, which can name the task metrics."""

    basis: tuple[str, ...]            # names of the values, e.g. ("map50", "map50_95")
    values: tuple[float, ...]

    @property
    def value(self) -> float:
        return self.values[0]


def _task_basis(task: dict | None) -> tuple[str, ...] | None:
    """The task metric's Score basis, or None when the raw-output score decides."""
    task = task or {}
    if task.get("map50") is not None:
        return ("map50", "map50_95")
    if "mask_iou" in task:
        return ("mask_iou",)
    return None


def score(summaries: dict[str, OutputSummary], task: dict | None = None) -> Score:
    """The Score of one candidate from its raw-output summaries and task metrics (deployer.check.tasks)."""
    basis = _task_basis(task)
    if basis == ("map50", "map50_95"):
        return Score(basis, (float(task["map50"]), float(task["map50_95"] or 0.0)))   # type: ignore[index]
    if basis == ("mask_iou",):
        # None: neither fp32 nor int8 marks a pixel on any input, i.e. they agree everywhere
        return Score(basis, (1.0 if task["mask_iou"] is None else float(task["mask_iou"]),))  # type: ignore[index]
    cos = float(np.mean([s.cosine for s in summaries.values()]))
    top1 = [s.top1_agreement_clear if s.top1_agreement_clear is not None else s.top1_agreement
            for s in summaries.values() if s.top1_agreement is not None]
    return Score(("cosine+top1_clear",), (cos + (float(np.mean(top1)) if top1 else 0.0),))


def score_values(summaries: dict[str, OutputSummary], task: dict | None, parts: Any,
                 weights: np.ndarray) -> np.ndarray:
    """`score`'s values with eval input i counted weights[r, i] times, one row per weighting
    (rows x values). With every weight 1 it equals score(summaries, task).values. `parts` are
    the task metric's per-input pieces (deployer.check.tasks.TaskParts)."""
    w = np.atleast_2d(np.asarray(weights, np.float64))
    basis = _task_basis(task)
    if basis is not None:
        rows = [parts.values(row) for row in w]
        # no fp32 box among these inputs: every candidate is equal on them
        return np.array([r if r is not None else (1.0,) * len(basis) for r in rows], np.float64)
    total = w.sum(axis=1)
    cos = np.mean([w @ np.asarray(s.per_input_cosine, np.float64) / total for s in summaries.values()], axis=0)
    agree = []
    for s in summaries.values():
        if s.top1_agreement is None:
            continue
        a = np.asarray(s.per_input_top1, np.float64)
        c = np.asarray(s.per_input_clear, np.float64)
        n_clear = w @ c
        clear_rate = np.divide(w @ (a * c), n_clear, out=np.zeros_like(n_clear), where=n_clear > 0)
        agree.append(np.where(n_clear > 0, clear_rate, w @ a / total))
    value = cos + (np.mean(agree, axis=0) if agree else 0.0)
    return value.reshape(-1, 1)


def choose(methods: list[str], values: dict[str, Sequence[float]], sizes: dict[str, int]) -> str:
    """Highest Score, value by value: candidates within TIE of the best on the first value stay
    in, the next value decides among them the same way; what is still tied goes to the smaller
    .bin, then to list order."""
    tied = list(methods)
    width = min(len(values[m]) for m in methods)
    for k in range(width):
        top = max(values[m][k] for m in tied)
        tied = [m for m in tied if values[m][k] >= top - TIE]
    return min(tied, key=lambda m: (sizes[m], methods.index(m)))


def choice_rule(rank: Score) -> str:
    """How `choose` decided, in words, for the report."""
    return ", then ".join(rank.basis) + f" (within {TIE:g} is a tie), then the smaller .bin"


@dataclass
class ChoiceStability:
    """How settled the method choice is on this eval set (see the module docstring)."""

    chosen: str
    unit: str                          # what was left out / resampled: "photos (eval.group)" or "inputs"
    units: int
    resamples: int
    wins: dict[str, float] = field(default_factory=dict)     # method -> share of bootstrap draws it wins
    holds: int = 0                                           # leave-one-out sets that keep the choice
    flips: list[dict] = field(default_factory=list)          # [{"left_out": key, "to": method}]

    @property
    def share(self) -> float:
        return self.wins.get(self.chosen, 0.0)

    @property
    def settled(self) -> bool:
        return self.share >= SETTLED_SHARE

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "unit": self.unit, "units": self.units, "resamples": self.resamples,
                "wins": self.wins, "share": self.share, "settled": self.settled,
                "leave_one_out": {"holds": self.holds, "of": self.units if self.units > 1 else 0,
                                  "flips": self.flips}}

    def warning(self) -> str | None:
        """One line when the eval set does not settle the choice."""
        if self.settled:
            return None
        rivals = ", ".join(f"{m} {s:.0%}" for m, s in self.wins.items() if m != self.chosen)
        return (f"the method choice is not settled by the eval set: {self.chosen} wins {self.share:.0%} of "
                f"{self.resamples} resamples of its {self.units} {self.unit} ({rivals}); on this evidence they "
                f"are about equally good: more eval photos would decide, or pin quantize.method")


def choice_stability(methods: list[str], evals: dict[str, Any], sizes: dict[str, int],
                     groups: list[str] | None = None, *, resamples: int | None = None,
                     seed: int = resample.SEED) -> ChoiceStability | None:
    """Leave-one-out and bootstrap stability of choose() over `evals` (method -> Evaluation with
    per-input summaries; `groups`: eval.group's key per input). None with fewer than two methods."""
    if len(methods) < 2:
        return None
    first = evals[methods[0]]
    n = len(next(iter(first.outputs.values())).per_input_cosine)
    if n == 0 or (groups is not None and len(groups) != n):
        return None
    u = resample.units(groups, n)
    detection = _task_basis(first.task) == ("map50", "map50_95")
    draws = resamples if resamples is not None else (DETECTION_RESAMPLES if detection else resample.DRAWS)
    loo = resample.leave_one_out_weights(u)
    weights = np.vstack([loo, resample.bootstrap_weights(u, draws, seed)])       # rows x inputs
    values = {m: score_values(evals[m].outputs, evals[m].task, evals[m].parts, weights) for m in methods}
    chosen = choose(methods, {m: evals[m].rank.values for m in methods}, sizes)
    winners = [choose(methods, {m: values[m][r] for m in methods}, sizes) for r in range(len(weights))]
    flips = [{"left_out": u.names[g], "to": winners[g]} for g in range(len(loo)) if winners[g] != chosen]
    boot = winners[len(loo):]
    wins = {m: round(boot.count(m) / len(boot), 4) for m in methods if boot.count(m)} if boot else {}
    wins = dict(sorted(wins.items(), key=lambda kv: -kv[1]))
    return ChoiceStability(chosen, u.describe(), u.count, draws, wins, len(loo) - len(flips), flips)
