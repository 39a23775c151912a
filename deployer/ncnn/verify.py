"""Prove an int8 model deployer wrote loads and runs in stock ncnn before saying it succeeded.

The int8 transform edits params and weights by rules read from ncnn's source; a rule we got wrong
would give files that ncnn refuses, or that crash it on the board, while deployer reports success.
So every int8 result is loaded with ncnn's default options and run on one input in a child
process (deployer.isolate) while it still sits under a staging name; only then is it renamed into
place. A failure is deployer's bug, not the user's: exit 4, and nothing is left under the names.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deployer import fsutil, isolate
from deployer.errors import DeployerError
from deployer.ncnn.param import read_param
from deployer.ncnn.validate import guess_input_shapes


@dataclass
class Verification:
    """What the check ran: the input shapes (None = load only) and the child's output shapes."""

    shapes: dict[str, tuple[int, ...]] | None
    outputs: dict[str, list[int]]
    seconds: float
    note: str = ""

    def to_dict(self) -> dict:
        return {"loaded": True, "ran": self.shapes is not None,
                "inputs": {k: list(v) for k, v in (self.shapes or {}).items()},
                "outputs": self.outputs, "seconds": round(self.seconds, 3), "note": self.note}


def verify_int8(param: str | os.PathLike, bin: str | os.PathLike,
                shapes: dict[str, tuple[int, ...]] | None = None, *, shown: str | None = None,
                source: tuple[str | os.PathLike, str | os.PathLike] | None = None) -> Verification:
    """Load (param, bin) in stock ncnn and run one input in a child; NcnnCrashed (exit 4) if it fails.

    `shapes`: input blob -> CHW; None = guessed from the model (declared Input shape, or the size a
    fixed-size head admits); if no shape can be told, only loading is verified and `note` says so.
    `shown`: the name to use in messages (the final path, not the staging one). `source`: the
    fp32 model it was made from, loaded first in the same child: if stock ncnn refuses that one too
    the problem is the user's model (exit 2), not our transform (exit 4).
    """
    note = ""
    if shapes is None:
        shapes = guess_input_shapes(read_param(param))
        if shapes is None:
            note = "input shape unknown: verified that stock ncnn loads the model, not a forward"
    specs = [isolate.Probe(param, bin, shapes, mode="stock", internal=True)]
    if source is not None:
        specs.insert(0, isolate.Probe(source[0], source[1], None, mode="stock", internal=False))
    try:
        result = isolate.probe_all(specs)[-1]
    except isolate.NcnnCrashed as err:
        if err.exit_code != 4:         # the input model itself does not load in stock ncnn
            raise isolate.NcnnCrashed(f"{source[0] if source else param}: stock ncnn cannot load the input model: "
                                      f"{err.message}", hint="nothing was written") from None
        name = shown or str(param)
        raise isolate.NcnnCrashed(f"the int8 model written for {name} does not work in stock ncnn: {err.message}",
                                  internal=True, hint="nothing was written; please report this with the input model") from None
    return Verification(shapes, result.outputs, result.seconds, note)


@contextlib.contextmanager
def staged_pair(outparam: str | os.PathLike, outbin: str | os.PathLike):
    """Yield (staging .param, staging .bin) next to the targets; on clean exit rename both into place.

    On any error both staging files are removed and the targets are untouched.
    """
    targets = [Path(outparam), Path(outbin)]
    staged: list[Path] = []
    try:
        for t in targets:
            t.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{t.name}.tmp-", dir=t.parent)
            os.close(fd)
            staged.append(Path(tmp))
        yield staged[0], staged[1]
        # two runs writing the same pair (make -j, two terminals) interleaved these renames and could
        # leave one run's .param next to the other's .bin: one pair at a time (folders in one order)
        with contextlib.ExitStack() as locks:
            for folder in sorted({t.parent.resolve() for t in targets}):
                locks.enter_context(fsutil.folder_lock(folder))
            for tmp, t in zip(staged, targets):
                os.chmod(tmp, fsutil.new_file_mode(t))       # mkstemp's 0600 is wrong for model files
                os.replace(tmp, t)
    finally:
        for tmp in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def ncnn2int8_verified(inparam: str | os.PathLike, inbin: str | os.PathLike, outparam: str | os.PathLike,
                       outbin: str | os.PathLike, table: str | os.PathLike | None = None,
                       shapes: dict[str, tuple[int, ...]] | None = None, **kwargs):
    """deployer.quant.int8.ncnn2int8, written under staging names, verified, then renamed into place.

    Returns (Int8Report, Verification).
    """
    from deployer.quant.int8 import ncnn2int8

    if os.path.abspath(outparam) == os.path.abspath(outbin):
        raise DeployerError(f"{outparam}: the output .param and .bin are the same file", hint="give two paths")
    clash = fsutil.overwritten_input([outparam, outbin], [(p, str(p)) for p in (inparam, inbin, table)])
    if clash is not None:
        what = "output .param" if clash[0] == outparam else "output .bin"
        raise DeployerError(f"{clash[0]}: {what} would overwrite an input file", hint="choose a different output path")
    for p, what in ((outparam, "output .param"), (outbin, "output .bin")):
        if os.path.isdir(p):
            raise DeployerError(f"{p}: {what} is a folder", hint="give a file path")
    with staged_pair(outparam, outbin) as (sparam, sbin):
        report = ncnn2int8(inparam, inbin, sparam, sbin, table, **kwargs)
        check = verify_int8(sparam, sbin, shapes, shown=str(outparam), source=(inparam, inbin))
    return report, check
