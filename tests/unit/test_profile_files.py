"""The profiles shipped in profiles/ are valid against the schema (model files swapped for stand-ins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.check.gates import parse_gates
from deployer.profile import Override, load_profile

PROFILES = sorted((Path(__file__).resolve().parents[2] / "profiles").glob("*.yaml"))


def test_there_are_profiles_for_a_classifier_and_a_detector():
    names = {p.stem for p in PROFILES}
    assert {"mobilenet_v2", "yolov8n"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_shipped_profile_validates(path: Path, tmp_path: Path):
    for name in ("m.param", "m.bin"):
        (tmp_path / name).write_text("")
    (tmp_path / "calib").mkdir()
    prof = load_profile(path, [Override("model.param", str(tmp_path / "m.param"), "--param"),
                               Override("model.bin", str(tmp_path / "m.bin"), "--bin"),
                               Override("calibration.images", [str(tmp_path / "calib")], "--calib"),
                               Override("eval.images", [str(tmp_path / "calib")], "--eval")])
    assert prof.out is not None and prof.out.is_absolute()
    assert prof.gate and parse_gates(prof.gate)
    assert prof.quantize.method == "auto" and prof.quantize.mixed
    for spec in prof.inputs:
        assert spec.shape[0] > 0 and spec.shape[1] > 0
        assert len(spec.mean) == len(spec.norm) == 3
