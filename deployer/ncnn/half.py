"""fp32 <-> fp16 bit-for-bit as the ncnn tools that write .bin files do it.

The ncnn ecosystem has three encoders, and a converted model is only byte-identical to the tool's
own output if we pick the same one:
- "nearest": IEEE round-to-nearest-even with subnormals, what ncnn's Cast layer does on x86 (F16C)
  and therefore what ncnn2int8's ModelWriter writes there (verified against the ncnn wheel).
- "pnnx": round half away from zero on the magnitude, results below the smallest normal half
  flushed to signed zero, overflow to infinity (verified against the pnnx wheel's fp16 export).
- "truncate": ncnn's scalar float32_to_float16 in src/mat.cpp as published: mantissa truncated,
  subnormals flushed.
All three send NaN to the quiet NaN 0x7e00 (with sign). Decoding is exact IEEE in every tool,
subnormal halves included. Values that are already exact halves encode identically in every mode,
so `round_trip(x, mode)` followed by fp16 storage gives that tool's bytes.
"""

from __future__ import annotations

import numpy as np

ROUNDINGS = ("nearest", "pnnx", "truncate")


def float32_to_float16(values: np.ndarray, rounding: str = "nearest") -> np.ndarray:
    """float32 array -> uint16 bit patterns with the chosen tool's rounding (see module doc)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
    if rounding == "nearest":
        with np.errstate(over="ignore"):
            return np.asarray(values, dtype=np.float32).astype(np.float16).view(np.uint16)
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    sign = (((u >> 31) & 1) << 15).astype(np.uint32)
    exponent = ((u >> 23) & 0xFF).astype(np.int32)
    significand = u & 0x7FFFFF
    newexp = exponent - 127 + 15
    out = (np.clip(newexp, 0, 31).astype(np.uint32) << 10) | (significand >> 13)
    if rounding == "pnnx":
        out = np.minimum(out + ((significand >> 12) & 1), 0x7C00)   # carry may reach inf
    out = sign | out
    out = np.where((exponent == 0) | (newexp <= 0), sign, out)
    out = np.where((exponent != 0xFF) & (newexp >= 31), sign | 0x7C00, out)
    nan_or_inf = sign | 0x7C00 | np.where(significand != 0, 0x200, 0)
    out = np.where(exponent == 0xFF, nan_or_inf, out)
    return out.astype(np.uint16)


def float16_to_float32(bits: np.ndarray) -> np.ndarray:
    """uint16 bit patterns -> float32 values, ncnn's conversion (exact, subnormals kept)."""
    h = np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32)
    sign = (h & 0x8000) << 16
    exponent = (h >> 10) & 0x1F
    significand = h & 0x3FF
    normal = sign | ((exponent + (127 - 15)) << 23) | (significand << 13)
    special = sign | np.uint32(0xFF << 23) | (significand << 13)
    out = np.where(exponent == 0x1F, special, normal)
    # zero / subnormal: the value is significand * 2^-24, exactly representable in fp32
    sub = exponent == 0
    if sub.any():
        mags = significand[sub].astype(np.float32) * np.float32(2.0 ** -24)
        out[sub] = mags.view(np.uint32) | sign[sub]
    return out.view(np.float32)


def round_trip(values: np.ndarray, rounding: str = "nearest") -> np.ndarray:
    """What ncnn computes with after `values` are stored as fp16 by the tool named by `rounding`."""
    return float16_to_float32(float32_to_float16(values, rounding))
