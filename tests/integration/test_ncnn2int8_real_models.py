"""Real models: MTCNN RNet (facenet-pytorch weights, pnnx fp16=0) quantized with a maxabs table
measured on 50 lfw_subset crops keeps its face / non-face decisions on the 150 held-out crops;
MobileNetV2 int8 equals the numpy simulation."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.ncnn.model import NcnnModel
from deployer.quant.int8 import quantize_model, read_scale_table
from deployer.quant.simulate import relative_error, simulate
from tests.fixtures.int8 import maxabs_table_for_files, ncnn_run

pytest.importorskip("ncnn")


@pytest.mark.slow
def test_rnet_int8_keeps_face_decisions(mtcnn_rnet, tmp_path):
    from examples import data
    from examples.evaluate import lfw_inputs

    calib_idx, held_idx = data.lfw_split()
    calib, _ = lfw_inputs(mtcnn_rnet, calib_idx)
    held, labels = lfw_inputs(mtcnn_rnet, held_idx)
    inp, out = mtcnn_rnet.inputs[0], mtcnn_rnet.outputs[0]
    table = tmp_path / "rnet.table"
    table.write_text(maxabs_table_for_files(mtcnn_rnet.param, mtcnn_rnet.bin, [{inp: x} for x in calib]))

    fp32 = NcnnModel.load(mtcnn_rnet.param, mtcnn_rnet.bin)
    q, report = quantize_model(fp32, read_scale_table(table))
    assert set(report.quantized) == {"conv_0", "conv_1", "conv_2", "linear_3", "linear_4", "linear_5"}
    assert report.kept_float == []
    param, binp = tmp_path / "rnet-int8.param", tmp_path / "rnet-int8.bin"
    q.save(param, binp)
    assert binp.stat().st_size < 0.3 * mtcnn_rnet.bin.stat().st_size

    p32 = np.stack([ncnn_run(mtcnn_rnet.param, mtcnn_rnet.bin, {inp: x}, [out])[out].reshape(-1) for x in held])
    p8 = np.stack([ncnn_run(param, binp, {inp: x}, [out])[out].reshape(-1) for x in held])
    acc32 = float((p32.argmax(1) == labels).mean())
    acc8 = float((p8.argmax(1) == labels).mean())
    agree = float((p32.argmax(1) == p8.argmax(1)).mean())
    assert acc32 >= 0.95                       # the fp32 reference is right about these crops
    assert agree >= 0.97 and acc8 >= acc32 - 0.02
    assert np.abs(p32[:, 1] - p8[:, 1]).mean() < 0.05

    # and the int8 file means what the simulation says (PReLU, ceil-mode pooling, Permute, Softmax)
    loaded = NcnnModel.load(param, binp)
    for x in held[:5]:
        got = ncnn_run(param, binp, {inp: x}, [out], packing=False)[out]
        assert relative_error(simulate(loaded, {inp: x})[out].reshape(got.shape), got) <= 1e-5


@pytest.mark.slow
def test_mobilenet_v2_int8_equals_the_simulation(mobilenet_v2, tmp_path):
    """Depthwise + Clip(ReLU6)-fused convs, residual BinaryOp adds, 36 requantize fusions."""
    rng = np.random.default_rng(0)
    inp, out = mobilenet_v2.inputs[0], mobilenet_v2.outputs[0]
    feeds = [{inp: rng.uniform(-2, 2, (3, 224, 224)).astype(np.float32)} for _ in range(3)]
    table = tmp_path / "mnv2.table"
    table.write_text(maxabs_table_for_files(mobilenet_v2.param, mobilenet_v2.bin, feeds[:2]))
    q, report = quantize_model(NcnnModel.load(mobilenet_v2.param, mobilenet_v2.bin), read_scale_table(table))
    assert len(report.quantized) == 53 and report.kept_float == []
    assert sum(d.int8_scale_term > 100 for d in report.layers) > 20
    param, binp = tmp_path / "mnv2-int8.param", tmp_path / "mnv2-int8.bin"
    q.save(param, binp)
    x = feeds[2]
    got = ncnn_run(param, binp, x, [out], packing=False)[out]
    assert relative_error(simulate(q, x)[out].reshape(got.shape), got) <= 1e-5
    ref = ncnn_run(mobilenet_v2.param, mobilenet_v2.bin, x, [out])[out]
    assert relative_error(got, ref) < 0.5
