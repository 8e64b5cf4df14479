from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import rasterio

import changescope
from changescope.errors import (
    BandMismatchError,
    CorruptFileError,
    EmptySeriesError,
    MissingDependencyError,
    UnknownFormatError,
)
from changescope.io.registry import detect_format, get_reader
from changescope.io.stac import SCL_INVALID, open_stac, read_item_collection, search_stac
from changescope.testing import TEST_CRS, utm_transform
from changescope.testing.stac import DEFAULT_STAC_DATES, write_stac_collection

pytest.importorskip("odc.stac")
pytest.importorskip("pystac")

pytestmark = pytest.mark.filterwarnings("ignore:The .shapely.ops.transform:DeprecationWarning")

BANDS = ["B02", "B03", "B04"]


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    return write_stac_collection(tmp_path / "stac", seed=7)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def files(json_path: Path, day: str, asset: str) -> Path:
    return json_path.parent / f"{day}_{asset}.tif"


def test_detect_format_file_and_folder(collection: Path) -> None:
    assert detect_format(collection) == "stac"
    assert detect_format(collection.parent) == "stac"


def test_can_open_rejects_plain_geojson_and_ambiguous_folders(tmp_path: Path, collection: Path) -> None:
    reader = get_reader("stac")
    geojson = tmp_path / "plain.json"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature"}]}))
    assert not reader.can_open(geojson)
    assert not reader.can_open(tmp_path / "missing.json")
    (collection.parent / "copy.json").write_text(collection.read_text())
    assert not reader.can_open(collection.parent)


def test_open_dates_bands_values_crs(collection: Path) -> None:
    ds = changescope.open(collection)
    assert ds.attrs["format"] == "stac"
    assert ds.attrs["sensor"] == "stac"
    assert [str(t)[:19] for t in ds["time"].values] == list(DEFAULT_STAC_DATES)
    assert list(ds["band"].values) == BANDS
    np.testing.assert_allclose(ds["scale"].values, 1e-4)
    np.testing.assert_allclose(ds["wavelength"].values, [0.49, 0.56, 0.665])
    assert ds["image"].dtype == np.uint16
    assert ds.rio.crs.to_string() == TEST_CRS
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(utm_transform())[:6])
    assert ds.sizes == {"time": 3, "band": 3, "y": 32, "x": 32}
    for i, when in enumerate(DEFAULT_STAC_DATES):
        day = when[:10]
        for b, band in enumerate(BANDS):
            np.testing.assert_array_equal(ds["image"].isel(time=i, band=b).values, read(files(collection, day, band)))


def test_valid_from_scl_and_nodata(collection: Path) -> None:
    ds = changescope.open(collection)
    for i, when in enumerate(DEFAULT_STAC_DATES):
        day = when[:10]
        scl = read(files(collection, day, "SCL"))
        nodata = np.any([read(files(collection, day, b)) == 0 for b in BANDS], axis=0)
        expected = ~np.isin(scl, [0, 1, 3, 8, 9, 10]) & ~nodata
        assert nodata.any()
        np.testing.assert_array_equal(ds["valid"].isel(time=i).values, expected)
    assert ds.attrs["mask_asset"] == "SCL"
    assert frozenset({0, 1, 3, 8, 9, 10}) == SCL_INVALID


def test_invalid_values_and_no_mask(collection: Path) -> None:
    day = DEFAULT_STAC_DATES[0][:10]
    scl = read(files(collection, day, "SCL"))
    nodata = np.any([read(files(collection, day, b)) == 0 for b in BANDS], axis=0)
    ds = changescope.open(collection, invalid_values=[9])
    np.testing.assert_array_equal(ds["valid"].isel(time=0).values, (scl != 9) & ~nodata)
    ds = changescope.open(collection, mask_asset=None)
    np.testing.assert_array_equal(ds["valid"].isel(time=0).values, ~nodata)
    assert ds.attrs["mask_asset"] == ""


def test_other_mask_asset_nonzero_is_invalid(tmp_path: Path) -> None:
    path = write_stac_collection(tmp_path / "clm", mask_asset="CLM", dates=DEFAULT_STAC_DATES[:1])
    ds = changescope.open(path, mask_asset="CLM")
    day = DEFAULT_STAC_DATES[0][:10]
    clm = read(files(path, day, "CLM"))
    nodata = np.any([read(files(path, day, b)) == 0 for b in BANDS], axis=0)
    np.testing.assert_array_equal(ds["valid"].isel(time=0).values, (clm == 0) & ~nodata)
    # the default mask asset (SCL) is absent here: loaded without a mask, CLM is then an image band
    ds = changescope.open(path)
    assert list(ds["band"].values) == [*BANDS, "CLM"]


def test_bands_selection_and_laziness(collection: Path) -> None:
    ds = changescope.open(collection, bands=["B04", "B02"], chunks={"x": 16, "y": 16})
    assert list(ds["band"].values) == ["B04", "B02"]
    assert isinstance(ds["image"].data, da.Array)
    assert isinstance(ds["valid"].data, da.Array)
    assert ds["image"].data.chunksize == (1, 2, 16, 16)


def test_relative_hrefs_resolved_against_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_stac_collection(tmp_path / "rel", relative_hrefs=True, seed=1)
    assert json.loads(path.read_text())["features"][0]["assets"]["B02"]["href"].endswith(".tif")
    monkeypatch.chdir(tmp_path)
    ds = changescope.open(path.parent)
    day = DEFAULT_STAC_DATES[1][:10]
    np.testing.assert_array_equal(ds["image"].isel(time=1, band=0).values, read(files(path, day, "B02")))


def test_open_stac_from_python_items(collection: Path) -> None:
    items = read_item_collection(collection)
    ds = open_stac(items[:2], bands=["B03"])
    assert ds.sizes["time"] == 2
    dicts = [it.to_dict() for it in items]
    ds2 = open_stac(dicts, bands=["B03"])
    np.testing.assert_array_equal(ds2["image"].values[:2], ds["image"].values)


def test_missing_asset_names_it_and_lists_available(collection: Path) -> None:
    with pytest.raises(BandMismatchError, match=r"'B08'.*available assets: \['B02', 'B03', 'B04', 'SCL'\]"):
        changescope.open(collection, bands=["B02", "B08"])
    with pytest.raises(BandMismatchError, match=r"mask_asset='Fmask'.*'SCL'"):
        changescope.open(collection, mask_asset="Fmask")


def test_empty_collection(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "stac_version": "1.1.0", "features": []}))
    assert detect_format(path) == "stac"
    with pytest.raises(EmptySeriesError, match="empty.json"):
        changescope.open(path)
    with pytest.raises(EmptySeriesError):
        open_stac([])


def test_malformed_json(tmp_path: Path, collection: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(collection.read_text()[:-200])
    with pytest.raises(CorruptFileError, match=r"broken\.json.*not readable JSON"):
        changescope.open(broken)
    not_stac = tmp_path / "list.json"
    not_stac.write_text("[1, 2]")
    with pytest.raises(CorruptFileError, match="not a STAC ItemCollection"):
        changescope.open(not_stac, format="stac")
    with pytest.raises(UnknownFormatError):
        changescope.open(not_stac)
    bad_item = tmp_path / "bad_item.json"
    bad_item.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "id": 1}]}))
    with pytest.raises(CorruptFileError, match="feature 0"):
        changescope.open(bad_item, format="stac")


def test_missing_dependency(collection: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "odc.stac", None)
    with pytest.raises(MissingDependencyError, match=r"pip install changescope\[stac\]"):
        changescope.open(collection)


def test_search_stac_uses_pystac_client(collection: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pystac_client

    items = read_item_collection(collection)
    calls: dict[str, Any] = {}

    class FakeSearch:
        def items(self) -> list[Any]:
            return items

    class FakeClient:
        def search(self, **kwargs: Any) -> FakeSearch:
            calls.update(kwargs)
            return FakeSearch()

    def fake_open(url: str, modifier: Any = None) -> FakeClient:
        calls["url"] = url
        return FakeClient()

    monkeypatch.setattr(pystac_client.Client, "open", staticmethod(fake_open))
    ds = search_stac("https://stac.example/v1", collections="sentinel-2-l2a", datetime="2021", bands=["B02"])
    assert calls["url"] == "https://stac.example/v1"
    assert calls["collections"] == ["sentinel-2-l2a"]
    assert ds.sizes["time"] == 3
    assert ds.attrs["source"] == "https://stac.example/v1"
    items.clear()
    with pytest.raises(EmptySeriesError, match="found no item"):
        search_stac("https://stac.example/v1", collections=["x"])
