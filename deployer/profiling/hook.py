"""What every run gets from deployer.profiling, called by deployer.remote.session.

`before_run` / `after_run` bracket the runner with the board-side context collector and attach
context, the warm-up-aware analysis and the flags to the RunResult (`result.profiling`);
`store` puts the finished run into the results folder's history database. Kept to three calls so
the session module only needs a few lines to use it.
"""

from __future__ import annotations

from typing import Any

from deployer.errors import DeployerError
from deployer.profiling import context as ctx
from deployer.profiling import stats


def before_run(conn: Any) -> ctx.Snapshot | DeployerError:
    """A context snapshot right before the runner starts (or the error, so the run still happens)."""
    try:
        return ctx.collect(conn)
    except DeployerError as err:
        return err


def after_run(conn: Any, result: Any, before: ctx.Snapshot | DeployerError, *,
              thresholds: ctx.Thresholds = ctx.Thresholds(), min_duration_s: float = 0.0) -> None:
    """Second snapshot, analysis of the samples, flags: stored on `result.profiling`."""
    legacy = list(result.warnings())  # the runner's own view, used if the collector could not run
    try:
        after: ctx.Snapshot | DeployerError = ctx.collect(conn)
    except DeployerError as err:
        after = err
    analysis = stats.analyze(result.samples_ms)
    flags = stats.measurement_flags(analysis, min_duration_s=min_duration_s, spread_rel_mad=thresholds.spread_rel_mad,
                                    spread_ci_rel=thresholds.spread_ci_rel)
    if isinstance(before, ctx.Snapshot) and isinstance(after, ctx.Snapshot):
        context = ctx.context_json(before, after, thresholds)
        flags = [ctx.Flag(**f) for f in context.pop("flags")] + flags
    else:
        err = before if isinstance(before, DeployerError) else after
        context = {"error": str(err)}
        flags = [ctx.Flag("context", f"board context not collected ({err}); runner view: {w}") for w in legacy] + flags
    result.profiling = {"context": context, "analysis": analysis.to_json() if analysis else None,
                        "flags": [f.to_json() for f in flags]}


def store(result: Any, results_dir: Any, **kw: Any) -> int:
    """Put a finished run into history; its id goes into the result (and so the JSON file)."""
    from deployer.profiling.store import record_run

    run_id = record_run(result.to_json(), results_dir, **kw)
    result.profiling["history_id"] = run_id
    return run_id
