"""Shared fixtures live in tests/fixtures/, one module per area, loaded as plugins.

Under CI (CI=true, or DEPLOYER_REQUIRE_ALL=1) a skipped test is a failed test: a tier that cannot
run must turn CI red, not quietly shrink what was tested.
"""

from __future__ import annotations

import os

import pytest

# Fleet commands keep board connections in a background controller by default (--persist 60).
# The suite runs them in-process unless a test asks for the controller (tests/integration/test_fleet.py
# runs the CLI both ways); a test run must not leave controllers behind.
os.environ.setdefault("DEPLOYER_PERSIST", "0")

from tests.fixtures.tiers import require_all

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.sshd",
    "tests.fixtures.boards",
    "tests.fixtures.int8",
    "tests.fixtures.calib",
]


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
    report.outcome = "failed"
    report.longrepr = (f"{item.nodeid}: skipped, and CI requires every test tier to run "
                       f"(CI / DEPLOYER_REQUIRE_ALL is set): {reason}")
