"""Geographic sampling of pretraining locations: Gaussian offsets, weights, land masks, dates, GeoParquet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from geopandas.testing import assert_geodataframe_equal
from pyproj import Geod, Transformer
from scipy import stats

from changescope.errors import CorruptFileError, DateError, ParameterError, UnknownFormatError
from changescope.io.writers import write_geotiff
from changescope.testing import utm_transform
from changescope.train.geosample import (
    LOCATION_COLUMNS,
    DatePlan,
    read_locations,
    sample_locations,
    write_locations,
)

GEOD = Geod(ellps="WGS84")
UTM = "EPSG:32633"
CENTRE = pd.DataFrame({"lon": [15.0], "lat": [45.0], "name": ["centre"]})  # on the central meridian of UTM 33N
TO_UTM = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
CX, CY = TO_UTM.transform(15.0, 45.0)
RES = 500.0
SIDE = 240  # 120 km of 500 m pixels, centred on CENTRE


def _write_mask(path: Path, land: np.ndarray, x0: float, y0: float, nodata: int | None = None) -> Path:
    return write_geotiff(path, land.astype(np.uint8), crs=UTM, transform=utm_transform(RES, x0, y0), nodata=nodata)


@pytest.fixture
def half_water_mask(tmp_path: Path) -> Path:
    """West half water, east half land with seeded lakes, and a nodata strip across the east half."""
    rng = np.random.default_rng(7)
    land = np.zeros((SIDE, SIDE), dtype=np.uint8)
    land[:, SIDE // 2 :] = 1
    lakes = rng.random((SIDE // 8, SIDE // 8)) < 0.15
    land &= ~np.kron(lakes, np.ones((8, 8), dtype=bool))
    land[SIDE // 2 - 10 : SIDE // 2 + 10, SIDE // 2 :] = 255  # nodata: not land
    return _write_mask(tmp_path / "land.tif", land, CX - SIDE * RES / 2, CY + SIDE * RES / 2, nodata=255)


def _sample_mask(path: Path, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Mask values at the points, read independently through rasterio's sampler (off-raster -> nodata)."""
    x, y = TO_UTM.transform(lon, lat)
    with rasterio.open(path) as src:
        return np.array([v[0] for v in src.sample(zip(x, y, strict=True), indexes=1)])


def test_offsets_follow_the_isotropic_gaussian() -> None:
    sigma = 5.0
    gdf = sample_locations(CENTRE, 4000, sigma_km=sigma, seed=3)
    az, _, dist_m = GEOD.inv(np.full(len(gdf), 15.0), np.full(len(gdf), 45.0), gdf["lon"], gdf["lat"])
    dist_km = np.asarray(dist_m) / 1000.0
    np.testing.assert_allclose(gdf["distance_km"], dist_km, rtol=1e-7, atol=1e-6)
    assert np.mean(dist_km**2) == pytest.approx(2 * sigma**2, rel=0.05)
    assert stats.kstest(dist_km / sigma, stats.rayleigh.cdf).pvalue > 0.01
    east, north = dist_km * np.sin(np.radians(az)), dist_km * np.cos(np.radians(az))
    assert abs(east.mean()) < 0.3 and abs(north.mean()) < 0.3  # no drift: 4 standard errors
    assert np.std(east) == pytest.approx(sigma, rel=0.05) and np.std(north) == pytest.approx(sigma, rel=0.05)
    assert (gdf["draws"] == 1).all()


def test_sigma_scales_the_distances() -> None:
    near = sample_locations(CENTRE, 2000, sigma_km=5.0, seed=1)["distance_km"].median()
    far = sample_locations(CENTRE, 2000, sigma_km=50.0, seed=1)["distance_km"].median()
    assert far / near == pytest.approx(10.0, rel=1e-6)  # same seed, same normal draws, scaled


def test_weights_set_how_often_centres_are_chosen() -> None:
    centres = pd.DataFrame({"lon": [0.0, 10.0, 20.0], "lat": [0.0, 10.0, 20.0], "weight": [1.0, 2.0, 7.0]})
    n = 5000
    weighted = sample_locations(centres, n, seed=0)["centre"].value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(weighted.to_numpy(), [0.1, 0.2, 0.7], atol=0.02)
    uniform = sample_locations(centres.drop(columns="weight"), n, seed=0)["centre"].value_counts(normalize=True)
    np.testing.assert_allclose(uniform.sort_index().to_numpy(), [1 / 3] * 3, atol=0.02)


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    a = sample_locations(CENTRE, 200, seed=11)
    b = sample_locations(CENTRE, 200, seed=11)
    assert_geodataframe_equal(a, b)
    c = sample_locations(CENTRE, 200, seed=12)
    assert not np.allclose(a["lon"], c["lon"])
    assert list(a["location_id"][:3]) == ["loc_000000", "loc_000001", "loc_000002"]
    assert list(a.columns) == ["location_id", "centre", "centre_name", *LOCATION_COLUMNS[2:]]
    assert a.crs == "EPSG:4326" and (a["centre_name"] == "centre").all()


def test_land_mask_rejects_water_nodata_and_redraws(half_water_mask: Path) -> None:
    free = sample_locations(CENTRE, 1500, sigma_km=10.0, seed=5)
    wet = _sample_mask(half_water_mask, free["lon"].to_numpy(), free["lat"].to_numpy()) != 1
    assert 0.5 < wet.mean() < 0.8  # the unmasked draws do fall on water and nodata
    gdf = sample_locations(CENTRE, 1500, sigma_km=10.0, land_mask=half_water_mask, seed=5)
    values = _sample_mask(half_water_mask, gdf["lon"].to_numpy(), gdf["lat"].to_numpy())
    assert (values == 1).all()
    assert gdf["draws"].sum() > 2 * len(gdf) and gdf["draws"].max() > 1
    x, _ = TO_UTM.transform(gdf["lon"].to_numpy(), gdf["lat"].to_numpy())
    assert (np.asarray(x) > CX).all()


def test_points_off_the_mask_are_not_land(tmp_path: Path) -> None:
    """A mask that is all land but covers only the east of the centre: every kept point lies east of it."""
    mask = _write_mask(tmp_path / "east.tif", np.ones((SIDE, SIDE // 2)), CX, CY + SIDE * RES / 2)
    gdf = sample_locations(CENTRE, 500, sigma_km=5.0, land_mask=mask, seed=2)
    x, _ = TO_UTM.transform(gdf["lon"].to_numpy(), gdf["lat"].to_numpy())
    assert (np.asarray(x) >= CX).all() and gdf["draws"].max() > 1


def test_all_water_mask_is_a_clear_error(tmp_path: Path) -> None:
    mask = _write_mask(tmp_path / "sea.tif", np.zeros((SIDE, SIDE)), CX - SIDE * RES / 2, CY + SIDE * RES / 2)
    with pytest.raises(ParameterError, match=r"50 of 50 locations could not be placed") as err:
        sample_locations(CENTRE, 50, land_mask=mask, max_tries=5)
    assert "sigma_km" in str(err.value) and "sea.tif" in str(err.value)


def test_bad_land_masks(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="land_mask .*nope.tif.* not found"):
        sample_locations(CENTRE, 5, land_mask=tmp_path / "nope.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    with pytest.raises(CorruptFileError, match="junk.tif"):
        sample_locations(CENTRE, 5, land_mask=junk)
    two = write_geotiff(tmp_path / "two.tif", np.ones((2, 8, 8), np.uint8), crs=UTM, transform=utm_transform())
    with pytest.raises(ParameterError, match="2 bands"):
        sample_locations(CENTRE, 5, land_mask=two)


@pytest.mark.parametrize(
    ("frame", "column"),
    [
        (pd.DataFrame({"lon": [1.0]}), "'lat'"),
        (pd.DataFrame({"lat": [1.0]}), "'lon'"),
        (pd.DataFrame({"lon": [1.0, 2.0], "lat": [10.0, 95.0]}), "'lat'"),
        (pd.DataFrame({"lon": [190.0], "lat": [10.0]}), "'lon'"),
        (pd.DataFrame({"lon": [1.0], "lat": [np.nan]}), "'lat'"),
        (pd.DataFrame({"lon": [1.0, 2.0], "lat": [1.0, 2.0], "weight": [3.0, 0.0]}), "'weight'"),
        (pd.DataFrame({"lon": [1.0], "lat": [1.0], "weight": [-1.0]}), "'weight'"),
    ],
)
def test_bad_centres_name_the_column(frame: pd.DataFrame, column: str) -> None:
    with pytest.raises(ParameterError, match=column):
        sample_locations(frame, 10)


def test_centres_from_files(tmp_path: Path) -> None:
    frame = pd.DataFrame({"lon": [2.35, 13.4], "lat": [48.85, 52.5], "weight": [2.0, 1.0]})
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.to_parquet(tmp_path / "c.parquet")
    from_csv = sample_locations(tmp_path / "c.csv", 100, seed=4)
    assert_geodataframe_equal(from_csv, sample_locations(str(tmp_path / "c.parquet"), 100, seed=4))
    assert_geodataframe_equal(from_csv, sample_locations(frame, 100, seed=4))
    frame.assign(lat=[48.85, -91.0]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ParameterError, match=r"bad\.csv.*'lat'.*row 1"):
        sample_locations(tmp_path / "bad.csv", 10)
    with pytest.raises(ParameterError, match="missing.csv.* not found"):
        sample_locations(tmp_path / "missing.csv", 10)
    with pytest.raises(UnknownFormatError, match=r"\.txt"):
        (tmp_path / "c.txt").write_text("lon,lat\n1,1\n")
        sample_locations(tmp_path / "c.txt", 10)


@pytest.mark.parametrize(
    ("kwargs", "word"), [({"n": 0}, "n=0"), ({"sigma_km": 0.0}, "sigma_km"), ({"max_tries": 0}, "max_tries")]
)
def test_bad_parameters(kwargs: dict[str, float], word: str) -> None:
    args = {"n": 10, **kwargs}
    with pytest.raises(ParameterError, match=word):
        sample_locations(CENTRE, **args)  # type: ignore[arg-type]


def test_default_dates_are_quarterly_in_2018_and_2022() -> None:
    gdf = sample_locations(CENTRE, 3)
    expected = ["2018-01-01", "2018-04-01", "2018-07-01", "2018-10-01"]
    expected += [d.replace("2018", "2022") for d in expected]
    assert all(list(d) == expected for d in gdf["dates"])
    assert list(gdf["half"].iloc[0]) == ["older"] * 4 + ["recent"] * 4


def test_date_plans() -> None:
    plan = DatePlan.yearly(2016, 2023, per_year=2)
    assert [d.isoformat() for d in plan.dates] == ["2016-01-01", "2016-07-01", "2023-01-01", "2023-07-01"]
    split = DatePlan.from_dates(["2022-06-01", "2017-03-01", dt.date(2017, 6, 1), pd.Timestamp("2022-09-01")])
    assert split.older == (dt.date(2017, 3, 1), dt.date(2017, 6, 1))
    assert split.recent == (dt.date(2022, 6, 1), dt.date(2022, 9, 1))
    gdf = sample_locations(CENTRE, 2, dates=["2019-05-01", "2019-08-01", "2024-05-01"])
    assert list(gdf["dates"].iloc[1]) == ["2019-05-01", "2019-08-01", "2024-05-01"]
    assert list(gdf["half"].iloc[1]) == ["older", "older", "recent"]
    with pytest.raises(ParameterError, match="per_year=5"):
        DatePlan.yearly(per_year=5)
    with pytest.raises(ParameterError, match="older_year=2022"):
        DatePlan.yearly(2022, 2018)
    with pytest.raises(DateError, match="'2019-13-01'"):
        DatePlan.from_dates(["2019-13-01", "2020-01-01"])
    with pytest.raises(ParameterError, match="twice"):
        DatePlan.from_dates(["2019-01-01", "2019-01-01", "2020-01-01"])
    with pytest.raises(ParameterError, match="at least two"):
        DatePlan.from_dates(["2019-01-01"])
    with pytest.raises(ParameterError, match="precede"):
        DatePlan(older=(dt.date(2020, 1, 1),), recent=(dt.date(2019, 1, 1),))


def test_geoparquet_round_trip_keeps_crs_and_dates(tmp_path: Path) -> None:
    gdf = sample_locations(CENTRE, 25, dates=DatePlan.yearly(2017, 2021, per_year=3), seed=9)
    path = write_locations(gdf, tmp_path / "sub" / "locations.parquet")
    assert sorted(p.name for p in path.parent.iterdir()) == ["locations.parquet"]  # no temporary left behind
    back = read_locations(path)
    assert back.crs == "EPSG:4326"
    assert_geodataframe_equal(back, gdf)
    assert isinstance(back["dates"].iloc[0], list) and back["dates"].iloc[0][0] == "2017-01-01"
    with pytest.raises(ParameterError, match="GeoDataFrame"):
        write_locations(pd.DataFrame(gdf.drop(columns="geometry")), tmp_path / "x.parquet")  # type: ignore[arg-type]
    gpd.GeoDataFrame(gdf[["location_id", "geometry"]]).to_parquet(tmp_path / "thin.parquet")
    with pytest.raises(CorruptFileError, match="lacks the columns"):
        read_locations(tmp_path / "thin.parquet")
    with pytest.raises(ParameterError, match="not found"):
        read_locations(tmp_path / "absent.parquet")
