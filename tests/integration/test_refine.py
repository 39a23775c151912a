"""Bias correction and learnt rounding on a real model (MTCNN RNet): stock ncnn loads the files,
the int8 codes are the learnt ones, and the int8 outputs move closer to fp32."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.check.net import NcnnNet
from deployer.check.samples import load_samples
from deployer.inputs.spec import InputSpec
from deployer.ncnn.model import NcnnModel
from deployer.quant.arith import round_half_away
from deployer.quant.int8 import quantize_model

SPEC = InputSpec(shape=(24, 24), pixel="RGB", mean=[127.5] * 3, norm=[1 / 128] * 3)


@pytest.fixture(scope="module")
def rnet_refined(tmp_path_factory, mtcnn_rnet, lfw_calibration, lfw_heldout):
    from deployer.quant.calibration import Calibrator, InputSet
    from deployer.quant.refine import refine
    from deployer.quant.weights import load_model

    table = Calibrator(load_model(mtcnn_rnet.param, mtcnn_rnet.bin), [SPEC],
                       InputSet.from_lists([lfw_calibration.files]), threads=1).table("kl")
    model = NcnnModel.load(mtcnn_rnet.param, mtcnn_rnet.bin)
    calib = load_samples([lfw_calibration.files], [SPEC], ["in0"])
    refined = refine(model, mtcnn_rnet.param, mtcnn_rnet.bin, table, calib, ["adaround", "biascorr"], threads=1)
    out = tmp_path_factory.mktemp("refine")
    written = {}
    for tag, fp32 in (("plain", model), ("refined", refined.apply())):
        q, _ = quantize_model(fp32, table)
        q.save(out / f"{tag}.param", out / f"{tag}.bin")
        written[tag] = (out / f"{tag}.param", out / f"{tag}.bin")
    held = load_samples([lfw_heldout.files], [SPEC], ["in0"])
    return model, refined, table, written, held


def _errors(param, bin_, ref_param, ref_bin, samples):
    ref, net = NcnnNet(ref_param, ref_bin, threads=1), NcnnNet(param, bin_, threads=1)
    outs = ref.output_names
    err = []
    for s in samples:
        a, b = ref.run(s, outs), net.run(s, outs)
        err.append(sum(float(np.sum((a[o] - b[o]) ** 2)) for o in outs))
    return float(np.mean(err))


def test_refined_files_load_in_stock_ncnn_with_the_learnt_codes(rnet_refined, mtcnn_rnet):
    model, refined, table, written, held = rnet_refined
    assert refined.report.layers >= 4 and refined.report.rounding_improved >= 1
    param, bin_ = written["refined"]
    net = NcnnNet(param, bin_, threads=1)           # stock ncnn wheel
    assert set(net.run(held[0], net.output_names)) == set(net.output_names)
    q = NcnnModel.load(param, bin_)
    from deployer.quant.int8 import as_scale_table

    scales = as_scale_table(table)
    changed = 0
    for name, w in refined.weights.items():
        stored = next(x for x in q.weights[name] if x.name == "weight")
        assert stored.storage == "int8"
        s = np.asarray(scales.weight[f"{name}_param_0"], np.float32)
        codes = round_half_away(w.reshape(s.size, -1) * s[:, None]).reshape(-1)
        np.testing.assert_array_equal(np.asarray(stored.data, np.int64), codes.astype(np.int64))
        orig = next(x for x in model.weights[name] if x.name == "weight").data
        nearest = round_half_away(np.asarray(orig, np.float32).reshape(s.size, -1) * s[:, None]).reshape(-1)
        changed += int(np.sum(codes != nearest))
    assert changed > 0                                # rounding really differs from nearest somewhere
    # the biases the file carries are the corrected ones
    for name, b in refined.biases.items():
        stored = next(x for x in q.weights[name] if x.name == "bias")
        np.testing.assert_allclose(np.asarray(stored.data, np.float32), b, rtol=1e-6)


def test_refined_int8_is_closer_to_fp32_on_held_out_faces(rnet_refined, mtcnn_rnet):
    model, refined, table, written, held = rnet_refined
    plain = _errors(*written["plain"], mtcnn_rnet.param, mtcnn_rnet.bin, held)
    better = _errors(*written["refined"], mtcnn_rnet.param, mtcnn_rnet.bin, held)
    assert better < plain, (plain, better)


def test_excluded_layers_keep_their_original_weights(rnet_refined):
    model, refined, *_ = rnet_refined
    name = next(iter(refined.weights))
    kept = refined.apply(frozenset({name}))
    orig = next(x for x in model.weights[name] if x.name == "weight").data
    now = next(x for x in kept.weights[name] if x.name == "weight").data
    np.testing.assert_array_equal(orig, now)
    assert kept.graph.layer(name).params == model.graph.layer(name).params

