"""Logic of examples/: blob discovery, letterbox maths, YOLO decoding, splits, crops, cache rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployer.errors import DeployerError
from examples import data, zoo
from examples.evaluate import YOLO_CLASSES, decode_yolov8
from examples.infer import Preprocess, image_to_input, letterbox_geometry

ROOT = Path(__file__).resolve().parents[2]

PARAM = """7767517
5 6
Input            in0      0 1 in0
Convolution      conv_0   1 1 in0 1 0=8 1=3 5=1 6=216
Split            split_0  1 2 1 2 3
ReLU             relu_0   1 1 2 out0
Sigmoid          sig_0    1 1 3 out1
"""


def test_blob_io_finds_inputs_and_unconsumed_outputs(tmp_path):
    p = tmp_path / "m.param"
    p.write_text(PARAM)
    assert zoo._blob_io(p) == (["in0"], ["out0", "out1"])


@pytest.mark.parametrize("w,h,tw,th,expect", [
    (640, 480, 320, 320, (0.5, 320, 240)),
    (300, 600, 320, 320, (320 / 600, 160, 320)),
    (320, 320, 320, 320, (1.0, 320, 320)),
])
def test_letterbox_geometry_keeps_aspect(w, h, tw, th, expect):
    scale, nw, nh = letterbox_geometry(w, h, tw, th)
    assert scale == pytest.approx(expect[0])
    assert (nw, nh) == expect[1:]


def test_image_to_input_same_size_is_plain_mean_norm():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    pre = Preprocess(pixel="BGR", mean=(1.0, 2.0, 3.0), norm=(0.5, 0.25, 2.0))
    x = image_to_input(rgb, pre, (3, 6, 5))
    bgr = rgb[..., ::-1].transpose(2, 0, 1).astype(np.float32)
    want = (bgr - np.array([1, 2, 3], np.float32)[:, None, None]) * np.array([0.5, 0.25, 2], np.float32)[:, None, None]
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-5)


def test_letterbox_pads_right_and_bottom_with_pad_value():
    rgb = np.full((10, 20, 3), 200, np.uint8)          # wide image -> bottom padding
    pre = Preprocess(pixel="RGB", mean=(0, 0, 0), norm=(1, 1, 1), resize="letterbox", pad_value=7.0)
    x = image_to_input(rgb, pre, (3, 20, 20))
    assert x.shape == (3, 20, 20)
    assert np.all(x[:, :10, :] == 200) and np.all(x[:, 10:, :] == 7.0)


def test_bad_resize_mode_is_one_line_error():
    with pytest.raises(DeployerError, match="resize"):
        image_to_input(np.zeros((4, 4, 3), np.uint8), Preprocess("RGB", (), (), resize="crop"), (3, 4, 4))


def _head(rows: list[tuple[float, float, float, float, int, float]], n: int = 50) -> np.ndarray:
    out = np.zeros((4 + len(YOLO_CLASSES), n), np.float32)
    for j, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[:4, j] = (cx, cy, w, h)
        out[4 + cls, j] = score
    return out


def test_decode_yolov8_nms_and_unletterbox():
    out = _head([
        (100, 100, 40, 40, 1, 0.9),      # face
        (102, 101, 40, 40, 1, 0.6),      # duplicate of the same face -> suppressed
        (250, 60, 20, 30, 12, 0.5),      # a different box, kept
        (10, 10, 5, 5, 3, 0.1),          # below threshold
    ])
    dets = decode_yolov8(out, image_wh=(640, 480), input_hw=(320, 320))
    assert [d.label for d in dets] == ["FACE_FEMALE", "FACE_MALE"]
    x0, y0, x1, y1 = dets[0].box
    assert (x0, y0, x1, y1) == pytest.approx((160, 160, 240, 240))   # scale 0.5 undone
    assert dets[0].score == pytest.approx(0.9)


def test_lfw_split_is_disjoint_and_balanced():
    calib, held = data.lfw_split()
    assert len(calib) == 50 and len(held) == 150
    assert not set(calib) & set(held)
    assert sum(i < 100 for i in calib) == 25


def test_digits_split_shapes_and_stratification():
    split = data.digits_split()
    xtr, ytr = split["train"]
    xte, yte = split["test"]
    assert xtr.shape[1:] == (16, 16) and xtr.dtype == np.uint8
    assert len(xtr) + len(xte) == 1797 and 440 <= len(xte) <= 460
    for cls in range(10):                                  # every class split 75/25 on its own
        n_test, n_all = (yte == cls).sum(), (yte == cls).sum() + (ytr == cls).sum()
        assert abs(n_test - n_all * 0.25) <= 1
    again = data.digits_split()
    assert np.array_equal(again["test"][0], xte) and np.array_equal(again["train"][1], ytr)


def test_random_crops_are_deterministic_and_inside_bounds():
    rng = np.random.default_rng(0)
    photos = {"a": rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
              "b": rng.integers(0, 256, (500, 200, 3), dtype=np.uint8)}
    one = data.random_crops(photos, 6, seed=3, max_side=128)
    two = data.random_crops(photos, 6, seed=3, max_side=128)
    other = data.random_crops(photos, 6, seed=4, max_side=128)
    assert [n for n, _ in one] == ["000_a", "001_b", "002_a", "003_b", "004_a", "005_b"]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, two))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, other))
    assert all(max(c.shape[:2]) <= 128 and c.shape[2] == 3 for _, c in one)


def test_imagenet_labels_parsed_from_file_names():
    samples = data.imagenet_samples()
    assert len(samples) == 20
    for path, label in samples:
        assert path.name.endswith(f"_{label}.jpg")
        assert 0 <= label < 1000


def test_unknown_model_names_choices():
    with pytest.raises(DeployerError, match="unknown zoo model 'resnet'.*mobilenet_v2"):
        zoo.build("resnet")


def test_missing_package_is_missing_wheel():
    with pytest.raises(data.MissingWheel, match="no_such_pkg_xyz"):
        data.package_dir("no_such_pkg_xyz")


def test_stale_or_corrupt_cache_entry_is_not_trusted(tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"v1")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.param").write_text(PARAM)
    (folder / "model.bin").write_bytes(b"\0" * 4)
    model = zoo.ZooModel("m", folder / "model.param", folder / "model.bin", ["in0"], ["out0"], (3, 4, 4),
                         zoo.MTCNN, "face", "d", "MIT", str(source))
    meta = {"build_version": zoo.BUILD_VERSION, "source_sha256": zoo._sha256(source), "model": model.to_json()}
    (folder / "zoo.json").write_text(json.dumps(meta))
    assert zoo._load_cached(folder, source) == model
    source.write_bytes(b"v2")                               # weights changed -> rebuild
    assert zoo._load_cached(folder, source) is None
    source.write_bytes(b"v1")
    (folder / "zoo.json").write_text("{not json")           # torn metadata -> rebuild
    assert zoo._load_cached(folder, source) is None


def test_input_spec_matches_profile_fields():
    model = zoo.ZooModel("y", Path("p"), Path("b"), ["in0"], ["out0"], (3, 320, 256), zoo.YOLO, "detect",
                         "d", "AGPL", "s")
    spec = model.input_spec()
    assert spec["shape"] == [256, 320] and spec["resize"] == "letterbox" and spec["pad_value"] == 0.0


def test_cli_unknown_model_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "examples.zoo", "nope"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown zoo model 'nope'" in proc.stderr


def test_cli_list_shows_task_and_descriptions_verbatim():
    """examples/README: `zoo list` shows what exists, task, licence. The MTCNN descriptions'
    "[non-face, face]" was eaten as rich markup ("out0 =  prob") and the task was not shown."""
    proc = subprocess.run([sys.executable, "-m", "examples.zoo", "list"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stderr.splitlines() if line.strip()}  # messages: stderr
    assert set(rows) == set(zoo.names())
    assert "out0 = [non-face, face] prob" in rows["mtcnn_onet"]
    assert rows["yolov8n"].split()[1] == "detect" and rows["mobilenet_v2"].split()[1] == "classify"


def test_npy_inputs_writes_preprocessed_tensors_and_keeps_labels(tmp_path):
    from PIL import Image

    src = tmp_path / "img"
    src.mkdir()
    files = []
    for i, value in enumerate((0, 255)):
        path = src / f"x{i}.png"
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
        files.append(path)
    ds = data.DataSet(src, src / "list.txt", files, {"x0.png": 0, "x1.png": 1})
    out = data.npy_inputs(ds, zoo.MTCNN, (3, 4, 4), tmp_path / "npy")
    assert [p.name for p in out.files] == ["x0.npy", "x1.npy"]
    assert out.labels == {"x0.npy": 0, "x1.npy": 1}
    x1 = np.load(out.files[1])
    assert x1.shape == (3, 4, 4) and x1.dtype == np.float32
    np.testing.assert_allclose(x1, (255 - 127.5) / 128)
    assert out.list_file.read_text().split() == [str(p.resolve()) for p in out.files]


def test_data_folder_rewritten_when_its_stamp_differs(tmp_path):
    folder = tmp_path / "digits"
    train = data.digits_images(folder, "train", limit=5)
    again = data.digits_images(folder, "train", limit=5)
    assert again.files == train.files                        # cache hit
    test = data.digits_images(folder, "test", limit=5)       # same count, other content
    assert all(p.name.startswith("digit_test_") for p in test.files)
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(p.name for p in test.files)
