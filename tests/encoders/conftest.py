"""Encoder tests: a skip that is not listed in :data:`EXPECTED_SKIPS` fails the test.

An encoder that silently stops building (a missing optional package, weights no longer found offline) would
otherwise show up as one more "s" in the summary. Deselected tests (``-m "not slow"``) are not skips.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

EXPECTED_SKIPS: dict[str, str] = {}
"""Test node ids (or a prefix of one) allowed to skip, with the reason. Empty: every encoder test must run."""


def _expected(nodeid: str) -> bool:
    return any(nodeid == key or nodeid.startswith(key) for key in EXPECTED_SKIPS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """Turn an unexpected skip of an encoder test into a failure that says where to list it."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and not _expected(item.nodeid):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"unexpected skip of {item.nodeid}: {reason}\n"
            "fix the cause, or list the test in EXPECTED_SKIPS (tests/encoders/conftest.py) with the reason"
        )
