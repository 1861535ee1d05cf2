"""Session-wide safety for every test item, notebooks included (nbval items take no fixtures).

Tests talk only to 127.0.0.1: a developer's real Replicate token must never reach a test or the
quickstart notebook run by nbval, and nothing may write into the developer's own job store.
"""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ.pop("REPLICATE_API_TOKEN", None)
    os.environ.pop("REPLICATE_BASE_URL", None)
    os.environ.pop("JOBWIDGET_CONFIG", None)
    if "JOBWIDGET_TEST_DATA" not in os.environ:
        data = tempfile.mkdtemp(prefix="jobwidget-test-")
        os.environ["JOBWIDGET_TEST_DATA"] = data
        os.environ["JOBWIDGET_STORE"] = os.path.join(data, "notebook-jobs.sqlite3")
