"""Shared fixtures live in tests/fixtures/, one module per area, loaded as plugins.

Under CI (CI=true, or DEPLOYER_REQUIRE_ALL=1) a skipped test is a failed test, unless its reason is
one of tests/fixtures/tiers.py's ALLOWED_SKIPS: a tier that cannot run must turn CI red, not
quietly shrink what was tested. The allowed skips are listed at the end of the run.
"""

from __future__ import annotations

import os

import pytest

# Fleet commands keep board connections in a background controller by default (--persist 60).
# The suite runs them in-process unless a test asks for the controller (tests/integration/test_fleet.py
# runs the CLI both ways); a test run must not leave controllers behind.
os.environ.setdefault("DEPLOYER_PERSIST", "0")

from tests.fixtures.tiers import allowed_skip, require_all

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.sshd",
    "tests.fixtures.boards",
    "tests.fixtures.int8",
    "tests.fixtures.calib",
]

_ALLOWED_SEEN: list[tuple[str, str]] = []


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """skipped_under_ci: in CI a skip (from a fixture, skipif or importorskip) fails the test."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and require_all()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    why = allowed_skip(reason)
    if why is not None:
        _ALLOWED_SEEN.append((item.nodeid, why))
        return
    report.outcome = "failed"
    report.longrepr = (f"{item.nodeid}: skipped, and CI requires every test tier to run "
                       f"(CI / DEPLOYER_REQUIRE_ALL is set): {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _ALLOWED_SEEN:
        terminalreporter.write_line(f"allowed skips under CI ({len(_ALLOWED_SEEN)}), by design:")
        for why in sorted({w for _, w in _ALLOWED_SEEN}):
            count = sum(1 for _, w in _ALLOWED_SEEN if w == why)
            terminalreporter.write_line(f"  {count} x {why}")
