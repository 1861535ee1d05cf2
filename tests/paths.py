"""Where tests find things outside the package: the repository and the recorded Replicate fixtures."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# CI lays shared/ beside the clone; JOBWIDGET_REFERENCE_DIR points elsewhere when it is not.
REFERENCE_DIR = Path(
    os.environ.get("JOBWIDGET_REFERENCE_DIR") or REPO.parent / "shared" / "reference" / "replicate"
)
