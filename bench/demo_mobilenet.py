"""The demo's MobileNetV2 set-up, shared by the benchmarks that measure it (not a benchmark itself).

`demo_data()` builds (or finds in the deployer cache) the fp32 model, the calibration crops and the
120 ImageNet eval views exactly as `make demo` does; `quantize_all_int8()` runs the demo profile with
one method and no mixed precision on chosen calibration and eval lists. Used by bench_agreement_noise,
bench_calib_domain and bench_mixed_cost.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "mobilenet_v2.yaml"
if str(ROOT) not in sys.path:  # run as `python bench/x.py`: bench/ is first on sys.path, not the root
    sys.path.insert(0, str(ROOT))


def demo_data() -> tuple[Any, Path, Path]:
    """(zoo model, calibration list file, eval list file) of the MobileNetV2 demo."""
    from examples import data as zoo_data
    from examples import zoo

    root = zoo.cache_root() / "data"
    return (zoo.build("mobilenet_v2"), zoo_data.calibration_photos(root / "calibration").list_file,
            zoo_data.imagenet_views(root / "imagenet-views").list_file)


def quantize_all_int8(model: Any, calib: Path, evalset: Path, method: str, out: Path,
                      threads: int) -> tuple[Any, Any]:
    """The demo profile quantized with `method`, every layer int8: (the Profile, its QuantizeResult)."""
    from deployer.profile import Override, load_profile
    from deployer.quant.pipeline import run_quantize

    overrides = [Override(f, v, f) for f, v in (
        ("model.param", str(model.param)), ("model.bin", str(model.bin)), ("calibration.images", [str(calib)]),
        ("eval.images", [str(evalset)]), ("quantize.method", method), ("quantize.mixed", False),
        ("out", str(out)), ("threads", threads))]
    profile = load_profile(PROFILE, overrides)
    return profile, run_quantize(profile)
