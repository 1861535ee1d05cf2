"""Where tests find things outside the package: the repository and the recorded Replicate fixtures."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
REPLICATE_FIXTURES = FIXTURES_DIR / "replicate"  # what Replicate answers; provenance in its SOURCES.md
