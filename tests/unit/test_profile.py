"""Profile schema: strict validation with one-line errors that name the file and field (or flag)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.profile import Override, load_profile

GOOD = """\
model:
  param: m.param
  bin: m.bin
inputs:
  - shape: [24, 24]
    pixel: rgb
    mean: [127.5, 127.5, 127.5]
    norm: [0.0078125, 0.0078125, 0.0078125]
calibration:
  images: calib/
  count: 40
  holdout: 0.25
quantize:
  method: auto
  keep_fp32: [conv1]
gate: ["top1_agreement>=0.98", "cosine>=0.99"]
out: build/out
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "m.param").write_text("7767517\n")
    (tmp_path / "m.bin").write_bytes(b"")
    (tmp_path / "calib").mkdir()
    return tmp_path


def write(folder: Path, text: str) -> Path:
    p = folder / "p.yaml"
    p.write_text(text)
    return p


def error_of(path: Path | None, overrides: list[Override] | None = None) -> str:
    with pytest.raises(DeployerError) as info:
        load_profile(path, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_good_profile_resolves_paths_against_its_folder(folder: Path, monkeypatch):
    monkeypatch.chdir("/")
    prof = load_profile(write(folder, GOOD))
    assert prof.model.param == folder / "m.param"
    assert prof.calibration.images == [folder / "calib"]
    assert prof.out == folder / "build" / "out"
    assert prof.inputs[0].shape == (24, 24)
    assert prof.inputs[0].pixel == "RGB"
    assert prof.inputs[0].resize == "resize"
    assert prof.calibration.count == 40 and prof.calibration.holdout == 0.25
    assert prof.quantize.keep_fp32 == ["conv1"]
    assert prof.gate == ["top1_agreement>=0.98", "cosine>=0.99"]


def test_unknown_key_says_did_you_mean(folder: Path):
    p = write(folder, GOOD.replace("  count: 40", "  cuont: 40"))
    assert error_of(p) == f"{p}: calibration.cuont: unknown field (did you mean 'count'?)"
    p = write(folder, GOOD.replace("gate:", "gates:"))
    assert error_of(p) == f"{p}: gates: unknown field (did you mean 'gate'?)"
    p = write(folder, GOOD.replace("    pixel: rgb", "    pxel: rgb"))
    assert error_of(p) == f"{p}: inputs[0].pxel: unknown field (did you mean 'pixel'?)"


def test_wrong_types(folder: Path):
    p = write(folder, GOOD.replace("count: 40", "count: many"))
    assert error_of(p) == f"{p}: calibration.count: expected an integer, got 'many'"
    p = write(folder, GOOD.replace("mean: [127.5, 127.5, 127.5]", "mean: [127.5, x, 127.5]"))
    assert error_of(p) == f"{p}: inputs[0].mean: expected a number, got 'x'"
    p = write(folder, GOOD.replace("shape: [24, 24]", "shape: [24, 24, 3, 1]"))
    assert error_of(p) == f"{p}: inputs[0].shape: expected [W, H], got [24, 24, 3, 1]"
    p = write(folder, GOOD.replace("mean: [127.5, 127.5, 127.5]", "mean: [127.5]"))
    assert error_of(p) == f"{p}: inputs[0].mean: has 1 values but pixel RGB has 3 channels"
    # ncnn2table's [W, H, C]: a C that disagrees with the pixel format is refused, one that agrees is fine
    p = write(folder, GOOD.replace("shape: [24, 24]", "shape: [24, 24, 7]"))
    assert error_of(p) == (f"{p}: inputs[0].shape: says 7 channels but pixel RGB has 3 "
                           "(give [W, H] or [W, H, 3], or the pixel format the network takes)")
    assert load_profile(write(folder, GOOD.replace("shape: [24, 24]", "shape: [24, 24, 3]"))).inputs[0].shape == (24, 24)
    p = write(folder, GOOD.replace("method: auto", "method: kll"))
    assert error_of(p) == f"{p}: quantize.method: unknown method 'kll' (did you mean 'kl'?)"
    p = write(folder, GOOD.replace("pixel: rgb", "pixel: RBG"))
    assert error_of(p) == f"{p}: inputs[0].pixel: unknown pixel format 'RBG' (did you mean 'RGB'?)"
    p = write(folder, GOOD.replace('"cosine>=0.99"', '"cosin>=0.99"'))
    assert error_of(p) == f"{p}: gate: unknown gate metric 'cosin' in 'cosin>=0.99' (did you mean 'cosine'?)"


def test_missing_file_and_missing_field(folder: Path):
    p = write(folder, GOOD.replace("param: m.param", "param: nope.param"))
    assert error_of(p) == (f"{p}: model.param: file not found: {folder / 'nope.param'} "
                           "(check the path (relative paths start at the profile's folder))")
    p = write(folder, GOOD.replace("  bin: m.bin\n", ""))
    assert error_of(p) == f"{p}: model.bin: missing (give model.param and model.bin (or model.source))"
    assert error_of(folder / "absent.yaml") == f"{folder / 'absent.yaml'}: profile not found (check the --profile path)"


def test_invalid_yaml_names_the_line(folder: Path):
    p = write(folder, GOOD.replace("  count: 40", "  count: [40"))
    assert error_of(p).startswith(f"{p}: line ")


def test_flags_override_and_are_named_in_errors(folder: Path, monkeypatch):
    monkeypatch.chdir(folder)
    p = write(folder, GOOD)
    prof = load_profile(p, [Override("inputs.mean", ["1,2,3"], "--mean"), Override("calibration.count", 7, "--count"),
                            Override("out", "elsewhere", "--out")])
    assert prof.inputs[0].mean == (1.0, 2.0, 3.0)
    assert prof.inputs[0].norm == (0.0078125,) * 3         # untouched profile field
    assert prof.calibration.count == 7
    assert prof.out == folder / "elsewhere"
    assert error_of(p, [Override("calibration.count", "x", "--count")]) == "--count: expected an integer, got 'x'"
    assert error_of(p, [Override("inputs.shape", ["1,2", "3,4"], "--shape")]) == \
        "--shape: gives 2 value(s) but the model has 1 inputs (give one bracket group per input, e.g. [104,117,123],[0,0,0])"


def test_flags_alone_describe_a_job(folder: Path, monkeypatch):
    monkeypatch.chdir(folder)
    prof = load_profile(None, [Override("model.param", "m.param", "--param"), Override("model.bin", "m.bin", "--bin"),
                               Override("inputs.shape", ["16,16"], "--shape"), Override("inputs.pixel", ["GRAY"], "--pixel"),
                               Override("calibration.images", ["calib"], "--calib")])
    assert prof.model.param == folder / "m.param"
    assert prof.inputs[0].pixel == "GRAY" and prof.inputs[0].shape == (16, 16)
    assert error_of(None, [Override("model.param", "m.param", "--param")]) == "--bin: missing (give model.param and model.bin (or model.source))"


def test_model_source_needs_inputshape(folder: Path):
    (folder / "net.onnx").write_bytes(b"x")
    p = write(folder, GOOD.replace("  param: m.param\n  bin: m.bin\n", "  source: net.onnx\n"))
    assert error_of(p) == f"{p}: model.inputshape: missing; pnnx needs it to convert net.onnx (e.g. inputshape: [1,3,224,224])"
    p = write(folder, GOOD.replace("  param: m.param\n  bin: m.bin\n", "  source: net.onnx\n  inputshape: [1,3,24,24]\n"))
    prof = load_profile(p)
    assert prof.model.source == folder / "net.onnx" and prof.model.inputshape == [[1, 3, 24, 24]]


def test_cli_prints_one_line_and_exits_2(folder: Path):
    p = write(folder, GOOD.replace("  count: 40", "  cuont: 40"))
    env = dict(os.environ, COLUMNS="400")
    proc = subprocess.run([str(Path(sys.executable).parent / "deployer"), "quantize", "--profile", str(p)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "vulkan" not in ln.lower()]
    assert lines == [f"error: {p}: calibration.cuont: unknown field (did you mean 'count'?)"]
    assert proc.stdout == ""


def test_eval_section_is_parsed_and_checked(folder: Path, monkeypatch):
    (folder / "eval").mkdir()
    prof = load_profile(write(folder, GOOD + "eval:\n  images: eval/\n  count: 60\n  min_count: 40\n"))
    assert prof.eval.images == [folder / "eval"] and prof.eval.count == 60 and prof.eval.min_count == 40
    # default: no eval set (the held-out share judges), minimum 50
    plain = load_profile(write(folder, GOOD))
    assert plain.eval.images == [] and plain.eval.min_count == 50
    assert "eval.min_cont: unknown field" in error_of(write(folder, GOOD + "eval:\n  min_cont: 3\n"))
    assert "eval.images: list file or folder not found" in error_of(write(folder, GOOD + "eval:\n  images: nope/\n"))
    msg = error_of(write(folder, GOOD + "eval:\n  images: [eval/, eval/]\n"))
    assert "eval.images: gives 2 list(s) but inputs has 1 entries" in msg
    monkeypatch.chdir(folder)
    flagged = load_profile(write(folder, GOOD), [Override("eval.images", ["eval"], "--eval")])
    assert flagged.eval.images == [folder / "eval"]
    assert error_of(write(folder, GOOD), [Override("eval.count", 0, "--eval-count")]).startswith("--eval-count: must be >= 1")


def test_eval_group_is_a_checked_regular_expression(folder: Path):
    prof = load_profile(write(folder, GOOD + "eval:\n  group: '^(photo\\d+)_'\n"))
    assert prof.eval.group == r"^(photo\d+)_"
    assert load_profile(write(folder, GOOD)).eval.group is None
    p = write(folder, GOOD + "eval:\n  group: '(photo'\n")
    msg = error_of(p)
    assert msg.startswith(f"{p}: eval.group: not a regular expression: missing ), unterminated subpattern")
    assert "\n" not in msg.strip()
    flagged = load_profile(write(folder, GOOD), [Override("eval.group", "^(a)", "--eval-group")])
    assert flagged.eval.group == "^(a)"


def test_fp32_byte_budget_is_a_share_or_a_byte_count(folder: Path):
    from deployer.profile import fp32_byte_budget

    p = write(folder, GOOD.replace("keep_fp32: [conv1]", "keep_fp32: [conv1]\n  max_fp32_bytes: 10%"))
    budget = load_profile(p).quantize.max_fp32_bytes
    assert budget == "10%" and fp32_byte_budget(budget, 3_614_776) == 361_477
    p = write(folder, GOOD.replace("keep_fp32: [conv1]", "keep_fp32: [conv1]\n  max_fp32_bytes: 4096"))
    assert fp32_byte_budget(load_profile(p).quantize.max_fp32_bytes, 10**9) == 4096
    assert fp32_byte_budget(None, 10**9) is None
    p = write(folder, GOOD.replace("keep_fp32: [conv1]", "keep_fp32: [conv1]\n  max_fp32_bytes: lots"))
    assert error_of(p) == (f"{p}: quantize.max_fp32_bytes: expected a share like 10% or a byte count, got 'lots' "
                           "(e.g. max_fp32_bytes: 10%)")
    assert "--max-fp32-bytes" in error_of(p, [Override("quantize.max_fp32_bytes", "-5", "--max-fp32-bytes")])


def test_layer_times_is_a_path_from_the_profiles_folder_or_a_flag(folder: Path):
    (folder / "times.json").write_text("{}")
    p = write(folder, GOOD.replace("keep_fp32: [conv1]", "keep_fp32: [conv1]\n  layer_times: times.json"))
    assert load_profile(p).quantize.layer_times == folder / "times.json"
    p = write(folder, GOOD.replace("keep_fp32: [conv1]", "keep_fp32: [conv1]\n  layer_times: gone.json"))
    assert error_of(p).startswith(f"{p}: quantize.layer_times: run result file not found: {folder / 'gone.json'}")
    assert error_of(write(folder, GOOD), [Override("quantize.layer_times", "nope.json", "--layer-times")]).startswith(
        "--layer-times: run result file not found")


def test_max_slowdown_is_a_share_and_needs_board_times(folder: Path):
    (folder / "times.json").write_text("{}")
    base = "keep_fp32: [conv1]\n  layer_times: times.json"
    p = write(folder, GOOD.replace("keep_fp32: [conv1]", base + "\n  max_slowdown: 5%"))
    assert load_profile(p).quantize.max_slowdown == pytest.approx(0.05)
    p = write(folder, GOOD.replace("keep_fp32: [conv1]", base + "\n  max_slowdown: fast"))
    assert error_of(p) == f"{p}: quantize.max_slowdown: expected a share like 5%, got 'fast' (e.g. max_slowdown: 5%)"
    p = write(folder, GOOD.replace("keep_fp32: [conv1]", "keep_fp32: [conv1]\n  max_slowdown: 5%"))
    assert error_of(p).startswith(f"{p}: quantize.max_slowdown: needs the board's per-layer times")
    assert error_of(write(folder, GOOD), [Override("quantize.max_slowdown", "5%", "--max-slowdown")]).startswith(
        "--max-slowdown: needs the board's per-layer times")


def test_byte_budget_share_too_large_for_a_float_is_one_line(folder: Path):
    """max_fp32_bytes: 999...9% (400 digits) parsed as inf and crashed fp32_byte_budget (exit 4)."""
    text = GOOD.replace("  keep_fp32: [conv1]", "  keep_fp32: [conv1]\n  max_fp32_bytes: " + "9" * 400 + "%")
    msg = error_of(write(folder, text))
    assert msg.startswith(f"{folder / 'p.yaml'}: quantize.max_fp32_bytes: 99999999999999999999... is out of range")
    prof = load_profile(write(folder, GOOD.replace("[conv1]", "[conv1]\n  max_fp32_bytes: 200%")))
    assert prof.quantize.max_fp32_bytes == "200%"
