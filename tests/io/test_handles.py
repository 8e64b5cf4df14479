"""Rasters kept open between lazy reads (changescope.io.handles): reused, reopened when changed, bounded, safe."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

import changescope.io.handles as handles
from changescope.errors import CorruptFileError, NoImagesFoundError
from changescope.io.handles import cached_raster, close_cached
from changescope.io.writers import write_geotiff

CRS = "EPSG:32631"
TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    close_cached()
    yield
    close_cached()


def _raster(path: Path, seed: int, size: int = 96) -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 10000, (1, size, size), dtype=np.uint16)
    write_geotiff(path, data, crs=CRS, transform=TRANSFORM, nodata=0, cog=True)
    return data[0]


def test_a_file_is_opened_once_and_read_again_from_the_same_dataset(tmp_path: Path) -> None:
    data = _raster(tmp_path / "a.tif", 1)
    with cached_raster(tmp_path / "a.tif") as first:
        top = first.read(1, window=Window(0, 0, 40, 30))
    with cached_raster(str(tmp_path / "a.tif")) as second:
        rest = second.read(1, window=Window(40, 30, 56, 66))
    assert first is second and not second.closed
    np.testing.assert_array_equal(top, data[:30, :40])
    np.testing.assert_array_equal(rest, data[30:, 40:])


def test_a_replaced_file_is_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "a.tif"
    _raster(path, 1)
    with cached_raster(path) as old:
        pass
    new = _raster(path, 2, size=64)
    os.utime(path, ns=(1, 1))  # another modification time, whatever the clock's resolution
    with cached_raster(path) as src:
        np.testing.assert_array_equal(src.read(1), new)
    assert src is not old and old.closed  # the stale version is closed


def test_at_most_max_open_files_stay_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handles, "MAX_OPEN", 3)
    opened = []
    for i in range(5):
        _raster(tmp_path / f"{i}.tif", i, size=16)
        with cached_raster(tmp_path / f"{i}.tif") as src:
            opened.append(src)
    assert [src.closed for src in opened] == [True, True, False, False, False]  # least recently used first
    assert len(handles._OPEN) == 3


def test_missing_and_damaged_files_give_the_readers_errors(tmp_path: Path) -> None:
    with pytest.raises(NoImagesFoundError, match="missing.tif"), cached_raster(tmp_path / "missing.tif"):
        pass
    (tmp_path / "bad.tif").write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(CorruptFileError, match="bad.tif"), cached_raster(tmp_path / "bad.tif"):
        pass
    assert not handles._OPEN


def test_threads_reading_one_file_get_its_pixels(tmp_path: Path) -> None:
    data = _raster(tmp_path / "a.tif", 3, size=256)
    windows = [Window(c, r, 64, 64) for r in range(0, 256, 64) for c in range(0, 256, 64)] * 4
    got: dict[int, np.ndarray] = {}

    def read(i: int) -> None:
        with cached_raster(tmp_path / "a.tif") as src:
            got[i] = src.read(1, window=windows[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(windows))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, w in enumerate(windows):
        r, c = int(w.row_off), int(w.col_off)
        np.testing.assert_array_equal(got[i], data[r : r + 64, c : c + 64])
    assert len(handles._OPEN) == 1
