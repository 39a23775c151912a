"""One benchmark run on one board: probe, provision, upload, launch the runner, stream, save.

Why it is shaped like this:
- Every step that can be skipped is skipped by content (sha256), so a second `deployer run` on the
  same board costs one probe plus the run itself.
- The runner's stdout is consumed line by line and handed to `on_event` as it arrives, so the CLI
  draws timings live; a dropped link is one RemoteError (exit 3) that says how far the run got.
- The host never trusts the board's arithmetic blindly: statistics are recomputed from the samples
  with the same function (deployer.remote.stats), and the result file records everything needed
  to reproduce the run (facts, options, versions, sha256 of the model files).
"""

from __future__ import annotations

import math
import array
import base64
import contextlib
import datetime as _dt
import json
import os
import re
import secrets
import socket
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from deployer import fsutil
from deployer.errors import DeployerError, RemoteError
from deployer.limits import MAX_WAIT_S
from deployer.remote import runtime as rt
from deployer.remote.layout import TMP_MARK, BoardLayout, arg, check_name, host_tag
from deployer.remote.lock import MAX_LOCK_WAIT_S
from deployer.remote.stats import latency_stats
from deployer.ssh.connect import ClosedWithoutStatus

RUNNER_PATH = Path(__file__).with_name("runner.py")
EventSink = Callable[[dict[str, Any]], None]


@dataclass
class RunOptions:
    """What to run and how. None means: the board's `ncnn:` settings from targets, else ncnn's own
    defaults (threads = physical big cores, fp16 on) - what the model really gets on that board."""

    param: Path
    bin: Path
    shape: str | None = None
    iterations: int = 10
    duration: float | None = None
    warmup: int = 3
    threads: int | None = None
    powersave: int | None = None
    fp16: bool | None = None
    int8: bool = True
    winograd: bool | None = None
    sgemm: bool | None = None
    input_blob: str | None = None
    output_blob: str | None = None
    fill: str = "random"
    seed: int = 0
    input_file: Path | None = None
    return_output: bool = False
    compare: bool = False            # also run the host's ncnn on the same input and report the difference
    idle_timeout: float = 600.0      # seconds without a line from the runner before it is killed as hung
    ncnn_version: str | None = None  # wheel version on the board; default = the host's ncnn
    checksum: bool = False           # re-hash every remote file instead of trusting the manifest's quick check
    lock_wait: float = 120.0         # s to wait for another deployer's board lock before giving up
    runtime: str | None = None       # native | python | auto; None = the board's `runtime:` (default auto)
    layers: bool = False             # per-layer times (native benchmark build; deployer.native.layers)


@dataclass
class PushReport:
    runtime: rt.RuntimeInstall
    runner: str
    files: dict[str, str]           # local name -> remote path
    uploaded: list[str]             # remote paths actually sent (the rest were unchanged)


@dataclass
class RunResult:
    board: str
    started_at: str
    facts: dict[str, Any]                 # the runner's `board` line facts (cpu, clocks, ncnn, features)
    options: dict[str, Any]               # options the runner applied
    samples_ms: list[float]
    stats: dict[str, Any] | None
    partial: bool
    runtime: dict[str, Any]
    model: dict[str, Any]
    output: dict[str, Any] | None = None  # {"blob", "shape", "values"} when requested
    probe: dict[str, Any] = field(default_factory=dict)  # deployer.remote.probe facts (OS, glibc, memory...)
    host_compare: dict[str, Any] | None = None            # board output vs host ncnn (--compare)
    end_state: dict[str, Any] = field(default_factory=dict)
    saved_to: str | None = None
    profiling: dict[str, Any] = field(default_factory=dict)  # deployer.profiling: context, analysis, flags, history_id
    layers: dict[str, Any] | None = None                  # per-layer report (deployer.native.layers), --layers

    def warnings(self) -> list[str]:
        """Conditions that make timings unreliable (user reports: governor, heat, throttling)."""
        if self.profiling.get("flags") is not None:  # the board-side context collector's verdict supersedes
            return [f["message"] for f in self.profiling["flags"]]
        found = []
        governors = {c.get("governor") for c in self.facts.get("cpufreq") or [] if c.get("governor")}
        if governors - {"performance"}:
            found.append(f"cpufreq governor {'/'.join(sorted(governors))}: clocks move during the run; "
                         "for stable numbers set 'performance'")
        for when, state in (("before", self.facts), ("after", self.end_state)):
            flags = state.get("throttled")
            if flags and flags not in ("0x0", "0"):
                found.append(f"throttling flags {flags} {when} the run (vcgencmd get_throttled)")
        temps = [z.get("celsius") for z in self.end_state.get("thermal") or [] if z.get("celsius") is not None]
        if temps and max(temps) >= 80:
            found.append(f"hot: {max(temps):.0f} C at the end of the run")
        return found

    def to_json(self) -> dict[str, Any]:
        """The one object `deployer run --json` prints and the results file holds."""
        out: dict[str, Any] = {"ok": not self.partial, "board": self.board, "started_at": self.started_at,
                               "partial": self.partial}
        out.update(self.stats or {"count": 0})
        out["samples_ms"] = self.samples_ms
        for key in ("machine", "cpu", "cores", "model", "python", "ncnn_version", "cpu_features", "hostname"):
            out[key] = self.facts.get(key)
        out.update({"options": self.options, "facts": self.facts, "end_state": self.end_state,
                    "runtime": self.runtime, "model_files": self.model, "probe": self.probe})
        if self.output is not None:
            out["output"] = self.output
        if self.host_compare is not None:
            out["host_compare"] = self.host_compare
        if self.layers is not None:
            out["layers"] = self.layers
        out.update(self.profiling)
        out["warnings"] = self.warnings()
        if self.saved_to:
            out["saved_to"] = self.saved_to
        return out


def _board_default(board: Any, key: str) -> Any:
    opts = getattr(board, "ncnn", None)
    if opts is None:
        return None
    return opts.get(key) if isinstance(opts, dict) else getattr(opts, key, None)


def check_files(files: Iterable[tuple[Any, str]]) -> None:
    """Each (path, flag): an existing file whose name is safe to use on a board."""
    for path, flag in files:
        p = Path(path)
        if not p.is_file():
            # /dev/zero, a FIFO or a folder is there but is nothing to upload: "no such file" sent
            # people looking for a typo
            raise DeployerError(f"{flag} {path}: " + ("no such file" if not p.exists() else
                                                      "is a folder, not a regular file" if p.is_dir() else
                                                      "not a regular file"))
        check_name(p.name, f"{flag} file name")


_FLOAT32_MAX = 3.4028234663852886e38
MIN_IDLE_TIMEOUT_S = 1.0


def _check_local(opts: RunOptions, *, running: bool = True) -> list[Path]:
    """Refuse, before any connection, what the board would refuse later. `running`: the runner
    needs the input's size too; a push only uploads, so a model whose Input has no size pushes."""
    files = [opts.param, opts.bin] + ([opts.input_file] if opts.input_file else [])
    check_files(zip(files, ("--param", "--bin", "--input-file")))
    if opts.iterations < 1:
        raise DeployerError("--iterations must be at least 1")
    # NaN fails these too. 1e308 s ran for ever, and an idle timeout under a second (1e-9) killed
    # healthy runs at once: the host polls every 0.2 s and a runner's lines cross a link
    if opts.duration is not None and not 0 < opts.duration <= MAX_WAIT_S:
        raise DeployerError(f"--duration must be a positive number of seconds, at most {MAX_WAIT_S} (7 days)")
    if not MIN_IDLE_TIMEOUT_S <= opts.idle_timeout <= MAX_WAIT_S:
        raise DeployerError(f"--idle-timeout must be {MIN_IDLE_TIMEOUT_S:g} to {MAX_WAIT_S} seconds (7 days)")
    if not 0 <= opts.lock_wait <= MAX_LOCK_WAIT_S:     # NaN fails too; inf is a timer flock cannot set
        raise DeployerError(f"--lock-wait must be 0 to {MAX_LOCK_WAIT_S} seconds")
    if opts.warmup < 0:
        raise DeployerError("--warmup must be 0 or more")
    from deployer.profile import MAX_THREADS

    if opts.threads is not None and not 1 <= opts.threads <= MAX_THREADS:
        raise DeployerError(f"--threads must be 1 to {MAX_THREADS}")
    if not 0 <= opts.seed < 2**63:      # the native runner reads a long long (docs/validation.md: seeds >= 0)
        raise DeployerError(f"--seed must be 0 to {2**63 - 1}")
    if opts.fill != "random":
        # checked here, not by the runner after the upload: a NaN, Inf or float32-overflowing
        # constant (1e39) made a run on garbage input that looked like any other run
        try:
            value = float(opts.fill)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and abs(value) <= _FLOAT32_MAX):
            raise DeployerError(f"--fill {opts.fill!r}: use 'random' or a finite number (float32 range)")
    if opts.powersave is not None and opts.powersave not in (0, 1, 2):
        raise DeployerError("--powersave must be 0 (all cores), 1 (little) or 2 (big)")
    dims: list[int] | None = None
    if opts.shape is not None:
        from deployer.ncnn.validate import parse_shape_option

        dims = parse_shape_option(opts.shape)
    from deployer.ncnn.model import NcnnModel

    model = NcnnModel.load(opts.param, opts.bin)     # what the board's ncnn would crash on, refused here
    if running:
        _check_input(model, opts, dims)
    return [Path(p) for p in files]


def _check_input(model: Any, opts: RunOptions, given: list[int] | None) -> None:
    """The runner needs the input's size: from --shape or the Input layer's 0=w 1=h 2=c, and one the
    model can take (deployer.ncnn.validate.infer_check). Checked here: the board's runner found a
    missing size only after the upload (14 MB for MobileNetV2), in a message naming its temp copy of
    the .param, and ncnn does not check channels at all. `given`: --shape, already parsed."""
    from deployer.ncnn.validate import infer_check
    from deployer.remote.runner import input_shape_from_param

    inputs = [top for layer in model.graph.layers if layer.type == "Input" for top in layer.tops]
    if opts.input_blob is not None and opts.input_blob not in inputs:
        raise DeployerError(f"--input-blob {opts.input_blob}: not an input of {opts.param} "
                            f"(inputs: {', '.join(inputs) or 'none'})")
    # the runner's own rule, so the host refuses exactly what the board would
    dims = given or input_shape_from_param(str(opts.param), opts.input_blob)
    if opts.shape is None and inputs and not dims:
        raise DeployerError(f"{opts.param}: its input {opts.input_blob or inputs[0]} has no fixed size",
                            hint="pass --shape W,H,C (e.g. --shape 224,224,3)")
    # a shape the model cannot take (4 channels into a 3-channel conv) ran, read past ncnn's weights
    # and reported success with an output that differed from the host's (cosine 0.64)
    if inputs and dims and len(dims) <= 3:
        w, h, c = (list(dims) + [1, 1])[:3]
        shown = f"--shape {opts.shape}" if opts.shape else f"{','.join(map(str, dims))} (its Input layer)"
        infer_check(model.graph, {opts.input_blob or inputs[0]: (c, h, w)}, Path(opts.param).name, shown)


def runner_argv(python: str, runner: str, opts: RunOptions, board: Any, remote: dict[str, str],
                pythonpath: str, lease: float = 0.0) -> list[str]:
    """The exact command the board runs; board `ncnn:` defaults fill what the flags left open.
    `lease` > 0: the runner ends itself after that many seconds without a heartbeat byte."""
    def pick(flag: Any, key: str, default: Any) -> Any:
        if flag is not None:
            return flag
        value = _board_default(board, key)
        return default if value is None else value

    argv = ["env", f"PYTHONPATH={pythonpath}", python, "-u", arg(runner),
            "--param", arg(remote["param"]), "--bin", arg(remote["bin"]),
            "--iterations", str(opts.iterations), "--warmup", str(opts.warmup),
            "--threads", str(int(pick(opts.threads, "threads", 0))),
            "--powersave", str(int(pick(opts.powersave, "powersave", 0))),
            "--fp16", str(int(bool(pick(opts.fp16, "fp16", True)))),
            "--int8", str(int(opts.int8)),
            "--winograd", str(int(bool(pick(opts.winograd, "winograd", True)))),
            "--sgemm", str(int(bool(pick(opts.sgemm, "sgemm", True)))),
            "--fill", opts.fill, "--seed", str(opts.seed)]
    if opts.duration is not None:
        argv += ["--duration", repr(float(opts.duration))]
    if opts.shape:
        argv += ["--shape", opts.shape]
    if opts.input_blob:
        argv += ["--input-blob", opts.input_blob]
    if opts.output_blob:
        argv += ["--output-blob", opts.output_blob]
    if "input_file" in remote:
        argv += ["--input-file", arg(remote["input_file"])]
    if opts.return_output or opts.compare:
        argv.append("--return-output")
    if lease > 0:
        argv += ["--lease", f"{lease:g}"]
    return argv


def host_reference(result: "RunResult", opts: RunOptions) -> dict[str, Any]:
    """The host ncnn wheel's output for the same model, input and ncnn options the board used.

    Runs the very same runner.py locally (one iteration), so input generation and option handling
    cannot drift between the two sides; threads are irrelevant to the numbers and set to 1.
    On x86 the packed int8 depthwise kernels dequantize with an approximate reciprocal (_mm_rcp_ps),
    which flips requantized codes and drifts (cosine ~0.993 on MobileNetV2); the unpacked path does
    ncnn's exact maths, which is what ARM computes, so the reference runs with packing off there."""
    import platform
    import subprocess
    import sys

    used = result.options
    argv = [sys.executable, "-u", str(RUNNER_PATH), "--param", str(opts.param), "--bin", str(opts.bin),
            "--iterations", "1", "--warmup", "0", "--threads", "1", "--powersave", "0",
            "--fp16", str(int(bool(used.get("fp16")))), "--int8", str(int(bool(used.get("int8", True)))),
            "--winograd", str(int(bool(used.get("winograd", True)))), "--sgemm", str(int(bool(used.get("sgemm", True)))),
            "--fill", opts.fill, "--seed", str(opts.seed), "--return-output",
            "--packing", "0" if platform.machine() in ("x86_64", "AMD64", "i686") else "1",
            "--shape", ",".join(str(d) for d in used.get("shape") or []) or (opts.shape or "")]
    for flag, value in (("--input-blob", used.get("input_blob")), ("--output-blob", used.get("output_blob")),
                        ("--input-file", opts.input_file)):
        if value:
            argv += [flag, str(value)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    out = next((ln for ln in lines if ln.get("type") == "output"), None)
    if out is None:
        err = next((ln.get("error") for ln in lines if ln.get("type") == "error"), proc.stderr.strip()[-200:])
        raise DeployerError(f"host reference run of {opts.param} failed: {err}")
    return decode_output(out)


def compare_outputs(board: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:
    """How far the board's output is from the host's: max abs/rel difference, cosine, bit-identity."""
    import numpy as np

    a = np.asarray(board["values"], dtype=np.float64)
    b = np.asarray(host["values"], dtype=np.float64)
    if board.get("shape") != host.get("shape"):
        return {"identical": False, "error": f"shape {board.get('shape')} on the board vs {host.get('shape')} on the host"}
    diff = np.abs(a - b)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return {"identical": bool(np.array_equal(np.asarray(board["values"], np.float32), np.asarray(host["values"], np.float32))),
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "max_rel_diff": float((diff / np.maximum(np.abs(b), 1e-12)).max()) if diff.size else 0.0,
            "cosine": min(1.0, float(a @ b / denom)) if denom else 1.0, "count": int(a.size)}


def decode_output(line: dict[str, Any]) -> dict[str, Any]:
    values = array.array("f")
    values.frombytes(base64.b64decode(line["data"]))
    return {"blob": line.get("blob"), "shape": line.get("shape"), "values": values.tolist()}


def _probe_summary(facts: Any) -> dict[str, Any]:
    """The probe's facts minus the per-file model listing (that can be long and is not about the run)."""
    if facts is None:
        return {}
    d = facts.to_dict() if hasattr(facts, "to_dict") else (asdict(facts) if hasattr(facts, "__dataclass_fields__")
                                                            else dict(facts))
    d.pop("models", None)
    return d


def _emit(sink: EventSink | None, board: str, event: dict[str, Any]) -> None:
    if sink is not None:
        sink({"board": board, **event})


class Session:
    """An open connection to one board plus what has been provisioned on it."""

    def __init__(self, board: Any, conn: Any, on_event: EventSink | None = None) -> None:
        self.board = board
        self.conn = conn
        self.on_event = on_event
        self.name: str = board.name
        self.python: str = getattr(board, "python", None) or "python3"
        self.layout = BoardLayout.for_board(board)
        self.root = self.layout.root
        self._facts: Any = None
        self.platform_facts: Any = None  # the probe the runtime was chosen from

    # -- facts / provisioning -------------------------------------------------------------------

    def probe(self) -> Any:
        if self._facts is None:
            _emit(self.on_event, self.name, {"type": "stage", "stage": "probe"})
            from deployer.remote.probe import probe

            self._facts = probe(self.conn)
        return self._facts

    def provision(self, ncnn_version: str | None = None, progress: Callable[..., Any] | None = None
                  ) -> rt.RuntimeInstall:
        from deployer.ssh.transfer import upload

        facts = self.probe()
        platform = rt.platform_from_facts(facts, self.name)
        wheel = rt.select_wheel(platform, ncnn_version)
        _emit(self.on_event, self.name, {"type": "stage", "stage": "runtime", "wheel": wheel.path.name})
        install = rt.ensure_runtime(self.conn, wheel, runtime_dir=self.root, python=self.python, board=self.name,
                                    upload=upload, progress=progress, markers=getattr(facts, "runtimes", None))
        self.platform_facts = facts
        if install.unpacked:
            self._facts = None  # the board changed: a later probe() must look again
        return install

    def _upload_events(self, remote: str, done: int, total: int) -> None:
        _emit(self.on_event, self.name, {"type": "progress", "file": remote.rsplit("/", 1)[-1], "done": done,
                                         "total": total})

    def locked(self, purpose: str, wait: float) -> Any:
        """The board lock (deployer.remote.lock) for an operation that changes the board; waiting
        for another holder shows up as a `stage` event naming it."""
        from deployer.remote.lock import board_lock

        def waiting(holder: Any) -> None:
            _emit(self.on_event, self.name, {"type": "stage", "stage": "waiting for the board lock",
                                             "holder": holder.describe()})

        return board_lock(self.conn, self.layout, purpose=purpose, wait=wait, on_wait=waiting)

    def push(self, opts: RunOptions, progress: Callable[..., Any] | None = None, *, purpose: str = "push",
             pin: bool = False) -> PushReport:
        """Runtime + runner + model files, each skipped when the board already has identical bytes,
        under the board lock (a second push to the same board waits up to opts.lock_wait s).

        Upload progress goes to `progress(remote, done, total)`, else to on_event as `progress` events.
        `pin`: the model files are also hard-linked into a folder of this run's own (see `_pin`)."""
        progress = progress or (self._upload_events if self.on_event else None)
        local = _check_local(opts, running=purpose == "run")
        with self.locked(purpose, opts.lock_wait):
            report = self._push_locked(opts, local, progress)
            if pin:
                report.files = self._pin(report.files)
        return report

    def _pin(self, files: dict[str, str]) -> dict[str, str]:
        """Hard links (a copy where links fail) of a run's model files in a folder of its own, made
        under the board lock. models/<name> is shared: a second `run` of another model of the same
        name (two quantize outputs are both `model-int8.param`) replaced it between this push and
        this runner's start, and this run timed that model under this model's sha256. The folder
        is a `.run.tmp-*` one: `_unpin` removes it, the stale-temp sweep if this process died."""
        folder = f"{self.layout.tmp}/.run{TMP_MARK}{host_tag()}-{os.getpid()}-{secrets.token_hex(3)}"
        pinned = {key: f"{folder}/{PurePosixPath(path).name}" for key, path in files.items()}
        script = ('d=$1; shift; mkdir -p -- "$d" || exit 1\n'
                  'for f; do ln -f -- "$f" "$d/" 2>/dev/null || cp -- "$f" "$d/" || exit 1; done')
        res = self.conn.run(["sh", "-c", script, "sh", arg(folder), *map(arg, files.values())], timeout=60)
        if res.rc != 0:
            raise RemoteError(f"{self.name}: cannot link the model files into {folder}: "
                              f"{(res.stderr or res.stdout or '').strip()[-300:]}")
        return pinned

    def _unpin(self, files: dict[str, str]) -> None:
        """Remove `_pin`'s folder; a dead link leaves it to the stale-temp sweep."""
        folders = {str(PurePosixPath(p).parent) for p in files.values()}
        if not getattr(self.conn, "alive", True):
            return
        with contextlib.suppress(DeployerError, OSError, EOFError, socket.timeout):
            self.conn.run(["rm", "-rf", "--", *map(arg, folders)], timeout=30)

    def _push_locked(self, opts: RunOptions, local: list[Path], progress: Callable[..., Any] | None
                     ) -> PushReport:
        from deployer.native import select as native
        from deployer.ssh.transfer import upload_many

        kind, build = native.choose(self.board, self.probe(), opts.runtime, layers=opts.layers,
                                    version=opts.ncnn_version)
        if kind == "native":  # the static runner instead of wheel + runner.py
            _emit(self.on_event, self.name, {"type": "stage", "stage": "upload"})
            remote = [self.layout.model(p.name) for p in local]
            install, sent = native.push_native(self, build, layers=opts.layers, progress=progress,
                                               checksum=opts.checksum, extra=list(zip(local, remote)))
            self.platform_facts = self.probe()
            return PushReport(install, install.path, dict(zip(["param", "bin", "input_file"], remote)),
                              [r.remote for r in sent if not r.skipped])
        install = self.provision(opts.ncnn_version, progress)
        _emit(self.on_event, self.name, {"type": "stage", "stage": "upload"})
        keys = ["runner", "param", "bin", "input_file"]
        remote = [self.layout.runner] + [self.layout.model(p.name) for p in local]
        sent = upload_many(self.conn, list(zip([RUNNER_PATH, *local], remote)), progress,
                           checksum=opts.checksum)
        files = dict(zip(keys, remote))
        uploaded = [r.remote for r in sent if not r.skipped]
        return PushReport(install, files.pop("runner"), files, uploaded)

    # -- the run --------------------------------------------------------------------------------

    def run(self, opts: RunOptions, progress: Callable[..., Any] | None = None) -> RunResult:
        started = _dt.datetime.now(_dt.timezone.utc)
        pushed = self.push(opts, progress, purpose="run", pin=True)
        try:
            return self._run_pushed(opts, pushed, started, progress)
        finally:
            self._unpin(pushed.files)

    def _run_pushed(self, opts: RunOptions, pushed: PushReport, started: _dt.datetime,
                    progress: Callable[..., Any] | None) -> RunResult:
        from deployer.remote.lock import default_lease, heartbeats

        # a dead link the board's sshd does not notice would leave the runner timing for up to
        # --duration: it holds a lease on our heartbeats, as the board lock does
        lease = default_lease(self.board)
        argv = runner_argv(self.python, pushed.runner, opts, self.board, pushed.files, pushed.runtime.path, lease)
        if getattr(pushed.runtime, "kind", "python") == "native":
            from deployer.native.select import native_argv

            argv = native_argv(pushed.runner, argv, layers=opts.layers)
        _emit(self.on_event, self.name, {"type": "stage", "stage": "run"})
        model = {"param": {"path": str(opts.param), "sha256": fsutil.sha256_file(opts.param, "model file")},
                 "bin": {"path": str(opts.bin), "sha256": fsutil.sha256_file(opts.bin, "model file")}}
        from deployer.profiling import hook

        context_before = hook.before_run(self.conn)
        stream = self.conn.stream(argv, check=False, idle_timeout=opts.idle_timeout)
        with heartbeats(stream, lease / 3, f"runner-heartbeat-{self.name}"), stream:
            result = self._collect(self._guard(stream), started, {"kind": "python", **asdict(pushed.runtime)}, model)
        result.probe = _probe_summary(self.platform_facts)
        hook.after_run(self.conn, result, context_before)
        if opts.compare and result.output is not None:
            result.host_compare = compare_outputs(result.output, host_reference(result, opts))
            if not opts.return_output:
                result.output = None
        return result

    def _guard(self, stream: Any) -> Iterator[str]:
        """The runner's lines; a broken link becomes one RemoteError naming the board, and a runner
        that dies without its stats line is explained from its exit code and stderr. A channel sshd
        closed without an exit status (link still up) ends the lines with a `closed` marker: the
        run is whole if its stats line had arrived (the runner protocol's last line), as in the
        fleet health check (deployer.fleet.health)."""
        closed = None
        try:
            yield from stream
        except ClosedWithoutStatus as err:
            closed = err.message
        except (DeployerError, KeyboardInterrupt, GeneratorExit):
            raise
        except (OSError, EOFError, socket.timeout) as err:
            raise RemoteError(f"{self.name}: connection lost during the run ({type(err).__name__}: {err})") from None
        except Exception as err:  # paramiko.SSHException and friends
            if type(err).__module__.startswith("paramiko"):
                raise RemoteError(f"{self.name}: connection lost during the run ({err})") from None
            raise
        rc = getattr(stream, "rc", None)
        # connect.stream itself raises when the link dies mid-run (also with check=False); this
        # catches a link that died right after the runner's last line
        if not getattr(self.conn, "alive", True):
            raise RemoteError(f"{self.name}: connection lost during the run (no exit status from the board)",
                              hint="check the board's network/power; partial timings were not saved")
        if closed is not None:
            yield json.dumps({"type": "closed", "detail": closed})
        elif rc not in (0, None):
            tail = [ln for ln in (getattr(stream, "stderr", "") or "").splitlines() if ln.strip()]
            yield json.dumps({"type": "exit", "rc": rc, "stderr": tail[-1].strip() if tail else ""})

    @staticmethod
    def _counting(stream: Iterator[str], samples: list[float]) -> Iterator[str]:
        try:
            yield from stream
        except RemoteError as err:
            raise RemoteError(f"{err.message} after {len(samples)} timed iteration(s)", hint=err.hint) from None

    def _collect(self, lines: Iterable[str], started: _dt.datetime, runtime: dict[str, Any],
                 model: dict[str, Any]) -> RunResult:
        facts: dict[str, Any] = {}
        options: dict[str, Any] = {}
        samples: list[float] = []
        output = None
        final: dict[str, Any] | None = None
        layers_line: dict[str, Any] | None = None
        noise: list[str] = []
        stream = iter(lines)
        try:
            for raw in self._counting(stream, samples):
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                try:
                    line = json.loads(text)
                except ValueError:
                    if text.strip():
                        noise.append(text.strip())
                    continue
                if not isinstance(line, dict):
                    continue
                kind = line.get("type")
                if kind == "board":
                    facts, options = line.get("facts", {}), line.get("options", {})
                elif kind == "iter":
                    samples.append(float(line["ms"]))
                elif kind == "output":
                    output = decode_output(line)
                    continue
                elif kind == "layers":
                    layers_line = line
                    continue
                elif kind == "stats":
                    final = line
                elif kind == "error":
                    raise DeployerError(f"{self.name}: runner: {line.get('error')}")
                elif kind == "exit":
                    if final is None and line.get("stderr"):
                        noise.append(f"exit code {line['rc']}: {line['stderr']}")
                    continue
                elif kind == "closed":
                    if final is None:
                        noise.append(line["detail"])
                    continue
                _emit(self.on_event, self.name, line)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if final is None:
            detail = noise[-1] if noise else "no results line"
            raise RemoteError(f"{self.name}: the runner stopped after {len(samples)} iteration(s) without "
                              f"results ({detail})")
        stats = latency_stats(samples)
        result = RunResult(
            board=self.name, started_at=started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), facts=facts,
            options=options, samples_ms=samples, stats=asdict(stats) if stats else None,
            partial=bool(final.get("partial")), runtime=runtime, model=model, output=output,
            end_state=final.get("end_state") or {})
        for key in ("load_ms", "input_blob", "output_blob", "extracted", "shape", "wall_s", "peak_rss_kb",
                    "first_inference_ms", "startup_ms"):
            if key in final:
                result.options[key] = final[key]
        if layers_line is not None:
            from deployer.native.layers import report

            result.layers = report(layers_line, result.stats.get("median_ms") if result.stats else None)
        return result


def results_folder(board: str) -> str:
    """The results/<folder> of a board: its name, with an ad-hoc target's ':' (and anything else
    unsafe in a file name) turned into '_' - `pi@10.200.2.2:2222` -> `pi@10.200.2.2_2222`."""
    from deployer.profiling.store import DB_NAME

    name = re.sub(r"[:\[\]]", "_", board or "")
    if not re.fullmatch(r"[A-Za-z0-9_@+][A-Za-z0-9._+@-]*", name) or ".." in name:
        raise DeployerError(f"board name {board!r} cannot name a results folder",
                            hint="use a board name from targets/*.yaml or user@host[:port]")
    if name.startswith(DB_NAME):      # the history (and SQLite's -wal/-shm/-journal) sit beside the folders
        raise DeployerError(f"board name {board!r} is the name of the results folder's run history",
                            hint="rename the board in targets/*.yaml")
    return name


def save_result(result: RunResult, results_dir: Path) -> Path:
    """results/<board>/<UTC timestamp>.json, written atomically."""
    board = results_folder(result.board)
    stamp = result.started_at.replace(":", "").replace("-", "")
    path = Path(results_dir) / board / f"{stamp}.json"
    result.saved_to = str(path)
    from deployer.profiling import hook

    hook.store(result, results_dir)  # history.sqlite next to the JSON files
    fsutil.write_text(path, json.dumps(result.to_json(), indent=2) + "\n")
    return path


def open_session(board: Any, *, accept_new: bool = False, inventory: Any = None,
                 on_event: EventSink | None = None) -> tuple[Any, Session]:
    """(connection context manager, Session); callers `with conn:` it."""
    from deployer.ssh.connect import connect

    _emit(on_event, board.name, {"type": "stage", "stage": "connect"})
    conn = connect(board, accept_new=accept_new, inventory=inventory)
    return conn, Session(board, conn, on_event)


@dataclass
class BoardFailure:
    board: str
    error: DeployerError

    def to_json(self) -> dict[str, Any]:
        return {"ok": False, "board": self.board, "error": str(self.error), "exit_code": self.error.exit_code}


def _relabelled(sink: EventSink, board: str) -> EventSink:
    """The same sink, every event attributed to `board` (a second run on one board gets its own line)."""
    return lambda event: sink({**event, "board": board})


def run_boards(boards: list[Any], opts: RunOptions, *, accept_new: bool = False, inventory: Any = None,
               on_event: EventSink | None = None, results_dir: Path | None = Path("results"),
               progress: Callable[..., Any] | None = None,
               fp32_model: tuple[Path, Path] | None = None) -> list[RunResult | BoardFailure]:
    """Boards one after another: parallel runs on one network would disturb each other's timing.

    With one board its error is raised; with several, a board that fails is recorded as a
    BoardFailure and the others still run (one flaky board must not void a fleet benchmark).
    Ctrl-C always stops everything.

    `fp32_model` (.param, .bin) with `opts.layers`: the same board then times the fp32 original
    per layer too, and the saved result carries both joined by layer name (`layers.vs_fp32`):
    what `deployer quantize --layer-times` reads to price keeping layers float."""
    _check_local(opts)
    check_files(zip(fp32_model or (), ("--fp32-param", "--fp32-bin")))
    for board in boards:          # before any work: a bad name must not cost a whole benchmark
        results_folder(board.name)
    results: list[RunResult | BoardFailure] = []
    for board in boards:
        try:
            conn, session = open_session(board, accept_new=accept_new, inventory=inventory, on_event=on_event)
            with conn:
                result = session.run(opts, progress)
                if fp32_model is not None and result.layers:
                    from deployer.native.layers import compare

                    if on_event is not None:   # its own line in the live view, not folded into the int8 run's
                        session.on_event = _relabelled(on_event, f"{board.name} (fp32)")
                    fp32 = session.run(replace(opts, param=fp32_model[0], bin=fp32_model[1]), progress)
                    if fp32.layers:
                        result.layers["vs_fp32"] = compare(result.layers, fp32.layers)
                        result.layers["fp32_model"] = fp32.model
        except DeployerError as err:
            if len(boards) == 1:
                raise
            _emit(on_event, board.name, {"type": "failed", "error": str(err)})
            results.append(BoardFailure(board.name, err))
            continue
        if results_dir is not None:
            save_result(result, results_dir)
        results.append(result)
    return results


def push_boards(boards: list[Any], opts: RunOptions, *, accept_new: bool = False, inventory: Any = None,
                on_event: EventSink | None = None, progress: Callable[..., Any] | None = None
                ) -> dict[str, PushReport | BoardFailure]:
    """Push to each board. With one board its error is raised; with several, a failing board (dead
    link, busy, full disk) is recorded as a BoardFailure and the others still get the push."""
    _check_local(opts, running=False)
    reports: dict[str, PushReport | BoardFailure] = {}
    for board in boards:
        try:
            conn, session = open_session(board, accept_new=accept_new, inventory=inventory, on_event=on_event)
            with conn:
                reports[board.name] = session.push(opts, progress)
        except DeployerError as err:
            if len(boards) == 1:
                raise
            _emit(on_event, board.name, {"type": "failed", "error": str(err)})
            reports[board.name] = BoardFailure(board.name, err)
    return reports
