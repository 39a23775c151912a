"""`deployer quantize` end to end on real models (MTCNN RNet, a pnnx-imported ONNX net) with stock ncnn."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.profile import Override, load_profile
from deployer.quant.pipeline import run_quantize
from deployer.quant.table import read_table
from tests.fixtures.quantize import MTCNN_INPUT, face_accuracy, rnet_quantized, write_profile  # noqa: F401


def test_outputs_are_int8_and_load_in_stock_ncnn(rnet_quantized, mtcnn_rnet, lfw_heldout):
    _, result = rnet_quantized
    paths = result.paths
    for p in paths.all():
        assert p.is_file() and "int8" in p.name
    assert sorted(x.name for x in paths.folder.iterdir()) == sorted(p.name for p in paths.all())
    # the .param really is int8: every conv/fc carries int8_scale_term, the .bin shrank ~4x
    param_text = paths.param.read_text()
    assert param_text.count(" 8=") >= 5
    report = json.loads(paths.report.read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["method"] in report["methods"] and len(report["methods"]) == 5
    assert report["sizes"]["ratio"] >= 3.5
    assert report["sizes"]["int8_bin"] == paths.bin.stat().st_size
    # the table is ncnn's format and covers every quantized layer (weight + activation line)
    table = read_table(paths.table)
    for layer in report["int8_layers"]:
        assert table.activation_scale(layer) is not None and table.weight_scales(layer) is not None
    # accuracy on 150 held-out labelled faces/non-faces holds (stock ncnn wheel, both models)
    fp32 = face_accuracy(mtcnn_rnet.param, mtcnn_rnet.bin, lfw_heldout)
    int8 = face_accuracy(paths.param, paths.bin, lfw_heldout)
    assert fp32 >= 0.95
    assert int8 >= fp32 - 0.02, (fp32, int8)


def test_best_method_has_the_best_score_ties_to_the_smaller_model(rnet_quantized):
    """The choice is made on mean cosine + top-1 agreement over every eval input, not on "passes
    the gate" (which one image flips); scores within 1e-4 are a tie, won by the smaller .bin."""
    from deployer.quant.choice import TIE

    report = rnet_quantized[1].report
    rows = report["methods"]
    for row in rows.values():
        outs = list(row["outputs"].values())
        cos = sum(o["cosine"] for o in outs) / len(outs)
        top1 = [o["top1_agreement"] for o in outs if o.get("top1_agreement") is not None]
        assert row["score"] == pytest.approx(cos + sum(top1) / len(top1), abs=1e-6)
    top = max(r["score"] for r in rows.values())
    tied = [m for m, r in rows.items() if r["score"] >= top - TIE]
    assert report["method"] in tied
    assert rows[report["method"]]["bin_bytes"] == min(rows[m]["bin_bytes"] for m in tied)
    # how settled that choice is: leave-one-out over the eval inputs (no eval.group) and a bootstrap
    st = report["method_stability"]
    assert st["chosen"] == report["method"] and st["unit"] == "inputs" and st["units"] == report["eval"]["count"]
    assert st["leave_one_out"]["of"] == st["units"] and sum(st["wins"].values()) == pytest.approx(1.0)
    assert st["settled"] == (st["share"] >= 0.5)
    # every agreement rate carries its 95 % interval
    out0 = report["heldout"]["outputs"]["out0"]
    lo, hi = out0["top1_agreement_ci"]
    assert lo <= out0["top1_agreement"] <= hi and hi - lo > 0


def test_eval_set_judges_and_warns_when_small_or_shared(tmp_path, mtcnn_rnet, lfw_calibration, lfw_heldout):
    """`eval:` names inputs separate from calibration: every calibration file then calibrates,
    the eval inputs decide; too few or shared inputs are said out loud."""
    profile = write_profile(tmp_path / "a", mtcnn_rnet, lfw_calibration.list_file, tmp_path / "a" / "out",
                            quantize={"method": "kl", "mixed": False},
                            eval={"images": str(lfw_heldout.list_file), "count": 60})
    report = run_quantize(load_profile(profile)).report
    assert report["eval"]["source"] == "eval.images" and report["eval"]["count"] == 60
    assert report["eval"]["enough"] is True and report["gate"]["decided_on"] == 60
    assert report["calibration"]["files"] == len(lfw_calibration.files) and report["calibration"]["heldout"] == 0
    assert not any("eval" in w for w in report["warnings"]), report["warnings"]
    # the same images for both, and too few of them: two warnings
    small = write_profile(tmp_path / "b", mtcnn_rnet, lfw_calibration.list_file, tmp_path / "b" / "out",
                          quantize={"method": "kl", "mixed": False},
                          eval={"images": str(lfw_calibration.list_file), "count": 20})
    report = run_quantize(load_profile(small)).report
    assert report["eval"]["enough"] is False
    assert any("20 of 20 eval inputs are also calibration inputs" in w for w in report["warnings"])
    assert any("decisions rest on 20 eval inputs (fewer than eval.min_count=50)" in w for w in report["warnings"])


def test_pipeline_and_ncnn2table_share_one_calibration_engine(tmp_path, mtcnn_rnet, lfw_calibration):
    """Same model, files, preprocessing and method: `quantize` writes the table `ncnn2table` writes."""
    from deployer.quant import ncnn2table
    from deployer.quant.table import format_table
    from tests.fixtures.quantize import MTCNN_INPUT

    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            calibration={"images": str(lfw_calibration.list_file), "holdout": 0},
                            quantize={"method": "kl", "mixed": False})
    result = run_quantize(load_profile(profile))
    fmt = ",".join
    args = ncnn2table.parse_args([str(mtcnn_rnet.param), str(mtcnn_rnet.bin), str(lfw_calibration.list_file),
                                  str(tmp_path / "t.table"), f"mean=[{fmt(map(str, MTCNN_INPUT['mean']))}]",
                                  f"norm=[{fmt(map(str, MTCNN_INPUT['norm']))}]", "shape=[24,24]",
                                  "pixel=RGB", "method=kl", "thread=2"])
    drop_in = ncnn2table.run(args)
    assert result.paths.table.read_text() == format_table(drop_in.table)


def test_flags_override_profile_and_method(tmp_path, mtcnn_rnet, lfw_calibration):
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "ignored")
    prof = load_profile(profile, [Override("quantize.method", "maxabs", "--method"),
                                  Override("out", str(tmp_path / "flagged"), "--out"),
                                  Override("name", "rnet", "--name")])
    result = run_quantize(prof)
    assert result.report["method"] == "maxabs" and list(result.report["methods"]) == ["maxabs"]
    assert (tmp_path / "flagged" / "rnet_int8.param").is_file()
    assert not (tmp_path / "ignored").exists()


def test_keep_fp32_layer_stays_float(tmp_path, mtcnn_rnet, lfw_calibration):
    from deployer.ncnn.param import read_param

    first_conv = next(lay.name for lay in read_param(mtcnn_rnet.param).layers if lay.type == "Convolution")
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            quantize={"method": "kl", "keep_fp32": [first_conv]})
    result = run_quantize(load_profile(profile))
    assert first_conv in result.report["fp32_layers"]
    assert first_conv not in result.report["int8_layers"]
    layer = read_param(result.paths.param).layer(first_conv)
    assert int(layer.get(8, 0)) == 0


def test_interrupted_run_leaves_no_files(tmp_path, mtcnn_rnet, lfw_calibration):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, out)

    def interrupt(phase: str, done: int, total: int) -> None:
        if phase == "methods":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_quantize(load_profile(profile), progress=interrupt)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failing_run_leaves_no_files(tmp_path, mtcnn_rnet, lfw_calibration):
    out = tmp_path / "out"
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, out,
                            quantize={"keep_fp32": ["conv_does_not_exist"]})
    with pytest.raises(DeployerError, match=r"quantize.keep_fp32: the model has no layer 'conv_does_not_exist'"):
        run_quantize(load_profile(profile))
    assert not out.exists() or not any(out.iterdir())


def test_failing_write_leaves_no_files(tmp_path, mtcnn_rnet, lfw_calibration, monkeypatch):
    """A crash while the outputs are being written (disk full, ...) leaves no partial files."""
    from deployer import fsutil

    out = tmp_path / "out"
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, out, quantize={"method": "maxabs"})
    real = fsutil.write_bytes
    calls = []

    def flaky(path, data):
        if Path(path).is_relative_to(out):
            calls.append(path)
            if len(calls) == 3:          # param and bin staged, the table write fails
                raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(fsutil, "write_bytes", flaky)
    with pytest.raises(OSError):
        run_quantize(load_profile(profile))
    assert len(calls) == 3
    assert out.is_dir() and list(out.iterdir()) == []


def test_two_runs_writing_one_out_folder_leave_one_runs_files(tmp_path, monkeypatch):
    """Two quantize runs into one --out (make -j, two terminals) renamed their staged files in
    turn: when the second renamed all of its files between the first's renames, its .param was
    left next to the first's .bin and table. The renames are one run at a time now."""
    from deployer.quant import pipeline
    from tests.fixtures.races import interleave_after_rename

    out = tmp_path / "out"
    paths = pipeline.OutputPaths(out, out / "m_int8.param", out / "m_int8.bin", out / "m_int8.table",
                                 out / "m_int8.json")

    def write(who: str) -> None:
        pipeline._write_outputs(paths, f"{who} param".encode(), f"{who} bin".encode(), f"{who} table".encode(),
                                {"run": who})

    wait_for_b = interleave_after_rename(monkeypatch, paths.param, lambda: write("B"))
    write("A")
    wait_for_b()
    written = [p.read_text().split()[0] for p in (paths.param, paths.bin, paths.table)]
    assert written in (["A"] * 3, ["B"] * 3), written
    assert json.loads(paths.report.read_text())["run"] == written[0]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    ).eval()
    path = folder / "tiny.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # the legacy exporter pnnx handles best
        torch.onnx.export(net, torch.rand(1, 3, 24, 24), str(path), opset_version=13, dynamo=False)
    return path


def test_onnx_source_goes_through_pnnx(tmp_path, tiny_onnx, lfw_calibration, monkeypatch):
    monkeypatch.setenv("DEPLOYER_CACHE", str(tmp_path / "cache"))
    data = {"model": {"source": str(tiny_onnx), "inputshape": [1, 3, 24, 24]},
            "inputs": [{"shape": [24, 24], "pixel": "RGB", "mean": [127.5] * 3, "norm": [0.0078125] * 3}],
            "calibration": {"images": str(lfw_calibration.list_file)},
            "quantize": {"method": "kl"}, "out": str(tmp_path / "out")}
    (tmp_path / "p.yaml").write_text(json.dumps(data))
    result = run_quantize(load_profile(tmp_path / "p.yaml"))
    assert result.paths.param.name == "tiny_int8.param"
    assert len(result.report["int8_layers"]) == 3
    converted = Path(result.report["model"]["param"])
    assert converted.is_relative_to(tmp_path / "cache" / "pnnx")
    # fp16=0: the converted fp32 .bin has no fp16-tagged weights
    assert b"\x47\x6b\x30\x01" not in converted.with_suffix(".bin").read_bytes()
    # nothing was written next to the user's model
    assert sorted(p.name for p in tiny_onnx.parent.iterdir()) == ["tiny.onnx"]
    # second run reuses the conversion
    again = run_quantize(load_profile(tmp_path / "p.yaml"))
    assert again.report["model"]["pnnx_cached"] is True


def test_pnnx_errors_name_the_model(tmp_path, monkeypatch, tiny_onnx):
    from deployer.quant.importer import import_model

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(DeployerError) as err:
        import_model(bad, [[1, 3, 24, 24]], cache_dir=tmp_path / "cache")
    assert str(err.value).startswith(f"{bad}: pnnx conversion failed")
    assert not any((tmp_path / "cache").iterdir())          # no half-made conversion left behind
    monkeypatch.setenv("DEPLOYER_PNNX", str(tmp_path / "no-such-pnnx"))
    with pytest.raises(DeployerError) as err:
        import_model(tiny_onnx, [[1, 3, 24, 24]], cache_dir=tmp_path / "cache")
    assert str(err.value) == (f"{tiny_onnx}: cannot convert, pnnx is not installed "
                              "(pip install torch==2.13.0 pnnx (torch first), or set DEPLOYER_PNNX)")
    assert os.environ["DEPLOYER_PNNX"]


def test_letterbox_inputs_calibrate_without_temporary_files(tmp_path, mtcnn_rnet, calib_photos):
    """Letterbox is beyond ncnn2table's preprocessing: the collector reads the profile's InputSpec and
    letterboxes each photo itself (deployer.inputs), as check does."""
    inputs = {"shape": [24, 24], "resize": "letterbox", "pad_value": 0, "pixel": "RGB",
              "mean": [127.5] * 3, "norm": [0.0078125] * 3}
    profile = write_profile(tmp_path, mtcnn_rnet, calib_photos.list_file, tmp_path / "out", inputs=inputs,
                            quantize={"method": "maxabs"}, gate=["cosine>=0.98"])
    result = run_quantize(load_profile(profile))
    assert result.report["gate"]["passed"] is True
    assert result.report["calibration"]["files"] + result.report["heldout"]["count"] == len(calib_photos.files)
    assert not list(tmp_path.glob("**/*.npy"))      # no .npy hand-off


def test_out_folder_that_would_replace_an_input_is_refused_before_any_work(tmp_path, mtcnn_rnet, lfw_calibration):
    """An out folder holding a model already named *_int8 (or `--name` making the names meet) used to
    overwrite the fp32 .param/.bin being read; an --out naming a file failed after the whole run
    with a bare "File exists"."""
    import shutil

    models = tmp_path / "models"
    models.mkdir()
    param, bin_ = models / "rnet_int8.param", models / "rnet_int8.bin"
    shutil.copy(mtcnn_rnet.param, param)
    shutil.copy(mtcnn_rnet.bin, bin_)
    before = param.read_bytes()
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, models, quantize={"method": "maxabs"})
    prof = load_profile(profile, [Override("model.param", str(param), "--param"),
                                  Override("model.bin", str(bin_), "--bin"), Override("name", "rnet", "--name")])
    with pytest.raises(DeployerError, match=rf"^{profile}: out: writing rnet_int8.param there would replace the "
                                            rf"input {param} \(choose another out folder, or another --name\)$"):
        run_quantize(prof)
    assert param.read_bytes() == before and sorted(p.name for p in models.iterdir()) == ["rnet_int8.bin",
                                                                                         "rnet_int8.param"]
    (tmp_path / "a_file").write_text("")
    prof = load_profile(profile, [Override("out", str(tmp_path / "a_file" / "sub"), "--out")])
    with pytest.raises(DeployerError, match=rf"^--out: {tmp_path / 'a_file'} is a file, not a folder"):
        run_quantize(prof, progress=lambda *a: pytest.fail("work started before --out was checked"))


def test_keep_fp32_layer_that_is_never_int8_is_refused(tmp_path, mtcnn_rnet, lfw_calibration):
    """`keep_fp32: [in0]` (the Input layer) was accepted and reported as kept float: it changes nothing."""
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            quantize={"method": "maxabs", "keep_fp32": ["in0"]})
    with pytest.raises(DeployerError, match=r"quantize.keep_fp32: layer 'in0' \(Input\) is never int8, so keeping it "
                                            r"float changes nothing \(name a Convolution/.*, e.g. conv_0\)"):
        run_quantize(load_profile(profile))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("norm, says", [
    (1e30, r"layer conv_0: its input reaches 1.27e\+32 on the calibration inputs; the int8 scale .* is below what "
           r"ncnn's table stores \(6 decimals\) and would be read as 0"),
    (1e37, r"lfw_\d+_face.png: blob in0 of the fp32 model reaches inf on this input"),
])
def test_preprocessing_beyond_int8_or_float_is_one_line(tmp_path, mtcnn_rnet, lfw_calibration, norm, says):
    """inputs.norm 1e30 failed as "candidate.bin: ... bottom_scales holds 0.0" (an internal file; the
    table's %f had stored the scale 1e-30 as 0); 1e37 overflowed float and failed the same way."""
    inputs = {**MTCNN_INPUT, "norm": [norm, 1.0, 1.0]}
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            quantize={"method": "maxabs"}, inputs=inputs)
    with pytest.raises(DeployerError, match=says):
        run_quantize(load_profile(profile))
    assert not (tmp_path / "out").exists()


def test_layer_times_fifo_is_refused_without_hanging(tmp_path, mtcnn_rnet, lfw_calibration):
    """quantize.layer_times naming a FIFO blocked forever in read_text()."""
    fifo = tmp_path / "times.json"
    os.mkfifo(fifo)
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            quantize={"method": "maxabs", "layer_times": str(fifo)})
    with pytest.raises(DeployerError, match=rf"^{fifo}: is a FIFO, expected a regular run result file$"):
        run_quantize(load_profile(profile))


def test_detection_task_on_a_model_without_a_yolo_head_fails_before_calibration(tmp_path, mtcnn_rnet,
                                                                                lfw_calibration):
    """Was an IndexError in decode_yolov8 (exit 4) after statistics had been collected."""
    profile = write_profile(tmp_path, mtcnn_rnet, lfw_calibration.list_file, tmp_path / "out",
                            quantize={"method": "maxabs"}, gate=["cosine>=0.9"],
                            task={"type": "detection", "num_classes": 18})
    phases = []
    with pytest.raises(DeployerError, match=r"profile.yaml: task.output: output 'out0' has shape \[2\], not a YOLOv8 "
                                            r"head of 22 x anchors"):
        run_quantize(load_profile(profile), progress=lambda phase, *a: phases.append(phase))
    assert "collect" not in phases and not (tmp_path / "out").exists()
