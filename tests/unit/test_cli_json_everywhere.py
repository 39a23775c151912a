"""README: "Every command takes `--json` (machine output on stdout, progress on stderr)"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer.main

from deployer.cli import build_app

ROOT = Path(__file__).resolve().parents[2]


def _leaves(cmd, path=()):
    if hasattr(cmd, "commands"):  # a group (typer vendors its own click: no isinstance on click.Group)
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path, cmd


def test_every_command_takes_json() -> None:
    missing = [" ".join(path) for path, cmd in _leaves(typer.main.get_command(build_app()))
               if "--json" not in {o for p in cmd.params for o in getattr(p, "opts", ())}]
    assert missing == []


def test_version_json_is_one_document_on_stdout() -> None:
    res = subprocess.run([sys.executable, "-c", "from deployer.cli import main; main()", "version", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    from deployer import __version__

    assert doc["ok"] is True and doc["deployer"] == __version__ and "ncnn" in doc
    flag = subprocess.run([sys.executable, "-c", "from deployer.cli import main; main()", "--version"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    plain = subprocess.run([sys.executable, "-c", "from deployer.cli import main; main()", "version"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert flag.returncode == 0 and flag.stdout == plain.stdout == f"deployer {__version__} (ncnn {doc['ncnn']})\n"
