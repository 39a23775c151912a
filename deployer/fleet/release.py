"""A release, host side: the files a board will serve, their sha256, the manifest, the health data.

Why content addressing: a fleet update usually changes one file (a re-quantized .bin) and keeps the
rest; naming every file by its sha256 lets a board say in one line which contents it already has,
so only new bytes travel, and a release folder on the board is hard links into that store.

Why the id is derived from the payload (not the time): deploying the same model twice must be a
no-op, and a rollout that is resumed must aim at the very same release on every board.
The manifest (who, when, versions) is stored with the release but does not change its id.

Why the health data is part of the id (so `--no-health`, which leaves it out, or another `--shape`
gives another id): a release folder on a board is immutable and its id names exactly the files in
it. Were the health files left out of the id, a board that got the `--no-health` copy would hold,
under the same id, a folder without a health input, and a later health-gated deploy of that id
would find it already there and have nothing to check; two manifests would also claim one id.
So the id covers the model's files, table, report, profile, runner and the health input and host
reference; the same model with the same options gives the same id.

Health data travels in the release: a fixed input (`health-input.f32`, deterministic) and the host
ncnn's output for it (`health-expected.json`), so the board-side check needs nothing but the release.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer import fsutil
from deployer.errors import DeployerError
from deployer.remote.layout import check_name

RUNNER = Path(__file__).resolve().parents[1] / "remote" / "runner.py"
HEALTH_INPUT = "health-input.f32"
HEALTH_EXPECTED = "health-expected.json"
HEALTH_SEED = 20260101
MANIFEST_FORMAT = 1
# the options both sides run the health check with: fp32 arithmetic around int8 layers, so the
# board's result is comparable bit for bit with the host's unpacked reference
HEALTH_OPTIONS = {"fp16": 0, "int8": 1, "winograd": 1, "sgemm": 1}


@dataclass(frozen=True)
class ReleaseFile:
    name: str          # name inside the release folder (checked: no '/', no leading '.', '-')
    path: Path         # local file
    sha256: str
    size: int


@dataclass
class LocalRelease:
    """Everything the host knows about a release before sending it."""

    id: str
    model: str
    files: list[ReleaseFile]
    manifest: dict[str, Any]
    manifest_path: Path
    manifest_sha256: str
    param: str                          # release file names the runner loads
    bin: str
    shape: list[int] | None
    expected: dict[str, Any] | None     # host reference output for the health input (None: health impossible)
    workdir: Path | None = None
    # can the board's output be bit-identical to the host's (deployer.ncnn.exactness)? If not,
    # the layers that round differently on ARM and x86; the health check then gates on cosine
    inexact: list[str] = field(default_factory=list)
    owns_workdir: bool = False          # workdir is a temporary folder made for this release alone

    def close(self) -> None:
        """Remove the temporary folder build_release made (manifest, health input and reference):
        every deploy/rollout built one in the system temp folder and none was ever removed."""
        if self.owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalRelease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files) + self.manifest_path.stat().st_size

    def blobs(self) -> list[tuple[str, Path, int]]:
        """(sha256, local path, size) of every distinct content, manifest included."""
        seen: dict[str, tuple[str, Path, int]] = {}
        for f in self.files:
            seen.setdefault(f.sha256, (f.sha256, f.path, f.size))
        seen.setdefault(self.manifest_sha256, (self.manifest_sha256, self.manifest_path,
                                               self.manifest_path.stat().st_size))
        return list(seen.values())

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "size": self.size,
                "files": {f.name: {"sha256": f.sha256, "size": f.size} for f in self.files},
                "health": self.expected is not None}


def find_model(folder: Path) -> tuple[Path, Path, list[Path]]:
    """The int8 .param/.bin in a `quantize` output folder plus its table and check report."""
    if not folder.is_dir():
        raise DeployerError(f"--model {folder}: not a folder", hint="pass the folder `deployer quantize` wrote (its --out)")
    params = sorted(p for p in folder.glob("*.param") if not p.name.startswith("."))
    int8 = [p for p in params if p.name.endswith("_int8.param")]
    params = int8 or params
    if not params:
        raise DeployerError(f"--model {folder}: no .param file in it",
                            hint="run `deployer quantize --out DIR` first and pass that DIR")
    if len(params) > 1:
        raise DeployerError(f"--model {folder}: several models ({', '.join(p.name for p in params)}); "
                            "keep one model per folder")
    param = params[0]
    stem = param.name[: -len(".param")]
    binf = folder / f"{stem}.bin"
    if not binf.is_file():
        raise DeployerError(f"--model {folder}: {param.name} has no {binf.name} beside it")
    extras = [p for p in (folder / f"{stem}.table", folder / f"{stem}.json") if p.is_file()]
    return param, binf, extras


def build_release(model_dir: Path, *, profile: Path | None = None, workdir: Path | None = None,
                  health: bool = True, shape: list[int] | None = None) -> LocalRelease:
    """Collect, hash and describe a release; compute the host reference for the health check.

    `health=False` skips the host ncnn run (benchmarks, models the host cannot run); such a
    release cannot be health-checked on boards. `shape` (W,H,C) sizes the health input of a model
    whose Input layer has no size; without it such a model is refused unless `health=False` (the
    gate used to be skipped with a note, switching boards unchecked). Without `workdir` the
    release's files (manifest, health input and reference) go to a temporary folder the release
    owns: close it (or use it in a `with`) when the command is done."""
    param, binf, extras = find_model(Path(model_dir))
    stem = param.name[: -len(".param")]
    _board_safe(stem, "model name", _ID_RE)
    files = [param, binf, *extras] + ([Path(profile)] if profile else [])
    names: dict[str, Path] = {}
    for p in files:
        name = "profile.yaml" if profile and p == Path(profile) else p.name
        _board_safe(name, f"file name in {model_dir}", _FILE_RE)
        names[name] = p
    names["runner.py"] = RUNNER
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="deployer-release-")) if owned else Path(workdir)  # type: ignore[arg-type]
    try:
        work.mkdir(parents=True, exist_ok=True)
        return _build(param, binf, extras, names, stem, work, owned, health, shape)
    except BaseException:
        if owned:     # a failed host reference run or Ctrl-C must not leave the folder behind either
            shutil.rmtree(work, ignore_errors=True)
        raise


def _build(param: Path, binf: Path, extras: list[Path], names: dict[str, Path], stem: str, work: Path,
           owned: bool, health: bool, given: list[int] | None) -> LocalRelease:
    shape = _health_shape(param, extras, given, health)
    expected = None
    if health and shape:
        input_path = work / HEALTH_INPUT
        fsutil.write_bytes(input_path, _health_input(shape))
        expected = host_reference(param, binf, input_path, shape)
        fsutil.write_text(work / HEALTH_EXPECTED, json.dumps(expected, sort_keys=True) + "\n")
        names[HEALTH_INPUT] = input_path
        names[HEALTH_EXPECTED] = work / HEALTH_EXPECTED
    rfiles = []
    for name, p in sorted(names.items()):
        try:
            rfiles.append(ReleaseFile(name, p, fsutil.sha256_file(p, "release file"), p.stat().st_size))
        except OSError as err:
            raise DeployerError(f"{p}: cannot read ({err.strerror})") from None
    from deployer.ncnn.exactness import arch_exact
    from deployer.ncnn.param import read_param

    _, inexact = arch_exact(read_param(param))
    payload = hashlib.sha256("".join(f"{f.name} {f.sha256}\n" for f in rfiles).encode()).hexdigest()
    rid = f"{stem}-{payload[:12]}"
    manifest = {
        "format": MANIFEST_FORMAT, "id": rid, "model": stem,
        "files": {f.name: {"sha256": f.sha256, "size": f.size} for f in rfiles},
        "param": param.name, "bin": binf.name, "shape": shape,
        "health": {"input": HEALTH_INPUT, "expected": HEALTH_EXPECTED, "options": HEALTH_OPTIONS,
                   "bit_exact_possible": not inexact, "inexact_layers": inexact}
        if expected else None,
        "source": _source(extras), "deployer": _deployer_version(), "ncnn": _host_ncnn(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "by": _who(),
    }
    mpath = work / "manifest.json"
    fsutil.write_text(mpath, json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n")
    return LocalRelease(rid, stem, rfiles, manifest, mpath, fsutil.sha256_file(mpath, "manifest"), param.name,
                        binf.name, shape, expected, work, inexact, owned)


# what the board's release store accepts (deployer/fleet/board/fleet.sh valid_id / valid_name)
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,82}")
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def _board_safe(name: str, what: str, pattern: "re.Pattern[str]") -> None:
    check_name(name, what)     # the layout's rules first (no '/', '..', leading '-' or '.')
    if not pattern.fullmatch(name):
        plus = "+ " if pattern is _FILE_RE else ""
        longest = 128 if pattern is _FILE_RE else 83
        raise DeployerError(f"{what} {name!r} may only use letters, digits and . _ - {plus}"
                            f"(at most {longest} characters)", hint="rename the file")


def _input_shape(param: Path) -> list[int] | None:
    from deployer.remote.runner import input_shape_from_param

    return input_shape_from_param(str(param), None)


def _health_shape(param: Path, extras: list[Path], given: list[int] | None, health: bool) -> list[int] | None:
    """The health input's W,H,C: --shape, else the Input layer's, else the quantize report's.
    A --shape that contradicts the Input layer is refused: the board would run another input than
    the model declares. No shape at all with health on is refused, never skipped silently."""
    fixed = _input_shape(param)
    if given and fixed and list(given) != fixed:
        raise DeployerError(f"--shape {_dims(given)} differs from the input size {_dims(fixed)} that "
                            f"{param.name} declares", hint="drop --shape or give that size")
    shape = list(given) if given else fixed or _report_shape(extras)
    if health and not shape:
        raise DeployerError(f"{param}: the Input layer has no size and no quantize report gives one, so the "
                            "health check has no input; nothing was deployed",
                            hint="pass --shape W,H,C with the model's input size, or --no-health to switch unchecked")
    return shape


def _dims(shape: list[int]) -> str:
    return ",".join(str(d) for d in shape)


def _report_shape(extras: list[Path]) -> list[int] | None:
    """W,H,C of the model's input from the quantize report (`input_shapes`, numpy C,H,W order), for
    models whose Input layer declares no size (pnnx exports): what calibration fed it."""
    report = next((p for p in extras if p.suffix == ".json"), None)
    try:
        shapes = json.loads(report.read_text()).get("input_shapes") if report else None
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(shapes, dict) or len(shapes) != 1:
        return None
    (chw,) = shapes.values()
    if not (isinstance(chw, list) and len(chw) == 3 and all(isinstance(d, int) and d > 0 for d in chw)):
        return None
    return [chw[2], chw[1], chw[0]]


def _health_input(shape: list[int]) -> bytes:
    from deployer.remote.runner import float32_bytes, make_input_values

    count = 1
    for d in shape:
        count *= d
    return float32_bytes(make_input_values(count, "random", HEALTH_SEED))


def runner_flags(param: str, binf: str, input_file: str, *, packing: bool, iterations: int = 1,
                 warmup: int = 0, threads: int = 1, shape: list[int] | None = None) -> list[str]:
    """Runner arguments of the health run, identical on host and board apart from paths/threads."""
    o = HEALTH_OPTIONS
    return ["--param", param, "--bin", binf, "--input-file", input_file, "--iterations", str(iterations),
            *(["--shape", ",".join(str(d) for d in shape)] if shape else []),
            "--warmup", str(warmup), "--threads", str(threads), "--powersave", "0", "--fp16", str(o["fp16"]),
            "--int8", str(o["int8"]), "--winograd", str(o["winograd"]), "--sgemm", str(o["sgemm"]),
            "--packing", "1" if packing else "0", "--return-output"]


def unpacked_machine(machine: str) -> bool:
    """x86's packed int8 depthwise kernel approximates (see session.host_reference): run unpacked there."""
    return machine in ("x86_64", "AMD64", "i686", "amd64")


def host_reference(param: Path, binf: Path, input_file: Path, shape: list[int] | None = None) -> dict[str, Any]:
    """The host ncnn's output for the health input, by the very runner the board will use."""
    argv = [sys.executable, "-u", str(RUNNER), *runner_flags(str(param), str(binf), str(input_file), shape=shape,
                                                             packing=not unpacked_machine(platform.machine()))]
    proc = subprocess.run(argv, capture_output=True, text=True)
    lines = []
    for ln in proc.stdout.splitlines():
        try:
            lines.append(json.loads(ln))
        except ValueError:
            continue
    out = next((ln for ln in lines if isinstance(ln, dict) and ln.get("type") == "output"), None)
    if out is None:
        err = next((ln.get("error") for ln in lines if isinstance(ln, dict) and ln.get("type") == "error"),
                   (proc.stderr.strip().splitlines() or ["no output"])[-1])
        raise DeployerError(f"{param}: the host's ncnn cannot run this model ({err}); nothing was deployed",
                            hint="check the model with `deployer run` on the host, or pass --no-health")
    return {"blob": out.get("blob"), "shape": out.get("shape"), "data": out.get("data"),
            "ncnn": _host_ncnn(), "machine": platform.machine()}


def _source(extras: list[Path]) -> dict[str, Any]:
    report = next((p for p in extras if p.suffix == ".json"), None)
    if report is None:
        return {}
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return {}
    model = data.get("model") if isinstance(data, dict) else None
    out: dict[str, Any] = {}
    if isinstance(model, dict):
        out["model"] = {k: os.path.basename(str(v)) for k, v in model.items() if k in ("param", "bin", "source")}
    for key in ("method", "ok"):
        if isinstance(data, dict) and key in data:
            out[key] = data[key]
    return out


def _deployer_version() -> str:
    from deployer import __version__

    return __version__


def _host_ncnn() -> str | None:
    try:
        import ncnn

        return str(ncnn.__version__)
    except ImportError:
        return None


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
