"""A numpy re-implementation of ncnn's reference int8 maths, layer by layer.

Why: the int8 files we write must *mean* what we think they mean. Tests run a model through this
simulation and through the stock ncnn wheel and expect the same numbers; the check command uses it
to explain which layer loses accuracy. The int8 layers follow ncnn's reference kernels
(src/layer/convolution.cpp forward_int8 and friends): quantize the input with the bottom scale
(round half away from zero, clamp +-127), accumulate in integers, `acc * (1/(s_in*s_w)) + bias`
in float32, fused activation, and for `int8_scale_term > 100` requantize with the top scale so the
next conv receives int8 codes it does not quantize again. Every other layer runs in fp32.

Blobs use ncnn's dimension order: 3-D (c, h, w), 2-D (h, w), 1-D (w).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from deployer.errors import DeployerError
from deployer.quant.arith import ConvGeometry, activation, layer_activation, quantize_to_int8

FLT_MAX = np.float32(3.4028234663852886e38)


@dataclass
class Int8Blob:
    """A requantized blob: int8 codes as ncnn passes them between fused convs."""

    codes: np.ndarray
    scale: float   # the producer's top scale: value ~= codes / scale

    def dequantize(self) -> np.ndarray:
        return (self.codes.astype(np.float32) / np.float32(self.scale)).astype(np.float32)


Blob = np.ndarray | Int8Blob


@dataclass
class SimResult:
    blobs: dict[str, np.ndarray] = field(default_factory=dict)   # every blob, float (int8 dequantized)
    int8: dict[str, Int8Blob] = field(default_factory=dict)      # the requantized ones, raw

    def __getitem__(self, name: str) -> np.ndarray:
        return self.blobs[name]


def simulate(model: Any, inputs: dict[str, np.ndarray]) -> SimResult:
    """Run `model` (NcnnModel, fp32 or int8) on `inputs` {input blob: array in ncnn order}."""
    values: dict[str, Blob] = {}
    result = SimResult()
    for layer in model.graph.layers:
        weights = {w.name: w for w in model.weights.get(layer.name, [])}
        if layer.type == "Input":
            for top in layer.tops:
                if top not in inputs:
                    raise DeployerError(f"simulate: no value for input blob '{top}'")
                values[top] = np.asarray(inputs[top], dtype=np.float32)
            continue
        fn = _LAYERS.get(layer.type)
        if fn is None:
            raise DeployerError(f"simulate: layer {layer.name} has type {layer.type}, which the numpy simulation does not implement")
        try:
            bottoms = [values[b] for b in layer.bottoms]
        except KeyError as err:
            raise DeployerError(f"simulate: layer {layer.name} reads blob {err} before anything produced it") from None
        for b, v in zip(layer.bottoms, bottoms):
            if isinstance(v, Int8Blob) and layer.type not in ("Convolution", "ConvolutionDepthWise", "Split"):
                raise DeployerError(f"simulate: layer {layer.name} ({layer.type}) receives int8 blob '{b}'; only convs accept int8 input")
        outs = fn(layer, bottoms, weights)
        for top, v in zip(layer.tops, outs):
            values[top] = v
    for name, v in values.items():
        if isinstance(v, Int8Blob):
            result.int8[name] = v
            result.blobs[name] = v.dequantize()
        else:
            result.blobs[name] = v
    return result


# --------------------------------------------------------------------------------------------- helpers


def _p(layer: Any, pid: int, default: Any) -> Any:
    return layer.get(pid, default)


def _w(weights: dict[str, Any], name: str) -> np.ndarray | None:
    w = weights.get(name)
    return None if w is None else np.asarray(w.data).reshape(-1)


def _activation(x: np.ndarray, layer: Any) -> np.ndarray:
    kind, params = layer_activation(layer)
    return activation(x, kind, params, where=f"simulate: layer {layer.name}")


def _windows(xp: np.ndarray, kh: int, kw: int, dh: int, dw: int, sh: int, sw: int) -> np.ndarray:
    """(C, OH, OW, kh, kw) views of a padded (C, H, W) array (pooling: no ConvGeometry params)."""
    return ConvGeometry(kh, kw, dh, dw, sh, sw, 0, 0, 0, 0).windows(xp)


def _grouped_conv(xp: np.ndarray, wt: np.ndarray, group: int, geom: tuple[int, ...], dtype: Any) -> np.ndarray:
    kh, kw, dh, dw, sh, sw = geom
    c = xp.shape[0]
    o = wt.shape[0]
    win = _windows(xp, kh, kw, dh, dw, sh, sw)
    oh, ow = win.shape[1], win.shape[2]
    cg, og = c // group, o // group
    out = np.empty((o, oh, ow), dtype=dtype)
    for g in range(group):
        cols = win[g * cg:(g + 1) * cg].transpose(1, 2, 0, 3, 4).reshape(oh * ow, cg * kh * kw)
        wg = wt[g * og:(g + 1) * og].reshape(og, cg * kh * kw)
        out[g * og:(g + 1) * og] = (cols.astype(dtype) @ wg.astype(dtype).T).T.reshape(og, oh, ow)
    return out


def _dequant_scales(wscales: np.ndarray, s_in: np.float32) -> np.ndarray:
    """scale_in = 1/(s_in*s_w) in float32, 0 where the weight scale is 0 (ncnn's guard)."""
    wscales = wscales.astype(np.float32)
    out = np.zeros_like(wscales)
    nz = wscales != 0
    out[nz] = np.float32(1) / (s_in * wscales[nz])
    return out


def _int8_output(layer: Any, acc: np.ndarray, weights: dict[str, Any], wscale_per_out: np.ndarray, s_in: np.float32) -> Blob:
    """acc (int) -> float32 dequant + bias + activation, then requantize if 8 > 100."""
    scale_in = _dequant_scales(wscale_per_out, s_in)
    shape = (-1,) + (1,) * (acc.ndim - 1)
    y = acc.astype(np.float32) * scale_in.reshape(shape)
    bias = _w(weights, "bias")
    if bias is not None and bias.size:
        y = (y + bias.astype(np.float32).reshape(shape)).astype(np.float32)
    y = _activation(y, layer)
    if int(_p(layer, 8, 0)) > 100:
        s_out = np.float32(_w(weights, "top_scales")[0])  # type: ignore[index]
        return Int8Blob(codes=quantize_to_int8(y, s_out), scale=float(s_out))
    return y


def _input_codes(x: Blob, s_in: np.float32) -> np.ndarray:
    if isinstance(x, Int8Blob):
        return x.codes
    return quantize_to_int8(x, s_in)


# --------------------------------------------------------------------------------------------- layers


def _convolution(layer: Any, bottoms: list[Blob], weights: dict[str, Any], depthwise: bool = False) -> list[Blob]:
    x = bottoms[0]
    cg = ConvGeometry.of(layer)
    geom = (cg.kh, cg.kw, cg.dh, cg.dw, cg.sh, cg.sw)
    kh, kw = cg.kh, cg.kw
    num_output = int(_p(layer, 0, 0))
    group = int(_p(layer, 7, 1)) if depthwise else 1
    term = int(_p(layer, 8, 0))
    raw = x.codes if isinstance(x, Int8Blob) else x
    if raw.ndim != 3:
        raise DeployerError(f"simulate: layer {layer.name} expects a 3-D input, got shape {raw.shape}")
    c, h, w = raw.shape
    top, bottom, left, right = cg.pads(h, w)
    wt = _w(weights, "weight").reshape(num_output, c // group, kh, kw)  # type: ignore[union-attr]
    if term:
        s_in = np.float32(_w(weights, "bottom_scales")[0])  # type: ignore[index]
        codes = _input_codes(x, s_in)
        xp = np.pad(codes, ((0, 0), (top, bottom), (left, right)))
        acc = np.rint(_grouped_conv(xp, wt.astype(np.float64), group, geom, np.float64)).astype(np.int64)
        ws = _w(weights, "weight_scales").astype(np.float32)  # type: ignore[union-attr]
        if depthwise and ws.size == group and group != num_output:
            ws = np.repeat(ws, num_output // group)
        if ws.size == 1 and num_output != 1:
            ws = np.repeat(ws, num_output)
        return [_int8_output(layer, acc, weights, ws, s_in)]
    if isinstance(x, Int8Blob):
        raise DeployerError(f"simulate: float layer {layer.name} got an int8 input")
    pad_value = np.float32(_p(layer, 18, 0.0))
    xp = np.pad(x.astype(np.float32), ((0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    y = _grouped_conv(xp, wt.astype(np.float32), group, geom, np.float64).astype(np.float32)
    bias = _w(weights, "bias")
    if bias is not None and bias.size:
        y = (y + bias.astype(np.float32)[:, None, None]).astype(np.float32)
    return [_activation(y, layer)]


def _convolution_dw(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    return _convolution(layer, bottoms, weights, depthwise=True)


def _innerproduct(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0]
    assert isinstance(x, np.ndarray)
    num_output = int(_p(layer, 0, 0))
    flat = x.reshape(-1)
    wt = _w(weights, "weight").reshape(num_output, -1)  # type: ignore[union-attr]
    if x.ndim == 2 and wt.shape[1] == x.shape[1] and x.shape[0] > 1:
        raise DeployerError(f"simulate: layer {layer.name}: 2-D (batched) InnerProduct input is not simulated")
    if int(_p(layer, 8, 0)):
        s_in = np.float32(_w(weights, "bottom_scales")[0])  # type: ignore[index]
        codes = quantize_to_int8(flat, s_in).astype(np.float64)
        acc = np.rint(wt.astype(np.float64) @ codes).astype(np.int64)
        ws = _w(weights, "weight_scales").astype(np.float32)  # type: ignore[union-attr]
        return [_int8_output(layer, acc, weights, ws, s_in)]
    y = (wt.astype(np.float64) @ flat.astype(np.float64)).astype(np.float32)
    bias = _w(weights, "bias")
    if bias is not None and bias.size:
        y = (y + bias.astype(np.float32)).astype(np.float32)
    return [_activation(y, layer)]


def _deconvolution(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0]
    assert isinstance(x, np.ndarray)
    cg = ConvGeometry.of(layer)
    kh, kw, dh, dw, sh, sw = cg.kh, cg.kw, cg.dh, cg.dw, cg.sh, cg.sw
    num_output = int(_p(layer, 0, 0))
    c, h, w = x.shape
    wt = _w(weights, "weight").reshape(num_output, c, kh, kw).astype(np.float64)  # type: ignore[union-attr]
    keh, kew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    oh, ow = (h - 1) * sh + keh, (w - 1) * sw + kew
    full = np.zeros((num_output, oh, ow), dtype=np.float64)
    for ki in range(kh):
        for kj in range(kw):
            contrib = np.einsum("oc,chw->ohw", wt[:, :, ki, kj], x.astype(np.float64))
            full[:, ki * dh:ki * dh + (h - 1) * sh + 1:sh, kj * dw:kj * dw + (w - 1) * sw + 1:sw] += contrib
    bias = _w(weights, "bias")
    if bias is not None and bias.size:
        full += bias.astype(np.float64)[:, None, None]
    y = _activation(full.astype(np.float32), layer)
    opr = int(_p(layer, 18, 0))
    opb = int(_p(layer, 19, opr))
    if opr or opb:
        y = np.pad(y, ((0, 0), (0, opb), (0, opr)))
    pl = int(_p(layer, 4, 0))
    pt = int(_p(layer, 14, pl))
    pr = int(_p(layer, 15, pl))
    pb = int(_p(layer, 16, pt))
    if min(pl, pt, pr, pb) < 0:
        raise DeployerError(f"simulate: layer {layer.name}: automatic Deconvolution padding is not simulated")
    return [np.ascontiguousarray(y[:, pt:y.shape[1] - pb, pl:y.shape[2] - pr])]


def _pooling(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0]
    assert isinstance(x, np.ndarray)
    ptype = int(_p(layer, 0, 0))
    if int(_p(layer, 4, 0)):
        y = x.reshape(x.shape[0], -1)
        return [(y.max(axis=1) if ptype == 0 else y.astype(np.float64).mean(axis=1)).astype(np.float32)]
    if int(_p(layer, 7, 0)):
        raise DeployerError(f"simulate: layer {layer.name}: adaptive pooling is not simulated")
    kw = int(_p(layer, 1, 0))
    kh = int(_p(layer, 11, kw))
    sw = int(_p(layer, 2, 1))
    sh = int(_p(layer, 12, sw))
    pl = int(_p(layer, 3, 0))
    pr = int(_p(layer, 14, pl))
    pt = int(_p(layer, 13, pl))
    pb = int(_p(layer, 15, pt))
    mode = int(_p(layer, 5, 0))
    include_pad = int(_p(layer, 6, 0))
    c, h, w = x.shape
    tail_w = tail_h = 0
    if mode == 0:
        wt_ = (w + pl + pr - kw) % sw
        ht_ = (h + pt + pb - kh) % sh
        tail_w = sw - wt_ if wt_ else 0
        tail_h = sh - ht_ if ht_ else 0
    elif mode in (2, 3):
        wpad = kw + (w - 1) // sw * sw - w
        hpad = kh + (h - 1) // sh * sh - h
        if mode == 2:
            pl, pr, pt, pb = wpad // 2, wpad - wpad // 2, hpad // 2, hpad - hpad // 2
        else:
            pl, pr, pt, pb = wpad - wpad // 2, wpad // 2, hpad - hpad // 2, hpad // 2
    fill = -FLT_MAX if ptype == 0 else np.float32(0)
    xp = np.pad(x.astype(np.float32), ((0, 0), (pt, pb + tail_h), (pl, pr + tail_w)), constant_values=fill)
    win = _windows(xp, kh, kw, 1, 1, sh, sw)
    if ptype == 0:
        return [win.max(axis=(3, 4)).astype(np.float32)]
    sums = win.astype(np.float64).sum(axis=(3, 4))
    if include_pad:
        return [(sums / (kh * kw)).astype(np.float32)]
    mask = np.zeros(xp.shape[1:], dtype=np.float64)
    mask[pt:pt + h, pl:pl + w] = 1
    area = _windows(mask[None], kh, kw, 1, 1, sh, sw)[0].sum(axis=(2, 3))
    return [(sums / area[None]).astype(np.float32)]


def _relu(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0]
    slope = np.float32(_p(layer, 0, 0.0))
    return [np.where(x < 0, x * slope, x).astype(np.float32)]  # type: ignore[operator]


def _clip(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    return [np.clip(bottoms[0], np.float32(_p(layer, 0, -FLT_MAX)), np.float32(_p(layer, 1, FLT_MAX))).astype(np.float32)]


def _prelu(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0]
    assert isinstance(x, np.ndarray)
    slope = _w(weights, "slope")
    if slope is None:
        slope = np.asarray(next(iter(weights.values())).data).reshape(-1)
    slope = slope.astype(np.float32)
    if slope.size == 1:
        s = slope[0]
    elif x.ndim == 1:
        s = slope
    else:
        s = slope.reshape((-1,) + (1,) * (x.ndim - 1))
    return [np.where(x < 0, x * s, x).astype(np.float32)]


def _sigmoid(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0].astype(np.float32)  # type: ignore[union-attr]
    return [(np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)]


def _tanh(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    return [np.tanh(bottoms[0]).astype(np.float32)]


def _swish(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0].astype(np.float32)  # type: ignore[union-attr]
    return [(x / (np.float32(1) + np.exp(-x))).astype(np.float32)]


def _split(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    return [bottoms[0]] * len(layer.tops)


def _identity(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    return [bottoms[0]]


def _flatten(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    return [np.ascontiguousarray(bottoms[0]).reshape(-1)]  # type: ignore[arg-type]


def _reshape(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = np.ascontiguousarray(bottoms[0])  # type: ignore[arg-type]
    w, h, d, c = (int(_p(layer, k, -233)) for k in (0, 1, 11, 2))
    ncnn_in = list(reversed(x.shape))  # w, h, c order
    dims = [w] if h == -233 else [w, h] if c == -233 and d == -233 else [w, h, c] if d == -233 else [w, h, d, c]
    dims = [ncnn_in[i] if v == 0 and i < len(ncnn_in) else v for i, v in enumerate(dims)]
    return [x.reshape(tuple(reversed(dims)))]


def _permute(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0]
    assert isinstance(x, np.ndarray)
    t = int(_p(layer, 0, 0))
    if x.ndim == 2:
        return [np.ascontiguousarray(x.T if t == 1 else x)]
    if x.ndim != 3:
        raise DeployerError(f"simulate: layer {layer.name}: Permute of a {x.ndim}-D blob is not simulated")
    orders = ["whc", "hwc", "wch", "cwh", "hcw", "chw"]   # output w, h, c drawn from input dims
    axis = {"c": 0, "h": 1, "w": 2}
    o = orders[t]
    return [np.ascontiguousarray(x.transpose(axis[o[2]], axis[o[1]], axis[o[0]]))]


def _softmax(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = bottoms[0].astype(np.float32)  # type: ignore[union-attr]
    axis = int(_p(layer, 0, 0))
    axis = axis + x.ndim if axis < 0 else axis
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [(e / e.sum(axis=axis, keepdims=True)).astype(np.float32)]


def _eltwise(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    op = int(_p(layer, 0, 1))
    coeffs = _p(layer, 1, []) or []
    xs = [np.asarray(b, dtype=np.float32) for b in bottoms]
    if op == 0:
        y = xs[0]
        for v in xs[1:]:
            y = y * v
    elif op == 1:
        cs = [np.float32(c) for c in coeffs] if coeffs else [np.float32(1)] * len(xs)
        y = xs[0] * cs[0]
        for v, cf in zip(xs[1:], cs[1:]):
            y = y + v * cf
    else:
        y = xs[0]
        for v in xs[1:]:
            y = np.maximum(y, v)
    return [y.astype(np.float32)]


def _broadcast(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ncnn broadcasts a 1-D per-channel operand over (c, h, w); otherwise numpy rules."""
    if b.ndim == 1 and a.ndim == 3 and b.size == a.shape[0] and b.size != a.shape[2]:
        b = b.reshape(-1, 1, 1)
    if a.ndim == 1 and b.ndim == 3 and a.size == b.shape[0] and a.size != b.shape[2]:
        a = a.reshape(-1, 1, 1)
    return a, b


_BINARY: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    0: np.add, 1: np.subtract, 2: np.multiply, 3: np.divide, 4: np.maximum, 5: np.minimum,
    6: np.power, 7: lambda a, b: b - a, 8: lambda a, b: b / a, 9: lambda a, b: np.power(b, a),
}


def _binaryop(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    op = int(_p(layer, 0, 0))
    fn = _BINARY.get(op)
    if fn is None:
        raise DeployerError(f"simulate: layer {layer.name}: BinaryOp op_type {op} not simulated")
    a = np.asarray(bottoms[0], dtype=np.float32)
    if int(_p(layer, 1, 0)):
        b = np.asarray(np.float32(_p(layer, 2, 0.0)))
    else:
        b = np.asarray(bottoms[1], dtype=np.float32)
        a, b = _broadcast(a, b)
    return [fn(a, b).astype(np.float32)]


def _concat(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    xs = [np.asarray(b, dtype=np.float32) for b in bottoms]
    axis = int(_p(layer, 0, 0))
    axis = axis + xs[0].ndim if axis < 0 else axis
    return [np.concatenate(xs, axis=axis)]


def _batchnorm(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    x = np.asarray(bottoms[0], dtype=np.float32)
    eps = np.float32(_p(layer, 1, 0.0))
    slope, mean, var, bias = (_w(weights, n) for n in ("slope", "mean", "var", "bias"))
    a = bias - slope * mean / np.sqrt(var + eps)  # type: ignore[operator]
    b = slope / np.sqrt(var + eps)  # type: ignore[operator]
    shape = (-1,) + (1,) * (x.ndim - 1)
    return [(x * b.reshape(shape) + a.reshape(shape)).astype(np.float32)]


def _memorydata(layer: Any, bottoms: list[Blob], weights: dict[str, Any]) -> list[Blob]:
    w, h, d, c = (int(_p(layer, k, 0)) for k in (0, 1, 11, 2))
    data = np.asarray(next(iter(weights.values())).data, dtype=np.float32)
    shape = [v for v in (c, d, h, w) if v]
    return [data.reshape(shape)]


_LAYERS: dict[str, Callable[[Any, list[Blob], dict[str, Any]], list[Blob]]] = {
    "Convolution": _convolution,
    "ConvolutionDepthWise": _convolution_dw,
    "InnerProduct": _innerproduct,
    "Deconvolution": _deconvolution,
    "Pooling": _pooling,
    "ReLU": _relu,
    "Clip": _clip,
    "PReLU": _prelu,
    "Sigmoid": _sigmoid,
    "TanH": _tanh,
    "Swish": _swish,
    "Split": _split,
    "Dropout": _identity,
    "Noop": _identity,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "Softmax": _softmax,
    "Eltwise": _eltwise,
    "BinaryOp": _binaryop,
    "Concat": _concat,
    "BatchNorm": _batchnorm,
    "MemoryData": _memorydata,
}

SUPPORTED_TYPES = frozenset(_LAYERS) | {"Input"}


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a-b|| / ||b||: how far a simulation is from a reference, scale-free."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    denom = float(np.linalg.norm(b)) or 1.0
    return float(np.linalg.norm(a - b)) / denom


__all__ = ["Int8Blob", "SimResult", "simulate", "relative_error", "SUPPORTED_TYPES"]
