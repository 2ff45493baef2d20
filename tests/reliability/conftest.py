"""Reliability tests: short versions run in CI; long versions with ``-m long`` or LANGCHAIN_VQ_LONG=1."""

from __future__ import annotations

import pytest

from tests.reliability._common import LONG


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "long: long reliability run (select with -m long or LANGCHAIN_VQ_LONG=1)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG or "long" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="long reliability run; select with -m long or LANGCHAIN_VQ_LONG=1")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
