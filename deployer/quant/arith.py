"""ncnn's arithmetic, written once: int8 rounding, fused activations, convolution geometry.

The int8 writer (int8.py), the EQ search (eq.py) and the numpy simulation (simulate.py) must all
round, activate and pad exactly as ncnn's reference kernels do, or a table searched in one place
means something else in another. So these rules live here and nowhere else:

- rounding: C `round()` (half away from zero), then clamp to +-127 (ncnn's float2int8);
- the product `x * scale` is taken in float32 before rounding;
- activations: ncnn's `activation_ss` (0 none, 1 ReLU, 2 leaky ReLU, 3 clip, 4 sigmoid, 5 mish,
  6 hardswish), in float32;
- conv geometry: kernel/dilation/stride with their `_h` defaults, explicit pads, and the SAME
  pads -233/-234 of Convolution::make_padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from deployer.errors import DeployerError


# ------------------------------------------------------------------------------------- rounding

def round_half_away(x: np.ndarray) -> np.ndarray:
    """C `round()`: ties away from zero. Computed in float64 so float32 inputs round exactly."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def round_half_away_f32(v: np.ndarray) -> np.ndarray:
    """C roundf on float32 values |v| <= 127, exactly, without a float64 copy (the EQ search rounds
    millions of values per candidate): rint rounds ties to even, so exact .5 ties (v - rint(v) is
    exact in float32 here) are moved away from zero."""
    r = np.rint(v)
    tie = np.abs(v - r) == np.float32(0.5)
    return np.where(tie, v + np.copysign(np.float32(0.5), v), r)


def quantize_to_int8(data: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """ncnn::quantize_to_int8: `clamp(round(v * scale), -127, 127)` with the product in float32."""
    prod = np.asarray(data, dtype=np.float32) * np.asarray(scale, dtype=np.float32)
    return np.clip(round_half_away(prod), -127, 127).astype(np.int8)


def quantize_f32(x: np.ndarray, scale: Any) -> np.ndarray:
    """The same int8 codes as `quantize_to_int8`, kept as float32 for matmuls.

    Clamping before rounding gives the same integers (rounding is monotonic, 127 is an integer)
    and keeps round_half_away_f32's inputs small."""
    prod = np.multiply(x, np.asarray(scale, dtype=np.float32), dtype=np.float32)
    np.clip(prod, -127, 127, out=prod)
    return round_half_away_f32(prod)


# ---------------------------------------------------------------------------------- activations

def activation(x: np.ndarray, kind: int, params: Sequence[float], where: str = "") -> np.ndarray:
    """ncnn's activation_ss for `activation_type` `kind` and `activation_params`, in float32."""
    p = [np.float32(v) for v in params]
    x = np.asarray(x, dtype=np.float32)
    if kind == 0:
        return x
    if kind == 1:
        return np.where(x < 0, np.float32(0), x)
    if kind == 2:
        return np.where(x < 0, x * p[0], x).astype(np.float32)
    if kind == 3:
        return np.clip(x, p[0], p[1]).astype(np.float32)
    if kind == 4:
        return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)
    if kind == 5:
        return (x * np.tanh(np.log(np.exp(x) + np.float32(1)))).astype(np.float32)
    if kind == 6:
        alpha, beta = p[0], p[1]
        lower = -beta / alpha
        upper = np.float32(1) / alpha + lower
        return np.where(x < lower, np.float32(0), np.where(x > upper, x, x * (x * alpha + beta))).astype(np.float32)
    raise DeployerError(f"{where + ': ' if where else ''}activation_type {kind} is not supported")


def layer_activation(layer: Any) -> tuple[int, list[float]]:
    """(activation_type, activation_params) of a conv/dw/fc layer (params 9 and 10)."""
    kind = int(layer.get(9, 0))
    params = layer.get(10, []) or []
    return kind, [float(v) for v in (params if isinstance(params, list) else [params])]


# ------------------------------------------------------------------------------ conv geometry

@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, dilation, stride and padding of a Convolution/ConvolutionDepthWise/Pooling-like layer."""

    kh: int
    kw: int
    dh: int
    dw: int
    sh: int
    sw: int
    pad_left: int
    pad_right: int
    pad_top: int
    pad_bottom: int

    @classmethod
    def of(cls, layer: Any) -> "ConvGeometry":
        """From a conv layer's params: 1/11 kernel, 2/12 dilation, 3/13 stride, 4/15/14/16 pads."""
        g = layer.get
        kw = int(g(1, 0))
        dw = int(g(2, 1))
        sw = int(g(3, 1))
        pl = int(g(4, 0))
        pt = int(g(14, pl))
        return cls(int(g(11, kw)), kw, int(g(12, dw)), dw, int(g(13, sw)), sw,
                   pl, int(g(15, pl)), pt, int(g(16, pt)))

    @property
    def extent(self) -> tuple[int, int]:
        """(height, width) the dilated kernel covers."""
        return self.dh * (self.kh - 1) + 1, self.dw * (self.kw - 1) + 1

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) as Convolution::make_padding, incl. -233/-234 SAME padding."""
        if self.pad_left in (-233, -234):
            keh, kew = self.extent
            wpad = max(kew + (w - 1) // self.sw * self.sw - w, 0)
            hpad = max(keh + (h - 1) // self.sh * self.sh - h, 0)
            if self.pad_left == -233:
                return hpad // 2, hpad - hpad // 2, wpad // 2, wpad - wpad // 2
            return hpad - hpad // 2, hpad // 2, wpad - wpad // 2, wpad // 2
        return self.pad_top, self.pad_bottom, self.pad_left, self.pad_right

    def pad(self, x: np.ndarray, value: float = 0.0) -> np.ndarray:
        """A (C, H, W) input padded like ncnn."""
        top, bottom, left, right = self.pads(x.shape[1], x.shape[2])
        if not (top or bottom or left or right):
            return x
        return np.pad(x, ((0, 0), (top, bottom), (left, right)), constant_values=value)

    def out_size(self, padded_h: int, padded_w: int) -> tuple[int, int]:
        keh, kew = self.extent
        return (padded_h - keh) // self.sh + 1, (padded_w - kew) // self.sw + 1

    def windows(self, xp: np.ndarray) -> np.ndarray:
        """(C, OH, OW, kh, kw) views of a padded (C, H, W) array."""
        v = np.lib.stride_tricks.sliding_window_view(xp, self.extent, axis=(1, 2))
        return v[:, ::self.sh, ::self.sw, ::self.dh, ::self.dw]
