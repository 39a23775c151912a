"""Per-layer timing report from the native runner's `layers` line (benchmark flavour, --layers).

Per layer (named as in the .param) and per op type: median ms over the timed iterations and share
of the summed per-layer medians. Timing every layer adds overhead, so whole-network figures should
come from the normal build and shares from this one; the report carries both the per-layer sum and
the timed iterations' median so the overhead is visible.

`compare` joins an int8 and an fp32 report by layer name: where int8 pays off and where it does not
(requantize/dequantize glue shows up as int8-only layers).
"""

from __future__ import annotations

from typing import Any

from deployer.remote.runner import percentile


def _median(values: list[float]) -> float:
    return percentile(sorted(values), 50.0) if values else 0.0


def report(line: dict[str, Any], network_median_ms: float | None = None) -> dict[str, Any]:
    """{"layers": [...], "types": [...], "sum_median_ms", "network_median_ms", "iterations"}."""
    layers = []
    for entry in line.get("layers") or []:
        ms = [float(v) for v in entry.get("ms") or []]
        layers.append({"index": int(entry.get("index", len(layers))), "name": str(entry.get("name", "")),
                       "type": str(entry.get("type", "")), "median_ms": _median(ms), "count": len(ms)})
    total = sum(layer["median_ms"] for layer in layers)
    iterations = max((layer["count"] for layer in layers), default=0)
    for layer in layers:
        layer["share"] = layer["median_ms"] / total if total > 0 else 0.0
    types: dict[str, dict[str, Any]] = {}
    for layer in layers:
        t = types.setdefault(layer["type"], {"type": layer["type"], "layers": 0, "median_ms": 0.0})
        t["layers"] += 1
        t["median_ms"] += layer["median_ms"]
    by_type = sorted(types.values(), key=lambda t: -t["median_ms"])
    for t in by_type:
        t["share"] = t["median_ms"] / total if total > 0 else 0.0
    # keyed by the names in the .param (layers) and by op type (types), in network / cost order
    return {"layers": {layer.pop("name"): layer for layer in layers},
            "types": {t.pop("type"): t for t in by_type}, "sum_median_ms": total,
            "network_median_ms": network_median_ms, "iterations": iterations}


def compare(int8: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """Per layer name: int8 ms, fp32 ms, speed-up (fp32/int8); per type the same; layers only one side has."""
    a, b = int8.get("layers") or {}, fp32.get("layers") or {}
    rows = {}
    for name, layer in a.items():
        other = b.get(name)
        f = other["median_ms"] if other else None
        rows[name] = {"type": layer["type"], "int8_ms": layer["median_ms"], "fp32_ms": f,
                      "speedup": (f / layer["median_ms"]) if f and layer["median_ms"] > 0 else None}
    only_fp32 = {n: {"type": layer["type"], "fp32_ms": layer["median_ms"]} for n, layer in b.items() if n not in a}
    ta = {t: v["median_ms"] for t, v in (int8.get("types") or {}).items()}
    tb = {t: v["median_ms"] for t, v in (fp32.get("types") or {}).items()}
    types = {t: {"int8_ms": ta.get(t, 0.0), "fp32_ms": tb.get(t, 0.0),
                 "speedup": (tb[t] / ta[t]) if ta.get(t) and tb.get(t) else None}
             for t in sorted(set(ta) | set(tb), key=lambda t: -(tb.get(t, 0.0) + ta.get(t, 0.0)))}
    total_a, total_b = int8.get("sum_median_ms") or 0.0, fp32.get("sum_median_ms") or 0.0
    return {"layers": rows, "only_fp32": only_fp32, "types": types, "int8_sum_ms": total_a, "fp32_sum_ms": total_b,
            "speedup": total_b / total_a if total_a > 0 else None}
