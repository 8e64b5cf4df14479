"""Bad inputs at the reader level: each one gives one clear ChangescopeError, in Python and on the command line.

Every case builds its input with seeded code in ``tmp_path`` (real GeoTIFFs written with rasterio) and checks that
the error is a :class:`ChangescopeError`, is one line, names the offending file or parameter, and that the input
was not changed (bytes and mtimes).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import changescope
from changescope.cli.app import main
from changescope.errors import (
    BandMismatchError,
    ChangescopeError,
    CorruptFileError,
    CRSMismatchError,
    DateError,
    GridMismatchError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.writers import write_geotiff
from changescope.testing import TEST_CRS, utm_transform

S2 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
DATES = ("2021-01-01", "2021-02-01", "2021-03-01")


# ------------------------------------------------------------------------------------------------------- builders


def _pixels(seed: int, count: int, size: int, dtype: str = "uint16") -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.floating):
        return rng.uniform(0.01, 0.6, (count, size, size)).astype(dtype)
    return rng.integers(100, 6000, (count, size, size)).astype(dtype)


def _write(path: Path, arr: np.ndarray, **kw: Any) -> Path:
    kw.setdefault("crs", TEST_CRS)
    kw.setdefault("transform", utm_transform())
    return write_geotiff(path, arr, **kw)


def _dated_folder(root: Path, size: int = 64, count: int = 4) -> Path:
    folder = root / "dated"
    folder.mkdir(parents=True)
    for i, d in enumerate(DATES):
        _write(folder / f"{d}.tif", _pixels(i, count, size))
    return folder


def _perband_folder(root: Path, size: int = 32, masks: bool = False) -> Path:
    folder = root / "perband"
    folder.mkdir(parents=True)
    for i, d in enumerate(DATES):
        for j, token in enumerate(("B02", "B03", "B04")):
            _write(folder / f"S2_{token}_{d}.tif", _pixels(10 * i + j, 1, size))
        if masks:
            _write(folder / f"S2_CMASK_{d}.tif", np.zeros((1, size, size), np.uint8))
    return folder


def _oscd_city(root: Path, size: int = 24) -> Path:
    city = root / "oscd" / "tinytown"
    for k in (1, 2):
        folder = city / f"imgs_{k}"
        folder.mkdir(parents=True)
        for j, token in enumerate(S2):
            _write(folder / f"S2_{token}.tif", _pixels(100 * k + j, 1, size))
    (city / "dates.txt").write_text("date_1: 20180101\ndate_2: 20190101\n")
    return city


def _den_aoi(root: Path, size: int = 32) -> Path:
    images = root / "aoi_0000" / "PF-SR"
    images.mkdir(parents=True)
    for i, d in enumerate(("2020-01-01", "2020-02-01")):
        _write(images / f"{d}.tif", _pixels(i, 4, size))
        _write(images / f"{d}.mask.tif", np.zeros((1, size, size), np.uint8))
    return images.parent


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_middle(path: Path) -> None:
    """Overwrite the middle of a (compressed) GeoTIFF with noise: the header stays readable, the pixels do not."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 512] = b"\xff" * 512
    path.write_bytes(bytes(data))


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Bytes hash and mtime of every entry under ``root`` (links as links)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            out[str(p)] = (os.readlink(p), st.st_mtime_ns)
        elif p.is_file():
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


def _check_message(err: BaseException, names: tuple[str, ...]) -> str:
    assert isinstance(err, ChangescopeError), f"{type(err).__name__} is not a ChangescopeError: {err}"
    text = str(err)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    for name in names:
        assert name in text, f"{name!r} not named in {text!r}"
    return text


# ------------------------------------------------------------------------------------------------ the bad inputs


@dataclass
class Case:
    """One bad input: the path to open, what the error must name, its type, and reader options."""

    path: Path
    names: tuple[str, ...]
    error: type[ChangescopeError]
    kwargs: dict[str, Any] = field(default_factory=dict)
    cli: list[str] = field(default_factory=list)
    load: bool = False


def truncated_dated(tmp: Path) -> Case:
    folder = _dated_folder(tmp)
    _truncate(folder / "2021-02-01.tif")
    return Case(folder, ("2021-02-01.tif", "truncated"), CorruptFileError)


def truncated_single_file(tmp: Path) -> Case:
    path = _write(tmp / "2021-05-01.tif", _pixels(0, 3, 64))
    _truncate(path)
    return Case(path, ("2021-05-01.tif", "truncated"), CorruptFileError)


def truncated_perband(tmp: Path) -> Case:
    folder = _perband_folder(tmp)
    _truncate(folder / "S2_B03_2021-03-01.tif")
    return Case(folder, ("S2_B03_2021-03-01.tif", "truncated"), CorruptFileError)


def truncated_oscd(tmp: Path) -> Case:
    city = _oscd_city(tmp, size=48)
    _truncate(city / "imgs_2" / "S2_B04.tif")
    return Case(city, ("S2_B04.tif", "truncated"), CorruptFileError)


def truncated_mask_sidecar(tmp: Path) -> Case:
    folder = _dated_folder(tmp)
    mask = _write(folder / "2021-01-01.mask.tif", np.zeros((1, 64, 64), np.uint16))
    _truncate(mask)
    return Case(folder, ("2021-01-01.mask.tif", "truncated"), CorruptFileError)


def damaged_pixels(tmp: Path) -> Case:
    """Header intact, a compressed strip garbled: found when the pixels are read (lazily), not at open."""
    import rasterio

    folder = _dated_folder(tmp)
    path = folder / f"{DATES[1]}.tif"
    profile = {"driver": "GTiff", "width": 256, "height": 256, "count": 3, "dtype": "uint16", "crs": TEST_CRS}
    profile |= {"transform": utm_transform(), "compress": "deflate"}
    path.unlink()
    ramp = np.add.outer(np.arange(256), np.arange(256)) * 10
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack([ramp + k for k in range(3)]).astype(np.uint16))
    for d in (DATES[0], DATES[2]):
        _write(folder / f"{d}.tif", _pixels(4, 3, 256))
    _damage_middle(path)
    return Case(folder, (f"{DATES[1]}.tif", "could not be read"), CorruptFileError, load=True)


def mask_wrong_shape(tmp: Path) -> Case:
    folder = _dated_folder(tmp)
    _write(folder / "2021-02-01.mask.tif", np.zeros((1, 40, 64), np.uint8))
    return Case(folder, ("2021-02-01.mask.tif", "(40, 64)", "(64, 64)"), GridMismatchError)


def mask_off_grid(tmp: Path) -> Case:
    folder = _dated_folder(tmp)
    _write(folder / "2021-02-01.mask.tif", np.zeros((1, 64, 64), np.uint8), transform=utm_transform(x0=500_320.0))
    return Case(folder, ("2021-02-01.mask.tif", "2021-02-01.tif"), GridMismatchError)


def cmask_wrong_shape(tmp: Path) -> Case:
    folder = _perband_folder(tmp, masks=True)
    _write(folder / "S2_CMASK_2021-02-01.tif", np.zeros((1, 16, 32), np.uint8))
    return Case(folder, ("S2_CMASK_2021-02-01.tif", "(32, 32)"), GridMismatchError)


def cmask_no_georeference(tmp: Path) -> Case:
    import rasterio

    folder = _perband_folder(tmp, masks=True)
    path = folder / "S2_CMASK_2021-03-01.tif"
    path.unlink()
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 1, "dtype": "uint8"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", **profile)
    with dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))
    return Case(folder, ("S2_CMASK_2021-03-01.tif", "georeference"), GridMismatchError)


def den_mask_wrong_shape(tmp: Path) -> Case:
    aoi = _den_aoi(tmp)
    _write(aoi / "PF-SR" / "2020-02-01.mask.tif", np.zeros((1, 16, 16), np.uint8))
    return Case(aoi, ("2020-02-01.mask.tif", "(32, 32)"), GridMismatchError)


def dangling_link_dated(tmp: Path) -> Case:
    folder = _dated_folder(tmp)
    (folder / "2021-04-01.tif").symlink_to(tmp / "gone" / "2021-04-01.tif")
    return Case(folder, ("2021-04-01.tif", "symbolic link"), NoImagesFoundError)


def dangling_link_perband(tmp: Path) -> Case:
    folder = _perband_folder(tmp)
    (folder / "S2_B05_2021-01-01.tif").symlink_to(tmp / "S2_B05_2021-01-01.tif")
    return Case(folder, ("S2_B05_2021-01-01.tif", "symbolic link"), NoImagesFoundError)


def dangling_link_oscd(tmp: Path) -> Case:
    city = _oscd_city(tmp)
    (city / "imgs_1" / "S2_B04.tif").unlink()
    (city / "imgs_1" / "S2_B04.tif").symlink_to(tmp / "elsewhere.tif")
    return Case(city, ("S2_B04.tif", "symbolic link"), NoImagesFoundError)


def dangling_link_den(tmp: Path) -> Case:
    aoi = _den_aoi(tmp)
    (aoi / "PF-SR" / "2020-03-01.tif").symlink_to(tmp / "missing.tif")
    return Case(aoi, ("2020-03-01.tif", "symbolic link"), NoImagesFoundError)


def mixed_dtypes_untagged(tmp: Path) -> Case:
    folder = _dated_folder(tmp)
    _write(folder / "2021-03-01.tif", _pixels(5, 4, 64, "float32"))
    return Case(folder, ("2021-03-01.tif", "float32", "uint16", "scale"), BandMismatchError)


def mixed_scaling_one_untagged(tmp: Path) -> Case:
    folder = tmp / "dated"
    folder.mkdir()
    _write(folder / "2021-01-01.tif", _pixels(0, 4, 64), scales=[1e-4] * 4)
    _write(folder / "2021-02-01.tif", _pixels(1, 4, 64))
    return Case(folder, ("2021-02-01.tif", "scale"), BandMismatchError)


def perband_mixed_dtypes(tmp: Path) -> Case:
    folder = _perband_folder(tmp)
    _write(folder / "S2_B03_2021-02-01.tif", _pixels(7, 1, 32, "float32"))
    return Case(folder, ("S2_B03_2021-02-01.tif", "float32", "uint16"), BandMismatchError)


def city_on_dated_folder(tmp: Path) -> Case:
    return Case(_dated_folder(tmp), ("--city", "OSCD"), ParameterError, {"city": "paris"}, ["--city", "paris"])


def date_on_perband(tmp: Path) -> Case:
    folder = _perband_folder(tmp)
    return Case(folder, ("--date", "GeoTIFF-folder"), ParameterError, {"date": "2021-01-01"}, ["--date", "2021-01-01"])


def drop_incomplete_on_oscd(tmp: Path) -> Case:
    return Case(
        _oscd_city(tmp), ("--drop-incomplete",), ParameterError, {"drop_incomplete": True}, ["--drop-incomplete"]
    )


def crs_mismatch_names_flag(tmp: Path) -> Case:
    folder = _dated_folder(tmp)
    _write(folder / "2021-02-01.tif", _pixels(1, 4, 64), crs="EPSG:32634")
    return Case(folder, ("2021-02-01.tif", "--reproject", "reproject=True in Python"), CRSMismatchError)


def grid_mismatch_names_flag(tmp: Path) -> Case:
    folder = _dated_folder(tmp)
    _write(folder / "2021-02-01.tif", _pixels(1, 4, 64), transform=utm_transform(x0=500_020.0))
    return Case(folder, ("2021-02-01.tif", "--align", "align=True in Python"), GridMismatchError)


def undated_file_names_flag(tmp: Path) -> Case:
    path = _write(tmp / "scene.tif", _pixels(0, 3, 32))
    return Case(path, ("scene.tif", "--date YYYY-MM-DD", "date= in Python"), DateError)


def incomplete_perband_names_flag(tmp: Path) -> Case:
    folder = _perband_folder(tmp)
    (folder / "S2_B04_2021-02-01.tif").unlink()
    return Case(folder, ("2021-02-01 misses ['B04']", "--drop-incomplete"), BandMismatchError)


def oscd_root_names_flag(tmp: Path) -> Case:
    city = _oscd_city(tmp)
    _oscd_city(tmp / "more")
    (tmp / "more" / "oscd" / "tinytown").rename(city.parent / "othertown")
    return Case(city.parent, ("tinytown", "--city NAME", "city= in Python"), ParameterError)


CASES: list[Callable[[Path], Case]] = [
    truncated_dated,
    truncated_single_file,
    truncated_perband,
    truncated_oscd,
    truncated_mask_sidecar,
    damaged_pixels,
    mask_wrong_shape,
    mask_off_grid,
    cmask_wrong_shape,
    cmask_no_georeference,
    den_mask_wrong_shape,
    dangling_link_dated,
    dangling_link_perband,
    dangling_link_oscd,
    dangling_link_den,
    mixed_dtypes_untagged,
    mixed_scaling_one_untagged,
    perband_mixed_dtypes,
    city_on_dated_folder,
    date_on_perband,
    drop_incomplete_on_oscd,
    crs_mismatch_names_flag,
    grid_mismatch_names_flag,
    undated_file_names_flag,
    incomplete_perband_names_flag,
    oscd_root_names_flag,
]


@pytest.mark.parametrize("build", CASES, ids=[c.__name__ for c in CASES])
def test_python_error(build, tmp_path):
    case = build(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(case.error) as info:
        ds = changescope.open(case.path, **case.kwargs)
        if not case.load:
            pytest.fail(f"opened without error: {ds}")
        ds.load()
    _check_message(info.value, case.names)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("build", CASES, ids=[c.__name__ for c in CASES])
def test_cli_error(build, tmp_path, capsys):
    case = build(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["inspect", str(case.path), *case.cli])
    assert info.value.code == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert "\n" not in err and err.startswith("error:"), captured.err
    for name in case.names:
        assert name in err, f"{name!r} not named in {err!r}"
    assert _snapshot(tmp_path) == before


def test_cli_subprocess_truncated_file(tmp_path):
    case = truncated_dated(tmp_path)
    exe = Path(sys.executable).with_name("changescope")
    proc = subprocess.run([str(exe), "inspect", str(case.path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "2021-02-01.tif" in lines[0], proc.stderr


def test_umap_does_not_spill_warnings():
    pytest.importorskip("umap")
    from changescope.report.explore import embed_2d

    pts = np.random.default_rng(0).normal(size=(60, 5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = embed_2d(pts, "umap", seed=0)
    assert out.shape == (60, 2)
    spilled = [str(w.message) for w in caught if "n_jobs" in str(w.message) or "Tensorflow" in str(w.message)]
    assert not spilled, spilled


@pytest.mark.realdata
@pytest.mark.parametrize("sample", ["landsat_rgb_byte/RGB.byte.tif", "modis_ndvi/sinop-ndvi-2014.tif"])
def test_real_geotiff_cut_in_half(shared_data, tmp_path, sample, capsys):
    folder = tmp_path / "dated"
    folder.mkdir()
    data = (shared_data / sample).read_bytes()
    (folder / "2020-01-01.tif").write_bytes(data[: len(data) // 2])
    (folder / "2020-02-01.tif").write_bytes(data)
    before = _snapshot(tmp_path)
    with pytest.raises(CorruptFileError) as info:
        changescope.open(folder)
    _check_message(info.value, ("2020-01-01.tif",))
    with pytest.raises(SystemExit) as code:
        main(["inspect", str(folder)])
    err = capsys.readouterr().err.strip()
    assert code.value.code == 1 and err.startswith("error:") and "\n" not in err and "2020-01-01.tif" in err
    assert _snapshot(tmp_path) == before
