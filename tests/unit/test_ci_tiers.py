"""Under CI a skipped tier fails the run; on a laptop it skips. Checked on a real pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TESTS = '''
import pytest
from tests.fixtures.tiers import unavailable

def test_needs_sshd():
    unavailable("needs openssh-server (/usr/sbin/sshd)")

def test_importorskip_hides_a_tier():
    pytest.importorskip("no_such_module_for_deployer_tests")

def test_skips_itself():
    pytest.skip("Fooo is not built into this ncnn wheel")

def test_passes():
    assert True
'''


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_tiers_sample.py").write_text(TESTS)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "DEPLOYER_REQUIRE_ALL")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env={**clean, **env}, timeout=120)


def test_off_ci_missing_tiers_skip(tmp_path: Path) -> None:
    res = _run(tmp_path)
    assert res.returncode == 0, res.stdout
    assert "1 passed, 3 skipped" in res.stdout


@pytest.mark.parametrize("env", [{"CI": "true"}, {"DEPLOYER_REQUIRE_ALL": "1"}])
def test_in_ci_every_skip_fails(tmp_path: Path, env: dict) -> None:
    res = _run(tmp_path, **env)
    assert res.returncode == 1, res.stdout
    assert "3 failed, 1 passed" in res.stdout and "skipped" not in res.stdout.splitlines()[-1]
    assert "test tier cannot run and CI requires it: needs openssh-server" in res.stdout
    assert "CI requires every test tier to run" in res.stdout and "no_such_module_for_deployer_tests" in res.stdout
    assert "Fooo is not built into this ncnn wheel" in res.stdout
