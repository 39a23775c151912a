"""The ncnn2int8 transform: int8 conv/dw/fc, fp16 elsewhere, requantize fusion, weight-only layers.

This mirrors ncnn's tools/quantize/ncnn2int8.cpp pass by pass so that, for the same model and
table, the .bin we write is the one ncnn2int8 writes. It departs from ncnn2int8 on purpose in one
place: a Convolution/ConvolutionDepthWise/InnerProduct whose table lines are missing stays float
*alone*. ncnn2int8 aborts the whole pass for that layer type when only the weight line is missing,
silently leaving every later layer of the type float; that is the documented mixed-precision trap
(ncnn-int8.md §1, §9.6) and we refuse to reproduce it. Every decision lands in an `Int8Report`
so the user sees which layers went int8 and why the others did not.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence, Union

import numpy as np

from deployer.errors import DeployerError
from deployer.ncnn.model import NcnnModel
from deployer.ncnn.modelbin import Weight, weight_layout
from deployer.ncnn.param import Graph, Layer
from deployer.quant.arith import quantize_to_int8
from deployer.quant.table import CalibrationTable

# Types that get static activation-calibrated int8 (table: `<name>` + `<name>_param_0`).
CALIBRATED_TYPES = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
# Types whose weights ncnn2int8 quantizes from table weight lines only (no activation line).
WEIGHT_ONLY_TYPES = ("RNN", "LSTM", "GRU", "Embed", "MultiHeadAttention")
# Types ncnn2int8 switches to dynamic int8 without any table entry.
DYNAMIC_TYPES = ("Gemm", "SDPA")

FloatStorage = Literal["fp16", "fp32"]


# ---------------------------------------------------------------------------------------------
# report


@dataclass
class LayerDecision:
    """What happened to one quantizable layer, in words a user can act on."""

    name: str
    type: str
    precision: str                 # "int8" | "fp32" (weights then stored as fp16/fp32 per option)
    reason: str                    # why, e.g. "table", "excluded", "no activation line 'conv3'"
    int8_scale_term: int = 0       # the param-8 value written (0 = not quantized)
    requantize_to: str | None = None   # consumer layer whose input scale was fused (101/102)
    weight_scales: int = 0         # how many weight scales were used
    bottom_scale: float | None = None
    top_scale: float | None = None


@dataclass
class Int8Report:
    layers: list[LayerDecision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    float_storage: str = "fp16"

    @property
    def quantized(self) -> list[str]:
        return [d.name for d in self.layers if d.precision == "int8"]

    @property
    def kept_float(self) -> list[str]:
        return [d.name for d in self.layers if d.precision != "int8"]

    def decision(self, name: str) -> LayerDecision:
        for d in self.layers:
            if d.name == name:
                return d
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "quantized": self.quantized,
            "kept_float": self.kept_float,
            "float_storage": self.float_storage,
            "layers": [asdict(d) for d in self.layers],
            "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------------------------------------
# table


@dataclass
class ScaleTable:
    """The two maps ncnn2int8 reads from a calibration table (keys split on `_param_`)."""

    blob: dict[str, list[float]]      # "<layer>" -> [bottom scale]
    weight: dict[str, list[float]]    # "<layer>_param_N" -> per-channel scales
    source: str = "<table>"


TableLike = Union["ScaleTable", CalibrationTable, Mapping[str, Sequence[float]], None]


def read_scale_table(path: str | os.PathLike) -> ScaleTable:
    """Read a calibration table with deployer.quant.table (ncnn2int8's rules, but loud)."""
    from deployer.quant.table import read_table

    return as_scale_table(read_table(path), source=str(path))


def as_scale_table(table: TableLike, source: str = "<table>") -> ScaleTable:
    """Accept a ScaleTable, a CalibrationTable, or a plain {key: scales} mapping."""
    if isinstance(table, ScaleTable):
        return table
    if table is None:
        return ScaleTable(blob={}, weight={}, source=source)
    if isinstance(table, CalibrationTable):
        entries: Mapping[str, Any] = {**table.activations, **table.weights}
    elif isinstance(table, Mapping):
        entries = table
    else:
        raise DeployerError(f"{source}: unsupported calibration table object {type(table).__name__}")
    blob: dict[str, list[float]] = {}
    weight: dict[str, list[float]] = {}
    for key, val in entries.items():
        vals = [float(v) for v in np.atleast_1d(np.asarray(val, dtype=np.float64))]
        (weight if "_param_" in key else blob)[str(key)] = vals
    return ScaleTable(blob=blob, weight=weight, source=source)


# ---------------------------------------------------------------------------------------------
# weight quantization (rounding rules: deployer.quant.arith)


def quantize_rows(weight: np.ndarray, scales: list[float] | np.ndarray, rows: int) -> np.ndarray:
    """Quantize a flat weight as `rows` equal rows, row r with scales[r] (per channel / group)."""
    w = np.asarray(weight, dtype=np.float32).reshape(rows, -1)
    s = np.asarray(scales, dtype=np.float32).reshape(rows, 1)
    return quantize_to_int8(w, s).reshape(-1)


def absmax_scales(weight: np.ndarray, rows: int) -> np.ndarray:
    """`127/absmax` per row, 1 for all-zero rows: the static rule of Gemm/MHA/Embed in ncnn2int8."""
    w = np.abs(np.asarray(weight, dtype=np.float32).reshape(rows, -1)).max(axis=1)
    out = np.ones(rows, dtype=np.float32)
    nz = w != 0
    out[nz] = np.float32(127.0) / w[nz]
    return out


# ---------------------------------------------------------------------------------------------
# the transform


def quantize_model(
    model: NcnnModel,
    table: TableLike,
    *,
    exclude: set[str] | frozenset[str] = frozenset(),
    float_storage: FloatStorage = "fp16",
    fuse: bool = True,
    pad_codes: dict[str, float] | None = None,
) -> tuple[NcnnModel, Int8Report]:
    """Return an int8 copy of `model` (an fp32 NcnnModel) and the report of what was done.

    `fuse=False` skips ncnn2int8's requantize fusion, so every int8 conv outputs fp32 and each of
    its blobs can be read back as float (same values up to one rounding of the requantized ones):
    what sequential calibration (deployer.quant.seqcal) needs to see the int8 network's activations.

    `float_storage="fp16"` stores every tagged weight that is not int8 as fp16, exactly like
    ncnn2int8; `"fp32"` keeps them fp32 so layers the pipeline deliberately left float are
    really fp32 on the board.

    `pad_codes` ({layer: code}): the `pad_value` (id 18) an int8 layer gets. ncnn pads an int8
    input after quantizing it and casts `pad_value` straight to a code, so a float pad value
    (deployer.quant.zeroshift's -c) must become its code for the layers that end up int8.
    """
    if float_storage not in ("fp16", "fp32"):
        raise DeployerError(f"float_storage must be 'fp16' or 'fp32', not {float_storage!r}")
    scales = as_scale_table(table)
    out = copy.deepcopy(model)
    graph = out.graph
    report = Int8Report(float_storage=float_storage)
    names = {layer.name for layer in graph.layers}

    unknown_excl = sorted(set(exclude) - names)
    if unknown_excl:
        report.warnings.append(f"--exclude names no layer: {', '.join(unknown_excl)}")
    _warn_unused_keys(scales, graph, report)

    int8_layers: dict[str, float] = {}   # layer name -> bottom scale, for fusion
    for layer in graph.layers:
        if layer.type in CALIBRATED_TYPES:
            dec = _quantize_calibrated(out, layer, scales, exclude)
            report.layers.append(dec)
            if dec.precision == "int8":
                int8_layers[layer.name] = dec.bottom_scale  # type: ignore[assignment]
        elif layer.type in WEIGHT_ONLY_TYPES:
            report.layers.append(_quantize_weight_only(out, layer, scales, exclude))
        elif layer.type in DYNAMIC_TYPES:
            report.layers.append(_quantize_dynamic(out, layer, exclude))

    for name, code in (pad_codes or {}).items():
        if name in int8_layers:
            graph.layer(name).params[18] = float(code)
    if fuse:
        _fuse_requantize(graph, int8_layers, out, report)
    _set_float_storage(out, float_storage)
    return out, report


def _warn_unused_keys(scales: ScaleTable, graph: Graph, report: Int8Report) -> None:
    by_name = {layer.name: layer for layer in graph.layers}
    missing = [k for k in scales.blob if k not in by_name]
    missing += [k for k in scales.weight if k.rsplit("_param_", 1)[0] not in by_name]
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        report.warnings.append(f"{scales.source}: {len(missing)} table key(s) name no layer of the model, ignored: {shown}")


def _weights_by_name(model: NcnnModel, layer: Layer) -> dict[str, Weight]:
    return {w.name: w for w in model.weights.get(layer.name, [])}


def _int_param(layer: Layer, pid: int, default: int) -> int:
    v = layer.get(pid, default)
    if isinstance(v, list):
        raise DeployerError(f"layer {layer.name}: param {pid} is an array, expected an integer")
    return int(v)


def _float_weight(model: NcnnModel, layer: Layer, name: str) -> np.ndarray:
    w = _weights_by_name(model, layer).get(name)
    if w is None:
        raise DeployerError(f"layer {layer.name} ({layer.type}): weight '{name}' not found in the model")
    if w.storage == "int8":
        raise DeployerError(f"layer {layer.name} ({layer.type}): weights are already int8", hint="quantize the fp32 model, not an int8 one")
    return np.asarray(w.data, dtype=np.float32).reshape(-1)


def _quantize_calibrated(model: NcnnModel, layer: Layer, scales: ScaleTable, exclude: set[str] | frozenset[str]) -> LayerDecision:
    name = layer.name
    wkey = f"{name}_param_0"
    dec = LayerDecision(name=name, type=layer.type, precision="fp32", reason="")
    has_blob, has_weight = name in scales.blob, wkey in scales.weight
    existing = _int_param(layer, 8, 0)
    if existing:
        wts = _weights_by_name(model, layer)
        if "weight" in wts and wts["weight"].storage == "int8":
            raise DeployerError(f"layer {name} ({layer.type}) is already int8 (8={existing})", hint="quantize the fp32 model, not an int8 one")
    if name in exclude:
        dec.reason = "excluded"
        return dec
    if layer.type != "InnerProduct" and _int_param(layer, 19, 0):
        dec.reason = "dynamic weight (19=1): nothing to quantize"
        return dec
    if not has_blob and not has_weight:
        dec.reason = "not in table"
        return dec
    if not has_blob:
        dec.reason = f"no activation line '{name}' in table"
        return dec
    if not has_weight:
        dec.reason = f"no weight line '{wkey}' in table"
        return dec

    num_output = _int_param(layer, 0, 0)
    group = _int_param(layer, 7, 1) if layer.type == "ConvolutionDepthWise" else 1
    rows = group if layer.type == "ConvolutionDepthWise" else num_output
    wscales = scales.weight[wkey]
    bscale = scales.blob[name]
    if len(wscales) != rows:
        what = "group" if layer.type == "ConvolutionDepthWise" else "num_output"
        raise DeployerError(
            f"{scales.source}: '{wkey}' has {len(wscales)} scales but layer {name} ({layer.type}) has {what}={rows}",
            hint="the table was made for a different model; regenerate it",
        )
    if len(bscale) != 1:
        raise DeployerError(f"{scales.source}: '{name}' has {len(bscale)} values, an activation line holds exactly 1")
    bad = [s for s in (*wscales, *bscale) if not math.isfinite(s)]
    if bad:
        raise DeployerError(f"{scales.source}: layer {name} has a non-finite scale ({bad[0]})", hint="an all-zero weight channel gives inf; fix the table")
    if min(wscales) < 0 or bscale[0] <= 0:
        raise DeployerError(f"{scales.source}: layer {name} has a scale <= 0 ({min(*wscales, *bscale)})",
                            hint="int8 scales are positive multipliers; regenerate the table")

    weight = _float_weight(model, layer, "weight")
    if rows <= 0 or weight.size % rows:
        raise DeployerError(f"layer {name} ({layer.type}): {weight.size} weights do not split into {rows} rows")
    q = quantize_rows(weight, wscales, rows)
    term = 1 if layer.type == "ConvolutionDepthWise" else 2
    _set_param_8(layer, term)
    _store_int8_weights(model, layer, q, np.asarray(wscales, np.float32), np.asarray(bscale, np.float32), None)
    dec.precision, dec.reason = "int8", "table"
    dec.int8_scale_term, dec.weight_scales, dec.bottom_scale = term, rows, float(np.float32(bscale[0]))
    return dec


def _set_param_8(layer: Layer, value: int) -> None:
    """Set id 8 where ModelWriter prints it: before 9/10/19 (activation, dynamic weight)."""
    if 8 in layer.params:
        layer.params[8] = value
        return
    items = list(layer.params.items())
    pos = next((i for i, (k, _) in enumerate(items) if k in (9, 10, 19, 31)), len(items))
    items.insert(pos, (8, value))
    layer.params.clear()
    layer.params.update(items)


def _make_weight(name: str, data: np.ndarray, storage: str, tagged: bool) -> Weight:
    return Weight(name=name, data=data, storage=storage, tagged=tagged)


def _store_int8_weights(model: NcnnModel, layer: Layer, q: np.ndarray, wscales: np.ndarray, bscale: np.ndarray, tscale: np.ndarray | None) -> None:
    """Rebuild the layer's weight list in its int8 load order (weight, bias, scales...)."""
    old = _weights_by_name(model, layer)
    new = [_make_weight("weight", q.astype(np.int8), "int8", True)]
    if "bias" in old:
        new.append(old["bias"])
    new.append(_make_weight("weight_scales", wscales.astype(np.float32), "raw", False))
    new.append(_make_weight("bottom_scales", bscale.astype(np.float32), "raw", False))
    if tscale is not None:
        new.append(_make_weight("top_scales", tscale.astype(np.float32), "raw", False))
    model.weights[layer.name] = _check_layout(layer, new)


def _check_layout(layer: Layer, weights: list[Weight]) -> list[Weight]:
    """Order `weights` as deployer.ncnn's load sequence for the (changed) layer says."""
    layout = weight_layout(layer)
    by_name = {w.name: w for w in weights}
    ordered = []
    for name, count, tagged in layout:
        w = by_name.get(name)
        if w is None or int(np.asarray(w.data).size) != int(count):
            got = "missing" if w is None else f"{np.asarray(w.data).size} values"
            raise DeployerError(f"layer {layer.name} ({layer.type}): int8 weight '{name}' expects {count} values, {got} (internal layout mismatch)")
        ordered.append(w)
    return ordered


# ---------------------------------------------------------------------------------------------
# weight-only (static table scales) and dynamic layers


def _quantize_weight_only(model: NcnnModel, layer: Layer, scales: ScaleTable, exclude: set[str] | frozenset[str]) -> LayerDecision:
    """RNN/LSTM/GRU/Embed/MultiHeadAttention: int8 weights with the table's `_param_N` scales."""
    name = layer.name
    dec = LayerDecision(name=name, type=layer.type, precision="fp32", reason="")
    if name in exclude:
        dec.reason = "excluded"
        return dec
    spec = _weight_only_spec(layer)
    keys = [f"{name}_param_{i}" for i in range(len(spec))]
    missing = [k for k in keys if k not in scales.weight]
    if missing:
        dec.reason = f"no weight line '{missing[0]}' in table"
        return dec
    old = _weights_by_name(model, layer)
    new_by_name: dict[str, Weight] = dict(old)
    extra: list[Weight] = []
    total = 0
    for key, (wname, rows, sname) in zip(keys, spec):
        s = scales.weight[key]
        if len(s) != rows:
            raise DeployerError(f"{scales.source}: '{key}' has {len(s)} scales but layer {name} ({layer.type}) needs {rows}", hint="regenerate the table for this model")
        w = _float_weight(model, layer, wname)
        new_by_name[wname] = _make_weight(wname, quantize_rows(w, s, rows), "int8", True)
        extra.append(_make_weight(sname, np.asarray(s, np.float32), "raw", False))
        total += rows
    _set_int8_term(layer)
    layout_names = [n for n, _, _ in weight_layout(layer)]
    for w in extra:
        new_by_name[w.name] = w
    missing_names = [n for n in layout_names if n not in new_by_name]
    if missing_names:
        raise DeployerError(f"layer {name} ({layer.type}): int8 layout needs '{missing_names[0]}' (internal layout mismatch)")
    model.weights[name] = [new_by_name[n] for n in layout_names]
    dec.precision, dec.reason, dec.int8_scale_term, dec.weight_scales = "int8", "table (weight-only)", 2, total
    return dec


def _weight_only_spec(layer: Layer) -> list[tuple[str, int, str]]:
    """(weight name, rows, scale name) per `_param_N` line, in N order, from the layer's params."""
    t = layer.type
    if t in ("RNN", "LSTM", "GRU"):
        num_output = _int_param(layer, 0, 0)
        dirs = 2 if _int_param(layer, 2, 0) == 2 else 1
        if t == "RNN":
            rows = num_output * dirs
        elif t == "GRU":
            rows = num_output * 3 * dirs
        else:
            hidden = _int_param(layer, 3, num_output)
            rows = hidden * 4 * dirs
        return [("weight_xc", rows, "weight_xc_scales"), ("weight_hc", rows, "weight_hc_scales")]
    if t == "Embed":
        return [("weight", 1, "weight_scales")]
    if t == "MultiHeadAttention":
        embed = _int_param(layer, 0, 0)
        return [("q_weight", embed, "q_weight_scales"), ("k_weight", embed, "k_weight_scales"),
                ("v_weight", embed, "v_weight_scales"), ("out_weight", 1, "out_weight_scales")]
    raise AssertionError(t)


def _set_int8_term(layer: Layer) -> None:
    """Weight-only and dynamic layers: int8_scale_term / quantize_term = 2 (id 8 for RNNs, else 18)."""
    pid = 8 if layer.type in ("RNN", "LSTM", "GRU") else 18
    layer.params[pid] = 2


def _quantize_dynamic(model: NcnnModel, layer: Layer, exclude: set[str] | frozenset[str]) -> LayerDecision:
    """Gemm constant A/B get `127/absmax` weights (A per row, B one scale); SDPA only flips the flag."""
    name = layer.name
    dec = LayerDecision(name=name, type=layer.type, precision="fp32", reason="")
    if name in exclude:
        dec.reason = "excluded"
        return dec
    if layer.type == "Gemm":
        old = _weights_by_name(model, layer)
        new_by_name = dict(old)
        M, N, K = _int_param(layer, 7, 0), _int_param(layer, 8, 0), _int_param(layer, 9, 0)
        if _int_param(layer, 4, 0):
            a = _float_weight(model, layer, "A")
            if _int_param(layer, 2, 0):  # transA=1 stores K rows of M; make it M rows of K
                a = a.reshape(K, M).T.reshape(-1)
                layer.params[2] = 0
            s = absmax_scales(a, M)
            new_by_name["A"] = _make_weight("A", quantize_rows(a, s, M), "int8", True)
            new_by_name["A_scales"] = _make_weight("A_scales", s, "raw", False)
            dec.weight_scales += M
        if _int_param(layer, 5, 0):
            b = _float_weight(model, layer, "B")
            if not _int_param(layer, 3, 0):  # transB=0 stores K rows of N; make it N rows of K
                b = b.reshape(K, N).T.reshape(-1)
                layer.params[3] = 1
            s = absmax_scales(b, 1)
            new_by_name["B"] = _make_weight("B", quantize_rows(b, s, 1), "int8", True)
            new_by_name["B_scales"] = _make_weight("B_scales", s, "raw", False)
            dec.weight_scales += 1
        _set_int8_term(layer)
        try:
            model.weights[name] = [new_by_name[n] for n, _, _ in weight_layout(layer)]
        except KeyError as err:
            raise DeployerError(f"layer {name} (Gemm): int8 layout needs {err} (internal layout mismatch)") from None
    else:
        _set_int8_term(layer)
    dec.precision, dec.reason, dec.int8_scale_term = "int8", "dynamic (no table needed)", 2
    return dec


# ---------------------------------------------------------------------------------------------
# requantize fusion


_CONV = ("Convolution", "ConvolutionDepthWise")


def _fuse_requantize(graph: Graph, int8_layers: dict[str, float], model: NcnnModel, report: Int8Report) -> None:
    """ncnn2int8's fuse_requantize: conv/dw -> conv/dw, directly or through an all-conv Split.

    The producer then requantizes its output with the consumer's bottom scale (`8 += 100`,
    one extra fp32 `top_blob_int8_scales`). For a Split the consumer of `tops[0]` provides the
    scale, as in ncnn.
    """
    layers = graph.layers
    fused: dict[str, tuple[str, float]] = {}

    def single_conv_consumer(start: int, blob: str) -> int | None:
        for j in range(start, len(layers)):
            lj = layers[j]
            if lj.type in _CONV and len(lj.bottoms) == 1 and lj.bottoms[0] == blob:
                return j
        return None

    for i, li in enumerate(layers):
        if li.type not in _CONV or not li.tops:
            continue
        j = single_conv_consumer(i + 1, li.tops[0])
        if j is None:
            continue
        lj = layers[j]
        if li.name in int8_layers and lj.name in int8_layers:
            fused[li.name] = (lj.name, int8_layers[lj.name])

    for i, li in enumerate(layers):
        if li.type not in _CONV or not li.tops:
            continue
        split_idx = next((j for j in range(i + 1, len(layers)) if layers[j].type == "Split"
                          and len(layers[j].bottoms) == 1 and layers[j].bottoms[0] == li.tops[0]), None)
        if split_idx is None:
            continue
        split = layers[split_idx]
        all_conv = True
        for top in split.tops:
            k = single_conv_consumer(split_idx + 1, top)
            if k is None or layers[k].name not in int8_layers:
                all_conv = False
                break
        if not all_conv or not split.tops:
            continue
        first = single_conv_consumer(split_idx + 1, split.tops[0])
        consumer = layers[first]  # type: ignore[index]
        if li.name in int8_layers and li.name not in fused:
            fused[li.name] = (consumer.name, int8_layers[consumer.name])

    for name, (consumer, scale) in fused.items():
        layer = graph.layer(name)
        term = _int_param(layer, 8, 0) + 100
        _set_param_8(layer, term)
        wts = _weights_by_name(model, layer)
        _store_int8_weights(
            model, layer, np.asarray(wts["weight"].data), np.asarray(wts["weight_scales"].data, np.float32),
            np.asarray(wts["bottom_scales"].data, np.float32), np.asarray([scale], np.float32),
        )
        dec = report.decision(name)
        dec.int8_scale_term, dec.requantize_to, dec.top_scale = term, consumer, float(np.float32(scale))


def _set_float_storage(model: NcnnModel, float_storage: FloatStorage) -> None:
    """Re-encode every float weight the way ModelWriter (storage_type=1) does.

    ncnn decodes fp16/codebook weights to fp32 at load and the writer encodes all tagged non-int8
    weights afresh as fp16 (zero padding, not pnnx's), and flushes fp32 denormals (|v| < 1e-30)
    to 0 in everything it writes as fp32. Fresh Weight objects make sure no cached encoding of
    the old storage is reused.
    """
    for lname, weights in model.weights.items():
        new = []
        for w in weights:
            if w.tagged and w.storage in ("fp32", "fp16", "scaled", "codebook"):
                data = np.asarray(w.data, dtype=np.float32)
                w = _make_weight(w.name, _flush_denormals(data) if float_storage == "fp32" else data, float_storage, True)
            elif not w.tagged:
                w = _make_weight(w.name, _flush_denormals(np.asarray(w.data, dtype=np.float32)), "raw", False)
            new.append(w)
        model.weights[lname] = new


def _flush_denormals(data: np.ndarray) -> np.ndarray:
    tiny = (np.abs(data.astype(np.float64)) < 1e-30) & (data != 0)
    return np.where(tiny, np.float32(0), data).astype(np.float32) if tiny.any() else data


# ---------------------------------------------------------------------------------------------
# files


def ncnn2int8(
    inparam: str | os.PathLike,
    inbin: str | os.PathLike,
    outparam: str | os.PathLike,
    outbin: str | os.PathLike,
    table_path: str | os.PathLike | None = None,
    *,
    exclude: set[str] | frozenset[str] = frozenset(),
    float_storage: FloatStorage = "fp16",
    allow_nonfinite: bool = False,
) -> Int8Report:
    """The file-to-file drop-in. Both outputs are written atomically (NcnnModel.save).

    `allow_nonfinite`: accept NaN/Inf weights (byte-parity tests against ncnn's tool only)."""
    for p, what in ((outparam, "output .param"), (outbin, "output .bin")):
        if os.path.abspath(p) in (os.path.abspath(inparam), os.path.abspath(inbin)):
            raise DeployerError(f"{p}: {what} would overwrite an input file", hint="choose a different output path")
    scales = read_scale_table(table_path) if table_path is not None else ScaleTable(blob={}, weight={}, source="<no table>")
    model = NcnnModel.load(inparam, inbin, allow_nonfinite=allow_nonfinite)
    if table_path is None:
        needs = [layer.name for layer in model.graph.layers if layer.type in WEIGHT_ONLY_TYPES]
        if needs:
            raise DeployerError(f"{inparam}: layer {needs[0]} needs static weight scales: a calibration table is required", hint="run `deployer ncnn2table` first")
    qmodel, report = quantize_model(model, scales, exclude=exclude, float_storage=float_storage)
    qmodel.save(outparam, outbin)
    return report
