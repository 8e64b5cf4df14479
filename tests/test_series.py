import numpy as np
import pandas as pd
import pytest
from affine import Affine

from changescope.errors import (
    BandMismatchError,
    DuplicateDateError,
    EmptySeriesError,
    GridMismatchError,
    ParameterError,
)
from changescope.series import band_infos, class_table, make_series, reflectance, validate_series

T = Affine(10, 0, 500000, 0, -10, 5000000)


def _img(n=3, b=2, h=5, w=6):
    return np.arange(n * b * h * w, dtype=np.uint16).reshape(n, b, h, w)


def test_make_series_sorts_dates_and_keeps_metadata():
    img = _img()
    valid = np.ones((3, 5, 6), bool)
    valid[2, 0, 0] = False
    ds = make_series(
        img,
        times=["2020-03-01", "2020-01-01", "2020-02-01"],
        bands=["red", "nir"],
        crs="EPSG:32633",
        transform=T,
        valid=valid,
    )
    assert list(pd.DatetimeIndex(ds.time.values).month) == [1, 2, 3]
    # the image of 2020-01-01 was the second input
    assert np.array_equal(ds.image.isel(time=0).values, img[1])
    # the invalid pixel of the third input (2020-02-01) moved with its date
    assert not ds.valid.values[1, 0, 0]
    assert ds.valid.values[0, 0, 0] and ds.valid.values[2, 0, 0]
    assert ds.rio.crs.to_epsg() == 32633
    assert ds.rio.transform() == T
    assert ds.x.values[0] == pytest.approx(500005) and ds.y.values[0] == pytest.approx(4999995)
    infos = band_infos(ds)
    assert [b.name for b in infos] == ["red", "nir"]
    assert infos[0].wavelength == pytest.approx(0.665)
    validate_series(ds)


def test_reflectance_scales_and_masks():
    img = np.full((1, 1, 2, 2), 5000, np.uint16)
    valid = np.array([[[True, False], [True, True]]])
    ds = make_series(
        img, times=["2020-01-01"], bands=["red"], crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 0), valid=valid
    )
    ds = ds.assign_coords(scale=("band", [1e-4]))
    r = reflectance(ds).values
    assert r[0, 0, 0, 0] == pytest.approx(0.5)
    assert np.isnan(r[0, 0, 0, 1])


def test_labels_and_class_table():
    lab = np.zeros((3, 5, 6), np.int16)
    ds = make_series(
        _img(),
        times=pd.date_range("2020", periods=3, freq="MS"),
        bands=["a", "b"],
        crs="EPSG:32633",
        transform=T,
        labels=lab,
        classes={0: "water", 1: "forest"},
    )
    assert class_table(ds) == {0: "water", 1: "forest"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"times": ["2020-01-01", "2020-01-01", "2020-02-01"]}, DuplicateDateError, "2020-01-01"),
        ({"times": ["2020-01-01"]}, ParameterError, "1 times for 3 images"),
        ({"times": ["bogus", "x", "y"]}, ParameterError, "not dates"),
        ({"bands": ["a"]}, BandMismatchError, "1 band names for 2 bands"),
        ({"valid": np.ones((3, 4, 6), bool)}, GridMismatchError, "valid has shape"),
        ({"labels": np.ones((3, 4, 6), np.int16)}, GridMismatchError, "labels must be on the image grid"),
        ({"transform": Affine(10, 0.5, 0, 0, -10, 0)}, ParameterError, "rotated"),
    ],
)
def test_make_series_errors(kwargs, error, match):
    args = {
        "times": ["2020-01-01", "2020-02-01", "2020-03-01"],
        "bands": ["a", "b"],
        "crs": "EPSG:32633",
        "transform": T,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        make_series(_img(), **args)


def test_empty_series():
    with pytest.raises(EmptySeriesError):
        make_series(np.zeros((0, 1, 2, 2)), times=[], bands=["a"], crs="EPSG:4326", transform=T)


def test_validate_series_rejects_broken_datasets(tiny_series):
    with pytest.raises(ParameterError, match="'valid'"):
        validate_series(tiny_series.drop_vars("valid"))
    with pytest.raises(ParameterError, match="not sorted"):
        validate_series(tiny_series.isel(time=[1, 0, 2, 3]))
    with pytest.raises(GridMismatchError, match="no CRS"):
        validate_series(tiny_series.drop_vars("spatial_ref"))


@pytest.mark.parametrize("dtype", ["uint16", "float64"])
def test_reflectance_values_of_read_arrays_equal_the_lazy_reflectance(dtype: str) -> None:
    from changescope.series import reflectance, reflectance_values
    from changescope.testing import make_test_series

    ds = make_test_series(6, n_time=2, height=24, width=20, cloud_fraction=0.3)
    raw = (ds["image"] * 1000 + 7.3).astype(dtype)
    ds = ds.assign(image=raw).assign_coords(
        scale=("band", [1e-4, 2e-4, 1e-4, 3e-4]), offset=("band", [-0.1, 0, 0.05, 0])
    )
    want = reflectance(ds).values
    got = reflectance_values(ds["image"].values, ds["valid"].values, ds["scale"].values, ds["offset"].values)
    assert got.dtype == np.float32 and not (~ds["valid"].values).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got, want, equal_nan=True)
    one = reflectance_values(ds["image"].values[1], ds["valid"].values[1], ds["scale"].values, ds["offset"].values)
    assert np.array_equal(one, want[1], equal_nan=True)
