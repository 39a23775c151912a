"""ncnn .param text: parse every syntax ncnn accepts, write it back unchanged where we changed nothing.

The text is the model's public face: users diff it, ncnn's own tools read it, and quantization only
touches a few layers. So each layer keeps the exact text it was read from, and only a layer we
modified (or added) is written again, in ncnn ModelWriter / pnnx style (`%-24s %-24s %d %d`, names,
` k=v`). Values are typed the way ncnn's ParamDict types them: a token containing '.', 'e' or 'E'
is a float, otherwise an int; a token starting with a letter or '"' is a string.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from deployer.errors import DeployerError
from deployer.fsutil import read_input

ParamValue = int | float | str | list[int] | list[float]

MAGIC = "7767517"
MAX_COUNT = 1 << 20        # layers / blobs in one model: far above any real net, far below bad_alloc
MAX_PARAM_ID = 31          # ncnn's NCNN_MAX_PARAM_COUNT is 32: ids 0..31
ARRAY_KEY_BASE = -23300    # old-style array key: -23300 - id
SHAPE_HINT_ID = 30         # `-23330=...` output shape hints
FEATURE_MASK_ID = 31
_MAX_VALUE_CHARS = 15      # ParamDict scans values with %15s / %15[^,\n ]
_MAX_NAME_CHARS = 255

# ASCII digits only: Python's \d and int() take "٣" or "1_0", ncnn's sscanf does not
_INT_RE = re.compile(r"[+-]?\d+\Z", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z", re.ASCII)
_KEY_RE = re.compile(r"(-?\d+)=", re.ASCII)
_WS_RE = re.compile(r"\s*")
_TOKEN_RE = re.compile(r'(?:[^\s"]+|"[^"]*")*')
_NONFINITE_RE = re.compile(r"[+-]?(inf|infinity|nan)(\(.*\))?\Z", re.IGNORECASE)
_FLT_MAX = 3.4028234663852886e38      # ncnn stores float params as 32-bit floats


def _is_float_text(text: str) -> bool:
    return any(ch in text for ch in ".eE")


@dataclass
class Layer:
    """One line of a .param file. `params` keeps file order; id 30 / 31 included when present."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, ParamValue] = field(default_factory=dict)
    # What the file said, so an unmodified layer is written back byte for byte. Not part of
    # equality: two layers with the same content are the same layer whatever their spelling.
    _text: str | None = field(default=None, repr=False, compare=False)
    _snapshot: tuple | None = field(default=None, repr=False, compare=False)
    _param_text: dict[int, str] = field(default_factory=dict, repr=False, compare=False)
    _sep: str = field(default="", repr=False, compare=False)  # whitespace after the layer

    def get(self, pid: int, default: ParamValue) -> ParamValue:
        return self.params.get(pid, default)

    def _state(self) -> tuple:
        return (self.type, self.name, tuple(self.bottoms), tuple(self.tops),
                tuple((k, _typed(v)) for k, v in self.params.items()))

    @property
    def modified(self) -> bool:
        """True when this layer no longer matches the text it was parsed from (or is new)."""
        return self._text is None or self._snapshot != self._state()


def _typed(value: ParamValue) -> object:
    """Value plus its Python types, so int 1 and float 1.0 count as different params (ncnn does)."""
    if isinstance(value, list):
        return ("list", tuple((type(v).__name__, v) for v in value))
    return (type(value).__name__, value)


@dataclass
class Graph:
    layers: list[Layer]
    _header: str | None = field(default=None, repr=False, compare=False)
    _counts: tuple[int, int] | None = field(default=None, repr=False, compare=False)

    def layer(self, name: str) -> Layer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise DeployerError(f"no layer named {name!r} in the model")

    def index(self, name: str) -> int:
        for i, lay in enumerate(self.layers):
            if lay.name == name:
                return i
        raise DeployerError(f"no layer named {name!r} in the model")

    def producer(self, blob: str) -> Layer | None:
        for lay in self.layers:
            if blob in lay.tops:
                return lay
        return None

    def consumers(self, blob: str) -> list[Layer]:
        return [lay for lay in self.layers if blob in lay.bottoms]

    @property
    def input_names(self) -> list[str]:
        return [top for lay in self.layers if lay.type == "Input" for top in lay.tops]

    @property
    def blob_names(self) -> list[str]:
        """Every blob in order of first appearance, which is how ncnn numbers them."""
        seen: dict[str, None] = {}
        for lay in self.layers:
            for blob in lay.bottoms:
                seen.setdefault(blob, None)
            for blob in lay.tops:
                seen.setdefault(blob, None)
        return list(seen)

    @property
    def output_names(self) -> list[str]:
        """Blobs nobody consumes: what a user extracts."""
        consumed = {b for lay in self.layers for b in lay.bottoms}
        return [b for lay in self.layers for b in lay.tops if b not in consumed]


# ----------------------------------------------------------------------------------------- parse

def read_param(path: str | os.PathLike) -> Graph:
    path = Path(path)
    raw = read_input(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DeployerError(
            f"{path.name}: not a text .param file (byte {err.start} is not UTF-8); "
            "binary .param.bin files are not supported") from None
    return parse_param(text, source=path.name)


class _Cursor:
    """Whitespace-separated tokens with their offsets; a quoted string is one token."""

    def __init__(self, text: str, start: int, source: str) -> None:
        self.text = text
        self.pos = start
        self.source = source
        self.last_end = start
        self._line_cache = (0, 1)      # (offset, line there): lines are asked for in file order

    def line_of(self, offset: int) -> int:
        base, line = self._line_cache
        if offset < base:
            base, line = 0, 1
        line += self.text.count("\n", base, offset)
        self._line_cache = (offset, line)
        return line

    def skip_ws(self) -> None:
        self.pos = _WS_RE.match(self.text, self.pos).end()

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek_is_param(self) -> bool:
        self.skip_ws()
        return _KEY_RE.match(self.text, self.pos) is not None

    def token(self) -> tuple[str, int]:
        self.skip_ws()
        start = self.pos
        end = _TOKEN_RE.match(self.text, start).end()
        if end < len(self.text) and self.text[end] == '"':
            raise DeployerError(f"{self.source}: line {self.line_of(start)}: unterminated quoted string")
        self.pos = self.last_end = end
        return self.text[start:end], start


def parse_param(text: str, source: str = "<param>") -> Graph:
    if text.startswith("\ufeff"):
        raise DeployerError(f"{source}: starts with a byte-order mark; save it as plain UTF-8")
    cur = _Cursor(text, 0, source)
    magic, _ = cur.token() if not cur.at_end() else ("", 0)
    if magic != MAGIC:
        shown = magic[:20] or "nothing"
        raise DeployerError(
            f"{source}: line 1: magic is {shown!r}, expected {MAGIC}; not an ncnn .param "
            "(or one too old: regenerate it with pnnx)")
    counts = []
    for what in ("layer count", "blob count"):
        if cur.at_end():
            raise DeployerError(f"{source}: line 2: missing {what}")
        tok, off = cur.token()
        if not _INT_RE.match(tok) or int(tok) <= 0:
            raise DeployerError(
                f"{source}: line {cur.line_of(off)}: {what} must be a positive integer, got {tok!r}")
        if int(tok) > MAX_COUNT:
            raise DeployerError(
                f"{source}: line {cur.line_of(off)}: {what} {tok} is over deployer's limit of "
                f"{MAX_COUNT:,} (ncnn would try to allocate them all)")
        counts.append(int(tok))
    layer_count, blob_count = counts
    cur.skip_ws()
    header = text[:cur.pos]

    # Duplicate layer names are legal for ncnn (pnnx writes two `splitncnn_0` for YOLOv8); they only
    # matter where weights and table lines are keyed by name, which read_bin checks.
    layers: list[Layer] = []
    producers: dict[str, str] = {}
    while not cur.at_end():
        layer, line = _parse_layer(cur, source)
        for top in layer.tops:
            if top in producers:
                raise DeployerError(
                    f"{source}: line {line} (layer {layer.name}): blob {top!r} is already produced "
                    f"by layer {producers[top]}; each blob needs exactly one producer")
            producers[top] = layer.name
        layers.append(layer)
    if len(layers) != layer_count:
        raise DeployerError(
            f"{source}: line 2 says {layer_count} layers but the file has {len(layers)}; "
            "fix the count (or the file was truncated)")
    graph = Graph(layers=layers, _header=header)
    distinct = len(graph.blob_names)
    if blob_count < distinct:
        raise DeployerError(
            f"{source}: line 2 says {blob_count} blobs but the layers use {distinct}; fix the count")
    graph._counts = (layer_count, distinct)
    return graph


def _parse_layer(cur: _Cursor, source: str) -> tuple[Layer, int]:
    start = cur.pos
    line = cur.line_of(start)
    type_, _ = cur.token()
    where = f"{source}: line {line}"
    if cur.at_end():
        raise DeployerError(f"{where}: layer {type_!r} has no name and no blob counts (truncated?)")
    name, _ = cur.token()
    where = f"{source}: line {line} (layer {name})"
    for what, tok in (("type", type_), ("name", name)):
        if len(tok) > _MAX_NAME_CHARS:
            raise DeployerError(f"{where}: layer {what} is longer than {_MAX_NAME_CHARS} characters")
        if "=" in tok:
            raise DeployerError(f"{where}: expected a layer {what}, got {tok!r}")
    nums = []
    for what in ("bottom count", "top count"):
        if cur.at_end():
            raise DeployerError(f"{where}: missing {what} (truncated?)")
        tok, _ = cur.token()
        if not _INT_RE.match(tok) or int(tok) < 0:
            raise DeployerError(f"{where}: {what} must be a non-negative integer, got {tok!r}")
        nums.append(int(tok))
    blobs = []
    for i in range(nums[0] + nums[1]):
        if cur.at_end() or cur.peek_is_param():
            raise DeployerError(
                f"{where}: declares {nums[0]} bottoms and {nums[1]} tops but lists only {i} blob names")
        tok, _ = cur.token()
        if len(tok) > _MAX_NAME_CHARS:
            raise DeployerError(f"{where}: blob name {tok[:40]}... is longer than {_MAX_NAME_CHARS}")
        blobs.append(tok)
    params: dict[int, ParamValue] = {}
    param_text: dict[int, str] = {}
    while cur.peek_is_param():
        if "\n" in cur.text[cur.last_end:cur.pos]:
            tok = cur.text[cur.pos:].split(None, 1)[0]
            raise DeployerError(
                f"{where}: param {tok[:40]!r} starts a new line; ncnn reads a layer's params only "
                "up to the end of the line with its last blob name, so join the lines")
        tok, _ = cur.token()
        pid, value = _parse_kv(tok, where)
        if pid in params:
            raise DeployerError(f"{where}: param id {pid} is given twice")
        params[pid] = value
        param_text[pid] = tok
    end = cur.last_end
    cur.skip_ws()
    if cur.pos < len(cur.text) and "\n" not in cur.text[end:cur.pos]:
        junk = cur.text[cur.pos:].split(None, 1)[0]
        raise DeployerError(
            f"{where}: unknown syntax {junk[:40]!r}; after the blob names only id=value params "
            "may follow on a layer's line")
    layer = Layer(type=type_, name=name, bottoms=blobs[:nums[0]], tops=blobs[nums[0]:],
                  params=params, _param_text=param_text)
    layer._text = cur.text[start:end]
    layer._sep = cur.text[end:cur.pos]
    layer._snapshot = layer._state()
    return layer, line


def _parse_kv(tok: str, where: str) -> tuple[int, ParamValue]:
    key_text, _, value_text = tok.partition("=")
    key = int(key_text)
    if key <= ARRAY_KEY_BASE:
        pid = ARRAY_KEY_BASE - key
        _check_id(pid, tok, where)
        parts = value_text.split(",")
        if not _INT_RE.match(parts[0]) or int(parts[0]) < 0:
            raise DeployerError(f"{where}: array {tok[:40]!r} must start with its element count")
        n = int(parts[0])
        if len(parts) - 1 != n:
            raise DeployerError(
                f"{where}: array param {pid} says {n} elements but has {len(parts) - 1}")
        return pid, [_parse_scalar(p, tok, where) for p in parts[1:]]
    _check_id(key, tok, where)
    if not value_text:
        raise DeployerError(f"{where}: param {tok!r} has no value")
    if value_text[0] == '"':
        if len(value_text) < 2 or not value_text.endswith('"') or '"' in value_text[1:-1]:
            raise DeployerError(f"{where}: bad quoted string in {tok!r}")
        if len(value_text) - 2 > _MAX_NAME_CHARS:
            raise DeployerError(f"{where}: string param {key} is longer than {_MAX_NAME_CHARS}")
        return key, value_text[1:-1]
    if _NONFINITE_RE.match(value_text):
        raise DeployerError(f"{where}: param {key} = {value_text!r} is not a finite number")
    if value_text[0].isalpha():
        if len(value_text) > _MAX_NAME_CHARS:
            raise DeployerError(f"{where}: string param {key} is longer than {_MAX_NAME_CHARS}")
        return key, value_text
    if "," in value_text:
        return key, [_parse_scalar(p, tok, where) for p in value_text.split(",")]
    return key, _parse_scalar(value_text, tok, where)


def _check_id(pid: int, tok: str, where: str) -> None:
    if not 0 <= pid <= MAX_PARAM_ID:
        raise DeployerError(
            f"{where}: param id {pid} in {tok[:40]!r} is out of range; ncnn allows 0..{MAX_PARAM_ID}")


def _parse_scalar(text: str, tok: str, where: str) -> int | float:
    if len(text) > _MAX_VALUE_CHARS:
        raise DeployerError(
            f"{where}: value {text!r} in {tok[:40]!r} is longer than ncnn's {_MAX_VALUE_CHARS}"
            " characters and would be misread; shorten it")
    if _is_float_text(text):
        if not _FLOAT_RE.match(text):
            raise DeployerError(f"{where}: cannot read {text!r} in {tok[:40]!r} as a number")
        value = float(text)
        if not math.isfinite(value) or abs(value) > _FLT_MAX:
            raise DeployerError(f"{where}: {text!r} in {tok[:40]!r} is not a finite 32-bit float")
        return value
    if not _INT_RE.match(text):
        raise DeployerError(f"{where}: cannot read {text!r} in {tok[:40]!r} as a number")
    value = int(text)
    if not -2**31 <= value < 2**31:
        raise DeployerError(f"{where}: {text!r} in {tok[:40]!r} does not fit a 32-bit int")
    return value


# ---------------------------------------------------------------------------------------- format

def format_value(value: int | float) -> str:
    """One scalar as ModelWriter prints it: %d for ints, %e for floats (numpy scalars welcome)."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return "%e" % float(value)
    raise DeployerError(f"cannot write param value {value!r}: expected an int, float or string")


def format_param_entry(pid: int, value: ParamValue) -> str:
    if isinstance(value, (list, tuple)):
        body = ",".join(format_value(v) for v in value)
        return f"{ARRAY_KEY_BASE - pid}={len(value)}" + (f",{body}" if body else "")
    if isinstance(value, str):
        if not value or any(ch.isspace() for ch in value) or not value[0].isalpha():
            return f'{pid}="{value}"'
        return f"{pid}={value}"
    return f"{pid}={format_value(value)}"


def format_layer(layer: Layer) -> str:
    """A layer in ModelWriter style, reusing the original spelling of params that did not change."""
    parts = ["%-24s %-24s %d %d" % (layer.type, layer.name, len(layer.bottoms), len(layer.tops))]
    parts.extend(layer.bottoms)
    parts.extend(layer.tops)
    orig = dict(layer._snapshot[4]) if layer._snapshot else {}
    for pid, value in layer.params.items():
        if pid in layer._param_text and orig.get(pid) == _typed(value):
            parts.append(layer._param_text[pid])
        else:
            parts.append(format_param_entry(pid, value))
    return " ".join(parts)


def _validate_for_write(graph: Graph) -> None:
    for lay in graph.layers:
        for tok in [lay.type, lay.name, *lay.bottoms, *lay.tops]:
            if not tok or any(ch.isspace() for ch in tok) or len(tok) > _MAX_NAME_CHARS:
                raise DeployerError(
                    f"cannot write .param: layer {lay.name!r} has an invalid name/blob {tok!r} "
                    "(empty, whitespace or too long)")
        for pid in lay.params:
            if not 0 <= pid <= MAX_PARAM_ID:
                raise DeployerError(
                    f"cannot write .param: layer {lay.name} has param id {pid}; ncnn allows 0..31")


def format_param(graph: Graph) -> str:
    _validate_for_write(graph)
    counts = (len(graph.layers), len(graph.blob_names))
    if graph._header is not None and graph._counts == counts:
        out = [graph._header]
    else:
        out = [f"{MAGIC}\n{counts[0]} {counts[1]}\n"]
    last = len(graph.layers) - 1
    for i, lay in enumerate(graph.layers):
        sep = lay._sep
        if lay.modified:
            out.append(format_layer(lay))
            sep = sep if "\n" in sep else "\n"
        else:
            out.append(lay._text or "")
            if not sep and i != last:
                sep = "\n"
        out.append(sep)
    return "".join(out)
