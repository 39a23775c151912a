"""How fast deployer.ncnn reads and writes models: prints a table, then one JSON line.

A synthetic VGG-like model (many 3x3 convolutions, ~30 MB of fp32 weights) is built in memory and
timed through parse/format (.param), read/write (.bin), NcnnModel load/save (disk, atomic) and
fp32 -> fp16 conversion. Usage: python bench/ncnn_io.py [--layers N] [--channels C] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from deployer.ncnn import NcnnModel, half
from deployer.ncnn.modelbin import Weight, read_bin, write_bin
from deployer.ncnn.param import Graph, Layer, format_param, parse_param


def build(layers: int, channels: int) -> NcnnModel:
    rng = np.random.default_rng(0)
    graph = Graph(layers=[Layer("Input", "data", [], ["b0"], {0: 64, 1: 64, 2: channels})])
    weights = {}
    for i in range(layers):
        n = channels * channels * 9
        name = f"conv_{i}"
        graph.layers.append(Layer("Convolution", name, [f"b{i}"], [f"b{i + 1}"],
                                  {0: channels, 1: 3, 4: 1, 5: 1, 6: n, 9: 1}))
        weights[name] = [Weight("weight", rng.standard_normal(n).astype(np.float32)),
                         Weight("bias", rng.standard_normal(channels).astype(np.float32), "raw", False)]
    text = format_param(graph)            # re-parse so layers carry their text like a real file
    return NcnnModel(parse_param(text), weights)


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    model = build(args.layers, args.channels)
    param_bytes, bin_data = model.to_bytes()
    param_text = param_bytes.decode()
    mb = len(bin_data) / 1e6
    weights = [w.data for ws in model.weights.values() for w in ws if w.tagged]
    n_weights = sum(w.size for w in weights)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        p, b = Path(tmp) / "m.param", Path(tmp) / "m.bin"
        model.save(p, b)
        cases = {
            "parse_param": (lambda: parse_param(param_text), len(param_text) / 1e6),
            "format_param": (lambda: format_param(model.graph), len(param_text) / 1e6),
            "read_bin": (lambda: read_bin(model.graph, bin_data), mb),
            "write_bin": (lambda: write_bin(model.graph, model.weights), mb),
            "NcnnModel.load": (lambda: NcnnModel.load(p, b), mb),
            "NcnnModel.save": (lambda: model.save(p, b), mb),
            "fp16 encode (nearest)": (lambda: [half.float32_to_float16(w) for w in weights],
                                      n_weights * 4 / 1e6),
            "fp16 encode (pnnx)": (lambda: [half.float32_to_float16(w, "pnnx") for w in weights],
                                   n_weights * 4 / 1e6),
        }
        print(f"model: {args.layers} conv layers, {args.channels} ch, .bin {mb:.1f} MB, "
              f".param {len(param_text) / 1e3:.1f} kB, median of {args.repeat}")
        print(f"{'operation':<24} {'seconds':>9} {'MB/s':>9}")
        for name, (fn, size_mb) in cases.items():
            sec = timed(fn, args.repeat)
            results[name] = {"seconds": round(sec, 5), "mb_per_s": round(size_mb / sec, 1)}
            print(f"{name:<24} {sec:>9.4f} {size_mb / sec:>9.1f}")
    print(json.dumps({"bench": "ncnn_io", "layers": args.layers, "channels": args.channels,
                      "bin_mb": round(mb, 2), "results": results}))


if __name__ == "__main__":
    main()
