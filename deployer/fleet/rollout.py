"""Rollouts: a release to a group in waves, under a failure budget, resumable, reversible.

Waves are cumulative shares of the group, like a canary: `1,10%,50%,100%` means one board first,
then up to 10 % of the group, then half, then everyone (Ansible's `serial` with a running total).
Within a wave boards run in parallel (at most --max-parallel); once failures pass
--max-failures (a count or a share of the group) no further board is started, running boards
finish, and the rollout stops with the list of failed boards and why. After each wave but the
last, --bake waits and re-reads the wave's boards: a board that stopped serving the release or
went away counts as failed.

The state of a rollout (which boards switched, from which release) is written to
`<state dir>/<group>.json` after every board, so `rollout --resume` skips boards already done
and `rollback GROUP --rollout` puts every switched board back on the release it had before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import socket
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from deployer import fsutil
from deployer.errors import DeployerError
from deployer.fleet.fanout import CANCEL, fan_out
from deployer.fleet.ops import BoardResult, DeployOptions, deploy_board, list_board
from deployer.fleet.release import LocalRelease
from deployer.limits import MAX_WAIT_S

_NAME_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
SAVE_EVERY = 0.5          # s between writes of the rollout state for results that switched nothing


def parse_waves(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise DeployerError("--waves: give at least one wave, e.g. 1,10%,50%,100%")
    for p in parts:
        if not re.fullmatch(r"\d+(\.\d+)?%|\d+", p):
            raise DeployerError(f"--waves: {p!r} is neither a board count nor a percentage (e.g. 1,10%,100%)")
        if p in ("0", "0%"):
            raise DeployerError("--waves: a wave of 0 boards does nothing; remove it")
        if p.endswith("%") and float(p[:-1]) > 100:
            raise DeployerError(f"--waves: {p} is more than the whole group")
    return parts


def wave_sizes(waves: list[str], n: int) -> list[int]:
    """Boards in each wave (cumulative targets -> increments; a final wave takes whoever is left)."""
    sizes, done = [], 0
    for w in waves:
        target = min(n, max(_wave_target(w, n), done))
        if target > done:
            sizes.append(target - done)
            done = target
    if done < n:
        sizes.append(n - done)
    return sizes


def adds_last_wave(waves: list[str], n: int) -> bool:
    """Do the waves given stop short of the whole group (`1,50%`)? wave_sizes then adds a last wave
    to 100 %, which the plan and the progress must say: the operator did not write it."""
    return n > 0 and max((_wave_target(w, n) for w in waves), default=0) < n


def _wave_target(wave: str, n: int) -> int:
    """A cumulative wave target of a group of n: a count, or a share rounded up."""
    return math.ceil(n * float(wave[:-1]) / 100) if wave.endswith("%") else int(wave)


def failure_budget(text: str, n: int) -> int:
    """How many failed boards are tolerated: '5%' of the group (floor) or a plain count."""
    t = text.strip()
    try:
        if t.endswith("%"):
            pct = float(t[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return int(math.floor(n * pct / 100 + 1e-9))
        value = int(t)
        if value < 0:
            raise ValueError
        return value
    except ValueError:
        raise DeployerError(f"--max-failures {text!r}: give a count (3) or a share of the group (5%)") from None


MAX_BAKE_S = MAX_WAIT_S    # a bake is waited out by this process; past ~292 years time.sleep overflows


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise DeployerError(f"--bake {text!r}: give a duration like 30s, 2m or 0")
    seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    # checked here, not when the first wave is done: an absurd bake would otherwise switch wave 1
    # and then die in time.sleep (OverflowError, exit 4) or wait for ever
    if not seconds <= MAX_BAKE_S:
        raise DeployerError(f"--bake {text!r}: at most {MAX_BAKE_S // 86400} days ({MAX_BAKE_S} s)")
    return seconds


@dataclass
class RolloutPlan:
    group: str
    release: str
    waves: list[list[str]]           # board names per wave
    budget: int
    max_parallel: int
    bake: float
    skipped: list[str] = field(default_factory=list)   # done in an earlier run (--resume)
    last_wave_added: bool = False    # the --waves given stop short of 100 %: the last wave was added

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RolloutReport:
    plan: RolloutPlan
    results: dict[str, BoardResult]
    stopped: bool                     # the failure budget was passed (or the command was interrupted)
    not_started: list[str]
    waves_done: int
    seconds: float
    state_file: str | None = None
    # every board the rollout's record says it switched (this run and, resumed, earlier ones): what
    # `rollback --rollout` would undo; empty when e.g. the canary failed its health check
    switched: list[str] = field(default_factory=list)
    status: str = ""                  # as recorded: done | failed | stopped | interrupted

    @property
    def failed(self) -> list[BoardResult]:
        return [r for r in self.results.values() if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.stopped and not self.failed and not self.not_started


def state_path(state_dir: Path, group: str) -> Path:
    return Path(state_dir) / f"{_NAME_SAFE.sub('_', group).strip('_') or 'group'}.json"


@contextlib.contextmanager
def state_lock(state_dir: Path, group: str, then: str = "roll out again") -> Iterator[None]:
    """One rollout per group and state folder at a time (an flock next to `<group>.json`, held until
    the rollout's last save; it goes with the process). Two rollouts to one group (two terminals, CI
    next to a person, two clients of one persistent controller) each rewrote the whole state file
    from their own view, so the last to save erased the other's switched boards and `rollback
    --rollout` / `--resume` worked from the wrong record. The second one now stops at once, naming
    the first; `then` says what to do once it has ended."""
    path = state_path(state_dir, group)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise DeployerError(f"{path}: another rollout to group {group} is running "
                                f"({fh.read().strip() or 'holder unknown'})",
                                hint=f"wait for it to end (or stop it), then {then}") from None
        fh.truncate(0)
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                 f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        fh.flush()
        yield


def load_state(state_dir: Path, group: str) -> dict[str, Any] | None:
    path = state_path(state_dir, group)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("boards"), dict):
            raise ValueError("not a rollout state")
        # resume, rollback --rollout and status read every entry with .get() and use `release` and
        # `previous` as release ids: a hand-edited file must fail here, naming it, not deep inside them
        for name, entry in data["boards"].items():
            if not isinstance(entry, dict):
                raise ValueError(f"board {name!r}: expected an object, got {type(entry).__name__}")
            for key in ("release", "previous"):
                if entry.get(key) is not None and not isinstance(entry[key], str):
                    raise ValueError(f"board {name!r}: {key} must be a release id, got {entry[key]!r}")
        if data.get("release") is not None and not isinstance(data["release"], str):
            raise ValueError(f"release must be a release id, got {data['release']!r}")
        return data
    except (OSError, ValueError) as err:
        raise DeployerError(f"{path}: unreadable rollout state ({err}); delete it to start afresh") from None


def plan_rollout(group: str, boards: list[Any], release_id: str, waves: list[str], max_failures: str,
                 max_parallel: int, bake: float, previous: dict[str, Any] | None, resume: bool) -> RolloutPlan:
    names = [b.name for b in boards]
    skipped: list[str] = []
    if resume:
        if previous is None or previous.get("release") != release_id:
            raise DeployerError(f"--resume: no unfinished rollout of {release_id} to group {group} "
                                f"(last: {previous.get('release') if previous else 'none'})")
        skipped = [n for n in names if previous["boards"].get(n, {}).get("ok")
                   and previous["boards"][n].get("release") == release_id]
    left = [n for n in names if n not in skipped]
    sizes = wave_sizes(waves, len(left)) if left else []
    plan_waves, i = [], 0
    for s in sizes:
        plan_waves.append(left[i:i + s])
        i += s
    return RolloutPlan(group, release_id, plan_waves, failure_budget(max_failures, len(names)), max_parallel,
                       bake, skipped, adds_last_wave(waves, len(left)))


def run_rollout(plan: RolloutPlan, boards: list[Any], release: LocalRelease, opts: DeployOptions,
                executor: Executor, *, state_dir: Path | None, on_event: Callable[[dict], None] | None = None,
                previous: dict[str, Any] | None = None, local: bool = True) -> RolloutReport:
    t0 = time.monotonic()
    by_name = {b.name: b for b in boards}
    results: dict[str, BoardResult] = {}
    state: dict[str, Any] = {"group": plan.group, "release": plan.release, "status": "running",
                             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "boards": dict(previous["boards"]) if previous and plan.skipped else {}}
    path = state_path(state_dir, plan.group) if state_dir else None

    saved = [0.0]

    def save() -> None:
        if path is not None:
            fsutil.write_text(path, json.dumps(state, indent=1, sort_keys=True) + "\n")
            saved[0] = time.monotonic()

    def record(res: BoardResult) -> None:
        results[res.board] = res
        old = state["boards"].get(res.board, {})
        entry = {"ok": res.ok, "release": res.release, "action": res.action, "error": res.error,
                 "stage": res.stage, "previous": old.get("previous") if res.action == "unchanged" else res.previous}
        if res.action == "deployed" or old.get("switched"):
            entry["switched"] = True
        state["boards"][res.board] = entry
        # A board that was just switched is written at once: `rollback --rollout` must know it even if
        # this process dies next. Other results (unchanged, failed) at most every SAVE_EVERY s and at
        # each wave's end - a no-op rollout of hundreds of boards is not hundreds of fsyncs - and a
        # `--resume` after a crash only re-checks the few boards whose result was not written yet.
        if (entry.get("switched") and not old.get("switched")) or time.monotonic() - saved[0] >= SAVE_EVERY:
            save()
        if on_event:
            on_event({"type": "result", "board": res.board, "ok": res.ok})

    def over_budget(_: list[BoardResult]) -> bool:
        return sum(1 for r in results.values() if not r.ok) > plan.budget

    save()
    stopped = interrupted = False
    waves_done = 0
    try:
        for k, wave in enumerate(plan.waves):
            if on_event:
                added = plan.last_wave_added and k + 1 == len(plan.waves)
                on_event({"type": "wave", "wave": k + 1, "of": len(plan.waves), "boards": len(wave),
                          "added": added})
            fan_out(executor, [by_name[n] for n in wave], deploy_board, (release, opts),
                    max_parallel=plan.max_parallel, on_result=record, stop=over_budget,
                    kwargs={"on_event": on_event} if local else None)
            waves_done = k + 1
            save()
            cancel = CANCEL.get()
            interrupted = cancel is not None and cancel.is_set()
            if over_budget([]) or interrupted:
                break
            if plan.bake > 0 and k + 1 < len(plan.waves):
                if on_event:
                    on_event({"type": "bake", "wave": k + 1, "seconds": plan.bake})
                if cancel is not None and cancel.wait(plan.bake):
                    interrupted = True             # the controller's client went away: no further wave
                    break
                if cancel is None:
                    time.sleep(plan.bake)
                _bake_check(plan, wave, by_name, results, opts, executor, record)
                if over_budget([]):
                    break
    except KeyboardInterrupt as err:    # Ctrl-C, SIGTERM: the boards already started have finished (fanout)
        state["status"] = "interrupted"
        err.rollout_report = _end(plan, results, state, save, waves_done, t0, path)  # type: ignore[attr-defined]
        raise
    stopped = interrupted or over_budget([])
    state["status"] = ("interrupted" if interrupted else "stopped" if stopped
                       else "done" if all(r.ok for r in results.values()) else "failed")
    return _end(plan, results, state, save, waves_done, t0, path)


def _bake_check(plan: RolloutPlan, wave: list[str], by_name: dict[str, Any], results: dict[str, BoardResult],
                opts: DeployOptions, executor: Executor, record: Callable[[BoardResult], None]) -> None:
    """After a bake, re-read the wave's boards: one that no longer serves the release failed."""
    ok_boards = [by_name[n] for n in wave if results.get(n) and results[n].ok]
    checks, _ = fan_out(executor, ok_boards, list_board, (opts, "current"), max_parallel=plan.max_parallel)
    for c in checks:
        if not c.ok or c.release != plan.release:
            r = results[c.board]
            r.ok, r.action, r.stage, r.exit_code = False, "failed", "bake", c.exit_code or 3
            r.error = c.error or f"{c.board}: serves {c.release} instead of {plan.release} after the bake"
            record(r)


def _end(plan: RolloutPlan, results: dict[str, BoardResult], state: dict[str, Any], save: Callable[[], None],
         waves_done: int, t0: float, path: Path | None) -> RolloutReport:
    """Write the rollout's final record and report it (ended, stopped or interrupted alike)."""
    state["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    stopped = state["status"] in ("stopped", "interrupted")
    not_started = [n for w in plan.waves for n in w if n not in results] if stopped else []
    switched = sorted(n for n, e in state["boards"].items() if e.get("switched"))
    return RolloutReport(plan, results, stopped, not_started, waves_done, round(time.monotonic() - t0, 3),
                         str(path) if path else None, switched, state["status"])
