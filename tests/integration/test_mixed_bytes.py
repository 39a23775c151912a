"""Mixed precision with a byte budget (deployer.quant.mixed.search `max_extra_bytes`) on a real model
(MTCNN RNet) in the stock ncnn wheel: the cheap layers are tried first, the set used fits the
budget, the byte costs are the real .bin growth, and a budget nothing fits keeps the all-int8 model."""

from __future__ import annotations

import pytest

from deployer.check.gates import parse_gates
from deployer.check.net import NcnnNet
from deployer.check.samples import load_samples
from deployer.inputs.spec import InputSpec
from deployer.ncnn.model import NcnnModel
from deployer.quant.mixed import Budget, Evaluator, by_benefit_per_cost, search

SPEC = InputSpec(shape=(24, 24), pixel="RGB", mean=[127.5] * 3, norm=[1 / 128] * 3)


def test_benefit_per_cost_orders_cheap_helpers_first_and_drops_useless_layers():
    ranking = [{"layer": "wide", "benefit": 0.010}, {"layer": "narrow", "benefit": 0.004},
               {"layer": "useless", "benefit": 0.0}, {"layer": "harmful", "benefit": -0.001},
               {"layer": "faster_float", "benefit": 0.001}, {"layer": "untimed", "benefit": 0.02}]
    extra = {"wide": 100_000, "narrow": 200, "useless": 10, "harmful": 10, "faster_float": 900, "untimed": 10}
    bytes_ = Budget("bytes", {k: float(v) for k, v in extra.items()}, 300_000)
    assert by_benefit_per_cost(ranking, [bytes_]) == ["untimed", "narrow", "faster_float", "wide"]
    # with a time budget too, the tightest share decides; a layer float runs faster in comes first,
    # and one the board run did not time cannot be priced, so it is left out
    ms = Budget("ms", {"wide": 4.0, "narrow": 2.0, "useless": 0.1, "harmful": 0.1, "faster_float": -0.5}, 5.0)
    assert by_benefit_per_cost(ranking, [bytes_, ms]) == ["faster_float", "wide", "narrow"]
    assert ms.fits(["wide", "faster_float"]) and not ms.fits(["wide", "narrow"]) and not ms.fits(["untimed"])


@pytest.fixture(scope="module")
def rnet_eval(mtcnn_rnet, lfw_calibration, lfw_heldout):
    from deployer.quant.calibration import Calibrator, InputSet
    from deployer.quant.weights import load_model

    cal = Calibrator(load_model(mtcnn_rnet.param, mtcnn_rnet.bin), [SPEC],
                     InputSet.from_lists([lfw_calibration.files]), threads=1)
    table = cal.table("maxabs")
    held = load_samples([lfw_heldout.files[:60]], [SPEC], ["in0"])
    ref_net = NcnnNet(mtcnn_rnet.param, mtcnn_rnet.bin, threads=1)
    reference = [ref_net.run(s, ref_net.output_names) for s in held]
    del ref_net
    return NcnnModel.load(mtcnn_rnet.param, mtcnn_rnet.bin), held, reference, table


def _tightened(rnet_eval, closeness: float) -> tuple[Evaluator, object, object]:
    """An evaluator whose gate asks for the box output's cosine to close `closeness` of all-int8's gap
    to 1, the table, and the all-int8 evaluation under that gate."""
    model, held, reference, table = rnet_eval
    ev = Evaluator(model, held, reference, parse_gates(["cosine>=0"]), threads=1)
    c0 = ev.evaluate(table).outputs["out1"].cosine
    if c0 > 0.9999:
        ev.close()
        pytest.skip(f"all-int8 RNet already has box cosine {c0}; no room for a tighter gate")
    ev.gates = parse_gates([f"cosine@out1>={round(c0 + closeness * (1 - c0), 8)}"])
    return ev, table, ev.evaluate(table)


def test_byte_budget_uses_a_cheap_set_and_reports_real_costs(rnet_eval):
    ev, table, start = _tightened(rnet_eval, 0.3)
    assert not start.passed
    all_int8 = ev.bin_size(table, frozenset())
    budget = all_int8 // 2
    try:
        res = search(ev, table, frozenset(), start, max_fp32_layers=len(start.int8_layers), max_extra_bytes=budget)
        assert res.passed, res.reason
        # every layer's cost is what keeping it float adds to the .bin, and the set used fits the budget
        assert set(res.extra_bytes) == set(start.int8_layers)
        assert all(v > 0 for v in res.extra_bytes.values())
        grown = ev.bin_size(table, set(res.keep_fp32)) - all_int8
        assert grown == sum(res.extra_bytes[n] for n in res.keep_fp32)
        assert 0 < grown <= budget
        assert res.evaluation.passed and res.evaluation.exclude == frozenset(res.keep_fp32)
        # found by the walk over cheap layers (and pruned), not by the bisection over the benefit order
        assert any(s["what"] == "cheap prefix" and s["passed"] for s in res.steps)
        assert not any(s["what"] == "prefix" for s in res.steps)
    finally:
        ev.close()


def test_byte_budget_nothing_fits_keeps_all_int8(rnet_eval):
    ev, table, start = _tightened(rnet_eval, 0.3)
    try:
        res = search(ev, table, frozenset(), start, max_fp32_layers=len(start.int8_layers), max_extra_bytes=1)
        assert not res.passed and res.keep_fp32 == [] and res.evaluation is start
        assert res.smallest_passing            # the set that would pass is still named, with its cost
        assert "over the budget of 1 bytes" in res.reason
        assert res.best_in_budget is None      # every layer costs more than one byte
    finally:
        ev.close()


def test_gate_out_of_budget_writes_the_best_set_within_it(rnet_eval):
    """The gate needs more fp32 layers than the byte budget pays for: the search fails, and the
    model it hands back is the best set it tried within the budget, not the all-int8 one."""
    ev, table, start = _tightened(rnet_eval, 0.999)
    try:
        from deployer.quant.mixed import layer_bytes

        costs = layer_bytes(ev, table, frozenset(), start.int8_layers)
        budget = 2 * min(costs.values())                 # one or two of the cheapest layers
        res = search(ev, table, frozenset(), start, max_fp32_layers=len(start.int8_layers), max_extra_bytes=budget)
        assert not res.passed and res.smallest_passing
        best = res.best_in_budget
        assert best is not None and best["score"] > start.score     # keeping a layer float helps here
        assert res.keep_fp32 == best["keep_fp32"] and res.evaluation.exclude == frozenset(best["keep_fp32"])
        assert res.evaluation.score == best["score"] > start.score
        assert sum(costs[n] for n in res.keep_fp32) <= budget
        assert "kept the best set within the budget" in res.reason
    finally:
        ev.close()


def test_time_budget_caps_the_set_like_the_byte_budget(rnet_eval):
    """`time_budget` (board ms per layer, from deployer.quant.speedcost) caps the walk the same way:
    no set tried or used adds more than the budget, and a layer float runs faster in pays for others."""
    ev, table, start = _tightened(rnet_eval, 0.999)
    try:
        layers = start.int8_layers
        cost = {n: 1.0 for n in layers}
        res = search(ev, table, frozenset(), start, max_fp32_layers=len(layers), time_budget=(cost, 1.5))
        walked = [s for s in res.steps if s["what"] == "cheap prefix"]
        assert walked and all(s["extra_ms"] <= 1.5 and s["fp32_layers"] == 1 for s in walked)
        assert len(res.keep_fp32) <= 1 and res.extra_bytes == {}      # no byte budget: bytes never measured
        if not res.passed:
            assert "over the budget of 1.5 ms" in res.reason and res.smallest_passing
        # one layer that is faster in float makes room for a second one within the same 1.5 ms
        fast = walked[0]["keep_fp32"][0]
        cost2 = {**cost, fast: -1.0}
        res2 = search(ev, table, frozenset(), start, max_fp32_layers=len(layers), time_budget=(cost2, 1.5))
        assert max(s["fp32_layers"] for s in res2.steps if s["what"] == "cheap prefix") >= 2
        assert all(s["extra_ms"] <= 1.5 for s in res2.steps if s["what"] == "cheap prefix")
        assert sum(cost2[k] for k in res2.keep_fp32) <= 1.5    # what is used fits, whichever way it was found
    finally:
        ev.close()
