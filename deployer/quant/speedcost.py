"""What keeping layers in float costs in time: measured on a board when there are board times, else
estimated from the multiply-accumulates moved to float.

Measured: `deployer run BOARD --layers --fp32-param F.param --fp32-bin F.bin` times every layer of
the all-int8 model and of the fp32 model on the board (native per-layer build, joined by layer
name) and saves both in its results JSON (`layers.vs_fp32`). Keeping layer L float then moves the
network from L's int8 time to L's fp32 time, so

    mixed time ~= sum of int8 per-layer medians + sum over the fp32 layers of (fp32 ms - int8 ms).

Per layer, not per network: the set mixed precision picks is known only after the search, and
timing each candidate on the board would cost a board round trip per candidate. The sum assumes a
layer's time does not depend on its neighbours' precision (ncnn quantizes an int8 conv's input and
dequantizes its output inside the layer, so the glue moves with the layer); the per-layer build's
overhead is in both sides of the ratio.

Estimated (no board times): MACs of the layers kept float over all conv/dw/fc MACs, with int8
assumed INT8_SPEEDUP x faster. A ceiling, not a measurement; the report says which one it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from deployer import fsutil
from deployer.errors import DeployerError

# One int8 conv is assumed this many times faster than the same conv in float, to turn the MACs
# moved to fp32 into a time estimate. ncnn's ARM int8 gain varies from none (depthwise-heavy nets,
# fp16-capable cores) to ~2x (SDOT/i8mm cores): 2x is the upper end, so the estimate is a ceiling.
INT8_SPEEDUP = 2.0
RESULT_MAX_BYTES = 64 << 20     # a run result with per-layer times is kilobytes; this is the wrong file
RUN_HINT = ("time the all-int8 model on the board: deployer run BOARD --param M_int8.param --bin M_int8.bin "
            "--layers --fp32-param M.param --fp32-bin M.bin, then pass results/<board>/<time>.json")


@dataclass(frozen=True)
class LayerTimes:
    """One board's per-layer medians (ms) for an int8 model and its fp32 original."""

    file: Path
    board: str
    int8_ms: dict[str, float]
    fp32_ms: dict[str, float]
    types: dict[str, str]
    threads: Any = None


def _err(file: Path, what: str) -> DeployerError:
    return DeployerError(f"{file}: {what}", hint=RUN_HINT)


def load_layer_times(file: Path) -> LayerTimes:
    """Read a `deployer run --layers --fp32-param` result (the saved results file or its --json
    output, one board). Every way it can be the wrong file is one line naming it."""
    # fsutil refuses FIFOs, devices and folders without blocking (a FIFO here used to hang quantize)
    text = fsutil.read_input_text(file, "run result file", limit=RESULT_MAX_BYTES)
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise _err(file, f"not a JSON run result ({err})") from None
    if isinstance(doc, dict) and isinstance(doc.get("boards"), list):
        timed = [b for b in doc["boards"] if isinstance(b, dict) and (b.get("layers") or {}).get("vs_fp32")]
        if len(timed) != 1:
            raise _err(file, f"has {len(timed)} boards with int8 and fp32 layer times; give one board's results file")
        doc = timed[0]
    if not isinstance(doc, dict) or "board" not in doc:
        raise _err(file, "not a `deployer run` result (no board)")
    layers = doc.get("layers")
    if not isinstance(layers, dict):
        raise _err(file, "has no per-layer times (the run was made without --layers)")
    vs = layers.get("vs_fp32")
    if not isinstance(vs, dict) or not isinstance(vs.get("layers"), dict):
        raise _err(file, "has int8 layer times but no fp32 ones (the run was made without --fp32-param/--fp32-bin)")
    int8_ms: dict[str, float] = {}
    fp32_ms: dict[str, float] = {}
    types: dict[str, str] = {}
    try:
        for name, row in vs["layers"].items():
            int8_ms[str(name)] = float(row["int8_ms"])
            types[str(name)] = str(row["type"])
            if row.get("fp32_ms") is not None:
                fp32_ms[str(name)] = float(row["fp32_ms"])
    except (TypeError, KeyError, ValueError) as err:
        raise _err(file, f"layers.vs_fp32.layers is malformed ({err!r})") from None
    return LayerTimes(file=Path(file), board=str(doc["board"]), int8_ms=int8_ms, fp32_ms=fp32_ms, types=types,
                      threads=(doc.get("options") or {}).get("threads"))


def check_same_model(times: LayerTimes, layer_types: dict[str, str]) -> None:
    """Fail before any work when the times are of another model: every timed layer must be in this
    model under the same name and type. (Not every layer of the model need be timed: the runner
    extracts one output, so a second head's layers never run in that benchmark.)"""
    for name, kind in times.types.items():
        if layer_types.get(name) != kind:
            found = f"a {layer_types[name]}" if name in layer_types else "no such layer"
            raise _err(times.file, f"times layer {name!r} ({kind}) but this model has {found}: timed on another model?")


def measured_cost(times: LayerTimes, fp32_layers: Sequence[str]) -> dict[str, Any]:
    """The mixed model's time against the all-int8 one, from per-layer board medians. Float layers
    the board run did not time (off the extracted output's path) are listed, not guessed."""
    total = sum(times.int8_ms.values())
    timed = [n for n in fp32_layers if n in times.int8_ms and n in times.fp32_ms]
    per_layer = {n: {"int8_ms": times.int8_ms[n], "fp32_ms": times.fp32_ms[n],
                     "extra_ms": times.fp32_ms[n] - times.int8_ms[n]} for n in timed}
    untimed = [n for n in fp32_layers if n not in per_layer]
    extra = sum(v["extra_ms"] for v in per_layer.values())
    note = f"measured per layer on {times.board} (sum of per-layer medians)"
    if untimed:
        note += f"; {len(untimed)} float layer(s) not timed there (not on the run's output path): {', '.join(untimed)}"
    return {"source": "board", "board": times.board, "file": str(times.file), "threads": times.threads,
            "all_int8_ms": round(total, 4), "extra_ms": round(extra, 4), "fp32_layers": per_layer,
            "untimed": untimed, "est_time_vs_all_int8": round((total + extra) / total, 4) if total > 0 else None,
            "note": note}


def time_budget(times: LayerTimes, max_slowdown: float) -> tuple[dict[str, float], float]:
    """(ms each timed layer adds when kept float, the most a set may add) for mixed precision's
    `max_slowdown`: a share of the all-int8 model's summed per-layer time on that board."""
    cost = {n: times.fp32_ms[n] - times.int8_ms[n] for n in times.int8_ms if n in times.fp32_ms}
    return cost, max_slowdown * sum(times.int8_ms.values())


def mac_estimate(macs: dict[str, int], fp32_layers: Sequence[str]) -> dict[str, Any]:
    """The ceiling from MACs when no board times were given (see INT8_SPEEDUP)."""
    total = sum(macs.values()) or 1
    moved = sum(macs.get(n, 0) for n in fp32_layers)
    share = moved / total
    return {"source": "estimate", "conv_macs": total, "fp32_macs": moved, "fp32_mac_share": round(share, 4),
            "int8_speedup_assumed": INT8_SPEEDUP,
            "est_time_vs_all_int8": round(1 + share * (INT8_SPEEDUP - 1), 4),
            "note": "an estimate from MACs, at most this much slower if int8 convs run "
                    f"{INT8_SPEEDUP:g}x faster than float on the board; measure it with `--layer-times`"}
