"""Input files -> pixels or arrays: images decoded like ncnn2table decodes them, user .npy files checked.

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

from pathlib import Path

import numpy as np

from deployer.errors import DeployerError
from deployer.fsutil import read_input

IMAGE_MAX_BYTES = 256 << 20       # one calibration/check image file
IMAGE_MAX_PIXELS = 1 << 26        # decoded pixels (64 Mpx): above it Pillow's bomb check or memory runs out


def stb_readable(path: str | Path) -> bool:
    """Whether ncnn's simpleocv imread (stb_image with STBI_ONLY_JPEG/PNG/BMP/PNM) can decode the
    file, judged by its magic bytes like stb does. stb's PNM reader takes binary P5/P6 only."""
    try:
        head = read_input(path, "image")[:8]
    except DeployerError:
        return True                      # unreadable files are reported elsewhere, with the list line
    return head.startswith((b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"BM")) or head[:2] in (b"P5", b"P6")


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
