"""Every ```python block of README.md runs as written (self-contained, on the built-in example or on files
under $FARFIELD_TEST_DATA). A block whose first line starts with ``# not run:`` is skipped (none is today)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, data_dir):
    code = BLOCKS[index]
    if code.lstrip().startswith("# not run:"):
        pytest.skip(code.strip().splitlines()[0])
    env = {**os.environ, "FARFIELD_TEST_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"README python block {index + 1} failed:\n{code}\n--- stderr ---\n{p.stderr[-3000:]}"
