"""The whole-tile synthetic Sentinel-2 generator (``write_s2_tile``, ``changescope synth --bands``)."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize
from scipy.ndimage import binary_dilation
from typer.testing import CliRunner

import changescope
from changescope.cli.app import app
from changescope.errors import ParameterError
from changescope.synthetic import TileInfo, TileParams, write_s2_tile
from changescope.synthetic.tile_events import place_events
from changescope.synthetic.tile_scene import TileScene

SIZE = 600
MONTHS = 4
SEED = 5
# native grids of the Sentinel-2 L2A bands (ESA product specification), written out independently of the package
NATIVE_M = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10}
NATIVE_M |= {"B8A": 20, "B09": 60, "B11": 20, "B12": 20, "SCL": 20}
SCL_INVALID = (0, 1, 3, 8, 9, 10)

runner = CliRunner()


@pytest.fixture(scope="module")
def tile(tmp_path_factory: pytest.TempPathFactory) -> TileInfo:
    """A 600 px (6 km), 4-month tile of all 12 L2A bands, written in 256 px blocks."""
    return write_s2_tile(tmp_path_factory.mktemp("tile") / "t", seed=SEED, size=SIZE, months=MONTHS, block=256)


@pytest.fixture(scope="module")
def scene(tile: TileInfo) -> TileScene:
    return TileScene(tile.params, place_events(tile.params))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_every_band_and_date_is_on_its_native_grid(tile: TileInfo) -> None:
    origin = None
    for date in tile.dates:
        for token, res in NATIVE_M.items():
            with rasterio.open(tile.band_path(token, date)) as src:
                assert src.crs.to_epsg() == 32633
                assert (src.width, src.height) == (SIZE * 10 // res,) * 2
                t = src.transform
                assert (t.a, t.b, t.d, t.e) == (res, 0, 0, -res)
                origin = origin or (t.c, t.f)
                assert (t.c, t.f) == origin
                assert src.bounds == (origin[0], origin[1] - SIZE * 10, origin[0] + SIZE * 10, origin[1])
                assert src.count == 1
                assert src.dtypes[0] == ("uint8" if token == "SCL" else "uint16")
                assert src.nodata == 0
    names = {p.name for p in tile.root.glob("*.tif")}
    assert len(names) == MONTHS * len(NATIVE_M)
    assert not list(tile.root.glob("*B10*"))


def test_files_are_compressed_cogs_with_overviews(tile: TileInfo) -> None:
    for path in sorted(tile.root.rglob("*.tif")):
        with rasterio.open(path) as src:
            structure = src.tags(ns="IMAGE_STRUCTURE")
            assert structure["COMPRESSION"] == "ZSTD", path.name
            assert structure.get("LAYOUT") == "COG", path.name
            categorical = "SCL" in path.name or path.name == "change_month.tif"
            assert structure.get("PREDICTOR") == (None if categorical else "2"), path.name
            assert src.profile["tiled"] and src.block_shapes == [(512, 512)]
            if src.width > 512:
                assert src.overviews(1) == [2], path.name
        head = path.read_bytes()[:400]
        assert b"LAYOUT=IFDS_BEFORE_DATA" in head and b"KNOWN_INCOMPATIBLE_EDITION=NO" in head
    ten = sorted(tile.root.glob("*_B02_*.tif"))
    assert ten, "no 10 m band written"
    raw = SIZE * SIZE * 2
    assert all(p.stat().st_size < raw for p in ten)


def test_a_pixel_is_the_same_whatever_the_block(scene: TileScene) -> None:
    for res in (10, 20):
        grid = scene.params.grid(res)
        tokens = scene.params.tokens_at(res)
        t = next(s.index for s in scene.states if s.cover > 0)
        whole = scene.render(grid, (0, 0, 300, 300), t, tokens)
        for r0, c0, h, w in [(0, 0, 128, 300), (128, 0, 172, 77), (128, 77, 172, 223)]:
            part = scene.render(grid, (r0, c0, h, w), t, tokens)
            for token in tokens:
                np.testing.assert_array_equal(part[token], whole[token][r0 : r0 + h, c0 : c0 + w], err_msg=token)


def test_files_are_byte_identical_across_block_sizes_and_differ_across_seeds(tmp_path: Path) -> None:
    args = {"size": 1200, "months": 2, "bands": "B02,B05,B09"}
    small = write_s2_tile(tmp_path / "b256", seed=2, block=256, **args).root
    large = write_s2_tile(tmp_path / "b1024", seed=2, block=1024, **args).root
    other = write_s2_tile(tmp_path / "seed3", seed=3, block=1024, **args).root
    names = _files(small)
    assert names == _files(large) == _files(other)
    assert len(names) == 2 * 4 + 4
    assert all(filecmp.cmp(small / n, large / n, shallow=False) for n in names)
    tifs = [n for n in names if n.endswith(".tif") and "truth" not in n]
    with rasterio.open(small / tifs[0]) as a, rasterio.open(other / tifs[0]) as b:
        assert not np.array_equal(a.read(1), b.read(1))


def test_the_scl_mask_hides_every_cloud_and_shadow(tile: TileInfo, scene: TileScene) -> None:
    ds = changescope.open(tile.root)
    meta = json.loads((tile.root / "synth_tile.json").read_text())
    cloudy = [i for i, d in enumerate(meta["dates"]) if d["cloud_cover"] > 0]
    assert cloudy, "the fixture tile has no cloudy date"
    for t in cloudy:
        valid = ds["valid"].isel(time=t).values
        cloud10, shadow10 = scene.opacity(t, scene.params.grid(10), (0, 0, SIZE, SIZE))
        assert not ((cloud10 > 0) | (shadow10 > 0))[valid].any()
        # 20 m pixels with cloud light, and their neighbours that bilinear resampling mixes in
        cloud20, shadow20 = scene.opacity(t, scene.params.grid(20), (0, 0, SIZE // 2, SIZE // 2))
        near = binary_dilation((cloud20 > 0) | (shadow20 > 0), np.ones((3, 3), bool))
        assert not np.kron(near, np.ones((2, 2), bool)).astype(bool)[valid].any()
        assert 0.02 < valid.mean() < 0.98
        blue = ds["image"].sel(band="B02").isel(time=t).values.astype(float)
        assert np.median(blue[cloud10 >= 0.9]) > 2 * np.median(blue[valid])
    with rasterio.open(tile.band_path("SCL", tile.dates[cloudy[0]])) as src:
        scl = src.read(1)
    assert np.isin(scl, SCL_INVALID).any() and not np.isin(scl, SCL_INVALID).all()


def test_events_are_in_the_truth_at_their_month_and_in_the_pixels(tile: TileInfo) -> None:
    events = gpd.read_parquet(tile.events_path)
    assert events.crs.to_epsg() == 32633
    assert set(events["type"]) == {"deforestation", "construction", "farmland_to_builtup", "flooding"}
    with rasterio.open(tile.truth_path) as src:
        truth = src.read(1)
        transform: Affine = src.transform
    insides = []
    for ev in events.itertuples():
        inside = rasterize([(ev.geometry, 1)], out_shape=truth.shape, transform=transform, dtype="uint8") == 1
        assert inside.sum() == ev.n_pixels
        assert (truth[inside] == ev.month_index + 1).all()
        assert ev.month == tile.dates[ev.month_index]
        insides.append(inside)
    assert (truth > 0).sum() == sum(int(m.sum()) for m in insides)
    # the same tile rendered without its events differs exactly where an event is active
    unchanged = TileScene(tile.params, [])
    grid = tile.params.grid(10)
    compared = 0
    for t, date in enumerate(tile.dates):
        clean = unchanged.render(grid, (0, 0, SIZE, SIZE), t, ("B08",))["B08"]
        with rasterio.open(tile.band_path("B08", date)) as src:
            written = src.read(1)
        cloud, _ = unchanged.opacity(t, grid, (0, 0, SIZE, SIZE))
        active = np.zeros_like(truth, dtype=bool)
        for ev, inside in zip(events.itertuples(), insides, strict=True):
            ended = pd.notna(ev.end_month) and date >= ev.end_month
            if ev.month_index <= t and not ended:
                active |= inside
        differs = written != clean
        assert not (differs & ~active).any()
        seen = active & (cloud < 0.5) & (written > 0)
        if seen.any():
            assert differs[seen].mean() > 0.95
            compared += int(seen.sum())
    assert compared > 1000
    ds = changescope.open(tile.root)
    nir, red, green = (ds["image"].sel(band=b).values.astype(float) for b in ("B08", "B04", "B03"))
    valid = ds["valid"].values
    checked = set()
    for ev, inside in zip(events.itertuples(), insides, strict=True):
        t = ev.month_index
        clear = inside & valid[t]
        if clear.sum() < 20:
            continue
        checked.add(ev.type)
        if ev.type == "flooding":
            assert np.median(((green[t] - nir[t]) / (green[t] + nir[t]))[clear]) > 0
        else:
            assert np.median(((nir[t] - red[t]) / (nir[t] + red[t]))[clear]) < 0.3
    assert len(checked) >= 3


def test_open_reads_one_date_with_bands_at_mixed_resolutions(tile: TileInfo) -> None:
    ds = changescope.open(tile.root)
    assert ds.attrs["format"] == "perband"
    assert dict(ds["image"].sizes) == {"time": MONTHS, "band": 12, "y": SIZE, "x": SIZE}
    by_wavelength = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    assert list(ds["band"].values) == by_wavelength
    first = ds["image"].isel(time=0).values
    assert first.shape == (12, SIZE, SIZE)
    for token, res in (("B01", 60), ("B05", 20), ("B02", 10)):
        with rasterio.open(tile.band_path(token, tile.dates[0])) as src:
            native = src.read(1).astype(float)
        k = res // 10
        resampled = first[list(ds["band"].values).index(token)].astype(float)
        block_means = resampled.reshape(SIZE // k, k, SIZE // k, k).mean(axis=(1, 3))
        inner = (slice(1, -1), slice(1, -1))
        assert np.corrcoef(block_means[inner].ravel(), native[inner].ravel())[0, 1] > 0.95, token
    assert float(ds["scale"].sel(band="B02")) == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"size": 1000}, "--size"),
        ({"size": 30}, "--size"),
        ({"bands": "landsat"}, "--bands"),
        ({"bands": "B02,B10"}, "B10"),
        ({"block": 300}, "--block"),
        ({"months": 1}, "--months"),
        ({"start": "2018-01-15"}, "--start"),
    ],
)
def test_bad_parameters_are_refused_by_name(tmp_path: Path, kwargs: dict[str, object], names: str) -> None:
    args: dict[str, object] = {"size": 60, "months": 2} | kwargs
    with pytest.raises(ParameterError, match=names):
        write_s2_tile(tmp_path / "t", **args)
    assert not (tmp_path / "t").exists()


def test_params_grids_share_one_extent() -> None:
    params = TileParams.validate(size=10980, months=2)
    sides = {res: params.grid(res).size for res in (10, 20, 60)}
    assert sides == {10: 10980, 20: 5490, 60: 1830}
    assert {params.grid(res).size * res for res in (10, 20, 60)} == {109800}


def test_cli_writes_a_tile_and_refuses_bad_inputs(tmp_path: Path) -> None:
    out = tmp_path / "tile"
    ok = runner.invoke(app, ["synth", str(out), "--size", "120", "--bands", "s2-10m", "--months", "2", "-q"])
    assert ok.exit_code == 0, ok.output
    assert len(list(out.glob("S2_L2A_SYNTH_B0[2348]_*.tif"))) == 8
    assert len(list(out.glob("S2_L2A_SYNTH_SCL_*.tif"))) == 2
    again = runner.invoke(app, ["synth", str(out), "--size", "120", "--bands", "s2-10m", "--months", "2"])
    assert isinstance(again.exception, ParameterError) and "--overwrite" in str(again.exception)
    for option, value in (("--size", "100"), ("--bands", "s9"), ("--block", "100")):
        bad = runner.invoke(app, ["synth", str(tmp_path / "x"), "--bands", "s2", "--size", "120", option, value])
        assert isinstance(bad.exception, ParameterError) and option in str(bad.exception)
    both = runner.invoke(app, ["synth", str(tmp_path / "y"), "--bands", "s2", "--from-pair", "a", "b"])
    assert isinstance(both.exception, ParameterError)
    replaced = runner.invoke(app, ["synth", str(out), "--size", "60", "--bands", "B04", "--months", "2", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert not list(out.glob("*_B02_*.tif")) and len(list(out.glob("*_B04_*.tif"))) == 2
