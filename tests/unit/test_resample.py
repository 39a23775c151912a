"""Resampling eval sets by photo (deployer.check.resample) and the task metrics' bootstrap
intervals built on it (deployer.check.tasks.with_intervals)."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.check import resample
from deployer.check.tasks import TaskSpec, evaluate_task, with_intervals


def test_units_are_groups_or_inputs():
    u = resample.units(["b", "a", "b", "c"], 4)
    assert u.names == ("a", "b", "c") and u.of.tolist() == [1, 0, 1, 2] and u.grouped
    assert u.describe() == "photos (eval.group)"
    plain = resample.units(None, 3)
    assert plain.count == 3 and not plain.grouped and plain.describe() == "inputs"
    # keys that put every input in its own group are inputs, not photos
    assert not resample.units(["x", "y"], 2).grouped
    with pytest.raises(ValueError):
        resample.units(["a"], 2)


def test_a_drawn_photo_brings_all_its_views():
    u = resample.units(["p0", "p0", "p0", "p1", "p2", "p2"], 6)
    w = resample.bootstrap_weights(u, draws=500, seed=1)
    assert w.shape == (500, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all() and (w[:, 4] == w[:, 5]).all()
    # three photos drawn per row, each bringing its views
    assert (w[:, [0, 3, 4]].sum(axis=1) == 3).all()
    assert np.array_equal(w, resample.bootstrap_weights(u, draws=500, seed=1))     # seeded


def test_leave_one_out_drops_one_whole_photo_per_row():
    u = resample.units(["p0", "p0", "p1"], 3)
    assert resample.leave_one_out_weights(u).tolist() == [[0, 0, 1], [1, 1, 0]]
    assert resample.leave_one_out_weights(resample.units(["p0", "p0"], 2)).shape == (0, 2)


def _maps(n: int, flip_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    refs = [rng.uniform(0, 1, (1, 12, 12)).astype(np.float32) for _ in range(n)]
    tests = []
    for i, r in enumerate(refs):
        t = r.copy()
        if i < flip_share * n:                  # these inputs lose a third of their pixels
            t[:, :4] = 0
        tests.append(t)
    return [{"out0": r} for r in refs], [{"out0": t} for t in tests]


def test_dense_interval_holds_the_iou_and_counts_photos():
    refs, tests = _maps(24, 0.25, 0)
    spec = TaskSpec("dense", threshold=0.5)
    metrics, parts = evaluate_task(spec, refs, tests)
    plain = with_intervals(metrics, parts)["intervals"]
    lo, hi = plain["mask_iou"]
    assert lo < metrics["mask_iou"] < hi and plain["over"] == 24 and plain["unit"] == "inputs"
    # the six damaged inputs are the views of two photos: the evidence is 8 photos, the interval wider
    groups = [f"p{i // 3}" for i in range(24)]
    grouped = with_intervals(metrics, parts, groups)["intervals"]
    assert grouped["over"] == 8 and grouped["unit"] == "photos (eval.group)"
    assert grouped["mask_iou"][1] - grouped["mask_iou"][0] > hi - lo
    # an undamaged model has nothing to be uncertain about
    same, parts_same = evaluate_task(spec, refs, refs)
    assert with_intervals(same, parts_same)["intervals"]["mask_iou"] == [1.0, 1.0]


def _head(rng: np.random.Generator, classes: int = 3, anchors: int = 30) -> np.ndarray:
    out = np.zeros((4 + classes, anchors), np.float32)
    out[:2] = rng.uniform(20, 300, (2, anchors))
    out[2:4] = rng.uniform(10, 60, (2, anchors))
    out[4:] = rng.uniform(0, 1, (classes, anchors)) ** 3
    return out


def test_detection_intervals_hold_both_maps():
    rng = np.random.default_rng(2)
    refs = [{"out0": _head(rng)} for _ in range(16)]
    tests = [{"out0": r["out0"] + rng.normal(0, 4.0, r["out0"].shape).astype(np.float32)} for r in refs]
    metrics, parts = evaluate_task(TaskSpec("detection", num_classes=3), refs, tests)
    iv = with_intervals(metrics, parts, draws=300)["intervals"]
    assert iv["draws"] == 300 and iv["over"] == 16
    for name in ("map50", "map50_95"):
        assert iv[name][0] <= metrics[name] <= iv[name][1] and iv[name][1] > iv[name][0]


def test_no_interval_without_pieces_or_a_defined_metric():
    assert with_intervals(None, None) is None
    metrics = {"top1_agreement": 1.0}
    assert with_intervals(metrics, None) is metrics                      # classification: Wilson intervals instead
    refs = [{"out0": np.zeros((1, 4, 4), np.float32)}]
    empty, parts = evaluate_task(TaskSpec("dense"), refs, refs)
    assert empty["mask_iou"] is None and "intervals" not in with_intervals(empty, parts)


def test_the_cli_prints_task_metrics_with_their_intervals(capsys):
    from deployer.cli.quantize import _task_line

    _task_line({"map50": 0.987, "map50_95": 0.884, "detail": {"reference_boxes": 63},
                "intervals": {"map50": [0.962, 1.0], "map50_95": [0.85, 0.91], "draws": 1000, "over": 9,
                              "unit": "photos (eval.group)"}})
    cap = capsys.readouterr()
    text = " ".join((cap.out + cap.err).split())
    assert ("task: map50=0.9870 [0.9620, 1.0000], map50_95=0.8840 [0.8500, 0.9100] (63 fp32 boxes); "
            "95% intervals over 9 photos (eval.group)") in text


def test_lower_ends_are_gate_metrics():
    from deployer.check.gates import evaluate_gates, parse_gates

    refs, tests = _maps(24, 0.25, 0)
    metrics, parts = evaluate_task(TaskSpec("dense", threshold=0.5), refs, tests)
    task = with_intervals(metrics, parts, [f"p{i // 3}" for i in range(24)])
    assert task["mask_iou_low"] == pytest.approx(task["intervals"]["mask_iou"][0], abs=1e-4)
    assert with_intervals(task, parts) is task                 # computed once, not again with other groups
    passed = [r.passed for r in evaluate_gates(parse_gates([f"mask_iou_low>={task['mask_iou_low'] - 1e-6}",
                                                            f"mask_iou_low>={task['mask_iou'] - 1e-6}"]), {}, task)]
    assert passed == [True, False]                           # the point value passes, its lower end does not
