"""The OSCD reader: the six real cities and seeded tiny OSCD-shaped folders."""

import shutil
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

import changescope
from changescope.errors import (
    BandMismatchError,
    CorruptFileError,
    DateError,
    GridMismatchError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.bandfiles import SENTINEL2_TOKENS
from changescope.io.oscd import decode_change_mask, read_dates_txt, read_oscd_change_mask
from changescope.io.registry import detect_format
from changescope.io.writers import write_geotiff
from changescope.testing import shared_sample as sample

CITIES = ("aguasclaras", "bercy", "bordeaux", "nantes", "paris", "rennes")
S2_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def _band_path(city_dir: Path, imgs: str, token: str) -> Path:
    (path,) = sorted((city_dir / imgs).glob(f"*_{token}.tif"))
    return path


def _read_raw(path: Path) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1), src.profile


# ------------------------------------------------------------------------------------------------ real OSCD cities


@pytest.mark.realdata
@pytest.mark.parametrize("city", CITIES)
def test_real_city(shared_data, city):
    city_dir = sample(shared_data, f"oscd/images/{city}")
    assert detect_format(city_dir) == "oscd"
    ds = changescope.open(city_dir)
    assert ds.attrs["format"] == "oscd" and ds.attrs["city"] == city
    assert isinstance(ds.image.data, da.Array)
    lines = dict(line.split(":") for line in (city_dir / "dates.txt").read_text().split("\n") if ":" in line)
    expected = [pd.Timestamp(lines["date_1"].strip()), pd.Timestamp(lines["date_2"].strip())]
    assert list(pd.DatetimeIndex(ds.time.values)) == expected
    assert list(ds.band.values) == S2_ORDER
    assert np.all(np.diff(ds.wavelength.values) > 0)
    np.testing.assert_allclose(ds.scale.values, 1e-4)
    b02, profile = _read_raw(_band_path(city_dir, "imgs_1", "B02"))
    assert (ds.sizes["y"], ds.sizes["x"]) == b02.shape
    assert ds.rio.crs == profile["crs"] and ds.rio.transform() == profile["transform"]
    np.testing.assert_array_equal(ds.image.sel(band="B02").values[0], b02)

    raw, _ = _read_raw(shared_data / "oscd" / "train_labels" / city / "cm" / f"{city}-cm.tif")
    assert set(np.unique(raw)) <= {1, 2}
    change = ds.change.values
    assert change.dtype == np.int8 and change.shape == b02.shape
    assert np.mean(change == 1) == pytest.approx(np.mean(raw == 2))
    assert (change >= 0).all()
    assert ds.attrs["truth"] == "change_mask"
    assert "1 = no change, 2 = change" in ds.change.attrs["source_encoding"]

    # the dataset's rule: a second date on another grid is aligned on the first date's 10 m grid
    b02_2, profile_2 = _read_raw(_band_path(city_dir, "imgs_2", "B02"))
    differs = b02_2.shape != b02.shape or profile_2["transform"] != profile["transform"]
    assert ("aligned_dates" in ds.attrs) == differs
    if not differs:
        np.testing.assert_array_equal(ds.image.sel(band="B02").values[1], b02_2)


@pytest.mark.realdata
def test_real_root_needs_city(shared_data):
    images = sample(shared_data, "oscd/images")
    assert detect_format(images) == "oscd"
    assert detect_format(images.parent) == "oscd"
    with pytest.raises(ParameterError, match=r"'bercy'.*pass --city NAME \(city= in Python\)"):
        changescope.open(images)
    with pytest.raises(ParameterError, match=r"city='atlantis'.*'paris'"):
        changescope.open(images.parent, city="atlantis")
    ds = changescope.open(images.parent, city="paris")
    assert ds.attrs["city"] == "paris" and "change" in ds
    with pytest.raises(ParameterError, match=r"drop --city \(city= in Python\)"):
        changescope.open(images / "bercy", city="paris")


@pytest.mark.realdata
def test_real_city_with_smaller_offset_second_date(shared_data, tmp_path):
    """bercy with imgs_2 cropped (4 rows off the top, 2 columns off the right) is aligned on imgs_1's 10 m grid."""
    src = sample(shared_data, "oscd/images/bercy")
    city = tmp_path / "images" / "bercy"
    shutil.copytree(src, city, ignore=shutil.ignore_patterns("imgs_2", "pair"))
    labels = tmp_path / "train_labels" / "bercy" / "cm"
    labels.mkdir(parents=True)
    shutil.copy(shared_data / "oscd" / "train_labels" / "bercy" / "cm" / "bercy-cm.tif", labels)
    b02, b02_profile = _read_raw(_band_path(src, "imgs_2", "B02"))
    for path in sorted((src / "imgs_2").glob("*.tif")):
        raw, profile = _read_raw(path)
        factor = round(profile["transform"].a / b02_profile["transform"].a)  # 1, 2 or 6 (10, 20, 60 m)
        rows, cols = {1: (4, 2), 2: (2, 1), 6: (1, 1)}[factor]
        transform = profile["transform"] * Affine.translation(0, rows)
        cropped = raw[rows:, : raw.shape[1] - cols]
        write_geotiff(city / "imgs_2" / path.name, cropped, crs=profile["crs"], transform=transform)
    ds = changescope.open(city)
    assert ds.attrs["aligned_dates"] == ["2017-08-29"]
    assert ds.image.shape[-2:] == (395, 360)
    valid = ds.valid.values
    assert valid[0].all()
    # the 60 m bands lost one 60 m row and column: 6 rows and 6 columns at 10 m
    assert not valid[1, :6].any() and not valid[1, :, -6:].any()
    assert (~valid[1, 6:, :-6]).sum() == 4  # the one L1C no-data pixel of B07 (20 m), as in the original
    aligned = ds.image.sel(band="B02").values[1]
    np.testing.assert_array_equal(aligned[4:, :-2], b02[4:, :-2])
    assert "change" in ds


# ------------------------------------------------------------------------------------------------- tiny fixtures

RES = {"B01": 6, "B09": 6, "B10": 6, "B05": 2, "B06": 2, "B07": 2, "B8A": 2, "B11": 2, "B12": 2}
DEG = 1e-4  # one 10 m pixel, in degrees


def _write_date(folder: Path, prefix: str, size: int, seed: int, x_shift: int = 0, skip: str | None = None) -> None:
    for j, token in enumerate(SENTINEL2_TOKENS):
        if token == skip:
            continue
        factor = RES.get(token, 1)
        n = size // factor
        value = np.full((n, n), 1000 + 10 * j + seed, np.uint16)
        transform = Affine(DEG * factor, 0, 2.0 + x_shift * DEG, 0, -DEG * factor, 48.0)
        write_geotiff(folder / f"{prefix}_{token}.tif", value, crs="EPSG:4326", transform=transform)


def _write_mask(path: Path, mask: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        write_geotiff(path, mask, crs=None, transform=Affine.identity())


def _city(
    root: Path,
    name: str = "tinytown",
    *,
    size: int = 12,
    dates: str | None = "date_1: 20200101\ndate_2: 20200601\n",
    x_shift: int = 0,
    mask: np.ndarray | None = None,
    labels_dir: str = "train_labels",
) -> Path:
    city = root / "images" / name
    _write_date(city / "imgs_1", "S2A_OPER_MSI_L1C_TL_SGS__20191231T000000_A000001_T31UDQ", size, 1)
    _write_date(city / "imgs_2", "T31UDQ_20200601T000000", size, 2, x_shift=x_shift)
    if dates is not None:
        (city / "dates.txt").write_text(dates)
    if mask is None:
        mask = np.ones((size, size), np.uint8)
        mask[:3, :4] = 2
    _write_mask(root / labels_dir / name / "cm" / f"{name}-cm.tif", mask)
    return city


def test_tiny_city(tmp_path):
    city = _city(tmp_path)
    assert detect_format(city) == "oscd"
    assert detect_format(tmp_path) == "oscd"
    assert detect_format(tmp_path / "images") == "oscd"
    ds = changescope.open(city)
    assert [str(t)[:10] for t in ds.time.values] == ["2020-01-01", "2020-06-01"]
    assert list(ds.band.values) == S2_ORDER
    assert ds.image.shape == (2, 13, 12, 12)
    assert ds.valid.values.all()
    # each band is constant, so resampling any resolution onto the 10 m grid keeps the value
    for j, token in enumerate(SENTINEL2_TOKENS):
        np.testing.assert_array_equal(ds.image.sel(band=token).values[1], 1000 + 10 * j + 2)
    assert ds.change.values.sum() == 12 and (ds.change.values[:3, :4] == 1).all()
    assert "aligned_dates" not in ds.attrs
    sub = changescope.open(tmp_path, city="tinytown", bands=["B04", "B8A"])
    assert list(sub.band.values) == ["B04", "B8A"] and sub.image.shape[-2:] == (12, 12)


def test_second_date_aligned(tmp_path):
    city = _city(tmp_path, x_shift=2)
    ds = changescope.open(city)
    assert ds.attrs["aligned_dates"] == ["2020-06-01"]
    valid = ds.valid.values
    assert valid[0].all()
    assert not valid[1, :, :2].any() and valid[1, :, 2:].all()
    assert (ds.image.sel(band="B02").values[1, :, 2:] == 1000 + 10 + 2).all()


@pytest.mark.parametrize(
    ("stored", "encoding"),
    [
        ({1: 0, 2: 1}, "1 = no change, 2 = change"),
        ({0: 0, 1: 1}, "0 = no change, 1 = change"),
        ({0: 0, 255: 1}, "0 = no change, 255 = change"),
    ],
)
def test_change_mask_encodings(tmp_path, stored, encoding):
    (no, _), (yes, _) = sorted(stored.items())
    mask = np.full((12, 12), no, np.uint8)
    mask[5:, 5:] = yes
    ds = changescope.open(_city(tmp_path, mask=mask))
    assert encoding in ds.change.attrs["source_encoding"]
    assert (ds.change.values == 1).sum() == 49 and (ds.change.values == 0).sum() == 144 - 49


def test_decode_change_mask_unknown_and_bad_values():
    out, encoding = decode_change_mask(np.array([[0, 1, 2]], np.uint8))
    assert encoding == "1/2" and out.tolist() == [[-1, 0, 1]]
    assert decode_change_mask(np.ones((2, 2), np.uint8))[0].tolist() == [[0, 0], [0, 0]]
    assert decode_change_mask(np.zeros((2, 2), np.uint8))[1] == "0/1"
    with pytest.raises(CorruptFileError, match=r"'cm.tif' holds values \[0, 3\]"):
        decode_change_mask(np.array([0, 3], np.uint8), "cm.tif")


def test_labels_found_and_given(tmp_path):
    city = _city(tmp_path, labels_dir="test_labels")
    assert "change" in changescope.open(city)
    other = tmp_path / "elsewhere.tif"
    _write_mask(other, np.full((12, 12), 2, np.uint8))
    ds = changescope.open(city, labels=other)
    assert (ds.change.values == 1).all() and ds.change.attrs["source_file"] == str(other)
    np.testing.assert_array_equal(read_oscd_change_mask(other), ds.change.values)
    with pytest.raises(NoImagesFoundError, match="labels="):
        changescope.open(city, labels=tmp_path / "missing.tif")
    shutil.rmtree(tmp_path / "test_labels")
    ds = changescope.open(city)
    assert "change" not in ds and "truth" not in ds.attrs


def test_mask_shape_mismatch(tmp_path):
    city = _city(tmp_path, mask=np.ones((10, 12), np.uint8))
    with pytest.raises(GridMismatchError, match=r"\(10, 12\).*\(12, 12\)"):
        changescope.open(city)


def test_dates_txt_errors(tmp_path):
    city = _city(tmp_path / "a", dates=None)
    with pytest.raises(NoImagesFoundError, match=r"dates\.txt.*date_1: YYYYMMDD"):
        changescope.open(city)
    (city / "dates.txt").write_text("date_1: 20200101\ndate_2: someday\n")
    with pytest.raises(DateError, match="'date_2: someday'"):
        changescope.open(city)
    (city / "dates.txt").write_text("date_1: 20200101\n")
    with pytest.raises(DateError, match=r"\['date_2'\]"):
        changescope.open(city)
    (city / "dates.txt").write_text("date_1: 2020-01-01\ndate_2 : 20200601\n")
    assert read_dates_txt(city / "dates.txt") == (pd.Timestamp("2020-01-01"), pd.Timestamp("2020-06-01"))


def test_band_and_file_errors(tmp_path):
    city = _city(tmp_path / "m")
    next((city / "imgs_2").glob("*_B11.tif")).unlink()
    with pytest.raises(BandMismatchError, match=r"imgs_2.*\['B11'\]"):
        changescope.open(city)
    city = _city(tmp_path / "c")
    bad = next((city / "imgs_1").glob("*_B05.tif"))
    bad.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(CorruptFileError, match=bad.name):
        changescope.open(city)
    city = _city(tmp_path / "i")
    shutil.rmtree(city / "imgs_2")
    with pytest.raises(NoImagesFoundError, match="imgs_2"):
        changescope.open(city)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoImagesFoundError, match="no OSCD city"):
        changescope.open(empty, format="oscd")
    with pytest.raises(BandMismatchError, match="'B13'"):
        changescope.open(_city(tmp_path / "b"), bands=["B13"])
