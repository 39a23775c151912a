"""targets/*.yaml -> Board dataclasses, validated strictly.

A typo in a targets file must not silently become "connect to the wrong board with the wrong key",
so every unknown field is an error that names the file, line, board and field, with a "did you
mean" when one is close. Passwords are refused outright: boards are reached with keys or the agent.
Local paths (key, known_hosts) are relative to the YAML file, so a targets folder can be moved or
committed together with its known_hosts.
"""

from __future__ import annotations

import dataclasses
import difflib
import getpass
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from deployer.errors import DeployerError
from deployer.remote.layout import DEFAULT_ROOT, check_root

DEFAULT_TARGETS_DIR = Path("targets")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
DEFAULT_KEEPALIVE = 5.0        # s of link silence before asking the board for a reply
DEFAULT_STALL_TIMEOUT = 30.0   # s without any answer from the board before the link counts as dead

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PYTHON_RE = re.compile(r"^[A-Za-z0-9._+/=@~][A-Za-z0-9._+/=@~-]*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$|^[0-9A-Fa-f:.]+$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_SECRET_FIELDS = {"password", "passwd", "pass", "passphrase", "secret"}
_TOP_FIELDS = ("defaults", "boards", "groups")
_BOARD_FIELDS = (
    "host", "port", "user", "key", "known_hosts", "jump", "tags", "timeout", "retries",
    "runtime_dir", "ncnn", "python", "description", "keepalive", "stall_timeout", "runtime",
)
_NCNN_FIELDS = ("threads", "powersave", "fp16", "winograd", "sgemm")


@dataclass(frozen=True)
class NcnnOptions:
    """Runtime options the remote runner applies to ncnn.Option (None = ncnn's own default)."""

    threads: int | None = None
    powersave: int = 0          # 0 all cores, 1 little cores, 2 big cores
    fp16: bool = True           # use_fp16_storage/packed/arithmetic
    winograd: bool = True       # use_winograd_convolution
    sgemm: bool = True          # use_sgemm_convolution


@dataclass(frozen=True)
class JumpHost:
    """A jump hop given as `[user@]host[:port]` rather than as a board name."""

    host: str
    port: int | None = None
    user: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "JumpHost":
        user, _, rest = spec.rpartition("@")
        host, port = rest, None
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", rest)
        if not m or not (m.group(1) or m.group(3)):
            raise ValueError(f"not [user@]host[:port]: {spec!r}")
        host = m.group(1) or m.group(3)
        port_s = m.group(2) or m.group(4)
        if port_s is not None:
            port = int(port_s)
            if not 1 <= port <= 65535:
                raise ValueError(f"port out of range in {spec!r}")
        return cls(host=host, port=port, user=user or None)

    def __str__(self) -> str:
        s = f"{self.user}@{self.host}" if self.user else self.host
        return f"{s}:{self.port}" if self.port else s


@dataclass(eq=False)
class Board:
    """One board as the SSH layer needs it. port/user None = take them from ~/.ssh/config."""

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    key: Path | None = None
    known_hosts: Path = field(default_factory=lambda: DEFAULT_KNOWN_HOSTS.expanduser())
    jump: list["Board | JumpHost"] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT            # s, connect (TCP + SSH handshake + auth), per attempt
    retries: int = DEFAULT_RETRIES
    runtime_dir: str = DEFAULT_ROOT
    keepalive: float = DEFAULT_KEEPALIVE        # s of silence before a keepalive asks the board to answer
    stall_timeout: float = DEFAULT_STALL_TIMEOUT  # s without any answer: the link is dead, the operation fails
    ncnn: NcnnOptions = field(default_factory=NcnnOptions)
    python: str = "python3"
    description: str = ""
    source: Path | None = None
    runtime: str = "auto"                       # native | python | auto (deployer.native.select)

    @property
    def where(self) -> str:
        """`board 'x' (user@host:port)` for messages, without consulting ssh_config."""
        addr = f"{self.user}@{self.host}" if self.user else self.host
        if self.port:
            addr += f":{self.port}"
        # an ad-hoc board (`deployer probe pi@10.0.0.5:22`) is named by its address: say it once
        return f"board '{self.name}'" if self.name == addr else f"board '{self.name}' ({addr})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "host": self.host, "port": self.port, "user": self.user,
            "key": str(self.key) if self.key else None, "known_hosts": str(self.known_hosts),
            "jump": [j.name if isinstance(j, Board) else str(j) for j in self.jump],
            "tags": list(self.tags), "timeout": self.timeout, "retries": self.retries,
            "keepalive": self.keepalive, "stall_timeout": self.stall_timeout,
            "runtime_dir": self.runtime_dir, "ncnn": dataclasses.asdict(self.ncnn),
            "python": self.python, "description": self.description, "runtime": self.runtime,
            "source": str(self.source) if self.source else None,
        }


@dataclass
class Inventory:
    """All boards and groups from the loaded targets files."""

    boards: dict[str, Board] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)

    def board(self, name: str) -> Board:
        try:
            return self.boards[name]
        except KeyError:
            raise DeployerError(f"no board named '{name}' in {self._where()}{_suggest(name, self.boards)}") from None

    def resolve(self, name: str) -> list[Board]:
        """A board name, a group name, `tag:<tag>`, `all`, or an ad-hoc `user@host[:port]`."""
        if name in self.boards:
            return [self.boards[name]]
        if name in self.groups:
            members = self._expand_group(name, ())
            if not members:          # a command on nothing must not look like success
                raise DeployerError(f"group '{name}' in {self._where()} has no boards", hint="list boards under it")
            return members
        if name.startswith("tag:"):
            tag = name[4:]
            found = [b for b in self.boards.values() if tag in b.tags]
            if not found:
                tags = sorted({t for b in self.boards.values() for t in b.tags})
                raise DeployerError(f"no board has tag '{tag}' in {self._where()}{_suggest(tag, tags)}")
            return found
        if name == "all":
            if not self.boards:
                raise DeployerError(f"'all': there are no boards in {self._where()}", hint="add boards: to a targets file")
            return list(self.boards.values())
        if "@" in name:
            return [adhoc_board(name)]
        if any(name in b.tags for b in self.boards.values()):
            raise DeployerError(f"'{name}' is a tag, not a board or group, in {self._where()}",
                                hint=f"to mean the boards tagged {name}, write tag:{name}")
        raise DeployerError(
            f"'{name}' is not a board or group in {self._where()}"
            f"{_suggest(name, list(self.boards) + list(self.groups))}",
            hint="use a board/group name, tag:<tag>, all, or user@host[:port]",
        )

    def _expand_group(self, name: str, stack: tuple[str, ...]) -> list[Board]:
        out: dict[str, Board] = {}
        for member in self.groups[name]:
            if member in self.groups:
                for b in self._expand_group(member, stack + (name,)):
                    out.setdefault(b.name, b)
            else:
                out.setdefault(member, self.boards[member])
        return list(out.values())

    def _where(self) -> str:
        return ", ".join(str(s) for s in self.sources) or "the loaded targets (none)"


def adhoc_board(spec: str) -> Board:
    """A board from `user@host[:port]` on the command line, with default known_hosts.

    Checked before any work starts: the name becomes a results folder and the host/user go to
    ssh_config lookups, so only plain host names, IP addresses and user names are accepted."""
    try:
        j = JumpHost.parse(spec)
    except ValueError as e:
        raise DeployerError(f"bad board address: {e}", hint="write user@host or user@host:port") from None
    if not j.user or not _USER_RE.fullmatch(j.user):
        raise DeployerError(f"bad board address {spec!r}: user {j.user!r} is not a plain user name",
                            hint="write user@host or user@host:port")
    if not _HOST_RE.fullmatch(j.host) or j.host.startswith("-"):
        raise DeployerError(f"bad board address {spec!r}: host {j.host!r} is not a host name or IP address",
                            hint="write user@host or user@host:port")
    return Board(name=spec, host=j.host, port=j.port, user=j.user)


def is_adhoc(spec: str) -> bool:
    """True for a `user@host[:port]` target (needs no targets file)."""
    return "@" in spec and not spec.startswith("tag:")


def load_targets(paths: str | Path | Iterable[str | Path] | None = None) -> Inventory:
    """Load targets files (or folders of *.yaml); None means ./targets/."""
    if paths is None:
        paths = [DEFAULT_TARGETS_DIR]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(list(p.glob("*.yaml")) + list(p.glob("*.yml"))))
        elif p.is_file():
            files.append(p)
        else:
            raise DeployerError(f"targets file {p} not found", hint="pass an existing YAML file or folder")
    # one file reached twice (`--targets targets --targets targets/sim.yaml`) is read once: it said
    # "board 'sim-1': already defined in targets/sim.yaml" about the very same file
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    files = list(unique.values())
    inv = Inventory(sources=files)
    raw_jumps: dict[str, tuple[list[str], str]] = {}
    raw_groups: list[tuple[Path, str, list[str], int]] = []
    for f in files:
        _load_file(f, inv, raw_jumps, raw_groups)
    for gpath, gname, members, line in raw_groups:
        _check_group(inv, gpath, gname, members, line)
    _resolve_jumps(inv, raw_jumps)
    return inv


# --- parsing -------------------------------------------------------------------------------------

class _Map(dict):
    """A mapping that remembers each key's line, so errors can point at it."""

    lines: dict[str, int]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's parser where PyYAML has it: a 200-board targets file parses in ~10 ms, not ~300 ms."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    """Every key in a targets file is a name (field, board, group), so a key is its text as written.

    YAML would read `yes:` as True, `01:` as 1 and `1.10:` as 1.1: board `01` silently became
    board `1`. A list or mapping as a key (`[a]:`) was unhashable and crashed the loader."""
    m = _Map()
    m.lines = {}
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            raise DeployerError(f"{loader.name}:{knode.start_mark.line + 1}: a key must be a plain name, "
                                "not a list or mapping")
        key = knode.value
        if key in m:
            raise DeployerError(f"{loader.name}:{knode.start_mark.line + 1}: duplicate key '{key}'")
        m[key] = loader.construct_object(vnode, deep=True)
        m.lines[key] = knode.start_mark.line + 1
    return m


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


def _line(m: Any, key: str) -> int | None:
    return getattr(m, "lines", {}).get(key)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _err(path: Path, line: int | None, where: str, msg: str, hint: str | None = None) -> DeployerError:
    loc = f"{path}:{line}" if line else f"{path}"
    return DeployerError(f"{loc}: {where}: {msg}" if where else f"{loc}: {msg}", hint=hint)


def _load_file(path: Path, inv: Inventory, raw_jumps: dict, raw_groups: list) -> None:
    from deployer.fsutil import read_input_text

    text = read_input_text(path, "targets file", limit=16 << 20)
    try:
        loader = _Loader(text)
        loader.name = str(path)
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise _err(path, line, "", f"not valid YAML: {getattr(e, 'problem', e)}") from None
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise _err(path, 1, "", "expected a mapping with boards:, groups: and defaults:")
    _check_fields(path, doc, _TOP_FIELDS, "top level")
    base = path.parent
    defaults = doc.get("defaults") or _Map()
    if not isinstance(defaults, dict):
        raise _err(path, _line(doc, "defaults"), "defaults", "must be a mapping")
    _check_fields(path, defaults, _BOARD_FIELDS, "defaults")
    if "host" in defaults:
        raise _err(path, _line(defaults, "host"), "defaults", "'host' cannot have a default; set it per board")
    boards = doc.get("boards") or _Map()
    if not isinstance(boards, dict):
        raise _err(path, _line(doc, "boards"), "boards", "must be a mapping of board name -> settings")
    for name, spec in boards.items():
        line = _line(boards, name)
        name = str(name)
        where = f"board '{name}'"
        _check_name(path, line, where, name)
        if name in inv.boards:
            raise _err(path, line, where, f"already defined in {inv.boards[name].source}")
        if spec is None:
            spec = _Map()
        if not isinstance(spec, dict):
            raise _err(path, line, where, "settings must be a mapping (host:, user:, ...)")
        _check_fields(path, spec, _BOARD_FIELDS, where)
        merged = _merge(defaults, spec)
        board, jumps = _build_board(path, base, name, merged, line)
        inv.boards[name] = board
        raw_jumps[name] = (jumps, str(path))
    groups = doc.get("groups") or _Map()
    if not isinstance(groups, dict):
        raise _err(path, _line(doc, "groups"), "groups", "must be a mapping of group name -> list of boards")
    for gname, members in groups.items():
        line = _line(groups, gname)
        gname = str(gname)
        _check_name(path, line, f"group '{gname}'", gname)
        if gname in inv.groups:
            first = next(p for p, g, *_ in raw_groups if g == gname)
            raise _err(path, line, f"group '{gname}'", f"already defined in {first}")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise _err(path, line, f"group '{gname}'", "must be a list of board or group names")
        inv.groups[gname] = list(members)
        raw_groups.append((path, gname, list(members), line))


def _check_name(path: Path, line: int | None, where: str, name: str) -> None:
    """fullmatch: `$` alone lets a trailing newline through ("b\\n" was a board).

    `all` is what commands take for every board: a board or group of that name would silently
    narrow `deploy all` to itself."""
    if not _NAME_RE.fullmatch(name):
        raise _err(path, line, where, "name may only use letters, digits, '.', '_' and '-'")
    if name == "all":
        raise _err(path, line, where, "'all' is reserved (it means every board)", hint="rename it")


def _check_fields(path: Path, m: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in m:
        k = str(key)
        if k.lower() in _SECRET_FIELDS:
            raise _err(
                path, _line(m, key), where, f"'{k}' is not allowed: deployer never stores passwords",
                hint="remove it; use key: with a key file or load the key into ssh-agent",
            )
        if k not in allowed:
            raise _err(path, _line(m, key), where, f"unknown field '{k}'{_suggest(k, allowed)}",
                       hint=f"allowed: {', '.join(allowed)}")


def _merge(defaults: dict, spec: dict) -> _Map:
    out = _Map()
    out.lines = {}
    for src in (defaults, spec):
        for k, v in src.items():
            if k == "ncnn" and isinstance(v, dict) and isinstance(out.get("ncnn"), dict):
                merged = _Map({**out["ncnn"], **v})
                merged.lines = {**getattr(out["ncnn"], "lines", {}), **getattr(v, "lines", {})}
                v = merged
            out[k] = v
            out.lines[k] = _line(src, k)
    return out


def _build_board(path: Path, base: Path, name: str, m: _Map, line: int | None) -> tuple[Board, list[str]]:
    where = f"board '{name}'"

    def bad(key: str, msg: str) -> DeployerError:
        return _err(path, _line(m, key) or line, where, f"'{key}' {msg}")

    def get_str(key: str, default: str | None = None) -> str | None:
        v = m.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise bad(key, "must be a string")
        v = str(v)
        if not v or "\n" in v or "\0" in v:
            raise bad(key, "must be a non-empty single-line string")
        return v

    def get_int(key: str, lo: int, hi: int) -> int | None:
        v = m.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise bad(key, f"must be an integer from {lo} to {hi}")
        return v

    def local_path(key: str) -> Path | None:
        v = get_str(key)
        if v is None:
            return None
        p = Path(v).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    host = get_str("host")
    if host is None:
        raise _err(path, line, where, "missing required field 'host'", hint="add host: <address or ~/.ssh/config alias>")
    def get_seconds(key: str, default: float, lo: float) -> float:
        """`lo`: below it no board could answer (`timeout: 1e-6` failed every connect as an unreachable
        board, exit 3, when the file was what was wrong) or keepalives would flood the link."""
        v = m.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= 86400 or v != v:
            raise bad(key, f"must be a number of seconds from {lo:g} to 86400")
        return float(v)

    timeout = get_seconds("timeout", DEFAULT_TIMEOUT, 1)
    keepalive = get_seconds("keepalive", DEFAULT_KEEPALIVE, 0.1)
    stall_timeout = get_seconds("stall_timeout", DEFAULT_STALL_TIMEOUT, 1)
    if stall_timeout < keepalive:
        raise bad("stall_timeout", f"({stall_timeout:g} s) must be at least keepalive ({keepalive:g} s)")
    tags = m.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise bad("tags", "must be a list of strings")
    runtime_dir = get_str("runtime_dir", DEFAULT_ROOT)
    try:
        runtime_dir = check_root(runtime_dir)
    except ValueError as e:
        raise bad("runtime_dir", f"{e} (got {runtime_dir!r})") from None
    python = get_str("python", "python3")
    if not _PYTHON_RE.fullmatch(python):
        raise bad("python", f"{python!r} must be a command name or path (no spaces, not starting with '-')")
    runtime = get_str("runtime", "auto").strip().lower()
    if runtime not in ("auto", "native", "python"):
        raise bad("runtime", f"{runtime!r} must be native, python or auto")
    jump = m.get("jump", [])
    if isinstance(jump, str):
        jump = [jump]
    if not isinstance(jump, list) or not all(isinstance(j, str) and j for j in jump):
        raise bad("jump", "must be a board name, user@host:port, or a list of them")
    board = Board(
        name=name,
        host=host,
        port=get_int("port", 1, 65535),
        user=get_str("user"),
        key=local_path("key"),
        known_hosts=local_path("known_hosts") or DEFAULT_KNOWN_HOSTS.expanduser(),
        tags=list(tags),
        timeout=timeout,
        keepalive=keepalive,
        stall_timeout=stall_timeout,
        retries=DEFAULT_RETRIES if m.get("retries") is None else get_int("retries", 0, 20),
        runtime_dir=runtime_dir,
        ncnn=_build_ncnn(path, where, m.get("ncnn"), _line(m, "ncnn") or line),
        python=python,
        description=get_str("description", "") if m.get("description") else "",
        source=path,
        runtime=runtime,
    )
    return board, jump


def _build_ncnn(path: Path, where: str, v: Any, line: int | None) -> NcnnOptions:
    if v is None:
        return NcnnOptions()
    if not isinstance(v, dict):
        raise _err(path, line, where, "'ncnn' must be a mapping (threads:, powersave:, fp16:, winograd:, sgemm:)")
    _check_fields(path, v, _NCNN_FIELDS, f"{where} ncnn")
    kw: dict[str, Any] = {}
    for k, val in v.items():
        kline = _line(v, k) or line
        if k == "threads":
            if isinstance(val, bool) or not isinstance(val, int) or not 1 <= val <= 256:
                raise _err(path, kline, f"{where} ncnn", "'threads' must be an integer from 1 to 256")
        elif k == "powersave":
            if isinstance(val, bool) or val not in (0, 1, 2):
                raise _err(path, kline, f"{where} ncnn", "'powersave' must be 0 (all), 1 (little) or 2 (big cores)")
        elif not isinstance(val, bool):
            raise _err(path, kline, f"{where} ncnn", f"'{k}' must be true or false")
        kw[k] = val
    return NcnnOptions(**kw)


def _check_group(inv: Inventory, path: Path, gname: str, members: list[str], line: int | None) -> None:
    where = f"group '{gname}'"
    if gname in inv.boards:
        raise _err(path, line, where, f"has the same name as a board (in {inv.boards[gname].source})")
    for m in members:
        if m not in inv.boards and m not in inv.groups:
            raise _err(path, line, where, f"member '{m}' is not a board or group"
                       f"{_suggest(m, list(inv.boards) + list(inv.groups))}")

    def visit(g: str, stack: tuple[str, ...]) -> None:
        if g in stack:
            raise _err(path, line, where, f"groups include each other: {' -> '.join(stack + (g,))}")
        for m in inv.groups[g]:
            if m in inv.groups:
                visit(m, stack + (g,))

    visit(gname, ())


def _resolve_jumps(inv: Inventory, raw: dict[str, tuple[list[str], str]]) -> None:
    for name, (specs, src) in raw.items():
        board = inv.boards[name]
        hops: list[Board | JumpHost] = []
        for spec in specs:
            if spec in inv.boards:
                hops.append(inv.boards[spec])
                continue
            if "@" not in spec and ":" not in spec and "." not in spec:
                raise DeployerError(
                    f"{src}: board '{name}': jump '{spec}' is not a board in the loaded targets"
                    f"{_suggest(spec, inv.boards)}",
                    hint="name a board, or write user@host[:port] for a host that is not a board",
                )
            try:
                hops.append(JumpHost.parse(spec))
            except ValueError as e:
                raise DeployerError(f"{src}: board '{name}': bad jump: {e}") from None
        board.jump = hops
    for board in inv.boards.values():
        _check_jump_cycle(board, ())


def _check_jump_cycle(board: Board, stack: tuple[str, ...]) -> None:
    if board.name in stack:
        raise DeployerError(
            f"{board.source}: board '{board.name}': jump chain loops: {' -> '.join(stack + (board.name,))}"
        )
    for j in board.jump:
        if isinstance(j, Board):
            _check_jump_cycle(j, stack + (board.name,))


def local_user() -> str:
    """The login name OpenSSH would use when none is configured."""
    return getpass.getuser()
