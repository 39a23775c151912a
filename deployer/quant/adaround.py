"""Weight rounding learnt per layer on calibration data (AdaRound, Nagel et al. 2020), in numpy.

Round-to-nearest minimises each weight's own error, not the layer's output error: neighbouring
weights' errors add up on correlated inputs. AdaRound chooses, for every weight, floor or ceil of
`w * scale` so that the output on calibration inputs moves least. The choice is relaxed to a
rectified sigmoid h(V) in [0, 1], V is optimised with Adam on

    || Xq (floor + h(V))ᵀ / s - X wᵀ ||²  +  lambda * sum(1 - |2h - 1|^beta)

where X are the layer's fp32 input patches and Xq the int8 kernel's view of them (so the rounding
also absorbs part of the input's quantization error), and beta anneals from 20 to 2 to push every
h to 0 or 1. Only second moments of X enter (deployer.quant.layerdata), so one iteration costs one
(rows x K) @ (K x K) product per layer: 300 iterations of all of MobileNetV2 take seconds.

The result is plain int8 codes on the table's own scales: `snap` writes them back into the fp32
weights as exactly `q / scale`, which ncnn2int8's round-to-nearest reproduces code for code, so the
files are ordinary ncnn int8 files. A layer keeps round-to-nearest when the learnt rounding does not
lower its calibration loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deployer.quant.arith import round_half_away
from deployer.quant.layerdata import LayerData

ZETA, GAMMA = 1.1, -0.1


@dataclass
class RoundingResult:
    codes: np.ndarray          # (G, Og, K) integer codes
    loss_nearest: float        # mean squared output error of round-to-nearest on calibration data
    loss: float                # the same for the chosen codes (<= loss_nearest)
    improved: bool


def output_error(a: np.ndarray, w: np.ndarray, data: LayerData) -> float:
    """Mean squared output error (summed over output channels) of int8 weights `a` (dequantized)
    on int8 inputs against fp32 weights `w` on fp32 inputs: a Hqq aᵀ - 2 a Hqf wᵀ + w Hff wᵀ."""
    a64, w64 = a.astype(np.float64), w.astype(np.float64)
    ah = np.matmul(a64, data.gram_qq)
    wq = np.matmul(w64, data.gram_qf.transpose(0, 2, 1))
    wf = np.matmul(w64, data.gram_ff)
    return float((np.sum(ah * a64) - 2 * np.sum(wq * a64) + np.sum(wf * w64)) / max(data.samples, 1))


def optimise_rounding(w: np.ndarray, scales: np.ndarray, levels: int, data: LayerData, *, iters: int = 300,
                      lam: float = 1.0, lr: float = 0.01, warmup: float = 0.2) -> RoundingResult:
    """w: (G, Og, K) fp32 weights; scales: (G, Og) weight scales; codes stay within +-levels."""
    w = w.astype(np.float32)
    s = scales.astype(np.float32)[..., None]
    ws = w * s
    nearest = np.clip(round_half_away(ws), -levels, levels)
    floor = np.floor(ws)
    rest = np.clip(ws - floor, 1e-4, 1 - 1e-4)
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1).astype(np.float32)
    lo, hi = -levels - floor, levels - floor          # h must keep floor + h within range

    err_nearest = output_error(nearest / s, w, data)
    if data.samples < w.shape[-1]:
        # fewer input samples than weights per row (a classifier head on a few dozen images): the
        # loss is under-determined and learnt rounding would fit the calibration set, not the task
        return RoundingResult(nearest, err_nearest, err_nearest, False)
    if not np.isfinite(err_nearest) or err_nearest <= 0:
        return RoundingResult(nearest, 0.0, 0.0, False)
    norm = 1.0 / err_nearest
    m = np.zeros_like(v)
    u = np.zeros_like(v)
    wq_t = np.matmul(w, data.gram_qf.transpose(0, 2, 1))
    inv_n = 1.0 / max(data.samples, 1)
    n_w = v.size
    for t in range(1, iters + 1):
        sig = 1.0 / (1.0 + np.exp(-v))
        h_raw = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(h_raw, np.maximum(lo, 0), np.minimum(hi, 1))
        a = (floor + h) / s
        grad_a = 2 * (np.matmul(a, data.gram_qq) - wq_t) * inv_n * norm
        grad_h = grad_a / s
        frac = t / iters
        if frac > warmup:
            beta = 20 + (2 - 20) * (frac - warmup) / (1 - warmup)
            d = 2 * h - 1
            ad = np.abs(d) + 1e-12
            grad_h = grad_h - lam / n_w * 2 * beta * ad ** (beta - 1) * np.sign(d)
        inside = (h_raw > np.maximum(lo, 0)) & (h_raw < np.minimum(hi, 1))
        g = grad_h * sig * (1 - sig) * (ZETA - GAMMA) * inside
        m = 0.9 * m + 0.1 * g
        u = 0.999 * u + 0.001 * g * g
        v = v - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(u / (1 - 0.999 ** t)) + 1e-8)
    codes = np.clip(floor + (v >= 0), -levels, levels)
    err = output_error(codes / s, w, data)
    if err < err_nearest:
        return RoundingResult(codes, err_nearest, err, True)
    return RoundingResult(nearest, err_nearest, err_nearest, False)
