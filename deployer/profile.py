"""`profiles/*.yaml`: everything `deployer quantize` and `deployer check` need to know about a model.

A profile is strict on purpose: ncnn2table silently ignores a misspelt `pxel=` and then fails with
an unrelated message, so here every unknown key, wrong type or missing file is one line naming
the profile file and the field (with "did you mean"). Command-line flags override profile fields
and are reported under their own flag name. Relative paths in a profile are relative to the
profile's folder; in flags, to the current directory. `~` and `$VARS` expand (`$DEPLOYER_CACHE`
defaults to ~/.cache/deployer).

```yaml
model:        {param: m.param, bin: m.bin}      # or {source: m.onnx|m.pt, inputshape: [1,3,224,224]}
inputs:       # one per Input layer, in .param order (a single mapping is fine for one input)
  - {shape: [224, 224], resize: resize, pixel: RGB, mean: [...], norm: [...]}
calibration:  {images: photos/, count: 200, holdout: 0.25, seed: 0}
eval:         {images: eval/, min_count: 50}        # judges methods, mixed precision and the gate
quantize:     {method: auto, candidates: [kl, aciq, maxabs, percentile, mse], keep_fp32: [], mixed: true}
gate:         [top1_agreement>=0.99, cosine>=0.98]
out:          build/m_int8
```
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from deployer import fsutil
from deployer.errors import DeployerError
from deployer.inputs.spec import PIXEL_CHANNELS, PIXEL_FORMATS, RESIZE_MODES, InputSpec

ASCII_INT = re.compile(r"[+-]?\d+", re.ASCII)
_ASCII_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.ASCII | re.IGNORECASE)
PROFILE_MAX_BYTES = 1 << 20     # a profile is a few hundred bytes; anything near this is the wrong file
MAX_THREADS = 256
# eq and seq: costly searches (seq: ~100 s more on MobileNetV2), not default candidates
METHODS = ("kl", "aciq", "eq", "maxabs", "percentile", "mse", "seq")
DEFAULT_CANDIDATES = ("kl", "aciq", "maxabs", "percentile", "mse")
MODEL_SOURCE_SUFFIXES = (".onnx", ".pt", ".pth", ".torchscript")


@dataclass
class ModelSpec:
    param: Path | None = None
    bin: Path | None = None
    source: Path | None = None                # ONNX / TorchScript, converted through pnnx
    inputshape: list[list[int]] = field(default_factory=list)


@dataclass
class CalibrationSpec:
    images: list[Path] = field(default_factory=list)   # one list file or folder per input
    count: int | None = None                   # use at most this many files
    holdout: float = 0.25                      # fraction (0..1) or count (>= 1) held out for choosing
    seed: int = 0


MIN_EVAL_COUNT = 50     # below this an agreement rate's 95 % interval is wider than +-14 points


@dataclass
class EvalSpec:
    """The inputs that choose the method, rank layers for mixed precision and decide the gate.

    Separate from calibration on purpose: statistics and judgement on the same images flatter
    int8. Without `images`, the calibration's held-out share is used (and is usually too small:
    the report warns below `min_count`)."""

    images: list[Path] = field(default_factory=list)   # one list file or folder per input; [] = held-out share
    count: int | None = None                   # use at most this many
    min_count: int = MIN_EVAL_COUNT            # fewer inputs than this: a warning that decisions are noisy
    group: str | None = None                   # regex on file names: inputs it maps to one key are views of one photo


@dataclass
class QuantizeSpec:
    method: str = "auto"                       # auto = evaluate candidates, keep the best
    candidates: list[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    keep_fp32: list[str] = field(default_factory=list)
    mixed: bool = True                         # automatic mixed precision when a gate fails
    max_fp32_layers: int | None = None
    max_fp32_bytes: str | None = None          # "10%" of the all-int8 .bin, or a byte count (fp32_byte_budget)
    refine: list[str] | None = None            # adaround / biascorr / shift (deployer.quant.refine); None = default
    layer_times: Path | None = None            # a board's `run --layers --fp32-param` result (speedcost)
    max_slowdown: float | None = None          # share of all-int8's board time float layers may add (needs layer_times)


@dataclass
class Profile:
    model: ModelSpec
    inputs: list[InputSpec]                    # deployer.inputs.spec: shape (W, H), pixel, mean/norm, resize
    calibration: CalibrationSpec
    quantize: QuantizeSpec
    gate: list[str]
    out: Path | None
    eval: EvalSpec = field(default_factory=EvalSpec)
    task: Any = None                           # deployer.check.tasks.TaskSpec (None: raw-output metrics only)
    name: str | None = None                    # stem of output files; default from the model
    threads: int = 2
    source: Path | None = None                 # the YAML file, if any
    flags: dict[str, str] = field(default_factory=dict)   # dotted field -> flag that set it

    def where(self, dotted: str) -> str:
        """Location text for errors found later (e.g. a keep_fp32 layer the model does not have)."""
        generic = _generic(dotted)
        if generic in self.flags:
            return self.flags[generic]
        return f"{self.source}: {dotted}" if self.source else FLAG_NAMES.get(generic, dotted)


# ------------------------------------------------------------------------------------------------
# schema

_TOP_KEYS = ("model", "inputs", "calibration", "eval", "task", "quantize", "gate", "out", "name", "threads")
_SECTION_KEYS = {
    "model": ("param", "bin", "source", "inputshape"),
    "inputs": ("name", "shape", "pixel", "mean", "norm", "resize", "pad_value"),
    "calibration": ("images", "count", "holdout", "seed"),
    "eval": ("images", "count", "min_count", "group"),
    "quantize": ("method", "candidates", "keep_fp32", "mixed", "max_fp32_layers", "max_fp32_bytes", "refine",
                 "layer_times", "max_slowdown"),
}


@dataclass
class Override:
    """One command-line flag that replaces a profile field (`inputs.*` values are per input)."""

    field: str          # dotted, e.g. "calibration.images", "inputs.mean", "out"
    value: Any
    flag: str           # e.g. "--calib", used in error messages


# the command-line flag for each field, to name in errors when there is no profile file
FLAG_NAMES = {
    "model.param": "--param", "model.bin": "--bin", "model.source": "--source", "model.inputshape": "--inputshape",
    "inputs": "--shape", "inputs.shape": "--shape", "inputs.pixel": "--pixel", "inputs.mean": "--mean",
    "inputs.norm": "--norm", "inputs.resize": "--resize", "inputs.pad_value": "--pad-value",
    "calibration.images": "--calib", "calibration.count": "--count", "calibration.holdout": "--holdout",
    "calibration.seed": "--seed", "eval.images": "--eval", "eval.count": "--eval-count",
    "eval.min_count": "--eval-min-count", "eval.group": "--eval-group", "quantize.method": "--method",
    "quantize.candidates": "--candidates",
    "quantize.keep_fp32": "--keep-fp32", "quantize.mixed": "--mixed", "quantize.max_fp32_layers": "--max-fp32-layers",
    "quantize.max_fp32_bytes": "--max-fp32-bytes", "quantize.layer_times": "--layer-times",
    "quantize.max_slowdown": "--max-slowdown",
    "gate": "--gate", "out": "--out", "name": "--name", "threads": "--threads", "model": "--param",
}


class _Where:
    """Remembers where each field came from so errors name the file+field or the flag."""

    def __init__(self, source: Path | None) -> None:
        self.source = source
        self.flags: dict[str, str] = {}
        self.inputs_from_profile = False

    def __call__(self, dotted: str) -> str:
        generic = _generic(dotted)
        if generic in self.flags:
            return self.flags[generic]
        if self.source is None:
            return FLAG_NAMES.get(generic, dotted)
        return f"{self.source}: {dotted}"

    def base_dir(self, dotted: str) -> Path:
        if _generic(dotted) in self.flags or self.source is None:
            return Path.cwd()
        return self.source.parent


def _generic(dotted: str) -> str:
    """inputs[1].mean -> inputs.mean (flags apply to a field for every input)."""
    parts = dotted.split(".")
    return ".".join(p.split("[")[0] for p in parts)


def _err(where: str, msg: str, hint: str | None = None) -> DeployerError:
    return DeployerError(f"{where}: {msg}", hint=hint)


def _unknown_keys(mapping: dict, allowed: tuple[str, ...], where: Callable[[str], str], prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            raise _err(where(f"{prefix}{key}"), "unknown field", hint)


# ------------------------------------------------------------------------------------------------
# scalar converters; each raises with the field's location


def _as_int(v: Any, where: str, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise _err(where, f"expected an integer, got {v!r}")
    try:
        if isinstance(v, str) and not ASCII_INT.fullmatch(v.strip()):   # int() takes "1_0" and "٣"
            raise ValueError(v)
        n = int(v)
    except ValueError:
        raise _err(where, f"expected an integer, got {v!r}") from None
    if minimum is not None and n < minimum:
        raise _err(where, f"must be >= {minimum}, got {n}")
    if abs(n) >= 2**31:
        raise _err(where, f"{n} is out of range")
    return n


def _as_float(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise _err(where, f"expected a number, got {v!r}")
    try:
        if isinstance(v, str) and not _ASCII_FLOAT.fullmatch(v.strip()):
            raise ValueError(v)
        value = float(v)
    except (TypeError, ValueError):
        raise _err(where, f"expected a number, got {v!r}") from None
    if not math.isfinite(value) or abs(value) > 3.4028234663852886e38:    # ncnn computes in float32
        raise _err(where, f"expected a finite 32-bit float, got {v!r}")
    return value


def _as_bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return v.lower() in ("true", "yes", "on", "1")
    raise _err(where, f"expected true or false, got {v!r}")


def _as_str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _err(where, f"expected a non-empty string, got {v!r}")
    return v.strip()


def _split_list(v: Any) -> list:
    """Accept YAML lists and comma-separated strings ("104,117,123" or "[104,117,123]")."""
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, str):
        s = v.strip().strip("[]")
        return [p.strip() for p in s.split(",") if p.strip()]
    return [v]


def _image_paths(v: Any, where: _Where, dotted: str) -> list[Path]:
    """`calibration.images` / `eval.images`: one or more list files or folders."""
    return [_as_path(p, where, dotted, kind="list file or folder") for p in _split_list(v)]


def _as_floats(v: Any, where: str) -> list[float]:
    return [_as_float(x, where) for x in _split_list(v)]


def _as_str_list(v: Any, where: str) -> list[str]:
    return [_as_str(x, where) for x in _split_list(v)]


def _expand(p: str) -> str:
    env = dict(os.environ)
    from deployer.fsutil import cache_dir

    env.setdefault("DEPLOYER_CACHE", str(cache_dir()))
    # expandvars reads os.environ only, so substitute the default by hand
    if "$DEPLOYER_CACHE" in p or "${DEPLOYER_CACHE}" in p:
        p = p.replace("${DEPLOYER_CACHE}", env["DEPLOYER_CACHE"]).replace("$DEPLOYER_CACHE", env["DEPLOYER_CACHE"])
    return os.path.expanduser(os.path.expandvars(p))


def _as_path(v: Any, where: _Where, dotted: str, must_exist: bool = True, kind: str = "file") -> Path:
    text = _as_str(v if not isinstance(v, Path) else str(v), where(dotted))
    p = Path(_expand(text))
    if not p.is_absolute():
        p = where.base_dir(dotted) / p
    p = Path(os.path.normpath(p))
    if must_exist and not p.exists():
        start = "the current directory" if where.base_dir(dotted) == Path.cwd() else "the profile's folder"
        raise _err(where(dotted), f"{kind} not found: {p}", f"check the path (relative paths start at {start})")
    if must_exist and kind == "file" and p.is_dir():
        raise _err(where(dotted), f"expected a file, got a folder: {p}")
    return p


# ------------------------------------------------------------------------------------------------
# sections


def _model(raw: Any, where: _Where) -> ModelSpec:
    if raw is None:
        raise _err(where("model"), "missing", "give model.param + model.bin, or model.source (.onnx/.pt)")
    if not isinstance(raw, dict):
        raise _err(where("model"), f"expected a mapping, got {type(raw).__name__}")
    _unknown_keys(raw, _SECTION_KEYS["model"], where, "model.")
    spec = ModelSpec()
    if raw.get("source") is not None:
        spec.source = _as_path(raw["source"], where, "model.source")
        if spec.source.suffix.lower() not in MODEL_SOURCE_SUFFIXES:
            raise _err(where("model.source"), f"unsupported model type {spec.source.name!r}",
                       "give an ONNX (.onnx) or TorchScript (.pt) file, or an ncnn model with model.param/model.bin")
        if raw.get("param") is not None or raw.get("bin") is not None:
            raise _err(where("model.source"), "give either model.source or model.param/model.bin, not both")
        if raw.get("inputshape") is None:
            raise _err(where("model.inputshape"), "missing; pnnx needs it to convert " + spec.source.name,
                       "e.g. inputshape: [1,3,224,224]")
        spec.inputshape = _inputshape(raw["inputshape"], where("model.inputshape"))
        return spec
    for key in ("param", "bin"):
        if raw.get(key) is None:
            raise _err(where(f"model.{key}"), "missing", "give model.param and model.bin (or model.source)")
    spec.param = _as_path(raw["param"], where, "model.param")
    spec.bin = _as_path(raw["bin"], where, "model.bin")
    if raw.get("inputshape") is not None:
        spec.inputshape = _inputshape(raw["inputshape"], where("model.inputshape"))
    return spec


def _inputshape(v: Any, where: str) -> list[list[int]]:
    if isinstance(v, str):
        groups = [g for g in v.replace("],[", "];[").split(";")]
        v = [_split_list(g) for g in groups]
    if not isinstance(v, list) or not v:
        raise _err(where, f"expected a shape like [1,3,224,224], got {v!r}")
    if not isinstance(v[0], list):
        v = [v]
    shapes = []
    for shape in v:
        if not isinstance(shape, list) or not shape:
            raise _err(where, f"expected a shape like [1,3,224,224], got {shape!r}")
        shapes.append([_as_int(d, where, minimum=1) for d in shape])
    return shapes


def _one_input(raw: Any, where: _Where, idx: int) -> InputSpec:
    prefix = f"inputs[{idx}]"
    if not isinstance(raw, dict):
        raise _err(where(prefix), f"expected a mapping, got {type(raw).__name__}")
    _unknown_keys(raw, _SECTION_KEYS["inputs"], where, prefix + ".")
    if raw.get("shape") is None:
        raise _err(where(f"{prefix}.shape"), "missing", "give the network input size as [W, H], e.g. [224, 224]")
    shape = [_as_int(x, where(f"{prefix}.shape"), minimum=0) for x in _split_list(raw["shape"])]
    declared_c = None
    if len(shape) == 3:
        shape, declared_c = shape[:2], shape[2]     # ncnn2table's [w,h,c]: c follows from `pixel`
    if len(shape) != 2:
        raise _err(where(f"{prefix}.shape"), f"expected [W, H], got {raw['shape']!r}")
    from deployer.ncnn.validate import check_input_shape   # numpy: only when a profile has inputs

    check_input_shape(tuple(shape), where(f"{prefix}.shape"))
    pixel = str(raw.get("pixel", "RGB")).upper()
    if pixel not in PIXEL_FORMATS:
        close = difflib.get_close_matches(pixel, PIXEL_FORMATS, n=1)
        raise _err(where(f"{prefix}.pixel"), f"unknown pixel format {raw.get('pixel')!r}",
                   f"did you mean '{close[0]}'?" if close else f"one of {', '.join(PIXEL_FORMATS)}")
    channels = PIXEL_CHANNELS[pixel]
    if declared_c is not None and channels is not None and declared_c != channels:
        # [24, 24, 7] was dropped without a word: the network would get `pixel`'s channels, not 7
        raise _err(where(f"{prefix}.shape"), f"says {declared_c} channels but pixel {pixel} has {channels}",
                   f"give [W, H] or [W, H, {channels}], or the pixel format the network takes")
    mean = _as_floats(raw["mean"], where(f"{prefix}.mean")) if raw.get("mean") is not None else []
    norm = _as_floats(raw["norm"], where(f"{prefix}.norm")) if raw.get("norm") is not None else []
    for key, values in (("mean", mean), ("norm", norm)):
        if values and len(values) != channels:
            raise _err(where(f"{prefix}.{key}"), f"has {len(values)} values but pixel {pixel} has {channels} channels")
    resize = str(raw.get("resize", "resize")).lower()
    if resize not in RESIZE_MODES:
        close = difflib.get_close_matches(resize, RESIZE_MODES, n=1)
        raise _err(where(f"{prefix}.resize"), f"unknown resize mode {raw.get('resize')!r}",
                   f"did you mean '{close[0]}'?" if close else f"one of {', '.join(RESIZE_MODES)}")
    if resize == "letterbox" and 0 in shape:
        raise _err(where(f"{prefix}.shape"), "letterbox needs a target size with W and H > 0")
    extra: dict[str, Any] = {}
    if raw.get("pad_value") is not None:
        extra["pad_value"] = _as_float(raw["pad_value"], where(f"{prefix}.pad_value"))
    if raw.get("name") is not None:
        extra["name"] = _as_str(raw["name"], where(f"{prefix}.name"))
    return InputSpec(shape=(shape[0], shape[1]), pixel=pixel, mean=tuple(mean), norm=tuple(norm), resize=resize,
                     **extra)


def _inputs(raw: Any, where: _Where) -> list[InputSpec]:
    if raw is None:
        raise _err(where("inputs"), "missing", "describe the preprocessing: shape [W,H], pixel, mean, norm")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _err(where("inputs"), "expected a list with one mapping per model input")
    return [_one_input(item, where, i) for i, item in enumerate(raw)]


def _calibration(raw: Any, where: _Where) -> CalibrationSpec:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _err(where("calibration"), f"expected a mapping, got {type(raw).__name__}")
    _unknown_keys(raw, _SECTION_KEYS["calibration"], where, "calibration.")
    spec = CalibrationSpec()
    if raw.get("images") is None:
        raise _err(where("calibration.images"), "missing", "give a folder of images or a list file (one path per line)")
    spec.images = _image_paths(raw["images"], where, "calibration.images")
    if raw.get("count") is not None:
        spec.count = _as_int(raw["count"], where("calibration.count"), minimum=1)
    if raw.get("holdout") is not None:
        h = _as_float(raw["holdout"], where("calibration.holdout"))
        if h < 0 or (h >= 1 and h != int(h)):
            raise _err(where("calibration.holdout"), f"expected a fraction in [0, 1) or a whole count, got {raw['holdout']!r}")
        spec.holdout = h
    if raw.get("seed") is not None:
        spec.seed = _as_int(raw["seed"], where("calibration.seed"), minimum=0)
    return spec


def _eval(raw: Any, where: _Where) -> EvalSpec:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _err(where("eval"), f"expected a mapping, got {type(raw).__name__}")
    _unknown_keys(raw, _SECTION_KEYS["eval"], where, "eval.")
    spec = EvalSpec()
    if raw.get("images") is not None:
        spec.images = _image_paths(raw["images"], where, "eval.images")
    if raw.get("count") is not None:
        spec.count = _as_int(raw["count"], where("eval.count"), minimum=1)
    if raw.get("min_count") is not None:
        spec.min_count = _as_int(raw["min_count"], where("eval.min_count"), minimum=1)
    if raw.get("group") is not None:
        spec.group = _as_str(raw["group"], where("eval.group"))
        try:
            re.compile(spec.group)
        except re.error as err:
            raise _err(where("eval.group"), f"not a regular expression: {err}",
                       "e.g. '^(photo\\d+)_' (the first capture group names the photo a view belongs to)") from None
    return spec


def _method_name(v: Any, where: str, allow_auto: bool) -> str:
    name = _as_str(v, where).lower()
    allowed = (("auto",) if allow_auto else ()) + METHODS
    if name not in allowed:
        close = difflib.get_close_matches(name, allowed, n=1)
        raise _err(where, f"unknown method {v!r}", f"did you mean '{close[0]}'?" if close else f"one of {', '.join(allowed)}")
    return name


def _quantize(raw: Any, where: _Where) -> QuantizeSpec:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _err(where("quantize"), f"expected a mapping, got {type(raw).__name__}")
    _unknown_keys(raw, _SECTION_KEYS["quantize"], where, "quantize.")
    spec = QuantizeSpec()
    if raw.get("method") is not None:
        spec.method = _method_name(raw["method"], where("quantize.method"), allow_auto=True)
    if raw.get("candidates") is not None:
        spec.candidates = [_method_name(m, where("quantize.candidates"), allow_auto=False)
                           for m in _split_list(raw["candidates"])]
        if not spec.candidates:
            raise _err(where("quantize.candidates"), "is empty")
    if raw.get("keep_fp32") is not None:
        spec.keep_fp32 = _as_str_list(raw["keep_fp32"], where("quantize.keep_fp32"))
    if raw.get("mixed") is not None:
        spec.mixed = _as_bool(raw["mixed"], where("quantize.mixed"))
    if raw.get("max_fp32_layers") is not None:
        spec.max_fp32_layers = _as_int(raw["max_fp32_layers"], where("quantize.max_fp32_layers"), minimum=0)
    if raw.get("max_fp32_bytes") is not None:
        spec.max_fp32_bytes = _byte_budget(raw["max_fp32_bytes"], where("quantize.max_fp32_bytes"))
    if raw.get("refine") is not None:
        from deployer.quant.refine import parse_techniques

        spec.refine = parse_techniques(raw["refine"], where("quantize.refine"))
    if raw.get("layer_times") is not None:
        spec.layer_times = _as_path(raw["layer_times"], where, "quantize.layer_times", kind="run result file")
    if raw.get("max_slowdown") is not None:
        spec.max_slowdown = _share(raw["max_slowdown"], where("quantize.max_slowdown"), "e.g. max_slowdown: 5%")
        if spec.layer_times is None:
            raise _err(where("quantize.max_slowdown"), "needs the board's per-layer times to measure a slowdown",
                       "give quantize.layer_times (--layer-times) from `deployer run BOARD --layers --fp32-param ...`")
    return spec


def _task(raw: Any, where: _Where) -> Any:
    if raw is None:
        return None
    from deployer.check.tasks import parse_task

    return parse_task(raw, where("task"))


def _gate(raw: Any, where: _Where) -> list[str]:
    from deployer.check.gates import parse_gate

    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    gates = [_as_str(g, where("gate")) for g in items]
    for g in gates:
        parse_gate(g, where("gate"))       # validate now, with the profile's location
    return gates


# ------------------------------------------------------------------------------------------------
# entry points


def read_profile_yaml(path: Path) -> dict:
    import yaml

    if not path.exists():
        raise DeployerError(f"{path}: profile not found", hint="check the --profile path")
    try:
        data = yaml.safe_load(fsutil.read_input_text(path, "profile", limit=PROFILE_MAX_BYTES))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DeployerError(f"{path}: {line}invalid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployerError(f"{path}: cannot read profile ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DeployerError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _apply(raw: dict, override: Override, where: _Where) -> None:
    parts = override.field.split(".")
    where.flags[override.field] = override.flag
    if parts[0] == "inputs":
        key = parts[1]
        inputs = raw.get("inputs")
        if inputs is None:
            inputs = [{}]
        elif isinstance(inputs, dict):
            inputs = [inputs]
        values = override.value if isinstance(override.value, list) else [override.value]
        if not where.inputs_from_profile:
            while len(inputs) < len(values):      # inputs described by flags alone grow with them
                inputs.append({})
        if len(values) != len(inputs):
            raise _err(override.flag, f"gives {len(values)} value(s) but the model has {len(inputs)} inputs",
                       "give one bracket group per input, e.g. [104,117,123],[0,0,0]")
        for item, v in zip(inputs, values):
            if isinstance(item, dict):
                item[key] = v
        raw["inputs"] = inputs
        return
    node = raw
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    if parts[0] == "model" and parts[-1] in ("param", "bin"):
        node.pop("source", None)     # a flag naming an ncnn model replaces a profile's ONNX source
    if parts[0] == "model" and parts[-1] == "source":
        node.pop("param", None)
        node.pop("bin", None)
    node[parts[-1]] = override.value


def load_profile(path: str | os.PathLike | None, overrides: list[Override] | None = None) -> Profile:
    """Read, merge flags over, and validate a profile. `path=None`: flags alone describe the job."""
    source = Path(path) if path is not None else None
    raw: dict = read_profile_yaml(source) if source is not None else {}
    where = _Where(source)
    where.inputs_from_profile = raw.get("inputs") is not None
    _unknown_keys(raw, _TOP_KEYS, where, "")
    for ov in overrides or []:
        _apply(raw, ov, where)
    profile = Profile(
        model=_model(raw.get("model"), where),
        inputs=_inputs(raw.get("inputs"), where),
        calibration=_calibration(raw.get("calibration"), where),
        eval=_eval(raw.get("eval"), where),
        task=_task(raw.get("task"), where),
        quantize=_quantize(raw.get("quantize"), where),
        gate=_gate(raw.get("gate"), where),
        out=_as_path(raw["out"], where, "out", must_exist=False) if raw.get("out") is not None else None,
        source=source,
        flags=dict(where.flags),
    )
    if raw.get("name") is not None:
        name = _as_str(raw["name"], where("name"))
        if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
            raise _err(where("name"), f"must be a plain file stem, got {name!r}")
        profile.name = name
    if raw.get("threads") is not None:
        profile.threads = _as_int(raw["threads"], where("threads"), minimum=1)
        if profile.threads > MAX_THREADS:
            raise _err(where("threads"), f"{profile.threads} is over the limit of {MAX_THREADS}")
    if len(profile.calibration.images) != len(profile.inputs):
        raise _err(where("calibration.images"),
                   f"gives {len(profile.calibration.images)} list(s) but inputs has {len(profile.inputs)} entries",
                   "give one list file or folder per model input, in input order")
    if profile.eval.images and len(profile.eval.images) != len(profile.inputs):
        raise _err(where("eval.images"),
                   f"gives {len(profile.eval.images)} list(s) but inputs has {len(profile.inputs)} entries",
                   "give one list file or folder per model input, in input order")
    return profile


_BUDGET = re.compile(r"(\d+(\.\d+)?)%|\d+", re.ASCII)


def _byte_budget(v: Any, where: str) -> str:
    """`10%` (of the all-int8 .bin) or a whole number of bytes, kept as text (fp32_byte_budget)."""
    text = str(v).strip()
    if isinstance(v, bool) or not _BUDGET.fullmatch(text):
        raise _err(where, f"expected a share like 10% or a byte count, got {v!r}", "e.g. max_fp32_bytes: 10%")
    # a 400-digit share parses as float inf, and fp32_byte_budget's int() of it was an internal error
    if text.endswith("%") and not math.isfinite(float(text[:-1])):
        raise _err(where, f"{text[:20]}... is out of range", "e.g. max_fp32_bytes: 10%")
    return text


def _share(v: Any, where: str, example: str) -> float:
    """`5%` -> 0.05."""
    text = str(v).strip()
    m = re.fullmatch(r"(\d+(\.\d+)?)%", text, re.ASCII)
    if isinstance(v, bool) or m is None:
        raise _err(where, f"expected a share like 5%, got {v!r}", example)
    return float(m.group(1)) / 100


def fp32_byte_budget(budget: str | None, int8_bin_bytes: int) -> int | None:
    """The bytes fp32 layers may add to the all-int8 .bin (None: no byte budget)."""
    if budget is None:
        return None
    if budget.endswith("%"):
        return int(float(budget[:-1]) / 100 * int8_bin_bytes)
    return int(budget)
