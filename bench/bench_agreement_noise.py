"""How much int8 logit noise a top-1 agreement target allows on the demo's eval set.

    .venv/bin/python -m bench.bench_agreement_noise [--methods seq,percentile] [--target 0.97]

Top-1 agreement on a fixed eval set is decided by the inputs whose fp32 top two logits are close.
For each method (the demo's MobileNetV2 profile and data, all layers int8) this measures, on the
120 eval views:
- the fp32 margin m_i between the top two logits of every input;
- the int8 error of the difference of those two logits, d_i = e_top1 - e_top2 (its mean and spread);
- the agreement a Gaussian model of d predicts (input i flips when m_i + d_i < 0), next to the
  measured one, as a check of the model;
- for a range of noise levels sigma (d's spread scaled), the expected agreement and the probability
  that the realized agreement reaches --target; the sigma that makes that probability 0.9, and the
  output cosine it implies (1 - cosine scales with the error's power, sigma^2).

Writes bench/results/agreement_noise.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIGMA_SCALES = (1.0, 0.8, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def flip_probabilities(margins: np.ndarray, mean: float, sigma: float) -> np.ndarray:
    """P(m_i + d < 0) for d ~ N(mean, sigma)."""
    return np.array([_phi((-m - mean) / sigma) if sigma > 0 else float(m + mean < 0) for m in margins])


def p_at_most(p: np.ndarray, k: int) -> float:
    """P(at most k of the independent events with probabilities p happen): Poisson-binomial by DP."""
    dist = np.zeros(len(p) + 1)
    dist[0] = 1.0
    for q in p:
        dist[1:] = dist[1:] * (1 - q) + dist[:-1] * q
        dist[0] *= 1 - q
    return float(dist[: k + 1].sum())


def measure(method: str, model: Any, calib: Path, evalset: Path, work: Path, target: float, threads: int) -> dict:
    from deployer.check.net import NcnnNet
    from deployer.check.samples import list_inputs, load_samples
    from bench.demo_mobilenet import quantize_all_int8

    profile, result = quantize_all_int8(model, calib, evalset, method, work / method, threads)
    samples = load_samples([list_inputs(evalset)], profile.inputs, ["in0"])
    logits = {}
    for tag, (param, binf) in (("fp32", (model.param, model.bin)), ("int8", (result.paths.param, result.paths.bin))):
        net = NcnnNet(param, binf, threads=threads)
        logits[tag] = np.stack([net.run(s, ["out0"])["out0"].reshape(-1) for s in samples])
        del net
    ref, test = logits["fp32"], logits["int8"]
    order = np.argsort(ref, axis=1)[:, ::-1]
    rows = np.arange(len(ref))
    margins = ref[rows, order[:, 0]] - ref[rows, order[:, 1]]
    err = test - ref
    d = err[rows, order[:, 0]] - err[rows, order[:, 1]]
    mean, sigma = float(d.mean()), float(d.std())
    n = len(ref)
    allowed = int(math.floor((1 - target) * n + 1e-9))
    cos = float(np.mean(np.sum(ref * test, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(test, axis=1)))
    measured = float(np.mean(test.argmax(1) == ref.argmax(1)))
    predicted = 1 - float(flip_probabilities(margins, mean, sigma).mean())
    curve = []
    for k in SIGMA_SCALES:
        p = flip_probabilities(margins, mean * k, sigma * k)
        curve.append({"sigma": round(sigma * k, 4), "expected_agreement": round(1 - float(p.mean()), 4),
                      "p_target": round(p_at_most(p, allowed), 4),
                      "implied_cosine": round(1 - (1 - cos) * k * k, 5)})
    # the noise level at which the target is reached with probability 0.9 (bisection on the scale)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        p = flip_probabilities(margins, mean * mid, sigma * mid)
        lo, hi = (mid, hi) if p_at_most(p, allowed) >= 0.9 else (lo, mid)
    return {"method": method, "inputs": n, "target": target, "misses_allowed": allowed,
            "cosine": round(cos, 5), "top1_agreement": round(measured, 4),
            "predicted_agreement": round(predicted, 4), "d_mean": round(mean, 4), "d_sigma": round(sigma, 4),
            "margins_below": {str(t): int(np.sum(margins < t)) for t in (0.05, 0.1, 0.25, 0.5, 1.0)},
            "p_target_now": round(p_at_most(flip_probabilities(margins, mean, sigma), allowed), 4),
            "sigma_for_p90": round(sigma * lo, 4), "cosine_for_p90": round(1 - (1 - cos) * lo * lo, 5),
            "curve": curve}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from bench.bench_quantize import host_info
    from bench.demo_mobilenet import demo_data
    from deployer import fsutil

    ap = argparse.ArgumentParser(description="int8 logit noise vs a top-1 agreement target (MobileNetV2 demo data)")
    ap.add_argument("--methods", default="seq,percentile")
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "agreement_noise.json")
    args = ap.parse_args(argv)
    model, calib, evalset = demo_data()
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-noise-") as tmp:
        for method in [m for m in args.methods.split(",") if m]:
            res = measure(method, model, calib, evalset, Path(tmp), args.target, args.threads)
            results.append(res)
            print(f"{method:<11} cosine {res['cosine']:.4f}  agreement {res['top1_agreement']:.3f} "
                  f"(model predicts {res['predicted_agreement']:.3f})  d ~ N({res['d_mean']:+.3f}, "
                  f"{res['d_sigma']:.3f})  P(>= {args.target}) now {res['p_target_now']:.2f}; "
                  f"0.9 needs sigma {res['sigma_for_p90']:.3f} ~ cosine {res['cosine_for_p90']:.4f}", flush=True)
    report = {"host": host_info(args.threads), "seconds": round(time.perf_counter() - started, 1),
              "eval": "foolbox ImageNet views (20 photos x 6)", "results": results}
    fsutil.write_text(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
