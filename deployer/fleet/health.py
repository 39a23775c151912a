"""Health-gated activation: run a stored release on the board before `current` points at it.

The board runs the release's fixed input through its runtime - the static native runner
(deployer.native, boards without Python too) or the ncnn wheel with the release's own runner.py;
both speak one protocol and take the same flags - and returns the output tensor. It must equal
the host's reference bit for bit where the runtime is the same build of ncnn on an architecture
whose int8 maths is exact (aarch64, x86_64 unpacked) and the model has no layer that rounds
differently in ncnn's ARM and x86 kernels (deployer.ncnn.exactness: Swish, Sigmoid, Softmax, a
global average...); elsewhere (another ncnn version, armv7, such a model) the gate is a cosine
similarity. Non-finite outputs always fail, and an
optional latency budget (median of a few timed runs) fails a model that is too slow for the board.
"""

from __future__ import annotations

import array
import base64
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from deployer.fleet.release import HEALTH_INPUT, runner_flags, unpacked_machine
from deployer.remote.layout import BoardLayout
from deployer.ssh.connect import ClosedWithoutStatus

EXACT_MACHINES = ("aarch64", "arm64", "x86_64", "amd64")


@dataclass
class HealthPolicy:
    enabled: bool = True
    min_cosine: float = 0.99
    max_latency_ms: float | None = None
    iterations: int = 3
    timeout: float = 300.0


@dataclass(frozen=True)
class BoardRuntime:
    """The runtime a health check runs on the board (chosen by deployer.fleet.ops._provision)."""

    kind: str                 # "native" | "python"
    path: str                 # native: the runner executable; python: the unpacked wheel (PYTHONPATH)
    version: str | None       # ncnn version
    python: str = "python3"   # the board's interpreter (python runtime only)

    def argv(self, runner_py: str, flags: list[str]) -> list[str]:
        wheel_argv = ["env", f"PYTHONPATH={self.path}", self.python, "-u", runner_py, *flags]
        if self.kind != "native":
            return wheel_argv
        from deployer.native.select import native_argv

        return native_argv(self.path, wheel_argv, layers=False)

    def to_json(self) -> dict[str, Any]:
        """The fields deploy and status reports carry (the same names in both)."""
        return {"runtime": " ".join(x for x in (self.kind, self.version) if x), "runtime_kind": self.kind,
                "runtime_version": self.version}


@dataclass
class HealthResult:
    ok: bool
    reason: str
    gate: str = ""                   # "identical" | "cosine>=X" | "none"
    # the check that failed (None when ok): the output gate, or "latency<=Xms" when the output passed
    # but the board was too slow - a report naming only the gate blamed the output for a latency failure
    failed: str | None = None
    identical: bool | None = None
    cosine: float | None = None
    max_abs_diff: float | None = None
    median_ms: float | None = None
    ncnn: str | None = None
    machine: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d.update(self.extra)
        return d


def decode(payload: dict[str, Any]) -> list[float]:
    values = array.array("f")
    values.frombytes(base64.b64decode(payload["data"]))
    return values.tolist()


def compare(board: dict[str, Any], expected: dict[str, Any], *, exact: bool, min_cosine: float) -> HealthResult:
    """The gate on two runner `output` payloads (board vs host reference)."""
    if board.get("shape") != expected.get("shape"):
        return HealthResult(False, f"output shape {board.get('shape')} on the board vs {expected.get('shape')} "
                                   "on the host", gate="shape", failed="shape")
    raw_a, raw_b = base64.b64decode(board["data"]), base64.b64decode(expected["data"])
    a, b = decode(board), decode(expected)
    bad = sum(1 for v in a if not math.isfinite(v))
    if bad:
        return HealthResult(False, f"{bad} of {len(a)} output values are NaN/inf on the board", gate="finite",
                            failed="finite")
    identical = raw_a == raw_b
    diff = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    cos = 1.0 if na == 0 and nb == 0 else (sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else 0.0)
    cos = min(1.0, cos)
    if exact:
        ok = identical
        gate = "identical"
        reason = "bit-identical to the host reference" if ok else \
            f"differs from the host reference (same ncnn build: must be bit-identical; cosine {cos:.6f}, " \
            f"max abs diff {diff:.3g})"
    else:
        ok = cos >= min_cosine
        gate = f"cosine>={min_cosine:g}"
        reason = f"cosine {cos:.6f} vs the host reference" + ("" if ok else f" is below {min_cosine:g}")
    return HealthResult(ok, reason, gate=gate, identical=identical, cosine=cos, max_abs_diff=diff,
                        failed=None if ok else gate)


def _run(conn: Any, argv: list[str], policy: HealthPolicy) -> tuple[list[dict[str, Any]], str]:
    """The runner's JSON lines and its stderr. A ClosedWithoutStatus carries what arrived before it."""
    lines: list[dict[str, Any]] = []
    stream = conn.stream(argv, check=False, timeout=policy.timeout, idle_timeout=policy.timeout)
    try:
        with stream:
            for text in stream:
                try:
                    obj = json.loads(text)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    lines.append(obj)
    except ClosedWithoutStatus as err:
        err.lines, err.stderr = lines, stream.stderr
        raise
    return lines, stream.stderr


def _run_whole(conn: Any, argv: list[str], policy: HealthPolicy) -> tuple[list[dict[str, Any]], str]:
    """_run, tolerant of one odd close: sshd closed the channel without an exit status (seen once in
    CI, 10 boards' sessions on one sshd and 2 cores). The runner's lines arrive in order and `stats`
    is its last, so with it the run is whole; without it the check runs once more (it is idempotent)."""
    try:
        return _run(conn, argv, policy)
    except ClosedWithoutStatus as err:
        if any(ln.get("type") == "stats" for ln in err.lines):
            return err.lines, err.stderr
    return _run(conn, argv, policy)


def check(conn: Any, layout: BoardLayout, release: Any, runtime: BoardRuntime,
          policy: HealthPolicy, machine: str | None = None, threads: int | None = None) -> HealthResult:
    """Run the stored release `release` (a LocalRelease) on the board and gate its output.

    `machine` (the probe's) decides packing: x86 boards run unpacked like the host reference."""
    import time

    t0 = time.monotonic()
    folder = layout.release(release.id)
    flags = runner_flags(f"{folder}/{release.param}", f"{folder}/{release.bin}", f"{folder}/{HEALTH_INPUT}",
                         packing=True, iterations=max(1, policy.iterations), warmup=1, threads=threads or 1,
                         shape=release.shape)
    if machine and unpacked_machine(machine):
        flags[flags.index("--packing") + 1] = "0"
    argv = runtime.argv(f"{folder}/runner.py", flags)
    lines, stderr = _run_whole(conn, argv, policy)
    facts = next((ln for ln in lines if ln.get("type") == "board"), {}).get("facts", {})
    err = next((ln.get("error") for ln in lines if ln.get("type") == "error"), None)
    out = next((ln for ln in lines if ln.get("type") == "output"), None)
    stats = next((ln for ln in lines if ln.get("type") == "stats"), None)
    seconds = time.monotonic() - t0
    if out is None or stats is None:
        why = err or ((stderr or "").strip().splitlines() or ["the runner printed no output"])[-1]
        return HealthResult(False, f"the release does not run on the board: {why}", gate="runs", failed="runs",
                            ncnn=facts.get("ncnn_version"), machine=facts.get("machine"), seconds=seconds)
    ncnn_board = facts.get("ncnn_version")
    board_machine = facts.get("machine") or machine
    same_build = (ncnn_board is not None and ncnn_board == release.expected.get("ncnn")
                  and str(board_machine) in EXACT_MACHINES)
    # the same kernels on the same architecture agree to the bit whatever the layers
    inexact = [] if str(board_machine) == str(release.expected.get("machine")) else getattr(release, "inexact", [])
    result = compare(out, release.expected, exact=same_build and not inexact, min_cosine=policy.min_cosine)
    if same_build and inexact:
        result.reason += (f" (bit-identity is not expected: {', '.join(inexact[:3])} round differently "
                          "in ncnn's ARM and x86 kernels)")
    result.ncnn, result.machine, result.seconds = ncnn_board, board_machine, seconds
    result.median_ms = stats.get("median_ms")
    result.extra["runtime"] = runtime.kind
    if result.ok and policy.max_latency_ms is not None and result.median_ms is not None \
            and result.median_ms > policy.max_latency_ms:
        result.ok = False
        result.failed = f"latency<={policy.max_latency_ms:g}ms"
        result.reason = (f"median latency {result.median_ms:.2f} ms is over the budget of "
                         f"{policy.max_latency_ms:g} ms ({result.reason})")
    return result

