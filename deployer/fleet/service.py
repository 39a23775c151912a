"""Fleet commands as a library: config -> plan -> per-board operations -> report.

The CLI (deployer/cli/fleet.py) parses flags into these calls and renders what they return;
tests and benchmarks call them directly.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from deployer.errors import DeployerError
from deployer.fleet.controller import interrupted
from deployer.fleet.executor import ExecutorSpec, open_executor
from deployer.fleet.fanout import fan_out
from deployer.fleet.ops import BoardResult, DeployOptions, deploy_board, list_board, rollback_board
from deployer.fleet.release import LocalRelease, build_release
from deployer.fleet import rollout as ro

EventFn = Callable[[dict[str, Any]], None]


@dataclass
class FleetReport:
    command: str
    results: list[BoardResult]
    release: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and not self.extra.get("stopped") \
            and not self.extra.get("interrupted")

    @property
    def exit_code(self) -> int:
        codes = [r.exit_code for r in self.results if not r.ok]
        if self.extra.get("stopped") and not codes:
            return 1
        return max(codes) if codes else 0

    def to_json(self) -> dict[str, Any]:
        order = {r.board: r for r in self.results}
        boards = [order[n].to_json() for n in sorted(order, key=_natural)]
        return {"ok": self.ok, "command": self.command, "release": self.release, "seconds": self.seconds,
                **self.extra, "boards": boards}


def _natural(name: str) -> tuple:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def resolve_release(model: Path | None, profile: Path | None, *, health: bool = True,
                    workdir: Path | None = None, shape: list[int] | None = None) -> LocalRelease:
    """The release to ship: a `quantize` output folder (--model) or a profile's `out:` (--profile)."""
    if (model is None) == (profile is None):
        raise DeployerError("give exactly one of --model OUT_DIR (the folder `deployer quantize` wrote) "
                            "or --profile PROFILE.yaml")
    if profile is not None:
        from deployer.profile import load_profile

        prof = load_profile(profile)
        if prof.out is None:
            raise DeployerError(f"{profile}: no `out:` folder; give --model OUT_DIR instead")
        return build_release(prof.out, profile=Path(profile), health=health, workdir=workdir, shape=shape)
    return build_release(Path(model), health=health, workdir=workdir, shape=shape)  # type: ignore[arg-type]


def deploy(boards: list[Any], release: LocalRelease, opts: DeployOptions, *, executor: ExecutorSpec,
           max_parallel: int, on_event: EventFn | None = None) -> FleetReport:
    t0 = time.monotonic()
    results: list[BoardResult] = []     # filled as boards end, so an interrupted deploy still has them
    try:
        with open_executor(executor, max_parallel) as pool:
            fan_out(pool, boards, deploy_board, (release, opts), max_parallel=max_parallel,
                    on_result=results.append, kwargs={"on_event": on_event} if executor.local else None)
    except KeyboardInterrupt as err:
        raise interrupted(err, _deploy_report(boards, results, release, t0))
    return _deploy_report(boards, results, release, t0)


def _deploy_report(boards: list[Any], results: list[BoardResult], release: LocalRelease, t0: float) -> FleetReport:
    done = {r.board for r in results}
    # boards a Ctrl-C (or the controller's client going away) kept from starting
    return FleetReport("deploy", list(results), release.id, round(time.monotonic() - t0, 3),
                       {"sent_bytes": sum(r.sent_bytes for r in results),
                        "not_started": [b.name for b in boards if b.name not in done]})


def rollback(boards: list[Any], to: str | None, opts: DeployOptions, *, executor: ExecutorSpec,
             max_parallel: int, state_dir: Path | None = None, group: str | None = None,
             use_rollout: bool = False, on_event: EventFn | None = None) -> FleetReport:
    """Switch boards back: to `to`, to each board's previous release, or (use_rollout) to what each
    board served before the last rollout to `group` switched it."""
    # a rollout to the group still running would switch more boards after this read its record
    state_dir = state_dir or Path("rollouts")
    locked = use_rollout and ro.state_path(state_dir, group or "").exists()
    then = f"run `deployer rollback {group} --rollout` again to undo what it switched"
    with ro.state_lock(state_dir, group or "", then) if locked else contextlib.nullcontext():
        t0 = time.monotonic()
        targets: dict[str, str | None] = {b.name: to for b in boards}
        if use_rollout:
            state = ro.load_state(state_dir, group or "")
            if state is None:
                raise DeployerError(f"--rollout: no rollout of {group} recorded in {state_dir} "
                                    "(run from the folder you ran `deployer rollout` in, or pass --state)")
            switched = {n: e.get("previous") for n, e in state["boards"].items() if e.get("switched")}
            if not switched:
                raise DeployerError(f"--rollout: the last rollout to {group} ({state.get('release')}, "
                                    f"{state.get('status')}) switched no board; there is nothing to undo",
                                    hint="use --to RELEASE, or no flag to go back one release on each board")
            boards = [b for b in boards if b.name in switched]
            targets = dict(switched)
            missing = [n for n, p in targets.items() if not p]
            if missing:
                raise DeployerError(f"--rollout: {', '.join(sorted(missing))} had no release before the rollout; "
                                    "there is nothing to roll back to on them")
        with open_executor(executor, max_parallel) as pool:
            results = []
            for want in sorted(set(targets.values()), key=str):
                group_boards = [b for b in boards if targets[b.name] == want]
                done, _ = fan_out(pool, group_boards, rollback_board, (want, opts), max_parallel=max_parallel,
                                  kwargs={"on_event": on_event} if executor.local else None)
                results += done
    return FleetReport("rollback", results, to, round(time.monotonic() - t0, 3))


def releases(boards: list[Any], opts: DeployOptions, *, executor: ExecutorSpec, max_parallel: int) -> FleetReport:
    t0 = time.monotonic()
    with open_executor(executor, max_parallel) as pool:
        results, _ = fan_out(pool, boards, list_board, (opts, "all"), max_parallel=max_parallel)
    return FleetReport("releases", results, None, round(time.monotonic() - t0, 3))


def status(boards: list[Any], opts: DeployOptions, *, executor: ExecutorSpec, max_parallel: int,
           expect: str | None = None, group: str | None = None, state_dir: Path | None = None) -> FleetReport:
    """Per board: current release/model, runtime, last health, reachable, drift from what the group
    should run (--expect, else the release of the last rollout to the group, if it finished)."""
    t0 = time.monotonic()
    last = _last_rollout(group, state_dir) if expect is None else None
    source = "--expect" if expect else None
    if last and last["status"] == "done":
        expect, source = last["release"], "the last rollout"
    with open_executor(executor, max_parallel) as pool:
        results, _ = fan_out(pool, boards, list_board, (opts, "current"), max_parallel=max_parallel)
    for r in results:
        r.action = "status"
        r.extra.pop("releases", None)
        r.extra.setdefault("reachable", False)
        r.extra["drift"] = None if expect is None or not r.ok else (r.release != expect)  # unknown if unread
    report = FleetReport("status", results, expect, round(time.monotonic() - t0, 3),
                         {"expected": expect, "expected_from": source, "last_rollout": last})
    report.extra["summary"] = {
        "boards": len(results), "reachable": sum(1 for r in results if r.extra.get("reachable")),
        "drift": sum(1 for r in results if r.extra.get("drift")),
        "releases": _count(r.release for r in results if r.ok)}
    return report


def _last_rollout(group: str | None, state_dir: Path | None) -> dict[str, Any] | None:
    """The last rollout to `group`: release, status, switched boards. Only a `done` one says what the
    group should serve: a stopped, failed or interrupted rollout is not the fleet's target (after a
    failed canary and a rollback, every board was shown drifting from the release that was refused)."""
    if group is None or state_dir is None:
        return None
    try:
        state = ro.load_state(state_dir, group)
    except DeployerError:
        return None
    if not state:
        return None
    return {"release": state.get("release"), "status": state.get("status"),
            "switched": sorted(n for n, e in state["boards"].items() if e.get("switched"))}


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[str(i)] = out.get(str(i), 0) + 1
    return out


def rollout(group: str, boards: list[Any], release: LocalRelease, opts: DeployOptions, *, waves: str,
            max_failures: str, max_parallel: int, bake: str, executor: ExecutorSpec, state_dir: Path,
            resume: bool = False, on_event: EventFn | None = None, plan_only: bool = False
            ) -> tuple[ro.RolloutPlan, FleetReport | None]:
    # the state is read (for --resume) and written under the group's lock; --plan only reads it
    with contextlib.nullcontext() if plan_only else ro.state_lock(state_dir, group):
        previous = ro.load_state(state_dir, group)
        plan = ro.plan_rollout(group, boards, release.id, ro.parse_waves(waves), max_failures, max_parallel,
                               ro.parse_duration(bake), previous, resume)
        if plan_only:
            return plan, None
        try:
            with open_executor(executor, max_parallel) as pool:
                rep = ro.run_rollout(plan, boards, release, opts, pool, state_dir=state_dir, on_event=on_event,
                                     previous=previous, local=executor.local)
        except KeyboardInterrupt as err:
            partial = getattr(err, "rollout_report", None)
            if partial is None:
                raise
            raise interrupted(err, (plan, _rollout_report(plan, partial, release)))
    return plan, _rollout_report(plan, rep, release)


def _rollout_report(plan: ro.RolloutPlan, rep: ro.RolloutReport, release: LocalRelease) -> FleetReport:
    earlier = [BoardResult(n, True, release.id, action="done-earlier", stage="done") for n in plan.skipped]
    return FleetReport("rollout", list(rep.results.values()) + earlier, release.id, rep.seconds, {
        "stopped": rep.stopped, "interrupted": rep.status == "interrupted", "budget": plan.budget,
        "waves": [len(w) for w in plan.waves], "last_wave_added": plan.last_wave_added,
        "waves_done": rep.waves_done, "not_started": rep.not_started, "skipped": plan.skipped,
        "switched": rep.switched,
        "failed": [{"board": r.board, "error": r.error} for r in rep.failed], "state_file": rep.state_file,
        "sent_bytes": sum(r.sent_bytes for r in rep.results.values())})
