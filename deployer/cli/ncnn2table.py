"""`deployer ncnn2table`: parse, run the library, render. Nothing else lives here."""

from __future__ import annotations

import time

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deployer.cli.common import console, emit_json, handle_errors


def register(app: typer.Typer) -> None:
    app.command(
        name="ncnn2table",
        context_settings={"allow_extra_args": False},
        # `\\[` keeps rich from reading the brackets as markup
        help="Calibrate an fp32 ncnn model and write an int8 calibration table (drop-in for ncnn2table). "
             "PARAM BIN LIST\\[,LIST...] TABLE \\[key=value ...] or PARAM BIN TABLE \\[key=value ...] for a "
             "weight-only table. Keys: mean=\\[104,117,123] norm=\\[0.017,0.017,0.017] shape=\\[w,h(,c)] "
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
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=json_output or not console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        result = lib.run(parsed, progress)
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
        console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    for ls in result.layers:
        console.print(f"{ls.name:<40} : max = {ls.absmax:<15f}  threshold = {ls.threshold:<15f}  "
                      f"scale = {ls.input_scale:<15f}", soft_wrap=True, markup=False)
    console.print(f"wrote {parsed.table} ({len(result.table.order)} lines, method={result.method}, "
                  f"{result.num_inputs} inputs, {elapsed:.2f} s)", soft_wrap=True, markup=False)
