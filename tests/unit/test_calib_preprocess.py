"""Calibration preprocessing: decode like cv::imread(path, 1), resize rules of ncnn2table, npy shapes."""

from __future__ import annotations

import ncnn
import numpy as np
import pytest
from PIL import Image

from deployer.errors import DeployerError
from deployer.quant.preprocess import PIXEL_TYPES, InputSpec, decode_bgr, load_image, load_npy, stb_readable


def test_decode_is_bgr_three_channel(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200                                   # red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    bgr = decode_bgr(tmp_path / "red.png")
    assert bgr.shape == (4, 5, 3) and (bgr[..., 2] == 200).all() and (bgr[..., :2] == 0).all()

    Image.fromarray(np.full((3, 3), 77, np.uint8)).save(tmp_path / "gray.png")
    assert (decode_bgr(tmp_path / "gray.png") == 77).all()      # gray -> 3 equal channels

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 1] = 10
    rgba[..., 3] = 0                                    # fully transparent: alpha is dropped
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert (decode_bgr(tmp_path / "a.png")[..., 1] == 10).all()


def test_decode_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 nope")
    with pytest.raises(DeployerError, match="bad.jpg: cannot decode image"):
        decode_bgr(bad)
    with pytest.raises(DeployerError, match="gone.png: image not found"):
        decode_bgr(tmp_path / "gone.png")


@pytest.mark.parametrize("shape, size, expect", [
    ((224, 224), (640, 480), (224, 224)),
    ((0, 0), (640, 480), None),
    ((320, 0), (640, 480), (320, 240)),      # width fixed, aspect kept, int() truncation
    ((0, 100), (640, 480), (133, 100)),
    ((300, -1), (1001, 333), (300, 99)),
])
def test_resize_rules_of_ncnn2table(shape, size, expect):
    assert InputSpec(shape).target_size(*size) == expect


def _ncnn_keep_aspect(shape, cols, rows):
    """ncnn2table's read_and_resize_image in C terms: `float scale = 1.0 * cols / target_w;`
    (double division stored in a 32-bit float, here via ctypes.c_float), then
    `target_h = (int)(1.0 * rows / scale)`."""
    import ctypes
    w, h = shape
    if h <= 0:
        scale = ctypes.c_float(1.0 * cols / w).value
        return w, int(1.0 * rows / scale)
    scale = ctypes.c_float(1.0 * rows / h).value
    return int(1.0 * cols / scale), h


def test_keep_aspect_rounds_scale_to_float32_like_ncnn():
    # The case found against the real ncnn2table: 512x512 with shape=[20,0] is 20x19 there.
    assert InputSpec((20, 0)).target_size(512, 512) == (20, 19)
    assert InputSpec((0, 18)).target_size(512, 512) == (17, 18)
    assert InputSpec((0, 18)).target_size(550, 660) == (14, 18)
    # And over a grid of sizes, always ncnn's formula (this grid has many double/float disagreements).
    disagreements = 0
    for shape in [(20, 0), (0, 18), (224, 0), (0, 224), (7, -1), (-1, 33)]:
        for cols in range(16, 700, 37):
            for rows in range(16, 700, 41):
                expect = _ncnn_keep_aspect(shape, cols, rows)
                assert InputSpec(shape).target_size(cols, rows) == expect, (shape, cols, rows)
                w, h = shape
                naive = (w, int(rows / (cols / w))) if h <= 0 else (int(cols / (rows / h)), h)
                disagreements += naive != expect
    assert disagreements > 0          # the grid does exercise the float32 rounding


def test_image_goes_through_ncnns_own_resize_and_normalize(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (21, 17, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    spec = InputSpec((8, 8, 3), (1.0, 2.0, 3.0), (0.5, 0.25, 2.0), PIXEL_TYPES["RGB"])
    got = np.array(load_image(tmp_path / "x.png", spec))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ref = ncnn.Mat.from_pixels_resize(bgr, int(ncnn.Mat.PixelType.PIXEL_BGR2RGB), 17, 21, 8, 8)
    ref = np.array(ref)
    expect = (ref - np.array([1.0, 2.0, 3.0])[:, None, None]) * np.array([0.5, 0.25, 2.0])[:, None, None]
    assert got.shape == (3, 8, 8)
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    # channel 0 is red after BGR -> RGB
    assert abs(float(ref[0].mean()) - float(rgb[..., 0].mean())) < 20


def test_npy_shape_is_ncnn_whc_and_batch_one_is_accepted(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "b.npy", x[None])
    np.save(tmp_path / "d.npy", x.astype(np.float64))
    spec = InputSpec((4, 3, 2), file_type=1)
    np.testing.assert_array_equal(np.array(load_npy(tmp_path / "x.npy", spec)), x)
    np.testing.assert_array_equal(np.array(load_npy(tmp_path / "b.npy", spec)), x)
    with pytest.raises(DeployerError, match=r"x.npy: array shape \(2, 3, 4\) does not match shape=\[2, 3, 4\]"):
        load_npy(tmp_path / "x.npy", InputSpec((2, 3, 4), file_type=1))
    with pytest.raises(DeployerError, match="d.npy: dtype is float64"):
        load_npy(tmp_path / "d.npy", spec)


def test_stb_readable_matches_the_formats_ncnn_builds_stb_with(tmp_path):
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    readable = {"a.png": "PNG", "a.jpg": "JPEG", "a.bmp": "BMP", "a.ppm": "PPM"}
    for name, fmt in {**readable, "a.tif": "TIFF", "a.webp": "WEBP", "a.gif": "GIF"}.items():
        img.save(tmp_path / name, fmt)
        assert stb_readable(tmp_path / name) == (name in readable), name
        assert decode_bgr(tmp_path / name).shape == (4, 4, 3)      # we decode all of them
    (tmp_path / "ascii.ppm").write_bytes(b"P3\n1 1\n255\n1 2 3\n")   # stb reads binary P5/P6 only
    assert not stb_readable(tmp_path / "ascii.ppm")
