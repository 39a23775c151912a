"""ncnn2table's command line: what ncnn accepts, plus one-line errors where ncnn stays silent."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.inputs.spec import InputSpec
from deployer.quant.ncnn2table import input_specs, parse_args, read_list, read_lists

BASE = ["m.param", "m.bin", "list.txt", "out.table"]


def test_full_command_line():
    a = parse_args(BASE + ["mean=[104.0,117.0,123.0]", "norm=[0.017,0.017,0.017]", "shape=[224,224,3]",
                           "pixel=BGR", "thread=2", "method=aciq", "type=0"])
    assert a.lists == [Path("list.txt")] and a.table == Path("out.table") and not a.weight_only
    assert a.means == [[104.0, 117.0, 123.0]] and a.norms == [[0.017] * 3]
    assert a.shapes == [[224, 224, 3]] and a.pixels == ["BGR"]
    assert (a.threads, a.method, a.file_type) == (2, "aciq", 0)


def test_defaults_match_ncnn2table():
    a = parse_args(BASE)
    assert (a.method, a.file_type, a.threads) == ("kl", 0, 0)


def test_multi_input_lists_and_bracket_groups():
    a = parse_args(["m.param", "m.bin", "a.txt,b.txt", "t.table", "mean=[1,2,3],[4]", "norm=[1,1,1],[0.5]",
                    "shape=[16,16,3],[12,12]", "pixel=RGB,GRAY"])
    assert a.lists == [Path("a.txt"), Path("b.txt")]
    assert a.means == [[1, 2, 3], [4]] and a.shapes == [[16, 16, 3], [12, 12]]
    assert a.pixels == ["RGB", "GRAY"]


def test_weight_only_mode_when_third_arg_is_followed_by_options():
    a = parse_args(["m.param", "m.bin", "w.table", "method=kl"])
    assert a.weight_only and a.table == Path("w.table")
    assert parse_args(["m.param", "m.bin", "w.table"]).weight_only


def test_ncnn_prefix_keys_still_work():
    a = parse_args(BASE + ["threads=3", "means=[1,2,3]"])
    assert a.threads == 3 and a.means == [[1, 2, 3]]


@pytest.mark.parametrize("extra, match", [
    (["pxel=BGR"], r"unknown option pxel=, did you mean pixel="),
    (["methd=kl"], r"unknown option methd="),
    (["method=kll"], r"method=kll: unknown method, did you mean kl"),
    (["pixel=BRG"], r"pixel=BRG: unknown pixel type"),
    (["thread=-1"], r"thread=-1"),
    (["thread=two"], r"'two' is not an integer"),
    (["type=2"], r"type=2: must be 0"),
    (["mean=[1,x,3]"], r"'x' is not a number"),
    (["mean=[1,2,3"], r"bracket groups"),
    (["mean=[]"], r"empty group"),
    (["mean="], r"mean= has no value"),
    (["mean=[1,2,3]", "mean=[1,2,3]"], r"given twice"),
    (["percentile=99"], r"only applies to method=percentile"),
    (["method=percentile", "percentile=0"], r"percentile=0"),
    (["-h"], r"unexpected option '-h'"),
])
def test_bad_options_are_one_line_errors(extra, match):
    with pytest.raises(DeployerError, match=match) as err:
        parse_args(BASE + extra)
    assert "\n" not in str(err.value)


def test_wrong_positional_count():
    with pytest.raises(DeployerError, match="expected 3 or 4 positional"):
        parse_args(["m.param", "m.bin"])
    with pytest.raises(DeployerError, match="not key=value"):
        parse_args(BASE + ["method=kl", "stray"])


def _args(**kw):
    a = parse_args(BASE + [f"{k}={v}" for k, v in kw.items()])
    return a


def test_sanity_checks_name_what_is_missing():
    with pytest.raises(DeployerError, match=r"expect 1 pixel= group\(s\).*got 0"):
        input_specs(_args(mean="[1,2,3]", norm="[1,1,1]", shape="[16,16,3]"), 1)
    with pytest.raises(DeployerError, match=r"2 input\(s\) but 1 list file"):
        input_specs(_args(mean="[1,2,3]", norm="[1,1,1]", shape="[16,16,3]", pixel="BGR"), 2)
    with pytest.raises(DeployerError, match="has 1 values but pixel=BGR gives 3"):
        input_specs(_args(mean="[1]", norm="[1,1,1]", shape="[16,16,3]", pixel="BGR"), 1)
    with pytest.raises(DeployerError, match="pixel=RAW cannot be used with images"):
        input_specs(_args(mean="[1]", norm="[1]", shape="[16,16]", pixel="RAW"), 1)


def test_npy_mode_needs_only_shapes():
    specs = input_specs(_args(shape="[16,16,3]", type=1), 1)
    assert specs == [InputSpec((16, 16, 3), file_type="npy")]


def test_list_files(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"x")
    good = tmp_path / "good.txt"
    good.write_text(f"\n{img}\n   \n{img}  \n")
    files, lines = read_list(good)
    assert files == [str(img), str(img)] and lines == [2, 4]

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DeployerError, match="empty.txt: list file is empty"):
        read_list(empty)
    with pytest.raises(DeployerError, match="missing.txt: list file not found"):
        read_list(tmp_path / "missing.txt")
    spaced = tmp_path / "spaced.txt"
    spaced.write_text(f"{img}\nmy photo.jpg\n")
    with pytest.raises(DeployerError, match="spaced.txt: line 2: 2 fields"):
        read_list(spaced)
    gone = tmp_path / "gone.txt"
    gone.write_text(f"{img}\n{tmp_path / 'nope.jpg'}\n")
    with pytest.raises(DeployerError, match=r"gone.txt: line 2: .*nope.jpg: file not found"):
        read_lists([gone])
    short = tmp_path / "short.txt"
    short.write_text(f"{img}\n")
    with pytest.raises(DeployerError, match="short.txt lists 1 files but .*good.txt lists 2"):
        read_lists([good, short])


def test_mean_norm_longer_than_ncnn_reads_are_parsed_fully_with_a_warning():
    # zoo.json's MobileNetV2 norm: 20 characters; ncnn2table's sscanf("%19[^,]") would cut it.
    long = "0.017124753831663668"
    a = parse_args(BASE + [f"norm=[{long},0.01750700280112045,0.017429193899782137]", "mean=[1,2,3]"])
    assert a.norms == [[0.017124753831663668, 0.01750700280112045, 0.017429193899782137]]
    assert len(a.warnings) == 2               # the first and third values; 0.01750700280112045 has 19
    assert "'0.017429193899782137' has 20" in a.warnings[1]
    w = a.warnings[0]
    assert w.startswith(f"norm=: '{long}' has 20 characters") and "ncnn2table" in w
    short = w.split("e.g. ")[1].split(")")[0]
    assert len(short) <= 19 and float(short) == pytest.approx(float(long), rel=1e-12)
    # 19 characters is what ncnn reads: no warning; bare (bracket-less) values are checked too
    assert parse_args(BASE + ["norm=[0.01712475383166367]"]).warnings == []
    b = parse_args(BASE + ["mean=123.67500000000000001,1"])
    assert len(b.warnings) == 1 and b.warnings[0].startswith("mean=: '123.67500000000000001'")


@pytest.mark.parametrize("victim", ["param", "bin", "list", "image", "folder"])
def test_output_table_never_overwrites_an_input(tmp_path, victim):
    """`ncnn2table m.param m.bin list.txt m.param ...` wrote the table over the model (exit 0): the
    user's .param, .bin, list or a calibration image was gone. Refused before any work; nothing changes."""
    from deployer.quant.ncnn2table import run
    from tests.fixtures.calib import tiny_model, write_images

    model = tiny_model(tmp_path)
    listing = write_images(tmp_path / "imgs", 2)
    image = Path(listing.read_text().split()[0])
    out = {"param": model.param, "bin": model.bin, "list": listing, "image": image,
           "folder": tmp_path / "imgs"}[victim]
    before = {p: p.read_bytes() for p in (model.param, model.bin, listing, image)}
    args = parse_args([str(model.param), str(model.bin), str(listing), str(out), "shape=[16,16]", "mean=[0,0,0]",
                       "norm=[1,1,1]", "pixel=BGR", "method=maxabs"])
    with pytest.raises(DeployerError, match="is a folder" if victim == "folder" else "would overwrite"):
        run(args)
    assert {p: p.read_bytes() for p in before} == before
