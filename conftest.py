"""Test-wide rules: tests under netns_tests/ need root, and every root test skips with the reason
when not run as root (CI runs them all as root)."""

from __future__ import annotations

import os

import pytest

ROOT_REASON = "needs root (network namespaces, netlink, /run/netns): run `make test` as root"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "netns_tests" in item.path.parts:
            item.add_marker(pytest.mark.root)
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason=ROOT_REASON)
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)
