"""`deployer ncnn2table`: ncnn2table's command line, validated, on top of the calibration library.

Same positional arguments and `key=value` options as ncnn's tool (so scripts and docs keep
working), same table, but every mistake ncnn's tool ignores or turns into a crash is a one-line
DeployerError naming the key, file or line: misspelt keys (`pxel=`), missing/empty list files,
unreadable images, count mismatches, shape mismatches, wrong npy dtype.

The calibration itself is deployer.quant.calibration's `Calibrator`, the same engine `deployer
quantize` uses; this module only turns ncnn2table's command line into its inputs.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from deployer import fsutil
from deployer.errors import DeployerError
from deployer.fsutil import read_input
from deployer.inputs.decode import stb_readable
from deployer.inputs.spec import PIXEL_CHANNELS, PIXEL_TYPES, RAW, InputSpec
from deployer.ncnn.validate import check_input_shape
from deployer.quant.calibration import Calibrator, InputSet, ProgressFn, build_table
from deployer.quant.methods import ALL_METHODS, LayerScales
from deployer.quant.table import CalibrationTable
from deployer.quant.weights import load_model

KEYS = ("mean", "norm", "shape", "pixel", "thread", "method", "type", "percentile")
USAGE = ("usage: deployer ncnn2table PARAM BIN LIST[,LIST...] TABLE [key=value ...]  "
         "or  PARAM BIN TABLE [key=value ...] (weight-only); keys: mean=[..],[..] norm=[..] "
         "shape=[w,h(,c)] pixel=RAW/RGB/BGR/GRAY/RGBA/BGRA thread=N method=kl/aciq/eq/maxabs/percentile/mse "
         "type=0(images)/1(npy) percentile=99.99")
_MAX_LIST_PATH = 255


@dataclass
class Ncnn2TableArgs:
    param: Path
    bin: Path
    table: Path
    lists: list[Path] = field(default_factory=list)     # empty = weight-only table
    means: list[list[float]] = field(default_factory=list)
    norms: list[list[float]] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)
    pixels: list[str] = field(default_factory=list)      # names, deployer.inputs.spec.PIXEL_TYPES
    threads: int = 0                                     # 0 = all CPUs (ncnn's get_cpu_count)
    method: str = "kl"
    file_type: int = 0
    percentile: float = 99.99
    warnings: list[str] = field(default_factory=list)    # accepted, but ncnn's own tool would differ

    @property
    def weight_only(self) -> bool:
        return not self.lists


# ---------------------------------------------------------------------------------- parsing

def parse_args(argv: list[str]) -> Ncnn2TableArgs:
    """ncnn2table's argv (after the program name) -> validated arguments."""
    for a in argv:
        if a.startswith("-"):
            raise DeployerError(f"unexpected option {a!r}; {USAGE}")
    positional = [a for a in argv if "=" not in a]
    options = [a for a in argv if "=" in a]
    first_opt = next((i for i, a in enumerate(argv) if "=" in a), len(argv))
    if any("=" not in a for a in argv[first_opt:]):
        stray = next(a for a in argv[first_opt:] if "=" not in a)
        raise DeployerError(f"argument {stray!r} after key=value options is not key=value; {USAGE}")
    if len(positional) == 3:
        param, binf, table = positional
        lists: list[Path] = []
    elif len(positional) == 4:
        param, binf, lists_arg, table = positional
        lists = [Path(p) for p in lists_arg.split(",") if p]
        if not lists:
            raise DeployerError(f"list argument {lists_arg!r} names no file")
    else:
        raise DeployerError(f"expected 3 or 4 positional arguments, got {len(positional)}; {USAGE}")
    args = Ncnn2TableArgs(Path(param), Path(binf), Path(table), lists)
    seen: set[str] = set()
    for opt in options:
        key, _, value = opt.partition("=")
        canon = _canonical_key(key)
        if canon in seen:
            raise DeployerError(f"{key}= is given twice")
        seen.add(canon)
        if not value:
            raise DeployerError(f"{key}= has no value")
        if canon in ("mean", "norm"):
            groups = [[_float(v, key) for v in g] for g in _groups(value, key)]
            setattr(args, canon + "s", groups)
            args.warnings += _long_number_warnings(key, value)
        elif canon == "shape":
            args.shapes = [[_int(v, key) for v in g] for g in _groups(value, key)]
        elif canon == "pixel":
            args.pixels = [_pixel(p) for p in value.split(",")]
        elif canon == "thread":
            args.threads = _int(value, key)
            if args.threads < 0:
                raise DeployerError(f"thread={value}: must be >= 0 (0 = all CPUs)")
        elif canon == "method":
            if value not in ALL_METHODS:
                hint = difflib.get_close_matches(value, ALL_METHODS, n=1)
                raise DeployerError(f"method={value}: unknown method"
                                    + (f", did you mean {hint[0]}?" if hint else "")
                                    + f" (expected one of {', '.join(ALL_METHODS)})")
            args.method = value
        elif canon == "type":
            if value not in ("0", "1"):
                raise DeployerError(f"type={value}: must be 0 (images) or 1 (npy)")
            args.file_type = int(value)
        elif canon == "percentile":
            args.percentile = _float(value, key)
            if not 0 < args.percentile <= 100:
                raise DeployerError(f"percentile={value}: must be in (0, 100]")
    if "percentile" in seen and args.method != "percentile":
        raise DeployerError("percentile= only applies to method=percentile")
    return args


def _canonical_key(key: str) -> str:
    """ncnn matches keys by prefix (`threads=` is thread); anything else is a typo -> error."""
    for k in KEYS:
        if key.startswith(k):
            return k
    hint = difflib.get_close_matches(key, KEYS, n=1)
    raise DeployerError(f"unknown option {key}="
                        + (f", did you mean {hint[0]}=?" if hint else "")
                        + f" (known: {', '.join(k + '=' for k in KEYS)})")


def _groups(value: str, key: str) -> list[list[str]]:
    """`[a,b,c],[d,e,f]` (or a bare `a,b,c`) -> [[a,b,c],[d,e,f]]."""
    if "[" not in value and "]" not in value:
        return [value.split(",")]
    if not re.fullmatch(r"\[[^\[\]]*\](,\[[^\[\]]*\])*", value):
        raise DeployerError(f"{key}={value}: expected bracket groups like [1,2,3] or [1,2,3],[4,5,6]")
    groups = re.findall(r"\[([^\[\]]*)\]", value)
    out = []
    for g in groups:
        if not g.strip():
            raise DeployerError(f"{key}={value}: empty group []")
        out.append(g.split(","))
    return out


_NCNN_NUMBER_CHARS = 19     # ncnn2table: char vstr[20]; sscanf(s, "%19[^,]%n", ...)


def _long_number_warnings(key: str, value: str) -> list[str]:
    """ncnn2table cuts a mean/norm number at 19 characters and then drops the rest of its group
    (reading norm[1], norm[2] past the end: garbage). We parse the full value, so our table is the
    intended one, but the same command line given to ncnn's own tool would silently differ."""
    out = []
    for token in re.split(r"[\[\],]", value):
        if len(token) <= _NCNN_NUMBER_CHARS:
            continue
        v = float(token)
        short = next((t for d in range(17, 0, -1)
                      if len(t := f"{v:.{d}g}") <= _NCNN_NUMBER_CHARS), f"{v:.6g}")
        out.append(f"{key}=: {token!r} has {len(token)} characters; ncnn's own ncnn2table reads at most "
                   f"{_NCNN_NUMBER_CHARS} and then misreads the rest of the group (garbage scales); "
                   f"used the full value here, but give a shorter one (e.g. {short}) to keep both tools equal")
    return out


_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.ASCII | re.IGNORECASE)


def _float(text: str, key: str) -> float:
    try:
        if not _NUMBER_RE.fullmatch(text.strip()):
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise DeployerError(f"{key}=: {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > 3.4028234663852886e38:
        raise DeployerError(f"{key}=: {text!r} is not a finite 32-bit float")
    return value


def _int(text: str, key: str) -> int:
    try:
        if not re.fullmatch(r"[+-]?\d+", text.strip(), re.ASCII):
            raise ValueError(text)
        value = int(text)
    except ValueError:
        raise DeployerError(f"{key}=: {text!r} is not an integer") from None
    if abs(value) >= 2**31:
        raise DeployerError(f"{key}=: {text} is out of range")
    return value


def _pixel(name: str) -> str:
    if name not in PIXEL_TYPES:
        hint = difflib.get_close_matches(name.upper(), PIXEL_TYPES, n=1)
        raise DeployerError(f"pixel={name}: unknown pixel type"
                            + (f", did you mean {hint[0]}?" if hint else "")
                            + f" (expected one of {'/'.join(PIXEL_TYPES)})")
    return name


# ------------------------------------------------------------------------------ input lists

def read_list(path: Path) -> tuple[list[str], list[int]]:
    """ncnn's list format: first whitespace-separated token per line, blank lines skipped."""
    raw = read_input(path, "list file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DeployerError(f"{path}: list file is not UTF-8 text") from None
    files, lines = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) > 1:
            raise DeployerError(f"{path}: line {n}: {len(tokens)} fields; one path per line "
                                "(ncnn2table cannot read paths with spaces)")
        if len(tokens[0]) > _MAX_LIST_PATH:
            raise DeployerError(f"{path}: line {n}: path longer than {_MAX_LIST_PATH} characters "
                                "(ncnn2table would cut it)")
        files.append(tokens[0])
        lines.append(n)
    if not files:
        raise DeployerError(f"{path}: list file is empty; put one image/npy path per line")
    return files, lines


def read_lists(lists: list[Path]) -> InputSet:
    all_files, origins = [], []
    for k, lp in enumerate(lists):
        files, lines = read_list(lp)
        for f, n in zip(files, lines):
            p = Path(f)
            if not p.is_file():
                if p.exists():       # a folder, FIFO or device: say which
                    from deployer.fsutil import check_input

                    try:
                        check_input(p, "input file")
                    except DeployerError as err:
                        raise DeployerError(f"{lp}: line {n}: {err}") from None
                raise DeployerError(f"{lp}: line {n}: {f}: file not found")
        if k == 0:
            origins = [f"{lp}:{n}" for n in lines]
        elif len(files) != len(all_files[0]):
            raise DeployerError(f"{lp} lists {len(files)} files but {lists[0]} lists "
                                f"{len(all_files[0])}; entry i of every list is one sample")
        all_files.append(files)
    return InputSet(all_files, origins)


def input_specs(args: Ncnn2TableArgs, num_inputs: int) -> list[InputSpec]:
    """ncnn's sanity checks, plus the ones it lacks (channel counts, shape ranks)."""
    n = num_inputs
    if len(args.lists) != n:
        raise DeployerError(f"the model has {n} input(s) but {len(args.lists)} list file(s) were given; "
                            "give one comma-separated list per Input layer")
    if args.file_type == 0:
        for what, got in (("mean", args.means), ("norm", args.norms), ("pixel", args.pixels)):
            if len(got) != n:
                raise DeployerError(f"expect {n} {what}= group(s) (one per model input), got {len(got)}")
    if len(args.shapes) != n:
        raise DeployerError(f"expect {n} shape= group(s) (one per model input), got {len(args.shapes)}")
    specs = []
    for i in range(n):
        shape = tuple(args.shapes[i])
        if args.file_type == 0:
            pixel = args.pixels[i]
            if pixel == RAW:
                raise DeployerError("pixel=RAW cannot be used with images (type=0); use type=1 with .npy")
            if len(shape) not in (2, 3):
                raise DeployerError(f"shape={list(shape)}: images take [w,h] or [w,h,c]")
            if any(d < 0 for d in shape):
                raise DeployerError(f"shape={list(shape)}: sizes must be positive (0 = keep the image's aspect)")
            check_input_shape(shape, f"shape={list(shape)}")
            ch = PIXEL_CHANNELS[pixel]
            for what, vals in (("mean", args.means[i]), ("norm", args.norms[i])):
                if len(vals) != ch:
                    raise DeployerError(f"{what}= group {i + 1} has {len(vals)} values but pixel="
                                        f"{pixel} gives {ch} channel(s)")
            specs.append(InputSpec(shape, pixel=pixel, mean=tuple(args.means[i]), norm=tuple(args.norms[i]),
                                   file_type="image"))
        else:
            if not 1 <= len(shape) <= 4 or any(d <= 0 for d in shape):
                raise DeployerError(f"shape={list(shape)}: npy inputs need 1-4 positive dims in ncnn "
                                    "[w,h,c] order")
            check_input_shape(shape, f"shape={list(shape)}")
            specs.append(InputSpec(shape, file_type="npy"))
    return specs


def _refuse_overwriting_a_list(table: Path) -> None:
    """`PARAM BIN list.txt key=...` (table forgotten) would make list.txt the weight-only table."""
    try:
        text = read_input(table, "table", limit=64 << 20).decode("utf-8", "replace")
    except DeployerError:      # missing, a folder, a FIFO...: writing it will say so
        return
    first = next((ln.split()[0] for ln in text.splitlines() if ln.split()), None)
    if first is not None and Path(first).is_file():
        raise DeployerError(f"{table} looks like a list of input files, not a table; refusing to overwrite "
                            "it with a weight-only table (give the output table as the 4th argument)")


@dataclass
class Ncnn2TableResult:
    table: CalibrationTable
    layers: list[LayerScales]
    method: str
    num_inputs: int
    weight_only: bool
    warnings: list[str]


def _refuse_overwriting_an_input(table: Path, named: list[tuple[str | Path, str]]) -> None:
    """The output table must not be a file this run reads: given the model's .param/.bin, the list or
    a calibration image as the table path by mistake, the table was written over it (exit 0) and the
    user's model or data was gone. `deployer ncnn2int8` refuses the same way."""
    if os.path.isdir(table):      # found out only at the final rename, after the whole calibration
        raise DeployerError(f"{table}: the output table is a folder", hint="give a file path")
    clash = fsutil.overwritten_input([table], named)
    if clash is not None:
        raise DeployerError(f"{table}: the output table would overwrite {clash[1]}, an input of this run",
                            hint="choose a different output path")


def run(args: Ncnn2TableArgs, progress: ProgressFn | None = None) -> Ncnn2TableResult:
    """Everything `deployer ncnn2table` does except writing the file."""
    _refuse_overwriting_an_input(args.table, [(args.param, "the .param"), (args.bin, "the .bin"),
                                              *((lst, "a list file") for lst in args.lists)])
    model = load_model(args.param, args.bin)
    if args.weight_only:
        _refuse_overwriting_a_list(args.table)
        msg = ("calibration dataset not provided, skip activation calibration and generate "
               "weight-only table (no conv/fc lines: ncnn2int8 will quantize no convolutions)")
        return Ncnn2TableResult(build_table(model, None), [], args.method, 0, True, [*args.warnings, msg])
    specs = input_specs(args, len(model.input_names))
    inputs = read_lists(args.lists)
    _refuse_overwriting_an_input(args.table, [(f, f"calibration input {f}") for files in inputs.files for f in files])
    early = list(args.warnings)
    if args.file_type == 0:
        early += _unreadable_by_ncnn_warning(inputs)
    if not model.quant_layers:
        raise DeployerError(f"{args.param}: no Convolution/ConvolutionDepthWise/InnerProduct layers "
                            "to calibrate")
    cal = Calibrator(model, specs, inputs, threads=args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        layers = cal.layer_scales(args.method, percentile=args.percentile, progress=progress)
    return Ncnn2TableResult(build_table(model, layers), layers, args.method,
                            len(inputs.files[0]), False, early + cal.warnings)


def _unreadable_by_ncnn_warning(inputs: InputSet) -> list[str]:
    """One warning per run for images ncnn2table's stb_image cannot decode (it then calibrates on an
    uninitialised Mat, silently). We decode them, so only the comparison with ncnn's tool suffers."""
    odd = [f for files in inputs.files for f in files if not stb_readable(f)]
    if not odd:
        return []
    return [f"{len(odd)} image(s) (e.g. {odd[0]}) are not JPEG/PNG/BMP/binary PNM: decoded here, but "
            "ncnn's own ncnn2table (stb_image) cannot read them and would calibrate on garbage"]
