"""`deployer compare A B`: is stored run B faster, slower or the same as run A?

Compares the samples each run kept after its detected warm-up, with deployer.profiling.stats
(Mann-Whitney U + Hodges-Lehmann ratio interval), and carries along what makes the answer
questionable: different boards, different options, and either run's flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deployer.errors import DeployerError
from deployer.profiling import stats as st
from deployer.profiling import store


def kept_samples(row: store.RunRow) -> list[float]:
    warm = int((row.data.get("analysis") or {}).get("warmup_count") or 0)
    return [float(x) for x in (row.data.get("samples_ms") or [])[warm:]]


def compare_runs(results_dir: Path | str, id_a: int, id_b: int, *, min_effect_pct: float = 3.0, alpha: float = 0.05,
                 fail_on_regression_pct: float | None = None) -> dict[str, Any]:
    a, b = store.get_run(results_dir, id_a), store.get_run(results_dir, id_b)
    for row in (a, b):
        n = len(kept_samples(row))
        if n < 3:
            raise DeployerError(f"run {row.id}: only {n} sample(s) after warm-up; compare needs at least 3",
                                hint="run it longer (--duration S) or with more --iterations")
    cmp = st.compare_samples(kept_samples(a), kept_samples(b), alpha=alpha, min_effect_pct=min_effect_pct)
    warnings = []
    if a.board != b.board:
        warnings.append(f"different boards: {a.board} vs {b.board}")
    oa, ob = (store._option_summary(r.data.get("options") or {}) for r in (a, b))
    if oa != ob:
        diff = ", ".join(f"{k} {oa.get(k)} -> {ob.get(k)}" for k in sorted(set(oa) | set(ob)) if oa.get(k) != ob.get(k))
        warnings.append(f"different options: {diff}")
    for row in (a, b):
        for f in row.data.get("flags") or []:
            warnings.append(f"run {row.id}: {f.get('kind')}: {f.get('message')}")
    res: dict[str, Any] = {"ok": True, "a": id_a, "b": id_b, **cmp.to_json(), "warnings": warnings}
    if fail_on_regression_pct is not None:
        res["fail_on_regression_pct"] = fail_on_regression_pct
        res["regression"] = cmp.verdict == "slower" and cmp.change_pct > fail_on_regression_pct
        res["ok"] = not res["regression"]
    return res
