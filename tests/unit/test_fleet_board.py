"""deployer/fleet/board/fleet.sh run for real with the host's POSIX shells (dash, and busybox sh when
installed): the board-side release store, its protocol, and its refusals."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deployer.fleet.boardcmd import script

SHELLS = [s for s in ("dash", "bash", "busybox") if shutil.which(s)]


def _argv(shell: str, *args: str) -> list[str]:
    base = [shutil.which(shell)] + (["sh"] if shell == "busybox" else [])
    return [*base, "-c", script(), "fleet", *args]


def session(shell: str, root: Path, lines: list[str], wait: int = 2, holder: str = '{"purpose": "test"}'):
    proc = subprocess.run(_argv(shell, "session", str(root), str(wait), holder), input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout.splitlines()


def put(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / "incoming").mkdir(parents=True, exist_ok=True)
    (root / "incoming" / f"{sha}.part").write_bytes(data)
    return sha


def make_release(shell: str, root: Path, rid: str, payload: bytes) -> list[str]:
    s = put(root, payload)
    m = put(root, json.dumps({"id": rid}).encode())
    rc, out = session(shell, root, [f"commit {rid} {m} model.bin={s}", f"switch {rid}", "gc 2"])
    assert rc == 0, out
    return out


@pytest.mark.parametrize("shell", SHELLS)
def test_commit_switch_list(shell, tmp_path):
    root = tmp_path / "store"
    out = make_release(shell, root, "m-1", b"one")
    assert out[0] == "locked" and out[1] == "ok" and out[2] == "ok -" and out[3].startswith("ok releases=")
    assert os.readlink(root / "current") == "releases/m-1"
    out = make_release(shell, root, "m-2", b"two")
    assert out[2] == "ok m-1"
    # the switch replaced the symlink; it did not put a link inside the old release's folder
    assert os.readlink(root / "current") == "releases/m-2"
    assert sorted(os.listdir(root / "releases" / "m-1")) == ["manifest.json", "model.bin"]
    assert (root / "releases" / "m-2" / "model.bin").read_bytes() == b"two"
    listing = subprocess.run(_argv(shell, "list", str(root), "all"), capture_output=True, text=True).stdout
    assert "current m-2" in listing and "manifest m-1 {\"id\": \"m-1\"}" in listing
    assert [ln.split()[2] for ln in listing.splitlines() if ln.startswith("history")] == ["m-1", "m-2"]
    # the lock file says nobody holds it once the session ended
    assert (root / ".deployer.lock").read_text() == ""


@pytest.mark.parametrize("shell", SHELLS)
def test_state_reports_blobs_and_parts(shell, tmp_path):
    root = tmp_path / "store"
    make_release(shell, root, "m-1", b"one")
    have = hashlib.sha256(b"one").hexdigest()
    partial = put(root, b"abc")
    none = "f" * 64
    rc, out = session(shell, root, [f"state m-1 {have} {partial} {none}"])
    assert out[1:5] == ["current m-1", "release have", f"blob {have} have", f"blob {partial} part 3"]
    assert out[5] == f"blob {none} none" and out[6].startswith("free ") and out[7] == "end"


@pytest.mark.parametrize("shell", SHELLS)
def test_corrupt_part_is_rejected_and_removed(shell, tmp_path):
    root = tmp_path / "store"
    good = hashlib.sha256(b"the real bytes").hexdigest()
    (root / "incoming").mkdir(parents=True)
    (root / "incoming" / f"{good}.part").write_bytes(b"the real byteX")
    m = put(root, b"{}")
    rc, out = session(shell, root, [f"commit r1 {m} model.bin={good}"])
    assert out[1].startswith(f"err corrupt {good}")
    assert not (root / "incoming" / f"{good}.part").exists() and not (root / "releases" / "r1").exists()
    assert not (root / "blobs" / good).exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_words_are_refused(shell, tmp_path):
    root = tmp_path / "store"
    make_release(shell, root, "m-1", b"one")
    sha = hashlib.sha256(b"one").hexdigest()
    m = put(root, b"{}")
    canary = tmp_path / "pwned"
    lines = [f"switch ../../{tmp_path.name}", "switch $(touch${IFS}" + str(canary) + ")", "switch `id`",
             "switch .hidden", "switch -rf", f"commit ../x {m} a={sha}", f"commit r2 {m} ../../evil={sha}",
             f"commit r2 {m} .profile={sha}", f"commit r2 {m} a;b={sha}", f"commit r2 {m} manifest.json={sha}",
             "note ../x {}", "gc -1", f"state ../.. {sha}", "rm -rf /"]
    rc, out = session(shell, root, lines)
    answers = out[1:]
    assert len(answers) == len(lines), answers         # one answer per command, every one a refusal
    assert all(a.startswith("err") for a in answers), answers
    assert os.readlink(root / "current") == "releases/m-1"
    assert sorted(os.listdir(root / "releases")) == ["m-1"]
    assert not canary.exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_gc_keeps_current_and_n_previous(shell, tmp_path):
    root = tmp_path / "store"
    for i in range(6):
        make_release(shell, root, f"m-{i}", f"payload {i}".encode())
    assert sorted(os.listdir(root / "releases")) == ["m-3", "m-4", "m-5"]   # `gc 2` + current
    inodes = {p.stat().st_ino for d in (root / "releases").iterdir() for p in d.iterdir()}
    assert {p.stat().st_ino for p in (root / "blobs").iterdir()} == inodes


@pytest.mark.parametrize("shell", SHELLS)
def test_busy_lock_names_the_holder(shell, tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    holder = subprocess.Popen(_argv(shell, "session", str(root), "0", '{"purpose": "deploy", "user": "alice"}'),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, out = session(shell, root, ["quit"], wait=1)
        assert rc == 75 and out[0].startswith("waiting") and out[-1].startswith("busy ")
        assert '"user": "alice"' in out[-1] and "board_pid" in out[-1]
    finally:
        holder.stdin.close()
        holder.wait(10)
    rc, out = session(shell, root, ["quit"], wait=0)
    assert rc == 0 and out == ["locked"]


def test_layout_names_match_the_script():
    """deployer.remote.layout and fleet.sh agree on every name under the deploy root."""
    from deployer.remote.layout import LOCK_NAME, BoardLayout

    text = script()
    lay = BoardLayout("r")
    for path in (lay.releases, lay.blobs, lay.current, lay.incoming, lay.history, lay.release_state):
        assert path.startswith("r/")
        assert path[2:] in text
    assert f"LOCK={LOCK_NAME}" in text
