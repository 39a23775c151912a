"""Calibration preprocessing: decode like cv::imread(path, 1), resize rules of ncnn2table, npy shapes."""

from __future__ import annotations

import ncnn
import numpy as np
import pytest
from PIL import Image

from deployer.errors import DeployerError
from deployer.quant.preprocess import PIXEL_TYPES, InputSpec, decode_bgr, load_image, load_npy


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
