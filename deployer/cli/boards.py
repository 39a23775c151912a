"""Board commands: probe, push, run, runtime fetch/list. Parsing and rendering only."""

from __future__ import annotations

import contextlib
import glob
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from deployer.cli.common import console, emit_boards, emit_json, nonempty_path, handle_errors, out
from deployer.cli.progress import Progress, Status, interval_seconds
from deployer.cli.render import error, human, kv_table, say, warn
from deployer.errors import DeployerError

runtime_app = typer.Typer(help="The ncnn wheels deployer installs on boards (host cache).", no_args_is_help=True)

TargetsOpt = typer.Option(None, "--targets", help="targets YAML file(s); default: targets/*.yaml in the current folder")
JsonOpt = typer.Option(False, "--json", help="print JSON on stdout")
AcceptNewOpt = typer.Option(False, "--accept-new", help="trust and save an unknown host key (never a changed one)")
TargetArg = typer.Argument(..., help="board or group name")
ParamOpt = typer.Option(..., "--param", help="ncnn .param")
BinOpt = typer.Option(..., "--bin", help="ncnn .bin")
NcnnVersionOpt = typer.Option(None, "--ncnn-version", help="board wheel version (default: host's)")
ChecksumOpt = typer.Option(False, "--checksum",
                           help="re-hash every file on the board instead of trusting size+mtime (like rsync -c)")
LockWaitOpt = typer.Option(120.0, "--lock-wait", help="seconds to wait for another deployer holding the board lock")
_SPARK = "▁▂▃▄▅▆▇█"


def _inventory(targets: Optional[List[Path]], target: str | None = None) -> Any:
    from deployer.targets import Inventory, is_adhoc, load_targets

    paths = [Path(p) for p in targets] if targets else [Path(p) for p in sorted(glob.glob("targets/*.yaml"))]
    if not paths:
        if target is not None and is_adhoc(target):
            return Inventory()            # user@host[:port] needs no targets file
        raise DeployerError("no targets: no targets/*.yaml in the current folder; pass --targets FILE")
    return load_targets(paths)


def _lock_notice(event: dict[str, Any]) -> None:
    """Say so when a push has to wait for another deployer's board lock (it may take a while)."""
    if event.get("type") == "stage" and event.get("holder"):
        say(f"{event['board']}: waiting for the board lock held by {event['holder']}")


def _boards(inventory: Any, target: str) -> list[Any]:
    return list(inventory.resolve(target))


def _run_options(**kw: Any) -> Any:
    from deployer.remote.session import RunOptions

    return RunOptions(**kw)


def sparkline(samples: list[float], width: int = 40) -> str:
    tail = samples[-width:]
    if not tail:
        return ""
    lo, hi = min(tail), max(tail)
    span = (hi - lo) or 1.0
    return "".join(_SPARK[min(len(_SPARK) - 1, int((s - lo) / span * (len(_SPARK) - 1) + 0.5))] for s in tail)


class LiveView:
    """Per-board rows that update as the runner's lines arrive (stderr, so --json stays clean).

    On a terminal a live table; off it (CI logs, pipes) plain lines: every stage change at once,
    and the latest timing at most every DEPLOYER_PROGRESS_SECONDS per board.
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.plain = not console.is_terminal
        self.interval = interval_seconds()
        self._said: dict[str, tuple[str, float]] = {}
        if self.plain:
            self.live: Any = contextlib.nullcontext()
        else:
            from rich.live import Live   # only on a terminal

            self.live = Live(self.render(), console=console, refresh_per_second=8, transient=False)

    def __call__(self, event: dict[str, Any]) -> None:
        row = self.rows.setdefault(event["board"], {"stage": "", "samples": [], "cpu": "", "stats": None,
                                                    "files": set()})
        kind = event.get("type")
        if kind == "stage":
            row["stage"] = event["stage"]
        elif kind == "progress":
            name, done, total = event["file"], event["done"], event["total"]
            shown = name if self.plain else name[:24]     # a log line may be long; a table cell may not
            if name not in row["files"] and total and done >= total:
                # complete at its first report: the board already had it (size + sha256), nothing is sent
                row["stage"] = f"unchanged {shown}"
            else:
                row["stage"] = f"upload {shown} {100 * done // max(1, total)}%"
            row["files"].add(name)
        elif kind == "board":
            facts = event.get("facts", {})
            row["cpu"] = f"{facts.get('machine', '?')} {facts.get('cpu') or ''}".strip()
            row["stage"] = "warm-up"
        elif kind == "iter":
            row["samples"].append(event["ms"])
            row["stage"] = "running"
        elif kind == "stats":
            row["stats"] = event
            row["stage"] = "partial" if event.get("partial") else "done"
        elif kind == "failed":
            row["stage"] = "failed"
        if self.plain:
            self._plain_line(event["board"], row)
        else:
            self.live.update(self.render())

    def _plain_line(self, board: str, row: dict[str, Any]) -> None:
        from deployer.remote.stats import latency_stats

        now = time.monotonic()
        stage, said_at = self._said.get(board, ("", 0.0))
        # an upload's end is always said (a file sent within the interval read "0%" and then nothing)
        uploading = row["stage"].startswith("upload ") and not row["stage"].endswith(" 100%")
        moving = row["stage"] == "running" or uploading
        key = " ".join(row["stage"].split(" ", 2)[:2]) if uploading else row["stage"]
        if key == stage and (not moving or now - said_at < self.interval):
            return
        self._said[board] = (key, now)
        text = f"run: {board}: {row['stage']}"
        if row["samples"]:
            s = latency_stats(row["samples"])
            text += f", {len(row['samples'])} iterations, last {row['samples'][-1]:.3f} ms" + \
                (f", median {s.median_ms:.3f} ms" if s else "")
        if row["stage"] == "warm-up" and row["cpu"]:
            text += f" ({row['cpu']})"
        say(text)

    def render(self) -> Table:
        from deployer.remote.stats import latency_stats

        table = Table(title="deployer run", title_justify="left")
        for col in ("board", "cpu", "stage", "n", "last ms", "median", "p90", "min", "timeline"):
            table.add_column(col, justify="right" if col in ("n", "last ms", "median", "p90", "min") else "left")
        for name, row in getattr(self, "rows", {}).items():
            s = latency_stats(row["samples"])
            fmt = (lambda v: f"{v:.3f}")
            table.add_row(name, row["cpu"], row["stage"], str(len(row["samples"])),
                          fmt(row["samples"][-1]) if row["samples"] else "", fmt(s.median_ms) if s else "",
                          fmt(s.p90_ms) if s else "", fmt(s.min_ms) if s else "", sparkline(row["samples"]))
        return table


def _summary_table(results: list[Any]) -> Table:
    table = Table(title="latency (ms)", title_justify="left")
    table.add_column("board")
    table.add_column("cpu")
    table.add_column("n", justify="right")
    for col in ("min", "median", "mean", "p90", "p99", "std"):
        table.add_column(col, justify="right")
    for r in results:
        s = r.stats or {}
        nums = [f"{s[k]:.3f}" if k in s else "-" for k in ("min_ms", "median_ms", "mean_ms", "p90_ms", "p99_ms", "std_ms")]
        cpu = f"{r.facts.get('machine', '?')} {r.facts.get('cpu') or ''}".strip()
        table.add_row(r.board, cpu, str(len(r.samples_ms)) + ("*" if r.partial else ""), *nums)
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(runtime_app, name="runtime")

    @app.command()
    @handle_errors
    def probe(
        target: str = typer.Argument(..., help="board or group name from targets/*.yaml"),
        targets: Optional[List[Path]] = TargetsOpt,
        accept_new: bool = AcceptNewOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """Print what a board is: userland arch, Python, glibc, CPU, memory, disk, deployer state."""
        from deployer.remote.probe import probe as probe_board
        from deployer.ssh.connect import connect

        inventory = _inventory(targets, target)
        facts = {}
        failed: list[DeployerError] = []
        boards = _boards(inventory, target)
        for board in boards:
            try:
                with Status(f"probe {board.name}", enabled=not json_output):
                    with connect(board, accept_new=accept_new, inventory=inventory) as conn:
                        found = probe_board(conn)
            except DeployerError as err:
                if len(boards) == 1:
                    raise
                failed.append(err)          # a dead board must not stop the group
                facts[board.name] = {"ok": False, "board": board.name, "error": str(err), "exit_code": err.exit_code}
                continue
            facts[board.name] = {"ok": True, **found.to_dict()}
        if json_output:
            emit_boards(list(facts.values()))
        else:
            for name, values in facts.items():
                if values.get("ok") is False:
                    continue
                shown = {k: v for k, v in values.items() if k != "ok"}
                out.print(kv_table(name, shown))  # lists, dicts and None read as text, never as reprs
        for err in failed:
            error(str(err))
        if failed:
            raise typer.Exit(max(e.exit_code for e in failed))

    @app.command()
    @handle_errors
    def push(
        target: str = TargetArg,
        param: Path = ParamOpt,
        bin: Path = BinOpt,
        ncnn_version: Optional[str] = NcnnVersionOpt,
        targets: Optional[List[Path]] = TargetsOpt,
        checksum: bool = ChecksumOpt,
        lock_wait: float = LockWaitOpt,
        accept_new: bool = AcceptNewOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """Install the ncnn runtime, the runner and the model on the board(s), without running."""
        from dataclasses import asdict

        from deployer.remote.session import BoardFailure, push_boards

        inventory = _inventory(targets, target)
        opts = _run_options(param=param, bin=bin, ncnn_version=ncnn_version, checksum=checksum, lock_wait=lock_wait)
        with Progress("push") as bars:
            reports = push_boards(_boards(inventory, target), opts, accept_new=accept_new, inventory=inventory,
                                  progress=bars.transfer, on_event=_lock_notice)
        failed = [r for r in reports.values() if isinstance(r, BoardFailure)]
        if json_output:
            emit_boards([r.to_json() if isinstance(r, BoardFailure) else {"ok": True, "board": name, **asdict(r)}
                         for name, r in reports.items()])
        else:
            for name, r in reports.items():
                if isinstance(r, BoardFailure):
                    continue
                # the native runner is uploaded, never unpacked: it read "already there" when just sent
                state = "unpacked" if r.runtime.unpacked else "uploaded" if r.runtime.uploaded else "already there"
                say(f"{name}: runtime {r.runtime.path} ({state}); {len(r.uploaded)} file(s) uploaded, "
                    f"{len(r.files) + 1 - len(r.uploaded)} unchanged")
        for f in failed:
            error(str(f.error))
        if failed:
            raise typer.Exit(max(f.error.exit_code for f in failed))

    @app.command()
    @handle_errors
    def run(
        target: str = TargetArg,
        param: Path = ParamOpt,
        bin: Path = BinOpt,
        shape: Optional[str] = typer.Option(None, "--shape", help="input W,H,C (default: the Input layer's)"),
        iterations: int = typer.Option(10, "--iterations", "-n", help="timed iterations"),
        duration: Optional[float] = typer.Option(None, "--duration", help="run for S seconds instead (at most 7 days)"),
        warmup: int = typer.Option(3, "--warmup", help="untimed warm-up iterations"),
        threads: Optional[int] = typer.Option(None, "--threads", help="ncnn threads (default: board's, else ncnn's)"),
        powersave: Optional[int] = typer.Option(None, "--powersave", help="0 all cores, 1 little, 2 big"),
        fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16", help="fp16 storage/packed/arithmetic (default: board's, else on); --no-fp16 = true fp32"),
        int8: bool = typer.Option(True, "--int8/--no-int8", help="use_int8_inference"),
        input_blob: Optional[str] = typer.Option(None, "--input-blob"),
        output_blob: Optional[str] = typer.Option(None, "--output-blob"),
        fill: str = typer.Option("random", "--fill", help="'random' (seeded) or a constant"),
        seed: int = typer.Option(0, "--seed"),
        input_file: Optional[Path] = typer.Option(None, "--input-file", help="raw float32 input (CHW)"),
        return_output: bool = typer.Option(False, "--return-output", help="include the output tensor"),
        compare: bool = typer.Option(False, "--compare", help="compare the board's output with the host's ncnn"),
        idle_timeout: float = typer.Option(600.0, "--idle-timeout", help="kill the run after S seconds of silence (1 s to 7 days)"),
        ncnn_version: Optional[str] = NcnnVersionOpt,
        results: Path = typer.Option(Path("results"), "--results", help="folder for results/<board>/<time>.json",
                                     parser=nonempty_path),
        targets: Optional[List[Path]] = TargetsOpt,
        checksum: bool = ChecksumOpt,
        lock_wait: float = LockWaitOpt,
        runtime: Optional[str] = typer.Option(None, "--runtime", help="native | python | auto (default: the board's runtime:, else auto)"),
        layers: bool = typer.Option(False, "--layers", help="per-layer times (native benchmark build)"),
        fp32_param: Optional[Path] = typer.Option(None, "--fp32-param", help="with --layers: the fp32 .param to compare per layer"),
        fp32_bin: Optional[Path] = typer.Option(None, "--fp32-bin", help="with --layers: the fp32 .bin"),
        accept_new: bool = AcceptNewOpt,
        json_output: bool = JsonOpt,
    ) -> None:
        """Time a model on the board(s): provision, upload, run, stream timings live, save results."""
        from deployer.remote.session import run_boards

        inventory = _inventory(targets, target)
        opts = _run_options(param=param, bin=bin, shape=shape, iterations=iterations, duration=duration,
                            warmup=warmup, threads=threads, powersave=powersave, fp16=fp16, int8=int8,
                            input_blob=input_blob, output_blob=output_blob, fill=fill, seed=seed,
                            input_file=input_file, return_output=return_output, compare=compare,
                            idle_timeout=idle_timeout, ncnn_version=ncnn_version, checksum=checksum,
                            lock_wait=lock_wait, runtime=runtime, layers=layers)
        boards = _boards(inventory, target)
        from deployer.native.select import check_runtime

        check_runtime(runtime, "--runtime")
        if (fp32_param is None) != (fp32_bin is None) or (fp32_param is not None and not layers):
            raise DeployerError("--fp32-param and --fp32-bin go together, with --layers")
        view = LiveView()
        try:
            with view.live:
                found = run_boards(boards, opts, accept_new=accept_new, inventory=inventory, on_event=view,
                                   results_dir=results,
                                   fp32_model=(fp32_param, fp32_bin) if fp32_param and fp32_bin else None)
        finally:
            if not console.is_terminal and not view.plain:
                console.line()  # rich leaves the last frame unterminated off a tty
        from deployer.remote.session import BoardFailure

        done = [r for r in found if not isinstance(r, BoardFailure)]
        failed = [r for r in found if isinstance(r, BoardFailure)]
        if json_output:
            emit_boards([r.to_json() for r in found])
        elif done:
            out.print(_summary_table(done))
            if layers:
                from deployer.cli.native import render_layers

                render_layers(done)
            for r in done:
                opts = r.options
                say(f"{r.board}: {r.runtime.get('kind', 'python')} runtime, ncnn {human(r.facts.get('ncnn_version'))}, "
                    f"threads {human(opts.get('threads'))}, "
                    f"fp16 {human(opts.get('fp16'))}, int8 {human(opts.get('int8'))}, "
                    f"powersave {human(opts.get('powersave'))} -> {r.saved_to}")
                if opts.get("peak_rss_kb") and opts.get("load_ms") is not None:
                    first = opts.get("first_inference_ms")
                    say(f"{r.board}: peak RSS {opts['peak_rss_kb'] / 1024:.1f} MB, model load {opts['load_ms']:.1f} ms"
                        + (f", first inference {first:.1f} ms" if first is not None else ""))
                for warning in r.warnings():
                    warn(f"{r.board}: {warning}")
                if r.host_compare:
                    c = r.host_compare
                    say(f"{r.board}: output vs host ncnn: "
                        + ("bit-identical" if c.get("identical") else
                           c.get("error") or f"max abs diff {c['max_abs_diff']:.3g}, cosine {c['cosine']:.6f}"))
        for f in failed:
            error(str(f.error))
        stopped = [r.board for r in done if r.partial]
        if stopped:  # the runner was signalled on the board: results are saved but incomplete
            warn(f"stopped early on the board: {', '.join(stopped)} (partial results saved)")
        if failed or stopped:
            raise typer.Exit(max([f.error.exit_code for f in failed] + [3 if stopped else 0]))

    @runtime_app.command("fetch")
    @handle_errors
    def runtime_fetch(
        arch: str = typer.Option(..., "--arch", help="aarch64 | armv7l (also arm64, armhf, x86_64)"),
        python: str = typer.Option(..., "--python", help="board Python, e.g. 3.11"),
        version: Optional[str] = typer.Option(None, "--version", help="ncnn version (default: host's; 'latest')"),
        glibc: str = typer.Option("2.36", "--glibc", help="board glibc (ldd --version)"),
        json_output: bool = JsonOpt,
    ) -> None:
        """Download an ncnn wheel for a board platform into the host cache (networked, like `runtime build --fetch` and the sysroot build of `sim up`)."""
        from deployer.remote import runtime as rt

        platform = rt.WheelPlatform(rt.normalize_arch(arch), rt.parse_python(python), rt.parse_glibc(glibc))
        before = {w.path for w in rt.list_cached()}
        with Status(f"runtime fetch: ncnn for {platform.arch} / Python {platform.python_dotted}",
                    enabled=not json_output):
            wheel = rt.fetch_wheel(platform, version)
        downloaded = wheel.path not in before
        if json_output:
            emit_json({"ok": True, **rt.describe([wheel])[0], "path": str(wheel.path), "downloaded": downloaded})
        else:
            say(f"{'downloaded' if downloaded else 'already cached, nothing downloaded:'} {wheel.path}")

    @runtime_app.command("list")
    @handle_errors
    def runtime_list(json_output: bool = JsonOpt) -> None:
        """Show the cached ncnn wheels."""
        from deployer.remote import runtime as rt

        wheels = rt.list_cached()
        if json_output:
            emit_json({"ok": True, "cache": str(rt.cache_dir()), "wheels": rt.describe(wheels)})
            return
        table = Table(title=f"ncnn wheels in {rt.cache_dir()}", title_justify="left")
        for col in ("version", "python", "platforms", "MB"):
            table.add_column(col)
        for row in rt.describe(wheels):
            table.add_row(row["version"], ",".join(row["python"]), ",".join(row["platforms"]),
                          f"{row['size'] / 1e6:.1f}")
        out.print(table)
