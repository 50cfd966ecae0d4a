"""Shared fixtures. Real data come from FARFIELD_TEST_DATA (default ../shared/data): outside CI a missing
folder skips the tests that need it (with the reason); inside CI (CI=true) it fails them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    return Path(os.environ.get("FARFIELD_TEST_DATA", ROOT.parent / "shared" / "data")).resolve()


def missing_data(msg: str):
    """Skip a test whose real data is absent, with ``msg`` as the reason; under CI=true, fail instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private download / featurisation cache, and no network."""
    monkeypatch.setenv("FARFIELD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FARFIELD_OFFLINE", "1")          # no test may reach the network


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = data_root()
    if not (d / "structures").is_dir():
        missing_data(f"test data folder {d} is missing (set FARFIELD_TEST_DATA)")
    return d


@pytest.fixture(scope="session")
def structures(data_dir) -> Path:
    return data_dir / "structures"
