"""targets/*.yaml: strict schema, helpful errors, paths relative to the file, groups, defaults, jumps."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.targets import Board, JumpHost, NcnnOptions, load_targets

EXAMPLE = Path(__file__).resolve().parents[2] / "targets" / "example.yaml.sample"


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(path) -> str:
    with pytest.raises(DeployerError) as e:
        load_targets(path)
    return str(e.value)


def test_defaults_merge_and_paths_resolve_next_to_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    p = write(sub, """
defaults:
  user: pi
  key: keys/id_ed25519
  known_hosts: known_hosts
  ncnn: {threads: 4, fp16: false}
boards:
  pi4:
    host: 192.168.1.50
    ncnn: {threads: 2}
  jetson:
    host: jetson.local
    user: nvidia
    port: 2222
    key: /abs/key
    tags: [jetson, arm64]
""")
    inv = load_targets(p)
    pi4, jet = inv.board("pi4"), inv.board("jetson")
    assert pi4.user == "pi" and jet.user == "nvidia" and jet.port == 2222 and pi4.port is None
    assert pi4.key == sub / "keys" / "id_ed25519" and jet.key == Path("/abs/key")
    assert pi4.known_hosts == sub / "known_hosts"
    assert pi4.ncnn == NcnnOptions(threads=2, fp16=False)       # per-key merge of ncnn options
    assert jet.ncnn == NcnnOptions(threads=4, fp16=False)
    assert pi4.source == p and jet.tags == ["jetson", "arm64"]


def test_known_hosts_defaults_to_users_file_and_tilde_expands(tmp_path: Path) -> None:
    inv = load_targets(write(tmp_path, "boards:\n  a: {host: h, key: ~/.ssh/k}\n"))
    b = inv.board("a")
    assert b.known_hosts == Path("~/.ssh/known_hosts").expanduser()
    assert b.key == Path("~/.ssh/k").expanduser()
    assert (b.timeout, b.retries, b.runtime_dir, b.python) == (10.0, 3, ".deployer", "python3")


def test_typo_names_file_line_board_field_and_suggests(tmp_path: Path) -> None:
    p = write(tmp_path, "boards:\n  pi4:\n    host: h\n    prot: 22\n")
    msg = error_of(p)
    assert f"{p}:4" in msg and "board 'pi4'" in msg and "'prot'" in msg and "did you mean 'port'" in msg


def test_typo_in_ncnn_options_and_top_level(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "boards:\n  pi4:\n    host: h\n    ncnn: {thread: 4}\n"))
    assert "board 'pi4' ncnn" in msg and "did you mean 'threads'" in msg
    msg = error_of(write(tmp_path, "bords:\n  pi4: {host: h}\n", "b.yaml"))
    assert "unknown field 'bords'" in msg and "did you mean 'boards'" in msg


@pytest.mark.parametrize("field", ["password", "Password", "passphrase"])
def test_passwords_are_rejected(tmp_path: Path, field: str) -> None:
    msg = error_of(write(tmp_path, f"boards:\n  pi4:\n    host: h\n    {field}: hunter2\n"))
    assert "board 'pi4'" in msg and field in msg and "never stores passwords" in msg
    msg = error_of(write(tmp_path, f"defaults:\n  {field}: x\nboards: {{}}\n", "d.yaml"))
    assert "defaults" in msg and "never stores passwords" in msg


def test_missing_host_and_bad_types(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "boards:\n  pi4:\n    user: pi\n"))
    assert "board 'pi4'" in msg and "missing required field 'host'" in msg
    cases = {
        "port: 70000": "'port' must be an integer from 1 to 65535",
        "port: '22'": "'port' must be an integer",
        "timeout: -1": "'timeout' must be a number of seconds from 1 to 86400",
        "timeout: 1e-6": "'timeout' must be a number of seconds from 1 to 86400",   # was exit 3: unreachable
        "tags: pi4": "'tags' must be a list",
        "runtime_dir: ../../etc": "'runtime_dir' must not contain '..'",
        "ncnn: {powersave: 3}": "'powersave' must be 0",
        "ncnn: {fp16: 'yes'}": "'fp16' must be true or false",
        "jump: 5": "'jump' must be a board name",
    }
    for i, (line, want) in enumerate(cases.items()):
        msg = error_of(write(tmp_path, f"boards:\n  b{i}:\n    host: h\n    {line}\n", f"c{i}.yaml"))
        assert want in msg and f"board 'b{i}'" in msg, (line, msg)


def test_yaml_syntax_error_and_duplicate_keys_name_the_line(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "boards:\n  pi4: {host: h\n"))
    assert "lab.yaml" in msg and "not valid YAML" in msg
    msg = error_of(write(tmp_path, "boards:\n  pi4:\n    host: a\n    host: b\n", "dup.yaml"))
    assert "dup.yaml:4" in msg and "duplicate key 'host'" in msg


def test_groups_nest_dedupe_and_validate(tmp_path: Path) -> None:
    p = write(tmp_path, """
boards:
  a: {host: a}
  b: {host: b, tags: [arm64]}
  c: {host: c, tags: [arm64]}
groups:
  ab: [a, b]
  all3: [ab, c, a]
""")
    inv = load_targets(p)
    assert [b.name for b in inv.resolve("all3")] == ["a", "b", "c"]
    assert [b.name for b in inv.resolve("tag:arm64")] == ["b", "c"]
    assert [b.name for b in inv.resolve("all")] == ["a", "b", "c"]
    with pytest.raises(DeployerError, match="did you mean 'all3'"):
        inv.resolve("al3")
    msg = error_of(write(tmp_path, "boards:\n  a: {host: a}\ngroups:\n  g: [a, bb]\n", "g.yaml"))
    assert "group 'g'" in msg and "member 'bb'" in msg
    msg = error_of(write(tmp_path, "boards:\n  a: {host: a}\ngroups:\n  g: [h]\n  h: [g]\n", "loop.yaml"))
    assert "groups include each other" in msg


def test_jump_names_boards_across_files_or_specs(tmp_path: Path) -> None:
    write(tmp_path, "boards:\n  bastion: {host: gw.example.com, user: ops}\n", "a.yaml")
    write(tmp_path, "boards:\n  pi: {host: 10.0.0.5, jump: [bastion, 'me@[fe80::1]:2200', relay.lan]}\n", "b.yaml")
    inv = load_targets(tmp_path)
    pi = inv.board("pi")
    assert pi.jump[0] is inv.board("bastion")
    assert pi.jump[1] == JumpHost("fe80::1", 2200, "me") and pi.jump[2] == JumpHost("relay.lan")
    lone = tmp_path / "lone"
    lone.mkdir()
    write(lone, "boards:\n  bastion: {host: b}\n  p: {host: h, jump: bastoin}\n")
    msg = error_of(lone)
    assert "jump 'bastoin'" in msg and "did you mean 'bastion'" in msg and "user@host" in msg


def test_jump_cycles_and_duplicate_boards_across_files(tmp_path: Path) -> None:
    d1 = tmp_path / "d1"
    d1.mkdir()
    write(d1, "boards:\n  a: {host: a, jump: b}\n  b: {host: b, jump: [a]}\n")
    assert "jump chain loops" in error_of(d1)
    d2 = tmp_path / "d2"
    d2.mkdir()
    write(d2, "boards:\n  a: {host: a}\n", "1.yaml")
    write(d2, "boards:\n  a: {host: b}\n", "2.yaml")
    msg = error_of(d2)
    assert "2.yaml" in msg and "already defined in" in msg and "1.yaml" in msg
    same = load_targets([d2 / "1.yaml", d2 / ".." / "d2" / "1.yaml"])     # one file named twice: read once
    assert list(same.boards) == ["a"] and same.sources == [d2 / "1.yaml"]


def test_unknown_board_and_missing_file(tmp_path: Path) -> None:
    inv = load_targets(write(tmp_path, "boards:\n  pi4-kitchen: {host: h}\n"))
    with pytest.raises(DeployerError, match="did you mean 'pi4-kitchen'"):
        inv.board("pi4-kitchn")
    assert "not found" in error_of(tmp_path / "nope.yaml")


def test_adhoc_address_resolves_to_a_board(tmp_path: Path) -> None:
    inv = load_targets(write(tmp_path, "boards: {}\n"))
    (b,) = inv.resolve("pi@10.0.0.7:2202")
    assert isinstance(b, Board) and (b.user, b.host, b.port) == ("pi", "10.0.0.7", 2202)


def test_example_file_loads_and_covers_the_documented_setups(tmp_path: Path) -> None:
    inv = load_targets(EXAMPLE)
    assert {"pi4-kitchen", "pi3-garage", "jetson-nano", "bastion"} <= set(inv.boards)
    assert inv.board("pi4-kitchen").jump == [] and inv.board("jetson-nano").jump[0] is inv.board("bastion")
    assert inv.groups and all(inv.resolve(g) for g in inv.groups)
    # the folder deployer reads by default never takes the example's boards (192.168.1.50) for real ones
    (tmp_path / EXAMPLE.name).write_bytes(EXAMPLE.read_bytes())
    assert load_targets(tmp_path).boards == {}


def test_link_deadlines_are_per_board_with_defaults(tmp_path: Path) -> None:
    inv = load_targets(write(tmp_path, """
defaults: {keepalive: 2}
boards:
  a: {host: h, stall_timeout: 12}
  b: {host: h}
"""))
    a, b = inv.board("a"), inv.board("b")
    assert (a.keepalive, a.stall_timeout, a.timeout) == (2.0, 12.0, 10.0)
    assert (b.keepalive, b.stall_timeout) == (2.0, 30.0) and b.to_dict()["stall_timeout"] == 30.0
    for line, want in (("keepalive: 0", "'keepalive' must be a number of seconds from 0.1 to 86400"),
                       ("keepalive: 0.01", "'keepalive' must be a number of seconds from 0.1"),
                       ("stall_timeout: -1", "'stall_timeout' must be a number of seconds from 1"),
                       ("stall_timeout: .nan", "'stall_timeout' must be a number of seconds"),
                       ("{keepalive: 10, stall_timeout: 5}", "must be at least keepalive")):
        text = f"boards:\n  b:\n    host: h\n    {line}\n" if not line.startswith("{") else \
            f"boards:\n  b: {{host: h, {line[1:-1]}}}\n"
        msg = error_of(write(tmp_path, text, "d.yaml"))
        assert want in msg and "board 'b'" in msg, msg


@pytest.mark.parametrize("field, value", [
    ("runtime_dir", "\"-cimport os;os.system('id > x')#\""), ("runtime_dir", "models/-x"),
    ("runtime_dir", "\"$(reboot)\""), ("python", "\"-c import os\""), ("python", "\"python3 -S\""),
])
def test_values_that_would_reach_the_board_as_options_or_code_are_refused(tmp_path: Path, field: str,
                                                                          value: str) -> None:
    msg = error_of(write(tmp_path, f"boards:\n  b:\n    host: h\n    {field}: {value}\n"))
    assert f"'{field}'" in msg and "board 'b'" in msg and "lab.yaml:4" in msg


def test_runtime_dir_is_normalised(tmp_path: Path) -> None:
    inv = load_targets(write(tmp_path, "boards:\n  b: {host: h, runtime_dir: ~/dep/}\n  c: {host: h}\n"))
    assert inv.board("b").runtime_dir == "dep" and inv.board("c").runtime_dir == ".deployer"


@pytest.mark.parametrize("spec", ["-oProxyCommand=x@h", "pi@-h", "pi@h;id", "pi@h:0", "pi@h:99999", "@h", "pi@"])
def test_bad_adhoc_addresses_are_refused_before_any_work(spec: str) -> None:
    from deployer.targets import Inventory

    with pytest.raises(DeployerError, match="bad board address"):
        Inventory().resolve(spec)


def test_keys_are_names_as_written_and_bad_names_are_refused(tmp_path: Path) -> None:
    """YAML read board `01:` as 1 and `yes:` as True; `[a]:` crashed (unhashable); "b\\n" passed `$`."""
    inv = load_targets(write(tmp_path, "boards:\n  01: {host: h}\n  yes: {host: h}\n  1.10: {host: h}\n"))
    assert sorted(inv.boards) == ["01", "1.10", "yes"]
    assert "lab.yaml:2: a key must be a plain name" in error_of(write(tmp_path, "boards:\n  [a]: {host: h}\n"))
    assert "name may only use" in error_of(write(tmp_path, 'boards:\n  "b\\n": {host: h}\n'))
    for text in ("boards:\n  all: {host: h}\n", "boards:\n  b: {host: h}\ngroups:\n  all: [b]\n"):
        assert "'all' is reserved" in error_of(write(tmp_path, text))


def test_a_group_in_two_files_names_both(tmp_path: Path) -> None:
    write(tmp_path, "boards:\n  a: {host: h}\ngroups:\n  g: [a]\n", "1.yaml")
    write(tmp_path, "groups:\n  g: [a]\n", "2.yaml")
    msg = error_of(tmp_path)
    assert "2.yaml:2: group 'g': already defined in" in msg and "1.yaml" in msg


@pytest.mark.parametrize("host", ["a" * 64, "a..b"])
def test_a_host_name_idna_refuses_is_bad_input_not_a_crash(host: str) -> None:
    """socket.create_connection raised UnicodeError (exit 4) for a label over 63 characters."""
    from deployer.ssh.config import Hop
    from deployer.ssh.connect import _open_socket

    with pytest.raises(DeployerError, match="cannot resolve host .*not a valid host name"):
        _open_socket(Hop(label="board 'b'", hostname=host, port=22, user="pi", board="b"), None, "")


def test_where_names_an_ad_hoc_board_once() -> None:
    assert Board(name="pi4", host="10.0.0.5", user="pi", port=22).where == "board 'pi4' (pi@10.0.0.5:22)"
    assert Board(name="pi@10.0.0.5:22", host="10.0.0.5", user="pi", port=22).where == "board 'pi@10.0.0.5:22'"


def test_a_tag_used_as_a_name_says_write_tag(tmp_path: Path) -> None:
    inv = load_targets(write(tmp_path, "boards:\n  a: {host: h, tags: [pi4]}\n"))
    with pytest.raises(DeployerError, match="'pi4' is a tag, not a board or group") as err:
        inv.resolve("pi4")
    assert "tag:pi4" in err.value.hint and [b.name for b in inv.resolve("tag:pi4")] == ["a"]
