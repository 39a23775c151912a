"""What a run measured (its setup: shape, input, runtime...), the interval levels printed with few
samples, milliseconds without exponents, and a `history` that finds nothing: the walkthrough's
profiling findings, without boards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from deployer.errors import DeployerError
from deployer.profiling import stats as st
from deployer.profiling import store


def _record(samples: list[float], *, shape: list[int] | None = (224, 224, 3), sha: str = "ab" * 32,
            board: str = "pi", runtime: str = "native", **options) -> dict:
    """A run record as `deployer run` stores it: the runner's options (with the final line's shape
    and blobs), the runtime, the analysis."""
    opts = {"threads": 1, "powersave": 0, "int8": True, "fp16": False, "winograd": True, "sgemm": True,
            "fill": "random", "seed": 0, "duration_s": 3.0, "output_blob": "out", "input_blob": "in", **options}
    if shape is not None:
        opts["shape"] = list(shape)
    return {"board": board, "started_at": "2026-01-01T00:00:00Z", "samples_ms": samples,
            "model_files": {"bin": {"path": "m.bin", "sha256": sha}, "param": {"path": "m.param", "sha256": sha}},
            "options": opts, "runtime": {"kind": runtime, "version": "1.0.20240410", "path": "/x"},
            "analysis": st.analyze(samples).to_json(), "flags": [], "context": {}}


def _put(tmp_path: Path, level: float, rng, **kw) -> int:
    return store.record_run(_record(list(rng.lognormal(np.log(level), 0.01, 60)), **kw), tmp_path)


# ------------------------------------------------------------------ 1. the setup is part of a run

def test_run_setup_holds_what_changes_the_measured_work() -> None:
    setup = store.run_setup(_record([10.0] * 10))
    assert setup["shape"] == "224x224x3" and setup["runtime"] == "native" and setup["ncnn"] == "1.0.20240410"
    assert {"threads", "fp16", "int8", "powersave", "winograd", "sgemm", "fill", "output_blob"} <= set(setup)
    # how long and which random values are not what was measured
    assert not {"duration_s", "seed", "iterations", "warmup"} & set(setup)
    assert store.setup_differences(setup, store.run_setup(_record([1.0] * 10, shape=(48, 48, 3), runtime="python"))) \
        == ["shape 224x224x3 -> 48x48x3", "runtime native -> python"]


def test_compare_names_a_different_shape_and_a_gate_refuses_it(tmp_path: Path) -> None:
    """`compare 1 5` of 224x224 against 48x48 said FASTER -94 % with no word about the shape."""
    from deployer.profiling.compare import compare_runs

    rng = np.random.default_rng(1)
    big, small = _put(tmp_path, 1000.0, rng), _put(tmp_path, 57.0, rng, shape=(48, 48, 3))
    res = compare_runs(tmp_path, big, small)
    assert res["verdict"] == "faster" and res["same_setup"] is False and res["setup"]["shape"] == "224x224x3"
    assert any(f"run {big} vs run {small}: shape 224x224x3 -> 48x48x3" in w for w in res["warnings"]), res["warnings"]
    with pytest.raises(DeployerError, match="--fail-on-regression compares runs of one setup; .*224x224x3 -> 48x48x3"):
        compare_runs(tmp_path, big, small, fail_on_regression_pct=5)
    # another model (its own blob names) with the same setup: no warning, and the gate judges it
    other = _put(tmp_path, 1010.0, rng, sha="cd" * 32, output_blob="prob")
    res = compare_runs(tmp_path, big, other, fail_on_regression_pct=5)
    assert res["same_setup"] and not any("different options" in w for w in res["warnings"]) and res["ok"]
    # the same model with another output blob is other work
    cut = _put(tmp_path, 600.0, rng, output_blob="conv5")
    assert any("output_blob out -> conv5" in w for w in compare_runs(tmp_path, big, cut)["warnings"])


def test_compare_command_prints_the_difference_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from deployer.cli import build_app
    from deployer.cli.common import run_app

    monkeypatch.setenv("COLUMNS", "300")
    rng = np.random.default_rng(5)
    big, small = _put(tmp_path, 1080.0, rng), _put(tmp_path, 57.0, rng, shape=(48, 48, 3))
    assert run_app(build_app(), ["compare", str(big), str(small), "--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "FASTER" in err and re.search(r"median 10\d\d -> 5\d(\.\d)? ms", err) and "e+0" not in err, err
    assert f"different options (run {big} vs run {small}: shape 224x224x3 -> 48x48x3)" in err, err
    assert run_app(build_app(), ["compare", str(big), str(small), "--results", str(tmp_path),
                                 "--fail-on-regression", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shape 224x224x3 -> 48x48x3" in err and "Traceback" not in err, err


def test_run_to_run_spread_does_not_pool_shapes(tmp_path: Path) -> None:
    """Repeats of one model at two shapes were one group: the spread was the shapes' difference."""
    from deployer.profiling.compare import board_spread

    rng = np.random.default_rng(2)
    for _ in range(3):
        _put(tmp_path, 1000.0, rng)
        _put(tmp_path, 57.0, rng, shape=(48, 48, 3))
    spread = board_spread(tmp_path, {"pi"}, set())
    assert spread is not None and spread.groups == 2 and spread.pct < 5, spread


def test_history_shows_the_shape(tmp_path: Path, monkeypatch, capsys) -> None:
    from deployer.cli import build_app
    from deployer.cli.common import run_app

    monkeypatch.setenv("COLUMNS", "200")
    rid = store.record_run(_record([10.0] * 20, shape=(48, 48, 3)), tmp_path)
    assert run_app(build_app(), ["history", "--results", str(tmp_path), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["id"] == rid and row["shape"] == "48x48x3" and row["options"]["runtime"] == "native"
    assert run_app(build_app(), ["history", "--results", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "shape" in text and "48x48x3" in text


# ------------------------------------------------------- 2. interval levels and milliseconds

def test_interval_levels_are_printed_as_they_are() -> None:
    """Order statistics give discrete levels: >= 95 % prints as 95 %, fewer than 6 samples cannot
    reach it and print their own level (2 samples: 50 %), never '96%' here and '95%' there."""
    def max_median_coverage(n: int) -> float:   # that of [min, max], the widest order-statistic interval
        return 0.0 if n < 2 else 1.0 - 2.0 * 0.5 ** n

    assert [round(max_median_coverage(n), 4) for n in (1, 2, 3, 5, 6)] == [0.0, 0.5, 0.75, 0.9375, 0.9688]
    assert st.ci_label(0.9586) == st.ci_label(0.9805) == st.ci_label(0.95) == "95%"
    assert (st.ci_label(0.75), st.ci_label(0.5), st.ci_label(0.9375), st.ci_label(0.0)) == ("75%", "50%", "93.7%", "no")
    assert st.ci_text(2570.4, 2871.0, 0.5) == "[2570, 2871] (50% CI)"
    assert st.ci_text(2570.4, 2871.0, 0.96) == "[2570, 2871]" == st.ci_text(2570.4, 2871.0, None)
    assert st.ci_text(5.0, 5.0, 0.0) == "-"
    assert st.ci_header([0.96, 0.98]) == "95% CI" and st.ci_header([0.96, 0.75]) == "CI (95% unless marked)"
    for n in (2, 3, 4, 5, 6, 20, 60):   # what analyze stores is what is printed
        a = st.analyze(list(np.linspace(1000, 1400, n)), warmup_window=n + 1)
        assert a.ci_level == pytest.approx(max_median_coverage(n) if n < 6 else a.ci_level, abs=1e-4)
        assert (st.ci_label(a.ci_level) == "95%") == (n >= 6)


def test_flags_print_milliseconds_and_the_true_level() -> None:
    few = st.analyze([2570.0, 4730.0, 2871.0], warmup_window=4)
    msgs = [f.message for f in st.measurement_flags(few)]
    uncertain = next(m for m in msgs if m.startswith("median uncertain"))
    assert uncertain.startswith("median uncertain: 75% CI [2570, 4730] ms") and "only 3 samples" in uncertain
    assert not any("e+0" in m for m in msgs), msgs
    many = st.analyze(list(np.random.default_rng(3).lognormal(np.log(1080), 0.2, 60)), warmup_window=61)
    uncertain = next(f.message for f in st.measurement_flags(many) if f.message.startswith("median uncertain"))
    assert uncertain.startswith("median uncertain: 95% CI [") and "only" not in uncertain
    assert [st.fmt_ms(v) for v in (1080.4, 4730.0, 48.25, 0.5123)] == ["1080", "4730", "48.2", "0.512"]


def _text(page: str) -> str:
    return re.sub(r'data:image/png;base64,[^"]+', "", page)


def test_report_headers_do_not_claim_95_for_a_50_percent_interval(tmp_path: Path) -> None:
    from deployer.profiling.report import render, write_report

    rid = store.record_run(_record([2570.0, 2871.0]), tmp_path)
    write_report(tmp_path, tmp_path / "r.html", [rid], [])
    page = _text((tmp_path / "r.html").read_text())
    assert ">50% CI</th>" in page and "95% CI" not in page and "[2570, 2871]" in page
    assert "e+0" not in page and "shape 224x224x3" in page
    configs = [{"label": "threads=1 precision=fp32", "settings": {"threads": 1, "precision": "fp32"},
                "median_ms": 2720.0, "ci_ms": [2570.0, 2871.0], "ci_level": 0.5, "count": 2, "mad_ms": 150.0,
                "accuracy_passed": True, "run_ids": [rid]},
               {"label": "threads=2 precision=fp32", "settings": {"threads": 2, "precision": "fp32"},
                "median_ms": 1480.0, "ci_ms": [1400.0, 1550.0], "ci_level": 0.96, "count": 40, "mad_ms": 40.0,
                "accuracy_passed": True, "run_ids": []}]
    page = _text(render([], [{"sweep_id": 1, "board": "pi", "configs": configs, "accuracy": {},
                              "recommendation": {"threads": 2}, "recommendation_label": "threads=2 precision=fp32",
                              "recommendation_median_ms": 1480.0}]))
    assert "CI (95% unless marked)" in page and "[2570, 2871] (50% CI)" in page and "[1400, 1550]<" in page
    assert "1480 ms" in page and "e+0" not in page


def test_sweep_table_marks_the_rows_below_95(capsys, monkeypatch) -> None:
    from deployer.cli.profile import _render_sweep

    monkeypatch.setenv("COLUMNS", "200")
    configs = [{"label": "threads=1", "median_ms": 2720.0, "ci_ms": [2570.0, 2871.0], "ci_level": 0.5, "count": 2,
                "accuracy_passed": True, "flags": []},
               {"label": "threads=2", "median_ms": 1480.0, "ci_ms": [1400.0, 1550.0], "ci_level": 0.96, "count": 40,
                "accuracy_passed": True, "flags": []}]
    _render_sweep({"sweep_id": 1, "board": "pi", "configs": configs, "recommendation": {"threads": 2},
                   "recommendation_label": "threads=2", "recommendation_median_ms": 1480.0})
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "CI (95% unless marked)" in text and "(50% CI)" in text and "[1400, 1550]" in text
    assert "e+0" not in text and "1480 ms" in text


# ----------------------------------------------------------------- 3. a history that finds nothing

def test_history_that_finds_nothing_says_where_it_looked(tmp_path: Path, monkeypatch, capsys) -> None:
    """`history --board pi4` (no runs there) or run from another folder printed an empty table."""
    from deployer.cli import build_app
    from deployer.cli.common import run_app

    store.record_run(_record([10.0] * 20), tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert run_app(build_app(), ["history", "--board", "pi4"]) == 0
    cap = capsys.readouterr()
    folder = (tmp_path / "results").resolve()
    assert cap.err.strip() == f"no stored runs of board pi4 in {folder} (boards with runs: pi)", cap.err
    assert cap.out.strip() == ""
    assert run_app(build_app(), ["history", "--board", "pi4", "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out) == [] and str(folder) in cap.err and cap.err.count("\n") == 1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_app(build_app(), ["history"]) == 0
    cap = capsys.readouterr()
    assert cap.err.strip() == (f"no stored runs in {(elsewhere / 'results').resolve()} (no {store.DB_NAME} there); "
                               "pass --results FOLDER if the runs were saved elsewhere"), cap.err
    assert run_app(build_app(), ["history", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
