"""``read_rgb`` reads large windows in strips: the same downsampled image as one read, in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

import changescope.report.images as images
from changescope.report.images import read_rgb
from changescope.testing import make_test_series


@pytest.mark.parametrize("factor", [1, 3, 7])
@pytest.mark.parametrize("window", [None, (slice(5, 61), slice(2, 47))])
def test_strips_give_the_image_of_one_read(monkeypatch: pytest.MonkeyPatch, factor: int, window) -> None:
    ds = make_test_series(3, n_time=2, height=64, width=50, cloud_fraction=0.3)
    whole = read_rgb(ds, 1, [2, 1, 0], factor, window)
    calls: list[tuple[slice, slice]] = []
    real = images._read_window

    def spy(date, win):
        calls.append(win)
        return real(date, win)

    monkeypatch.setattr(images, "_read_window", spy)
    monkeypatch.setattr(images, "READ_BYTES", 4 * 5 * 50 * 2)  # about two rows of RGB + mask at a time
    strips = read_rgb(ds, 1, [2, 1, 0], factor, window)
    assert len(calls) > 3  # read in strips of whole blocks
    assert all((c[0].start - calls[0][0].start) % factor == 0 for c in calls)
    for a, b in zip(whole, strips, strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("factor", [1, 3, 7])
@pytest.mark.parametrize(("chunk", "rows"), [(8, 2), (8, 20), (5, 3)])
def test_a_lazy_date_is_read_in_whole_chunk_rows_each_once(monkeypatch, factor: int, chunk: int, rows: int) -> None:
    import dask.array as da

    ds = make_test_series(4, n_time=2, height=61, width=30, cloud_fraction=0.3)
    want = read_rgb(ds, 1, [2, 1, 0], factor, (slice(3, 58), slice(1, 29)))
    reads: list[int] = []

    def count(block: np.ndarray, block_info=None) -> np.ndarray:
        reads.append(block_info[0]["chunk-location"][-2])
        return block

    values = ds["image"].values
    image = da.from_array(values, chunks=(1, -1, chunk, chunk)).map_blocks(count, meta=np.array((), values.dtype))
    lazy = ds.assign(image=(ds["image"].dims, image), valid=(ds["valid"].dims, da.from_array(ds["valid"].values)))
    monkeypatch.setattr(images, "READ_BYTES", 4 * 5 * 28 * rows)  # `rows` rows of RGB + mask at a time
    got = read_rgb(lazy, 1, [2, 1, 0], factor, (slice(3, 58), slice(1, 29)))
    for a, b in zip(want, got, strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    per_row = {r: reads.count(r) for r in set(reads)}
    assert set(per_row) == set(range(3 // chunk, (58 - 1) // chunk + 1))  # every chunk row the window touches
    cols = len({c // chunk for c in range(1, 29)})
    assert all(n == cols for n in per_row.values())  # each chunk decoded once


def test_a_lazy_date_is_culled_once_for_its_strips(monkeypatch: pytest.MonkeyPatch) -> None:
    from dask.base import collections_to_expr

    short, long = (
        make_test_series(5, n_time=n, height=48, width=40).chunk({"time": 1, "y": 16, "x": 16}) for n in (2, 6)
    )
    sizes = [
        len(collections_to_expr([images.date_rgb(d, 1, [2, 1, 0])["image"].data]).__dask_graph__())
        for d in (short, long)
    ]
    assert sizes[0] == sizes[1]  # one date's graph, whatever the series' length
    monkeypatch.setattr(images, "READ_BYTES", 4 * 5 * 40 * 3)
    lazy = read_rgb(long, 4, [2, 1, 0], 2)
    eager = read_rgb(long.compute(), 4, [2, 1, 0], 2)
    for a, b in zip(lazy, eager, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pixels_are_read_with_gdal_block_cache_bounded_and_image_and_mask_in_one_pass() -> None:
    import dask
    import dask.array as da
    from rasterio.env import get_gdal_config

    from changescope.io.handles import GDAL_CACHE_BYTES

    ds = make_test_series(2, n_time=2, height=32, width=32)
    seen: list[int] = []
    reads = {"n": 0}

    def chunk(block: np.ndarray) -> np.ndarray:  # runs in dask's threads, as a band file's read does
        seen.append(int(get_gdal_config("GDAL_CACHEMAX")))
        reads["n"] += 1
        return block

    values = ds["image"].values
    image = da.from_array(values, chunks=(1, -1, 16, 16)).map_blocks(chunk, meta=np.array((), dtype=values.dtype))
    lazy = ds.assign(image=(ds["image"].dims, image), valid=(ds["valid"].dims, da.from_array(ds["valid"].values)))
    lazy = lazy.assign(valid=lazy["valid"] & (lazy["image"].isel(band=0) >= -1))  # the mask needs the image too
    with dask.config.set(scheduler="threads"):
        rgb, invalid = read_rgb(lazy, 1, [2, 1, 0], 2)
    want = read_rgb(ds, 1, [2, 1, 0], 2)
    np.testing.assert_array_equal(rgb, want[0])
    np.testing.assert_array_equal(invalid, want[1])
    assert seen and set(seen) == {GDAL_CACHE_BYTES}
    assert int(get_gdal_config("GDAL_CACHEMAX")) != GDAL_CACHE_BYTES  # restored afterwards
    assert reads["n"] == 4  # date 1's four chunks, each read once for the image and its mask
