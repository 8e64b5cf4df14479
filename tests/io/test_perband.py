"""The per-band reader: the real CBERS-4 AWFI cube and seeded tiny per-band folders."""

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio

import changescope
from changescope.errors import (
    BandMismatchError,
    CorruptFileError,
    CRSMismatchError,
    DateError,
    DuplicateDateError,
    GridMismatchError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.bandfiles import MASK_RULES
from changescope.io.perband import parse_band_file
from changescope.io.registry import detect_format
from changescope.io.writers import write_geotiff, write_series_folder
from changescope.testing import TEST_CRS, make_test_series, utm_transform
from changescope.testing import shared_sample as sample

CBERS = "cbers4_awfi_sits"
CBERS_FILE = "CBERS-4_AWFI_{}_{}.tif"


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), src.profile


# --------------------------------------------------------------------------------------------------- real CBERS cube


@pytest.mark.realdata
def test_cbers_cube_opens(shared_data):
    folder = sample(shared_data, CBERS)
    assert detect_format(folder) == "perband"
    ds = changescope.open(folder)
    assert ds.attrs["format"] == "perband"
    assert ds.attrs["sensor"] == "CBERS-4 AWFI"
    assert isinstance(ds.image.data, da.Array) and isinstance(ds.valid.data, da.Array)
    times = pd.DatetimeIndex(ds.time.values)
    assert len(times) == 24
    assert times[0] == pd.Timestamp("2017-08-29") and times[-1] == pd.Timestamp("2018-08-29")
    assert list(ds.band.values) == ["blue", "green", "red", "nir"]
    assert ds.attrs["band_tokens"] == ["B13", "B14", "B15", "B16"]
    assert np.all(np.diff(ds.wavelength.values) > 0)
    np.testing.assert_allclose(ds.scale.values, 1e-4)
    assert ds.image.dtype == np.int16
    assert ds.sizes["y"] == 50 and ds.sizes["x"] == 50
    raw, profile = _read(folder / CBERS_FILE.format("B15", "2018-05-09"))
    assert ds.rio.crs.to_epsg() == 10857
    assert ds.rio.crs == profile["crs"]
    assert ds.rio.transform() == profile["transform"]
    np.testing.assert_array_equal(ds.image.sel(band="red", time="2018-05-09").values, raw)
    # stored values are reflectance * 1e4: the 99th percentile of nir is a plausible reflectance
    nir = changescope.series.reflectance(ds).sel(band="nir").values
    assert 0.2 < np.nanpercentile(nir, 99) < 0.8


@pytest.mark.realdata
def test_cbers_cloud_mask_in_valid(shared_data):
    folder = sample(shared_data, CBERS)
    ds = changescope.open(folder)
    valid = ds.valid.values
    cloudy = []
    for i, t in enumerate(pd.DatetimeIndex(ds.time.values)):
        cmask, _ = _read(folder / CBERS_FILE.format("CMASK", t.date().isoformat()))
        np.testing.assert_array_equal(valid[i], ~np.isin(cmask, [2, 3, 4, 255]))
        if (cmask == 4).any():
            cloudy.append(t)
    # 2017-11-17 is the date with a cloud (452 pixels of value 4); its pixels are bright in every band
    day = pd.Timestamp("2017-11-17")
    assert day in cloudy
    cmask, _ = _read(folder / CBERS_FILE.format("CMASK", "2017-11-17"))
    invalid = ~ds.valid.sel(time=day).values
    np.testing.assert_array_equal(invalid, cmask == 4)
    assert invalid.sum() == 452
    blue = ds.image.sel(time=day, band="blue").values
    assert blue[invalid].mean() > 2 * blue[~invalid].mean()
    assert any(d.startswith("CMASK") for d in ds.attrs["masks"])


@pytest.mark.realdata
def test_cbers_nodata_and_band_selection(shared_data, tmp_path):
    folder = sample(shared_data, CBERS)
    for day in ("2018-05-09", "2018-05-25"):
        for token in ("B13", "B14", "B15", "B16", "CMASK"):
            raw, profile = _read(folder / CBERS_FILE.format(token, day))
            if day == "2018-05-25" and token in ("B14", "B16"):
                raw[3, 7 if token == "B16" else 8] = -9999
            write_geotiff(
                tmp_path / CBERS_FILE.format(token, day),
                raw,
                crs=profile["crs"],
                transform=profile["transform"],
                nodata=profile["nodata"],
            )
    ds = changescope.open(tmp_path, bands=["nir", "B15"])
    assert list(ds.band.values) == ["nir", "red"]
    valid = ds.valid.values
    assert not valid[1, 3, 7]  # nir nodata
    assert valid[1, 3, 8]  # green nodata: green is not selected, so not read
    assert valid.sum() == 2 * 50 * 50 - 1
    full = changescope.open(tmp_path)
    assert not full.valid.values[1, 3, 7] and not full.valid.values[1, 3, 8]
    assert full.valid.values.sum() == 2 * 50 * 50 - 2


# ------------------------------------------------------------------------------------------------- tiny fixtures


def _band(seed: int, shape: tuple[int, int] = (8, 8), value: int | None = None) -> np.ndarray:
    if value is not None:
        return np.full(shape, value, np.int16)
    return np.random.default_rng(seed).integers(100, 4000, size=shape).astype(np.int16)


def _cube(
    folder: Path,
    dates=("2020-01-01", "2020-02-01"),
    tokens=("B02", "B03"),
    prefix="S",
    *,
    crs=TEST_CRS,
    transform=None,
    nodata=-9999,
) -> Path:
    for i, day in enumerate(dates):
        for j, token in enumerate(tokens):
            write_geotiff(
                folder / f"{prefix}_{token}_{day}.tif",
                _band(10 * i + j),
                crs=crs,
                transform=transform or utm_transform(),
                nodata=nodata,
            )
    return folder


def test_parse_band_file():
    f = parse_band_file(Path("CBERS-4_AWFI_B13_2018-05-09.tif"))
    assert (f.prefix, f.token, f.time) == ("CBERS-4_AWFI", "B13", pd.Timestamp("2018-05-09"))
    f = parse_band_file(Path("B02_20180718.tif"))
    assert (f.prefix, f.token, f.time) == ("", "B02", pd.Timestamp("2018-07-18"))
    assert parse_band_file(Path("2021-03-01.tif")) is None
    assert parse_band_file(Path("T31UDQ_20171107T105229_B02.tif")) is None
    with pytest.raises(DateError, match="2018-02-30"):
        parse_band_file(Path("S_B02_2018-02-30.tif"))


def test_tiny_cube_values_and_detection(tmp_path):
    folder = _cube(tmp_path / "c", tokens=("B8A", "B02", "B11", "B04"), prefix="S2B_T33")
    assert detect_format(folder) == "perband"
    ds = changescope.open(folder)
    assert ds.attrs["sensor"] == "Sentinel-2"
    assert list(ds.band.values) == ["B02", "B04", "B8A", "B11"]
    np.testing.assert_allclose(ds.scale.values, 1e-4)
    np.testing.assert_array_equal(ds.image.sel(band="B8A", time="2020-02-01").values, _band(10))
    assert ds.valid.values.all()
    assert ds.rio.crs == TEST_CRS and ds.rio.transform() == utm_transform()


def test_unknown_tokens_keep_names_in_natural_order(tmp_path):
    folder = _cube(tmp_path, tokens=("b10", "b2", "red", "foo"), prefix="site")
    ds = changescope.open(folder)
    assert list(ds.band.values) == ["red", "b2", "b10", "foo"]
    assert ds.attrs["sensor"] == "site"
    np.testing.assert_allclose(ds.scale.values, 1.0)
    assert np.isnan(ds.wavelength.values[1:]).all()


def test_band_selection_errors(tmp_path):
    folder = _cube(tmp_path)
    with pytest.raises(BandMismatchError, match=r"'nir'.*B02"):
        changescope.open(folder, bands=["nir"])
    with pytest.raises(ParameterError, match="list of band names"):
        changescope.open(folder, bands="B02")
    assert list(changescope.open(folder, bands=["b03"]).band.values) == ["B03"]


def test_missing_band(tmp_path):
    folder = _cube(tmp_path, dates=("2020-01-01", "2020-02-01", "2020-03-01"))
    (folder / "S_B03_2020-02-01.tif").unlink()
    with pytest.raises(BandMismatchError, match=r"2020-02-01 misses \['B03'\].*drop_incomplete=True"):
        changescope.open(folder)
    ds = changescope.open(folder, drop_incomplete=True)
    assert [str(t)[:10] for t in ds.time.values] == ["2020-01-01", "2020-03-01"]
    assert ds.attrs["dropped_dates"] == ["2020-02-01"]
    assert changescope.open(folder, bands=["B02"]).sizes["time"] == 3


def test_unparseable_dates(tmp_path):
    folder = _cube(tmp_path / "bad")
    write_geotiff(folder / "S_B02_2020-02-30.tif", _band(0), crs=TEST_CRS, transform=utm_transform())
    with pytest.raises(DateError, match=r"S_B02_2020-02-30\.tif.*not a valid date"):
        changescope.open(folder)
    other = _cube(tmp_path / "nodate")
    write_geotiff(other / "S_B02_latest.tif", _band(0), crs=TEST_CRS, transform=utm_transform())
    with pytest.raises(DateError, match=r"S_B02_latest\.tif"):
        changescope.open(other, format="perband")


def test_mixed_crs(tmp_path):
    folder = _cube(tmp_path, dates=("2020-01-01",))
    for j, token in enumerate(("B02", "B03")):
        # the same place in UTM 32N
        write_geotiff(
            folder / f"S_{token}_2020-02-01.tif",
            _band(j),
            crs="EPSG:32632",
            transform=utm_transform(x0=889_000.0, y0=5_012_000.0),
        )
    with pytest.raises(CRSMismatchError, match=r"S_B02_2020-02-01\.tif.*reproject=True"):
        changescope.open(folder)
    ds = changescope.open(folder, reproject=True)
    assert ds.rio.crs == TEST_CRS and ds.rio.transform() == utm_transform()
    assert isinstance(ds.image.data, da.Array)
    assert ds.image.shape == (2, 2, 8, 8)


@pytest.mark.parametrize("nodata", [-9999, None])
def test_grid_mismatch_and_align(tmp_path, nodata):
    folder = _cube(tmp_path, dates=("2020-01-01",), nodata=nodata)
    shifted = utm_transform(x0=500_020.0, y0=5_000_000.0)  # two pixels east
    for j, token in enumerate(("B02", "B03")):
        write_geotiff(folder / f"S_{token}_2020-02-01.tif", _band(j), crs=TEST_CRS, transform=shifted, nodata=nodata)
    with pytest.raises(GridMismatchError, match="align=True"):
        changescope.open(folder)
    ds = changescope.open(folder, align=True)
    valid = ds.valid.values[1]
    assert not valid[:, :2].any() and valid[:, 2:].all()
    np.testing.assert_array_equal(ds.image.values[1, 0, :, 2:], _band(0)[:, :6])


def test_resolutions_and_masks(tmp_path):
    t10, t20 = utm_transform(10.0), utm_transform(20.0)
    write_geotiff(tmp_path / "S_B02_2020-01-01.tif", _band(0, value=300), crs=TEST_CRS, transform=t10, nodata=0)
    b11 = _band(0, (4, 4), value=500)
    b11[3, 3] = 0
    write_geotiff(tmp_path / "S_B11_2020-01-01.tif", b11, crs=TEST_CRS, transform=t20, nodata=0)
    scl = np.full((4, 4), 4, np.uint8)
    scl[0, 0] = 9  # cloud high probability
    write_geotiff(tmp_path / "S_SCL_2020-01-01.tif", scl, crs=TEST_CRS, transform=t20)
    ds = changescope.open(tmp_path, format="perband")
    assert list(ds.band.values) == ["B02", "B11"]
    assert ds.image.shape == (1, 2, 8, 8) and ds.rio.transform() == t10
    b11_out = ds.image.values[0, 1]
    assert (b11_out[:6, :6] == 500).all()
    expected = np.zeros((8, 8), bool)
    expected[:2, :2] = True  # the 20 m cloud pixel
    expected[6:, 6:] = True  # the 20 m nodata pixel
    np.testing.assert_array_equal(~ds.valid.values[0], expected)
    assert any(m.startswith("SCL") for m in ds.attrs["masks"])
    # a user rule replaces the built-in one
    relaxed = changescope.open(tmp_path, format="perband", mask_values=[255])
    assert relaxed.valid.values[0, :2, :2].all()


def test_mask_rules():
    qa = np.array([0, 1 << 3, 1 << 4, 1 << 6, 1 << 1], dtype=np.uint16)
    np.testing.assert_array_equal(MASK_RULES["QA"].invalid(qa), [False, True, True, False, True])
    cmask = np.array([0, 1, 2, 3, 4, 255], dtype=np.uint8)
    np.testing.assert_array_equal(MASK_RULES["CMASK"].invalid(cmask), [False, False, True, True, True, True])
    np.testing.assert_array_equal(MASK_RULES["MASK"].invalid(np.array([0, 3])), [False, True])


def test_prefixes_and_duplicates(tmp_path):
    folder = _cube(tmp_path / "p", prefix="A")
    _cube(folder, prefix="B", dates=("2020-03-01",))
    with pytest.raises(ParameterError, match=r"\['A', 'B'\].*prefix="):
        changescope.open(folder)
    assert changescope.open(folder, prefix="B").sizes["time"] == 1
    with pytest.raises(ParameterError, match="prefix='C'"):
        changescope.open(folder, prefix="C")
    dup = _cube(tmp_path / "d")
    write_geotiff(dup / "S_B02_20200101.tif", _band(0), crs=TEST_CRS, transform=utm_transform())
    with pytest.raises(DuplicateDateError, match="S_B02_20200101.tif"):
        changescope.open(dup)


def test_corrupt_multiband_and_empty(tmp_path):
    folder = _cube(tmp_path / "c")
    bad = folder / "S_B03_2020-02-01.tif"
    bad.write_bytes(b"this is not a tiff" * 10)
    with pytest.raises(CorruptFileError, match=r"S_B03_2020-02-01\.tif"):
        changescope.open(folder)
    multi = _cube(tmp_path / "m")
    write_geotiff(
        multi / "S_B03_2020-02-01.tif", np.zeros((2, 8, 8), np.int16), crs=TEST_CRS, transform=utm_transform()
    )
    with pytest.raises(BandMismatchError, match="holds 2 bands"):
        changescope.open(multi)
    empty = tmp_path / "e"
    empty.mkdir()
    with pytest.raises(NoImagesFoundError, match="no GeoTIFF"):
        changescope.open(empty, format="perband")
    with pytest.raises(NoImagesFoundError, match="not a folder"):
        changescope.open(folder / "S_B02_2020-01-01.tif", format="perband")


def test_open_is_lazy(tmp_path):
    folder = _cube(tmp_path)
    ds = changescope.open(folder)
    (folder / "S_B03_2020-02-01.tif").unlink()  # pixels are read only when computing
    np.testing.assert_array_equal(ds.image.isel(time=0, band=0).values, _band(0))
    with pytest.raises(NoImagesFoundError, match=r"S_B03_2020-02-01\.tif"):
        ds.image.values  # noqa: B018


def test_other_layouts_are_not_perband(tmp_path):
    write_series_folder(make_test_series(seed=0, n_time=2), tmp_path / "dated")
    assert detect_format(tmp_path / "dated") == "geotiff_folder"
    single = tmp_path / "single"
    for day in ("2020-01-01", "2020-02-01"):
        write_geotiff(single / f"scene_{day}.tif", _band(0), crs=TEST_CRS, transform=utm_transform())
    assert detect_format(single) == "geotiff_folder"


@pytest.mark.realdata
def test_truncated_real_band_file_is_named_at_open_and_when_read_later(shared_data, tmp_path):
    import shutil

    folder = tmp_path / "cbers"
    shutil.copytree(sample(shared_data, CBERS), folder)
    victim = folder / CBERS_FILE.format("B15", "2018-05-09")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"B15_2018-05-09\.tif' is truncated") as err:
        changescope.open(folder)
    assert "\n" not in str(err.value)
    # complete at open, cut short before the pixels are read (the lazy path)
    victim.write_bytes(data)
    ds = changescope.open(folder)
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"B15_2018-05-09\.tif' could not be read") as err:
        ds.image.load()
    assert "\n" not in str(err.value)


def test_mask_on_a_coarser_grid_of_the_same_extent_is_accepted(tmp_path):
    write_geotiff(tmp_path / "S_B02_2020-01-01.tif", _band(0), crs=TEST_CRS, transform=utm_transform(10.0))
    write_geotiff(tmp_path / "S_B03_2020-01-01.tif", _band(1), crs=TEST_CRS, transform=utm_transform(10.0))
    cmask = np.zeros((2, 2), np.uint8)
    cmask[1, 1] = 4
    write_geotiff(tmp_path / "S_CMASK_2020-01-01.tif", cmask, crs=TEST_CRS, transform=utm_transform(40.0))
    ds = changescope.open(tmp_path)
    expected = np.zeros((8, 8), bool)
    expected[4:, 4:] = True
    np.testing.assert_array_equal(~ds.valid.values[0], expected)
