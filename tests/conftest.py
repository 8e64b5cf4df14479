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


def sample(root: Path, name: str) -> Path:
    """A sample folder inside the shared data; skips when missing."""
    path = root / name
    if not path.exists():
        pytest.skip(f"sample {name!r} not found in {root}")
    return path


@pytest.fixture
def tiny_series() -> xr.Dataset:
    """A 4-date, 4-band, 64x64 seeded series."""
    return make_test_series(seed=0)
