"""Run one per-board operation on many boards through an Executor, at most N in flight.

Submissions are bounded here rather than by the executor's pool size, so the same code limits a
Dask cluster and can stop handing out boards the moment a failure budget is spent (boards already
running finish; none are interrupted half-way).
"""

from __future__ import annotations

import contextvars
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any, Callable, Iterable

from deployer.fleet.ops import BoardResult

StopFn = Callable[[list[BoardResult]], bool]

# Set when whoever asked for this command has gone away (the fleet controller's client was
# interrupted): start no further board, as Ctrl-C does in a plain process.
CANCEL: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("deployer_fleet_cancel", default=None)


def fan_out(executor: Executor, boards: Iterable[Any], op: Callable[..., BoardResult], args: tuple,
            *, max_parallel: int, on_result: Callable[[BoardResult], None] | None = None,
            stop: StopFn | None = None, kwargs: dict[str, Any] | None = None) -> tuple[list[BoardResult], list[Any]]:
    """(results in completion order, boards never started because `stop` said so)."""
    todo = list(boards)
    running: dict[Future, Any] = {}
    results: list[BoardResult] = []
    stopped = False
    cancel = CANCEL.get()
    try:
        while todo or running:
            if cancel is not None and cancel.is_set():
                stopped = True
            while todo and len(running) < max_parallel and not stopped:
                board = todo.pop(0)
                running[executor.submit(op, board, *args, **(kwargs or {}))] = board
            if not running:
                break
            done, _ = wait(list(running), timeout=None if cancel is None else 1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                board = running.pop(fut)
                try:
                    res = fut.result()
                except ImportError:       # this host lacks a package: one line from the CLI, not N boards
                    raise
                except Exception as err:  # an executor-level failure (worker died): that board failed
                    res = BoardResult(board.name, False, None, action="failed", stage="executor",
                                      error=f"{board.name}: {type(err).__name__}: {err}", exit_code=4)
                results.append(res)
                if on_result:
                    on_result(res)
            if stop is not None and not stopped and stop(results):
                stopped = True
            if stopped and not running:
                break
    except BaseException as err:
        started = [fut for fut in running if not fut.cancel() and not fut.done()]
        if started:
            _let_finish(started, err)
        if on_result is not None:   # what they did is recorded: `rollback --rollout` must undo their switch
            for fut in running:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    on_result(fut.result())
        raise
    return results, (todo if stopped else [])


def _let_finish(started: list[Future], err: BaseException) -> None:
    """Ctrl-C (or an error) mid fan-out: boards already started finish, as documented - and before
    the caller unwinds, because it then removes what they read (the release's temporary folder:
    interrupted deploys used to fail their running boards with FileNotFoundError on its manifest).
    A second Ctrl-C stops waiting."""
    if isinstance(err, KeyboardInterrupt):
        sys.stderr.write(f"interrupted: letting the {len(started)} board(s) already started finish "
                         "(Ctrl-C again to stop waiting)\n")
        sys.stderr.flush()
    wait(started)
