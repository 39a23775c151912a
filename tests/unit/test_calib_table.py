"""Calibration table text: ncnn2table's exact bytes, ncnn2int8's reading rules, and the traps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from deployer.errors import DeployerError
from deployer.quant.table import CalibrationTable, format_table, parse_table, read_table, write_table


def _table() -> CalibrationTable:
    t = CalibrationTable()
    t.set_weight("conv1", [44.443855, 52.714142])
    t.set_weight("fc", [227.760925])
    t.set_activation("conv1", 75.255226)
    t.set_activation("fc", 186.615479)
    return t


def test_format_is_ncnn2table_bytes():
    # ncnn2table: fprintf("%s_param_0 ") then "%f " per value then "\n"; weight lines first
    text = format_table(_table())
    assert text == ("conv1_param_0 44.443855 52.714142 \n"
                    "fc_param_0 227.760925 \n"
                    "conv1 75.255226 \n"
                    "fc 186.615479 \n")


def test_percent_f_rounding_matches_c_for_float32_values():
    # %f of a float promoted to double: six decimals of the exact binary value
    v = float(np.float32(127) / np.float32(3.0))
    t = CalibrationTable()
    t.set_activation("x", v)
    assert format_table(t) == "x " + ("%f" % v) + " \n"
    assert "%f" % v == "42.333332"


def test_round_trip_through_file(tmp_path):
    p = tmp_path / "t.table"
    write_table(p, _table())
    back = read_table(p)
    assert back.order == ["conv1_param_0", "fc_param_0", "conv1", "fc"]
    assert back.weight_scales("conv1") == pytest.approx([44.443855, 52.714142], rel=1e-7)
    assert back.activation_scale("fc") == pytest.approx(186.615479, rel=1e-7)
    assert p.read_text() == format_table(back)


def test_param_substring_decides_weight_vs_activation():
    t = parse_table("a_param_3 1.0 2.0 \nmy_param_layer 5.0 \nb 3.0 \n")
    # ncnn2int8 rule: any key containing "_param_" is a weight entry, even a layer named that way
    assert set(t.weights) == {"a_param_3", "my_param_layer"}
    assert set(t.activations) == {"b"}


def test_crlf_and_commented_lines_are_plain_keys():
    t = parse_table("#conv1_param_0 1.0 \r\n#conv1 2.0 \r\nconv2 3.0 \r\n")
    assert "conv2" in t.activations and t.activation_scale("conv1") is None
    assert "#conv1" in t.activations       # a key no layer matches: ncnn's mixed-precision switch


def test_blank_line_in_the_middle_is_an_error_naming_the_line():
    text = "conv1_param_0 1.0 \n\nconv1 5.0 \n"
    with pytest.raises(DeployerError, match=r"line 2 is blank.*line 3 \(conv1\)"):
        parse_table(text, "x.table")


def test_blank_line_can_be_downgraded_to_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = parse_table("conv1_param_0 1.0 \n\nconv1 5.0 \n", strict_blank=False)
    assert t.activation_scale("conv1") == 5.0
    assert any("blank" in str(w.message) for w in caught)


def test_trailing_blank_lines_are_fine():
    assert parse_table("conv1 5.0 \n\n\n").activation_scale("conv1") == 5.0


@pytest.mark.parametrize("text, match", [
    ("conv1 abc \n", "'abc' is not a number"),
    ("conv1\n", "no scale values"),
    ("x" * 300 + " 1.0\n", "longer than 255"),
])
def test_bad_lines_are_errors(text, match):
    with pytest.raises(DeployerError, match=match):
        parse_table(text, "x.table")


def test_duplicate_key_warns_and_last_wins():
    with pytest.warns(UserWarning, match="duplicate key conv1"):
        t = parse_table("conv1 1.0 \nconv1 2.0 \n")
    assert t.activation_scale("conv1") == 2.0


def test_write_rejects_keys_ncnn_cannot_read(tmp_path):
    t = CalibrationTable()
    t.set_activation("bad name", 1.0)
    with pytest.raises(DeployerError, match="whitespace"):
        write_table(tmp_path / "t.table", t)
    assert not (tmp_path / "t.table").exists()


def test_missing_table_file(tmp_path):
    with pytest.raises(DeployerError, match="not found"):
        read_table(tmp_path / "nope.table")
