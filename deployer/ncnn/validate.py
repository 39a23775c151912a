"""Checks that stand between a user's model files and ncnn.

ncnn trusts its inputs: a stride of 0 divides by zero, a blob nobody produces is forward_layer(-1),
a weight count that disagrees with the input channels reads past the weights, a NaN weight spreads
silently. deployer's own parser already rejects every syntax problem and every .bin whose size does
not match the .param; these checks add the meaning: params in range for the layer types whose
`forward` would crash on them, a graph ncnn can walk (each blob produced once, before use), finite
weights and sane int8 scales, and input shapes the network can take.

Limits (documented in docs/validation.md) are far above any model a small board runs and far below
what would overflow ncnn's 32-bit size arithmetic.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from deployer.errors import DeployerError
from deployer.ncnn.modelbin import Weight, weight_layout
from deployer.ncnn.param import Graph, Layer

MAX_ARRAY_ELEMENTS = 1 << 29        # one weight array: 2 GiB of fp32, ncnn sizes are 32-bit
MAX_INPUT_SIDE = 8192               # width / height of one input
MAX_INPUT_CHANNELS = 4096
MAX_INPUT_ELEMENTS = 1 << 26        # w*h*c of one input (256 MiB of fp32)

_CONV = ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise")
_CONV_1D = ("Convolution1D", "ConvolutionDepthWise1D", "Deconvolution1D", "DeconvolutionDepthWise1D")
_CONV_3D = ("Convolution3D", "ConvolutionDepthWise3D", "Deconvolution3D", "DeconvolutionDepthWise3D")
_POOL = ("Pooling", "Pooling1D", "Pooling3D")
# int8_scale_term values ncnn's int8 loaders understand, per layer type
_INT8_TERMS = {"Convolution": (0, 1, 2, 101, 102), "ConvolutionDepthWise": (0, 1, 2, 101, 102),
               "InnerProduct": (0, 1, 2, 101, 102)}


def _int(layer: Layer, pid: int, default: int, where: str) -> int:
    value = layer.params.get(pid, default)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise DeployerError(f"{where}: param {pid} must be an integer, got {value!r}")
    return int(value)


def _positive(layer: Layer, where: str, names: dict[int, tuple[str, int]]) -> None:
    for pid, (what, default) in names.items():
        value = _int(layer, pid, default, where)
        if value <= 0:
            raise DeployerError(f"{where}: {what} (param {pid}) is {value}; it must be positive")


def check_graph(graph: Graph, source: str) -> None:
    """Structure and per-layer params that ncnn's forward would crash on. One line on the first problem."""
    produced: dict[str, int] = {}
    for i, layer in enumerate(graph.layers):
        where = f"{source}: layer {layer.name} ({layer.type})"
        for blob in layer.bottoms:
            if blob not in produced:
                later = graph.producer(blob)
                if later is None:
                    raise DeployerError(f"{where}: reads blob {blob!r}, which no layer produces",
                                        hint="add an Input layer for it or fix the blob name")
                raise DeployerError(f"{where}: reads blob {blob!r} before layer {later.name} produces it; "
                                    "ncnn needs layers in dependency order (no cycles)")
        for blob in layer.tops:
            produced[blob] = i
        _check_params(layer, where)
        for name, count, _ in weight_layout(layer):
            if count > MAX_ARRAY_ELEMENTS:
                raise DeployerError(f"{where}: {name} would hold {count:,} values, over the limit of "
                                    f"{MAX_ARRAY_ELEMENTS:,}; check its params")
    if not graph.input_names:
        raise DeployerError(f"{source}: the model has no Input layer")


def _check_params(layer: Layer, where: str) -> None:
    t = layer.type
    for pid, value in layer.params.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise DeployerError(f"{where}: param {pid} is {v}, not a finite number")
    if t in _CONV or t in _CONV_1D or t in _CONV_3D:
        kw = _int(layer, 1, 0, where)
        _positive(layer, where, {0: ("num_output", 0), 1: ("kernel_w", 0), 2: ("dilation_w", 1),
                                 3: ("stride_w", 1)})
        if t not in _CONV_1D:
            _positive(layer, where, {11: ("kernel_h", kw), 12: ("dilation_h", _int(layer, 2, 1, where)),
                                     13: ("stride_h", _int(layer, 3, 1, where))})
        if t in _CONV_3D:
            _positive(layer, where, {21: ("kernel_d", kw), 22: ("dilation_d", _int(layer, 2, 1, where)),
                                     23: ("stride_d", _int(layer, 3, 1, where))})
        if "DepthWise" in t:
            _positive(layer, where, {7: ("group", 1)})
            group, num_output = _int(layer, 7, 1, where), _int(layer, 0, 0, where)
            if num_output % group:
                raise DeployerError(f"{where}: num_output {num_output} is not a multiple of group {group}")
        dynamic_id = 28 if t.startswith("Deconvolution") else 19
        if not _int(layer, dynamic_id, 0, where) and t not in _CONV_3D:
            weights = _int(layer, 6, 0, where)
            per = _int(layer, 0, 0, where) * kw * (_int(layer, 11, kw, where) if t not in _CONV_1D else 1)
            if weights <= 0 or weights % per:
                raise DeployerError(f"{where}: weight_data_size (param 6) = {weights} is not a positive "
                                    f"multiple of num_output x kernel = {per}")
    elif t in _POOL:
        if not _int(layer, 4, 0, where):           # global pooling ignores kernel and stride
            kw = _int(layer, 1, 0, where)
            _positive(layer, where, {1: ("kernel_w", 0), 2: ("stride_w", 1)})
            if t != "Pooling1D":
                _positive(layer, where, {11: ("kernel_h", kw), 12: ("stride_h", _int(layer, 2, 1, where))})
    elif t == "InnerProduct":
        _positive(layer, where, {0: ("num_output", 0), 2: ("weight_data_size", 0)})
        if _int(layer, 2, 0, where) % _int(layer, 0, 0, where):
            raise DeployerError(f"{where}: weight_data_size (param 2) is not a multiple of num_output (param 0)")
    elif t == "Input":
        for pid in (0, 1, 2, 11):
            if _int(layer, pid, 0, where) < 0:
                raise DeployerError(f"{where}: shape param {pid} is negative")
    if t in _INT8_TERMS:
        term = _int(layer, 8, 0, where)
        if term not in _INT8_TERMS[t]:
            raise DeployerError(f"{where}: int8_scale_term (param 8) = {term} is not one of "
                                f"{', '.join(map(str, _INT8_TERMS[t]))}")


_SCALE_NAMES = ("weight_scales", "bottom_scales", "top_scales", "scale_in", "scale_out",
                "q_weight_scales", "k_weight_scales", "v_weight_scales", "out_weight_scales",
                "weight_xc_scales", "weight_hc_scales", "A_scales", "B_scales")


def check_weights(graph: Graph, weights: dict[str, list[Weight]], source: str, *,
                  allow_nonfinite: bool = False) -> None:
    """Finite float weights; int8 scales finite, activation scales positive, weight scales >= 0."""
    for layer in graph.layers:
        for w in weights.get(layer.name, []):
            if w.storage == "int8" or w.data.dtype.kind not in "f":
                continue
            data = np.asarray(w.data)
            finite = np.isfinite(data)
            if not finite.all() and not (allow_nonfinite and w.name not in _SCALE_NAMES):
                bad = float(data[~finite][0])
                raise DeployerError(f"{source}: layer {layer.name} ({layer.type}) {w.name} holds {bad} "
                                    f"at index {int(np.argmin(finite))}; weights must be finite numbers",
                                    hint="re-export the model (a NaN/Inf weight poisons every output)")
            if w.name in _SCALE_NAMES and data.size:
                floor_ok = data >= 0 if w.name.endswith("weight_scales") or w.name in ("A_scales", "B_scales") else data > 0
                if not floor_ok.all():
                    raise DeployerError(f"{source}: layer {layer.name} ({layer.type}) {w.name} holds "
                                        f"{float(data[~floor_ok][0])}; int8 scales must be positive",
                                        hint="regenerate the table and the int8 model")


# -------------------------------------------------------------------------------- input shapes

def parse_shape_option(text: str, flag: str = "--shape") -> list[int]:
    """A `--shape W,H,C` flag (run, profile, deploy, rollout): the board runner's own parser (the
    board reads the same text), then the documented limits; one line naming the flag."""
    from deployer.remote.runner import parse_shape

    try:
        dims = parse_shape(text)
    except ValueError as err:
        raise DeployerError(f"{flag}: {err}", hint="e.g. --shape 224,224,3") from None
    check_input_shape(tuple(dims), f"{flag} {text}")
    return dims


def check_input_shape(shape: tuple[int, ...], where: str) -> None:
    """One input's [w, h] or [w, h, c] (0 = taken from the image) against the documented limits."""
    for i, v in enumerate(shape):
        limit = MAX_INPUT_CHANNELS if i == 2 else MAX_INPUT_SIDE
        if not isinstance(v, numbers.Integral) or v < 0 or v > limit:
            raise DeployerError(f"{where}: {['width', 'height', 'channels', 'depth'][min(i, 3)]} {v} is out of "
                                f"range; each must be between 1 and {limit}")
    n = 1
    for v in shape:
        n *= max(int(v), 1)
    if n > MAX_INPUT_ELEMENTS:
        raise DeployerError(f"{where}: {list(shape)} is {n:,} values, over the limit of {MAX_INPUT_ELEMENTS:,}")


@dataclass
class _Blob:
    c: int | None
    h: int | None
    w: int | None
    elements: int | None          # known even when the layout is not (Permute, Reshape)


_ELEMENTWISE = frozenset("""
ReLU PReLU Sigmoid TanH Clip BatchNorm Scale Bias Dropout Softmax Swish HardSwish HardSigmoid Mish
GELU ELU SELU AbsVal BNLL Exp Log Power Threshold UnaryOp Erf CELU Shrink Softplus Noop Normalize
LRN MVN InstanceNorm GroupNorm LayerNorm Split Quantize Dequantize Requantize Cast
""".split())
_VOLUME = frozenset("Permute Flatten Reshape ShuffleChannel Squeeze ExpandDims PixelShuffle Reorg".split())


def infer_check(graph: Graph, inputs: dict[str, tuple[int, int, int]], model: str, shown: str,
                *, hint: bool = True) -> None:
    """Walk the graph with the given CHW inputs; refuse a shape a layer cannot take.

    Only contradictions are reported (an InnerProduct or a convolution that would read past its
    weights, a spatial size a layer cannot reduce); layer types not modelled here just end the
    knowledge about their outputs, so this never refuses a shape ncnn would accept.
    """
    blobs: dict[str, _Blob] = {}
    for name, (c, h, w) in inputs.items():
        blobs[name] = _Blob(c, h, w, c * h * w)
    for layer in graph.layers:
        if layer.type == "Input":
            continue
        ins = [blobs.get(b) for b in layer.bottoms]
        try:
            out = _infer_layer(layer, ins, model, shown)
        except DeployerError as err:
            takes = guess_input_shapes(graph) if hint else None
            if takes and len(takes) == 1:
                c, h, w = next(iter(takes.values()))
                raise DeployerError(err.message, hint=f"this model takes {w}x{h} (W x H), {c} channels") from None
            raise
        for top in layer.tops:
            blobs[top] = out if out is not None else _Blob(None, None, None, None)


def _infer_layer(layer: Layer, ins: list[_Blob | None], model: str, shown: str) -> _Blob | None:
    t, p = layer.type, layer.params
    x = ins[0] if ins else None
    if x is None:
        return None

    def fail(msg: str) -> None:
        raise DeployerError(f"input shape {shown} does not fit {model}: layer {layer.name} ({t}) {msg}")

    def g(pid: int, default: int) -> int:
        v = p.get(pid, default)
        return v if isinstance(v, int) else default

    if t in _ELEMENTWISE:
        return x
    if t in _VOLUME:
        return _Blob(None, None, None, x.elements)
    if t == "InnerProduct":
        if x.elements is not None:
            want = g(2, 0) // max(g(0, 1), 1)
            if x.elements != want and x.w != want:      # a 2-D input is one row per h
                fail(f"takes {want} values per input but would get {x.elements}")
        n = g(0, 0)
        return _Blob(None, None, n, n)
    if t in ("Convolution", "ConvolutionDepthWise"):
        if x.c is None or x.h is None or x.w is None or g(19, 0):
            return None
        num_output, kw = g(0, 0), g(1, 0)
        kh = g(11, kw)
        dw, dh = g(2, 1), g(12, g(2, 1))
        sw, sh = g(3, 1), g(13, g(3, 1))
        pl = g(4, 0)
        pr, pt = g(15, pl), g(14, pl)
        pb = g(16, pt)
        group = g(7, 1) if t == "ConvolutionDepthWise" else 1
        per_out = g(6, 0) // max(num_output * kw * kh, 1)
        cin = per_out * group
        if cin != x.c:
            fail(f"has weights for {cin} input channels but would get {x.c}")
        if pl < 0 or pt < 0:        # SAME padding modes: output = ceil(in / stride)
            return _Blob(num_output, -(-x.h // sh), -(-x.w // sw), None if x.h is None else
                         num_output * -(-x.h // sh) * -(-x.w // sw))
        oh = (x.h + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
        ow = (x.w + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
        if oh <= 0 or ow <= 0:
            fail(f"needs at least a {dw * (kw - 1) + 1}x{dh * (kh - 1) + 1} input but would get {x.w}x{x.h}")
        return _Blob(num_output, oh, ow, num_output * oh * ow)
    if t == "Pooling":
        if x.c is None or x.h is None or x.w is None:
            return None
        if g(4, 0):                  # global pooling: one value per channel
            return _Blob(None, None, x.c, x.c)
        if g(7, 0):                  # adaptive pooling to out_w (8) x out_h (18)
            ow = g(8, 0) or x.w
            oh = g(18, ow) or x.h
            return _Blob(x.c, oh, ow, x.c * oh * ow)
        kw = g(1, 0)
        kh, sw = g(11, kw), g(2, 1)
        sh = g(12, sw)
        pl = g(3, 0)
        pr, pt = g(14, pl), g(13, pl)
        pb = g(15, pt)
        mode = g(5, 0)
        if mode == 0:               # full padding: ncnn pads the bottom/right so the last window fits
            ow_full = (x.w + pl + pr - kw + sw - 1) // sw + 1
            oh_full = (x.h + pt + pb - kh + sh - 1) // sh + 1
            ow, oh = ow_full, oh_full
        elif mode == 1:
            ow, oh = (x.w + pl + pr - kw) // sw + 1, (x.h + pt + pb - kh) // sh + 1
        else:
            ow, oh = -(-x.w // sw), -(-x.h // sh)
        if ow <= 0 or oh <= 0:
            fail(f"needs at least a {kw}x{kh} input but would get {x.w}x{x.h}")
        return _Blob(x.c, oh, ow, x.c * oh * ow)
    if t in ("Eltwise", "BinaryOp"):
        if len(ins) == 1 or all(b is not None and (b.c, b.h, b.w) == (x.c, x.h, x.w) for b in ins):
            return x
        return None
    if t == "Concat" and g(0, 0) == 0 and all(b is not None and b.c is not None for b in ins):
        if all((b.h, b.w) == (x.h, x.w) and b.h is not None for b in ins):  # type: ignore[union-attr]
            c = sum(b.c for b in ins)  # type: ignore[union-attr,misc]
            return _Blob(c, x.h, x.w, c * x.h * x.w)  # type: ignore[operator]
    return None


def first_conv_channels(graph: Graph, blob: str) -> int | None:
    """Channels the first convolution after an input expects (weights / (outputs x kernel))."""
    for layer in graph.consumers(blob):
        if layer.type in ("Convolution", "ConvolutionDepthWise") and not layer.get(19, 0):
            try:
                num_output, kw = int(layer.get(0, 0)), int(layer.get(1, 0))
                kh = int(layer.get(11, kw))
                group = int(layer.get(7, 1)) if layer.type == "ConvolutionDepthWise" else 1
                return int(layer.get(6, 0)) // max(num_output * kw * kh, 1) * group
            except (TypeError, ValueError):
                return None
    return None


def declared_shape(graph: Graph, blob: str) -> tuple[int, int, int] | None:
    """The Input layer's own CHW (params 0=w 1=h 2=c) when it declares a full one."""
    lay = graph.producer(blob)
    if lay is None or lay.type != "Input":
        return None
    w, h, c = (lay.get(0, 0), lay.get(1, 0), lay.get(2, 0))
    if all(isinstance(v, int) and v > 0 for v in (w, h, c)):
        return int(c), int(h), int(w)
    return None


def guess_input_shapes(graph: Graph) -> dict[str, tuple[int, int, int]] | None:
    """A CHW per input that the model takes, for a smoke run when the user gave none.

    The Input layer's declared shape if any; else square sizes tried against `infer_check` (a
    fixed-size head such as MTCNN ONet's InnerProduct admits exactly one). None if unknown.
    """
    shapes: dict[str, tuple[int, int, int]] = {}
    for name in graph.input_names:
        declared = declared_shape(graph, name)
        if declared:
            shapes[name] = declared
            continue
        c = first_conv_channels(graph, name)
        if c is None:
            return None
        shapes[name] = (c, 0, 0)
    free = [n for n, s in shapes.items() if s[1] == 0]
    if not free:
        return shapes
    for side in (224, 48, 24, 12, 16, 32, 64, 96, 112, 128, 160, 192, 256, 320, 384, 416, 512, 640):
        trial = {n: (s[0], side, side) if n in free else s for n, s in shapes.items()}
        try:
            infer_check(graph, trial, "model", "x", hint=False)
        except DeployerError:
            continue
        return trial
    return None
