"""Fleet commands: deploy, rollback, releases, rollout, status. Parsing and rendering only.

The work is in deployer.fleet (service.py); this module turns flags into its calls, draws a live
view on stderr while boards work, and prints the report (a table, or one JSON document with
--json in which every board's object carries `board`, `ok` and `release`).
"""

from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.table import Table

from deployer.cli.boards import _boards, _inventory
from deployer.cli.common import console, emit_json, handle_errors, nonempty_path, out
from deployer.cli.progress import Status
from deployer.cli.render import error, line, say
from deployer.cli.render import note as render_note

TargetsOpt = typer.Option(None, "--targets", help="targets YAML file(s); default: targets/*.yaml in the current folder")
JsonOpt = typer.Option(False, "--json", help="print one JSON document on stdout")
AcceptNewOpt = typer.Option(False, "--accept-new", help="trust and save an unknown host key (never a changed one)")
ModelOpt = typer.Option(None, "--model", help="the folder `deployer quantize` wrote (e.g. build/mobilenet_v2_int8)",
                        parser=nonempty_path)
ProfileOpt = typer.Option(None, "--profile", help="a deployment profile; its `out:` folder is deployed, the profile "
                          "rides along", parser=nonempty_path)
ExecutorOpt = typer.Option("local", "--executor", help="local (thread pool) or dask://HOST:PORT (a Dask scheduler)")
ParallelOpt = typer.Option(50, "--max-parallel", help="boards worked on at once")
PlanOpt = typer.Option(False, "--plan", help="print the plan and stop (no board is contacted)")
NoHealthOpt = typer.Option(False, "--no-health", help="switch without running the release on the board first")
CosineOpt = typer.Option(0.99, "--min-cosine", help="health gate where bit-identity is not expected (other ncnn build, armv7)")
LatencyOpt = typer.Option(None, "--max-latency", help="health gate: median latency budget on the board, ms")
KeepOpt = typer.Option(3, "--keep", help="previous releases kept on each board")
LockWaitOpt = typer.Option(10.0, "--lock-wait", help="seconds to wait for another deploy's board lock")
DeadlineOpt = typer.Option(600.0, "--deadline", help="seconds one board may take before it is failed")
StateOpt = typer.Option(Path("rollouts"), "--state", help="folder for rollout state (resume, rollback --rollout)",
                        parser=nonempty_path)
PersistOpt = typer.Option(None, "--persist", help="keep board connections open this many seconds after the command "
                          "in a background controller, for the next fleet command (0: off; default "
                          "$DEPLOYER_PERSIST, else 60, or 0 when $CI is set)")
ShapeOpt = typer.Option(None, "--shape", help="the model's input W,H,C for the health check, when its Input layer "
                        "has no size (without it such a model is refused unless --no-health)")
WavesOpt = typer.Option("1,10%,50%,100%", "--waves", help="cumulative wave targets: counts or shares of the group; "
                        "when the last is under the whole group, a last wave to 100% is added")
RuntimeOpt = typer.Option(None, "--runtime", help="runtime for the health check: native, python or auto "
                          "(default: each board's `runtime:`)")


def _call(executor: str, persist: Optional[float]) -> Any:
    """service.<name>(...) through the persistent controller (local executor) or in this process."""
    import functools
    import os

    from deployer.errors import DeployerError
    from deployer.fleet import controller
    from deployer.fleet.executor import parse_executor

    source = "--persist"
    if persist is None:
        # a CI job must not leave a process behind it: there the default is off
        env = os.environ.get("DEPLOYER_PERSIST", "0" if os.environ.get("CI") else "60")
        source = f"DEPLOYER_PERSIST={env!r}"     # a bad value is named where the user set it
        try:
            persist = float(env)
        except ValueError:
            raise DeployerError(f"{source}: give seconds (0 turns the controller off)") from None
    if not 0 <= persist < math.inf:     # NaN fails too; inf would leave a controller running for ever
        raise DeployerError(f"{source} must be 0 (off) or a number of seconds")
    spec = parse_executor(executor)
    return spec, functools.partial(controller.call, persist=persist if spec.local else 0)


def _options(*, no_health: bool = False, min_cosine: float = 0.99, max_latency: Optional[float] = None,
             keep: int = 3, lock_wait: float = 10.0, deadline: float = 600.0, accept_new: bool = False,
             runtime: Optional[str] = None) -> Any:
    from deployer.errors import DeployerError
    from deployer.fleet.health import HealthPolicy
    from deployer.fleet.ops import DeployOptions
    from deployer.remote.lock import MAX_LOCK_WAIT_S

    if keep < 0:
        raise DeployerError("--keep must be 0 or more")
    if not 0 < min_cosine <= 1:
        raise DeployerError("--min-cosine must be in (0, 1]")
    # `not a < x < b` rather than `x <= a`: NaN passes every plain comparison, and a NaN or
    # infinite deadline never fires (a stuck board would hang the command), a NaN latency budget
    # never fails; a NaN lock wait became 0 and inf crashed (int(inf)) on the way to the board.
    if not (0 < deadline < math.inf and 0 <= lock_wait <= MAX_LOCK_WAIT_S):
        raise DeployerError(f"--deadline must be positive and --lock-wait 0 to {MAX_LOCK_WAIT_S} (seconds)")
    if max_latency is not None and not 0 < max_latency < math.inf:
        raise DeployerError("--max-latency must be a positive number of milliseconds")
    if runtime not in (None, "native", "python", "auto"):
        raise DeployerError(f"--runtime {runtime!r}: use native, python or auto")
    return DeployOptions(HealthPolicy(enabled=not no_health, min_cosine=min_cosine, max_latency_ms=max_latency),
                         keep=keep, lock_wait=lock_wait, deadline=deadline, accept_new=accept_new, runtime=runtime)


class FleetView:
    """Live per-board rows on stderr: a table on a terminal; elsewhere one line per board result and,
    while boards work, a summary every DEPLOYER_PROGRESS_SECONDS (a one-board deploy over a slow
    link left a CI log silent for its whole upload and health check)."""

    MAX_ROWS = 24
    MAX_NAMED = 4     # boards in flight named in a plain summary line

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total = title, total
        self.rows: dict[str, dict[str, Any]] = {}
        self.note = ""
        self.lock = threading.Lock()
        self.plain = not console.is_terminal
        if self.plain:
            self.live: Any = Status(self.summary, console=console)
        else:
            from rich.live import Live   # only on a terminal

            self.live = Live(self.render(), console=console, refresh_per_second=4, transient=False)

    def summary(self) -> str:
        """One line: how many boards are done, and what the ones in flight are doing."""
        with self.lock:
            rows = dict(self.rows)
            busy = [(name, r) for name, r in sorted(rows.items()) if r["stage"] not in ("done", "failed")]
            done = len(rows) - len(busy)
            failed = sum(1 for r in rows.values() if r["stage"] == "failed")
            named = ", ".join(f"{name} {r['stage']} {r['progress']}".rstrip() for name, r in busy[: self.MAX_NAMED])
            more = f" (+{len(busy) - self.MAX_NAMED} more)" if len(busy) > self.MAX_NAMED else ""
            return (f"{self.title}: {done}/{self.total} done, {failed} failed"
                    + (f"; {self.note}" if self.note else "") + (f"; {named}{more}" if named else ""))

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            kind = event.get("type")
            if kind == "wave":
                self.note = f"wave {event['wave']}/{event['of']}: {event['boards']} board(s)" + \
                    (" (added: a last wave to 100%)" if event.get("added") else "")
                if self.plain:
                    say(f"{self.title}: {self.note}")
            elif kind == "bake":
                self.note = f"baking wave {event['wave']} for {event['seconds']:g} s"
                if self.plain:
                    say(f"{self.title}: {self.note}")
            elif "board" in event and "stage" in event:
                row = self.rows.setdefault(event["board"], {"stage": "", "progress": "", "result": ""})
                if row["stage"] != event["stage"]:
                    row["progress"] = ""
                row["stage"] = event["stage"]
                if "done" in event and event.get("total"):
                    row["progress"] = f"{100 * event['done'] // max(1, event['total'])}%"
                if event["stage"] in ("done", "failed"):
                    row["result"] = (event.get("action") or "ok") if event.get("ok") else (event.get("error") or "failed")
                    if self.plain:
                        say(self._result_line(event["board"], event, row["result"]))
            if not self.plain:
                self.live.update(self.render())

    def _result_line(self, board: str, event: dict[str, Any], result: str) -> str:
        if event.get("ok"):
            return f"{self.title}: {board}: ok {event.get('release') or ''} ({result})"
        from deployer.fleet.ops import board_error   # the board named once, however the error began

        return f"{self.title}: FAILED {board_error(board, result)}"

    def render(self) -> Table:
        rows = self.rows
        done = sum(1 for r in rows.values() if r["stage"] in ("done", "failed"))
        failed = sum(1 for r in rows.values() if r["stage"] == "failed")
        table = Table(title=f"{self.title}: {done}/{self.total} done, {failed} failed  {self.note}",
                      title_justify="left")
        for col in ("board", "stage", "progress", "result"):
            table.add_column(col)
        shown = sorted(rows.items(), key=lambda kv: (kv[1]["stage"] in ("done",), kv[0]))[: self.MAX_ROWS]
        for name, r in shown:
            table.add_row(name, r["stage"], r["progress"], r["result"][:100])
        return table


def _results_table(title: str, report: Any, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for b in report.to_json()["boards"]:
        cells = []
        for c in columns:
            v = b.get(c)
            if c == "ok":
                v = "ok" if v else "FAILED"
            elif c == "health" and isinstance(v, dict):
                v = ("pass" if v.get("ok") else "FAIL") + f" ({_health_check(v)}" + \
                    (f", {v['median_ms']:.2f} ms" if v.get("median_ms") is not None else "") + ")"
            elif c == "last_health" and isinstance(v, dict):
                v = ("pass" if v.get("ok") else f"FAIL {_health_check(v)}") + \
                    (f" {v['median_ms']:.1f} ms" if v.get("median_ms") is not None else "")
            elif c in ("sent_bytes",) and v is not None:
                v = f"{v / 1e6:.2f} MB"
            elif c == "error" and v:
                v = str(v)[:160]
            cells.append("" if v is None else str(v))
        table.add_row(*cells)
    return table


def _health_check(health: dict[str, Any]) -> str:
    """The check a health result names: the gate it passed, or the one that failed (latency too)."""
    return str((health.get("gate") if health.get("ok") else health.get("failed") or health.get("gate")) or "")


def _render(report: Any, json_output: bool, columns: list[str], title: str) -> None:
    if json_output:
        emit_json(report.to_json())
        return
    out.print(_results_table(title, report, columns))
    for r in report.results:
        if not r.ok:    # the error names the board (deployer.fleet.ops.board_error)
            line(r.error or f"{r.board}: failed", prefix="failed: ", prefix_style="bold red")


def _finish(report: Any, json_output: bool, columns: list[str], title: str) -> None:
    _render(report, json_output, columns, title)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _interrupted_report(err: BaseException) -> Any:
    """The report of a deploy/rollout a Ctrl-C cut short (boards already started have finished),
    marked interrupted; None if it ended before any board was worked on."""
    from deployer.fleet.controller import interrupted_result

    result = interrupted_result(err)
    report = result[1] if isinstance(result, tuple) else result
    if report is not None:
        report.extra["interrupted"] = True
    return report


def _show_interrupted(err: BaseException, json_output: bool, columns: list[str], title: str,
                      summary: Callable[[Any], None]) -> None:
    """Before a Ctrl-C ends the command (exit 130): where every board ended, as at a normal end.
    Boards switch while the command runs; `interrupted` alone left the operator guessing which."""
    report = _interrupted_report(err)
    if report is None:
        return
    if not json_output:
        summary(report)
    _render(report, json_output, columns, f"{title} (interrupted)")


def _not_started(report: Any) -> None:
    names = report.extra.get("not_started") or []
    if names:
        error(f"interrupted: {len(names)} board(s) not started: {', '.join(names[:10])}"
              + (f" (+{len(names) - 10} more)" if len(names) > 10 else ""))


_PLAN_HIDDEN = {"waves", "last_wave_added"}     # shown within wave_boards on a terminal


def _print_plan(plan: dict[str, Any], json_output: bool) -> None:
    if json_output:
        emit_json({"ok": True, "plan": plan, "boards": [{"board": b, "ok": True, "release": None}
                                                         for b in plan.get("boards", [])]})
        return
    for key, value in plan.items():
        if key not in _PLAN_HIDDEN:
            out.print(_plan_line(key, value, plan), soft_wrap=True, markup=False, highlight=False)


def _plan_line(key: str, value: Any, plan: dict[str, Any]) -> str:
    """One plan entry for a terminal: a line, or a label and indented lines (no Python lists or dicts)."""
    label = key.replace("_", " ")
    if key == "files":
        width = max((len(n) for n in value), default=0)
        return f"{label}:" + "".join(f"\n  {n:<{width}}  {_size(b)}" for n, b in value.items())
    if key == "size":
        return f"{label}: {_size(value)}"
    if key.endswith("_s"):
        return f"{label[:-2]}: {value:g} s"
    if key == "steps":
        return f"{label}:" + "".join(f"\n  {i}. {step}" for i, step in enumerate(value, 1))
    if key == "wave_boards":
        if not value:
            return "waves: none left (every board was done by an earlier run)"
        lines = [f"\n  {k}. {len(names)} board(s): {', '.join(names)}" for k, names in enumerate(value, 1)]
        if plan.get("last_wave_added"):
            lines[-1] += "  (added: the --waves given stop short of the group, so a last wave to 100% is added)"
        return "waves:" + "".join(lines)
    if isinstance(value, list):
        return f"{label}: {', '.join(str(v) for v in value) or '(none)'}"
    return f"{label}: {value}"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB" if n >= 1000 else f"{n} B"


def _rollout_summary(group: str, report: Any, total: int) -> None:
    """The lines after a rollout's table: how far it got, and what to do about a stop."""
    x = report.extra
    ok = sum(1 for r in report.results if r.ok)
    earlier = f"{len(x['skipped'])} board(s) done by an earlier run"
    if not x["waves"]:
        waves = f"no wave left: {earlier}"
    else:
        waves = f"waves {x['waves_done']}/{len(x['waves'])}" + \
            (" (the last, to 100%, added)" if x.get("last_wave_added") else "") + (f"; {earlier}" if x["skipped"] else "")
    console.print(f"rollout {report.release}: {ok}/{total} boards ok, {len(x['failed'])} failed "
                  f"(budget {x['budget']}), {waves}", markup=False)
    switched = x.get("switched") or []
    undo = (f"undo the {len(switched)} switched board(s) with: deployer rollback {group} --rollout"
            if switched else "no board was switched, there is nothing to undo")
    if x.get("interrupted"):
        error(f"interrupted: {len(x['not_started'])} board(s) not started; finish it with the same command "
              f"and --resume; {undo}")
    elif x["stopped"]:
        error(f"stopped: failures passed the budget; {len(x['not_started'])} board(s) not started; {undo}")


def _boards_and_release(target: str, targets: Optional[List[Path]], model: Optional[Path],
                        profile: Optional[Path], no_health: bool, shape: Optional[str]) -> tuple[list[Any], Any]:
    """The boards a deploy/rollout names, then its release (hashed, with the host reference run)."""
    from deployer.fleet import service
    from deployer.ncnn.validate import parse_shape_option

    dims = parse_shape_option(shape) if shape is not None else None
    boards = _boards(_inventory(targets, target), target)
    with Status("building the release (hashing, host reference run)"):
        release = service.resolve_release(model, profile, health=not no_health, shape=dims)
    return boards, release


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def deploy(
        target: str = typer.Argument(..., help="board, group, tag:NAME or user@host[:port]"),
        model: Optional[Path] = ModelOpt,
        profile: Optional[Path] = ProfileOpt,
        plan: bool = PlanOpt,
        no_health: bool = NoHealthOpt,
        shape: Optional[str] = ShapeOpt,
        min_cosine: float = CosineOpt,
        max_latency: Optional[float] = LatencyOpt,
        keep: int = KeepOpt,
        max_parallel: int = ParallelOpt,
        executor: str = ExecutorOpt,
        persist: Optional[float] = PersistOpt,
        runtime: Optional[str] = RuntimeOpt,
        lock_wait: float = LockWaitOpt,
        deadline: float = DeadlineOpt,
        targets: Optional[List[Path]] = TargetsOpt,
        accept_new: bool = AcceptNewOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """Ship a release to board(s): upload what is missing, health-check it on the board, switch."""
        opts = _options(no_health=no_health, min_cosine=min_cosine, max_latency=max_latency, keep=keep,
                        lock_wait=lock_wait, deadline=deadline, accept_new=accept_new, runtime=runtime)
        spec, call = _call(executor, persist)
        boards, release = _boards_and_release(target, targets, model, profile, no_health, shape)
        with release:     # its temporary folder (manifest, health reference) goes when done
            if plan:
                _print_plan({"release": release.id, "files": {f.name: f.size for f in release.files},
                             "size": release.size, "boards": [b.name for b in boards],
                             "steps": ["connect", *(["runtime"] if opts.health.enabled and release.expected else []),
                                       "lock + state", "upload missing blobs (resumable)", "commit (sha256 on the board)",
                                       *(["health check on the board"] if opts.health.enabled and release.expected else []),
                                       "switch current (atomic rename)", f"keep {keep} previous, collect blobs"],
                             "max_parallel": max_parallel, "executor": executor}, json_output)
                return
            view = FleetView(f"deploy {release.id}", len(boards))
            columns = ["board", "ok", "action", "release", "previous", "health", "sent_bytes", "seconds"]
            try:
                with view.live:
                    report = call("deploy", boards, release, opts, executor=spec, max_parallel=max_parallel,
                                  on_event=view)
            except KeyboardInterrupt as err:
                _show_interrupted(err, json_output, columns, f"deploy {release.id}", _not_started)
                raise
            _finish(report, json_output, columns, f"deploy {release.id}")

    @app.command()
    @handle_errors
    def rollback(
        target: str = typer.Argument(..., help="board, group, tag:NAME or user@host[:port]"),
        to: Optional[str] = typer.Option(None, "--to", help="release id (default: the one before the current)"),
        from_rollout: bool = typer.Option(False, "--rollout", help="undo the last rollout to TARGET: every board it "
                                          "switched goes back to the release it had before"),
        state: Path = StateOpt,
        max_parallel: int = ParallelOpt,
        executor: str = ExecutorOpt,
        persist: Optional[float] = PersistOpt,
        lock_wait: float = LockWaitOpt,
        deadline: float = DeadlineOpt,
        targets: Optional[List[Path]] = TargetsOpt,
        accept_new: bool = AcceptNewOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """Switch board(s) back to an earlier release kept on the board (nothing is uploaded)."""
        from deployer.errors import DeployerError
        from deployer.remote.layout import check_name

        if to is not None and from_rollout:
            raise DeployerError("give --to RELEASE or --rollout, not both")
        if to is not None:
            check_name(to, "--to release id")
        opts = _options(lock_wait=lock_wait, deadline=deadline, accept_new=accept_new)
        spec, call = _call(executor, persist)
        boards = _boards(_inventory(targets, target), target)
        view = FleetView("rollback", len(boards))
        with view.live:
            report = call("rollback", boards, to, opts, executor=spec, max_parallel=max_parallel,
                                      state_dir=state, group=target, use_rollout=from_rollout, on_event=view)
        _finish(report, json_output, ["board", "ok", "action", "release", "previous", "error"], "rollback")

    @app.command()
    @handle_errors
    def releases(
        target: str = typer.Argument(..., help="board, group, tag:NAME or user@host[:port]"),
        max_parallel: int = ParallelOpt,
        executor: str = ExecutorOpt,
        persist: Optional[float] = PersistOpt,
        targets: Optional[List[Path]] = TargetsOpt,
        accept_new: bool = AcceptNewOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """List the releases kept on board(s): id, current, age, size, model, last health check."""
        spec, call = _call(executor, persist)
        boards = _boards(_inventory(targets, target), target)
        report = call("releases", boards, _options(accept_new=accept_new), executor=spec, max_parallel=max_parallel)
        if json_output:
            emit_json(report.to_json())
        else:
            table = Table(title="releases", title_justify="left")
            for c in ("board", "release", "current", "model", "age", "size", "health"):
                table.add_column(c)
            for b in report.to_json()["boards"]:
                if not b["ok"]:
                    table.add_row(b["board"], "-", "", "", "", "", str(b.get("error"))[:120])
                    continue
                for r in b.get("releases") or [{"id": "(none)"}]:
                    h = r.get("health")
                    table.add_row(b["board"], r["id"], "*" if r.get("current") else "", r.get("model") or "",
                                  _age(r.get("age_s")), f"{(r.get('size') or 0) / 1e6:.2f} MB" if r.get("size") else "",
                                  "" if not h else ("pass" if h.get("ok") else "FAIL"))
            out.print(table)
        if report.exit_code:
            raise typer.Exit(report.exit_code)

    @app.command()
    @handle_errors
    def rollout(
        group: str = typer.Argument(..., help="group, tag:NAME or board"),
        model: Optional[Path] = ModelOpt,
        profile: Optional[Path] = ProfileOpt,
        waves: str = WavesOpt,
        max_failures: str = typer.Option("5%", "--max-failures", help="failed boards tolerated (count or share)"),
        bake: str = typer.Option("0", "--bake", help="wait after each wave, then re-check it (30s, 2m)"),
        resume: bool = typer.Option(False, "--resume", help="skip boards the last rollout of this release finished"),
        plan: bool = PlanOpt,
        no_health: bool = NoHealthOpt,
        shape: Optional[str] = ShapeOpt,
        min_cosine: float = CosineOpt,
        max_latency: Optional[float] = LatencyOpt,
        keep: int = KeepOpt,
        max_parallel: int = ParallelOpt,
        executor: str = ExecutorOpt,
        persist: Optional[float] = PersistOpt,
        runtime: Optional[str] = RuntimeOpt,
        lock_wait: float = LockWaitOpt,
        deadline: float = DeadlineOpt,
        state: Path = StateOpt,
        targets: Optional[List[Path]] = TargetsOpt,
        accept_new: bool = AcceptNewOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """Roll a release out to a group in waves, stopping when failures pass the budget."""
        opts = _options(no_health=no_health, min_cosine=min_cosine, max_latency=max_latency, keep=keep,
                        lock_wait=lock_wait, deadline=deadline, accept_new=accept_new, runtime=runtime)
        spec, call = _call(executor, 0 if plan else persist)
        boards, release = _boards_and_release(group, targets, model, profile, no_health, shape)
        with release:     # its temporary folder (manifest, health reference) goes when done
            view = FleetView(f"rollout {release.id}", len(boards))
            columns = ["board", "ok", "action", "release", "previous", "health", "seconds"]
            try:
                with view.live if not plan else contextlib.nullcontext():
                    the_plan, report = call("rollout", group, boards, release, opts, waves=waves,
                                            max_failures=max_failures, max_parallel=max_parallel, bake=bake,
                                            executor=spec, state_dir=state, resume=resume, on_event=view,
                                            plan_only=plan)
            except KeyboardInterrupt as err:
                _show_interrupted(err, json_output, columns, f"rollout {release.id}",
                                  lambda rep: _rollout_summary(group, rep, len(boards)))
                raise
            if report is None:
                p = the_plan.to_json()
                _print_plan({"release": release.id, "files": {f.name: f.size for f in release.files},
                             "size": release.size, "waves": [len(w) for w in p["waves"]],
                             "wave_boards": p["waves"], "last_wave_added": p["last_wave_added"],
                             "failure_budget": p["budget"], "bake_s": p["bake"], "max_parallel": max_parallel,
                             "skipped": p["skipped"], "boards": [n for w in p["waves"] for n in w]}, json_output)
                return
            if not json_output:
                _rollout_summary(group, report, len(boards))
            _finish(report, json_output, columns, f"rollout {release.id}")

    @app.command()
    @handle_errors
    def status(
        target: str = typer.Argument(..., help="group, tag:NAME or board"),
        expect: Optional[str] = typer.Option(None, "--expect", help="release the boards should serve "
                                             "(default: the last rollout's to this group)"),
        state: Path = StateOpt,
        max_parallel: int = typer.Option(200, "--max-parallel", help="boards read at once"),
        executor: str = ExecutorOpt,
        persist: Optional[float] = PersistOpt,
        deadline: float = typer.Option(30.0, "--deadline", help="seconds per board before it counts as unreachable"),
        targets: Optional[List[Path]] = TargetsOpt,
        accept_new: bool = AcceptNewOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """What every board serves: release, model, runtime, last health check, reachable, drift."""
        spec, call = _call(executor, persist)
        boards = _boards(_inventory(targets, target), target)
        report = call("status", boards, _options(deadline=deadline, accept_new=accept_new),
                      executor=spec, max_parallel=max_parallel, expect=expect, group=target, state_dir=state)
        if json_output:
            emit_json(report.to_json())
        else:
            _status_text(target, report)
        unreachable = [r for r in report.results if not r.ok]
        if unreachable:
            raise typer.Exit(3)


def _status_text(target: str, report: Any) -> None:
    x = report.extra
    expected = x.get("expected")
    source = f", from {x['expected_from']}" if expected and x.get("expected_from") else ""
    out.print(_results_table(f"status (expected: {expected or 'not set'}{source})", report,
                             ["board", "reachable", "release", "model", "runtime", "last_health", "drift", "error"]))
    s = x["summary"]
    drift = f"{s['drift']} drifting" if expected else "drift not checked"
    console.print(f"{s['reachable']}/{s['boards']} reachable, {drift}; releases: "
                  + ", ".join(f"{k} x{v}" for k, v in s["releases"].items()), markup=False)
    last = x.get("last_rollout")
    if not expected and last and last.get("status") != "done":
        render_note(f"the last rollout to {target} ({last.get('release')}) is {last.get('status')}, so it sets no "
                    "expected release; pass --expect RELEASE to check drift")


def _age(seconds: Optional[int]) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

