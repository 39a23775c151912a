"""The score methods are chosen on: the task's metric when the profile has one, value by value,
near-ties to the smaller file (deployer.quant.choice.score and choose)."""

from __future__ import annotations

import pytest

from deployer.check.metrics import OutputSummary
from deployer.quant.choice import TIE, choose, score
from deployer.quant.mixed import Evaluation


def _outputs(cos: float, top1: float | None = None) -> dict[str, OutputSummary]:
    return {"out0": OutputSummary("out0", 10, cos, cos, 30.0, 0.1, top1_agreement=top1)}


def _eval(cos: float, task: dict | None = None, top1: float | None = None) -> Evaluation:
    return Evaluation(frozenset(), _outputs(cos, top1), [], [], task)


def _choose(methods: list[str], evals: dict[str, Evaluation], sizes: dict[str, int]) -> str:
    return choose(methods, {m: evals[m].rank.values for m in methods}, sizes)


def test_detection_scores_on_map_then_map50_95():
    s = score(_outputs(0.5), {"map50": 0.9, "map50_95": 0.6, "detail": {}})
    assert s.basis == ("map50", "map50_95") and s.values == (0.9, 0.6) and s.value == 0.9


def test_dense_scores_on_mask_iou_and_an_empty_pair_agrees():
    assert score(_outputs(0.5), {"mask_iou": 0.8, "mask_iou_min": 0.1}).values == (0.8,)
    # neither model marks a pixel anywhere: they agree, not "undefined -> worst"
    assert score(_outputs(0.5), {"mask_iou": None, "mask_iou_min": None}).values == (1.0,)


def test_classification_and_undefined_task_metrics_keep_cosine_plus_agreement():
    assert score(_outputs(0.98, 0.9)).values == pytest.approx((1.88,))
    assert score(_outputs(0.98, 0.9), {"top1_agreement": 0.9, "top1_agreement_low": 0.8}).basis == ("cosine+top1_clear",)
    # fp32 finds no box at all: mAP is undefined, the raw-output score decides
    assert score(_outputs(0.98), {"map50": None, "map50_95": None}).basis == ("cosine+top1_clear",)


def test_classification_scores_agreement_on_clearly_decided_inputs():
    """A method that only loses near-ties is not worse than one that flips clear inputs."""
    ties_lost = OutputSummary("out0", 10, 0.99, 0.9, 30.0, 0.1, top1_agreement=0.8, top1_agreement_clear=1.0,
                              top1_near_ties=2)
    clear_lost = OutputSummary("out0", 10, 0.99, 0.9, 30.0, 0.1, top1_agreement=0.9, top1_agreement_clear=0.875,
                               top1_near_ties=2)
    assert score({"out0": ties_lost}).values == pytest.approx((1.99,))
    assert score({"out0": ties_lost}).value > score({"out0": clear_lost}).value
    # no clear input at all: the plain rate
    assert score(_outputs(0.98, 0.5)).values == pytest.approx((1.48,))


def test_choice_follows_the_task_metric_not_cosine():
    evals = {"kl": _eval(0.9999, {"map50": 0.83, "map50_95": 0.5}),
             "mse": _eval(0.9990, {"map50": 0.99, "map50_95": 0.88})}
    assert _choose(["kl", "mse"], evals, {"kl": 1, "mse": 1}) == "mse"


def test_near_ties_go_to_the_second_value_then_to_size_then_order():
    evals = {"a": _eval(0.99, {"map50": 1.0, "map50_95": 0.80}),
             "b": _eval(0.99, {"map50": 1.0 - TIE / 2, "map50_95": 0.90}),
             "c": _eval(0.99, {"map50": 1.0, "map50_95": 0.90 - TIE / 2})}
    assert _choose(["a", "b", "c"], evals, {"a": 10, "b": 10, "c": 10}) == "b"      # map50 tied, map50_95 decides
    assert _choose(["a", "b", "c"], evals, {"a": 10, "b": 10, "c": 9}) == "c"       # then the smaller file
