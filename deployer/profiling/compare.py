"""`deployer compare A B`: are B's stored runs faster, slower or the same as A's?

A side is one run id or several ("3,5,7"). Why several: two runs of one model differ by more than
the samples inside a run do (see deployer.profiling.stats: a 3-s run's median interval is a few
per cent wide, back-to-back runs on a busy emulated board moved 50 %), so a verdict about *models*
needs either repeated runs or an idea of how far runs move. This module gathers both: the kept
samples (after each run's detected warm-up) of the runs named, and the board's run-to-run spread
from the history (repeated runs of one model with the same options, the compared runs left out).
It carries along what makes the answer questionable: different boards, different options, the
runs' own flags, and a verdict that had neither repeats nor a spread to lean on.

"Options" are everything that changes what a run measured (store.run_setup: ncnn's switches, the
input shape and fill, the output blob, the runtime). A different setup is a warning, not a refusal,
in a plain comparison (how much a 160x160 input saves is a fair question), but `--fail-on-regression`
refuses it: a CI gate is read from its exit code, and a baseline of another shape would pass or fail
it on the setting, whatever the model did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deployer.errors import DeployerError
from deployer.profiling import stats as st
from deployer.profiling import store

SPREAD_RUNS = 500       # the most recent runs per board the run-to-run spread is taken from


def kept_samples(row: store.RunRow) -> list[float]:
    warm = int((row.data.get("analysis") or {}).get("warmup_count") or 0)
    return [float(x) for x in (row.data.get("samples_ms") or [])[warm:]]


def parse_run_ids(text: str, what: str) -> list[int]:
    """'12' or '12,15,18' -> [12, 15, 18]; anything else is bad input naming the argument."""
    ids = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise DeployerError(f"{what} {text!r}: give run ids (from `deployer history`), one or several "
                                "separated by commas, e.g. 12 or 12,15,18")
        ids.append(int(part))
    if len(set(ids)) != len(ids):
        raise DeployerError(f"{what} {text!r}: a run is named twice")
    return ids


def _group_key(row: store.RunRow) -> tuple:
    """Repeats are runs of one model with one setup: runs of another input shape or runtime are
    other work, and pooling them made the spread the difference between the settings."""
    return (row.board, row.model_sha256, row.param_sha256, json.dumps(store.run_setup(row.data), sort_keys=True))


def rows_spread(rows: list[store.RunRow], leave_out: set[int]) -> st.RunSpread | None:
    """Run-to-run spread among these runs: repeated runs of one model and options (not `leave_out`)."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        kept = kept_samples(row)
        if row.id not in leave_out and len(kept) >= 3:
            groups.setdefault(_group_key(row), []).append(float(np.median(kept)))
    return st.run_spread(list(groups.values()))


def board_spread(results_dir: Path | str, boards: set[str], leave_out: set[int]) -> st.RunSpread | None:
    """The boards' run-to-run spread from the history (their most recent SPREAD_RUNS runs each)."""
    rows = [r for b in sorted(boards) for r in store.list_runs(results_dir, board=b, limit=SPREAD_RUNS)]
    return rows_spread(rows, leave_out)


def setup_differences(rows_a: list[store.RunRow], rows_b: list[store.RunRow]) -> list[str]:
    """'run 1 vs run 5: shape 224x224x3 -> 48x48x3' for every run whose setup (store.run_setup)
    differs from the first A run's: compare answers "is B faster than A" only for like work."""
    base = rows_a[0]
    setup = store.run_setup(base.data)
    out = []
    for row in rows_a[1:] + rows_b:
        a, b = setup, store.run_setup(row.data)
        if row.param_sha256 != base.param_sha256:
            # blob names are the model's own: another model's output blob is named otherwise for the same work
            a, b = ({k: v for k, v in s.items() if k not in store.MODEL_NAMED} for s in (a, b))
        diff = store.setup_differences(a, b)
        if diff:
            out.append(f"run {base.id} vs run {row.id}: " + ", ".join(diff))
    return out


def compare_runs(results_dir: Path | str, ids_a: list[int] | int, ids_b: list[int] | int, *,
                 min_effect_pct: float = 3.0, alpha: float = 0.05,
                 fail_on_regression_pct: float | None = None) -> dict[str, Any]:
    ids_a = [ids_a] if isinstance(ids_a, int) else list(ids_a)
    ids_b = [ids_b] if isinstance(ids_b, int) else list(ids_b)
    both = sorted(set(ids_a) & set(ids_b))
    if both and (len(ids_a) > 1 or len(ids_b) > 1):
        raise DeployerError(f"run {both[0]} is on both sides; give each side its own runs")
    rows_a = [store.get_run(results_dir, i) for i in ids_a]
    rows_b = [store.get_run(results_dir, i) for i in ids_b]
    differences = setup_differences(rows_a, rows_b)
    if differences and fail_on_regression_pct is not None:
        # a gate passes or fails on the setting then, not on the model: a 48x48 run "passes" against a
        # 224x224 baseline whatever the model did, and CI reads the exit code, not the warnings
        raise DeployerError("--fail-on-regression compares runs of one setup; these differ: "
                            + "; ".join(differences),
                            hint="pick a baseline run with the same options (`deployer history` shows them), "
                                 "or drop --fail-on-regression to see the comparison with a warning")
    kept = {row.id: kept_samples(row) for row in rows_a + rows_b}
    for row in rows_a + rows_b:
        n = len(kept[row.id])
        if n < 3:
            raise DeployerError(f"run {row.id}: only {n} sample(s) after warm-up; compare needs at least 3",
                                hint="run it longer (--duration S) or with more --iterations")
    boards = {r.board for r in rows_a + rows_b}
    spread = board_spread(results_dir, boards, set(ids_a) | set(ids_b))
    sets = st.compare_run_sets([kept[r.id] for r in rows_a], [kept[r.id] for r in rows_b],
                               alpha=alpha, min_effect_pct=min_effect_pct, spread=spread)
    warnings = []
    if len(boards) > 1:
        warnings.append(f"different boards: {', '.join(sorted(boards))}")
    warnings += [f"different options ({d}): the runs measured different work or settings, so the verdict "
                 "is about them as much as about the model" for d in differences]
    if sets.basis == "within-runs":
        warnings.append("one run on a side and no repeated runs of one model on "
                        f"{', '.join(sorted(boards))} in the history: the interval covers the variation within "
                        "the runs, not between them (back-to-back runs of one model can differ by more); "
                        "run each side again and compare the sets, e.g. `deployer compare 3,5 4,6`")
    for row in rows_a + rows_b:
        for f in row.data.get("flags") or []:
            warnings.append(f"run {row.id}: {f.get('kind')}: {f.get('message')}")
    res: dict[str, Any] = {"ok": True, "a": ids_a, "b": ids_b, **sets.to_json(),
                           "setup": store.run_setup(rows_a[0].data), "same_setup": not differences,
                           "warnings": warnings}
    if fail_on_regression_pct is not None:
        res["fail_on_regression_pct"] = fail_on_regression_pct
        res["regression"] = sets.comparison.verdict == "slower" and sets.comparison.change_pct > fail_on_regression_pct
        res["ok"] = not res["regression"]
    return res
