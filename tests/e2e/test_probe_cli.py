"""`deployer probe` as a person reads it in a log: key: value rows, no Python reprs, nothing cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deployer.cli.render import human


def deployer(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")}
    return subprocess.run([sys.executable, "-c", "from deployer.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.sshd
def test_probe_human_view_has_no_reprs(sshd) -> None:
    view = deployer("probe", "loop", "--targets", str(sshd.targets))
    assert view.returncode == 0, view.stderr
    facts = json.loads(deployer("probe", "loop", "--targets", str(sshd.targets), "--json").stdout)
    text = view.stdout
    assert "\x1b" not in text and "…" not in text
    for bad in ("None", "True", "False", "['", "{'", "PosixPath("):
        assert bad not in text, (bad, text)
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    assert rows["machine"] == facts["machine"] == "x86_64"
    assert set(rows) | {"ok"} == set(facts) and facts["ok"] is True     # ok is for scripts, not the table
    changing = {"mem_available", "disk_free", "temperature_c", "seconds"}  # differ between the two probes
    for key, value in facts.items():  # every value whole (however long), lists as "a, b", None as "-"
        if key not in changing | {"ok"}:
            assert rows[key] == human(value), key
    assert rows["manylinux_tags"] == ", ".join(facts["manylinux_tags"])
