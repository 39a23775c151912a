"""`deployer profile`, `history`, `compare`, `report`: parsing and rendering only.

The work is in deployer.profiling (sweep, store, stats, report); this module turns flags into
calls, draws progress on stderr and prints one JSON document with --json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional

import typer

from deployer.cli.common import emit_json, nonempty_path, handle_errors
from deployer.cli.render import console, out, say, table, warn
from deployer.errors import DeployerError, GateFailed

JsonOpt = typer.Option(False, "--json", help="print JSON on stdout")
ResultsOpt = typer.Option(Path("results"), "--results", help="results folder holding history.sqlite",
                          parser=nonempty_path)


def _ms(value: float) -> str:
    """Milliseconds without an exponent: an emulated board's 2440 ms read '2.44e+03' in the sweep's
    lines, its table and the recommendation (the library's formatter, so flags read the same)."""
    from deployer.profiling.stats import fmt_ms

    return fmt_ms(value)


def _progress(event: dict[str, Any]) -> None:
    """One line per sweep step, its median and each accuracy run, each naming its board."""
    kind, board = event.get("type"), event.get("board", "")
    if kind == "sweep":
        say(f"{board} [{event['step']}/{event['of']}] round {event['round']}: {event['label']}")
    elif kind == "sweep_done" and event.get("median_ms") is not None:
        say(f"{board}     median {_ms(event['median_ms'])} ms (run {event['run_id']})")
    elif kind == "accuracy":
        say(f"{board} accuracy {event['precision']}: {event['input']}")


def _render_sweep(s: dict[str, Any]) -> None:
    from deployer.profiling.stats import ci_header, ci_text

    # the header claims 95 % only when every row's interval reaches it (few samples cannot)
    rows = [[c["label"], _ms(c["median_ms"]) if c.get("median_ms") is not None else "-",
             ci_text(*(c.get("ci_ms") or [None, None])[:2], c.get("ci_level")), c.get("count"),
             "pass" if c.get("accuracy_passed") else "FAIL", len(c.get("flags") or [])] for c in s["configs"]]
    header = ci_header([c.get("ci_level") for c in s["configs"]])
    out.print(table(f"sweep {s['sweep_id']} on {s['board']}", ["setting", "median ms", header, "samples",
                                                               "accuracy", "warnings"], rows))
    for prec, acc in (s.get("accuracy") or {}).items():
        for r in acc.get("rows") or []:
            top1 = "-" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.2f}"
            console.print(f"parity {prec}: {r['ref']} vs {r['test']}: cosine mean {r['cosine_mean']:.5f}, "
                          f"min {r['cosine_min']:.5f}, top-1 {top1}", markup=False)
    if s.get("int8"):
        (say if s["int8"]["pays"] else warn)(s["int8"]["message"])
    if s.get("recommendation"):
        say(f"recommended: {s['recommendation_label']} ({_ms(s['recommendation_median_ms'])} ms); "
            f"{s.get('recommendation_reason', '')}")
    else:
        warn(f"no recommendation: {s.get('recommendation_reason')}")


def _parse_floats(text: str | None, flag: str) -> list[float]:
    """--mean/--norm: finite float32 numbers, as the profile's fields are (deployer.profile); a NaN
    norm made every parity input NaN and the gate was judged on garbage."""
    if not text:
        return []
    try:
        values = [float(v) for v in text.strip("[]").split(",") if v.strip()]
    except ValueError:
        raise DeployerError(f"{flag} {text!r}: numbers separated by commas, e.g. 123.675,116.28,103.53") from None
    if not all(math.isfinite(v) and abs(v) <= 3.4028234663852886e38 for v in values):
        raise DeployerError(f"{flag} {text!r}: expected finite 32-bit floats")
    return values


def _check_percent(value: float | None, flag: str) -> None:
    """A percentage >= 0; NaN fails too (a NaN --fail-on-regression never failed the gate)."""
    if value is not None and not 0 <= value < math.inf:
        raise DeployerError(f"{flag} must be a percentage >= 0, got {value:g}")


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def profile(
        target: str = typer.Argument(..., help="board or group name"),
        param: Path = typer.Option(..., "--param", help="ncnn .param (int8 or fp32)"),
        bin: Path = typer.Option(..., "--bin", help="ncnn .bin"),
        fp32_param: Optional[Path] = typer.Option(None, "--fp32-param", help="fp32 model of the same network"),
        fp32_bin: Optional[Path] = typer.Option(None, "--fp32-bin"),
        shape: Optional[str] = typer.Option(None, "--shape", help="input W,H,C (default: the Input layer's)"),
        sweep: List[str] = typer.Option([], "--sweep", help="AXIS=V1,V2: threads, precision (fp32,fp16,int8), powersave"),
        duration: float = typer.Option(2.0, "--duration", help="seconds per setting and round (warm-up included)"),
        rounds: int = typer.Option(2, "--rounds", help="interleaved passes over the grid"),
        gate: List[str] = typer.Option([], "--gate", help="accuracy gate vs host fp32: cosine (mean), min_cosine or top1_agreement (default cosine>=0.98)"),
        images: List[Path] = typer.Option([], "--images", help="real inputs for parity: files, folders or list.txt"),
        mean: Optional[str] = typer.Option(None, "--mean", help="preprocessing mean, e.g. 123.675,116.28,103.53"),
        norm: Optional[str] = typer.Option(None, "--norm", help="preprocessing norm, e.g. 0.017125,0.017507,0.017429"),
        pixel: str = typer.Option("RGB", "--pixel", help="pixel order the model expects (RGB, BGR, GRAY)"),
        input_blob: Optional[str] = typer.Option(None, "--input-blob"),
        output_blob: Optional[str] = typer.Option(None, "--output-blob"),
        min_effect: float = typer.Option(3.0, "--min-effect", help="% below which differences count as the same"),
        results: Path = ResultsOpt,
        targets: Optional[List[Path]] = typer.Option(None, "--targets", help="targets YAML file(s)"),
        accept_new: bool = typer.Option(False, "--accept-new", help="trust and save an unknown host key"),
        json_output: bool = JsonOpt,
    ) -> None:
        """Sweep threads x precision x powersave on a board; recommend the fastest accurate setting."""
        from deployer.cli.boards import _boards, _inventory
        from deployer.profiling import parity
        from deployer.profiling.sweep import plan_sweep, run_sweep
        from deployer.remote.runner import input_shape_from_param, parse_shape
        from deployer.remote.session import open_session

        _check_percent(min_effect, "--min-effect")
        mean_values, norm_values = _parse_floats(mean, "--mean"), _parse_floats(norm, "--norm")
        # Refused, not warned: whoever passes --mean/--norm expects the accuracy gate to judge their
        # preprocessed inputs, but without --images it judges random ones, so the recommendation
        # would rest on a check they did not ask for (and a warning scrolls away above minutes of runs).
        unused = [flag for flag, value in (("--mean", mean), ("--norm", norm)) if value is not None]
        if unused and not images:
            raise DeployerError(f"{' and '.join(unused)} only appl{'y' if len(unused) > 1 else 'ies'} with --images (the real inputs of the "
                                "accuracy check)", hint="add --images FILES, or drop " + " and ".join(unused))
        inputs = None
        if images:
            if shape:
                try:
                    dims = parse_shape(shape)
                except ValueError as err:
                    raise DeployerError(f"--shape: {err}") from None
            else:
                dims = input_shape_from_param(str(fp32_param or param), input_blob) or []
            if len(dims) < 2:
                raise DeployerError("--images needs the input size: pass --shape W,H,C")
            inputs = parity.load_inputs(images, dims[:2], mean=mean_values, norm=norm_values, pixel=pixel)
        plan = plan_sweep(param, bin, fp32_param=fp32_param, fp32_bin=fp32_bin, shape=shape, sweeps=list(sweep),
                          rounds=rounds, chunk_s=duration, gates=list(gate) or None, inputs=inputs,
                          input_blob=input_blob, output_blob=output_blob)
        inventory = _inventory(targets, target)
        boards = _boards(inventory, target)
        say(f"{len(plan.configs)} setting(s) x {plan.rounds} round(s) x {plan.chunk_s:g} s on "
            f"{', '.join(b.name for b in boards)}")
        summaries = []
        for board in boards:
            def events(e: dict[str, Any], b: str = board.name) -> None:
                _progress({"board": b, **e})

            conn, session = open_session(board, accept_new=accept_new, inventory=inventory, on_event=events)
            with conn:   # the sweep's own events carry no board: a log of a group sweep could not tell whose
                summaries.append(run_sweep(session, plan, results, on_event=events, min_effect_pct=min_effect))
        if json_output:
            emit_json(summaries[0] if len(summaries) == 1 else {"boards": summaries})
        else:
            for s in summaries:
                _render_sweep(s)
        if any(s.get("recommendation") is None for s in summaries):
            if json_output:  # the JSON above is the whole answer; only the exit code says it failed
                raise typer.Exit(1)
            raise GateFailed("no setting passed the accuracy gate on " +
                             ", ".join(s["board"] for s in summaries if s.get("recommendation") is None))

    @app.command()
    @handle_errors
    def history(
        board: Optional[str] = typer.Option(None, "--board", help="only this board"),
        model: Optional[str] = typer.Option(None, "--model", help="only this model (sha256 of .bin or .param, prefix ok)"),
        limit: Optional[int] = typer.Option(None, "--limit", help="the last N runs"),
        results: Path = ResultsOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """List stored runs (every `run` and every sweep pass), oldest first."""
        from deployer.profiling.store import list_runs, no_runs_message

        if limit is not None and limit < 1:
            raise DeployerError("--limit must be at least 1")
        runs = [r.summary() for r in list_runs(results, board=board, model=model, limit=limit)]
        if not runs:  # one line naming the folder; stdout stays a JSON list (scripts poll before the first run)
            say(no_runs_message(results, board=board, model=model))
        if json_output:
            emit_json(runs)
            return
        if not runs:
            return
        rows = [[r["id"], r["started_at"][:19], r["board"], (r["model_sha256"] or "")[:12], r["shape"] or "?",
                 r["label"] or "", _ms(r["median_ms"]) if r["median_ms"] is not None else "-",
                 ",".join(r["flags"]) or "-"] for r in runs]
        out.print(table(None, ["id", "started", "board", "model", "shape", "setting", "median ms", "warnings"], rows))

    @app.command()
    @handle_errors
    def compare(
        id_a: str = typer.Argument(..., help="baseline run id(s) (deployer history): 12, or 12,15,18"),
        id_b: str = typer.Argument(..., help="run id(s) to judge against them"),
        fail_on_regression: Optional[float] = typer.Option(
            None, "--fail-on-regression", help="exit 1 when B is slower than A by more than PCT %"),
        min_effect: float = typer.Option(3.0, "--min-effect", help="% below which differences count as the same"),
        alpha: float = typer.Option(0.05, "--alpha", help="significance level of the test"),
        results: Path = ResultsOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """Are run(s) B faster, slower or the same as run(s) A? Several runs a side judge on run medians
        (t on their log medians); one run borrows the board's run-to-run spread from the history."""
        from deployer.profiling.compare import compare_runs, parse_run_ids

        if not 0 < alpha < 1:
            raise DeployerError("--alpha must be between 0 and 1")
        _check_percent(min_effect, "--min-effect")
        _check_percent(fail_on_regression, "--fail-on-regression")
        ids_a, ids_b = parse_run_ids(id_a, "A"), parse_run_ids(id_b, "B")
        res = compare_runs(results, ids_a, ids_b, min_effect_pct=min_effect, alpha=alpha,
                           fail_on_regression_pct=fail_on_regression)
        name_a, name_b = (("run " if len(ids) == 1 else "runs ") + ",".join(map(str, ids)) for ids in (ids_a, ids_b))
        if json_output:
            emit_json(res)
        else:
            lo, hi = res["change_ci_pct"]
            spread = res["run_to_run"]
            basis = f"{res['runs_a']} vs {res['runs_b']} run(s)" + (
                f", run-to-run spread {spread['sd_pct']:.1f}% from {spread['runs']} earlier runs" if spread else "")
            if res["basis"] == "within-runs":
                basis += ", within the runs only"
            say(f"{name_b} vs {name_a}: {res['verdict'].upper()} {res['change_pct']:+.1f}% "
                f"(95% CI {lo:+.1f}% .. {hi:+.1f}%, p={res['p_value']:.2g}; {basis}); "
                f"median {_ms(res['median_a_ms'])} -> {_ms(res['median_b_ms'])} ms")
            for w in res["warnings"]:
                warn(w)
        if res.get("regression"):
            if json_output:
                raise typer.Exit(1)
            raise GateFailed(f"{name_b} is {res['change_pct']:.1f}% slower than {name_a} "
                             f"(> {fail_on_regression:g}%)")

    @app.command()
    @handle_errors
    def report(
        ids: List[int] = typer.Argument(None, help="run ids (default: the latest sweep, else the last 5 runs)"),
        out_file: Path = typer.Option(..., "--out", help="HTML file to write"),
        sweep: List[int] = typer.Option([], "--sweep", help="include this sweep (heat map, parity)"),
        results: Path = ResultsOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """One self-contained HTML report: distributions, time series, heat map, parity, context."""
        from deployer.profiling.report import write_report

        info = write_report(results, out_file, list(ids or []), list(sweep))
        if json_output:
            emit_json({"ok": True, **info})
        else:
            say(f"wrote {info['out']} ({len(info['runs'])} run(s), {len(info['sweeps'])} sweep(s), "
                f"{info['bytes'] // 1024} KiB)")
