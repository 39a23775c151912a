"""ONNX / TorchScript -> ncnn fp32 through pnnx, cached by content.

Always `fp16=0`: pnnx defaults to fp16 weights, which would make the "fp32" reference that int8 is
judged against already lossy. We call the pnnx executable shipped inside the pnnx wheel directly
(found without importing the package, whose __init__ imports torch); it converts ONNX and
TorchScript on its own. The model is symlinked into a private work folder because pnnx drops
side files (`*.pnnxsim.onnx`, `*_pnnx.py`) next to its input, and the user's folder is not ours to
litter. Results go into `<cache>/pnnx/<stem>-<hash>/` and are reused when the model file and
input shapes are unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import DeployerError

SUFFIXES = (".onnx", ".pt", ".pth", ".torchscript")


@dataclass
class ImportedModel:
    param: Path
    bin: Path
    cached: bool           # True when an earlier conversion was reused


def cache_root() -> Path:
    from deployer.fsutil import cache_dir

    return cache_dir() / "pnnx"


def find_pnnx() -> Path | None:
    """`DEPLOYER_PNNX` if set (also lets tests simulate a missing pnnx), else the wheel's binary."""
    env = os.environ.get("DEPLOYER_PNNX")
    if env is not None:
        p = Path(env)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    spec = importlib.util.find_spec("pnnx")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            exe = Path(folder) / "pnnx"
            if exe.is_file() and os.access(exe, os.X_OK):
                return exe
    found = shutil.which("pnnx")
    return Path(found) if found else None


def _shape_arg(shapes: list[list[int]]) -> str:
    return ",".join("[" + ",".join(str(d) for d in s) + "]" for s in shapes)


def _digest(source: Path, shapes: list[list[int]]) -> str:
    h = hashlib.sha256()
    from deployer.fsutil import open_input

    with open_input(source, "model source") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    h.update(_shape_arg(shapes).encode())
    return h.hexdigest()[:16]


def _failure_reason(log: str) -> str:
    """pnnx prints pages of progress; the useful line is usually the last error-looking one."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in reversed(lines):
        low = ln.lower()
        if any(w in low for w in ("fail", "error", "exception", "not supported", "unsupported", "abort")):
            return ln[:200]
    return lines[-1][:200] if lines else "no output"


def import_model(source: str | os.PathLike, inputshape: list[list[int]], cache_dir: Path | None = None,
                 timeout: float = 900.0) -> ImportedModel:
    source = Path(source)
    if not source.is_file():
        raise DeployerError(f"{source}: model file not found")
    if source.suffix.lower() not in SUFFIXES:
        raise DeployerError(f"{source}: cannot import {source.suffix or 'extensionless'} files",
                            hint="give an ONNX (.onnx) or TorchScript (.pt) model")
    if not inputshape:
        raise DeployerError(f"{source}: pnnx needs the input shape", hint="give inputshape, e.g. [1,3,224,224]")
    exe = find_pnnx()
    if exe is None:
        raise DeployerError(f"{source}: cannot convert, pnnx is not installed",
                            hint="pip install torch==2.13.0 pnnx (torch first), or set DEPLOYER_PNNX")

    root = cache_dir or cache_root()
    stem = source.stem
    final = root / f"{stem}-{_digest(source, inputshape)}"
    param, binf = final / f"{stem}.ncnn.param", final / f"{stem}.ncnn.bin"
    if param.is_file() and binf.is_file():
        return ImportedModel(param, binf, cached=True)

    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=root))
    try:
        link = work / f"{stem}{source.suffix.lower()}"
        link.symlink_to(source.resolve())
        out = {k: work / v for k, v in {
            "ncnnparam": f"{stem}.ncnn.param", "ncnnbin": f"{stem}.ncnn.bin", "ncnnpy": f"{stem}_ncnn.py",
            "pnnxparam": f"{stem}.pnnx.param", "pnnxbin": f"{stem}.pnnx.bin", "pnnxpy": f"{stem}_pnnx.py",
            "pnnxonnx": f"{stem}.pnnx.onnx"}.items()}
        argv = [str(exe), str(link), f"inputshape={_shape_arg(inputshape)}", "fp16=0"]
        argv += [f"{k}={v}" for k, v in out.items()]
        try:
            proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=timeout,
                                  errors="replace")
        except subprocess.TimeoutExpired:
            raise DeployerError(f"{source}: pnnx conversion timed out after {timeout:.0f} s") from None
        except OSError as exc:
            raise DeployerError(f"{source}: cannot run pnnx at {exe} ({exc.strerror})") from None
        (work / "pnnx.log").write_text(proc.stdout + proc.stderr)
        made = out["ncnnparam"].is_file() and out["ncnnbin"].is_file() and out["ncnnparam"].stat().st_size > 0
        if proc.returncode != 0 or not made:
            reason = _failure_reason(proc.stdout + "\n" + proc.stderr)
            hint = "is it TorchScript (torch.jit.trace(...).save), not a state_dict?" if source.suffix != ".onnx" \
                else "check the file is a valid ONNX model and the input shape matches it"
            raise DeployerError(f"{source}: pnnx conversion failed (exit {proc.returncode}: {reason})", hint=hint)
        link.unlink()
        try:
            os.replace(work, final)
        except OSError:
            # another process finished the same conversion first; theirs is as good as ours
            if not (param.is_file() and binf.is_file()):
                raise
            shutil.rmtree(work, ignore_errors=True)
        return ImportedModel(param, binf, cached=False)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
