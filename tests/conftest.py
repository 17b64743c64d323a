"""Shared fixtures: each real component (broker, database, git server) has its own module
under tests/support, registered here as a pytest plugin."""

pytest_plugins = [
    "tests.support.broker",
    "tests.support.postgres",
    "tests.support.git",
    "tests.support.processes",
]
