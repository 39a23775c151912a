"""`deployer report`: one self-contained HTML file people actually look at.

Everything is inline (CSS, matplotlib plots as base64 PNG), with no external links, so the file can
be mailed, attached to a CI job or opened on an offline machine. The page leads with what decides
whether to trust the numbers (warnings), then the answer (recommendation / comparison), then the
evidence (distributions, time series with the detected warm-up shaded, heat map, per-layer bars,
parity table, context).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from typing import Any, Sequence

import numpy as np

from deployer.profiling import stats as st
from deployer.profiling import store
from deployer.profiling.compare import kept_samples, rows_spread
from deployer.profiling.store import RunRow

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:16px 0 6px} table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px;margin:4px 0;font-size:13px}
.ok{background:#eaf7ea;border-left:4px solid #3a3;padding:6px 10px;margin:4px 0;font-size:13px}
.bad{background:#fdecea;border-left:4px solid #d33;padding:6px 10px;margin:4px 0;font-size:13px}
.muted{color:#777;font-size:12px} img{max-width:100%}
.verdict{font-size:16px;font-weight:bold}
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode("ascii") + '">'


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):   # 2570, not 2.57e+03 (milliseconds of an emulated board)
        return st.fmt_ms(v)
    return _e(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_fmt(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def run_plots(row: RunRow) -> str:
    """Latency distribution + time series (warm-up shaded, outliers marked) for one run."""
    samples = np.asarray(row.data.get("samples_ms") or [], dtype=np.float64)
    if samples.size == 0:
        return '<p class="muted">no samples</p>'
    a = row.data.get("analysis") or {}
    warm = int(a.get("warmup_count") or 0)
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 2.8))
    kept = samples[warm:]
    ax1.hist(kept, bins=min(40, max(5, kept.size // 3)), color="#4a7fb5")
    if a.get("median_ms") is not None:
        ax1.axvline(a["median_ms"], color="k", lw=1, label="median")
        ax1.axvspan(a["ci_low_ms"], a["ci_high_ms"], color="orange", alpha=0.3,
                    label=f"{st.ci_label(a.get('ci_level', 0.95))} CI of the median")
        ax1.legend(fontsize=8)
    ax1.set_xlabel("latency (ms)")
    ax1.set_ylabel("iterations")
    ax1.set_title("distribution after warm-up", fontsize=10)
    idx = np.arange(samples.size)
    ax2.plot(idx, samples, ".", ms=3, color="#4a7fb5")
    if warm:
        ax2.axvspan(-0.5, warm - 0.5, color="grey", alpha=0.25, label=f"warm-up ({warm})")
    out = [i for i in a.get("outliers") or [] if i < samples.size]
    if out:
        ax2.plot(out, samples[out], "x", color="red", label=f"outliers ({len(out)})")
    if warm or out:
        ax2.legend(fontsize=8)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("ms")
    ax2.set_title("time series", fontsize=10)
    return _png(fig)


def layer_plot(layers: Any) -> str:
    """Per-layer bars from the run's `layers`: deployer.native.layers.report() ({"layers": {name: {type,
    median_ms, ...}}, "types": ...}, what `deployer run --layers` stores), a list of {name, type, median_ms}
    rows, or {name: ms}."""
    items: list[tuple[str, float]] = []
    if isinstance(layers, dict) and isinstance(layers.get("layers"), dict):   # deployer.native.layers.report()
        layers = [{"name": name, **row} for name, row in layers["layers"].items() if isinstance(row, dict)]
    elif isinstance(layers, dict) and isinstance(layers.get("layers"), list):
        layers = layers["layers"]
    if isinstance(layers, dict):
        items = [(str(k), float(v)) for k, v in layers.items() if isinstance(v, (int, float))]
    elif isinstance(layers, list):
        for layer in layers:
            if isinstance(layer, dict):
                ms = next((layer[k] for k in ("ms", "time_ms", "median_ms", "avg_ms") if k in layer), None)
                if isinstance(ms, (int, float)):
                    items.append((f"{layer.get('name', '?')} ({layer.get('type', '')})".replace(" ()", ""), float(ms)))
    if not items:
        return ""
    items.sort(key=lambda t: -t[1])
    items = items[:25]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 0.25 * len(items) + 1))
    ax.barh([n for n, _ in items][::-1], [v for _, v in items][::-1], color="#6a9a5b")
    ax.set_xlabel("ms")
    ax.set_title("slowest layers", fontsize=10)
    return "<h3>Per-layer time</h3>" + _png(fig)


def heatmap(summary: dict[str, Any]) -> str:
    """Median latency per setting: rows threads, columns precision (one panel per powersave)."""
    configs = summary.get("configs") or []
    if not configs:
        return ""
    threads = sorted({c["settings"].get("threads", 0) for c in configs})
    precs = [p for p in ("fp32", "fp16", "int8") if any(c["settings"].get("precision") == p for c in configs)]
    saves = sorted({c["settings"].get("powersave", -1) for c in configs})
    plt = _plt()
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(saves), figsize=(3.2 * len(saves) + 1.5, 0.6 * len(threads) + 1.8), squeeze=False)
    for ax, ps in zip(axes[0], saves):
        grid = np.full((len(threads), len(precs)), np.nan)
        for c in configs:
            s = c["settings"]
            if s.get("powersave", -1) == ps and c.get("median_ms") is not None:
                grid[threads.index(s.get("threads", 0)), precs.index(s["precision"])] = c["median_ms"]
        finite = grid[~np.isnan(grid)]
        # a log scale when settings differ by 10x or more, so the fast ones still show their differences
        norm = LogNorm() if finite.size and finite.min() > 0 and finite.max() / finite.min() >= 10 else None
        im = ax.imshow(grid, cmap="viridis_r", aspect="auto", norm=norm)
        for i in range(len(threads)):
            for j in range(len(precs)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, st.fmt_ms(grid[i, j]), ha="center", va="center", fontsize=9,
                            color="white" if grid[i, j] > np.nanmedian(grid) else "black")
        ax.set_xticks(range(len(precs)), precs)
        ax.set_yticks(range(len(threads)), [str(t) if t else "auto" for t in threads])
        ax.set_ylabel("threads")
        ax.set_title("median ms" + (f", powersave={ps}" if ps != -1 else ""), fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.05)
    return _png(fig)


def _flags_html(flags: list[dict[str, Any]]) -> str:
    if not flags:
        return '<div class="ok">no warnings: context stable, spread within limits</div>'
    return "".join(f'<div class="warn"><b>{_e(f.get("kind"))}</b>: {_e(f.get("message"))}</div>' for f in flags)


def _context_html(context: dict[str, Any]) -> str:
    if not context:
        return '<p class="muted">no context recorded</p>'
    if context.get("error"):
        return f'<p class="muted">context not collected: {_e(context["error"])}</p>'
    rows = []
    b, a = context.get("before") or {}, context.get("after") or {}

    def cpus(s: dict[str, Any]) -> str:
        return ", ".join(f"cpu{c['cpu']} {c.get('governor') or '?'} {(c.get('cur_khz') or 0) // 1000}/"
                         f"{(c.get('cpuinfo_max_khz') or c.get('max_khz') or 0) // 1000} MHz" for c in s.get("cpus") or []) or "-"

    def temps(s: dict[str, Any]) -> str:
        return ", ".join(f"{z.get('type') or z.get('zone')} {z['celsius']:.1f} C" for z in s.get("thermal") or []
                         if z.get("celsius") is not None) or "-"

    def mem(s: dict[str, Any]) -> str:
        if not s.get("mem_available_kb"):
            return "-"
        return f"{s['mem_available_kb'] // 1024} MiB free of {s['mem_total_kb'] // 1024} MiB"

    for name, fn in (("cpufreq (governor cur/max)", cpus), ("temperatures", temps), ("memory", mem),
                     ("load average", lambda s: " ".join(map(str, s.get("loadavg") or [])) or "-"),
                     ("throttled", lambda s: s.get("throttled") or "-"),
                     ("Jetson power mode", lambda s: s.get("nvpmodel") or "-")):
        rows.append((name, fn(b), fn(a)))
    others = context.get("other_processes") or []
    busy = ", ".join(f"{p['comm']} (pid {p['pid']}) {p['cpu_pct']}%" for p in others) or "none"
    return (_table(["", "before", "after"], rows, left=3)
            + f'<p class="muted">other processes during the run (% of one core): {_e(busy)}</p>')


def _run_section(row: RunRow) -> str:
    d = row.data
    a = d.get("analysis") or {}
    opts = d.get("options") or {}
    model = (d.get("model_files") or {}).get("bin", {})
    setup = store.run_setup(d)
    work = ", ".join(f"{k} {_e(setup[k])}" for k in ("shape", "fill", "output_blob", "runtime", "ncnn") if k in setup)
    parts = [f'<h2 id="run-{row.id}">Run {row.id}: {_e(row.board)}'
             + (f" &middot; {_e(row.label)}" if row.label else "") + "</h2>",
             f'<p class="muted">{_e(row.started_at)} &middot; model {_e(model.get("path", "?"))} '
             f'(sha256 {_e((row.model_sha256 or "")[:12])}) &middot; threads {_e(opts.get("threads"))}, '
             f'int8 {_e(opts.get("int8"))}, fp16 {_e(opts.get("fp16"))}, powersave {_e(opts.get("powersave"))} '
             + (f"&middot; {work} " if work else "") +
             f'&middot; {_e(d.get("cpu") or "")} ncnn {_e(d.get("ncnn_version") or "")}</p>',
             _flags_html(d.get("flags") or [])]
    if a:
        # the header says the interval's own level: a 2-sample run's [min, max] is a 50 % interval
        level = a.get("ci_level", 0.95)
        parts.append(_table(["median ms", f"{st.ci_label(level)} CI", "MAD ms", "min", "p90", "p99", "samples",
                             "warm-up", "outliers"],
                            [[a.get("median_ms"),
                              st.ci_text(a.get("ci_low_ms"), a.get("ci_high_ms"), level, mark=False),
                              a.get("mad_ms"), a.get("min_ms"), a.get("p90_ms"), a.get("p99_ms"), a.get("count"),
                              a.get("warmup_count"), len(a.get("outliers") or [])]], left=0))
    parts.append(run_plots(row))
    parts.append(layer_plot(d.get("layers")))
    parts.append("<h3>Context</h3>" + _context_html(d.get("context") or {}))
    return "\n".join(parts)


def _parity_html(accuracy: dict[str, Any]) -> str:
    rows = []
    for prec, acc in accuracy.items():
        for r in acc.get("rows") or []:
            rows.append([prec, f"{r['ref']} vs {r['test']}", r["cosine_mean"], r["cosine_min"],
                         r.get("top1_agreement"), r["max_abs"], "pass" if acc.get("passed") else "FAIL"])
    if not rows:
        return ""
    first = next(iter(accuracy.values()))
    src = ("real inputs: " + ", ".join(first.get("inputs") or [])) if first.get("real_inputs") else \
        "seeded random input (pass --images for real inputs)"
    return ("<h3>Parity (same preprocessed inputs)</h3>"
            + _table(["precision", "pair", "cosine mean", "cosine min", "top-1 agreement", "max abs", "gate"], rows, 2)
            + f'<p class="muted">{_e(src)}</p>')


def _sweep_section(summary: dict[str, Any]) -> str:
    rec = summary.get("recommendation")
    parts = [f'<h2 id="sweep-{summary.get("sweep_id")}">Sweep {summary.get("sweep_id")}: {_e(summary.get("board"))}</h2>']
    if rec:
        parts.append(f'<div class="ok verdict">Recommended: {_e(summary.get("recommendation_label"))} &mdash; '
                     f'{_fmt(summary.get("recommendation_median_ms"))} ms</div>'
                     f'<p class="muted">{_e(summary.get("recommendation_reason", ""))}</p>')
    else:
        parts.append(f'<div class="bad verdict">No recommendation: {_e(summary.get("recommendation_reason", ""))}</div>')
    if summary.get("int8"):
        cls = "ok" if summary["int8"]["pays"] else "warn"
        parts.append(f'<div class="{cls}">{_e(summary["int8"]["message"])}</div>')
    parts.append(heatmap(summary))
    configs = summary.get("configs") or []
    rows = [[c["label"], c.get("median_ms"), st.ci_text(*(c.get("ci_ms") or [None, None])[:2], c.get("ci_level")),
             c.get("mad_ms"), c.get("count"),
             "pass" if c.get("accuracy_passed") else "FAIL", ", ".join(str(i) for i in c.get("run_ids") or []),
             len(c.get("flags") or [])] for c in configs]
    ci = st.ci_header([c.get("ci_level") for c in configs])   # not "95% CI" over a row that is 50 %
    parts.append(_table(["setting", "median ms", ci, "MAD", "samples", "accuracy", "runs", "warnings"], rows))
    parts.append(_parity_html(summary.get("accuracy") or {}))
    return "\n".join(parts)


def _comparison_section(rows: list[RunRow]) -> str:
    """Every run against the first; a pair borrows the run-to-run spread of the report's other runs
    (repeats of one model), as `deployer compare` does from the history."""
    base = rows[0]
    out = []
    for other in rows[1:]:
        a = kept_samples(base)
        b = kept_samples(other)
        if len(a) < 3 or len(b) < 3:
            continue
        sets = st.compare_run_sets([a], [b], spread=rows_spread(rows, {base.id, other.id}))
        c = sets.comparison
        out.append([f"{other.id} vs {base.id}", c.verdict, c.change_pct,
                    f"[{c.change_ci_pct[0]:+.1f}, {c.change_ci_pct[1]:+.1f}]", c.p_value, c.cliffs_delta,
                    "within the runs only" if sets.basis == "within-runs"
                    else f"run-to-run spread {sets.spread.pct:.1f}%" if sets.spread else ""])
    if not out:
        return ""
    return ("<h2>Comparison against run " + str(base.id) + "</h2>"
            + _table(["runs", "verdict", "change %", "95% CI %", "p", "Cliff's delta", "interval covers"], out))


def render(rows: list[RunRow], sweeps: list[dict[str, Any]]) -> str:
    """The whole page as one string."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    flagged = [(r, f) for r in rows for f in (r.data.get("flags") or [])]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>deployer profiling report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>deployer profiling report</h1>",
             f'<p class="muted">generated {now} &middot; {len(rows)} run(s), {len(sweeps)} sweep(s)</p>',
             "<h2>Warnings</h2>"]
    if flagged:
        # one line per kind (how many runs, one example): readable at a glance; details are per run
        by_kind: dict[str, list[tuple[RunRow, dict[str, Any]]]] = {}
        for r, f in flagged:
            by_kind.setdefault(str(f.get("kind")), []).append((r, f))
        for kind, items in by_kind.items():
            runs = sorted({r.id for r, _ in items})
            shown = ", ".join(map(str, runs[:12])) + (" ..." if len(runs) > 12 else "")
            parts.append(f'<div class="warn"><b>{_e(kind)}</b> in {len(runs)} of {len(rows)} run(s) ({shown}); '
                         f'e.g. run {items[0][0].id}: {_e(items[0][1].get("message"))}</div>')
    else:
        parts.append('<div class="ok">no warnings in any run</div>')
    summary_rows = [[r.id, r.board, r.label or "", r.median_ms, len(r.data.get("flags") or []), r.started_at]
                    for r in rows]
    parts.append("<h2>Runs</h2>" + _table(["id", "board", "setting", "median ms", "warnings", "started"], summary_rows, 3))
    for s in sweeps:
        parts.append(_sweep_section(s))
    if len(rows) >= 2 and not sweeps:
        parts.append(_comparison_section(rows))
    for r in rows:
        parts.append(_run_section(r))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write_report(results_dir: Any, out_file: Any, ids: list[int], sweep_ids: list[int]) -> dict[str, Any]:
    """Pick the runs and sweeps, render, write atomically. Default: the latest sweep, else the last 5 runs."""
    from pathlib import Path

    from deployer import fsutil
    from deployer.errors import DeployerError

    out_path = Path(out_file)
    if out_path.suffix.lower() not in (".html", ".htm"):
        raise DeployerError(f"--out {out_path}: the report is HTML; name it *.html")
    if out_path.exists() and out_path.is_dir():
        raise DeployerError(f"--out {out_path}: is a folder; give a file name")
    rows = [store.get_run(results_dir, i) for i in ids]
    sweeps = [store.get_sweep(results_dir, s) for s in sweep_ids]
    if not ids and not sweep_ids:
        all_sweeps = [s for s in store.iter_sweeps(results_dir) if s.get("state") == "done"]
        if all_sweeps:
            sweeps = [all_sweeps[-1]]
        else:
            rows = store.list_runs(results_dir, limit=5)
            if not rows:
                raise DeployerError(f"{store.db_path(results_dir)}: no runs stored yet")
    for sid in {r.sweep_id for r in rows if r.sweep_id is not None} - {s["sweep_id"] for s in sweeps}:
        s = store.get_sweep(results_dir, sid)
        if s.get("state") == "done":
            sweeps.append(s)
    have = {r.id for r in rows}
    for s in sweeps:
        for c in s.get("configs") or []:
            for rid in c.get("run_ids") or []:
                if rid not in have:
                    rows.append(store.get_run(results_dir, rid))
                    have.add(rid)
    rows.sort(key=lambda r: r.id)
    text = render(rows, sweeps)
    fsutil.write_text(out_path, text)
    return {"out": str(out_path), "runs": [r.id for r in rows], "sweeps": [s["sweep_id"] for s in sweeps],
            "bytes": len(text.encode("utf-8"))}
