"""deployer.profiling without boards: statistics, the sh collector on this machine, history, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from deployer.errors import DeployerError
from deployer.profiling import context as ctx
from deployer.profiling import stats as st
from deployer.profiling import store


# ------------------------------------------------------------------------------------------- stats

def test_mann_whitney_matches_scipy_with_ties() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    for shift, n1, n2 in ((0.0, 30, 40), (0.3, 50, 20), (1.0, 200, 200)):
        a = np.round(rng.normal(10, 1, n1), 1)          # rounding makes ties
        b = np.round(rng.normal(10 + shift, 1, n2), 1)
        ours = st.mann_whitney(a, b)
        ref = scipy_stats.mannwhitneyu(b, a, alternative="two-sided", method="asymptotic")
        assert ours["u"] == pytest.approx(ref.statistic)
        assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_median_ci_is_exact_order_statistic_interval() -> None:
    x = np.arange(1.0, 21.0)  # n = 20: the classic table gives ranks 6 and 15 at >= 95 %
    lo, hi, cov = st.median_ci(x, 0.95)
    assert (lo, hi) == (6.0, 15.0) and cov == pytest.approx(0.9586, abs=1e-4)
    # coverage check by simulation: the interval holds the true median about as often as it says
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        s = np.sort(rng.exponential(1.0, 25))
        lo, hi, _ = st.median_ci(s)
        hits += lo <= math.log(2) <= hi
    assert 0.94 <= hits / 2000 <= 0.99


def test_warmup_is_detected_not_assumed() -> None:
    rng = np.random.default_rng(1)
    ramp = np.linspace(30, 12, 8)
    a = st.analyze(np.r_[ramp, rng.normal(10, 0.2, 100)])
    assert a.warmup_count == 8 and a.stable and a.outliers == []
    assert a.ci_low_ms <= a.median_ms <= a.ci_high_ms and abs(a.median_ms - 10) < 0.1
    flat = st.analyze(rng.normal(10, 0.2, 100))
    assert flat.warmup_count == 0 and flat.stable
    drift = st.analyze(np.linspace(20, 10, 100))
    assert not drift.stable
    kinds = {f.kind for f in st.measurement_flags(drift)}
    assert "warmup" in kinds and "spread" in kinds


def test_outliers_are_marked_not_dropped() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(10, 0.1, 60)
    x[40] = 25.0
    a = st.analyze(x)
    assert 40 in a.outliers and a.count == 60 - a.warmup_count


def test_compare_verdicts() -> None:
    rng = np.random.default_rng(3)
    a = rng.lognormal(np.log(10), 0.03, 150)
    assert st.compare_samples(a, rng.lognormal(np.log(10), 0.03, 150)).verdict == "same"
    slow = st.compare_samples(a, rng.lognormal(np.log(13), 0.03, 150))
    assert slow.verdict == "slower" and 1.25 < slow.ratio_ci[0] <= slow.ratio <= slow.ratio_ci[1] < 1.35
    assert st.compare_samples(a, rng.lognormal(np.log(7), 0.03, 150)).verdict == "faster"
    # significant but below the noise floor: not called a regression
    tiny = st.compare_samples(a, a * 1.01, min_effect_pct=3)
    assert tiny.p_value < 0.05 and tiny.verdict == "same"
    with pytest.raises(DeployerError, match="at least 3 samples"):
        st.compare_samples([1.0], [1.0, 2.0, 3.0])


def test_student_t_matches_tables() -> None:
    for df, q in ((1, 12.706), (2, 4.303), (5, 2.571), (30, 2.042)):
        assert abs(st.t_quantile(0.95, df) - q) < 1e-3
        assert abs(st.t_p_two_sided(q, df) - 0.05) < 1e-4
    assert abs(st.t_quantile(0.99, 10) - 3.169) < 1e-3 and st.t_p_two_sided(0.0, 3) == 1.0


def _runs(rng, median_ms: float, count: int, between: float = 0.10, within: float = 0.01) -> list[np.ndarray]:
    """`count` runs: each its own level (log-normal, sd `between`), samples tight around it."""
    return [rng.lognormal(np.log(median_ms) + rng.normal(0, between), within, 100) for _ in range(count)]


def test_run_sets_do_not_call_run_to_run_noise_a_regression() -> None:
    """Same model, runs that move 10 % between them and 1 % within: judged within one run each,
    most pairs are "slower" or "faster" with tiny p; judged on 3 runs a side, or on one run each with
    the board's spread from earlier runs, about 5 % are (alpha). A real 1.6x slowdown is still found."""
    rng = np.random.default_rng(11)
    history = st.run_spread([[float(np.median(r)) for r in _runs(rng, 20.0, 4)] for _ in range(3)])
    assert history is not None and history.df == 9 and 5 < history.pct < 17
    trials = 200
    wrong = {"within": 0, "sets": 0, "history": 0}
    for _ in range(trials):
        a, b = _runs(rng, 10.0, 3), _runs(rng, 10.0, 3)
        one = st.compare_run_sets(a[:1], b[:1])
        assert one.basis == "within-runs" and one.df is None
        wrong["within"] += one.comparison.verdict != "same"
        sets = st.compare_run_sets(a, b, min_effect_pct=0)
        assert sets.basis == "runs" and (sets.runs_a, sets.runs_b) == (3, 3)
        wrong["sets"] += sets.comparison.verdict != "same"
        wrong["history"] += st.compare_run_sets(a[:1], b[:1], min_effect_pct=0, spread=history).comparison.verdict != "same"
    assert wrong["within"] > 0.5 * trials
    assert wrong["sets"] < 0.1 * trials and wrong["history"] < 0.1 * trials
    # 3 runs a side leave the t test 4 degrees of freedom; the history's repeats add 9
    slow = st.compare_run_sets(_runs(rng, 10.0, 3), _runs(rng, 16.0, 3), spread=history)
    assert slow.basis == "runs+history" and slow.df == 13
    assert slow.comparison.verdict == "slower" and slow.comparison.ratio > 1.3
    lone = st.compare_run_sets(_runs(rng, 10.0, 1), _runs(rng, 16.0, 1), spread=history)
    assert lone.basis == "runs+history" and lone.comparison.verdict == "slower" and lone.df == 9
    assert st.run_spread([[10.0, 11.0], [5.0]]) is None      # one pair: too little to lean on


def test_runs_of_two_samples_compare_on_their_medians() -> None:
    """A slow model in a 2 s sweep pass on an emulated board keeps 2-4 samples: `profile` ran every
    setting and then ended with "compare needs at least 3 samples per run", from a within-run test
    the run-median comparison does not use."""
    from deployer.profiling.sweep import TOO_FEW, recommend

    rng = np.random.default_rng(3)
    a, b = [r[:2] for r in _runs(rng, 500.0, 2)], [r[:2] for r in _runs(rng, 900.0, 2)]
    sets = st.compare_run_sets(a, b)
    assert sets.basis == "runs" and sets.comparison.verdict == "slower" and sets.comparison.n_a == 4
    spread = st.run_spread([[float(np.median(r)) for r in _runs(rng, 500.0, 3)] for _ in range(3)])
    lone = st.compare_run_sets(a[:1], b[:1], spread=spread)      # one 2-sample run a side: the spread decides
    assert lone.basis == "runs+history" and lone.comparison.verdict == "slower"
    with pytest.raises(DeployerError, match="at least 3 samples in a run that is compared alone"):
        st.compare_run_sets(a[:1], b[:1])                        # nothing to judge it on: say so

    def cfg(label: str, prec: str, runs: list[np.ndarray]) -> dict:
        return {"label": label, "settings": {"threads": 1, "precision": prec}, "accuracy_passed": True,
                "median_ms": float(np.median(np.concatenate(runs))), "ci_ms": [0, 0], "_runs": runs}

    out = recommend([cfg("fp32", "fp32", b[:1]), cfg("int8", "int8", a[:1])])
    assert out["recommendation_label"] == "int8" and TOO_FEW in out["recommendation_reason"]
    assert out["int8"]["comparison"] is None and out["int8"]["message"].startswith("cannot tell whether int8 pays")
    two = recommend([cfg("fp32", "fp32", b), cfg("int8", "int8", a)])
    assert two["int8"]["pays"] and two["int8"]["comparison"]["verdict"] == "faster"


# ------------------------------------------------------------------------------------ collector

def _fake_sysfs(root: Path, governor: str, cur: int, temp: int, throttled: str) -> None:
    for c in range(2):
        d = root / f"sys/devices/system/cpu/cpu{c}/cpufreq"
        d.mkdir(parents=True)
        for name, value in (("scaling_governor", governor), ("scaling_cur_freq", cur), ("scaling_min_freq", 600000),
                            ("scaling_max_freq", 1800000), ("cpuinfo_max_freq", 1800000)):
            (d / name).write_text(f"{value}\n")
    z = root / "sys/class/thermal/thermal_zone0"
    z.mkdir(parents=True)
    (z / "type").write_text("cpu-thermal\n")
    (z / "temp").write_text(f"{temp}\n")
    (root / "usr/bin").mkdir(parents=True)
    tool = root / "usr/bin/vcgencmd"
    tool.write_text(f"#!/bin/sh\necho throttled={throttled}\n")
    tool.chmod(0o755)


def test_collector_reads_sysfs_root_and_proc(tmp_path: Path) -> None:
    _fake_sysfs(tmp_path / "hot", "ondemand", 900000, 81500, "0x20002")
    snap = ctx.collect_local(str(tmp_path / "hot"))
    assert [c["governor"] for c in snap.cpus] == ["ondemand", "ondemand"]
    assert snap.cpus[0]["cur_khz"] == 900000 and snap.cpus[0]["cpuinfo_max_khz"] == 1800000
    assert snap.thermal == [{"zone": "thermal_zone0", "type": "cpu-thermal", "celsius": 81.5}]
    assert snap.throttled == "0x20002"
    assert snap.nproc and snap.nproc >= 1 and snap.mem_total_kb > snap.mem_available_kb > 0
    assert len(snap.loadavg) == 3 and snap.uptime_s > 0 and snap.procs
    flags = ctx.context_flags(snap, snap)
    kinds = [f.kind for f in flags]
    assert {"governor", "clock", "throttled", "temperature"} <= set(kinds)
    assert any("arm frequency capped" in f.message and "since boot" in f.message for f in flags)

    _fake_sysfs(tmp_path / "good", "performance", 1800000, 45000, "0x0")
    good = ctx.collect_local(str(tmp_path / "good"))
    assert {f.kind for f in ctx.context_flags(good, good)} <= {"load"}  # this machine's load is not ours to fix


def test_other_processes_and_temperature_rise() -> None:
    def stat(pid: int, comm: str, utime: int, stime: int) -> str:  # proc(5) layout, comm with spaces/parens
        return f"{pid} ({comm}) R 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 100 0 0"

    before = ctx.parse_snapshot("uptime 100.0\nnproc 4\nclk_tck 100\nthermal thermal_zone0 50000 cpu\n"
                                "stat-begin 77\n" + "\n".join([stat(10, "stress ng (x)", 600, 400), stat(11, "sshd", 50, 0),
                                                                stat(12, "runner", 0, 0), stat(77, "sh", 0, 0)])
                                + "\nstat-end\n")
    after = ctx.parse_snapshot("uptime 110.0\nnproc 4\nclk_tck 100\nthermal thermal_zone0 58000 cpu\n"
                               "stat-begin 78\n" + "\n".join([stat(10, "stress ng (x)", 1100, 800), stat(11, "sshd", 51, 0),
                                                               stat(13, "new", 0, 0), stat(77, "sh", 5000, 0)])
                               + "\n\nstat-end\n")
    assert 77 not in before.procs and 78 not in after.procs  # the collector's own shell is not counted
    top = ctx.other_processes(before, after)
    assert top[0] == {"pid": 10, "comm": "stress ng (x)", "cpu_pct": 90.0} and len(top) == 2
    flags = ctx.context_flags(before, after)
    assert any(f.kind == "temperature" and "50.0 -> 58.0 C" in f.message for f in flags)
    assert any(f.kind == "load" and "stress ng (x)" in f.message for f in flags)


# -------------------------------------------------------------------------------- history + report

def _record(samples: list[float], board: str = "pi", sha: str = "ab" * 32, **kw) -> dict:
    a = st.analyze(samples)
    return {"board": board, "started_at": "2026-01-01T00:00:00Z", "samples_ms": samples,
            "model_files": {"bin": {"path": "m.bin", "sha256": sha}, "param": {"path": "m.param", "sha256": "cd" * 32}},
            "options": {"threads": 1, "int8": True, "fp16": False, "powersave": 0}, "analysis": a.to_json(),
            "flags": [], "context": {}, **kw}


def test_history_and_compare(tmp_path: Path) -> None:
    from deployer.profiling.compare import compare_runs

    rng = np.random.default_rng(4)
    ids = [store.record_run(_record(list(rng.normal(10, 0.1, 80))), tmp_path),
           store.record_run(_record(list(rng.normal(10, 0.1, 80)), board="jetson"), tmp_path),
           store.record_run(_record(list(rng.normal(14, 0.1, 80)), sha="ef" * 32), tmp_path)]
    assert [r.id for r in store.list_runs(tmp_path)] == ids
    assert [r.id for r in store.list_runs(tmp_path, board="jetson")] == [ids[1]]
    assert [r.id for r in store.list_runs(tmp_path, model="efef")] == [ids[2]]
    with pytest.raises(DeployerError, match="not a sha256"):
        store.list_runs(tmp_path, model="zz")
    res = compare_runs(tmp_path, ids[0], ids[1])
    assert res["verdict"] == "same" and any("different boards" in w for w in res["warnings"])
    res = compare_runs(tmp_path, ids[0], ids[2], fail_on_regression_pct=20)
    assert res["verdict"] == "slower" and res["regression"] is True and res["ok"] is False
    assert store.list_runs(tmp_path / "empty") == []
    with pytest.raises(DeployerError, match="no run history"):
        store.get_run(tmp_path / "empty", 1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / store.DB_NAME).write_text("not sqlite")
    with pytest.raises(DeployerError, match="not a deployer history database"):
        store.list_runs(tmp_path / "bad")


def test_compare_sets_and_the_boards_run_to_run_spread(tmp_path: Path) -> None:
    """One run a side with no repeats in the history: a verdict on within-run variation only, said
    in a warning. Repeated runs of a model on the board give the spread that widens it; sets of runs
    are judged on their medians; bad run lists are one clear line."""
    from deployer.profiling.compare import compare_runs, parse_run_ids

    rng = np.random.default_rng(8)

    def put(level: float, sha: str = "ab" * 32) -> int:
        return store.record_run(_record(list(rng.lognormal(np.log(level), 0.01, 80)), sha=sha), tmp_path)

    a, b = put(10.0), put(11.5)                 # one run each, the same model: 15 % apart
    lone = compare_runs(tmp_path, a, b)
    assert lone["basis"] == "within-runs" and lone["verdict"] == "slower" and lone["run_to_run"] is None
    assert any("covers the variation within the runs" in w for w in lone["warnings"])
    repeats = [put(x, sha="ee" * 32) for x in (9.0, 10.4, 8.6, 9.9, 10.8)]   # another model, moving ~10 %
    widened = compare_runs(tmp_path, a, b)
    assert widened["basis"] == "runs+history" and widened["verdict"] == "same"
    assert widened["run_to_run"]["runs"] == 5 and widened["run_to_run"]["df"] == 4
    assert not any("covers the variation within" in w for w in widened["warnings"])
    sets = compare_runs(tmp_path, repeats[:2], repeats[2:])
    # the compared runs are left out of the spread: what remains (a, b) is one pair, too little
    assert sets["basis"] == "runs" and (sets["runs_a"], sets["runs_b"]) == (2, 3) and sets["a"] == repeats[:2]
    assert sets["run_to_run"] is None and sets["verdict"] == "same"
    assert parse_run_ids(" 3, 5,7", "A") == [3, 5, 7]
    for bad in ("3,,5", "x", "0", "-1", "3,3"):
        with pytest.raises(DeployerError, match="A "):
            parse_run_ids(bad, "A")
    with pytest.raises(DeployerError, match="on both sides"):
        compare_runs(tmp_path, [a, b], [b])


def test_history_folder_in_place_of_database_is_bad_input(tmp_path: Path, monkeypatch, capsys) -> None:
    """`history` used to list nothing (exit 0) when history.sqlite was a folder: it is bad input naming it."""
    from deployer.cli import build_app
    from deployer.cli.common import run_app

    (tmp_path / store.DB_NAME).mkdir()
    for call in (lambda: store.list_runs(tmp_path), lambda: store.get_run(tmp_path, 1),
                 lambda: store.record_run(_record([10.0] * 20), tmp_path)):
        with pytest.raises(DeployerError, match=f"{store.DB_NAME}: is a folder"):
            call()
    monkeypatch.chdir(tmp_path)
    assert run_app(build_app(), ["history", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and err.count("\n") == 1 and "Traceback" not in err


def test_history_and_compare_do_not_write_the_database(tmp_path: Path) -> None:
    """The readers ran CREATE TABLE IF NOT EXISTS / INSERT on the user's file; they open it read-only
    now and check the schema by reading."""
    import sqlite3
    from contextlib import closing

    from deployer.profiling.compare import compare_runs

    rid = store.record_run(_record([10.0] * 20), tmp_path)
    db = tmp_path / store.DB_NAME
    with closing(sqlite3.connect(str(db))) as con, con:  # as an older or hand-pruned file: no meta, no index
        con.executescript("DROP TABLE meta; DROP INDEX runs_board; DROP INDEX runs_model;")
    before = db.read_bytes()
    assert [r.id for r in store.list_runs(tmp_path)] == [rid]
    assert compare_runs(tmp_path, rid, rid)["verdict"] == "same"
    assert list(store.iter_sweeps(tmp_path)) == []
    assert db.read_bytes() == before
    # another program's database: refused by reading, and left as it was
    other = tmp_path / "other"
    other.mkdir()
    with closing(sqlite3.connect(str(other / store.DB_NAME))) as con, con:
        con.execute("CREATE TABLE runs (id INTEGER, name TEXT)")
    before = (other / store.DB_NAME).read_bytes()
    for call in (lambda: store.list_runs(other), lambda: store.get_run(other, 1)):
        with pytest.raises(DeployerError, match="not a deployer history database .*table runs has no column"):
            call()
    assert (other / store.DB_NAME).read_bytes() == before
    # a file a writer has just created (no tables yet) is no history yet, as no file is
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / store.DB_NAME).write_bytes(b"")
    assert store.list_runs(empty) == []
    with pytest.raises(DeployerError, match="no run history yet"):
        store.get_run(empty, 1)
    assert (empty / store.DB_NAME).read_bytes() == b""


def test_history_during_the_first_run_sees_no_schema_or_all_of_it(tmp_path: Path, monkeypatch) -> None:
    """`history` while the first `run` created history.sqlite saw `runs` without `sweeps` (each CREATE
    was committed alone) and called the file "not a deployer history database"; the schema is one
    transaction now. A reader is run at each statement of the writer's schema script."""
    import sqlite3

    seen: list[object] = []
    connect = sqlite3.connect

    def traced(database, *args, **kw):
        con = connect(database, *args, **kw)
        if not kw.get("uri"):   # the writer: read the history at every statement it runs
            con.set_trace_callback(lambda sql: seen.append(_reader(store.list_runs, tmp_path)))
        return con

    monkeypatch.setattr(sqlite3, "connect", traced)
    store.record_run(_record([10.0] * 20), tmp_path)
    assert seen and all(r == [] for r in seen), seen


def _reader(fn, *args):
    try:
        return fn(*args)
    except DeployerError as err:
        return str(err)


@pytest.mark.parametrize("data, says", [
    ("{not json", "not JSON"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"analysis": 5, "flags": "ab", "model_files": []}', "analysis is a int, not a dict"),
    # inside the parts (ValueError / TypeError in compare and report before)
    ('{"samples_ms": [1.0, "x", 3.0]}', "samples_ms holds something that is not a finite number"),
    ('{"samples_ms": [1.0, 2.0, 3.0], "analysis": {"warmup_count": "x"}}', "analysis.warmup_count is 'x', not a count"),
    ('{"flags": [1]}', "flags holds something that is not an object"),
])
def test_damaged_history_row_is_one_line_not_a_crash(tmp_path: Path, data: str, says: str) -> None:
    """A hand-edited or half-restored row used to crash history/compare/report (JSONDecodeError,
    AttributeError: exit 4); it is bad input naming the row."""
    import sqlite3
    from contextlib import closing

    from deployer.profiling.compare import compare_runs
    from deployer.profiling.report import write_report

    rid = store.record_run(_record([10.0] * 20), tmp_path)
    with closing(sqlite3.connect(str(tmp_path / store.DB_NAME))) as con, con:
        con.execute("UPDATE runs SET data = ? WHERE id = ?", (data, rid))
    for call in (lambda: store.list_runs(tmp_path), lambda: compare_runs(tmp_path, rid, rid),
                 lambda: write_report(tmp_path, tmp_path / "r.html", [rid], [])):
        with pytest.raises(DeployerError, match=f"run {rid} is damaged: its data is .*{says}"):
            call()
    assert not (tmp_path / "r.html").exists()


def test_report_is_self_contained(tmp_path: Path) -> None:
    from deployer.profiling.report import write_report

    rng = np.random.default_rng(6)
    samples = list(np.r_[np.linspace(20, 11, 6), rng.normal(10, 0.2, 60)])
    rec = _record(samples, layers={"layers": [{"name": "conv1", "type": "Convolution", "median_ms": 1.5},
                                              {"name": "fc", "type": "InnerProduct", "median_ms": 0.2}]})
    rec["flags"] = [{"kind": "governor", "message": "cpufreq governor powersave <b>"}]
    rid = store.record_run(rec, tmp_path)
    rid2 = store.record_run(_record(list(rng.normal(12, 0.2, 60))), tmp_path)
    info = write_report(tmp_path, tmp_path / "r.html", [rid, rid2], [])
    page = (tmp_path / "r.html").read_text()
    assert info["runs"] == [rid, rid2] and info["bytes"] == len(page.encode())
    assert "powersave &lt;b&gt;" in page                        # escaped
    assert page.count("data:image/png;base64,") == 3             # 2 runs + per-layer bars
    assert "slower" in page and "http" not in page
    with pytest.raises(DeployerError, match="name it"):
        write_report(tmp_path, tmp_path / "r.pdf", [rid], [])
    with pytest.raises(DeployerError, match="run 99"):
        write_report(tmp_path, tmp_path / "x.html", [99], [])


def test_sweep_axes_are_validated(tmp_path: Path) -> None:
    from deployer.profiling.sweep import interleaved, parse_sweeps

    assert parse_sweeps(["threads=1,2,4", "precision=fp32,int8", "powersave=0,2"]) == {
        "threads": [1, 2, 4], "precision": ["fp32", "int8"], "powersave": [0, 2]}
    for bad, msg in ((["thread=1"], "unknown axis"), (["threads=0"], "1 to 256"), (["threads=999"], "1 to 256"), (["precision=bf16"], "unknown bf16"),
                     (["threads=1", "threads=2"], "twice"), (["powersave=3"], "0, 1 or 2"), (["threads"], "AXIS="),
                     # int() reads "1_0" as 10 and takes non-ASCII digits
                     (["threads=1_0"], "must be integers"), (["powersave=0_1"], "must be integers"),
                     (["threads=\u0663"], "must be integers")):
        with pytest.raises(DeployerError, match=msg):
            parse_sweeps(bad)
    order = [c["t"] for _, c in interleaved([{"t": 1}, {"t": 2}, {"t": 3}], 3)]
    assert order == [1, 2, 3, 3, 2, 1, 1, 2, 3]


@pytest.mark.parametrize("args, needle", [
    # each was accepted: a NaN --fail-on-regression never failed the gate, NaN --min-effect judged
    # nothing "same", a NaN --norm fed NaN inputs to the parity check, 2 means for RGB were taken
    (["compare", "1", "2", "--fail-on-regression", "nan"], "--fail-on-regression must be a percentage"),
    (["compare", "1", "2", "--min-effect", "nan"], "--min-effect must be a percentage"),
    (["profile", "b", "--param", "m.param", "--bin", "m.bin", "--min-effect", "nan"], "--min-effect must be"),
    (["profile", "b", "--param", "m.param", "--bin", "m.bin", "--norm", "nan,1,1"], "--norm 'nan,1,1': expected finite"),
    (["profile", "b", "--param", "m.param", "--bin", "m.bin", "--mean", "1e39,0,0"], "--mean .*expected finite"),
    (["profile", "b", "--param", "m.param", "--bin", "m.bin", "--mean", "a,b,c"], "--mean 'a,b,c': numbers"),
    (["profile", "b", "--param", "m.param", "--bin", "m.bin", "--images", "x.png", "--shape", "8,8,3",
      "--mean", "1,2"], "--mean has 2 values but --pixel RGB has 3 channels"),
    # were validated, then silently ignored: without --images the parity check uses random inputs
    (["profile", "b", "--param", "m.param", "--bin", "m.bin", "--mean", "1,2,3"], r"^--mean only applies with --images"),
    (["profile", "b", "--param", "m.param", "--bin", "m.bin", "--mean", "1,2,3", "--norm", "1,1,1"],
     r"^--mean and --norm only apply with --images"),
])
def test_profile_and_compare_numbers_are_checked_first(tmp_path: Path, monkeypatch, capsys, args: list[str],
                                                        needle: str) -> None:
    import re

    from deployer.cli import build_app
    from deployer.cli.common import run_app
    monkeypatch.chdir(tmp_path)
    store.record_run(_record([10.0] * 20), tmp_path / "results")
    store.record_run(_record([10.0] * 20), tmp_path / "results")
    assert run_app(build_app(), [*args, "--json"]) == 2
    err = capsys.readouterr()
    assert re.search(needle, json.loads(err.out)["error"]), err.out
    assert err.err.count("\n") == 1 and "Traceback" not in err.err


def test_sweep_plan_picks_models_per_precision(tmp_path: Path) -> None:
    from deployer.profiling.sweep import plan_sweep
    from tests.fixtures.runner import build_tiny_models

    m = build_tiny_models(tmp_path / "m", size=16)
    plan = plan_sweep(m.int8_param, m.int8_bin, fp32_param=m.fp32_param, fp32_bin=m.fp32_bin, shape=None,
                      sweeps=["threads=1,2", "precision=fp32,fp16,int8"])
    assert len(plan.configs) == 6 and plan.models["int8"].param == m.int8_param
    assert plan.models["fp16"].param == plan.models["fp32"].param == m.fp32_param
    assert plan.label(plan.configs[0]) == "threads=1 precision=fp32"
    with pytest.raises(DeployerError, match="precision=fp32 needs the fp32 model"):
        plan_sweep(m.int8_param, m.int8_bin, fp32_param=None, fp32_bin=None, shape=None, sweeps=["precision=fp32"])
    with pytest.raises(DeployerError, match="is not an int8 model"):
        plan_sweep(m.fp32_param, m.fp32_bin, fp32_param=None, fp32_bin=None, shape=None, sweeps=["precision=int8"])
    with pytest.raises(DeployerError, match="--fp32-param and --fp32-bin go together"):
        plan_sweep(m.int8_param, m.int8_bin, fp32_param=m.fp32_param, fp32_bin=None, shape=None, sweeps=[])
    with pytest.raises(DeployerError, match="profile gates use cosine .* min_cosine .* or top1_agreement"):
        plan_sweep(m.int8_param, m.int8_bin, fp32_param=None, fp32_bin=None, shape=None, sweeps=[],
                   gates=["psnr>=30"])
    # 1e308 s per setting never ended and NaN passed; /dev/zero or a folder was "no such file"
    for chunk_s in (1e308, float("nan"), 0.0):
        with pytest.raises(DeployerError, match="--duration must be positive .*at most 604800"):
            plan_sweep(m.int8_param, m.int8_bin, fp32_param=None, fp32_bin=None, shape=None, sweeps=[], chunk_s=chunk_s)
    assert plan_sweep(m.int8_param, m.int8_bin, fp32_param=None, fp32_bin=None, shape=None, sweeps=[],
                      chunk_s=7 * 86400).chunk_s == 7 * 86400
    for path, says in (("/dev/zero", "not a regular file"), (tmp_path, "is a folder, not a regular file")):
        with pytest.raises(DeployerError, match=f"^--fp32-bin {path}: {says}"):
            plan_sweep(m.int8_param, m.int8_bin, fp32_param=m.fp32_param, fp32_bin=path, shape=None, sweeps=[])


def test_sweep_section_heat_map_and_recommendation() -> None:
    from deployer.profiling.report import render
    from deployer.profiling.sweep import recommend

    rng = np.random.default_rng(7)
    configs = []
    for threads in (1, 2):
        for prec, base in (("fp32", 40.0), ("int8", 12.0)):
            rounds = [list(rng.normal(base / threads * rng.normal(1, 0.03), 0.2, 25)) for _ in range(2)]
            a = st.analyze(rounds[0] + rounds[1])
            configs.append({"label": f"threads={threads} precision={prec}", "median_ms": a.median_ms,
                            "settings": {"threads": threads, "precision": prec}, "ci_ms": [a.ci_low_ms, a.ci_high_ms],
                            "accuracy_passed": prec == "fp32" or threads == 1, "_runs": rounds, "run_ids": []})
    rec = recommend(configs)
    # threads=2 int8 is fastest but fails the gate: the fastest passing setting is threads=1 int8 (12 ms)
    # vs threads=2 fp32 (20 ms)
    assert rec["recommendation"] == {"threads": 1, "precision": "int8"}
    assert rec["int8"]["pays"] and rec["int8"]["message"].startswith("int8 pays on this board: int8 (threads=1")
    for c in configs:  # no int8 setting passes: int8 is faster but not usable
        c["accuracy_passed"] = c["settings"]["precision"] == "fp32"
    rec_gate = recommend(configs)
    assert rec_gate["recommendation"] == {"threads": 2, "precision": "fp32"}
    assert rec_gate["int8"]["faster"] and not rec_gate["int8"]["pays"]
    assert rec_gate["int8"]["message"].startswith("int8 is faster but fails the accuracy gate")
    # judged on the rounds' medians, with the other settings' rounds giving the run-to-run spread
    assert "2 vs 2 run(s)" in rec_gate["int8"]["comparison"]["reason"]
    for c in configs:
        c.pop("_runs")
    page = render([], [{"sweep_id": 1, "board": "pi", "configs": configs, "accuracy": {}, **rec}])
    assert "Recommended: threads=1 precision=int8" in page and page.count("data:image/png;base64,") == 1


def test_layer_bars_read_what_run_layers_stores() -> None:
    """The report draws the per-layer bars from the exact dict `deployer run --layers` stores
    (deployer.native.layers.report), named by the .param's layer names, slowest first."""
    from deployer.native.layers import report as layers_report
    from deployer.profiling.report import layer_plot

    line = {"layers": [{"index": 0, "name": "conv_stem", "type": "Convolution", "ms": [4.0, 5.0, 6.0]},
                       {"index": 1, "name": "relu_1", "type": "ReLU", "ms": [0.2, 0.1, 0.3]}]}
    stored = layers_report(line, network_median_ms=5.5)
    html = layer_plot(stored)
    assert html.startswith("<h3>Per-layer time</h3>") and "data:image/png;base64," in html
    assert layer_plot({"layers": {}, "types": {}, "sum_median_ms": 0.0}) == ""   # no layers: no plot, no junk bars
