"""Fleet commands on an ad-hoc `user@host[:port]` target, with no targets file anywhere (real sshd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sshd


def test_status_releases_and_plan_on_an_adhoc_target_need_no_targets_file(sshd, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(sshd.server.host_key_line())
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host 127.0.0.1\n  IdentityFile {sshd.client_key}\n")
    work = tmp_path / "work"           # no targets/ folder here, no --targets
    work.mkdir()
    env = {**os.environ, "HOME": str(home), "DEPLOYER_SSH_CONFIG": str(cfg)}
    env.pop("SSH_AUTH_SOCK", None)
    target = f"{sshd.user}@127.0.0.1:{sshd.server.port}"

    def run(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "deployer.cli", *args, "--json"], capture_output=True,
                              text=True, cwd=work, env=env, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    status = run("status", target)
    (board,) = status["boards"]
    assert board["board"] == target and board["ok"] and board["reachable"] is True
    assert "release" in board
    listed = run("releases", target)
    (board,) = listed["boards"]
    assert board["board"] == target and board["ok"] and isinstance(board["releases"], list)
    # an unknown name (no '@') still says there are no targets: the ad-hoc rule is not a catch-all
    proc = subprocess.run([sys.executable, "-m", "deployer.cli", "status", "kitchen", "--json"], capture_output=True,
                          text=True, cwd=work, env=env, timeout=60, check=False)
    assert proc.returncode == 2 and "no targets" in proc.stderr
