"""Calibration inputs prepared exactly the way ncnn2table prepares them.

Calibration statistics are only as good as the match between calibration and inference
preprocessing, and a drop-in ncnn2table must see the same tensors ncnn's tool sees. So images are
decoded as BGR 3-channel (ncnn2table uses cv::imread(path, 1)), resized and converted by ncnn's own
`Mat.from_pixels_resize` (fixed-point bilinear, not PIL's), then `substract_mean_normalize`.
The npy path (type=1) takes float32 arrays whose shape is given in ncnn's [w,h,c] order.

Decoding parity with ncnn (measured against a reference ncnn2table built with simpleocv):
PNG (every bit depth/colour type), BMP, PNM, grayscale/CMYK JPEG and .npy give bit-identical
tables. Colour JPEGs do not: ncnn built with simpleocv decodes with stb_image (its own IDCT, chroma
upsampler and fixed-point YCbCr->RGB), Pillow and ncnn built with OpenCV use libjpeg-turbo; 3-6 % of
pixels differ by up to 3, which moves KL thresholds (ACIQ/absmax hardly move). Bit parity would need
a reimplementation of stb's JPEG decoder, so we keep libjpeg-turbo. Formats stb_image is not built
for in ncnn (TIFF, WebP, GIF, ...) are decoded here; ncnn2table would silently calibrate on an
uninitialised Mat (see `stb_readable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ncnn
import numpy as np

from deployer.errors import DeployerError
from deployer.fsutil import read_input

IMAGE_MAX_BYTES = 256 << 20       # one calibration/check image file
IMAGE_MAX_PIXELS = 1 << 26        # decoded pixels (64 Mpx): above it Pillow's bomb check or memory runs out

RAW = -233
_PT = ncnn.Mat.PixelType
PIXEL_TYPES: dict[str, int] = {
    "RAW": RAW,
    "RGB": int(_PT.PIXEL_RGB),
    "BGR": int(_PT.PIXEL_BGR),
    "GRAY": int(_PT.PIXEL_GRAY),
    "RGBA": int(_PT.PIXEL_RGBA),
    "BGRA": int(_PT.PIXEL_BGRA),
}
PIXEL_NAMES = {v: k for k, v in PIXEL_TYPES.items()}
_CONVERT_SHIFT = int(_PT.PIXEL_CONVERT_SHIFT)


@dataclass(frozen=True)
class InputSpec:
    """How to turn one file into one model input (one entry per Input layer)."""

    shape: tuple[int, ...]                # ncnn order [w, h] or [w, h, c] (npy: exact, any rank 1-4)
    mean: tuple[float, ...] = ()
    norm: tuple[float, ...] = ()
    pixel: int = PIXEL_TYPES["BGR"]        # target pixel format
    file_type: int = 0                     # 0 = image, 1 = npy

    @property
    def pixel_convert_type(self) -> int:
        """ncnn2table: PIXEL_BGR, plus `pixel << PIXEL_CONVERT_SHIFT` when the target is not BGR."""
        bgr = PIXEL_TYPES["BGR"]
        if self.pixel == bgr:
            return bgr
        return bgr | (self.pixel << _CONVERT_SHIFT)

    def target_size(self, cols: int, rows: int) -> tuple[int, int] | None:
        """ncnn2table's resize rule; None = no resize.

        ncnn computes `float scale = 1.0 * cols / target_w; target_h = int(1.0 * rows / scale)`: the
        ratio is a double division rounded to a 32-bit float, then divided in double and truncated.
        Skipping the float32 rounding changes the size, e.g. 512x512 with shape=[20,0] is 20x19 in
        ncnn (float(25.6) is a hair above 25.6) but would be 20x20 in double precision.
        """
        w, h = self.shape[0], self.shape[1]
        if w <= 0 and h <= 0:
            return None
        if h <= 0:
            scale = float(np.float32(cols / w))
            h = int(rows / scale)
        elif w <= 0:
            scale = float(np.float32(rows / h))
            w = int(cols / scale)
        return w, h


def stb_readable(path: str | Path) -> bool:
    """Whether ncnn's simpleocv imread (stb_image with STBI_ONLY_JPEG/PNG/BMP/PNM) can decode the
    file, judged by its magic bytes like stb does. stb's PNM reader takes binary P5/P6 only."""
    try:
        head = read_input(path, "image")[:8]
    except DeployerError:
        return True                      # unreadable files are reported elsewhere, with the list line
    return (head.startswith(b"\xff\xd8") or head.startswith(b"\x89PNG\r\n\x1a\n")
            or head.startswith(b"BM") or head[:2] in (b"P5", b"P6"))


def decode_bgr(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 BGR, like cv::imread(path, IMREAD_COLOR). Errors name the file."""
    import io

    from PIL import Image, UnidentifiedImageError

    data = read_input(path, "image", limit=IMAGE_MAX_BYTES)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > IMAGE_MAX_PIXELS:
                raise DeployerError(f"{path}: image is {im.width}x{im.height}, over the limit of "
                                    f"{IMAGE_MAX_PIXELS:,} pixels")
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # OpenCV scales 16-bit images down to 8 bits (>> 8) for IMREAD_COLOR.
                arr = np.asarray(im, dtype=np.uint32) >> 8
                im = Image.fromarray(arr.astype(np.uint8))
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DeployerError(f"{path}: image not found") from None
    except DeployerError:
        raise
    except UnidentifiedImageError:
        raise DeployerError(f"{path}: cannot decode image (not a format Pillow reads, or corrupt)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DeployerError(f"{path}: cannot decode image ({err})") from None
    except Exception as err:  # noqa: BLE001 - Pillow's decoders raise anything on corrupt data
        raise DeployerError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def image_to_mat(bgr: np.ndarray, spec: InputSpec) -> ncnn.Mat:
    """ncnn's from_pixels_resize + substract_mean_normalize on a decoded BGR image."""
    if spec.pixel == RAW:
        raise DeployerError("pixel=RAW cannot be used with images (ncnn rejects it); use type=1 with .npy inputs")
    rows, cols = bgr.shape[:2]
    size = spec.target_size(cols, rows)
    if size is None:
        mat = ncnn.Mat.from_pixels(bgr, spec.pixel_convert_type, cols, rows)
    else:
        if size[0] <= 0 or size[1] <= 0:
            raise DeployerError(f"shape={list(spec.shape)} resizes a {cols}x{rows} image to {size[0]}x{size[1]}")
        mat = ncnn.Mat.from_pixels_resize(bgr, spec.pixel_convert_type, cols, rows, size[0], size[1])
    mat.substract_mean_normalize(list(spec.mean), list(spec.norm))
    return mat


def load_image(path: str | Path, spec: InputSpec) -> ncnn.Mat:
    return image_to_mat(decode_bgr(path), spec)


def load_npy(path: str | Path, spec: InputSpec) -> ncnn.Mat:
    """A float32 .npy whose shape, reversed, equals `shape` ([w,h,c] vs numpy's (c,h,w)).

    A leading batch dimension of 1 is accepted and dropped (numpy exports often keep it).
    """
    arr = read_npy(path)
    if arr.dtype != np.float32:
        raise DeployerError(f"{path}: dtype is {arr.dtype}, ncnn2table reads float32 .npy only; "
                            "save it with .astype(np.float32)")
    want = tuple(reversed(spec.shape))
    if arr.ndim == len(want) + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != want:
        raise DeployerError(f"{path}: array shape {arr.shape} does not match shape={list(spec.shape)} "
                            f"(ncnn [w,h,c] order, i.e. numpy {want})")
    if not 1 <= arr.ndim <= 4:
        raise DeployerError(f"{path}: {arr.ndim}-D arrays are not supported (1 to 4 dims)")
    data = np.ascontiguousarray(arr)  # ncnn.Mat borrows this buffer: keep it alive until cloned
    return ncnn.Mat(data).clone()


def read_npy(path: str | Path) -> np.ndarray:
    """A user's .npy through fsutil (regular file, size cap), finite values only."""
    import io

    data = read_input(path, ".npy file")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError/EOFError/... on corrupt headers
        raise DeployerError(f"{path}: cannot read as .npy ({type(err).__name__}: {err})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
        raise DeployerError(f"{path}: .npy holds {getattr(arr, 'dtype', type(arr).__name__)}, expected numbers")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DeployerError(f"{path}: .npy holds NaN or Inf values", hint="inputs must be finite numbers")
    return arr


def load_input(path: str | Path, spec: InputSpec) -> ncnn.Mat:
    return load_npy(path, spec) if spec.file_type == 1 else load_image(path, spec)
