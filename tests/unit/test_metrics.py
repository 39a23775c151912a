"""Metrics and gates on inputs whose answers can be worked out by hand."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from deployer.check.gates import evaluate_gates, parse_gate, parse_gates
from deployer.check.metrics import (
    cosine,
    is_classifier_like,
    max_abs_error,
    psnr,
    summarize,
    top1_agrees,
    topk_contains,
)
from deployer.errors import DeployerError


def test_cosine_by_hand():
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(0.0)
    assert cosine(np.array([1.0, 2.0, 2.0]), np.array([2.0, 1.0, 2.0])) == pytest.approx(8 / 9)
    assert cosine(np.array([3.0, 4.0]), np.array([-3.0, -4.0])) == pytest.approx(-1.0)
    # scale does not matter, shape does not matter (flattened)
    assert cosine(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([2.0, 4.0, 6.0, 8.0])) == pytest.approx(1.0)


def test_cosine_of_zero_vectors():
    z = np.zeros(3)
    assert cosine(z, z) == 1.0
    assert cosine(z, np.array([0.0, 1.0, 0.0])) == 0.0


def test_psnr_by_hand():
    ref = np.array([2.0, -4.0, 1.0, 1.0])
    test = ref + np.array([1.0, -1.0, 1.0, -1.0])      # mse = 1, peak = 4
    assert psnr(ref, test) == pytest.approx(10 * math.log10(16.0))
    assert psnr(ref, ref) == math.inf


def test_max_abs_error_by_hand():
    assert max_abs_error(np.array([1.0, 5.0, -2.0]), np.array([1.5, 2.0, -2.0])) == pytest.approx(3.0)


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        cosine(np.zeros(3), np.zeros(4))


def test_topk_by_hand():
    ref = np.array([0.1, 0.9, 0.3, 0.2, 0.0, 0.5])
    assert top1_agrees(ref, np.array([0.0, 2.0, 1.0, 0.0, 0.0, 0.0]))
    assert not top1_agrees(ref, np.array([0.0, 1.0, 2.0, 0.0, 0.0, 0.0]))
    # fp32's best (index 1) ranks 5th of 6 in the int8 output: inside top-5, outside top-4
    test = np.array([6.0, 1.0, 5.0, 4.0, 0.0, 3.0])
    assert topk_contains(ref, test, 5)
    assert not topk_contains(ref, test, 4)


def test_classifier_like():
    assert is_classifier_like(np.zeros(1000))
    assert is_classifier_like(np.zeros((1, 1, 10)))
    assert not is_classifier_like(np.zeros((3, 8, 8)))
    assert not is_classifier_like(np.zeros(1))


def test_summarize_aggregates():
    refs = [np.array([1.0, 0.0, 0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0, 0.0, 0.0])]
    tests = [np.array([1.0, 0.0, 0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0, 0.0])]
    s = summarize("out0", refs, tests)
    assert s.count == 2
    assert s.cosine == pytest.approx(0.5)       # (1 + 0) / 2
    assert s.min_cosine == pytest.approx(0.0)
    assert s.max_abs == pytest.approx(1.0)
    assert s.top1_agreement == pytest.approx(0.5)
    assert s.top5_agreement == pytest.approx(1.0)  # index 1 is within int8's 5 values (ties by index)
    assert s.psnr == pytest.approx(10 * math.log10(1 / 0.4))  # the exact input is left out of the mean


def test_summarize_feature_map_has_no_topk():
    s = summarize("feat", [np.ones((2, 3, 3))], [np.ones((2, 3, 3))])
    assert s.top1_agreement is None and s.top5_agreement is None
    assert s.psnr is None                       # every input exact: infinite PSNR


def test_gate_parse_and_evaluate():
    g = parse_gate("top1_agreement>=0.75")
    assert (g.metric, g.op, g.threshold, g.output) == ("top1_agreement", ">=", 0.75, None)
    assert parse_gate("cosine@out1 > 0.9").output == "out1"
    refs = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    outs = {"prob": summarize("prob", refs, [np.array([1.0, 0.0]), np.array([1.0, 0.0])])}
    res = evaluate_gates([parse_gate("top1_agreement>=0.5"), parse_gate("top1_agreement>0.5"),
                          parse_gate("max_abs<=1")], outs)
    assert [r.passed for r in res] == [True, False, True]
    assert res[1].worst_output == "prob"


@pytest.mark.parametrize("text, says", [
    ("cosine>=2", "can never hold: cosine is between -1 and 1"), ("top1_agreement>=1.5", "can never hold"),
    ("map50<=-1", "can never hold"), ("max_abs<0", "can never hold"), ("cosine>=1e999", "can never hold"),
    ("cosine>=-1", "can never fail"), ("top5_agreement<=1", "can never fail"), ("mask_iou==2", "can never hold"),
    ("cosine>=.", "'.' in 'cosine>=.' is not a number"),
])
def test_gate_that_cannot_decide_anything_is_refused(text, says):
    """cosine>=2 failed every model and top1_agreement<=1 passed every one; '.' was a ValueError traceback."""
    with pytest.raises(DeployerError, match=f"^p.yaml: gate: .*{re.escape(says)}"):
        parse_gate(text, "p.yaml: gate")


def test_gate_text_keeps_the_threshold_it_was_given():
    assert parse_gate("cosine>=0.99999999").text == "cosine>=0.99999999"       # :g said cosine>=1
    assert parse_gate("top1_agreement>=0.9").text == "top1_agreement>=0.9"


def test_gate_at_the_edge_of_its_range_is_kept():
    for text in ("top1_agreement>=1", "cosine==1", "max_abs<=0", "mask_iou>0", "cosine>-1", "psnr>=200", "psnr<-5"):
        assert parse_gate(text).text


def test_gate_applies_to_every_output_unless_named():
    good = summarize("a", [np.array([1.0, 2.0])], [np.array([1.0, 2.0])])
    bad = summarize("b", [np.array([1.0, 2.0])], [np.array([2.0, 1.0])])
    outs = {"a": good, "b": bad}
    assert not evaluate_gates([parse_gate("cosine>=0.99")], outs)[0].passed
    assert evaluate_gates([parse_gate("cosine@a>=0.99")], outs)[0].passed


def test_gate_errors_name_the_source():
    with pytest.raises(DeployerError) as e:
        parse_gate("cosin>=0.9", "p.yaml: gate")
    assert str(e.value) == "p.yaml: gate: unknown gate metric 'cosin' in 'cosin>=0.9' (did you mean 'cosine'?)"
    with pytest.raises(DeployerError, match="cannot parse gate"):
        parse_gate("cosine is high")
    outs = {"feat": summarize("feat", [np.ones((2, 2, 2))], [np.ones((2, 2, 2))])}
    with pytest.raises(DeployerError, match="no output has metric 'top1_agreement'"):
        evaluate_gates([parse_gate("top1_agreement>=0.9")], outs)
    with pytest.raises(DeployerError, match="no output 'nope'"):
        evaluate_gates([parse_gate("cosine@nope>=0.9")], outs)


# ------------------------------------------------------------------ agreement intervals (Wilson)

@pytest.mark.parametrize("k,n,lo,hi", [
    (5, 10, 0.2366, 0.7634),      # textbook values (Newcombe 1998, method 3)
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),    # Newcombe's worked example
])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    from deployer.check.metrics import wilson_interval

    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_wilson_interval_narrows_with_n_and_contains_the_rate():
    from deployer.check.metrics import wilson_interval

    widths = []
    for n in (11, 50, 120, 1000):
        k = round(0.9 * n)
        lo, hi = wilson_interval(k, n)
        assert lo <= k / n <= hi
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True)
    # 10 of 11 agreeing says little: the interval reaches below 0.65
    assert wilson_interval(10, 11)[0] < 0.65


def test_summary_reports_agreement_interval_and_per_input_hits():
    from deployer.check.metrics import summary_dict, wilson_interval

    rng = np.random.default_rng(0)
    refs = [rng.normal(size=10) for _ in range(8)]
    tests = [r.copy() for r in refs]
    tests[0][np.argmax(refs[0])] = -10.0          # one input's top-1 flips
    s = summarize("out0", refs, tests)
    assert s.per_input_top1.count(False) == 1 and s.top1_agreement == 7 / 8
    assert s.top1_agreement_ci == wilson_interval(7, 8)
    d = summary_dict(s)
    assert "per_input_top1" not in d and "per_input_cosine" not in d
    assert d["top1_agreement_ci"] == [round(v, 4) for v in wilson_interval(7, 8)]


def test_top1_margin_reads_logits_through_softmax_and_probabilities_as_they_are():
    from deployer.check.metrics import top1_margin

    assert top1_margin(np.array([0.0, 0.0, -5.0])) == pytest.approx(0.0, abs=1e-12)   # a tie
    e = np.exp([2.0, 0.0, 0.0])
    assert top1_margin(np.array([2.0, 0.0, 0.0])) == pytest.approx((e[0] - e[1]) / e.sum())
    assert top1_margin(np.array([0.7, 0.2, 0.1])) == pytest.approx(0.5)                 # already probabilities
    assert top1_margin(np.array([3.0, 1.0, 0.5, 0.0])) == top1_margin(np.array([103.0, 101.0, 100.5, 100.0]))


def test_near_ties_are_counted_and_left_out_of_the_clear_rate():
    """Two inputs fp32 cannot decide (logits 0.01 apart) flip; the clear rate is over the other
    eight, one of which flips for real: 7/8 clear, 7/10 plain, 2 near-ties; the gate reads it."""
    from deployer.check.metrics import NEAR_TIE_MARGIN, top1_margin, wilson_interval

    refs, tests = [], []
    for i in range(10):
        r = np.zeros(5)
        r[i % 5] = 0.01 if i < 2 else 3.0
        r[(i + 1) % 5] = 0.0
        if i < 2:
            r[(i + 1) % 5] = 0.005
        t = r.copy()
        if i < 2:
            t[(i + 1) % 5] = 0.02                 # the near-tie swaps
        if i == 5:
            t[(i + 1) % 5] = 4.0                  # a clear input flips
        refs.append(r)
        tests.append(t)
    assert [top1_margin(r) < NEAR_TIE_MARGIN for r in refs] == [True, True] + [False] * 8
    s = summarize("out0", refs, tests)
    assert s.top1_agreement == 0.7 and s.top1_near_ties == 2
    assert s.top1_agreement_clear == 7 / 8 and s.top1_agreement_clear_ci == wilson_interval(7, 8)
    (res,) = evaluate_gates([parse_gate("top1_agreement_clear>=0.85")], {"out0": s})
    assert res.passed and res.observed == {"out0": 7 / 8}
    (res,) = evaluate_gates([parse_gate("top1_agreement_clear>=0.9")], {"out0": s})
    assert not res.passed


def test_no_clear_input_gives_no_clear_rate():
    s = summarize("out0", [np.array([1.0, 1.0, 0.0])], [np.array([1.0, 1.1, 0.0])])
    assert s.top1_near_ties == 1 and s.top1_agreement_clear is None and s.top1_agreement_clear_ci is None
    with pytest.raises(DeployerError, match="near-ties"):
        evaluate_gates([parse_gate("top1_agreement_clear>=0.9")], {"out0": s})


def test_disagreements_list_clear_flips_first_with_their_margins():
    from deployer.check.metrics import top1_disagreements, top1_margin

    refs = [np.array([3.0, 0.0, 0.0]), np.array([0.01, 0.0, -1.0]), np.array([0.0, 2.0, 0.0]), np.array([1.0, 0.0, 0.5])]
    tests = [np.array([3.0, 0.0, 0.0]), np.array([0.0, 0.02, -1.0]), np.array([0.0, 1.0, 3.0]), np.array([0.4, 0.0, 0.5])]
    rows = top1_disagreements(refs, tests)
    assert [r["index"] for r in rows] == [2, 3, 1]                      # by fp32 margin, largest first
    assert rows[0] == {"index": 2, "fp32_class": 1, "int8_class": 2, "fp32_margin": round(top1_margin(refs[2]), 4),
                       "near_tie": False}
    assert rows[-1]["near_tie"] and rows[-1]["int8_class"] == 1
    assert top1_disagreements(refs[:1], tests[:1]) == []


def _outcomes(misses_per_group: list[int], size: int) -> tuple[list[bool], list[str]]:
    outcomes, groups = [], []
    for g, miss in enumerate(misses_per_group):
        outcomes += [False] * miss + [True] * (size - miss)
        groups += [f"photo{g}"] * size
    return outcomes, groups


def test_grouped_interval_is_wilson_when_groups_are_single_inputs_or_absent():
    from deployer.check.metrics import grouped_interval, wilson_interval

    outcomes = [True] * 114 + [False] * 6
    assert grouped_interval(outcomes, None) == wilson_interval(114, 120)
    assert grouped_interval(outcomes, [str(i) for i in range(120)]) == wilson_interval(114, 120)


def test_grouped_interval_counts_photos_when_views_move_together():
    from deployer.check.metrics import grouped_interval, wilson_interval

    # 20 photos x 6 views; one photo's six views all miss: the evidence is one photo in 20
    outcomes, groups = _outcomes([6] + [0] * 19, 6)
    lo, hi = grouped_interval(outcomes, groups)
    plain = wilson_interval(114, 120)
    assert lo < plain[0] - 0.03 and hi >= plain[1]
    # between Wilson on the 20 photos and on 19 (the design effect is 6 * 20 / 19)
    assert wilson_interval(19, 20)[0] - 0.01 < lo < wilson_interval(19, 20)[0] + 0.03
    # the same six misses, one per photo, are as informative as independent views: plain Wilson
    spread, sgroups = _outcomes([1] * 6 + [0] * 14, 6)
    assert grouped_interval(spread, sgroups) == pytest.approx(plain)
    # no miss at all: nothing to measure the spread with, so each photo counts once
    allhit, agroups = _outcomes([0] * 20, 6)
    assert grouped_interval(allhit, agroups) == pytest.approx(wilson_interval(20, 20))


def test_grouped_interval_is_never_narrower_than_wilson_and_holds_the_rate():
    from deployer.check.metrics import grouped_interval, wilson_interval

    rng = np.random.default_rng(3)
    for _ in range(200):
        k, size = int(rng.integers(2, 30)), int(rng.integers(1, 8))
        outcomes, groups = _outcomes(list(rng.integers(0, size + 1, k) * (rng.random(k) < 0.3)), size)
        lo, hi = grouped_interval(outcomes, groups)
        plo, phi = wilson_interval(sum(outcomes), len(outcomes))
        rate = sum(outcomes) / len(outcomes)
        assert lo <= plo + 1e-12 and hi >= phi - 1e-12 and lo - 1e-9 <= rate <= hi + 1e-9
    with pytest.raises(ValueError):
        grouped_interval([True, False], ["a"])


def test_summary_with_groups_counts_them_for_every_rate():
    from deployer.check.metrics import grouped_interval, summary_dict

    rng = np.random.default_rng(1)
    refs = [rng.normal(size=10) * 5 for _ in range(12)]
    tests = [r.copy() for r in refs]
    for i in (0, 1, 2):                              # photo A's three views flip together
        tests[i][np.argmax(refs[i])] = -50.0
    groups = ["A"] * 3 + ["B"] * 3 + ["C"] * 3 + ["D"] * 3
    s = summarize("out0", refs, tests, groups)
    assert s.groups == 4 and s.top1_agreement == 0.75
    assert s.top1_agreement_ci == grouped_interval(s.per_input_top1, groups)
    assert s.top1_agreement_ci[0] < summarize("out0", refs, tests).top1_agreement_ci[0]
    assert summary_dict(s)["groups"] == 4 and summarize("out0", refs, tests).groups is None


def test_group_keys_take_the_first_capture_group_and_leave_strangers_alone(tmp_path: Path):
    from deployer.check.samples import group_keys

    files = [tmp_path / n for n in ("imagenet_07_3_full.png", "imagenet_07_3_flip.png", "imagenet_12_9_full.png",
                                    "cat.png")]
    assert group_keys(files, r"^(imagenet_\d+)_") == ["imagenet_07", "imagenet_07", "imagenet_12", "=cat.png"]
    assert group_keys(files, r"imagenet_\d+") == ["imagenet_07", "imagenet_07", "imagenet_12", "=cat.png"]
    assert group_keys(files, None) is None


def test_a_gate_says_whether_its_interval_settles_it():
    """0.95 agreement on 20 inputs: '>= 0.9' passes but its 95 % interval straddles 0.9 (not settled);
    '>= 0.5' is settled. A metric without an interval (cosine) leaves the question open (None)."""
    refs = [np.eye(10)[i % 10] * 5 for i in range(20)]
    tests = [r.copy() for r in refs]
    tests[0] = np.roll(refs[0], 1)                             # one flip in 20
    s = summarize("out0", refs, tests)
    outs = {"out0": s}
    lo, hi = s.top1_agreement_ci
    close, far, cos = evaluate_gates(parse_gates(["top1_agreement>=0.9", "top1_agreement>=0.5", "cosine>=0.5"]), outs)
    assert close.passed and close.settled is False and close.intervals == {"out0": [round(lo, 4), round(hi, 4)]}
    assert far.passed and far.settled is True
    assert cos.settled is None and cos.intervals is None
    # a task metric's bootstrap interval settles (or not) a task gate the same way
    task = {"map50": 0.97, "map50_95": 0.8, "intervals": {"map50": [0.93, 0.99]}}
    (straddles, clears) = evaluate_gates(parse_gates(["map50>=0.95", "map50>=0.9"]), outs, task)
    assert straddles.passed and straddles.settled is False and clears.settled is True
    assert clears.intervals == {"task": [0.93, 0.99]}


def test_the_cli_says_when_a_gate_is_not_settled(capsys):
    from deployer.cli.quantize import _gates_lines

    _gates_lines([{"gate": "top1_agreement>=0.9", "passed": True, "observed": {"out0": 0.95},
                   "intervals": {"out0": [0.878, 0.981]}, "settled": False},
                  {"gate": "cosine>=0.985", "passed": True, "observed": {"out0": 0.9916}, "intervals": None,
                   "settled": None}])
    cap = capsys.readouterr()
    text = " ".join((cap.out + cap.err).split())
    assert ("gate top1_agreement>=0.9: pass (out0=0.9500; not settled: 95% interval [0.878, 0.981] straddles "
            "the threshold)") in text
    assert "gate cosine>=0.985: pass (out0=0.9916)" in text


def test_group_keys_refuse_a_pattern_that_matches_nothing_or_backtracks_forever(tmp_path: Path, monkeypatch):
    """eval.group matching none of the eval names used to pass as "N groups of eval.group"; a
    catastrophic pattern used to hang quantize for minutes per file name."""
    from deployer.check import samples
    from deployer.check.samples import group_keys

    files = [tmp_path / n for n in ("lfw_001_face.png", "lfw_002_face.png")]
    with pytest.raises(DeployerError, match=r"^p.yaml: eval.group: '\^zzz\(\\d\+\)' matches none of the 2 eval file "
                                            r"names \(e.g. lfw_001_face.png\)"):
        group_keys(files, r"^zzz(\d+)", "p.yaml: eval.group", require_match=True)
    assert group_keys(files, r"^zzz(\d+)") == ["=lfw_001_face.png", "=lfw_002_face.png"]   # check --images: a note
    monkeypatch.setattr(samples, "GROUP_SECONDS", 0.2)
    slow = [tmp_path / ("lfw_000_face_and_a_long_name" + "_x" * 10 + ".png")]
    with pytest.raises(DeployerError, match=r"eval.group: .* takes over 0.2 s on the eval file names"):
        group_keys(slow, r"^(([\w.]+)+)+Q")
