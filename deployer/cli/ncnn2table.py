"""`deployer ncnn2table`: parse, run the library, render. Nothing else lives here."""

from __future__ import annotations

import time

import typer

from deployer.cli.common import emit_json, handle_errors
from deployer.cli.progress import Progress
from deployer.cli.render import say, warn


def register(app: typer.Typer) -> None:
    app.command(
        name="ncnn2table",
        context_settings={"allow_extra_args": False},
        help="Calibrate an fp32 ncnn model and write an int8 calibration table (drop-in for ncnn2table). "
             "PARAM BIN LIST[,LIST...] TABLE [key=value ...] or PARAM BIN TABLE [key=value ...] for a "
             "weight-only table. Keys: mean=[104,117,123] norm=[0.017,0.017,0.017] shape=[w,h(,c)] "
             "pixel=RAW|RGB|BGR|GRAY|RGBA|BGRA thread=N method=kl|aciq|eq|maxabs|percentile|mse "
             "type=0 (images)|1 (npy, shape in ncnn w,h,c order) percentile=99.99",
    )(ncnn2table)


@handle_errors
def ncnn2table(
    args: list[str] = typer.Argument(..., metavar="PARAM BIN LISTS TABLE KEY=VALUE..."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    from deployer.quant import ncnn2table as lib
    from deployer.quant.table import write_table

    parsed = lib.parse_args(args)
    started = time.perf_counter()
    with Progress("ncnn2table") as bar:
        result = lib.run(parsed, bar.update)
    write_table(parsed.table, result.table)
    elapsed = time.perf_counter() - started
    if json_output:
        emit_json({
            "ok": True, "table": str(parsed.table), "method": result.method,
            "inputs": result.num_inputs, "weight_only": result.weight_only,
            "seconds": round(elapsed, 3), "warnings": result.warnings,
            "layers": [{"name": ls.name, "absmax": ls.absmax, "threshold": ls.threshold,
                        "input_scale": ls.input_scale, "weight_scales": len(ls.weight_scales)}
                       for ls in result.layers],
        })
        return
    for w in result.warnings:
        warn(w)
    for ls in result.layers:
        say(f"{ls.name:<40} : max = {ls.absmax:<15f}  threshold = {ls.threshold:<15f}  scale = {ls.input_scale:<15f}")
    say(f"wrote {parsed.table} ({len(result.table.order)} lines, method={result.method}, "
        f"{result.num_inputs} inputs, {elapsed:.2f} s)")
