"""The embeddings store: contents, attributes, completeness and refusal of mixed parameters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from embed_helpers import load_store

from changescope.embed import FORMAT, IncompleteStoreError, StoreMismatchError, embed_series, is_store, open_embeddings
from changescope.errors import CorruptFileError, ParameterError
from changescope.grid import PatchGrid
from changescope.series import series_crs, series_transform


def test_store_contents(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    out = embed_series(
        cloudy_series, "test_conv", patch_size=8, stride=4, out=tmp_path / "e.zarr", block=32, progress=False
    )
    grid = PatchGrid.for_series(cloudy_series, 8, 4)
    with open_embeddings(out) as ds:
        assert ds["embedding"].dims == ("time", "row", "col", "dim")
        assert ds["embedding"].shape == (3, grid.n_rows, grid.n_cols, 8)
        assert ds["embedding"].dtype == np.float32
        assert ds["valid_fraction"].dtype == np.float32
        assert ds["embedding"].encoding["chunks"] == (1, 8, 8, 8)
        assert ds["valid_fraction"].encoding["chunks"] == (1, 8, 8)
        assert ds.sizes["block_row"] == 2 and ds.sizes["block_col"] == 2
        assert bool(ds["block_done"].all()) and bool(ds["complete"].all())
        np.testing.assert_array_equal(ds["time"].values, cloudy_series["time"].values)
        np.testing.assert_array_equal(ds["row"].values, np.arange(grid.n_rows))
        np.testing.assert_array_equal(ds["y0"].values, np.arange(grid.n_rows) * 4)
        np.testing.assert_array_equal(ds["x0"].values, np.arange(grid.n_cols) * 4)
        attrs = ds.attrs
        assert attrs["format"] == FORMAT
        assert attrs["encoder"] == "test_conv" and attrs["weights_id"] == "random-seed0"
        assert attrs["patch_size"] == 8 and attrs["stride"] == 4 and attrs["block"] == 32
        assert attrs["transform"] == list(series_transform(cloudy_series))[:6]
        assert attrs["crs_wkt"] == series_crs(cloudy_series).to_wkt()
        assert attrs["bands"] == ["blue", "green", "red", "nir"]
        assert json.loads(attrs["normalization"])["kind"] == "none"
        assert attrs["min_valid"] == 0.5 and attrs["encoder_patch_size"] == 4
        assert attrs["changescope_version"] and pd.Timestamp(attrs["created"])
        emb = ds["embedding"].values
        vf = ds["valid_fraction"].values
    want_vf = grid.aggregate(cloudy_series["valid"].values, "fraction").astype(np.float32)
    np.testing.assert_array_equal(vf, want_vf)
    low = vf < 0.5
    assert low.any() and (~low).any()
    assert np.isnan(emb[low]).all()
    assert np.isfinite(emb[~low]).all()
    assert is_store(out) and not is_store(tmp_path)


def test_min_valid_zero_still_skips_patches_without_valid_pixels(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    valid = cloudy_series["valid"].values.copy()
    valid[0, :16, :16] = False
    ds = cloudy_series.assign(valid=(("time", "y", "x"), valid))
    out = embed_series(ds, "test_conv", patch_size=8, out=tmp_path / "e.zarr", min_valid=0.0, progress=False)
    arrays = load_store(out)
    empty = arrays["valid_fraction"] == 0
    assert empty[0, :2, :2].all()
    assert np.isnan(arrays["embedding"][empty]).all()
    assert np.isfinite(arrays["embedding"][~empty]).all()


def test_incomplete_store_refused_or_masked(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    out = embed_series(cloudy_series, "test_conv", patch_size=8, out=tmp_path / "e.zarr", block=32, progress=False)
    zarr.open_array(str(out / "block_done"), mode="r+")[1, 0, 1] = 0
    with pytest.raises(IncompleteStoreError, match="1 of 12 tasks"):
        open_embeddings(out)
    arrays = load_store(out, allow_incomplete=True)
    assert not arrays["complete"][1, :4, 4:].any() and arrays["complete"][1, 4:].all()
    assert np.isnan(arrays["embedding"][1, :4, 4:]).all()
    assert np.isnan(arrays["valid_fraction"][1, :4, 4:]).all()
    assert np.isfinite(arrays["valid_fraction"][0]).all()


def test_open_embeddings_refuses_other_folders(tmp_path: Path) -> None:
    with pytest.raises(CorruptFileError, match="not a changescope embeddings store"):
        open_embeddings(tmp_path)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"patch_size": 16}, "patch_size=8"),
        ({"stride": 4}, "stride=8"),
        ({"encoder_name": "test_conv_rgbn"}, "encoder='test_conv'"),
        ({"encoder_kwargs": {"seed": 1}}, "weights_id='random-seed0'"),
        ({"min_valid": 0.9}, "min_valid=0.5"),
        ({"block": 64}, "block=32"),
    ],
)
def test_store_with_other_parameters_is_refused(
    cloudy_series: xr.Dataset, tmp_path: Path, change: dict[str, object], name: str
) -> None:
    args: dict[str, object] = {"encoder_name": "test_conv", "patch_size": 8, "block": 32}
    out = embed_series(cloudy_series, **args, out=tmp_path / "e.zarr", progress=False)  # type: ignore[arg-type]
    before = load_store(out)
    with pytest.raises(StoreMismatchError, match=name.replace("[", r"\[")) as info:
        embed_series(cloudy_series, **{**args, **change}, out=out, progress=False)  # type: ignore[arg-type]
    assert "--overwrite" in str(info.value)
    np.testing.assert_array_equal(load_store(out)["embedding"], before["embedding"])
    embed_series(cloudy_series, **{**args, **change}, out=out, overwrite=True, progress=False)  # type: ignore[arg-type]
    with open_embeddings(out) as ds:
        for key, value in change.items():
            attr = {"encoder_name": "encoder", "encoder_kwargs": "weights_id"}.get(key, key)
            want = "random-seed1" if key == "encoder_kwargs" else value
            assert ds.attrs[attr] == want


def test_store_with_other_dates_or_grid_is_refused(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    out = embed_series(cloudy_series, "test_conv", patch_size=8, out=tmp_path / "e.zarr", progress=False)
    with pytest.raises(StoreMismatchError, match="dates"):
        embed_series(cloudy_series.isel(time=[0, 2]), "test_conv", patch_size=8, out=out, progress=False)
    with pytest.raises(ParameterError, match="grid_height=60"):
        embed_series(cloudy_series.isel(y=slice(0, 40)), "test_conv", patch_size=8, out=out, progress=False)


def test_rerun_of_a_complete_store_changes_nothing(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    out = embed_series(cloudy_series, "test_conv", patch_size=8, out=tmp_path / "e.zarr", progress=False)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    embed_series(cloudy_series, "test_conv", patch_size=8, out=out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamp


def test_overwrite_refuses_a_folder_that_is_not_a_store(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ParameterError, match="not an embeddings store|not a changescope embeddings store"):
            embed_series(cloudy_series, "test_conv", patch_size=8, out=precious, overwrite=overwrite, progress=False)
    assert (precious / "thesis.txt").read_text() == "keep me"
