"""How settled quantize's method choice is (deployer.quant.choice): scores recomputed on resampled
eval sets from per-input pieces must equal the scores of those eval sets computed from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.check.crosscheck import compare_outputs
from deployer.check.tasks import TaskSpec, evaluate_task
from deployer.quant.choice import choice_stability, score, score_values
from deployer.quant.mixed import Evaluation

def _logits(n: int, classes: int = 10, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = [rng.normal(0, 2, classes).astype(np.float32) for _ in range(n)]
    for o in out[:4]:                       # a few near-ties, so the clear-input rate differs from the plain one
        o[1] = o.max() + 1.0
        o[2] = o[1] - 0.01
    return out


def _noisy(refs: list[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [r + rng.normal(0, sigma, r.shape).astype(np.float32) for r in refs]


def _evaluation(refs, tests, task: TaskSpec | None = None) -> Evaluation:
    summaries = compare_outputs([{"out0": r} for r in refs], [{"out0": t} for t in tests])
    metrics, parts = (evaluate_task(task, [{"out0": r} for r in refs], [{"out0": t} for t in tests])
                      if task else (None, None))
    return Evaluation(frozenset(), summaries, [], [], metrics, parts)


def _head(rng: np.random.Generator, jitter: float = 0.0, classes: int = 3, anchors: int = 40) -> np.ndarray:
    out = np.zeros((4 + classes, anchors), np.float32)
    out[:2] = rng.uniform(20, 300, (2, anchors))
    out[2:4] = rng.uniform(10, 60, (2, anchors))
    out[4:] = rng.uniform(0, 1, (classes, anchors)) ** 4
    return out + (rng.normal(0, jitter, out.shape).astype(np.float32) if jitter else 0)


@pytest.mark.parametrize("kind", ["classification", "detection", "dense"])
def test_weights_of_one_reproduce_the_score_and_repeats_equal_duplicated_inputs(kind):
    n = 12
    if kind == "classification":
        refs, task = _logits(n), None
        tests = _noisy(refs, 0.6, 1)
    elif kind == "detection":
        rng = np.random.default_rng(3)
        refs, task = [_head(rng) for _ in range(n)], TaskSpec("detection", num_classes=3)
        tests = [r + np.random.default_rng(i).normal(0, 2.0, r.shape).astype(np.float32) for i, r in enumerate(refs)]
    else:
        rng = np.random.default_rng(4)
        refs, task = [rng.uniform(0, 1, (1, 16, 16)).astype(np.float32) for _ in range(n)], TaskSpec("dense")
        tests = _noisy(refs, 0.15, 2)
    ev = _evaluation(refs, tests, task)
    full = score(ev.outputs, ev.task).values
    np.testing.assert_allclose(score_values(ev.outputs, ev.task, ev.parts, np.ones(n))[0], full, rtol=1e-12)
    # input 0 three times, input 5 twice, input 7 left out == a fresh evaluation of that list
    w = np.ones(n, np.int64)
    w[0], w[5], w[7] = 3, 2, 0
    idx = np.repeat(np.arange(n), w)
    fresh = _evaluation([refs[i] for i in idx], [tests[i] for i in idx], task)
    np.testing.assert_allclose(score_values(ev.outputs, ev.task, ev.parts, w)[0],
                               score(fresh.outputs, fresh.task).values, rtol=1e-9)


def test_a_method_better_on_every_input_wins_every_resample():
    refs = _logits(30)
    evals = {"good": _evaluation(refs, _noisy(refs, 0.05, 1)), "bad": _evaluation(refs, _noisy(refs, 1.5, 2))}
    st = choice_stability(["bad", "good"], evals, {"bad": 1, "good": 1}, resamples=300)
    assert st.chosen == "good" and st.wins == {"good": 1.0} and st.settled and st.warning() is None
    assert st.unit == "inputs" and st.units == 30 and st.holds == 30 and st.flips == []


def test_a_lead_carried_by_one_photo_flips_when_it_is_left_out():
    """Two methods equal on 9 photos (3 views each); 'a' is better only on photo p0's views."""
    rng = np.random.default_rng(11)
    refs = [np.eye(10, dtype=np.float32)[i % 10] * 5.0 for i in range(27)]     # every class clear by 5 logits
    noise = [rng.normal(0, 0.5, 10).astype(np.float32) for _ in range(27)]     # too small to flip any of them
    a_tests = [r + e for r, e in zip(refs, noise)]
    b_tests = [r + 0.5 * e for r, e in zip(refs, noise)]                       # 'b' closer to fp32 ...
    for i in range(3):                                                         # ... except on photo p0
        a_tests[i] = refs[i].copy()
        b_tests[i] = refs[i] + rng.normal(0, 6.0, 10).astype(np.float32)
    groups = [f"p{i // 3}" for i in range(27)]
    evals = {"a": _evaluation(refs, a_tests), "b": _evaluation(refs, b_tests)}
    st = choice_stability(["a", "b"], evals, {"a": 1, "b": 1}, groups, resamples=400)
    assert st.chosen == "a"
    assert st.unit == "photos (eval.group)" and st.units == 9
    assert st.flips == [{"left_out": "p0", "to": "b"}] and st.holds == 8
    # a photo's views move together: p0 is absent from about (8/9)^9 = 35 % of the draws, and 'b' wins those
    assert 0.2 < st.wins["b"] < 0.5
    d = st.to_dict()
    assert d["leave_one_out"] == {"holds": 8, "of": 9, "flips": [{"left_out": "p0", "to": "b"}]}


def test_an_unsettled_choice_warns_and_says_what_to_do():
    refs = _logits(40)
    evals = {m: _evaluation(refs, _noisy(refs, 0.8, seed)) for seed, m in enumerate(["kl", "mse"])}
    st = choice_stability(["kl", "mse"], evals, {"kl": 1, "mse": 1}, resamples=500)
    assert abs(sum(st.wins.values()) - 1.0) < 1e-9
    if st.settled:
        assert st.warning() is None
    else:
        text = st.warning()
        assert st.chosen in text and "eval photos" in text and "quantize.method" in text


def test_one_method_has_no_choice_to_resample():
    refs = _logits(5)
    assert choice_stability(["kl"], {"kl": _evaluation(refs, refs)}, {"kl": 1}) is None


def test_resampling_is_seeded():
    refs = _logits(30)
    evals = {m: _evaluation(refs, _noisy(refs, 0.8, seed)) for seed, m in enumerate(["kl", "mse", "seq"])}
    sizes = {"kl": 1, "mse": 1, "seq": 1}
    a = choice_stability(["kl", "mse", "seq"], evals, sizes, resamples=200, seed=3)
    b = choice_stability(["kl", "mse", "seq"], evals, sizes, resamples=200, seed=3)
    assert a.to_dict() == b.to_dict()


def test_the_cli_says_how_settled_the_choice_is(capsys):
    from deployer.cli.quantize import _stability_line

    st = {"chosen": "seq", "unit": "photos (eval.group)", "units": 20, "resamples": 1000,
          "wins": {"seq": 0.62, "kl": 0.38}, "share": 0.62,
          "leave_one_out": {"holds": 19, "of": 20, "flips": [{"left_out": "imagenet_07", "to": "kl"}]}}
    _stability_line(st)
    _stability_line({**st, "wins": {"seq": 1.0}, "share": 1.0,
                     "leave_one_out": {"holds": 20, "of": 20, "flips": []}})
    _stability_line(None)
    cap = capsys.readouterr()
    text = " ".join((cap.err + cap.out).split())
    assert ("choice: seq wins 62% of 1000 resamples of the 20 photos (eval.group), kl 38%; "
            "flips without imagenet_07 -> kl") in text
    assert "choice: seq wins 100% of 1000 resamples of the 20 photos (eval.group); holds with any one of them left out" \
        in text
