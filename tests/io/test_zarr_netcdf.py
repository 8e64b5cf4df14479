import numpy as np
import pytest

import changescope
from changescope.errors import CorruptFileError, ParameterError
from changescope.io.writers import write_series_netcdf, write_series_zarr
from changescope.testing import make_test_series


@pytest.mark.parametrize(
    ("writer", "name", "fmt"), [(write_series_zarr, "s.zarr", "zarr"), (write_series_netcdf, "s.nc", "netcdf")]
)
def test_round_trip(tmp_path, writer, name, fmt):
    ds = make_test_series(seed=1, n_time=3, cloud_fraction=0.3, with_labels=True)
    writer(ds, tmp_path / name)
    back = changescope.open(tmp_path / name)
    assert back.attrs["format"] == fmt
    assert back.valid.dtype == bool
    np.testing.assert_array_equal(back.image.values, ds.image.values)
    np.testing.assert_array_equal(back.valid.values, ds.valid.values)
    np.testing.assert_array_equal(back.labels.values, ds.labels.values)
    np.testing.assert_allclose(back.scale.values, ds.scale.values)
    assert back.rio.crs == ds.rio.crs
    assert back.rio.transform() == ds.rio.transform()
    assert changescope.series.class_table(back) == changescope.series.class_table(ds)


def test_zarr_without_series_variables(tmp_path):
    import xarray as xr

    xr.Dataset({"foo": ("x", np.arange(3))}).to_zarr(tmp_path / "other.zarr")
    with pytest.raises(ParameterError, match="not a changescope series"):
        changescope.open(tmp_path / "other.zarr")


def test_corrupt_netcdf(tmp_path):
    (tmp_path / "bad.nc").write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="bad.nc"):
        changescope.open(tmp_path / "bad.nc")
