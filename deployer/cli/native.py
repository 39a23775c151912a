"""`deployer runtime build` and the per-layer table of `deployer run --layers`. Parsing and rendering only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from deployer.cli.common import console, emit_json, handle_errors, out
from deployer.cli.progress import Status

JsonOpt = typer.Option(False, "--json", help="print JSON on stdout")


def register(app: typer.Typer) -> None:
    from deployer.cli.boards import runtime_app

    @runtime_app.command("build")
    @handle_errors
    def runtime_build(
        arch: str = typer.Option(..., "--arch", help="aarch64 (arm64) | armv7l (armhf)"),
        ncnn_version: Optional[str] = typer.Option(None, "--ncnn-version", help="ncnn version (default: the host wheel's)"),
        benchmark: bool = typer.Option(False, "--benchmark", help="also the per-layer timing flavour (NCNN_BENCHMARK)"),
        fetch: bool = typer.Option(False, "--fetch", help="download the ncnn sdist if it is not cached (set-up time)"),
        sdist: Optional[Path] = typer.Option(None, "--sdist", help="use this ncnn-<version>.tar.gz (offline set-up)"),
        json_output: bool = JsonOpt,
    ) -> None:
        """Cross-compile ncnn + deployer's runner into one static executable for a board arch (cached)."""
        from deployer.native import build as nb
        from deployer.native import source
        from deployer.remote.runtime import host_ncnn_version

        version = source.check_version(ncnn_version or host_ncnn_version() or "")
        tc = nb.toolchain(arch)
        if sdist is not None:
            source.use_sdist(sdist, version)
        elif fetch and not source.sdist_path(version).is_file():
            with Status(f"downloading the ncnn {version} sdist"):
                source.fetch_sdist(version)
        # Status, not console.status: a CI log of a 10+ minute build gets a line every 10 s
        with Status(f"building the native {tc.arch} runtime (ncnn {version})") as status:
            def progress(what: str, done: int, total: int) -> None:
                status.update(f"building {what}: {done}/{total}")

            found = nb.build(tc.arch, version, layers=benchmark, progress=progress)
        if json_output:
            emit_json({"ok": True, **found.to_json()})
            return
        times = ", ".join(f"{k} {v:.0f} s" for k, v in found.times_s.items())
        console.print(f"{found.runner} ({found.size / 1e6:.1f} MB static, ncnn {found.version}, {found.arch})"
                      + (f"\n{found.layers} ({(found.layers_size or 0) / 1e6:.1f} MB, per-layer timing)"
                         if found.layers else "")
                      + (f"\nbuild times: {times}" if times else ""))


def render_layers(results: list[Any], top: int = 25) -> None:
    """Per op type and the most expensive layers, for each board's --layers run."""
    for r in results:
        rep = getattr(r, "layers", None)
        if not rep:
            continue
        vs = rep.get("vs_fp32")
        types = Table(title=f"{r.board}: time per op type (median over {rep['iterations']} iterations, "
                            f"sum of layers {rep['sum_median_ms']:.2f} ms)", title_justify="left")
        for col in ("op type", "layers", "ms", "share") + (("fp32 ms", "int8 speed-up") if vs else ()):
            types.add_column(col, justify="left" if col == "op type" else "right")
        for name, t in rep["types"].items():
            row = [name, str(t["layers"]), f"{t['median_ms']:.3f}", f"{t['share'] * 100:.1f} %"]
            if vs:
                v = vs["types"].get(name, {})
                row += [f"{v.get('fp32_ms', 0.0):.3f}", f"{v['speedup']:.2f}x" if v.get("speedup") else "-"]
            types.add_row(*row)
        out.print(types)
        layers = sorted(rep["layers"].items(), key=lambda kv: -kv[1]["median_ms"])[:top]
        table = Table(title=f"{r.board}: the {len(layers)} most expensive layers", title_justify="left")
        for col in ("#", "layer", "type", "ms", "share") + (("fp32 ms", "int8 speed-up") if vs else ()):
            table.add_column(col, justify="left" if col in ("layer", "type") else "right")
        for name, layer in layers:
            row = [str(layer["index"]), name, layer["type"], f"{layer['median_ms']:.3f}", f"{layer['share'] * 100:.1f} %"]
            if vs:
                v = vs["layers"].get(name, {})
                row += [f"{v['fp32_ms']:.3f}" if v.get("fp32_ms") is not None else "-",
                        f"{v['speedup']:.2f}x" if v.get("speedup") else "-"]
            table.add_row(*row)
        out.print(table)
        if vs and vs.get("speedup"):
            console.print(f"{r.board}: int8 vs fp32, sum of layers: {vs['int8_sum_ms']:.2f} ms vs "
                          f"{vs['fp32_sum_ms']:.2f} ms ({vs['speedup']:.2f}x)")
