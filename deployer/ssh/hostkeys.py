"""Strict known_hosts checking, the way OpenSSH does it, with an explicit trust step.

Boards get re-flashed and regenerate host keys, which tempts tools into AutoAddPolicy (trust
anything). We refuse instead: an unknown host is trusted only when the user says --accept-new
(which pins the key to the board's known_hosts file), and a changed key is refused with both
fingerprints and the exact file:line to remove, so re-pinning is a deliberate act.

Understands OpenSSH's file format: hashed names (|1|salt|hmac), `[host]:port` for non-22 ports,
comma-separated patterns with * ? and ! negation, and the @revoked marker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from deployer import fsutil
from deployer.errors import DeployerError


class HostKeyError(DeployerError):
    """Base for host-key refusals; never retried."""


class UnknownHostKey(HostKeyError):
    pass


class ChangedHostKey(HostKeyError):
    pass


@dataclass(frozen=True)
class Entry:
    line: int
    patterns: str
    key_type: str
    blob: bytes
    marker: str | None = None   # "revoked" | "cert-authority" | None


def host_token(host: str, port: int) -> str:
    """The name OpenSSH stores: `host` for port 22, `[host]:port` otherwise (lowercased, as ssh does)."""
    host = host.lower()
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint: unpadded base64 of sha256(key blob)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# parsed files by (path, mtime_ns, size): a changed file has a new key, so it is read again
_PARSED: dict[tuple[str, int, int], tuple[str, list["Entry"]]] = {}


class KnownHosts:
    """One known_hosts file, parsed with line numbers."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.entries: list[Entry] = []
        try:
            st = self.path.stat()
            key: tuple[str, int, int] | None = (str(self.path), st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        cached = _PARSED.get(key) if key else None
        if cached is not None:   # a fleet connects to hundreds of boards with one file: parse it once
            self.text, self.entries = cached[0], list(cached[1])
            return
        if not self.path.exists():
            text = ""
        else:                         # regular files only: a FIFO here would hang every connect
            text = fsutil.read_input(self.path, "known_hosts file", limit=256 << 20).decode("utf-8", "replace")
        self.text = text
        for no, raw in enumerate(text.splitlines(), 1):
            entry = _parse_line(no, raw)
            if entry:
                self.entries.append(entry)
        if key is not None:
            if len(_PARSED) > 64:
                _PARSED.clear()
            _PARSED[key] = (text, list(self.entries))

    def matching(self, token: str) -> list[Entry]:
        return [e for e in self.entries if _host_matches(e.patterns, token)]

    def add(self, token: str, key_type: str, blob: bytes) -> int:
        """Append an entry (hashed if the file already hashes its names); returns its line number.

        Two deployers adding keys at once (`xargs -P` over new boards with --accept-new, a fleet
        deploy's parallel threads) each wrote the file they had read plus their own line, and the
        last rename dropped the others' keys (8 at once kept 1 or 2). The file's folder is flocked
        while the file is read again and rewritten, so every add lands on the current file."""
        if self.path.parent.exists() and not self.path.parent.is_dir():   # was "...: File exists"
            raise DeployerError(f"known_hosts {self.path}: {self.path.parent} is a file, not a folder",
                                hint="fix known_hosts: in the targets file")
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        with fsutil.folder_lock(self.path.parent):
            current = KnownHosts(self.path)
            self.text, self.entries = current.text, current.entries
            for e in self.matching(token):
                if e.marker is None and e.blob == blob:   # another deployer has just added it
                    return e.line
            hashed = sum(e.patterns.startswith("|1|") for e in self.entries) > len(self.entries) / 2
            name = _hash_name(token) if hashed else token
            text = self.text
            if text and not text.endswith("\n"):
                text += "\n"
            line_no = text.count("\n") + 1
            text += f"{name} {key_type} {base64.b64encode(blob).decode()}\n"
            fsutil.write_text(self.path, text)
            os.chmod(self.path, 0o644)
        self.text = text
        self.entries.append(Entry(line_no, name, key_type, blob))
        return line_no


def preferred_key_types(known_hosts: str | os.PathLike, token: str, offered: tuple[str, ...]) -> list[str]:
    """Put key types we already know for this host first, as OpenSSH does, so a host that has
    several host keys shows us the pinned one instead of looking 'unknown'."""
    known = {e.key_type for e in KnownHosts(known_hosts).matching(token) if e.marker is None}
    known_algs = set()
    for t in known:
        known_algs.add(t)
        if t == "ssh-rsa":
            known_algs.update({"rsa-sha2-512", "rsa-sha2-256"})
    return [a for a in offered if a in known_algs] + [a for a in offered if a not in known_algs]


def check_host_key(
    known_hosts: str | os.PathLike,
    host: str,
    port: int,
    key_type: str,
    blob: bytes,
    *,
    board: str,
    via: str | None = None,
    accept_new: bool = False,
) -> str:
    """Raise unless the key is pinned for host:port. Returns "known" or "added" (accept_new).

    `via` names the jump host when this hop is not the board itself, so the message says which hop.
    """
    who = f"board '{board}'" + (f" ({via})" if via else "")
    kh = KnownHosts(known_hosts)
    token = host_token(host, port)
    fp = fingerprint(blob)
    entries = kh.matching(token)
    for e in entries:
        if e.marker == "revoked" and e.blob == blob:
            raise HostKeyError(
                f"{who}: host key {key_type} {fp} for {token} is marked @revoked in "
                f"{kh.path}:{e.line}; refusing to connect"
            )
    plain = [e for e in entries if e.marker is None]
    if any(e.blob == blob for e in plain):
        return "known"
    same_type = [e for e in plain if _base_type(e.key_type) == _base_type(key_type)]
    other = same_type or plain
    if other:
        e = other[0]
        what = "HOST KEY CHANGED" if same_type else "HOST KEY TYPE CHANGED"
        raise ChangedHostKey(
            f"{who}: {what} for {token}: {kh.path}:{e.line} pins {e.key_type} "
            f"{fingerprint(e.blob)} but the board offered {key_type} {fp}; refusing to connect",
            hint=f"if the board was re-flashed, remove line {e.line} "
            f"(ssh-keygen -R '{token}' -f {kh.path}) and re-run with --accept-new",
        )
    if not accept_new:
        raise UnknownHostKey(
            f"{who}: host {token} is not in known_hosts {kh.path} "
            f"(it offered {key_type} {fp}); refusing to connect",
            hint="check the fingerprint on the board (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) "
            "and re-run with --accept-new to trust and save it",
        )
    kh.add(token, key_type, blob)
    return "added"


def _base_type(t: str) -> str:
    return "ssh-rsa" if t in ("rsa-sha2-256", "rsa-sha2-512") else t


def _parse_line(no: int, raw: str) -> Entry | None:
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    fields = line.split()
    marker = None
    if fields[0].startswith("@"):
        marker = fields[0][1:]
        fields = fields[1:]
    if len(fields) < 3:
        return None
    try:
        blob = base64.b64decode(fields[2], validate=True)
    except ValueError:
        return None
    return Entry(no, fields[0], fields[1], blob, marker)


def _hash_name(name: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(20)
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


def _host_matches(patterns: str, token: str) -> bool:
    if patterns.startswith("|1|"):
        try:
            salt = base64.b64decode(patterns.split("|")[2])
        except (IndexError, ValueError):
            return False
        return hmac.compare_digest(_hash_name(token, salt), patterns)
    token_l = token.lower()
    matched = False
    for pat in patterns.split(","):
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        literal = "*" not in pat and "?" not in pat     # the usual line: no regex to build (fleets: 1000s of lines)
        if (pat.lower() == token_l) if literal else _glob(pat.lower()).fullmatch(token_l):
            if neg:
                return False
            matched = True
    return matched


def _glob(pat: str) -> "re.Pattern[str]":
    """OpenSSH host patterns know only * and ?; brackets are literal (as in [host]:port)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pat))
