"""How long a test waits for something that should happen, before it says what never did.

Deadlines are generous on purpose: on a busy 2-core machine a thing that takes 50 ms can take
seconds. A test fails on a deadline only when the awaited thing never happens; how fast it happens
is measured in bench/, not asserted here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE = float(os.environ.get("JOBWIDGET_TEST_DEADLINE", "60"))


def wait_for(predicate: Callable[[], T], what: str, timeout: float = DEADLINE, interval: float = 0.02) -> T:
    """Poll `predicate` until it returns something truthy; fail saying `what` never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g} s, still waiting for {what}")
        time.sleep(interval)
