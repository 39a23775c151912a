"""What each int8 layer sees on calibration data: the input patches its weights multiply.

Bias correction and optimised rounding (deployer.quant.biascorr, deployer.quant.adaround) both
judge a layer's int8 weights by the error they cause on the layer's *output*, which is a linear
function of its input patches. Keeping every patch would take gigabytes for MobileNetV2, but the
output error of a weight change only needs second moments, so one fp32 pass in the stock ncnn
wheel (intermediate blobs on) accumulates per layer and per weight group:

- the mean input patch, fp32 (`mean`) and as ncnn's int8 kernels see it, i.e. quantized with
  the layer's activation scale (`mean_q`), padding included;
- the Gram matrices of the patches, `gram_qq = Xq^T Xq`, `gram_qf = Xq^T X`, `gram_ff = X^T X`
  (int8 input by int8 input, int8 by fp32, fp32 by fp32), so the mean squared output error of
  any int8 weights `a` against the fp32 weights `w` is exact: a Hqq a - 2 a Hqf w + w Hff w.

Both come from a random sample of output positions per input (`positions_per_input`), so a
layer costs the same whatever its resolution. A patch is laid out like ncnn's weights (input
channel of the group, kernel row, kernel column), so row r of a layer's weight dotted with a patch
is output channel r at that position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from deployer.errors import DeployerError
from deployer.quant.arith import ConvGeometry, quantize_f32

Progress = Callable[[str, int, int], None]
QUANTIZED_TYPES = ("Convolution", "ConvolutionDepthWise", "InnerProduct")


def quantize_activation(x: np.ndarray, scale: float) -> np.ndarray:
    """What ncnn's int8 kernels multiply: clamp(round(x * scale), +-127) / scale."""
    return quantize_f32(np.asarray(x, np.float32), scale) / np.float32(scale)


@dataclass
class Geometry:
    """How a layer turns its input blob into patches: weight groups plus ncnn's conv geometry."""

    type: str
    groups: int                      # weight groups (1 for conv/fc, `group` for depthwise)
    out_per_group: int
    conv: ConvGeometry | None = None  # None for InnerProduct
    pad_value: float = 0.0


def geometry(layer: Any) -> Geometry:
    g = layer.get
    num_output = int(g(0, 0))
    if layer.type == "InnerProduct":
        return Geometry("InnerProduct", 1, num_output)
    groups = int(g(7, 1)) if layer.type == "ConvolutionDepthWise" else 1
    return Geometry(layer.type, groups, num_output // max(groups, 1), ConvGeometry.of(layer),
                    float(g(18, 0.0)) if layer.type == "Convolution" else 0.0)


def _as_chw(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        return x
    return x.reshape((-1,) + x.shape[-2:]) if x.ndim > 3 else x.reshape((1,) * (3 - x.ndim) + x.shape)


def patches(x: np.ndarray, geo: Geometry, positions: np.ndarray | None = None) -> np.ndarray:
    """(positions, groups, K) patches of a (C, H, W) blob (InnerProduct: one position, K = C*H*W).

    `positions` (flat output indices) picks a subset without building every patch.
    """
    if geo.type == "InnerProduct":
        return np.asarray(x, np.float32).reshape(1, 1, -1)
    cg = geo.conv
    assert cg is not None
    xp = cg.pad(_as_chw(x), np.float32(geo.pad_value))
    oh, ow = cg.out_size(xp.shape[1], xp.shape[2])
    pos = np.arange(oh * ow) if positions is None else np.asarray(positions)
    oy, ox = pos // ow, pos % ow
    rows = oy[:, None] * cg.sh + np.arange(cg.kh)[None, :] * cg.dh             # P, kh
    cols = ox[:, None] * cg.sw + np.arange(cg.kw)[None, :] * cg.dw             # P, kw
    v = xp[:, rows[:, :, None], cols[:, None, :]]                               # C, P, kh, kw
    c = v.shape[0]
    v = v.reshape(geo.groups, c // geo.groups, pos.size, cg.kh * cg.kw)
    return np.ascontiguousarray(v.transpose(2, 0, 1, 3)).reshape(pos.size, geo.groups, -1)


def positions_of(x: np.ndarray, geo: Geometry) -> int:
    if geo.type == "InnerProduct":
        return 1
    assert geo.conv is not None
    _, h, w = _as_chw(x).shape
    top, bottom, left, right = geo.conv.pads(h, w)
    oh, ow = geo.conv.out_size(h + top + bottom, w + left + right)
    return oh * ow


@dataclass
class LayerData:
    """Second moments of one layer's input patches over the calibration set."""

    name: str
    geometry: Geometry
    input_scale: float
    count: int                 # sampled positions averaged into the means
    mean: np.ndarray           # (groups, K)
    mean_q: np.ndarray         # (groups, K)
    gram_qq: np.ndarray        # (groups, K, K), summed over `samples` positions
    gram_qf: np.ndarray        # (groups, K, K)
    gram_ff: np.ndarray        # (groups, K, K), X^T X
    samples: int


class _Acc:
    def __init__(self, geo: Geometry, scale: float) -> None:
        self.geo, self.scale = geo, scale
        self.sum = self.sum_q = self.qq = self.qf = self.ff = None
        self.count = self.samples = 0

    def add(self, blob: np.ndarray, rng: np.random.Generator, per_input: int) -> None:
        """Means and Gram matrices from up to `per_input` random output positions of this input
        (sampling keeps the cost per layer flat; borders are represented in proportion)."""
        n = positions_of(blob, self.geo)
        pick = None if n <= per_input else np.sort(rng.choice(n, per_input, replace=False))
        self.add_patches(patches(blob, self.geo, pick))

    def add_patches(self, p: np.ndarray) -> None:
        """(P, G, K) fp32 patches."""
        pq = quantize_activation(p, self.scale)
        if self.sum is None:
            g, k = p.shape[1:]
            self.sum = np.zeros((g, k), np.float64)
            self.sum_q = np.zeros((g, k), np.float64)
            self.qq = np.zeros((g, k, k), np.float64)
            self.qf = np.zeros((g, k, k), np.float64)
            self.ff = np.zeros((g, k, k), np.float64)
        self.sum += p.sum(0, dtype=np.float64)
        self.sum_q += pq.sum(0, dtype=np.float64)
        self.count += p.shape[0]
        a = pq.transpose(1, 2, 0)                                   # G, K, P
        self.qq += np.matmul(a, pq.transpose(1, 0, 2))
        self.qf += np.matmul(a, p.transpose(1, 0, 2))
        self.ff += np.matmul(p.transpose(1, 2, 0), p.transpose(1, 0, 2))
        self.samples += p.shape[0]

    def result(self, name: str) -> LayerData:
        assert self.sum is not None and self.sum_q is not None and self.qq is not None and self.qf is not None
        return LayerData(name, self.geo, self.scale, self.count, (self.sum / self.count).astype(np.float32),
                         (self.sum_q / self.count).astype(np.float32), self.qq.astype(np.float32),
                         self.qf.astype(np.float32), self.ff.astype(np.float32), self.samples)


def collect_layer_data(param: Any, bin_: Any, layers: list[Any], scales: dict[str, float],
                       samples: list[dict[str, np.ndarray]], *, threads: int = 2, positions_per_input: int = 256,
                       seed: int = 0, progress: Progress | None = None) -> dict[str, LayerData]:
    """One fp32 pass of `samples` through the model in ncnn; `layers` are graph Layers, `scales`
    their activation (bottom) scales from the calibration table."""
    from deployer.check.net import NcnnNet

    missing = [lay.name for lay in layers if lay.name not in scales]
    if missing:
        raise DeployerError(f"layer {missing[0]}: no activation scale in the calibration table")
    net = NcnnNet(param, bin_, threads=threads, intermediates=True)
    blobs = sorted({lay.bottoms[0] for lay in layers})
    accs = {lay.name: _Acc(geometry(lay), scales[lay.name]) for lay in layers}
    rng = np.random.default_rng(seed)
    for i, sample in enumerate(samples):
        got = net.run(sample, blobs)
        for lay in layers:
            accs[lay.name].add(got[lay.bottoms[0]], rng, positions_per_input)
        if progress:
            progress("layer data", i + 1, len(samples))
    del net
    return {lay.name: accs[lay.name].result(lay.name) for lay in layers if accs[lay.name].sum is not None}
