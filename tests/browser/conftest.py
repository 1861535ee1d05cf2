"""Fixtures for the browser tests: the system Chromium, one JupyterLab per module, a fresh page per test.

Without Chromium the tests fail under CI (a green run that drove no browser would hide a broken setup:
`./dev setup` installs it) and skip on a developer's machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from ._lab import LabServer, PageWatch, find_chromium, open_page, start_lab


@pytest.fixture(scope="module")
def chromium() -> str:
    path, why = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {why}", pytrace=False)
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def lab(chromium: str) -> Iterator[LabServer]:
    with start_lab() as server:
        yield server


@pytest.fixture
def lab_page(lab: LabServer, chromium: str) -> Iterator[tuple[Any, PageWatch]]:
    with open_page(chromium, lab.base_url) as (page, watch):
        yield page, watch
