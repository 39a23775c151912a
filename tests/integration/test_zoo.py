"""The zoo's converted models against the real parts: torch (the reference), pnnx, the stock ncnn wheel.

Accuracy thresholds come from the data sets' labels, and the ncnn-vs-torch checks from the torch
reference computed here, never from our own earlier output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployer.errors import DeployerError
from examples import data, evaluate, zoo
from examples.infer import NcnnRunner, image_to_input, load_rgb

ROOT = Path(__file__).resolve().parents[2]


def _torch_net(name: str):
    import torch

    from examples import nets

    factory = {"mtcnn_pnet": nets.PNet, "mtcnn_rnet": nets.RNet, "mtcnn_onet": nets.ONet,
               "mobilenet_v2": nets.MobileNetV2}[name]
    source = {"mobilenet_v2": zoo._mobilenet_v2_source}.get(name) or zoo._mtcnn_source(name.split("_")[1])
    net = factory()
    net.load_state_dict(zoo.load_state_dict(source()), strict=True)
    torch.set_num_threads(2)
    return net.eval()


def _torch_outputs(net, x: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        y = net(torch.from_numpy(x[None]))
    return [t.numpy()[0] for t in (y if isinstance(y, tuple) else (y,))]


@pytest.mark.parametrize("name", ["mtcnn_rnet", "mtcnn_onet"])
def test_mtcnn_ncnn_matches_torch_on_every_output(zoo_model, name):
    model = zoo_model(name)
    net = _torch_net(name)
    inputs, _ = evaluate.lfw_inputs(model, indices=[0, 1, 150, 199])
    runner = NcnnRunner(model.param, model.bin)
    for x in inputs:
        got = runner.run({"in0": x}, model.outputs)
        for blob, want in zip(model.outputs, _torch_outputs(net, x)):
            np.testing.assert_allclose(got[blob].reshape(want.shape), want, atol=1e-4)


def test_pnet_is_fully_convolutional_in_ncnn(mtcnn_pnet):
    """Converted at 12x12, PNet must still give torch's probability map on a whole 64x80 image."""
    rgb = load_rgb(data.package_dir("skimage") / "data" / "astronaut.png")
    x = image_to_input(rgb, mtcnn_pnet.preprocess, (3, 64, 80))
    got = NcnnRunner(mtcnn_pnet.param, mtcnn_pnet.bin).run({"in0": x}, ["out0"])["out0"]
    want = _torch_outputs(_torch_net("mtcnn_pnet"), x)[0]
    assert want.shape == (2, 27, 35)
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-4)


@pytest.mark.parametrize("name", ["mtcnn_rnet", "mtcnn_onet"])
def test_mtcnn_face_accuracy_on_lfw_subset(zoo_model, name):
    scored = evaluate.score_lfw(zoo_model(name))
    assert len(scored.labels) == 200
    assert scored.accuracy >= 0.98, f"{name}: {scored.correct}/200"


def test_fp32_reference_really_is_fp32(mtcnn_onet):
    """fp32 end to end: pnnx fp16=0 stored fp32 weights, and the runner switched ncnn's fp16 off."""
    state = zoo.load_state_dict(zoo._mtcnn_source("onet")())
    tagged = sum(1 for k in state if k.endswith(".weight") and not k.startswith("prelu"))   # conv + fc weights
    fp32_bytes = 4 * sum(v.numel() for v in state.values()) + 4 * tagged
    assert mtcnn_onet.bin.stat().st_size == fp32_bytes          # fp16 storage would be about half
    inputs, _ = evaluate.lfw_inputs(mtcnn_onet, indices=[3])
    want = _torch_outputs(_torch_net("mtcnn_onet"), inputs[0])[2]
    fp32 = NcnnRunner(mtcnn_onet.param, mtcnn_onet.bin).run({"in0": inputs[0]}, ["out2"])["out2"]
    assert np.abs(fp32.reshape(-1) - want).max() < 1e-4


def test_cache_hit_reuses_files_and_cli_exports(tmp_path):
    env = {**os.environ, "DEPLOYER_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "examples.zoo", "mtcnn_pnet", "--out", str(tmp_path / "out"), "--json"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    entry = json.loads(first.stdout)[0]
    assert entry["inputs"] == ["in0"] and entry["outputs"] == ["out0", "out1"]
    assert Path(entry["param"]) == tmp_path / "out" / "mtcnn_pnet.param"
    cached_bin = tmp_path / "cache" / "zoo" / "mtcnn_pnet" / "model.bin"
    stamp = cached_bin.stat().st_mtime_ns
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert cached_bin.stat().st_mtime_ns == stamp                       # not rebuilt
    assert (tmp_path / "out" / "mtcnn_pnet.bin").read_bytes() == cached_bin.read_bytes()
    leftovers = [p.name for p in (tmp_path / "cache" / "zoo").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.slow
def test_two_concurrent_builds_both_succeed_without_leftovers(tmp_path):
    env = {**os.environ, "DEPLOYER_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "examples.zoo", "mtcnn_pnet", "--json"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), [err for _, err, _ in results]
    params = {json.loads(out)[0]["param"] for out, _, _ in results}
    assert len(params) == 1 and Path(params.pop()).is_file()
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["mtcnn_pnet"]


def test_data_sets_are_written_as_files_with_lists(calib_photos, lfw_heldout, digits_test):
    assert len(calib_photos.files) == 44 and not calib_photos.labels
    listed = calib_photos.list_file.read_text().split()
    assert listed == [str(p.resolve()) for p in calib_photos.files]
    assert len(lfw_heldout.files) == 150 and sum(lfw_heldout.labels.values()) == 75
    assert len(digits_test.files) == 450
    assert load_rgb(digits_test.files[0]).shape == (16, 16, 3)


@pytest.mark.slow
def test_mobilenet_v2_imagenet_top1_and_torch_agreement(mobilenet_v2):
    scored = evaluate.score_imagenet(mobilenet_v2)
    assert scored.correct >= 18, f"MobileNetV2 top-1 {scored.correct}/20"
    x = image_to_input(load_rgb(data.imagenet_samples()[0][0]), mobilenet_v2.preprocess, mobilenet_v2.input_shape)
    want = _torch_outputs(_torch_net("mobilenet_v2"), x)[0]
    got = NcnnRunner(mobilenet_v2.param, mobilenet_v2.bin).run({"in0": x}, ["out0"])["out0"]
    assert np.abs(got.reshape(-1) - want).max() < 1e-3


@pytest.mark.slow
def test_digits_cnn_accuracy(digits_cnn):
    scored = evaluate.score_digits(digits_cnn)
    assert len(scored.labels) == 450
    assert scored.accuracy >= 0.97, f"digits {scored.correct}/450"


@pytest.mark.slow
def test_yolov8n_finds_the_astronauts_face_and_not_the_cats(yolov8n):
    skdata = data.package_dir("skimage") / "data"
    faces = [d for d in evaluate.detect(yolov8n, skdata / "astronaut.png") if d.label.startswith("FACE")]
    assert faces, "no face found on astronaut.png"
    x0, y0, x1, y1 = faces[0].box
    # Eileen Collins' face sits around x 170-280, y 80-190 of the 512x512 image.
    assert 140 < (x0 + x1) / 2 < 260 and 90 < (y0 + y1) / 2 < 170 and faces[0].score > 0.5
    assert not [d for d in evaluate.detect(yolov8n, skdata / "chelsea.png") if d.label.startswith("FACE")]


@pytest.mark.parametrize("name", ["mtcnn_rnet", "digits_cnn", "yolov8n", "mobilenet_v2"])
def test_zoo_input_spec_means_the_same_to_deployer(zoo_model, name):
    """A profile built from ZooModel.input_spec() must give deployer the tensors the zoo checks used."""
    from deployer.inputs.spec import InputSpec
    from deployer.inputs.tensor import load_array

    model = zoo_model(name)
    spec = model.input_spec()
    spec.pop("name")
    spec = InputSpec(**{**spec, "shape": tuple(spec["shape"])})
    image = data.imagenet_samples()[1][0]                   # a 500x375-ish JPEG: resize and padding both matter
    want = image_to_input(load_rgb(image), model.preprocess, model.input_shape)
    got = load_array(image, spec)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_wrong_weights_file_is_one_line_error(tmp_path):
    """A state_dict that does not fit the architecture must name the file, not dump a torch traceback."""
    import torch

    bogus = tmp_path / "pnet.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bogus)
    recipe = zoo._recipes()["mtcnn_pnet"]
    recipe = zoo.Recipe(**{**recipe.__dict__, "source": lambda: bogus})
    with pytest.raises(DeployerError, match=r"pnet\.pt: does not fit examples\.nets\.PNet"):
        recipe.convert(recipe, tmp_path, tmp_path)
