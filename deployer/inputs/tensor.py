"""Files -> the float32 tensors a network is fed, the same for calibration, check and the board.

Plain resizing is ncnn2table's own: BGR decode (deployer.inputs.decode), ncnn's
`Mat.from_pixels_resize` (fixed-point bilinear, not PIL's) with the pixel conversion, then
`substract_mean_normalize`, so the `ncnn2table` drop-in sees the tensors ncnn's tool sees.
Letterbox is what detectors like YOLOv8 are fed and ncnn2table cannot do: scale to fit with
ncnn's resize, paste top-left on a `pad_value` canvas (the zoo's YOLOv8 convention, which the
board-side decoding undoes), then mean/norm. A `.npy` is either a ready CHW tensor (file_type auto,
any numeric dtype) or, for the drop-in (file_type npy), ncnn2table's float32 array of exactly `shape`.
"""

from __future__ import annotations

from pathlib import Path

import ncnn
import numpy as np

from deployer.errors import DeployerError
from deployer.inputs.decode import decode_bgr, read_npy
from deployer.inputs.spec import RAW, InputSpec


def image_to_mat(bgr: np.ndarray, spec: InputSpec) -> ncnn.Mat:
    """ncnn's from_pixels(_resize) + substract_mean_normalize on a decoded BGR image."""
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


def _normalize(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    c = x.shape[0]
    mean = np.asarray(spec.mean or [0.0] * c, np.float32).reshape(-1, 1, 1)
    norm = np.asarray(spec.norm or [1.0] * c, np.float32).reshape(-1, 1, 1)
    return ((x - mean) * norm).astype(np.float32)


def letterbox(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Fit into shape (W, H) keeping the aspect, pasted top-left on a `pad_value` canvas; CHW float32."""
    tw, th = spec.shape[0], spec.shape[1]
    h, w = bgr.shape[:2]
    scale = min(tw / w, th / h)
    nw, nh = max(1, min(tw, round(w * scale))), max(1, min(th, round(h * scale)))
    mat = ncnn.Mat.from_pixels_resize(np.ascontiguousarray(bgr), spec.pixel_convert_type, w, h, nw, nh)
    inner = np.array(mat, dtype=np.float32).reshape(-1, nh, nw)
    canvas = np.full((inner.shape[0], th, tw), spec.pad_value, dtype=np.float32)
    canvas[:, :nh, :nw] = inner
    return _normalize(canvas, spec)


def _is_npy(path: Path, spec: InputSpec) -> bool:
    return spec.file_type == "npy" or (spec.file_type == "auto" and path.suffix.lower() == ".npy")


def _without_batch(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Drop a leading batch dimension of 1 from an `ndim`-D tensor (numpy exports often keep it)."""
    return arr[0] if arr.ndim == ndim + 1 and arr.shape[0] == 1 else arr


def _exact_npy(path: Path, spec: InputSpec) -> np.ndarray:
    """ncnn2table's type=1: float32 whose shape, reversed, equals `shape` ([w,h,c] vs numpy's (c,h,w)).

    A leading batch dimension of 1 is accepted and dropped (numpy exports often keep it).
    """
    arr = read_npy(path)
    if arr.dtype != np.float32:
        raise DeployerError(f"{path}: dtype is {arr.dtype}, ncnn2table reads float32 .npy only; "
                            "save it with .astype(np.float32)")
    want = tuple(reversed(spec.shape))
    arr = _without_batch(arr, len(want))
    if arr.shape != want:
        raise DeployerError(f"{path}: array shape {arr.shape} does not match shape={list(spec.shape)} "
                            f"(ncnn [w,h,c] order, i.e. numpy {want})")
    if not 1 <= arr.ndim <= 4:
        raise DeployerError(f"{path}: {arr.ndim}-D arrays are not supported (1 to 4 dims)")
    return np.ascontiguousarray(arr)


def _ready_npy(path: Path) -> np.ndarray:
    """A ready CHW tensor (a leading batch of 1 dropped), any numeric dtype, as float32."""
    arr = _without_batch(read_npy(path), 3)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _to_mat(arr: np.ndarray) -> ncnn.Mat:
    data = np.ascontiguousarray(arr, dtype=np.float32)   # ncnn.Mat borrows this buffer: keep it alive until cloned
    return ncnn.Mat(data).clone()


def load_npy(path: str | Path, spec: InputSpec) -> ncnn.Mat:
    """ncnn2table's type=1 input as a Mat (see `_exact_npy`)."""
    return _to_mat(_exact_npy(Path(path), spec))


def load_array(path: str | Path, spec: InputSpec) -> np.ndarray:
    """One file -> the float32 tensor (numpy, ncnn's c, h, w order) for one model input."""
    path = Path(path)
    if _is_npy(path, spec):
        return _exact_npy(path, spec) if spec.file_type == "npy" else _ready_npy(path)
    bgr = decode_bgr(path)
    if spec.resize == "letterbox":
        return letterbox(bgr, spec)
    mat = image_to_mat(bgr, spec)
    return np.array(mat, dtype=np.float32).reshape(mat.c, mat.h, mat.w).copy()


def load_mat(path: str | Path, spec: InputSpec) -> ncnn.Mat:
    """One file -> the ncnn.Mat the calibration engine feeds. Images resized ncnn2table's way come
    straight from ncnn's pixel helpers, as in ncnn's tool; other inputs go through `load_array`."""
    path = Path(path)
    if spec.file_type == "npy":
        return load_npy(path, spec)
    if not _is_npy(path, spec) and spec.resize != "letterbox":
        return image_to_mat(decode_bgr(path), spec)
    return _to_mat(load_array(path, spec))
