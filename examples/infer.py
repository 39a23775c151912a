"""Run zoo models in the stock ncnn wheel, as a true fp32 (or int8) reference.

Kept apart from deployer.inputs on purpose: the zoo checks must hold against ncnn's own
pixel routines (Mat.from_pixels_resize + substract_mean_normalize), so they can catch a mistake in
deployer's reimplementation instead of sharing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from deployer.errors import DeployerError


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input tensor, in ncnn's terms.

    value = (pixel - mean[c]) * norm[c] on the `pixel`-ordered channels after resizing to the input
    size. "letterbox" keeps the aspect ratio: the image is scaled to fit and the right/bottom border
    is filled with `pad_value` (a raw pixel value, before mean/norm), as NudeNet's YOLOv8 expects.
    """

    pixel: str                       # "RGB" | "BGR" | "GRAY": channel order the model was trained on
    mean: tuple[float, ...]
    norm: tuple[float, ...]
    resize: str = "resize"           # "resize" (stretch to the input size) | "letterbox"
    pad_value: float = 0.0


_PIXEL_FROM_RGB = {"RGB": "PIXEL_RGB", "BGR": "PIXEL_RGB2BGR", "GRAY": "PIXEL_RGB2GRAY"}


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode any image PIL reads to HxWx3 uint8 RGB (gray and RGBA are converted)."""
    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except (OSError, ValueError) as err:
        raise DeployerError(f"{path}: cannot read image ({err})", hint="use a PNG/JPEG/BMP file") from None


def letterbox_geometry(w: int, h: int, tw: int, th: int) -> tuple[float, int, int]:
    """Scale and resized size for fitting a w x h image into tw x th without distortion."""
    scale = min(tw / w, th / h)
    return scale, max(1, round(w * scale)), max(1, round(h * scale))


def image_to_input(rgb: np.ndarray, pre: Preprocess, shape: Sequence[int]) -> np.ndarray:
    """HxWx3 uint8 RGB -> CxHxW float32 exactly as ncnn's pixel helpers compute it."""
    import ncnn

    _, th, tw = shape
    h, w = rgb.shape[:2]
    ptype = getattr(ncnn.Mat.PixelType, _PIXEL_FROM_RGB[pre.pixel])
    rgb = np.ascontiguousarray(rgb)
    if pre.resize == "letterbox":
        _, nw, nh = letterbox_geometry(w, h, tw, th)
        mat = ncnn.Mat.from_pixels_resize(rgb, ptype, w, h, nw, nh)
        inner = np.array(mat, dtype=np.float32).reshape(-1, nh, nw)
        x = np.full((inner.shape[0], th, tw), pre.pad_value, dtype=np.float32)
        x[:, :nh, :nw] = inner
        mean = np.asarray(pre.mean or [0.0] * x.shape[0], np.float32).reshape(-1, 1, 1)
        norm = np.asarray(pre.norm or [1.0] * x.shape[0], np.float32).reshape(-1, 1, 1)
        return ((x - mean) * norm).astype(np.float32)
    if pre.resize != "resize":
        raise DeployerError(f"preprocess.resize={pre.resize!r}", hint="use resize or letterbox")
    mat = ncnn.Mat.from_pixels_resize(rgb, ptype, w, h, tw, th)
    mat.substract_mean_normalize(list(pre.mean), list(pre.norm))
    return np.array(mat, dtype=np.float32).reshape(-1, th, tw).copy()


class NcnnRunner:
    """An ncnn.Net with fp16 storage/packing/arithmetic off, so fp32 means fp32.

    ncnn's x86 defaults keep fp16 on, which moves MobileNetV2 logits by ~1e-2 and would pollute any
    int8-vs-fp32 comparison. Threads are set before loading because ncnn fixes them at load time.
    """

    def __init__(self, param: str | Path, bin: str | Path, *, threads: int = 2, fp16: bool = False,
                 int8: bool = True, lightmode: bool = True) -> None:
        import ncnn

        self.net = ncnn.Net()
        opt = self.net.opt
        opt.num_threads = threads
        opt.lightmode = lightmode
        opt.use_int8_inference = int8
        for key in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
            setattr(opt, key, fp16)
        for path in (param, bin):
            if not Path(path).is_file():
                raise DeployerError(f"{path}: no such model file", hint="build it with python -m examples.zoo")
        if self.net.load_param(str(param)) != 0:
            raise DeployerError(f"{param}: ncnn could not parse this .param")
        if self.net.load_model(str(bin)) != 0:
            raise DeployerError(f"{bin}: ncnn could not load weights for {param}")

    def run(self, inputs: dict[str, np.ndarray], outputs: Iterable[str]) -> dict[str, np.ndarray]:
        import ncnn

        ex = self.net.create_extractor()
        for name, x in inputs.items():
            ex.input(name, ncnn.Mat(np.ascontiguousarray(x, dtype=np.float32)).clone())
        result = {}
        for name in outputs:
            rc, mat = ex.extract(name)
            if rc != 0:
                raise DeployerError(f"ncnn could not extract blob {name!r} (rc={rc})")
            result[name] = np.array(mat, dtype=np.float32).copy()
        return result
