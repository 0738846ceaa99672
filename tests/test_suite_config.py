"""The test configuration itself: a per-test time limit is in force (pytest.ini, pytest-timeout)."""

from __future__ import annotations


def test_every_test_has_a_time_limit(pytestconfig):
    # A scheduler livelock or a collective that never returns must fail its test, not hang the suite.
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout is missing: pip install -e '.[test]'"
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
