"""Shared fixtures: real sample data (skipped cleanly when absent) and seeded tiny series."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xarray as xr

from changescope.testing import make_test_series

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CHANGESCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real sample data (../shared/data); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set CHANGESCOPE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    """Root of the real sample data, or ``None`` when it is absent (for tests that run partly without it)."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture
def tiny_series() -> xr.Dataset:
    """A 4-date, 4-band, 64x64 seeded series."""
    return make_test_series(seed=0)
