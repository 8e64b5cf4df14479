"""Fixtures of the embedding tests: the tiny test encoders and a small cloudy series."""

from __future__ import annotations

import pytest
import xarray as xr

import changescope.testing.encoders  # noqa: F401  (registers test_conv, test_conv_rgbn)


@pytest.fixture
def cloudy_series() -> xr.Dataset:
    """3 dates, 4 bands, 60x52 px, 30 % clouds per date (seeded)."""
    from changescope.testing import make_test_series

    return make_test_series(seed=3, n_time=3, height=60, width=52, cloud_fraction=0.3)
