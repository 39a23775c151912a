"""deployer.ncnn against real pnnx output and the stock ncnn wheel.

Two small torch models (vision: Conv/BN/PReLU/DW/Deconv/GroupNorm/InstanceNorm/Conv1D/Linear;
sequence: Embedding/LSTM/GRU/MultiheadAttention/LayerNorm/Linear->Gemm) are exported with pnnx,
fp32 and fp16, once per session. We read and write them byte-identically, and models we write
(weights changed, fp32 converted to fp16) load in ncnn and give the numbers torch predicts.
"""

from __future__ import annotations

import copy

import ncnn
import numpy as np
import pytest
import torch

from deployer.ncnn import NcnnModel, half
from deployer.ncnn.modelbin import weight_layout
from tests.fixtures.ncnnio import pnnx_models  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow

MODELS = ["vision", "sequence"]


def run_ncnn(param: bytes | str, bin_path, inputs) -> np.ndarray:
    """fp32 ncnn forward (fp16 storage/arithmetic off) of a model given as files."""
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(param)) == 0
    assert net.load_model(str(bin_path)) == 0
    ex = net.create_extractor()
    x = inputs[0]
    if x.dtype in (torch.int64, torch.int32):
        arr = x.squeeze(0).numpy().astype(np.int32)
    else:
        arr = x.squeeze(0).numpy().astype(np.float32)
    assert ex.input("in0", ncnn.Mat(arr).clone()) == 0
    ret, out = ex.extract("out0")
    assert ret == 0
    return np.array(out).copy()


def torch_out(net, inputs) -> np.ndarray:
    with torch.no_grad():
        return net(*inputs).squeeze(0).numpy()


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_pnnx_export_round_trips_byte_identical(pnnx_models, tmp_path, name, fp16):
    param, bin_, _, _ = pnnx_models[(name, fp16)]
    model = NcnnModel.load(param, bin_)
    model.save(tmp_path / "out.param", tmp_path / "out.bin")
    assert (tmp_path / "out.param").read_bytes() == param.read_bytes()
    assert (tmp_path / "out.bin").read_bytes() == bin_.read_bytes()
    storages = {w.storage for ws in model.weights.values() for w in ws if w.tagged}
    assert storages == ({"fp16"} if fp16 else {"fp32"})


def test_exports_cover_the_layer_types_we_claim(pnnx_models):
    types = set()
    for name in MODELS:
        model = NcnnModel.load(*pnnx_models[(name, False)][:2])
        types |= {lay.type for lay in model.graph.layers if weight_layout(lay)}
    assert types >= {"Convolution", "ConvolutionDepthWise", "Deconvolution", "BatchNorm", "PReLU",
                     "GroupNorm", "InstanceNorm", "Convolution1D", "InnerProduct", "Embed", "LSTM",
                     "GRU", "MultiHeadAttention", "LayerNorm", "Gemm"}


@pytest.mark.parametrize("name", MODELS)
def test_our_fp16_conversion_is_bit_identical_to_pnnx(pnnx_models, name):
    fp32 = NcnnModel.load(*pnnx_models[(name, False)][:2])
    fp16 = NcnnModel.load(*pnnx_models[(name, True)][:2])
    assert fp32.graph.layers == fp16.graph.layers
    for layer_name, weights in fp32.weights.items():
        for w32, w16 in zip(weights, fp16.weights[layer_name], strict=True):
            assert w32.tagged == w16.tagged
            if w32.tagged:
                expected = half.float32_to_float16(w32.data, rounding="pnnx")
                got = half.float32_to_float16(w16.data)     # exact: w16 holds decoded halves
                assert np.array_equal(expected, got), f"{layer_name}.{w32.name}"
            else:
                assert w32.data.tobytes() == w16.data.tobytes()


@pytest.mark.parametrize("name", MODELS)
def test_fp16_model_we_write_runs_in_ncnn_like_pnnx_fp16(pnnx_models, tmp_path, name):
    param, bin_, net, inputs = pnnx_models[(name, False)]
    model = NcnnModel.load(param, bin_)
    for weights in model.weights.values():
        for w in weights:
            if w.tagged:
                w.data = half.round_trip(w.data, rounding="pnnx")
                w.storage = "fp16"
    model.save(tmp_path / "half.param", tmp_path / "half.bin")
    assert (tmp_path / "half.bin").stat().st_size < bin_.stat().st_size * 0.6

    ours = run_ncnn(tmp_path / "half.param", tmp_path / "half.bin", inputs)
    theirs = run_ncnn(*pnnx_models[(name, True)][:2], inputs)
    assert np.array_equal(ours, theirs)
    expected = torch_out(net, inputs)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("name", MODELS)
def test_fp32_export_matches_torch(pnnx_models, name):
    param, bin_, net, inputs = pnnx_models[(name, False)]
    np.testing.assert_allclose(run_ncnn(param, bin_, inputs), torch_out(net, inputs),
                               atol=1e-4, rtol=1e-4)


def test_changed_weights_give_the_numbers_torch_predicts(pnnx_models, tmp_path):
    param, bin_, net, inputs = pnnx_models[("vision", False)]
    model = NcnnModel.load(param, bin_)
    changed = copy.deepcopy(net)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        changed.conv.weight.copy_(torch.randn(changed.conv.weight.shape, generator=gen) * 0.3)
        changed.dw.weight.mul_(-1.5)
        changed.fc.weight.mul_(2.0)
        changed.fc.bias.add_(1.0)
        changed.bn.bias.add_(0.25)
    first_conv = next(lay for lay in model.graph.layers if lay.type == "Convolution")
    dw = next(lay for lay in model.graph.layers if lay.type == "ConvolutionDepthWise")
    fc = next(lay for lay in model.graph.layers if lay.type == "InnerProduct")
    bn = next(lay for lay in model.graph.layers if lay.type == "BatchNorm")
    model.weight(first_conv.name, "weight").data = changed.conv.weight.detach().numpy().ravel().copy()
    model.weight(dw.name, "weight").data = changed.dw.weight.detach().numpy().ravel().copy()
    model.weight(fc.name, "weight").data = changed.fc.weight.detach().numpy().ravel().copy()
    model.weight(fc.name, "bias").data = changed.fc.bias.detach().numpy().copy()
    model.weight(bn.name, "bias").data = model.weight(bn.name, "bias").data + np.float32(0.25)
    model.save(tmp_path / "m.param", tmp_path / "m.bin")

    assert (tmp_path / "m.param").read_bytes() == param.read_bytes()
    out = run_ncnn(tmp_path / "m.param", tmp_path / "m.bin", inputs)
    expected = torch_out(changed, inputs)
    assert not np.allclose(expected, torch_out(net, inputs), atol=1e-2)   # the change matters
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)
