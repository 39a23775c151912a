"""Activation calibration methods: one class each, all fed by ONE statistics collection.

Pattern (as in onnxruntime's calibrate.py): `collect.collect()` gathers absmax + ncnn's 2048-bin
|x| histogram per conv input once; each method turns those statistics into one per-tensor scale
per blob. So a pipeline can compare kl / aciq / maxabs / percentile / mse without re-running
the network. EQ (`EQMethod`) starts from KL's scales and then `refine`s them against single-layer
int8 outputs (`deployer.quant.eq.eq_search`), which needs the layers' inputs/outputs, not just
statistics; every other method's `refine` keeps its scales as they are.

`kl` and `aciq` reproduce ncnn2table bit for bit: KL is vectorised over all thresholds with
prefix sums (float64), and the few thresholds whose KL is within float32 noise of the minimum are
re-scored with an exact float32 transcription of ncnn's loop, so the chosen threshold is the one
ncnn's float maths picks.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from deployer.errors import DeployerError
from deployer.quant.collect import NUM_BINS, ActivationStats, fn_key
from deployer.quant.weights import aciq_gaussian_clip

if TYPE_CHECKING:
    from deployer.quant.collect import CollectJob
    from deployer.quant.weights import CalibModel

TARGET_BIN = 128
KL_EPS = np.float32(0.0001)
_F32 = np.float32


# ----------------------------------------------------------------------------------------- base

class CalibrationMethod(ABC):
    """Turns activation statistics into per-blob scales (127 / threshold)."""

    name: str = ""
    needs_histogram: bool = True
    weight_rule: str = "kl"        # which weight-scale rule goes with it (weights.weight_scales)

    @abstractmethod
    def thresholds(self, stats: ActivationStats) -> np.ndarray:
        """float32 clip threshold per blob."""

    def scales(self, stats: ActivationStats) -> np.ndarray:
        th = self.thresholds(stats)
        with np.errstate(divide="ignore"):
            return np.where(th > 0, _F32(127) / np.where(th > 0, th, 1), _F32(1)).astype(np.float32)

    def refine(self, model: "CalibModel", job: "CollectJob", start: "list[LayerScales]", *,
               threads: int = 1, progress: Callable[[str, int, int], None] | None = None) -> "list[LayerScales]":
        """Second stage for methods that search against the network itself (EQ); statistics-only
        methods are done after `scales`."""
        return start

    def _hist(self, stats: ActivationStats) -> np.ndarray:
        if stats.histograms is None:
            raise DeployerError(f"method={self.name} needs histograms, but statistics were collected without")
        return stats.histograms


def normalized(hist: np.ndarray) -> np.ndarray:
    """ncnn: `(float)(histogram[j] / (double)sum)`."""
    total = float(hist.sum())
    if total == 0:
        return np.zeros(hist.shape, np.float32)
    return (hist.astype(np.float64) / total).astype(np.float32)


# ------------------------------------------------------------------------------------------- KL

@dataclass(frozen=True)
class _KLGeometry:
    """Where every threshold's 128 quantized bins start and end: the same for every histogram."""

    t: np.ndarray          # thresholds [T]
    npb: np.ndarray        # source bins per quantized bin, t / 128 [T]
    edge_i: np.ndarray     # floor of the 129 edges j * t/128 [T, 129]
    edge_f: np.ndarray     # fractional part of the edges
    full_lo: np.ndarray    # ceil(start_j): first source bin fully inside quantized bin j [T, 128]
    full_hi: np.ndarray    # floor(end_j)
    cut_bin: np.ndarray    # floor(start_j), j = 1..127: the source bin a fractional edge cuts [T, 127]
    cut_f: np.ndarray      # its share in quantized bin j-1 (0 where the edge is integral)
    cut_mask: np.ndarray   # 1.0 where the edge is fractional


_GEOMETRY: dict[int, _KLGeometry] = {}


def _geometry(nbins: int) -> _KLGeometry:
    if nbins not in _GEOMETRY:
        t = np.arange(TARGET_BIN, nbins, dtype=np.int64)
        npb = t / TARGET_BIN                                   # exact: division by a power of two
        edges = npb[:, None] * np.arange(TARGET_BIN + 1)[None, :]   # exact dyadic values
        edge_i = np.floor(edges).astype(np.intp)
        edge_f = edges - edge_i
        inner_f = edge_f[:, 1:-1]
        _GEOMETRY[nbins] = _KLGeometry(
            t, npb, edge_i, edge_f, np.ceil(edges[:, :-1]).astype(np.intp), edge_i[:, 1:],
            edge_i[:, 1:-1], inner_f, (inner_f > 0).astype(np.float64))
    return _GEOMETRY[nbins]


def kl_divergences(p32: np.ndarray) -> np.ndarray:
    """KL for every threshold 128..2047 (float64), ncnn's definition, vectorised with prefix sums.

    Index k of the result is threshold 128 + k. `p32` is the normalised float32 histogram.
    Per threshold t: clip P = eps + h on bins < t with the tail mass added to bin t-1; Q_j = the
    interpolated mass of h over quantized bin j divided by its width t/128; the expansion gives
    every source bin eps + Q_j (or a coverage-weighted mix of Q_{j-1}, Q_j for a bin cut by a
    fractional edge). KL = sum P log P - sum P log E, the full-bin part from prefix sums.
    """
    g = _geometry(p32.size)
    h = p32.astype(np.float64)
    eps = float(KL_EPS)
    S = np.concatenate(([0.0], np.cumsum(h)))
    hpad = np.concatenate((h, [0.0]))
    cum = S[g.edge_i] + g.edge_f * hpad[g.edge_i]              # interpolated mass up to each edge
    Q = np.diff(cum, axis=1) / g.npb[:, None]                  # [T, 128]

    P = eps + h
    A = np.concatenate(([0.0], np.cumsum(P)))
    G = np.concatenate(([0.0], np.cumsum(P * np.log(P))))
    tail = S[-1] - S[g.t]
    p_last = P[g.t - 1] + tail

    full = A[g.full_hi] - A[g.full_lo]
    full[:, -1] += tail                                        # bin t-1 carries the clipped tail
    cross = np.einsum("ij,ij->i", full, np.log(eps + Q))

    f = g.cut_f
    E_cut = eps + Q[:, :-1] * f + Q[:, 1:] * (1 - f)
    cross += np.einsum("ij,ij->i", P[g.cut_bin] * g.cut_mask, np.log(E_cut))
    return G[g.t - 1] + p_last * np.log(p_last) - cross


def kl_divergence_f32(p32: np.ndarray, threshold: int) -> np.float32:
    """ncnn2table's KL for one threshold, transcribed with float32 arithmetic in ncnn's order."""
    h = p32.astype(np.float32)
    t = threshold
    eps = KL_EPS
    clip = (eps + h[:t]).astype(np.float32)
    clip[t - 1] = np.add.accumulate(np.concatenate(([clip[t - 1]], h[t:])), dtype=np.float32)[-1]
    npb = _F32(t) / _F32(TARGET_BIN)
    q = np.zeros(TARGET_BIN, np.float32)
    parts: list[tuple[int, int, float, float, int, int]] = []   # (lu, rl, lscale, rscale) per j
    for j in range(TARGET_BIN):
        if j == 0:
            start, end = _F32(0), npb
        elif j == TARGET_BIN - 1:
            start, end = _F32(t) - npb, _F32(t)
        else:
            start, end = _F32(j) * npb, _F32(j + 1) * npb
        lu = int(math.ceil(start))
        ls = _F32(lu) - start if j > 0 else _F32(0)
        rl = int(math.floor(end)) if j < TARGET_BIN - 1 else t
        rs = end - _F32(rl) if j < TARGET_BIN - 1 else _F32(0)
        seq = []
        if ls > 0:
            seq.append(ls * h[lu - 1])
        if rs > 0:
            seq.append(rs * h[rl])
        acc = np.add.accumulate(np.concatenate((np.array(seq, np.float32), h[lu:rl])), dtype=np.float32)
        total = acc[-1] if acc.size else _F32(0)
        if j == 0:
            width = _F32(rl) + rs
        elif j == TARGET_BIN - 1:
            width = _F32(t - lu) + ls
        else:
            width = (_F32(rl - lu) + ls) + rs
        q[j] = total / width
        parts.append((lu, rl, ls, rs))
    expand = np.full(t, eps, np.float32)
    for j, (lu, rl, ls, rs) in enumerate(parts):
        if ls > 0:
            expand[lu - 1] = expand[lu - 1] + ls * q[j]
        if rs > 0:
            expand[rl] = expand[rl] + rs * q[j]
        expand[lu:rl] = expand[lu:rl] + q[j]
    ratio = clip / expand
    logs = np.log(ratio.astype(np.float64)).astype(np.float32)
    terms = (clip * logs).astype(np.float32)
    return np.add.accumulate(terms, dtype=np.float32)[-1]


def kl_threshold_bin(hist: np.ndarray, *, max_refine: int = 48) -> int:
    """ncnn's best threshold bin (128..2047) for a raw 2048-bin histogram."""
    if hist.sum() == 0:
        return TARGET_BIN
    p32 = normalized(hist)
    kl = kl_divergences(p32)
    best = int(np.argmin(kl))
    # float64 vs ncnn's float32 sums: re-score exactly every threshold within a few times the
    # float32 error (measured at the float64 minimum) of the minimum.
    err = abs(float(kl[best]) - float(kl_divergence_f32(p32, TARGET_BIN + best)))
    near = np.nonzero(kl <= kl[best] + 4 * err + 1e-7 * max(1.0, abs(float(kl[best]))))[0]
    if near.size > 1:
        if near.size > max_refine:
            near = near[np.argsort(kl[near], kind="stable")[:max_refine]]
            near.sort()
        exact = [kl_divergence_f32(p32, TARGET_BIN + int(k)) for k in near]
        # ncnn keeps the first threshold with a strictly smaller KL, starting from FLT_MAX
        best_val = np.float32(np.finfo(np.float32).max)
        for k, v in zip(near, exact):
            if v < best_val:
                best_val, best = v, int(k)
    return TARGET_BIN + best


class KLMethod(CalibrationMethod):
    name = "kl"

    def thresholds(self, stats: ActivationStats) -> np.ndarray:
        hist = self._hist(stats)
        bins = stats.derived.get(fn_key(kl_threshold_bin))
        if bins is None:
            bins = [kl_threshold_bin(h) for h in hist]
        out = np.zeros(len(stats.blobs), np.float32)
        for i in range(len(stats.blobs)):
            tb = int(bins[i])
            # (target_threshold + 0.5f) * absmax / 2048 in float32
            out[i] = (_F32(tb) + _F32(0.5)) * stats.absmax[i] / _F32(NUM_BINS)
        return out


# ----------------------------------------------------------------------------------------- ACIQ

class ACIQMethod(CalibrationMethod):
    name = "aciq"
    needs_histogram = False
    weight_rule = "aciq"

    def thresholds(self, stats: ActivationStats) -> np.ndarray:
        out = np.zeros(len(stats.blobs), np.float32)
        for i in range(len(stats.blobs)):
            n = int(stats.totals[i])
            out[i] = aciq_gaussian_clip(stats.absmax[i], n, 8) if n > 1 else stats.absmax[i]
        return out


# ------------------------------------------------------------------------------- beyond ncnn

class MaxAbsMethod(CalibrationMethod):
    """No clipping: threshold = absmax over the calibration set."""

    name = "maxabs"
    needs_histogram = False

    def thresholds(self, stats: ActivationStats) -> np.ndarray:
        return stats.absmax.astype(np.float32).copy()


class PercentileMethod(CalibrationMethod):
    """Clip at the given percentile of non-zero |x| (upper edge of the histogram bin reaching it)."""

    name = "percentile"

    def __init__(self, percentile: float = 99.99) -> None:
        if not 0 < percentile <= 100:
            raise DeployerError(f"percentile={percentile}: must be in (0, 100]")
        self.percentile = float(percentile)

    def thresholds(self, stats: ActivationStats) -> np.ndarray:
        hist = self._hist(stats)
        out = np.zeros(len(stats.blobs), np.float32)
        for i in range(len(stats.blobs)):
            total = hist[i].sum()
            if total == 0:
                out[i] = stats.absmax[i]
                continue
            cdf = np.cumsum(hist[i]) / float(total)
            k = int(np.searchsorted(cdf, self.percentile / 100.0 - 1e-12))
            out[i] = _F32(min(k + 1, NUM_BINS)) * stats.absmax[i] / _F32(NUM_BINS)
        return out


class MSEMethod(CalibrationMethod):
    """Clip threshold minimising the expected int8 quantization MSE of the |x| histogram.

    For a threshold c (any bin edge), values below c get uniform rounding noise (c/127)^2/12,
    values above c are clipped: error (x - c)^2 with x at its bin centre. Closed form per
    candidate via prefix sums, so all 2048 candidates cost O(bins).
    """

    name = "mse"

    def thresholds(self, stats: ActivationStats) -> np.ndarray:
        hist = self._hist(stats)
        out = np.zeros(len(stats.blobs), np.float32)
        for i in range(len(stats.blobs)):
            out[i] = _F32(self._best_edge(hist[i].astype(np.float64)) * float(stats.absmax[i]) / NUM_BINS)
        return out

    @staticmethod
    def _best_edge(h: np.ndarray) -> float:
        if h.sum() == 0:
            return float(NUM_BINS)
        x = np.arange(NUM_BINS) + 0.5                  # bin centres in bin units
        c = np.arange(1, NUM_BINS + 1, dtype=np.float64)  # candidate thresholds (bin edges)
        n_in = np.cumsum(h)                            # count with centre < c
        total = n_in[-1]
        # sum over x > c of (x - c)^2 = S2 - 2c S1 + c^2 S0 over the tail
        s0 = total - n_in
        s1 = np.sum(h * x) - np.cumsum(h * x)
        s2 = np.sum(h * x * x) - np.cumsum(h * x * x)
        clip_err = s2 - 2 * c * s1 + c * c * s0
        round_err = n_in * (c / 127.0) ** 2 / 12.0
        return float(c[int(np.argmin(clip_err + round_err))])


class EQMethod(KLMethod):
    """ncnn2table's method=eq: KL's scales, then each layer's weight and input scales searched for
    the best cosine of that layer's int8 output against fp32 (deployer.quant.eq)."""

    name = "eq"

    def refine(self, model: "CalibModel", job: "CollectJob", start: "list[LayerScales]", *,
               threads: int = 1, progress: Callable[[str, int, int], None] | None = None) -> "list[LayerScales]":
        from deployer.quant.eq import eq_search

        return eq_search(model, job, start, progress=progress, threads=threads)


class SeqMethod(PercentileMethod):
    """Percentile's scales, then each layer's input scale re-chosen for the smallest error of the
    layer's output on the inputs the int8 network feeds it (deployer.quant.seqcal)."""

    name = "seq"

    def refine(self, model: "CalibModel", job: "CollectJob", start: "list[LayerScales]", *,
               threads: int = 1, progress: Callable[[str, int, int], None] | None = None) -> "list[LayerScales]":
        from deployer.quant.seqcal import seq_search

        return seq_search(model, job, start, threads=threads, progress=progress)


METHODS: dict[str, type[CalibrationMethod]] = {
    "kl": KLMethod, "aciq": ACIQMethod, "eq": EQMethod, "maxabs": MaxAbsMethod,
    "percentile": PercentileMethod, "mse": MSEMethod, "seq": SeqMethod,
}
ALL_METHODS = tuple(METHODS)


def get_method(name: str, **params: float) -> CalibrationMethod:
    """A method by name (`percentile=` for PercentileMethod)."""
    if name not in METHODS:
        raise DeployerError(f"method={name}: unknown; expected one of {', '.join(ALL_METHODS)}")
    cls = METHODS[name]
    if issubclass(cls, PercentileMethod):
        return cls(params.get("percentile", 99.99))
    return cls()


@dataclass
class LayerScales:
    """The calibration result for one conv/dw/fc layer."""

    name: str
    weight_scales: np.ndarray     # float32 per channel / group
    input_scale: float            # float32 value
    absmax: float
    threshold: float
