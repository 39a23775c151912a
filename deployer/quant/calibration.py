"""The calibration engine: collect activation statistics once, then a table for any method.

Both `deployer ncnn2table` (the drop-in, byte-identical to ncnn's tool) and `deployer quantize`
(the pipeline that compares methods) calibrate through `Calibrator`, so a table means the same
thing whichever command wrote it: conv/dw/fc weight lines, their activation lines, then the
weight lines of Embed/MultiHeadAttention/RNN/LSTM/GRU layers in ncnn2table's order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from deployer.errors import DeployerError
from deployer.inputs.spec import InputSpec
from deployer.quant import collect as collect_mod
from deployer.quant.collect import ActivationStats, CollectJob
from deployer.quant.methods import CalibrationMethod, KLMethod, LayerScales, get_method, kl_threshold_bin
from deployer.quant.table import CalibrationTable, format_value
from deployer.quant.weights import CalibModel, static_weight_scales, weight_scales


@dataclass
class InputSet:
    """Calibration files per model input, plus where each came from (for error messages)."""

    files: list[list[str]]          # files[input][i]
    origins: list[str]              # "list.txt:12" of input 0's entry i

    @classmethod
    def from_lists(cls, file_lists: Sequence[Sequence[str | os.PathLike]]) -> InputSet:
        """File lists already resolved and paired (one per model input, deployer.check.samples), so
        errors name calibration input #i by its path rather than by a list-file line."""
        return cls([[str(f) for f in files] for files in file_lists], [str(f) for f in file_lists[0]])


ProgressFn = Callable[[str, int, int], None]


class Calibrator:
    """Collect activation statistics once; produce tables for any method from them."""

    def __init__(self, model: CalibModel, specs: list[InputSpec], inputs: InputSet, *,
                 threads: int = 0, memory_budget: int = collect_mod.DEFAULT_MEMORY_BUDGET) -> None:
        self.model = model
        self.specs = specs
        self.inputs = inputs
        self.threads = threads or collect_mod.cpu_count()
        self.memory_budget = memory_budget
        self._stats: ActivationStats | None = None
        self._stats_hist = False
        self.warnings: list[str] = []

    @property
    def job(self) -> CollectJob:
        blobs = tuple(dict.fromkeys(q.bottom for q in self.model.quant_layers))
        return CollectJob(str(self.model.param_path), str(self.model.bin_path),
                          tuple(self.model.input_names), tuple(self.specs),
                          tuple(tuple(f) for f in self.inputs.files), blobs,
                          tuple(self.inputs.origins))

    def stats(self, histograms: bool = True, progress: ProgressFn | None = None, *,
              kl: bool = False) -> ActivationStats:
        """Collected once. `kl`: also run the KL threshold search in the collection workers."""
        if self._stats is None or (histograms and not self._stats_hist):
            cb = (lambda d, t: progress("collect", d, t)) if progress else None
            self._stats = collect_mod.collect(self.job, threads=self.threads, histograms=histograms,
                                              memory_budget=self.memory_budget, progress=cb,
                                              per_histogram=[kl_threshold_bin] if histograms and kl else [])
            self._stats_hist = histograms
        return self._stats

    def layer_scales(self, method: str | CalibrationMethod, *, percentile: float = 99.99,
                     progress: ProgressFn | None = None) -> list[LayerScales]:
        m = get_method(method, percentile=percentile) if isinstance(method, str) else method
        stats = self.stats(m.needs_histogram, progress, kl=isinstance(m, KLMethod))
        th = m.thresholds(stats)
        sc = m.scales(stats)
        out = []
        for ql in self.model.quant_layers:
            ws = weight_scales(ql, m.weight_rule)
            if ws.zero_channels:
                self.warnings.append(f"layer {ql.name}: output channel(s) {ws.zero_channels[:8]} have "
                                     "all-zero weights; wrote weight scale 1 (ncnn2table writes inf)")
            b = stats.index(ql.bottom)
            if stats.absmax[b] == 0:
                self.warnings.append(f"layer {ql.name}: input blob {ql.bottom} is all zeros on the "
                                     "calibration set; wrote input scale 1")
            out.append(LayerScales(ql.name, ws.scales, float(sc[b]), float(stats.absmax[b]), float(th[b])))
        return m.refine(self.model, self.job, out, threads=self.threads, progress=progress)

    def table(self, method: str | CalibrationMethod, **kw) -> CalibrationTable:
        return build_table(self.model, self.layer_scales(method, **kw))


def build_table(model: CalibModel, layers: list[LayerScales] | None) -> CalibrationTable:
    """ncnn2table's order: conv/dw/fc weight lines, their activation lines, then static-only layers."""
    table = CalibrationTable()
    if layers is not None:
        for ls in layers:
            table.set_weight(ls.name, [float(v) for v in np.asarray(ls.weight_scales, np.float32)])
        for ls in layers:
            scale = float(np.float32(ls.input_scale))
            if 0 < scale and format_value(scale) == "0.000000":
                # ncnn's table keeps six decimals: ncnn2int8 would read 0 and build a layer that
                # multiplies its input by 0 (our verify then names an internal candidate file)
                raise DeployerError(f"layer {ls.name}: its input reaches {127 / scale:.3g} on the calibration inputs; "
                                    f"the int8 scale 127/{127 / scale:.3g} = {scale:.3g} is below what ncnn's table "
                                    "stores (6 decimals) and would be read as 0",
                                    hint="int8 cannot hold that range: check the input preprocessing (mean, norm)")
            table.set_activation(ls.name, scale)
    order = {"Embed": 0, "MultiHeadAttention": 1, "RNN": 2, "LSTM": 3, "GRU": 4}   # ncnn2table's
    for layer, weights in sorted(model.static_layers, key=lambda lw: order[lw[0].type]):
        for idx, scales in static_weight_scales(layer, weights):
            table.set_weight(layer.name, [float(v) for v in scales], idx)
    return table
