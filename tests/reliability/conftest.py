"""Fixtures for the reliability tests: a recording comm in place of a kernel."""

from __future__ import annotations

from collections.abc import Iterator

import comm
import pytest

from ._support import RecordingComm


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordingComm]]:
    """Every comm a widget opens records what it would send to the browser (no kernel needed)."""
    made: list[RecordingComm] = []

    def create(*args: object, **kwargs: object) -> RecordingComm:
        c = RecordingComm(*args, **kwargs)
        made.append(c)
        return c

    monkeypatch.setattr(comm, "create_comm", create)
    yield made
