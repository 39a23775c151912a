"""~/.ssh/config -> the hops deployer connects through.

paramiko's SSHClient ignores ssh_config and has no ProxyJump, but users already describe their
boards and bastions there. We read it with paramiko.SSHConfig and apply it the way OpenSSH does:
values set on the board in targets YAML win (like command-line options), then ssh_config, then
OpenSSH's defaults. Jump hosts get their own ssh_config lookup and their own host-key check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from deployer.errors import DeployerError
from deployer.targets import Board, JumpHost, local_user

MAX_HOPS = 8
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass
class Hop:
    """One SSH connection in a chain: everything needed to open, verify and authenticate it."""

    label: str                      # for messages: board name or jump spec
    hostname: str                   # what to connect to (after HostName)
    port: int
    user: str
    keys: list[Path] = field(default_factory=list)
    explicit_keys: bool = False     # keys named by the user: an unreadable one is an error
    known_hosts: Path = Path("~/.ssh/known_hosts")
    key_alias: str | None = None    # HostKeyAlias: the name looked up in known_hosts
    timeout: float = 10.0
    board: str = ""                 # the board this hop leads to (for messages)
    proxy_command: bool = False     # ssh_config gives it a ProxyCommand, which deployer never runs
    include: str | None = None      # an Include line paramiko does not follow (hosts in it are unseen)

    @property
    def address(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def who(self) -> str:
        """For messages: always names the board, plus the jump host when this hop is one."""
        mine = f"board '{self.board}'"
        return self.label if self.label == mine else f"{mine} ({self.label})"

    @property
    def known_hosts_name(self) -> str:
        return self.key_alias or self.hostname


def ssh_config_path() -> Path:
    """DEPLOYER_SSH_CONFIG overrides ~/.ssh/config (tests, CI); empty string disables it."""
    env = os.environ.get("DEPLOYER_SSH_CONFIG")
    return Path(env).expanduser() if env is not None else Path("~/.ssh/config").expanduser()


def load_ssh_config(path: Path | None = None) -> paramiko.SSHConfig:
    path = path if path is not None else ssh_config_path()
    if str(path) in ("", ".") or not path.is_file():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except Exception as e:  # paramiko raises assorted types for bad files
        raise DeployerError(f"cannot parse ssh config {path}: {e}") from None


def config_port(cfg: dict) -> int:
    """ssh_config's Port for a host, or one line naming the bad value (`Port abc`)."""
    text = str(cfg.get("port", 22))
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DeployerError(f"ssh config {ssh_config_path()}: Port {text!r} for host {cfg.get('hostname', '?')} "
                            "is not a port number (1-65535)")
    return int(text)


def plan_hops(board: Board, config: paramiko.SSHConfig | None = None) -> list[Hop]:
    """The ordered hops to reach `board`: jump hosts first (recursively), the board last."""
    config = config if config is not None else load_ssh_config()
    hops = _board_chain(board, config, depth=0)
    for h in hops:
        h.board = board.name
    return hops


def _board_chain(board: Board, config: paramiko.SSHConfig, depth: int) -> list[Hop]:
    if depth > MAX_HOPS:
        raise DeployerError(f"board '{board.name}': more than {MAX_HOPS} jump hops (a loop in ~/.ssh/config ProxyJump?)")
    cfg = config.lookup(board.host)
    keys = [board.key] if board.key else _identity_files(cfg)
    hop = Hop(
        label=f"board '{board.name}'",
        hostname=cfg.get("hostname", board.host),
        port=board.port or config_port(cfg),
        user=board.user or cfg.get("user") or local_user(),
        keys=keys,
        explicit_keys=bool(board.key),
        known_hosts=board.known_hosts,
        key_alias=cfg.get("hostkeyalias"),
        timeout=board.timeout,
        proxy_command=_has_proxy_command(cfg),
        include=cfg.get("include"),
    )
    if depth:
        hop.label = f"jump host '{board.name}'"
    chain: list[Hop] = []
    if board.jump:
        for j in board.jump:
            if isinstance(j, Board):
                chain += _board_chain(j, config, depth + 1)
            else:
                chain += _spec_chain(j, config, board, depth + 1)
    else:
        for spec in _proxyjump(cfg):
            chain += _spec_chain(spec, config, board, depth + 1)
    return chain + [hop]


def _spec_chain(spec: JumpHost, config: paramiko.SSHConfig, target: Board, depth: int) -> list[Hop]:
    """A `user@host:port` hop: its own ssh_config entry, the target board's known_hosts file."""
    if depth > MAX_HOPS:
        raise DeployerError(f"board '{target.name}': more than {MAX_HOPS} jump hops (a loop in ~/.ssh/config ProxyJump?)")
    cfg = config.lookup(spec.host)
    keys = _identity_files(cfg)
    if target.key and target.key not in keys:
        keys.append(target.key)
    hop = Hop(
        label=f"jump host {spec}",
        hostname=cfg.get("hostname", spec.host),
        port=spec.port or config_port(cfg),
        user=spec.user or cfg.get("user") or local_user(),
        keys=keys,
        explicit_keys=False,
        known_hosts=target.known_hosts,
        key_alias=cfg.get("hostkeyalias"),
        timeout=target.timeout,
        proxy_command=_has_proxy_command(cfg),
        include=cfg.get("include"),
    )
    chain: list[Hop] = []
    for inner in _proxyjump(cfg):
        chain += _spec_chain(inner, config, target, depth + 1)
    return chain + [hop]


def _has_proxy_command(cfg: dict) -> bool:
    """deployer connects with paramiko and never runs a ProxyCommand (a shell command from a config
    file); a board reachable only through one failed as 'cannot resolve/connect' with no word on why."""
    value = cfg.get("proxycommand")
    return bool(value) and str(value).strip().lower() != "none"


def _proxyjump(cfg: dict) -> list[JumpHost]:
    value = cfg.get("proxyjump")
    if not value or value.strip().lower() == "none":
        return []
    out = []
    for part in value.split(","):
        part = part.strip()
        if part.startswith("ssh://"):
            part = part[len("ssh://"):]
        try:
            out.append(JumpHost.parse(part))
        except ValueError as e:
            raise DeployerError(f"{ssh_config_path()}: bad ProxyJump: {e}") from None
    return out


def _identity_files(cfg: dict) -> list[Path]:
    files = cfg.get("identityfile") or []
    if files:
        return [Path(f).expanduser() for f in files]
    return [Path(p).expanduser() for p in DEFAULT_IDENTITIES if Path(p).expanduser().is_file()]
