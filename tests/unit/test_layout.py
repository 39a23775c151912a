"""deployer.remote.layout: the one place board paths come from (validation, derived paths, temp names)."""

from __future__ import annotations

import os

import pytest

from deployer.errors import DeployerError
from deployer.remote import layout
from deployer.remote.layout import BoardLayout, check_name, check_root
from deployer.targets import Board


@pytest.mark.parametrize("raw, want", [
    (".deployer", ".deployer"), ("~/.deployer", ".deployer"), ("~", "."), ("~/", "."), ("", ".deployer"),
    ("/opt/deployer/", "/opt/deployer"), ("data/dep loy", "data/dep loy"), ("a//b/./c", "a/b/c"),
])
def test_roots_are_normalised_for_exec_and_sftp(raw: str, want: str) -> None:
    assert check_root(raw) == want


@pytest.mark.parametrize("raw, why", [
    ("-cimport os;os.system('id > x')#", "contains"),            # the attack from the issue
    ("-cimport", "starts with '-'"),
    ("models/-rf", "starts with '-'"),
    ("../etc", "'..'"), ("a/../../b", "'..'"), ("x\ny", "control"), ("$(id)", "contains"), ("`id`", "contains"),
    ("a;b", "contains"), ("~root/x", "~user"), ("a/~b", "'~'"),
])
def test_dangerous_roots_are_refused_with_the_reason(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=__import__("re").escape(why)):
        check_root(raw)


def test_layout_paths_all_live_under_the_root_and_never_start_with_a_dash() -> None:
    lay = BoardLayout.for_board(Board(name="b", host="h", runtime_dir="~/dep"))
    paths = [lay.lock, lay.runtime, lay.wheels, lay.bin, lay.runner, lay.models, lay.results, lay.tmp,
             lay.releases, lay.blobs, lay.current, lay.model("m.param"), lay.wheel("ncnn-1.whl"),
             lay.runtime_for("ncnn-1-cp311"), lay.runtime_marker("ncnn-1-cp311"), lay.release("r1"),
             lay.blob("a" * 64), lay.under("x", "y")]
    assert lay.root == "dep" and lay.lock == "dep/.deployer.lock" and lay.runner == "dep/bin/runner.py"
    assert all(p.startswith("dep/") and lay.contains(p) for p in paths)
    assert not lay.contains("dep/../x") and not lay.contains("/etc/passwd")
    assert set(lay.temp_folders()) >= {lay.root, lay.models, lay.wheels, lay.runtime, lay.bin}


@pytest.mark.parametrize("name", ["../x", "a/b", "-rf", ".hidden", "", "..", "a b", "a;b", "$(id)", "x\n"])
def test_user_names_joined_under_the_root_are_checked(name: str) -> None:
    with pytest.raises(DeployerError):
        check_name(name, "model file name")
    with pytest.raises(DeployerError):
        BoardLayout().model(name)


def test_a_board_with_a_bad_runtime_dir_is_refused_naming_it() -> None:
    with pytest.raises(DeployerError, match="board 'evil': runtime_dir"):
        BoardLayout.for_board(Board(name="evil", host="h", runtime_dir="-cimport os"))
    with pytest.raises(DeployerError, match="sha256"):
        BoardLayout().blob("../../etc")


def test_temp_names_are_per_process_and_carry_the_content_hash() -> None:
    sha = "0123456789abcdef" + "0" * 48
    a, b = layout.temp_name("d/m.bin", sha), layout.temp_name("d/m.bin", sha)
    assert a != b
    prefix = "d/" + layout.part_prefix("m.bin", sha)
    assert prefix == "d/.m.bin.part-0123456789abcdef-"
    assert a.startswith(prefix) and f"-{os.getpid()}-" in a and layout.host_tag() in a
    assert layout.arg("-x") == "./-x" and layout.arg("/a") == "/a" and layout.arg("a") == "a"
