"""Seeded fuzz cases for every kind of input a user hands deployer.

`generate(family, count, seed, base)` returns `count` Cases; the same seed gives the same cases.
Families and the command each drives:

| family  | input mutated                         | command                                        |
|---------|---------------------------------------|------------------------------------------------|
| param   | fp32 .param (PNet), int8 .param       | `ncnn2int8`, `check`                           |
| bin     | fp32 .bin, int8 .bin                  | `ncnn2int8`, `check`                           |
| table   | calibration table                     | `ncnn2int8`                                    |
| profile | profile YAML                          | `check --profile`                              |
| targets | targets YAML                          | `probe` (no network: private netns, loopback)  |
| sshcfg  | ~/.ssh/config (DEPLOYER_SSH_CONFIG)   | `probe`                                        |
| image   | calibration/check images, .npy, FIFOs | `check`, `ncnn2table`                          |
| numbers | numeric CLI flags and key=value args  | `check`, `ncnn2table`, `quantize`, `run`       |

A mutation that makes an input invalid for sure (NaN, Inf, a negative scale, a truncated .bin, a
FIFO, a size beyond the limits) marks the case `must_fail`: exit 0 there is garbage accepted.
"""

from __future__ import annotations

import json
import random
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.fuzz.harness import Case

FAMILIES = ("param", "bin", "table", "profile", "targets", "sshcfg", "image", "numbers")

# values that break parsers: non-finite, out of range, wrong type, empty, odd unicode
NUMBERS = ["0", "-1", "1", "2", "3", "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e39",
           "99999999999999999999", "2147483647", "2147483648", "-2147483648", "65536", "8193", "0.5", "-0.0",
           "1e-45", "", " ", "abc", "1,2", "0x10", "1_0", "\u0663", "12", "48", "3.4028236e38", "007"]
BAD_FLOATS = {"nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e39", "3.4028236e38"}


@dataclass
class Base:
    """Paths of the valid inputs every mutation starts from (built once per session)."""

    root: Path
    pnet_param: Path
    pnet_bin: Path
    onet_param: Path
    onet_bin: Path
    pnet_table: Path
    pnet_int8_param: Path
    pnet_int8_bin: Path
    images: list[Path]
    image_list: Path
    profile: Path
    targets: Path
    targets_alias: Path             # board `fuzzhost`, resolved through the fuzzed ssh config
    sshcfg: Path
    known_hosts: Path

    MEAN = "127.5,127.5,127.5"
    NORM = "0.0078125,0.0078125,0.0078125"

    def check_argv(self, *, param=None, bin_=None, int8_param=None, int8_bin=None, images=None,
                   shape="12,12", extra=()) -> list[str]:
        return ["check", "--param", str(param or self.pnet_param), "--bin", str(bin_ or self.pnet_bin),
                "--int8-param", str(int8_param or self.pnet_int8_param),
                "--int8-bin", str(int8_bin or self.pnet_int8_bin), "--images", str(images or self.image_list),
                "--shape", shape, "--mean", self.MEAN, "--norm", self.NORM, "--pixel", "RGB",
                "--no-layers", "--threads", "1", *extra]


def _int8_outputs(i: int) -> tuple[str, str, list[str]]:
    p, b = f"o{i}.param", f"o{i}.bin"
    return p, b, [p, b]


# ------------------------------------------------------------------------------------ primitives

def flip_bytes(rng: random.Random, data: bytes, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def mutate_text_tokens(rng: random.Random, text: str, n: int, skip_lines: int = 0) -> tuple[str, bool]:
    """Replace `n` tokens (numbers, k=v values, keys, names) with hostile values; True if a value
    certain to be invalid (non-finite float) went into a k=v param."""
    lines = text.split("\n")
    sure_bad = False
    for _ in range(n):
        candidates = [i for i in range(skip_lines, len(lines)) if lines[i].strip()]
        if not candidates:
            break
        li = rng.choice(candidates)
        toks = lines[li].split()
        if not toks:
            continue
        ti = rng.randrange(len(toks))
        tok = toks[ti]
        value = rng.choice(NUMBERS + ["-23300=2,1,2", "8=Infinity", "12=0", "3=0", "1=0", "0=-1", "6=0",
                                      "99=1", "5=1", "7=0", "x", "in0", "1"])
        if "=" in tok and rng.random() < 0.7 and "=" not in value:
            key = tok.split("=", 1)[0]
            toks[ti] = f"{key}={value}" if value.strip() else f"{key}="
            if value in BAD_FLOATS and li >= 2:
                sure_bad = True
        else:
            toks[ti] = value if value.strip() else "_"
        lines[li] = " ".join(toks)
    return "\n".join(lines), sure_bad


def mutate_lines(rng: random.Random, text: str, skip: int = 0) -> str:
    lines = text.split("\n")
    op = rng.choice(["delete", "dup", "swap", "move_up", "truncate", "junk", "blank"])
    body = list(range(skip, len(lines)))
    if not body:
        return text
    i = rng.choice(body)
    if op == "delete":
        del lines[i]
    elif op == "dup":
        lines.insert(i, lines[i])
    elif op == "swap":
        j = rng.choice(body)
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "move_up" and i > skip:
        lines.insert(rng.randrange(skip, i), lines.pop(i))
    elif op == "truncate":
        cut = rng.randrange(len(text) + 1)
        return text[:cut]
    elif op == "junk":
        lines.insert(i, rng.choice(["\x00\x01\x02", "\udcff".encode("utf-8", "surrogateescape").decode("latin-1"),
                                    "Input x 0 1 x", "Split s 1 2 a b", "  \t ", "#comment", "7767517"]))
    elif op == "blank":
        lines.insert(i, "")
    return "\n".join(lines)


_BAD_KV = re.compile(r"(?:^|[ \t])-?\d+=(?:nan|NaN|inf|-inf|Infinity|1e999|-1e999|1e39|3\.4028236e38)(?=[ \t\n]|$)",
                     re.MULTILINE)


def _table_surely_bad(text: str) -> bool:
    """A scale that is NaN or negative anywhere in the final table text."""
    for line in text.split("\n"):
        for tok in [t for t in line.split(" ") if t][1:]:
            try:
                v = float(tok)
            except ValueError:
                continue
            if v != v or v < 0:
                return True
    return False


# -------------------------------------------------------------------------------------- families

def _param_cases(rng: random.Random, count: int, base: Base) -> list[Case]:
    cases = []
    fp32 = base.pnet_param.read_text()
    int8 = base.pnet_int8_param.read_text()
    for i in range(count):
        use_int8 = rng.random() < 0.4
        text = int8 if use_int8 else fp32
        sure = False
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.6:
                text, bad = mutate_text_tokens(rng, text, 1, skip_lines=1)
                sure = sure or bad
            elif r < 0.9:
                text = mutate_lines(rng, text, skip=2)
            else:
                data = flip_bytes(rng, text.encode(), rng.randint(1, 4))
                text = data.decode("utf-8", "replace")
        data = text.encode("utf-8", "surrogateescape")
        sure = bool(_BAD_KV.search(text))        # judged on the final text: a later edit may drop it
        if rng.random() < 0.05:
            data = b"\xff\xfe" + data
        if use_int8:
            argv = base.check_argv(int8_param="m.param")
            cases.append(Case("param", f"int8-{i}", argv, {"m.param": data}, allowed=frozenset({0, 1, 2}),
                              must_fail=sure))
        else:
            p, b, outs = _int8_outputs(i)
            argv = ["ncnn2int8", "m.param", str(base.pnet_bin), p, b, str(base.pnet_table)]
            cases.append(Case("param", f"fp32-{i}", argv, {"m.param": data}, allowed=frozenset({0, 2}),
                              must_fail=sure, outputs=outs))
    return cases


def _bin_cases(rng: random.Random, count: int, base: Base) -> list[Case]:
    cases = []
    fp32 = base.pnet_bin.read_bytes()
    int8 = base.pnet_int8_bin.read_bytes()
    specials = [struct.pack("<f", v) for v in (float("nan"), float("inf"), float("-inf"))]
    for i in range(count):
        use_int8 = rng.random() < 0.5
        data = bytearray(int8 if use_int8 else fp32)
        op = rng.choice(["short", "long", "flip", "nan", "tag", "empty", "short1"])
        sure = False
        if op == "short1":
            data = data[:-1]
            sure = True
        elif op == "short":
            data = data[:-rng.randint(1, max(1, len(data) - 1))]
            sure = True
        elif op == "long":
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            sure = True
        elif op == "flip":
            data = bytearray(flip_bytes(rng, bytes(data), rng.randint(1, 8)))
        elif op == "nan":
            off = rng.randrange(0, len(data) // 4) * 4
            data[off:off + 4] = rng.choice(specials)
        elif op == "tag":
            off = rng.randrange(0, len(data) // 4) * 4
            data[off:off + 4] = struct.pack("<I", rng.choice([0x01306B47, 0x000D4B38, 0x0002C056, 0xFFFFFFFF, 7]))
        elif op == "empty":
            data = bytearray()
            sure = True
        if use_int8:
            argv = base.check_argv(int8_bin="m.bin")
            cases.append(Case("bin", f"int8-{op}-{i}", argv, {"m.bin": bytes(data)}, must_fail=sure))
        else:
            p, b, outs = _int8_outputs(i)
            argv = ["ncnn2int8", str(base.pnet_param), "m.bin", p, b, str(base.pnet_table)]
            cases.append(Case("bin", f"fp32-{op}-{i}", argv, {"m.bin": bytes(data)}, allowed=frozenset({0, 2}),
                              must_fail=sure, outputs=outs))
    return cases


def _table_cases(rng: random.Random, count: int, base: Base) -> list[Case]:
    cases = []
    text = base.pnet_table.read_text()
    for i in range(count):
        t = text
        sure = False
        for _ in range(rng.randint(1, 2)):
            r = rng.random()
            if r < 0.55:
                lines = t.split("\n")
                li = rng.randrange(len(lines))
                toks = lines[li].split(" ")
                if len(toks) > 1:
                    ti = rng.randrange(1, len(toks))
                    v = rng.choice(NUMBERS + ["-2147483648", "-1.5", "0"])
                    if toks[ti].strip():
                        toks[ti] = v
                        if v in {"nan", "NaN", "-2147483648", "-1.5", "-1", "-inf"}:
                            sure = True
                    lines[li] = " ".join(toks)
                t = "\n".join(lines)
            elif r < 0.9:
                t = mutate_lines(rng, t)
            else:
                t = flip_bytes(rng, t.encode(), rng.randint(1, 3)).decode("latin-1")
        sure = _table_surely_bad(t)
        p, b, outs = _int8_outputs(i)
        argv = ["ncnn2int8", str(base.pnet_param), str(base.pnet_bin), p, b, "t.table"]
        cases.append(Case("table", f"t{i}", argv, {"t.table": t.encode("latin-1", "replace")},
                          allowed=frozenset({0, 2}), must_fail=sure, outputs=outs))
    return cases


YAML_VALUES = [None, 0, -1, 1, 2, 3, 65536, 99999999999999999999, float("nan"), float("inf"), -float("inf"),
               0.5, "", "abc", "RGB", "BGR", "GRAY", "none", "letterbox", "kl", [], [0, 0], [-48, 48], [65536, 48],
               [99999999999999999999, 48], [12, 12], [12], [12, 12, 3], ["a", "b"], {"x": 1}, True,
               "/dev/zero", "fifo", "dir", "missing.yaml", "../../../../etc/passwd", "~", "$HOME", "[1,2",
               [float("nan"), 1, 1], [1e39, 1, 1], "127.0.0.1", "user@127.0.0.1:1", "-cimport os", "a\x00b"]


def _mutate_tree(rng: random.Random, tree, protect: tuple[str, ...] = ()) -> tuple[object, bool]:
    """Replace a random leaf/subtree of a YAML document, or add/delete a key. True = surely bad value."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for j, v in enumerate(node):
                walk(v, path + (j,))

    walk(tree, ())
    paths = [p for p in paths if p and not any(str(k) in protect for k in p)]
    if not paths:
        return tree, False
    path = rng.choice(paths)
    parent = tree
    for k in path[:-1]:
        parent = parent[k]
    op = rng.random()
    value = rng.choice(YAML_VALUES)
    if op < 0.75:
        parent[path[-1]] = value
    elif op < 0.9 and isinstance(parent, dict):
        parent[rng.choice(["pasword", "password", "extra", "shpae", "Host", 7, "inputs"])] = value
    elif isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    # only the inputs section is always read by `check` (flags override calibration paths etc.)
    in_inputs = bool(path) and path[0] == "inputs" and op < 0.75
    sure = in_inputs and ((isinstance(value, float) and value != value)
                          or (path[-1] == "shape" and value in ([-48, 48], [65536, 48], [99999999999999999999, 48])))
    return tree, sure


def _dump(rng: random.Random, tree) -> bytes:
    try:
        text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        text = json.dumps(str(tree))
    data = text.encode("utf-8", "surrogateescape")
    r = rng.random()
    if r < 0.1:
        data = flip_bytes(rng, data, rng.randint(1, 3))
    elif r < 0.15:
        data = data[:rng.randrange(len(data) + 1)]
    elif r < 0.18:
        data = b"\xff\xfe\x00" + data
    return data


def _special_files(value) -> dict[str, bytes | str]:
    return {"fifo": "fifo", "dir": "dir"} if value in ("fifo", "dir") else {}


def _profile_cases(rng: random.Random, count: int, base: Base) -> list[Case]:
    cases = []
    tree0 = yaml.safe_load(base.profile.read_text())
    for i in range(count):
        tree = json.loads(json.dumps(tree0))
        sure = False
        for _ in range(rng.randint(1, 2)):
            tree, bad = _mutate_tree(rng, tree)
            sure = sure or bad
        data = _dump(rng, tree)
        files: dict[str, bytes | str] = {"p.yaml": data, "fifo": "fifo", "dir": "dir"}
        argv = ["check", "--profile", "p.yaml", "--int8-param", str(base.pnet_int8_param),
                "--int8-bin", str(base.pnet_int8_bin), "--images", str(base.image_list), "--no-layers"]
        if rng.random() < 0.3:
            argv.append("--json")
        cases.append(Case("profile", f"p{i}", argv, files, allowed=frozenset({0, 1, 2}), must_fail=sure,
                          json="--json" in argv))
    return cases


def _targets_cases(rng: random.Random, count: int, base: Base) -> list[Case]:
    cases = []
    tree0 = yaml.safe_load(base.targets.read_text())
    for i in range(count):
        tree = json.loads(json.dumps(tree0))
        for _ in range(rng.randint(1, 2)):
            tree, _ = _mutate_tree(rng, tree, protect=("timeout", "retries"))
        data = _dump(rng, tree)
        target = rng.choice(["b1", "g", "all", "tag:t", "nope", "user@127.0.0.1:1"])
        argv = ["probe", target, "--targets", "t.yaml"]
        if rng.random() < 0.3:
            argv.append("--json")
        cases.append(Case("targets", f"t{i}", argv, {"t.yaml": data, "fifo": "fifo", "dir": "dir",
                                                      "known_hosts": b""},
                          allowed=frozenset({2, 3}), json="--json" in argv,
                          env={"DEPLOYER_SSH_CONFIG": ""}))
    return cases


SSH_KEYS = ["HostName", "Port", "User", "IdentityFile", "ProxyJump", "ConnectTimeout", "HostKeyAlias",
            "Host", "Include", "UserKnownHostsFile", "IdentitiesOnly"]
SSH_VALUES = ["127.0.0.1", "::1", "localhost", "abc", "-1", "0", "65536", "99999999999999999999", "1", "22",
              "%h", "~/.ssh/none", "/dev/zero", "fifo", "dir", "user@127.0.0.1:1", "fuzzhost", "none",
              "127.0.0.1,127.0.0.2", "\"quoted", "", "=", "a b", "ü"]


def _sshcfg_cases(rng: random.Random, count: int, base: Base) -> list[Case]:
    cases = []
    text0 = base.sshcfg.read_text()
    for i in range(count):
        lines = text0.split("\n")
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.5:
                li = rng.randrange(len(lines))
                key = lines[li].split()[0] if lines[li].split() else rng.choice(SSH_KEYS)
                lines[li] = f"  {key} {rng.choice(SSH_VALUES)}"
            elif r < 0.8:
                lines.insert(rng.randrange(len(lines) + 1), f"  {rng.choice(SSH_KEYS)} {rng.choice(SSH_VALUES)}")
            else:
                lines = mutate_lines(rng, "\n".join(lines)).split("\n")
        data = "\n".join(lines).encode("utf-8")
        if rng.random() < 0.1:
            data = flip_bytes(rng, data, 2)
        low = data.lower()
        if b"proxycommand" in low or b"exec" in low or b"match" in low:
            data = text0.encode()          # never let a mutation run a command
        argv = ["probe", "b1", "--targets", str(base.targets_alias)]
        cases.append(Case("sshcfg", f"s{i}", argv, {"cfg": data, "fifo": "fifo", "dir": "dir"},
                          allowed=frozenset({2, 3}), env={"DEPLOYER_SSH_CONFIG": "cfg"}))
    return cases


def _png(w: int, h: int, rng: random.Random, *, lie: tuple[int, int] | None = None) -> bytes:
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(w * 3)) for _ in range(h))
    ihdr_w, ihdr_h = lie or (w, h)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", ihdr_w, ihdr_h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _npy(shape: tuple[int, ...], dtype: str, fill: float = 0.5, lie: str | None = None) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.full(shape, fill, dtype=dtype), allow_pickle=False)
    data = buf.getvalue()
    if lie:
        head_end = data.index(b"\n") + 1
        header = data[10:head_end].decode("latin-1")
        header = header.replace(str(tuple(shape)).replace(" ", ""), lie).replace(str(tuple(shape)), lie)
        header = header.rstrip("\n").ljust(head_end - 11) + "\n"
        data = data[:8] + struct.pack("<H", len(header)) + header.encode("latin-1") + data[head_end:]
    return data


def _image_cases(rng: random.Random, count: int, base: Base) -> list[Case]:
    cases = []
    good = [p.read_bytes() for p in base.images]
    for i in range(count):
        kind = rng.choice(["flip", "trunc", "bomb", "fifo", "devzero", "dir", "empty", "npy", "npy", "other",
                           "flip", "trunc"])
        name, content, sure = "x.png", b"", False
        if kind == "flip":
            content = flip_bytes(rng, rng.choice(good), rng.randint(1, 6))
        elif kind == "trunc":
            g = rng.choice(good)
            content = g[:rng.randrange(len(g))]
        elif kind == "bomb":
            content = _png(4, 4, rng, lie=(rng.choice([65535, 40000, 1 << 20, 0]), rng.choice([65535, 30000, 4])))
            sure = True
        elif kind == "fifo":
            content, sure = "fifo", True
        elif kind == "devzero":
            content, sure = "->/dev/zero", True
        elif kind == "dir":
            content, sure = "dir", True
        elif kind == "empty":
            content, sure = b"", True
        elif kind == "npy":
            name = "x.npy"
            choice = rng.choice(["nan", "shape", "dtype", "lie", "ok", "zero", "huge"])
            if choice == "nan":
                content, sure = _npy((3, 12, 12), "float32", float("nan")), True
            elif choice == "shape":
                content = _npy((rng.randint(1, 5), rng.randint(1, 30), rng.randint(1, 30)), "float32")
            elif choice == "dtype":
                content = _npy((3, 12, 12), rng.choice(["float64", "int8", "complex64", "bool"]))
            elif choice == "lie":
                content, sure = _npy((3, 12, 12), "float32", lie=rng.choice(["(100000,100000)", "(-1,)", "(3,12)"])), True
            elif choice == "zero":
                content, sure = _npy((0, 12, 12), "float32"), True
            elif choice == "huge":
                content, sure = _npy((1,), "float32", 1e38), False
            else:
                content = _npy((3, 12, 12), "float32")
        else:
            name = rng.choice(["x.jpg", "x.bmp", "x.ppm", "x.gif", "x.tif"])
            content = flip_bytes(rng, rng.choice(good), 1)
        listing = f"{base.images[0]}\n{name}\n"
        if rng.random() < 0.5:
            argv = base.check_argv(images="list.txt")
            cases.append(Case("image", f"{kind}-{i}", argv, {name: content, "list.txt": listing},
                              allowed=frozenset({0, 1, 2}), must_fail=sure))
        else:
            argv = ["ncnn2table", str(base.pnet_param), str(base.pnet_bin), "list.txt", "o.table",
                    "shape=[12,12]", f"mean=[{Base.MEAN}]", f"norm=[{Base.NORM}]", "pixel=RGB", "thread=1"]
            if name.endswith(".npy"):
                argv[5:] = ["shape=[12,12,3]", "type=1", "thread=1"]
            # ncnn2table lists are relative to the current folder, like ncnn's tool
            cases.append(Case("image", f"t-{kind}-{i}", argv, {name: content, "list.txt": listing},
                              allowed=frozenset({0, 2}), must_fail=sure, outputs=["o.table"]))
    return cases


def _numbers_cases(rng: random.Random, count: int, base: Base) -> list[Case]:
    cases = []
    for i in range(count):
        v = rng.choice(NUMBERS)
        w = rng.choice(NUMBERS)
        # quantize is the costly command (~4 s when the numbers are valid): one case in 16
        kind = rng.choice(["check_shape", "check_mean", "check_count", "ncnn2table", "ncnn2table", "run", "run",
                           "onet", "check_threads", "check_shape", "check_mean", "run", "ncnn2table", "onet",
                           "check_count", "quantize"])
        sure = v in BAD_FLOATS
        outputs: list[str] = []
        if kind == "check_shape":
            argv = base.check_argv(shape=f"{v},{w}")
            sure = sure or w in BAD_FLOATS or v in ("65536", "8193", "99999999999999999999", "-1") \
                or w in ("65536", "8193", "99999999999999999999", "-1")
        elif kind == "check_mean":
            argv = base.check_argv()
            argv[argv.index("--mean") + 1] = f"{v},{w},1"
            argv[argv.index("--norm") + 1] = f"{w},1,{v}"
            sure = sure or w in BAD_FLOATS
        elif kind == "check_count":
            argv = base.check_argv(extra=("--count", v))
            sure = False
        elif kind == "check_threads":
            argv = base.check_argv()
            argv[argv.index("--threads") + 1] = v
            sure = False
        elif kind == "onet":
            argv = base.check_argv(param=base.onet_param, bin_=base.onet_bin, shape=f"{v},{v}")
            sure = True                  # fp32 ONet against PNet's int8 model: never a valid pair
        elif kind == "ncnn2table":
            key = rng.choice(["shape", "mean", "norm", "thread", "percentile"])
            opts = {"shape": "[12,12]", "mean": f"[{Base.MEAN}]", "norm": f"[{Base.NORM}]", "thread": "1"}
            if key == "shape":
                opts["shape"] = f"[{v},{w}]"
                sure = sure or w in BAD_FLOATS or bool({v, w} & {"65536", "8193", "99999999999999999999", "-1"})
            elif key in ("mean", "norm"):
                opts[key] = f"[{v},{w},1]"
                sure = sure or w in BAD_FLOATS
            elif key == "thread":
                opts["thread"] = v
                sure = False
            else:
                opts["percentile"] = v
                opts["method"] = "percentile"
            argv = ["ncnn2table", str(base.pnet_param), str(base.pnet_bin), str(base.image_list), "o.table",
                    *[f"{k}={val}" for k, val in opts.items()], "pixel=RGB"]
            outputs = ["o.table"]
        elif kind == "quantize":
            flag = rng.choice(["--count", "--holdout", "--seed", "--threads", "--max-fp32-layers", "--shape"])
            value = f"{v},{w}" if flag == "--shape" else v
            argv = ["quantize", "--param", str(base.pnet_param), "--bin", str(base.pnet_bin), "--calib",
                    str(base.image_list), "--shape", "12,12", "--mean", Base.MEAN, "--norm", Base.NORM,
                    "--pixel", "RGB", "--method", "kl", "--no-mixed", "--out", "out", flag, value]
            sure = flag in ("--shape", "--holdout") and sure
            outputs = ["out/model_int8.param", "out/model_int8.bin"]
        else:
            flag = rng.choice(["-n", "--threads", "--warmup", "--duration", "--shape", "--powersave", "--idle-timeout",
                               "--seed", "--fill"])
            argv = ["run", "b1", "--targets", str(base.targets), "--param", str(base.pnet_int8_param),
                    "--bin", str(base.pnet_int8_bin), flag, v]
            sure = False
            cases.append(Case("numbers", f"{kind}-{i}", argv, allowed=frozenset({2, 3}),
                              env={"DEPLOYER_SSH_CONFIG": ""}))
            continue
        if rng.random() < 0.2 and kind != "ncnn2table":
            argv.append("--json")
        cases.append(Case("numbers", f"{kind}-{i}", argv, allowed=frozenset({0, 1, 2}), must_fail=sure,
                          outputs=outputs, json="--json" in argv))
    return cases


GENERATORS = {"param": _param_cases, "bin": _bin_cases, "table": _table_cases, "profile": _profile_cases,
              "targets": _targets_cases, "sshcfg": _sshcfg_cases, "image": _image_cases, "numbers": _numbers_cases}


def generate(family: str, count: int, seed: int, base: Base) -> list[Case]:
    rng = random.Random(f"{family}:{seed}")
    return GENERATORS[family](rng, count, base)
