"""`InputSpec`: how one file becomes one model input, the single description every command uses.

Profiles produce it (deployer.profile), the `ncnn2table` drop-in builds it from ncnn2table's
`key=value` options, and the calibration engine, the check and parity runs consume it. One class
means no field can be lost or re-interpreted in a conversion between the profile's view and the
calibration engine's view (letterbox and `resize: none` used to be translated by hand).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RAW = "RAW"                       # ncnn2table's pixel=RAW: .npy inputs only (ncnn refuses it for images)
# ncnn's Mat::PixelType codes (mat.h), RAW as ncnn2table defines it. Written out, not read from the
# wheel, so that parsing a profile (every command does) loads neither ncnn nor numpy; a unit test
# holds them equal to the wheel's.
PIXEL_TYPES: dict[str, int] = {RAW: -233, "RGB": 1, "BGR": 2, "GRAY": 3, "RGBA": 4, "BGRA": 5}
PIXEL_CHANNELS: dict[str, int] = {"RGB": 3, "BGR": 3, "GRAY": 1, "RGBA": 4, "BGRA": 4}
PIXEL_FORMATS = tuple(PIXEL_CHANNELS)          # what an image can be converted to
RESIZE_MODES = ("resize", "letterbox", "none")
FILE_TYPES = ("auto", "image", "npy")
_CONVERT_SHIFT = 16              # ncnn::Mat::PIXEL_CONVERT_SHIFT


@dataclass(frozen=True)
class InputSpec:
    """How to turn one file into one model input (one per Input layer).

    Frozen, with tuples, because one spec is shared by the profile, the calibration engine and its
    worker processes: nothing may change it under them. Lists from parsers become tuples here.
    """

    shape: tuple[int, ...]      # ncnn order: images [w, h] (a third value, c, is ignored; 0 = keep the
    #                             image's aspect, both 0 = keep its size); file_type npy: exact [w, h, c]
    pixel: str = "BGR"          # channel order the network expects (decoding gives BGR, like cv::imread)
    mean: tuple[float, ...] = ()
    norm: tuple[float, ...] = ()
    resize: str = "resize"      # resize: ncnn2table's rule | letterbox: fit, pad bottom/right | none
    pad_value: float = 114.0    # letterbox fill, in pixel units before mean/norm
    file_type: str = "auto"     # auto: by suffix (.npy = a ready CHW tensor) | image | npy (ncnn2table type=1)
    name: str | None = None     # Input blob; None = the n-th Input layer

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "norm", tuple(float(v) for v in self.norm))
        for field, value, allowed in (("pixel", self.pixel, tuple(PIXEL_TYPES)), ("resize", self.resize, RESIZE_MODES),
                                      ("file_type", self.file_type, FILE_TYPES)):
            if value not in allowed:      # parsers check user input first; this catches programming errors
                raise ValueError(f"InputSpec.{field}={value!r}: expected one of {', '.join(allowed)}")

    @property
    def channels(self) -> int | None:
        """Channels an image gives after pixel conversion (None for RAW)."""
        return PIXEL_CHANNELS.get(self.pixel)

    @property
    def pixel_convert_type(self) -> int:
        """ncnn2table: PIXEL_BGR, plus `pixel << PIXEL_CONVERT_SHIFT` when the target is not BGR."""
        bgr = PIXEL_TYPES["BGR"]
        if self.pixel == "BGR":
            return bgr
        return bgr | (PIXEL_TYPES[self.pixel] << _CONVERT_SHIFT)

    @property
    def fixed_size(self) -> bool:
        """Whether every file gives a tensor of the same size (collection may then keep activations)."""
        if self.file_type == "npy" or self.resize == "letterbox":
            return True
        return self.resize == "resize" and self.shape[0] > 0 and self.shape[1] > 0

    def target_size(self, cols: int, rows: int) -> tuple[int, int] | None:
        """The (w, h) a cols x rows image is resized to, by ncnn2table's rule; None = no resize.

        ncnn computes `float scale = 1.0 * cols / target_w; target_h = int(1.0 * rows / scale)`: the
        ratio is a double division rounded to a 32-bit float, then divided in double and truncated.
        Skipping the float32 rounding changes the size, e.g. 512x512 with shape=[20,0] is 20x19 in
        ncnn (float(25.6) is a hair above 25.6) but would be 20x20 in double precision.
        """
        if self.resize == "none":
            return None
        w, h = self.shape[0], self.shape[1]
        if w <= 0 and h <= 0:
            return None
        if h <= 0:
            scale = _float32(cols / w)
            h = int(rows / scale)
        elif w <= 0:
            scale = _float32(rows / h)
            w = int(cols / scale)
        return w, h


def _float32(x: float) -> float:
    """`x` rounded to the nearest 32-bit float (C's `float f = x`), as a Python float."""
    return struct.unpack("f", struct.pack("f", x))[0]
