"""Shared fixtures live in tests/fixtures/, one module per area, loaded as plugins."""

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.sshd",
    "tests.fixtures.boards",
    "tests.fixtures.int8",
    "tests.fixtures.calib",
]
