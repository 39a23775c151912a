"""Run ncnn where its crashes cannot take deployer down: a child process, a deadline, one line.

deployer validates model files and shapes before ncnn sees them (deployer.ncnn.validate), but ncnn
is a C++ library that trusts its inputs, and the validation cannot model every layer. So the first
load and forward of any model a user names happen here, in a fresh `python -m deployer.isolate`
process: a segfault, abort or hang there becomes one DeployerError line ("ncnn crashed (SIGSEGV)
while running model X on input 3x96x96"), and ncnn's own loader messages stay in the child
instead of printing above our error. Once a model and input shape went through a child, the caller
runs it in-process at full speed (isolating every inference would cost a process each).

A fresh interpreter rather than fork(): the parent may have OpenMP thread pools running (ncnn,
torch), and libgomp does not survive fork in a process that already used it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from deployer.errors import DeployerError

DEFAULT_TIMEOUT = 300.0           # s; a MobileNetV2 load + forward takes ~0.5 s on 2 cores
_MAX_NOTE = 160


class NcnnCrashed(DeployerError):
    """ncnn died or hung on a model: bad input (exit 2) unless deployer wrote the model (exit 4)."""

    def __init__(self, message: str, *, internal: bool = False, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = 4 if internal else 2


@dataclass
class ProbeResult:
    """What a child saw: output blob -> shape (CHW), whether all outputs were finite, timing."""

    outputs: dict[str, list[int]] = field(default_factory=dict)
    finite: bool = True
    seconds: float = 0.0


def signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def _shape_text(shapes: dict[str, tuple[int, ...]] | None) -> str:
    if not shapes:
        return "no input"
    return ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in shapes.items())


@dataclass
class Probe:
    """One model to load (and run once, when `shapes` is given) in the child; see `probe`."""

    param: str | os.PathLike
    bin: str | os.PathLike
    shapes: dict[str, tuple[int, ...]] | None
    mode: str = "fp32"
    intermediates: bool = False
    blobs: list[str] | None = None
    internal: bool = False

    def what(self) -> str:
        return f"model {Path(self.param).name}" + (f" on input {_shape_text(self.shapes)}"
                                                    if self.shapes is not None else "")

    def job(self, threads: int) -> dict:
        return {"param": str(self.param), "bin": str(self.bin), "mode": self.mode,
                "intermediates": self.intermediates, "threads": threads,
                "shapes": {k: list(v) for k, v in (self.shapes or {}).items()},
                "blobs": self.blobs, "forward": self.shapes is not None}


def probe(param: str | os.PathLike, bin: str | os.PathLike, shapes: dict[str, tuple[int, ...]] | None,
          *, mode: str = "fp32", intermediates: bool = False, threads: int = 1, blobs: list[str] | None = None,
          internal: bool = False, timeout: float = DEFAULT_TIMEOUT) -> ProbeResult:
    """Load a model and (when `shapes` is given) run one forward in a child process.

    mode "fp32": deployer's fp32-means-fp32 options (deployer.check.net); "calib": calibration's
    net (deployer.quant.collect); "stock": ncnn's defaults, as a user's own program would load it.
    `shapes`: input blob -> CHW; the input is deterministic noise in [-1, 1]. `internal`: the model
    was written by deployer, so a failure is our bug (exit 4).
    """
    spec = Probe(param, bin, shapes, mode, intermediates, blobs, internal)
    return probe_all([spec], threads=threads, timeout=timeout)[0]


def probe_all(specs: list[Probe], *, threads: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[ProbeResult]:
    """Several probes in ONE child, in order (a child costs ~0.2 s; `check` needs two models)."""
    if not specs:
        return []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("PYTHONFAULTHANDLER", None)
    started = time.monotonic()
    jobs = [s.job(threads) for s in specs]
    try:
        proc = subprocess.run([sys.executable, "-m", "deployer.isolate"], input=json.dumps(jobs).encode(),
                              capture_output=True, timeout=timeout, env=env)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, err, rc = exc.stdout or b"", exc.stderr or b"", None
    seconds = time.monotonic() - started
    lines = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()]
    replies: list[dict] = []
    current = 0
    for ln in lines:
        try:
            msg = json.loads(ln)
        except ValueError:
            continue
        if "start" in msg:
            current = int(msg["start"])
        else:
            replies.append(msg)
    spec = specs[min(current, len(specs) - 1)]
    note = _ncnn_note(err)
    if rc is None:
        raise NcnnCrashed(f"ncnn did not finish loading/running {spec.what()} within {timeout:.0f} s",
                          internal=spec.internal, hint="the model or input shape makes it loop or run forever")
    if rc < 0:
        raise NcnnCrashed(f"ncnn crashed ({signal_name(-rc)}) while "
                          f"{'loading' if spec.shapes is None else 'running'} {spec.what()}"
                          + (f"; ncnn said: {note}" if note else ""),
                          internal=spec.internal,
                          hint=("deployer wrote this model: please report it" if spec.internal
                                else "the model files or the input shape do not fit; check them"))
    for i, reply in enumerate(replies):
        if not reply.get("ok"):
            bad = specs[min(i, len(specs) - 1)]
            raise NcnnCrashed(f"{reply.get('error', 'failed')}" + (f"; ncnn said: {note}" if note else ""),
                              internal=bad.internal, hint=reply.get("hint"))
    if len(replies) != len(specs):
        raise NcnnCrashed(f"the ncnn child process for {spec.what()} exited with code {rc} and no result"
                          + (f"; it said: {note}" if note else ""), internal=True)
    return [ProbeResult(outputs=r.get("outputs", {}), finite=r.get("finite", True), seconds=seconds)
            for r in replies]


def _ncnn_note(stderr: bytes) -> str:
    """The child's last stderr line (ncnn's loader messages), shortened for our one line."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Fatal Python error", "Current thread", "  File", "Thread 0x"))]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= _MAX_NOTE else last[:_MAX_NOTE] + "..."


# ------------------------------------------------------------------------------------ the child

def _child(job: dict) -> dict:
    import ncnn

    from deployer.check.net import configure

    if job["mode"] == "calib":           # exactly the net calibration uses (deployer.quant.collect)
        from deployer.quant.collect import make_net

        net = make_net(job["param"], job["bin"], job["threads"])
        return _forward(net, job)
    net = ncnn.Net()
    if job["mode"] == "fp32":
        configure(net.opt, threads=job["threads"], intermediates=job["intermediates"])
    else:
        net.opt.num_threads = job["threads"]
        net.opt.use_vulkan_compute = False
    name = Path(job["param"]).name
    if net.load_param(job["param"]) != 0:
        return {"ok": False, "error": f"{job['param']}: ncnn could not load this .param",
                "hint": "are all its layer types built into the ncnn wheel, and its params valid?"}
    if net.load_model(job["bin"]) != 0:
        return {"ok": False, "error": f"{job['bin']}: ncnn could not load these weights for {name}",
                "hint": "the .bin must be the one written with this .param"}
    return _forward(net, job)


def _forward(net, job: dict) -> dict:
    import ncnn
    import numpy as np

    name = Path(job["param"]).name
    if not job["forward"]:
        return {"ok": True}
    rng = np.random.default_rng(0)
    ex = net.create_extractor()
    keep = []
    for blob, shape in job["shapes"].items():
        arr = rng.uniform(-1, 1, size=tuple(shape)).astype(np.float32)
        keep.append(arr)
        if ex.input(blob, ncnn.Mat(arr).clone()) != 0:
            return {"ok": False, "error": f"{name}: model has no input blob {blob!r}"}
    outputs, finite = {}, True
    for blob in job["blobs"] or list(net.output_names()):
        rc, mat = ex.extract(blob)
        if rc != 0:
            return {"ok": False, "error": f"{name}: ncnn could not compute blob {blob!r} (rc={rc}) on input "
                    f"{_shape_text(job['shapes'])}", "hint": "check the input shape against the model"}
        arr = np.array(mat)
        outputs[blob] = list(arr.shape)
        finite = finite and bool(np.isfinite(arr).all())
    return {"ok": True, "outputs": outputs, "finite": finite}


def main() -> int:
    """Run each job; announce it first so a crash is pinned on the right model; stop at a failure."""
    jobs = json.loads(sys.stdin.read())
    for i, job in enumerate(jobs):
        sys.stdout.write(json.dumps({"start": i}) + "\n")
        sys.stdout.flush()
        try:
            reply = _child(job)
        except DeployerError as err:
            reply = {"ok": False, "error": str(err)}
        except Exception as err:  # noqa: BLE001 - reported to the parent as one line
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if not reply.get("ok"):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
