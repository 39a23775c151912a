"""Method `seq` (deployer.quant.seqcal) on a real model (MTCNN RNet) in the stock ncnn wheel: only
activation scales move, the files load, each layer's chosen scale is no worse than the start on
its own output error, and the unfused int8 model it reads activations from computes what the
fused one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deployer.check.net import NcnnNet
from deployer.check.samples import load_samples
from deployer.inputs.spec import InputSpec
from deployer.ncnn.model import NcnnModel
from deployer.quant import seqcal
from deployer.quant.calibration import build_table
from deployer.quant.collect import Runner
from deployer.quant.int8 import as_scale_table, quantize_model
from deployer.quant.methods import get_method

SPEC = InputSpec(shape=(24, 24), pixel="RGB", mean=[127.5] * 3, norm=[1 / 128] * 3)


@pytest.fixture(scope="module")
def rnet_tables(mtcnn_rnet, lfw_calibration):
    from deployer.quant.calibration import Calibrator, InputSet
    from deployer.quant.weights import load_model

    cal = Calibrator(load_model(mtcnn_rnet.param, mtcnn_rnet.bin), [SPEC],
                     InputSet.from_lists([lfw_calibration.files]), threads=1)
    return cal, cal.table("percentile"), cal.table("seq")


def _mse(ref: NcnnNet, net: NcnnNet, samples) -> float:
    outs = ref.output_names
    return float(np.mean([sum(float(np.mean((ref.run(s, outs)[o] - net.run(s, outs)[o]) ** 2)) for o in outs)
                          for s in samples]))


def test_seq_changes_only_activation_scales_and_loads_in_ncnn(rnet_tables, mtcnn_rnet, lfw_heldout, tmp_path):
    _, pct, seq = rnet_tables
    a, b = as_scale_table(pct), as_scale_table(seq)
    assert a.weight.keys() == b.weight.keys()
    for k in a.weight:
        np.testing.assert_array_equal(a.weight[k], b.weight[k])
    assert a.blob.keys() == b.blob.keys()
    assert any(a.blob[k] != b.blob[k] for k in a.blob)          # the search moved some scale
    model = NcnnModel.load(mtcnn_rnet.param, mtcnn_rnet.bin)
    held = load_samples([lfw_heldout.files[:40]], [SPEC], ["in0"])
    ref = NcnnNet(mtcnn_rnet.param, mtcnn_rnet.bin, threads=1)
    errs = {}
    for tag, table in (("percentile", pct), ("seq", seq)):
        q, _ = quantize_model(model, table)
        q.save(tmp_path / f"{tag}.param", tmp_path / f"{tag}.bin")
        net = NcnnNet(tmp_path / f"{tag}.param", tmp_path / f"{tag}.bin", threads=1)   # stock ncnn wheel
        errs[tag] = _mse(ref, net, held)
    assert np.isfinite(errs["seq"]) and errs["seq"] <= errs["percentile"] * 1.25, errs


def test_each_layer_keeps_the_scale_with_the_least_output_error(rnet_tables, mtcnn_rnet, tmp_path: Path):
    cal, _, _ = rnet_tables
    start = cal.layer_scales(get_method("percentile"))
    # the samples best_scale judges: the int8 (unfused) network's inputs, the fp32 network's outputs
    q, _ = quantize_model(NcnnModel.load(mtcnn_rnet.param, mtcnn_rnet.bin), build_table(cal.model, start), fuse=False)
    q.save(tmp_path / "q.param", tmp_path / "q.bin")
    fp_runner, q_runner = Runner(mtcnn_rnet.param, mtcnn_rnet.bin), Runner(tmp_path / "q.param", tmp_path / "q.bin")
    samples = seqcal._collect(fp_runner, q_runner, cal.job, cal.model.quant_layers, len(cal.job.files[0]),
                              np.random.default_rng(0))
    del fp_runner, q_runner
    by_name = {ls.name: ls for ls in start}
    for ql in cal.model.quant_layers:
        scale, err, start_err = seqcal.best_scale(ql, samples[ql.name], by_name[ql.name])
        assert err <= start_err
        assert scale > 0 and np.isfinite(scale)


def test_unfused_int8_model_computes_what_the_fused_one_does(mobilenet_v2, imagenet_heldout, tmp_path: Path):
    """MobileNetV2 has conv -> conv pairs that ncnn2int8 fuses (requantize); fuse=False keeps every
    int8 conv's output float, and the network's output stays what the fused model computes."""
    from deployer.quant.calibration import Calibrator, InputSet
    from deployer.quant.weights import load_model

    d = mobilenet_v2.input_spec()
    spec = InputSpec(shape=d["shape"], pixel=d["pixel"], mean=d["mean"], norm=d["norm"])
    table = Calibrator(load_model(mobilenet_v2.param, mobilenet_v2.bin), [spec],
                       InputSet.from_lists([imagenet_heldout.files[:6]]), threads=1).table("percentile")
    model = NcnnModel.load(mobilenet_v2.param, mobilenet_v2.bin)
    fused, rep = quantize_model(model, table)
    unfused, rep_u = quantize_model(model, table, fuse=False)
    assert sum(1 for d in rep.layers if d.requantize_to) >= 10
    assert not any(d.requantize_to for d in rep_u.layers)
    assert all(int(lay.get(8, 0)) < 100 for lay in unfused.graph.layers)
    fused.save(tmp_path / "f.param", tmp_path / "f.bin")
    unfused.save(tmp_path / "u.param", tmp_path / "u.bin")
    held = load_samples([imagenet_heldout.files[6:10]], [spec], [mobilenet_v2.inputs[0]])
    f = NcnnNet(tmp_path / "f.param", tmp_path / "f.bin", threads=1)
    u = NcnnNet(tmp_path / "u.param", tmp_path / "u.bin", threads=1)
    for s in held:
        a, b = f.run(s, f.output_names), u.run(s, u.output_names)
        for o in a:
            x, y = a[o].ravel(), b[o].ravel()
            assert float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))) > 0.999
