"""`deployer ncnn2int8`: argument parsing and rendering over deployer.quant.int8."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from deployer.cli.common import console, emit_json, handle_errors
from deployer.cli.render import warn


def register(app: typer.Typer) -> None:
    app.command(name="ncnn2int8")(ncnn2int8)


@handle_errors
def ncnn2int8(
    inparam: Path = typer.Argument(..., help="fp32 model .param"),
    inbin: Path = typer.Argument(..., help="fp32 model .bin"),
    outparam: Path = typer.Argument(..., help="int8 model .param to write"),
    outbin: Path = typer.Argument(..., help="int8 model .bin to write"),
    table: Optional[Path] = typer.Argument(None, help="calibration table from ncnn2table"),
    exclude: list[str] = typer.Option([], "--exclude", "-x", help="layer to keep float (repeatable)"),
    fp32_float: bool = typer.Option(False, "--fp32-float", help="store non-int8 weights as fp32, not fp16 as ncnn2int8 does"),
    json_output: bool = typer.Option(False, "--json", help="print the report as JSON on stdout"),
) -> None:
    """Drop-in for ncnn's ncnn2int8: int8 conv/dw/fc from a calibration table, fp16 elsewhere.

    Unlike ncnn2int8, a layer missing from the table stays float on its own, and the report says
    which layers were quantized and why the others were not. The result is loaded and run once in
    stock ncnn (in a child process) before it is renamed into place.
    """
    from deployer.ncnn.verify import ncnn2int8_verified

    with console.status(f"quantizing {inparam.name}"):
        report, verified = ncnn2int8_verified(inparam, inbin, outparam, outbin, table, exclude=set(exclude),
                                              float_storage="fp32" if fp32_float else "fp16")
    if verified.note:
        report.warnings.append(verified.note)
    if json_output:
        emit_json({"ok": True, "param": str(outparam), "bin": str(outbin), **report.to_dict(),
                   "verified": verified.to_dict()})
    else:
        _render(report)
        console.print(f"wrote [bold]{outparam}[/] and [bold]{outbin}[/]: {len(report.quantized)} layer(s) int8, "
                      f"{len(report.kept_float)} kept float ({report.float_storage} weights)", soft_wrap=True)
        if verified.shapes:
            shown = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in verified.shapes.items())
            console.print(f"checked: stock ncnn loads it and runs {shown} in {verified.seconds:.1f} s", soft_wrap=True)
    for warning in report.warnings:
        warn(warning)  # one line, taken literally (a layer name in brackets is not markup)


def _render(report) -> None:
    table = Table(title="ncnn2int8", title_justify="left", show_lines=False)
    for col in ("layer", "type", "precision", "8=", "requantize to", "reason"):
        table.add_column(col)
    for d in report.layers:
        style = "green" if d.precision == "int8" else "yellow"
        table.add_row(d.name, d.type, f"[{style}]{d.precision}[/]", str(d.int8_scale_term or ""),
                      d.requantize_to or "", d.reason)
    console.print(table)
