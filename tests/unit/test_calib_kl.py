"""KL threshold search: the vectorised search must pick exactly the threshold of ncnn's loop.

The reference below is a literal, loop-by-loop transcription of QuantNet::quantize_KL from
ncnn's tools/quantize/ncnn2table.cpp (float32 everywhere, the same accumulation order), written
here independently of deployer.quant.methods. It is slow (pure Python), so the full searches are
marked slow; a few thresholds are checked in the fast suite.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from deployer.quant.collect import histogram
from deployer.quant.methods import (KLMethod, kl_divergence_f32, kl_divergences, kl_threshold_bin,
                                    normalized)
from tests.fixtures.calib import calib_images, calib_tiny  # noqa: F401  (until registered in conftest)

f32 = np.float32
EPS = f32(0.0001)


def ref_normalize(hist):
    total = sum(int(v) for v in hist)
    return [f32(int(v) / total) for v in hist]


def ref_kl(hn, threshold, target_bin=128):
    """One threshold of ncnn's loop, literally."""
    clip = [EPS] * threshold
    for j in range(threshold):
        clip[j] = f32(clip[j] + hn[j])
    for j in range(threshold, len(hn)):
        clip[threshold - 1] = f32(clip[threshold - 1] + hn[j])
    num_per_bin = f32(threshold) / f32(target_bin)
    q = [f32(0)] * target_bin
    # first
    end = num_per_bin
    right_lower = int(math.floor(end))
    right_scale = f32(end - f32(right_lower))
    if right_scale > 0:
        q[0] = f32(q[0] + f32(right_scale * hn[right_lower]))
    for k in range(right_lower):
        q[0] = f32(q[0] + hn[k])
    q[0] = f32(q[0] / f32(f32(right_lower) + right_scale))
    for j in range(1, target_bin - 1):
        start = f32(f32(j) * num_per_bin)
        end = f32(f32(j + 1) * num_per_bin)
        left_upper = int(math.ceil(start))
        left_scale = f32(f32(left_upper) - start)
        right_lower = int(math.floor(end))
        right_scale = f32(end - f32(right_lower))
        if left_scale > 0:
            q[j] = f32(q[j] + f32(left_scale * hn[left_upper - 1]))
        if right_scale > 0:
            q[j] = f32(q[j] + f32(right_scale * hn[right_lower]))
        for k in range(left_upper, right_lower):
            q[j] = f32(q[j] + hn[k])
        q[j] = f32(q[j] / f32(f32(f32(right_lower - left_upper) + left_scale) + right_scale))
    start = f32(f32(threshold) - num_per_bin)
    left_upper = int(math.ceil(start))
    left_scale = f32(f32(left_upper) - start)
    if left_scale > 0:
        q[-1] = f32(q[-1] + f32(left_scale * hn[left_upper - 1]))
    for k in range(left_upper, threshold):
        q[-1] = f32(q[-1] + hn[k])
    q[-1] = f32(q[-1] / f32(f32(threshold - left_upper) + left_scale))

    e = [EPS] * threshold
    end = num_per_bin
    right_lower = int(math.floor(end))
    right_scale = f32(end - f32(right_lower))
    if right_scale > 0:
        e[right_lower] = f32(e[right_lower] + f32(right_scale * q[0]))
    for k in range(right_lower):
        e[k] = f32(e[k] + q[0])
    for j in range(1, target_bin - 1):
        start = f32(f32(j) * num_per_bin)
        end = f32(f32(j + 1) * num_per_bin)
        left_upper = int(math.ceil(start))
        left_scale = f32(f32(left_upper) - start)
        right_lower = int(math.floor(end))
        right_scale = f32(end - f32(right_lower))
        if left_scale > 0:
            e[left_upper - 1] = f32(e[left_upper - 1] + f32(left_scale * q[j]))
        if right_scale > 0:
            e[right_lower] = f32(e[right_lower] + f32(right_scale * q[j]))
        for k in range(left_upper, right_lower):
            e[k] = f32(e[k] + q[j])
    start = f32(f32(threshold) - num_per_bin)
    left_upper = int(math.ceil(start))
    left_scale = f32(f32(left_upper) - start)
    if left_scale > 0:
        e[left_upper - 1] = f32(e[left_upper - 1] + f32(left_scale * q[-1]))
    for k in range(left_upper, threshold):
        e[k] = f32(e[k] + q[-1])

    result = f32(0)
    for a, b in zip(clip, e):
        result = f32(result + f32(a * f32(math.log(float(f32(a / b))))))
    return result


def ref_threshold(hist):
    hn = ref_normalize(hist)
    best_t, best = 128, f32(np.finfo(np.float32).max)
    for t in range(128, len(hn)):
        kl = ref_kl(hn, t)
        if kl < best:
            best, best_t = kl, t
    return best_t


def _random_hists(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:     # relu-like half gaussian
            x = np.abs(rng.standard_normal(200_000)) * rng.uniform(0.5, 3)
        elif kind == 1:   # heavy tail
            x = np.abs(rng.standard_cauchy(200_000))
        elif kind == 2:   # relu6-like: mass piled at the clip
            x = np.clip(np.abs(rng.standard_normal(200_000)) * 4, 0, 6)
        else:             # sparse: many empty bins
            x = rng.choice([0.1, 0.5, 2.0, 7.0], 50_000) * rng.uniform(0.9, 1.1, 50_000)
        x = x.astype(np.float32)
        h = np.zeros(2048, np.uint64)
        histogram(x.copy(), np.float32(x.max()), h)
        out.append(h)
    return out


def test_histogram_binning_is_ncnns_float32_formula():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(50_000).astype(np.float32) * 3,
                        np.zeros(1000, np.float32)])
    a = np.abs(x)
    m = np.float32(a.max())
    h = np.zeros(2048, np.uint64)
    histogram(a.copy(), m, h)
    ref = np.zeros(2048, np.uint64)
    for v in a[a != 0]:
        ref[min(int(f32(f32(v) / m) * f32(2048)), 2047)] += 1
    assert np.array_equal(h, ref)
    assert h.sum() == 50_000           # zeros skipped, absmax lands in the last bin


def test_vectorised_kl_matches_reference_on_sampled_thresholds():
    for hist in _random_hists(4, seed=5):
        hn = ref_normalize(hist)
        kl = kl_divergences(normalized(hist))
        for t in (128, 129, 200, 555, 1023, 1500, 2047):
            ref = float(ref_kl(hn, t))
            assert kl[t - 128] == pytest.approx(ref, rel=1e-4, abs=1e-5)
            assert float(kl_divergence_f32(normalized(hist), t)) == ref   # bit-exact transcription


def test_kl_threshold_to_scale_uses_ncnns_half_bin():
    from deployer.quant.collect import ActivationStats

    hist = _random_hists(1, seed=9)[0]
    stats = ActivationStats(["b"], np.array([6.0], np.float32), hist[None], np.array([1]), 1)
    tb = kl_threshold_bin(hist)
    th = KLMethod().thresholds(stats)[0]
    assert th == (f32(tb) + f32(0.5)) * f32(6.0) / f32(2048)
    assert KLMethod().scales(stats)[0] == f32(127) / th


@pytest.mark.slow
def test_vectorised_threshold_equals_literal_loop_on_random_histograms():
    hists = _random_hists(4, seed=1)
    for hist in (hists[0], hists[2]):      # half-gaussian and relu6-like; ~20 s each in pure Python
        assert kl_threshold_bin(hist) == ref_threshold(hist)


@pytest.mark.slow
def test_vectorised_threshold_equals_literal_loop_on_real_histograms(calib_tiny, calib_images):
    """Histograms of real activations (tiny model run by the ncnn wheel on images)."""
    from deployer.inputs.spec import InputSpec
    from deployer.quant.calibration import Calibrator
    from deployer.quant.ncnn2table import read_lists
    from deployer.quant.weights import load_model

    model = load_model(calib_tiny.param, calib_tiny.bin)
    spec = InputSpec((16, 16, 3), pixel="BGR", mean=(104.0, 117.0, 123.0), norm=(0.017,) * 3, file_type="image")
    stats = Calibrator(model, [spec], read_lists([calib_images]), threads=1).stats()
    for hist in (stats.histograms[0], stats.histograms[-1]):   # image input and fc input
        assert kl_threshold_bin(hist) == ref_threshold(hist)
