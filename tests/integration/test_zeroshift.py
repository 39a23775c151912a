"""The activation shift (deployer.quant.zeroshift) on MobileNetV2 in the stock ncnn wheel: the
shifted fp32 model computes the same function, ncnn reads the int8 pad codes, the int8 error drops,
and `quantize --refine shift` keeps it only when the eval score says so."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.check.net import NcnnNet
from deployer.check.samples import load_samples
from deployer.inputs.spec import InputSpec
from deployer.ncnn.model import NcnnModel
from deployer.quant import zeroshift
from deployer.quant.int8 import quantize_model

SPEC = InputSpec(shape=(224, 224), pixel="RGB", mean=[123.675, 116.28, 103.53],
                 norm=[0.017124754, 0.017507003, 0.017429194])


@pytest.fixture(scope="module")
def shifted(mobilenet_v2, calib_photos, imagenet_views):
    from deployer.quant.calibration import Calibrator, InputSet
    from deployer.quant.weights import load_model

    table = Calibrator(load_model(mobilenet_v2.param, mobilenet_v2.bin), [SPEC],
                       InputSet.from_lists([calib_photos.files[:16]]), threads=2).table("maxabs")
    model = NcnnModel.load(mobilenet_v2.param, mobilenet_v2.bin)
    pairs = zeroshift.pairs(model)
    model_s, table_s, pad_codes, offsets = zeroshift.apply(model, table, pairs, frozenset())
    samples = load_samples([imagenet_views.files[::5]], [SPEC], ["in0"])
    return model, table, pairs, model_s, table_s, pad_codes, offsets, samples


def _outputs(model, folder, tag, samples):
    model.save(folder / f"{tag}.param", folder / f"{tag}.bin")
    net = NcnnNet(folder / f"{tag}.param", folder / f"{tag}.bin", threads=2)      # stock ncnn wheel
    return np.stack([net.run(s, ["out0"])["out0"].ravel() for s in samples])


def _error(a, b):
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(np.mean(1 - cos))


def test_pairs_are_the_relu6_outputs_read_by_one_depthwise_or_1x1_conv(shifted):
    model, _, pairs, model_s, table_s, pad_codes, offsets, _ = shifted
    kinds = {model.graph.layer(p.consumer).type for p in pairs}
    assert kinds == {"Convolution", "ConvolutionDepthWise"} and len(pairs) == 34
    for p in pairs:
        consumer = model.graph.layer(p.consumer)
        assert consumer.type == "ConvolutionDepthWise" or int(consumer.get(1, 0)) == 1
        assert p.padded == (consumer.type == "ConvolutionDepthWise")
        c = offsets[p.consumer]
        lo, hi = model_s.graph.layer(p.producer).params[10]
        assert lo == pytest.approx(-c) and hi == pytest.approx(6.0 - c)
        # c is half the method's threshold: the clip stays, the step halves, 0 lands on code -127
        assert table_s.activation_scale(p.consumer) == pytest.approx(127.0 / c, rel=1e-6)
        if p.padded:
            assert model_s.graph.layer(p.consumer).params[18] == pytest.approx(-c)
            assert pad_codes[p.consumer] == -127.0
    assert 18 not in model.graph.layer(pairs[0].consumer).params          # the original model is untouched


def test_shifted_fp32_model_computes_the_same_function(shifted, tmp_path):
    """Exact in fp32 once the consumers' weights sit on their int8 grid (the correction c * sum(w_q)
    is for the weights the int8 kernel multiplies by), -c padding included."""
    import copy

    from deployer.ncnn.modelbin import Weight
    from deployer.quant.int8 import as_scale_table, quantize_rows

    model, table, pairs, model_s, _, _, _, samples = shifted
    scales = as_scale_table(table)

    def on_grid(m):
        m = copy.deepcopy(m)
        for p in pairs:
            ws = np.asarray(scales.weight[f"{p.consumer}_param_0"], np.float32)
            w = next(x for x in m.weights[p.consumer] if x.name == "weight")
            q = (quantize_rows(w.data, ws, ws.size).reshape(ws.size, -1) / ws[:, None]).reshape(-1)
            m.weights[p.consumer] = [Weight("weight", q.astype(np.float32), w.storage, w.tagged)
                                     if x.name == "weight" else x for x in m.weights[p.consumer]]
        return m

    ref = _outputs(on_grid(model), tmp_path, "fp32-on-grid", samples[:6])
    got = _outputs(on_grid(model_s), tmp_path, "fp32-shifted", samples[:6])
    assert np.max(np.abs(got - ref)) <= 1e-3 * np.max(np.abs(ref))
    # the correction is for the grid weights: with the fp32 ones the shifted model is off
    off = _outputs(model_s, tmp_path, "fp32-shifted-off-grid", samples[:6])
    assert np.max(np.abs(off - ref)) > 10 * np.max(np.abs(got - ref))


def test_ncnn_reads_the_pad_code_and_the_int8_error_drops(shifted, tmp_path):
    model, table, _, model_s, table_s, pad_codes, _, samples = shifted
    ref = _outputs(model, tmp_path, "fp32", samples)
    plain_q, _ = quantize_model(model, table)
    shifted_q, _ = quantize_model(model_s, table_s, pad_codes=pad_codes)
    for name in pad_codes:
        assert shifted_q.graph.layer(name).params[18] == -127.0
    plain = _error(_outputs(plain_q, tmp_path, "plain", samples), ref)
    better = _error(_outputs(shifted_q, tmp_path, "shifted", samples), ref)
    assert better < 0.8 * plain, (plain, better)           # measured: about half the error with maxabs
    # ncnn casts pad_value straight to a code: the float -c there would pad with garbage
    raw_q, _ = quantize_model(model_s, table_s)
    broken = _error(_outputs(raw_q, tmp_path, "raw-pad", samples), ref)
    assert broken > 5 * better, (broken, better)


def test_a_consumer_left_float_is_not_shifted(shifted):
    model, table, pairs, *_ = shifted
    consumers = {p.consumer for p in pairs}
    pair = [p for p in pairs if p.producer not in consumers][1]     # an expand conv -> its depthwise conv
    model_s, table_s, pad_codes, offsets = zeroshift.apply(model, table, pairs, frozenset({pair.consumer}))
    assert pair.consumer not in offsets and pair.consumer not in pad_codes and len(offsets) == len(pairs) - 1
    assert model_s.graph.layer(pair.producer).params[10] == model.graph.layer(pair.producer).params[10]
    bias = [next(w for w in m.weights[pair.producer] if w.name == "bias").data for m in (model_s, model)]
    np.testing.assert_array_equal(*bias)
    assert table_s.activation_scale(pair.consumer) == table.activation_scale(pair.consumer)


def test_quantize_keeps_the_shift_only_if_the_score_improves(mobilenet_v2, calib_photos, imagenet_views, tmp_path):
    from deployer.profile import Override, load_profile
    from deployer.quant.pipeline import run_quantize
    from deployer.quant.table import read_table

    overrides = [Override(f, v, f) for f, v in (
        ("model.param", str(mobilenet_v2.param)), ("model.bin", str(mobilenet_v2.bin)),
        ("calibration.images", [str(calib_photos.list_file)]), ("calibration.count", 16),
        ("eval.images", [str(imagenet_views.list_file)]), ("eval.count", 24), ("eval.min_count", 10),
        ("inputs.shape", "224,224"), ("inputs.pixel", "RGB"), ("inputs.mean", "123.675,116.28,103.53"),
        ("inputs.norm", "0.017124754,0.017507003,0.017429194"), ("quantize.method", "maxabs"),
        ("quantize.refine", "shift"), ("quantize.mixed", False), ("out", str(tmp_path)), ("threads", 2))]
    result = run_quantize(load_profile(None, overrides))
    info = result.report["refine"]
    shift = info["shift"]
    assert info["ran"] and info["techniques"] == ["shift"] and shift["pairs"] == 34
    # every fraction was tried and the best-scoring one is the one reported
    assert sorted(float(f) for f in shift["tried"]) == sorted(zeroshift.FRACTIONS)
    best = max(shift["tried"].values(), key=lambda t: (t["score"], -t["error"]))
    assert shift["tried"][str(shift["fraction"])] == best and info["score_after"] == best["score"]
    assert min(t["error"] for t in shift["tried"].values()) < info["error_before"]
    assert info["kept"] == (info["score_after"] > info["score_before"])
    from deployer.ncnn.param import read_param

    pads = [float(lay.get(18, 0.0)) for lay in read_param(result.paths.param).layers]
    table = read_table(result.paths.table)
    consumer = next(iter(shift["offsets"]))
    c = shift["offsets"][consumer]
    if info["kept"]:            # the written files are the shifted ones, and stock ncnn ran them
        assert pads.count(-127.0) == 17 and all(p in (0.0, -127.0) for p in pads)
        assert table.activation_scale(consumer) == pytest.approx(127.0 / c, rel=1e-5)
    else:
        assert not any(pads)
        assert table.activation_scale(consumer) == pytest.approx(shift["fraction"] * 127.0 / c, rel=1e-5)


def test_check_compares_shifted_layers_after_adding_the_offset_back(shifted, tmp_path, mobilenet_v2):
    """`deployer check --layers` reads each shift from the two .param files (Clip(0, 6) in fp32,
    Clip(-c, 6 - c) in int8) and adds c back: the shifted producers' per-layer errors stay small."""
    from deployer.check.crosscheck import crosscheck
    from deployer.ncnn.activation import shift_offsets

    model, table, pairs, model_s, table_s, pad_codes, offsets, samples = shifted
    q, _ = quantize_model(model_s, table_s, pad_codes=pad_codes)
    q.save(tmp_path / "s.param", tmp_path / "s.bin")
    found = shift_offsets(model.graph, q.graph)
    assert found == pytest.approx({p.producer: offsets[p.consumer] for p in pairs}, rel=1e-6)
    assert shift_offsets(model.graph, model.graph) == {}
    plain_q, _ = quantize_model(model, table)
    plain_q.save(tmp_path / "p.param", tmp_path / "p.bin")
    fp32 = (mobilenet_v2.param, mobilenet_v2.bin)
    errors = {}
    for tag in ("s", "p"):
        result = crosscheck(fp32, (tmp_path / f"{tag}.param", tmp_path / f"{tag}.bin"), samples[:4], threads=2)
        errors[tag] = {e.layer: e.rel_error for e in result.layers}
    producers = [p.producer for p in pairs]
    ratios = [errors["s"][n] / errors["p"][n] for n in producers]
    # measured 0.64-0.76: the shift's finer steps; compared without adding c back, it would be several x
    assert max(ratios) < 1.0
