"""Shared fixtures. Real data come from FARFIELD_TEST_DATA (default ../shared/data): outside CI a missing
folder skips the tests that need it (with the reason); inside CI (CI=true) it fails them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    return Path(os.environ.get("FARFIELD_TEST_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = data_root()
    if not (d / "structures").is_dir():
        msg = f"test data folder {d} is missing (set FARFIELD_TEST_DATA)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def structures(data_dir) -> Path:
    return data_dir / "structures"
