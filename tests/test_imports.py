"""What `import jobwidget` costs: pandas (about half a second) loads only when a DataFrame is asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .deadlines import DEADLINE


@pytest.mark.parametrize("module", ["jobwidget", "jobwidget.surfaces.cli", "jobwidget.surfaces.server"])
def test_importing_does_not_load_pandas(module: str) -> None:
    code = f"import sys, {module}; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {module} loaded pandas"


def test_to_dataframe_still_works_after_a_lazy_import() -> None:
    code = (
        "import sys, jobwidget\n"
        "from tests.fakes import FakeProvider, make_job\n"
        "with jobwidget.Jobs(provider=FakeProvider([make_job(1)]), store=':memory:', autostart=False) as j:\n"
        "    j.sync(); df = j.to_dataframe()\n"
        "print(len(df), 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"]
