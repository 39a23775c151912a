"""Input preprocessing (deployer.inputs): decode like cv::imread(path, 1), resize rules of ncnn2table, npy shapes."""

from __future__ import annotations

import ncnn
import numpy as np
import pytest
from PIL import Image

from deployer.errors import DeployerError
from deployer.inputs.decode import decode_bgr, stb_readable
from deployer.inputs.spec import InputSpec
from deployer.inputs.tensor import image_to_mat, load_array, load_mat, load_npy


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
    spec = InputSpec((8, 8, 3), pixel="RGB", mean=(1.0, 2.0, 3.0), norm=(0.5, 0.25, 2.0))
    got = np.array(image_to_mat(decode_bgr(tmp_path / "x.png"), spec))
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
    spec = InputSpec((4, 3, 2), file_type="npy")
    np.testing.assert_array_equal(np.array(load_npy(tmp_path / "x.npy", spec)), x)
    np.testing.assert_array_equal(np.array(load_npy(tmp_path / "b.npy", spec)), x)
    with pytest.raises(DeployerError, match=r"x.npy: array shape \(2, 3, 4\) does not match shape=\[2, 3, 4\]"):
        load_npy(tmp_path / "x.npy", InputSpec((2, 3, 4), file_type="npy"))
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


def test_one_spec_from_lists_is_frozen_and_checked():
    spec = InputSpec([24, 24], pixel="RGB", mean=[127, 127, 127], norm=[1, 1, 1])
    assert spec.shape == (24, 24) and spec.mean == (127.0,) * 3 and spec.norm == (1.0,) * 3
    assert hash(spec) == hash(InputSpec((24, 24), pixel="RGB", mean=(127.0,) * 3, norm=(1.0,) * 3))
    with pytest.raises(ValueError, match="InputSpec.resize='stretch'"):
        InputSpec((24, 24), resize="stretch")
    assert InputSpec((24, 24), resize="none").target_size(640, 480) is None
    assert [InputSpec(s, resize=r).fixed_size for s, r in (((24, 24), "resize"), ((24, 0), "resize"),
                                                            ((24, 24), "none"), ((24, 24), "letterbox"))] == \
        [True, False, False, True]


def test_letterbox_pastes_top_left_and_calibration_sees_the_same_tensor(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 60, 3)).astype(np.uint8)).save(tmp_path / "wide.png")
    spec = InputSpec((32, 32), pixel="RGB", mean=(10.0, 20.0, 30.0), norm=(0.5, 0.5, 0.5), resize="letterbox",
                     pad_value=114.0)
    x = load_array(tmp_path / "wide.png", spec)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    pad = (np.float32(114.0) - np.array([10, 20, 30], np.float32)) * np.float32(0.5)
    np.testing.assert_array_equal(x[:, 16:, :], np.broadcast_to(pad[:, None, None], (3, 16, 32)))
    assert not np.array_equal(x[:, :16, :], np.broadcast_to(pad[:, None, None], (3, 16, 32)))
    np.testing.assert_array_equal(np.array(load_mat(tmp_path / "wide.png", spec)), x)


def test_npy_is_a_ready_tensor_unless_ncnn2table_type_1_asks_for_its_rules(tmp_path):
    x = np.arange(3 * 4 * 5, dtype=np.float64).reshape(1, 3, 4, 5)
    np.save(tmp_path / "x.npy", x)
    got = load_array(tmp_path / "x.npy", InputSpec((5, 4)))                  # auto: by suffix, any dtype
    assert got.dtype == np.float32 and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(np.array(load_mat(tmp_path / "x.npy", InputSpec((5, 4)))), got)
    with pytest.raises(DeployerError, match="dtype is float64, ncnn2table reads float32"):
        load_mat(tmp_path / "x.npy", InputSpec((5, 4, 3), file_type="npy"))
    with pytest.raises(DeployerError, match="x.npy: cannot decode image"):       # type=0: images only
        load_mat(tmp_path / "x.npy", InputSpec((5, 4), file_type="image"))


def test_pixel_codes_and_float32_rounding_match_ncnn_and_numpy():
    """spec.py writes ncnn's pixel codes out (so parsing a profile needs neither ncnn nor numpy):
    they must be the wheel's, and its float32 rounding numpy's."""
    import ncnn

    from deployer.inputs import spec

    pt = ncnn.Mat.PixelType
    for name, code in spec.PIXEL_TYPES.items():
        if name != spec.RAW:
            assert code == int(getattr(pt, f"PIXEL_{name}")), name
    assert spec._CONVERT_SHIFT == int(pt.PIXEL_CONVERT_SHIFT)
    rng = np.random.default_rng(0)
    for x in [25.6, 1 / 3, 512 / 20, *rng.uniform(0.01, 1e4, 1000)]:
        assert spec._float32(float(x)) == float(np.float32(x))
