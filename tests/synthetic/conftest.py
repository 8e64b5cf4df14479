"""Shared synthetic AOIs for the tests (small, in memory, built once per session)."""

from __future__ import annotations

import pytest

from changescope.synthetic import SyntheticAoi, generate_aoi


@pytest.fixture(scope="session")
def aoi() -> SyntheticAoi:
    """A 192 px, 12-month AOI with one event of each type (seed 1)."""
    return generate_aoi(seed=1, size=192, months=12)


@pytest.fixture(scope="session")
def two_year_aoi() -> SyntheticAoi:
    """A 128 px AOI over two years (for the crop rotation), seed 2."""
    return generate_aoi(seed=2, size=128, months=24)
