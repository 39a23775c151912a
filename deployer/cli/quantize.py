"""`deployer quantize` and `deployer check`: parse flags into a profile, call the library, render.

Every profile field has a flag; flags override the profile. Per-input flags (--mean, --norm,
--shape, --pixel, --resize) take ncnn2table's bracket groups for multi-input models:
`--mean "[104,117,123],[0,0,0]"`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from deployer.cli.common import console, emit_json, handle_errors, nonempty_path
from deployer.cli.progress import Progress
from deployer.cli.render import error, note, say, warn
from deployer.profile import METHODS, Override

# profile field -> flag name, for the options both commands share
SHAPE_HELP = "network input W,H (0 keeps the image's aspect, 0,0 its size)"
_INPUT_FLAGS = {"inputs.mean": "--mean", "inputs.norm": "--norm", "inputs.shape": "--shape",
                "inputs.pixel": "--pixel", "inputs.resize": "--resize", "inputs.pad_value": "--pad-value"}


def _groups(text: str, simple_commas: bool) -> list[str]:
    """"[1,2,3],[4,5,6]" -> ["1,2,3", "4,5,6"]; "1,2,3" -> ["1,2,3"]; "RGB,GRAY" -> two when simple_commas."""
    text = text.strip()
    if text.startswith("["):
        return [g for g in re.findall(r"\[([^\]]*)\]", text)]
    if simple_commas:
        return [p.strip() for p in text.split(",") if p.strip()]
    return [text]


def _input_overrides(mean: str | None, norm: str | None, shape: str | None, pixel: str | None,
                     resize: str | None, pad_value: str | None) -> list[Override]:
    out = []
    for field, value, simple in (("inputs.mean", mean, False), ("inputs.norm", norm, False),
                                 ("inputs.shape", shape, False), ("inputs.pixel", pixel, True),
                                 ("inputs.resize", resize, True), ("inputs.pad_value", pad_value, True)):
        if value is not None:
            out.append(Override(field, _groups(value, simple), _INPUT_FLAGS[field]))
    return out


def _model_overrides(param: Path | None, bin_: Path | None, source: Path | None, inputshape: str | None) -> list[Override]:
    out = []
    for field, value, flag in (("model.param", param, "--param"), ("model.bin", bin_, "--bin"),
                               ("model.source", source, "--source"), ("model.inputshape", inputshape, "--inputshape")):
        if value is not None:
            out.append(Override(field, str(value), flag))
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(v)


def _outputs_table(outputs: dict[str, dict], title: str) -> Table:
    groups = next((s["groups"] for s in outputs.values() if s.get("groups") and s["groups"] < s["count"]), None)
    if groups:      # eval.group: the intervals count photos, not views
        title += f" (intervals over {groups} groups of eval.group)"
    t = Table(title=title, title_justify="left")
    for col in ("output", "cosine", "min cos", "PSNR dB", "max |err|", "top-1 agree [95% CI]",
                "clear inputs only [95% CI]", "top-5 agree"):
        t.add_column(col, justify="right" if col != "output" else "left")
    for name, s in outputs.items():
        top1 = _fmt(s.get("top1_agreement"), 3)
        if s.get("top1_agreement_ci"):
            lo, hi = s["top1_agreement_ci"]
            top1 += f" [{lo:.2f}, {hi:.2f}]"
        clear = _fmt(s.get("top1_agreement_clear"), 3)
        if s.get("top1_agreement_clear_ci"):
            lo, hi = s["top1_agreement_clear_ci"]
            clear += f" [{lo:.2f}, {hi:.2f}]"
        if s.get("top1_near_ties"):
            clear += f", {s['top1_near_ties']} near-ties out"
        t.add_row(name, _fmt(s["cosine"]), _fmt(s["min_cosine"]), _fmt(s["psnr"], 2), _fmt(s["max_abs"]),
                  top1, clear, _fmt(s.get("top5_agreement"), 3))
    return t


def _task_line(task: dict | None) -> None:
    """The profile's task metrics (deployer.check.tasks): mAP for detectors, mask IoU for dense maps."""
    if task:
        intervals = task.get("intervals") or {}
        lows = {f"{k}_low" for k in intervals}              # shown as the interval's lower end
        shown = ", ".join(f"{k}={_fmt(v)}" + (" [{}, {}]".format(*map(_fmt, intervals[k])) if k in intervals else "")
                          for k, v in task.items() if k not in ("detail", "intervals", *lows) and v is not None)
        detail = task.get("detail", {})
        extra = f" ({detail['reference_boxes']} fp32 boxes)" if "reference_boxes" in detail else ""
        if intervals:
            extra += f"; 95% intervals over {intervals['over']} {intervals['unit']}"
        console.print(f"task: {shown}{extra}")


def _gates_lines(gates: list[dict]) -> None:
    for g in gates:
        mark = "[green]pass[/]" if g["passed"] else "[bold red]FAIL[/]"
        observed = ", ".join(f"{k}={_fmt(v)}" for k, v in g["observed"].items())
        if g.get("settled") is not None:
            shown = "; ".join("[{}, {}]".format(*(_fmt(x, 3) for x in iv)) for iv in g["intervals"].values())
            observed += (f"; 95% interval {shown} on one side of the threshold" if g["settled"] else
                         f"; not settled: 95% interval {shown} straddles the threshold")
        console.print(f"gate {g['gate']}: {mark} ({observed})")


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize)
    app.command("check")(check)


# ------------------------------------------------------------------------------------------------
# quantize


@handle_errors
def quantize(
    profile: Optional[Path] = typer.Option(None, "--profile", "-p", help="profiles/*.yaml; flags override its fields"),
    param: Optional[Path] = typer.Option(None, "--param", help="fp32 ncnn .param"),
    bin_: Optional[Path] = typer.Option(None, "--bin", help="fp32 ncnn .bin"),
    source: Optional[Path] = typer.Option(None, "--source", help="ONNX / TorchScript model, converted with pnnx (fp16=0)"),
    inputshape: Optional[str] = typer.Option(None, "--inputshape", help="pnnx input shape(s), e.g. [1,3,224,224]"),
    calib: Optional[list[Path]] = typer.Option(None, "--calib", help="calibration list file or folder (repeat per input)"),
    count: Optional[int] = typer.Option(None, "--count", help="use at most N calibration files"),
    holdout: Optional[float] = typer.Option(None, "--holdout", help="fraction (or count) held out to choose and gate"),
    seed: Optional[int] = typer.Option(None, "--seed", help="shuffle seed for the held-out split"),
    eval_images: Optional[list[Path]] = typer.Option(None, "--eval", help="evaluation list file or folder that judges "
                                                     "methods, mixed precision and the gate (repeat per input)"),
    eval_count: Optional[int] = typer.Option(None, "--eval-count", help="use at most N evaluation files"),
    eval_min_count: Optional[int] = typer.Option(None, "--eval-min-count",
                                                 help="warn when fewer evaluation inputs than this"),
    eval_group: Optional[str] = typer.Option(None, "--eval-group", help="regex on eval file names whose first "
                                             "group names the photo a view belongs to (grouped intervals)"),
    mean: Optional[str] = typer.Option(None, "--mean", help="e.g. 104,117,123 (groups per input: [..],[..])"),
    norm: Optional[str] = typer.Option(None, "--norm", help="e.g. 0.017,0.017,0.017"),
    shape: Optional[str] = typer.Option(None, "--shape", help=SHAPE_HELP),
    pixel: Optional[str] = typer.Option(None, "--pixel", help="RGB | BGR | GRAY | RGBA | BGRA"),
    resize: Optional[str] = typer.Option(None, "--resize", help="resize | letterbox | none"),
    pad_value: Optional[str] = typer.Option(None, "--pad-value", help="letterbox fill (pixel value)"),
    method: Optional[str] = typer.Option(None, "--method", help=f"auto (default: try candidates, keep the best) or one of {', '.join(METHODS)}"),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="methods tried by --method auto, comma separated"),
    keep_fp32: Optional[list[str]] = typer.Option(None, "--keep-fp32", help="layer to keep float (repeat)"),
    mixed: Optional[bool] = typer.Option(None, "--mixed/--no-mixed", help="automatic mixed precision when a gate fails"),
    max_fp32_layers: Optional[int] = typer.Option(None, "--max-fp32-layers", help="budget for automatic mixed precision"),
    max_fp32_bytes: Optional[str] = typer.Option(None, "--max-fp32-bytes", help="byte budget for it: 10% of the "
                                                 "all-int8 .bin, or a byte count (cheap layers tried first)"),
    layer_times: Optional[Path] = typer.Option(None, "--layer-times", help="a board's `deployer run --layers "
                                               "--fp32-param` result: the fp32 layers' time cost measured there"),
    max_slowdown: Optional[str] = typer.Option(None, "--max-slowdown", help="time budget for mixed precision: "
                                               "e.g. 5% of the all-int8 model's time on that board (needs --layer-times)"),
    refine: Optional[str] = typer.Option(None, "--refine", help="accuracy techniques after calibration, comma "
                                         "separated: adaround, biascorr, shift (or none); kept only if they help"),
    gate: Optional[list[str]] = typer.Option(None, "--gate", help="e.g. 'top1_agreement>=0.99' (repeat)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder", parser=nonempty_path),
    name: Optional[str] = typer.Option(None, "--name", help="output file stem (default: the model's)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="ncnn threads / calibration workers"),
    json_output: bool = typer.Option(False, "--json", help="print the JSON report on stdout"),
) -> None:
    """Quantize an fp32 ncnn model to int8: calibrate once, pick the best method, mixed precision to meet the gate."""
    from deployer.profile import load_profile
    from deployer.quant.pipeline import run_quantize

    overrides = _model_overrides(param, bin_, source, inputshape)
    overrides += _input_overrides(mean, norm, shape, pixel, resize, pad_value)
    for field, value, flag in (
        ("calibration.images", [str(p) for p in calib] if calib else None, "--calib"),
        ("calibration.count", count, "--count"), ("calibration.holdout", holdout, "--holdout"),
        ("calibration.seed", seed, "--seed"),
        ("eval.images", [str(p) for p in eval_images] if eval_images else None, "--eval"),
        ("eval.count", eval_count, "--eval-count"), ("eval.min_count", eval_min_count, "--eval-min-count"),
        ("eval.group", eval_group, "--eval-group"),
        ("quantize.method", method, "--method"),
        ("quantize.candidates", candidates, "--candidates"), ("quantize.keep_fp32", keep_fp32 or None, "--keep-fp32"),
        ("quantize.mixed", mixed, "--mixed"), ("quantize.max_fp32_layers", max_fp32_layers, "--max-fp32-layers"),
        ("quantize.max_fp32_bytes", max_fp32_bytes, "--max-fp32-bytes"),
        ("quantize.layer_times", str(layer_times) if layer_times else None, "--layer-times"),
        ("quantize.max_slowdown", max_slowdown, "--max-slowdown"), ("quantize.refine", refine, "--refine"),
        ("gate", gate or None, "--gate"), ("out", str(out) if out else None, "--out"), ("name", name, "--name"),
        ("threads", threads, "--threads"),
    ):
        if value is not None:
            overrides.append(Override(field, value, flag))
    prof = load_profile(profile, overrides)

    with Progress("quantize") as progress:
        result = run_quantize(prof, progress=progress.update)
    report = result.report
    if json_output:
        emit_json(report)
    else:
        _render_quantize(report)
    if report["gate"]["passed"] is False:
        failed = [g["gate"] for g in report["gate"]["results"] if not g["passed"]]
        error(f"gate failed: {', '.join(failed)} (files written to {result.paths.folder})")
        raise typer.Exit(1)


def _render_quantize(report: dict) -> None:
    ev = report.get("eval", {})
    t = Table(title=f"methods on {ev.get('count', '?')} eval inputs ({ev.get('source', 'held out')}) vs fp32; "
                    f"chosen on {report.get('method_choice', 'cosine + top-1 agreement')}", title_justify="left")
    for col in ("method", "score", "mean cosine", "top-1 agree", "gate", "seconds"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for m, row in report["methods"].items():
        outs = list(row["outputs"].values())
        cos = sum(o["cosine"] for o in outs) / len(outs)
        top1 = [o["top1_agreement"] for o in outs if o.get("top1_agreement") is not None]
        gate = "-" if row["passed"] is None else ("pass" if row["passed"] else "fail")
        style = "bold green" if m == report["method"] else ""
        t.add_row(f"[{style}]{m}[/]" if style else m, _fmt(row.get("score")), _fmt(cos),
                  _fmt(top1[0] if top1 else None, 3), gate, _fmt(row["seconds"], 2))
    console.print(t)
    _stability_line(report.get("method_stability"))
    console.print(_outputs_table(report["heldout"]["outputs"], f"final int8 model on {report['heldout']['count']} eval inputs"))
    _refine_line(report.get("refine") or {})
    keep = report["keep_fp32"]
    mixed = report["mixed"]
    if mixed.get("ran"):
        if mixed["passed"]:
            say(f"mixed precision: kept {len(keep['auto'])} layer(s) fp32 ({', '.join(keep['auto']) or 'none'}), "
                f"costing {report['sizes']['mixed_cost_bytes']:,} bytes")
        else:
            say(f"mixed precision ({mixed['candidates_evaluated']} candidates): {mixed.get('reason', 'gate out of reach')}")
            if mixed.get("smallest_passing_speed"):
                say(f"time cost of that smallest passing set: {_speed_text(mixed['smallest_passing_speed'])}")
    if keep["profile"]:
        say(f"kept fp32 by the profile: {', '.join(keep['profile'])}")
    if keep["profile"] or keep["auto"]:
        say(f"time cost of the float layers: {_speed_text(report['speed'])}")
    _task_line(report.get("task"))
    _gates_lines(report["gate"]["results"])
    sizes = report["sizes"]
    console.print(f"method [bold]{report['method']}[/]; {len(report['int8_layers'])} int8 layers, "
                  f"{len(report['fp32_layers'])} float; .bin {sizes['fp32_bin']:,} -> {sizes['int8_bin']:,} bytes "
                  f"({sizes['ratio']:.2f}x smaller); {report['timings']['total']:.1f} s")
    for w in report["warnings"]:
        warn(w)
    files = report["files"]
    say(f"wrote {files['param']}, {Path(files['bin']).name}, {Path(files['table']).name}, {Path(files['report']).name}")


def _stability_line(st: dict | None) -> None:
    """How settled the method choice is: bootstrap share and leave-one-out (deployer.quant.choice)."""
    if not st:
        return
    rivals = "".join(f", {m} {share:.0%}" for m, share in st["wins"].items() if m != st["chosen"])
    loo = st["leave_one_out"]
    if not loo["of"]:
        held = ""
    elif not loo["flips"]:
        held = "; holds with any one of them left out"
    else:
        shown = ", ".join(f"{f['left_out']} -> {f['to']}" for f in loo["flips"][:3])
        more = f" and {len(loo['flips']) - 3} more" if len(loo["flips"]) > 3 else ""
        held = f"; flips without {shown}{more}"
    say(f"choice: {st['chosen']} wins {st['share']:.0%} of {st['resamples']} resamples of the {st['units']} "
        f"{st['unit']}{rivals}{held}")


def _refine_line(info: dict) -> None:
    """What `quantize.refine` did: kept or not (on the eval score), and the shift's chosen offset."""
    if not info.get("techniques"):
        return
    names = "+".join(info["techniques"])
    if not info.get("ran"):
        say(f"refine {names}: not run ({info.get('reason', 'nothing to do')})")
        return
    verdict = "[green]kept[/]" if info["kept"] else "not kept (the eval score did not improve)"
    text = (f"refine {names}: {verdict}; score {info['score_before']:.4f} -> {info['score_after']:.4f}, "
            f"output error {info['error_before']:.5f} -> {info['error_after']:.5f}")
    shift = info.get("shift") or {}
    if shift.get("fraction") is not None:
        text += f"; shift: {shift['pairs']} conv pairs, best offset {shift['fraction']:g} x threshold"
    say(text)


def _speed_text(speed: dict) -> str:
    ratio = speed.get("est_time_vs_all_int8")
    if speed.get("source") == "board":
        untimed = speed.get("untimed") or []
        return (f"measured per layer on {speed['board']}: {speed['extra_ms']:+.3f} ms over all-int8's "
                f"{speed['all_int8_ms']:.3f} ms" + (f" (x{ratio:.3f})" if ratio else "")
                + (f", plus {len(untimed)} layer(s) the board run did not time: {', '.join(untimed)}" if untimed else ""))
    return f"{speed['note']}: x{ratio:.2f}"


# ------------------------------------------------------------------------------------------------
# check


@handle_errors
def check(
    profile: Optional[Path] = typer.Option(None, "--profile", "-p", help="profile: fp32 model, preprocessing, gates, int8 files in its out folder"),
    param: Optional[Path] = typer.Option(None, "--param", help="fp32 ncnn .param"),
    bin_: Optional[Path] = typer.Option(None, "--bin", help="fp32 ncnn .bin"),
    int8_param: Optional[Path] = typer.Option(None, "--int8-param", help="int8 .param (default: from the profile's out)"),
    int8_bin: Optional[Path] = typer.Option(None, "--int8-bin", help="int8 .bin"),
    images: Optional[list[Path]] = typer.Option(None, "--images", help="held-out list file or folder (repeat per input); default: the profile's eval set (else its held-out share)"),
    count: Optional[int] = typer.Option(None, "--count", help="use at most N inputs"),
    mean: Optional[str] = typer.Option(None, "--mean", help="per-channel mean, e.g. 104,117,123 (groups per input: [..],[..])"),
    norm: Optional[str] = typer.Option(None, "--norm", help="per-channel scale, e.g. 0.017,0.017,0.017"),
    shape: Optional[str] = typer.Option(None, "--shape", help=SHAPE_HELP),
    pixel: Optional[str] = typer.Option(None, "--pixel", help="RGB | BGR | GRAY | RGBA | BGRA"),
    resize: Optional[str] = typer.Option(None, "--resize", help="resize | letterbox | none"),
    pad_value: Optional[str] = typer.Option(None, "--pad-value", help="letterbox fill (pixel value)"),
    gate: Optional[list[str]] = typer.Option(None, "--gate", help="e.g. 'top1_agreement>=0.99' (repeat); replaces the profile's"),
    eval_group: Optional[str] = typer.Option(None, "--eval-group", help="regex on input file names whose first group "
                                             "names the photo a view belongs to (grouped intervals)"),
    layers: bool = typer.Option(True, "--layers/--no-layers", help="per-layer error of every int8 layer"),
    threads: Optional[int] = typer.Option(None, "--threads", help="ncnn threads"),
    json_output: bool = typer.Option(False, "--json", help="print the JSON result on stdout"),
) -> None:
    """Compare an int8 model with its fp32 original on held-out inputs; exit 1 if a gate fails."""
    from deployer.errors import DeployerError, GateFailed
    from deployer.profile import load_profile
    from deployer.quant.pipeline import run_check

    overrides = _model_overrides(param, bin_, None, None) + _input_overrides(mean, norm, shape, pixel, resize, pad_value)
    if images:
        overrides.append(Override("calibration.images", [str(p) for p in images], "--images"))
    if gate:
        overrides.append(Override("gate", gate, "--gate"))
    if eval_group is not None:
        overrides.append(Override("eval.group", eval_group, "--eval-group"))
    if threads is not None:
        overrides.append(Override("threads", threads, "--threads"))
    if profile is None and not images:
        raise DeployerError("--images: missing", hint="give held-out images (list file or folder), or --profile")
    if (int8_param is None) != (int8_bin is None):
        raise DeployerError("--int8-param and --int8-bin go together", hint="give both, or neither to use the profile's out folder")
    prof = load_profile(profile, overrides)
    with Progress("check") as progress:
        result = run_check(prof, images=prof.calibration.images if images else None,
                           int8=(int8_param, int8_bin) if int8_param is not None else None,
                           count=count, per_layer=layers, progress=progress.update)
    data = result.to_dict()
    if json_output:
        emit_json(data)
    else:
        _render_check(data)
    if not result.passed:
        failed = [g["gate"] for g in data["gates"] if not g["passed"]]
        if json_output:
            error(f"gate failed: {', '.join(failed)}")
            raise typer.Exit(GateFailed.exit_code)
        raise GateFailed(f"gate failed: {', '.join(failed)}")


def _render_check(data: dict) -> None:
    if data["layers"]:
        t = Table(title="per int8 layer, output vs fp32 (error accumulates downstream)", title_justify="left")
        for col in ("layer", "type", "blob", "cosine", "rel err", "max |err|"):
            t.add_column(col, justify="left" if col in ("layer", "type", "blob") else "right")
        worst = sorted(data["layers"], key=lambda r: r["rel_error"], reverse=True)[:3]
        worst_names = {w["layer"] for w in worst}
        for row in data["layers"]:
            style = "bold red" if row["layer"] in worst_names else ""
            t.add_row(row["layer"], row["type"], row["blob"] + (" (int8)" if row["requantized"] else ""),
                      _fmt(row["cosine"]), _fmt(row["rel_error"]), _fmt(row["max_abs"]), style=style)
        console.print(t)
    console.print(_outputs_table(data["outputs"], f"outputs on {data['inputs']} inputs (fp32 vs int8)"))
    _task_line(data.get("task"))
    _disagreement_lines(data.get("top1_disagreements") or {})
    _gates_lines(data["gates"])
    for n in data["notes"]:
        note(n)


def _disagreement_lines(by_output: dict[str, list[dict]], shown: int = 8) -> None:
    """The inputs whose top-1 class changed, clear flips first: what to look at, and which are coin flips."""
    for name, rows in by_output.items():
        if not rows:
            continue
        ties = sum(r["near_tie"] for r in rows)
        console.print(f"top-1 changed on {len(rows)} input(s) of {name} ({ties} near-tie(s) in fp32):")
        for r in rows[:shown]:
            where = Path(r["input"]).name if r.get("input") else f"input {r['index']}"
            tag = ", near-tie" if r["near_tie"] else ""
            console.print(f"  {where}: class {r['fp32_class']} -> {r['int8_class']} "
                          f"(fp32 margin {r['fp32_margin']:.3f}{tag})", markup=False)
        if len(rows) > shown:
            console.print(f"  ... {len(rows) - shown} more in --json")
