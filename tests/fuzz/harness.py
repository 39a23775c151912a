"""Run the real `deployer` CLI on one fuzz case in a child process and check the promises.

Each case runs `deployer.cli.main()` in a forked child of a parent that has already imported the
CLI (a fresh interpreter per case costs ~0.5 s of CPU; a fork costs milliseconds), so the child is
the real command with real argv, stdio and exit status: a segfault shows as a signal, a hang as a
timeout. The parent never runs ncnn, so no OpenMP pool is forked; whatever ncnn work the command
does happens in the child (and its own `deployer.isolate` grandchildren). When running as root
the child also enters a fresh network namespace: fuzzed hosts and ssh configs can never reach the
network (loopback is down there too, so connections fail at once).

Promises checked for every case (`check_outcome`):
- no death by signal, no timeout, no Python traceback on stderr;
- exit code among the case's allowed ones (bad input: 2; never 4 = internal error);
- a failing run prints exactly one `error:` line, as the last line of stderr (progress and status
  lines off a terminal may precede it), no Python or ncnn noise, and with --json one JSON document
  on stdout;
- nothing half-written: no `.tmp-`, `.part`, `.staging-` leftovers, and no output file on failure.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
WARM_MODULES = ("deployer.cli", "typer._adapters", "pydantic", "numpy", "ncnn", "PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin",
                "PIL.BmpImagePlugin", "PIL.PpmImagePlugin", "yaml", "paramiko", "deployer.quant.int8",
                "deployer.quant.ncnn2table", "deployer.quant.pipeline", "deployer.check.crosscheck",
                "deployer.check.samples", "deployer.ncnn.verify", "deployer.isolate", "deployer.profile",
                "deployer.targets", "deployer.ssh.connect", "deployer.remote.probe", "deployer.remote.session")
LEFTOVER = re.compile(r"\.tmp-|\.part|\.staging-|\.deployer-.*tmp")
# what must never reach a user's terminal: Python internals and ncnn's loader chatter
NOISE = re.compile(r"Traceback|^\s+File \"|Warning: |warnings\.warn|find_blob_index_by_name|not exists or registered"
                   r"|ModelBin read|fopen .* failed|network graph not ready|load_param|load_model|layer load_|"
                   r"Segmentation fault|core dumped|<_io\.|object at 0x")


@dataclass
class Case:
    """One fuzzed command: argv, files to create first, and what outcome is acceptable."""

    family: str
    name: str
    argv: list[str]
    files: dict[str, bytes | str] = field(default_factory=dict)   # relative path -> bytes, or "fifo"/"dir"/"->target"
    allowed: frozenset[int] = frozenset({0, 1, 2})
    must_fail: bool = False           # the mutation made the input invalid for sure: exit 2 required
    outputs: list[str] = field(default_factory=list)   # relative paths the command would create
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    json: bool = False


@dataclass
class Outcome:
    rc: int | None
    signal: int | None
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float


def materialize(case: Case, folder: Path) -> None:
    for rel, content in case.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "fifo":
            os.mkfifo(path)
        elif content == "dir":
            path.mkdir(exist_ok=True)
        elif isinstance(content, str) and content.startswith("->"):
            os.symlink(content[2:], path)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)


def _enter_private_netns() -> None:
    if os.geteuid() != 0:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(CLONE_NEWNET)
    except OSError:
        pass


def _child(argv: list[str], cwd: Path, env: dict[str, str], out: str, err: str) -> None:
    code = 98
    try:
        os.setsid()
        _enter_private_netns()
        os.chdir(cwd)
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.dup2(os.open(out, os.O_WRONLY | os.O_TRUNC), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_TRUNC), 2)
        os.environ.update(env)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        sys.argv = ["deployer", *argv]
        from deployer.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - shown to the parent as a traceback on stderr
            import traceback

            traceback.print_exc()
            code = 97
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
    finally:
        os._exit(code)


class Runner:
    """Runs cases in a fork server: a fresh interpreter that imported the CLI once and forks each case.

    Forking straight from pytest is unsafe: earlier tests leave threads (SSH keepalive watchdogs,
    lock heartbeats) and OpenMP pools (in-process ncnn runs) in the pytest process, and a child
    forked from it can deadlock on a lock or a thread pool that no longer exists. The server is
    single-threaded and never runs ncnn, so every fork starts clean.
    """

    def __init__(self, base_env: dict[str, str] | None = None, jobs: int = 2) -> None:
        import subprocess

        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.harness", json.dumps({"base_env": base_env or {}, "jobs": jobs})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root, env=env)

    def run_many(self, cases: list[tuple[Case, Path]]) -> list[Outcome]:
        """Run cases (each in its own folder), `jobs` at a time; outcomes in input order."""
        for case, folder in cases:
            folder.mkdir(parents=True, exist_ok=True)
            materialize(case, folder)
        request = [{"argv": c.argv, "env": c.env, "timeout": c.timeout, "folder": str(f)} for c, f in cases]
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        answer = self._server.stdout.readline()
        if not answer:
            raise RuntimeError(f"fuzz fork server died (exit {self._server.wait()})")
        return [Outcome(**o) for o in json.loads(answer)]

    def close(self) -> None:
        if self._server.poll() is None:
            self._server.stdin.close()  # type: ignore[union-attr]
            self._server.wait(timeout=30)


@dataclass
class _Job:
    argv: list[str]
    env: dict[str, str]
    timeout: float
    folder: str


class _ForkRunner:
    """Forks cases from this (single-threaded) server process; runs up to `jobs` at a time."""

    def __init__(self, base_env: dict[str, str] | None = None, jobs: int = 2) -> None:
        import importlib

        # imported before forking, so each child starts warm (importing ncnn starts no threads)
        for module in WARM_MODULES:
            try:
                importlib.import_module(module)
            except ImportError:
                pass

        _warm_up()
        self.base_env = dict(base_env or {})
        self.jobs = max(1, jobs)

    def run_many(self, cases: list[_Job]) -> list[Outcome]:
        """Run jobs (each in its own, already materialized folder); outcomes in input order."""
        results: list[Outcome | None] = [None] * len(cases)
        running: dict[int, tuple[int, float, float, str, str]] = {}   # pid -> (index, start, deadline, out, err)
        pending = list(range(len(cases)))
        while pending or running:
            while pending and len(running) < self.jobs:
                i = pending.pop(0)
                case = cases[i]
                folder = Path(case.folder)
                fd_o, out = tempfile.mkstemp(prefix="fuzz-out-")
                fd_e, err = tempfile.mkstemp(prefix="fuzz-err-")
                os.close(fd_o)
                os.close(fd_e)
                env = {**self.base_env, **case.env}
                pid = os.fork()
                if pid == 0:
                    _child(case.argv, folder, env, out, err)
                now = time.monotonic()
                running[pid] = (i, now, now + case.timeout, out, err)
            done_any = False
            for pid, (i, start, deadline, out, err) in list(running.items()):
                got, status = os.waitpid(pid, os.WNOHANG)
                timed_out = False
                if got == 0:
                    if time.monotonic() < deadline:
                        continue
                    timed_out = True
                    _kill_group(pid)
                    _, status = os.waitpid(pid, 0)
                _kill_group(pid)          # grandchildren (isolate probes) of a finished case
                results[i] = Outcome(
                    rc=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) and not timed_out else None,
                    timed_out=timed_out,
                    stdout=_read_and_remove(out), stderr=_read_and_remove(err),
                    seconds=time.monotonic() - start)
                del running[pid]
                done_any = True
            if not done_any:
                time.sleep(0.003)
        return [r for r in results if r is not None]


def _warm_up() -> None:
    """One failing command in-process (no ncnn: it stops at a missing file) fills typer's and
    pydantic's caches, so every forked child skips that ~0.05 s."""
    import contextlib

    from deployer.cli import app
    from deployer.cli.common import run_app

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        run_app(app, ["check", "--param", "/nonexistent/m.param", "--bin", "/nonexistent/m.bin",
                      "--images", "/nonexistent/list.txt", "--shape", "1,1", "--no-layers"])


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_and_remove(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    finally:
        os.unlink(path)


def leftovers(folder: Path) -> list[str]:
    """Temp files a write left behind anywhere under the case folder."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if LEFTOVER.search(p.name))


def check_outcome(case: Case, outcome: Outcome, folder: Path) -> list[str]:
    """Every broken promise for this case, as short strings (empty = all kept)."""
    problems: list[str] = []
    if outcome.timed_out:
        problems.append(f"hang: no exit within {case.timeout:.0f} s")
    if outcome.signal is not None:
        problems.append(f"killed by {signal.Signals(outcome.signal).name}")
    if "Traceback (most recent call last)" in outcome.stderr:
        problems.append("Python traceback on stderr")
    rc = outcome.rc
    if rc is not None and rc not in case.allowed:
        problems.append(f"exit code {rc} (allowed {sorted(case.allowed)})")
    if case.must_fail and rc == 0:
        problems.append("garbage accepted: exit 0 on input that is invalid for sure")
    lines = [ln for ln in outcome.stderr.splitlines() if ln.strip()]
    if rc not in (None, 0):
        errors = [ln for ln in lines if ln.startswith(("error:", "internal error:"))]
        if len(errors) != 1 or not lines or lines[-1] != errors[0]:
            problems.append(f"expected one error line last on stderr, got {len(errors)}")
        noise = [ln for ln in lines if ln not in errors and NOISE.search(ln)]
        if noise:
            problems.append(f"noise on stderr: {noise[0][:120]!r}")
    if case.json and rc is not None and not outcome.timed_out:
        try:
            json.loads(outcome.stdout)
        except ValueError:
            problems.append("--json: stdout is not one JSON document")
    left = leftovers(folder)
    if left:
        problems.append(f"half-written leftovers: {left[:3]}")
    if rc not in (None, 0):
        made = [o for o in case.outputs if (folder / o).exists() and o not in case.files]
        if made:
            problems.append(f"output written although the command failed: {made[:3]}")
    return problems


def summary_line(case: Case, outcome: Outcome, problems: list[str]) -> str:
    err = outcome.stderr.strip().splitlines()[-1:] or [""]
    return (f"[{case.family}/{case.name}] rc={outcome.rc} sig={outcome.signal} {outcome.seconds:.1f}s "
            f"argv={case.argv!r}: {'; '.join(problems)} | last stderr: {err[0][:200]}")


def _serve(config: str) -> None:
    """The fork server: one JSON list of jobs per stdin line, one JSON list of outcomes per stdout line."""
    import dataclasses

    cfg = json.loads(config)
    reply = os.fdopen(os.dup(1), "w")      # replies only; anything else printed here goes to stderr
    os.dup2(2, 1)
    runner = _ForkRunner(cfg["base_env"], cfg["jobs"])
    for line in sys.stdin:
        jobs = [_Job(**j) for j in json.loads(line)]
        outcomes = runner.run_many(jobs)
        reply.write(json.dumps([dataclasses.asdict(o) for o in outcomes]) + "\n")
        reply.flush()


if __name__ == "__main__":
    _serve(sys.argv[1])
