"""Bias correction: fold the expected int8 error of each layer's output into its float bias.

ncnn's int8 convolution computes `acc / (s_in * s_w) + bias` with the bias in float, so a bias can
absorb any error that is constant per output channel. Rounding weights and clipping/rounding
inputs does not average out: on MobileNetV2's depthwise convs (9 weights per channel) the mean
output of a channel moves by a visible fraction of its spread, and the shift compounds down the
network. The expected shift of output channel o is exactly

    E[w_o . x] - E[a_o . xq] = w_o . mean(x) - a_o . mean(xq)

with a_o the dequantized int8 weights and xq the input as the int8 kernel sees it (both means over
every output position of every calibration input, padding included: deployer.quant.layerdata).
Adding it to the bias makes the int8 layer unbiased on the calibration data. No new layer, no
new parameter: the files stay plain ncnn int8.
"""

from __future__ import annotations

import numpy as np

from deployer.quant.layerdata import LayerData


def bias_shift(w: np.ndarray, a: np.ndarray, data: LayerData) -> np.ndarray:
    """(G, Og) amount to add to the bias: w, a are (G, Og, K) fp32 and dequantized int8 weights."""
    exact = np.einsum("gok,gk->go", w.astype(np.float64), data.mean.astype(np.float64))
    int8 = np.einsum("gok,gk->go", a.astype(np.float64), data.mean_q.astype(np.float64))
    return (exact - int8).astype(np.float32)

