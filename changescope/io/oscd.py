"""Reader for the Onera Satellite Change Detection dataset (OSCD, ``format="oscd"``).

Layout::

    oscd/
      images/<city>/
        dates.txt                 "date_1: YYYYMMDD" and "date_2: YYYYMMDD" (the acquisition dates)
        imgs_1/*_B01.tif ... *_B8A.tif    13 Sentinel-2 L1C bands, one uint16 GeoTIFF each, at 10/20/60 m
        imgs_2/*_B01.tif ... *_B8A.tif
      train_labels/<city>/cm/<city>-cm.tif   change mask (or test_labels/...), not georeferenced

Open a city folder, or the ``images`` folder / dataset root with ``city=NAME`` (``--city NAME``). The dates come from
``dates.txt`` (the dates inside the ``imgs_1`` file names are processing dates, not acquisition dates).

Every band of both dates is resampled (bilinear, lazily) onto the finest grid of ``imgs_1``, the 10 m grid, which is
the dataset's own reference ("the older images with resolution of 10 m per pixel"). A second date whose grid is a
few pixels smaller or offset is aligned on it, not refused; pixels outside its footprint, and L1C no-data pixels
(value 0), are invalid. Bands are the Sentinel-2 names in wavelength order, scale 1e-4.

The change mask is not a per-date label map: it becomes the variable ``change (y, x)`` (int8: 1 = change,
0 = no change, -1 = unknown) and ``attrs["truth"] = "change_mask"``. It is read at open time, to detect its
encoding: the OSCD ``.tif`` files hold 1 = no change, 2 = change (0 would be unknown); masks stored 0/1 or 0/255
(``cm.png``) are accepted too. A mask holding only 1s is read as 1/2 (no change anywhere), one holding only 0s as
0/1 (no change anywhere).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from changescope.errors import (
    BandMismatchError,
    CorruptFileError,
    DateError,
    GridMismatchError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.bandfiles import (
    SENTINEL2_TOKENS,
    Grid,
    any_of,
    footprint_invalid,
    grid_array,
    nodata_invalid,
    read_band_lazy,
    select_bands,
)
from changescope.io.dates import date_from_name
from changescope.io.raster import RasterMeta, damaged, list_rasters, open_raster, raster_meta
from changescope.io.registry import register_reader
from changescope.io.stack import DateImage, stack_dates
from changescope.series import BandInfo
from changescope.types import PathLike

__all__ = [
    "OSCDReader",
    "band_files",
    "decode_change_mask",
    "find_change_mask",
    "read_dates_txt",
    "read_oscd_change_mask",
]

L1C_NODATA = 0
"""Sentinel-2 L1C digital number of no-data pixels."""

L1C_SCALE = 1e-4
"""Sentinel-2 L1C reflectance scale (OSCD images predate the 2022 offset)."""

_BAND = re.compile(r"(?:^|[_-])(B\d{2}|B8A)$", flags=re.IGNORECASE)
_ENCODINGS = {
    "1/2": "1 = no change, 2 = change, 0 = unknown (OSCD .tif files)",
    "0/1": "0 = no change, 1 = change (as the OSCD README describes the .tif files)",
    "0/255": "0 = no change, 255 = change (OSCD cm.png)",
}


def _is_city(path: Path) -> bool:
    return path.is_dir() and (path / "imgs_1").is_dir()


def _cities(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and _is_city(p))


def _images_root(path: Path) -> Path | None:
    """``path`` if it holds city folders, ``path/images`` if that does, else ``None``."""
    for root in (path, path / "images"):
        if _cities(root):
            return root
    return None


def read_dates_txt(path: Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Read ``date_1`` and ``date_2`` from an OSCD ``dates.txt``.

    Raises:
        NoImagesFoundError: The file does not exist.
        DateError: A date is missing or unreadable.
    """
    if not path.is_file():
        raise NoImagesFoundError(
            f"{str(path)!r} does not exist; an OSCD city needs a dates.txt with lines 'date_1: YYYYMMDD' "
            "and 'date_2: YYYYMMDD'"
        )
    found: dict[str, pd.Timestamp] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("date_1", "date_2"):
            continue
        when = date_from_name(value.strip())
        if when is None:
            raise DateError(f"{str(path)!r}: cannot read a date from {line.strip()!r}; write '{key}: YYYYMMDD'")
        found[key] = when
    missing = [k for k in ("date_1", "date_2") if k not in found]
    if missing:
        raise DateError(f"{str(path)!r} has no {missing!r} line; write 'date_1: YYYYMMDD' and 'date_2: YYYYMMDD'")
    return found["date_1"], found["date_2"]


def find_change_mask(city_dir: Path) -> Path | None:
    """Find the change mask of a city folder; ``None`` when there is none.

    Looks for ``<city>/cm/<city>-cm.tif``, then ``<labels>/<city>/cm/<city>-cm.tif`` in folders whose name holds
    ``label`` (``train_labels``, ``test_labels``) beside the city folder or beside its images folder.
    """
    name = city_dir.name
    candidates = [city_dir / "cm" / f"{name}-cm.tif"]
    for base in (city_dir.parent, city_dir.parent.parent):
        try:
            siblings = sorted(p for p in base.iterdir() if p.is_dir() and "label" in p.name.lower())
        except OSError:
            continue
        candidates += [s / name / "cm" / f"{name}-cm.tif" for s in siblings]
    return next((c for c in candidates if c.is_file()), None)


def decode_change_mask(raw: np.ndarray, source: str = "") -> tuple[np.ndarray, str]:
    """Turn a stored change mask into int8 ``1 = change, 0 = no change, -1 = unknown``.

    Args:
        raw: The stored mask.
        source: File named in errors.

    Returns:
        The decoded mask and the detected encoding (``"1/2"``, ``"0/1"`` or ``"0/255"``).

    Raises:
        CorruptFileError: The values fit none of the encodings.
    """
    values = {int(v) for v in np.unique(raw)}
    if values <= {0, 255} and 255 in values:
        encoding = "0/255"
        out = np.where(raw == 255, 1, 0)
    elif values <= {0, 1, 2} and (2 in values or values == {1}):
        encoding = "1/2"
        out = np.select([raw == 2, raw == 1], [1, 0], default=-1)
    elif values <= {0, 1}:
        encoding = "0/1"
        out = raw.astype(np.int64)
    else:
        raise CorruptFileError(
            f"{source!r} holds values {sorted(values)[:10]!r}; a change mask must be stored 1/2 (no change/change), "
            "0/1 or 0/255. Fix the file or pass labels= another one"
        )
    return out.astype(np.int8), encoding


def _read_mask(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(path) as src:
            try:
                out: np.ndarray = src.read(1)
            except RasterioError as err:
                raise damaged(path, err) from err
    return out


def read_oscd_change_mask(path: PathLike) -> np.ndarray:
    """Read an OSCD change mask as int8 ``1 = change, 0 = no change, -1 = unknown`` (see :func:`decode_change_mask`).

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: It is not a readable raster or holds unexpected values.
    """
    p = Path(path)
    return decode_change_mask(_read_mask(p), str(p))[0]


def band_files(folder: Path, *, require_all: bool = True) -> dict[str, Path]:
    """The per-band files ``*_B01.tif ... *_B8A.tif`` of a folder, by Sentinel-2 band token (``"B8A"``).

    Raises:
        NoImagesFoundError: ``folder`` does not exist, or a ``.tif`` in it is a dangling symbolic link.
        BandMismatchError: Two files of one band, or (``require_all``) a Sentinel-2 band missing.
    """
    if not folder.is_dir():
        raise NoImagesFoundError(f"{str(folder)!r} does not exist; an OSCD city holds imgs_1/ and imgs_2/ band files")
    found: dict[str, Path] = {}
    for f in list_rasters(folder):
        match = _BAND.search(f.stem)
        if match is None:
            continue
        token = match[1].upper()
        if token in found:
            raise BandMismatchError(
                f"{str(found[token])!r} and {str(f)!r} are both band {token!r}; keep one file per band in "
                f"{str(folder)!r}"
            )
        found[token] = f
    missing = [t for t in SENTINEL2_TOKENS if t not in found]
    if require_all and missing:
        raise BandMismatchError(
            f"{str(folder)!r} misses Sentinel-2 band files {missing!r}; an OSCD date holds *_B01.tif ... *_B8A.tif"
        )
    return found


@register_reader
class OSCDReader:
    """An OSCD city folder, or the OSCD images folder / dataset root with ``city=``."""

    name: ClassVar[str] = "oscd"
    priority: ClassVar[int] = 40

    def can_open(self, path: Path) -> bool:
        """A folder holding ``imgs_1/`` (a city), or city folders (directly or under ``images/``)."""
        return _is_city(path) or _images_root(path) is not None

    def open(
        self,
        path: Path,
        *,
        city: str | None = None,
        labels: PathLike | None = None,
        bands: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> xr.Dataset:
        """Open one OSCD city as a two-date series with its change mask.

        Args:
            path: A city folder, the ``images`` folder or the dataset root.
            city: City to open when ``path`` is not a city folder (``--city``).
            labels: Change-mask file; found beside the images (``train_labels``/``test_labels``) when omitted.
            bands: Bands to read (Sentinel-2 names), in the order wanted; all 13 when omitted.
            **kwargs: Unused (:func:`changescope.open` passes only the options named above).

        Raises:
            ParameterError: ``city`` is missing or unknown.
            NoImagesFoundError: ``dates.txt``, an ``imgs_*`` folder or the ``labels`` file is missing.
            DateError: ``dates.txt`` is malformed.
            BandMismatchError: A band file is missing or holds several bands.
            GridMismatchError: The change mask is not the shape of the 10 m grid.
            CorruptFileError: A file is not a readable raster.
        """
        city_dir = self._city_dir(path, city)
        date_1, date_2 = read_dates_txt(city_dir / "dates.txt")
        files = [band_files(city_dir / "imgs_1"), band_files(city_dir / "imgs_2")]
        infos = {t: BandInfo.from_name(t, scale=L1C_SCALE) for t in SENTINEL2_TOKENS}
        selected = select_bands(infos, bands, where=str(city_dir))
        metas = [{t: raster_meta(f) for t, f in date_files.items()} for date_files in files]
        for meta in (m for date_metas in metas for m in date_metas.values()):
            if meta.count != 1:
                raise BandMismatchError(f"{str(meta.path)!r} holds {meta.count} bands; OSCD band files hold one each")
        ref = min((Grid.from_meta(m) for m in metas[0].values()), key=lambda g: g.pixel_area)
        finest_2 = min((Grid.from_meta(m) for m in metas[1].values()), key=lambda g: g.pixel_area)
        items = [
            self._date_image(when, [metas[i][t] for t in selected], ref, [infos[t].name for t in selected])
            for i, when in enumerate((date_1, date_2))
        ]
        ds = stack_dates(
            items,
            sensor="Sentinel-2 MSI L1C",
            bands=[infos[t] for t in selected],
            attrs={
                "city": city_dir.name,
                "dates_file": str(city_dir / "dates.txt"),
                "reference_grid": "10 m grid of imgs_1",
                **({} if finest_2.same_as(ref) else {"aligned_dates": [date_2.date().isoformat()]}),
            },
        )
        mask_path = Path(labels) if labels is not None else find_change_mask(city_dir)
        if mask_path is not None:
            ds = self._add_change(ds, mask_path, ref)
        return ds

    @staticmethod
    def _city_dir(path: Path, city: str | None) -> Path:
        if _is_city(path):
            if city is not None and city != path.name:
                raise ParameterError(
                    f"--city {city} (city={city!r}) but {str(path)!r} is the city {path.name!r}; drop --city "
                    "(city= in Python)"
                )
            return path
        root = _images_root(path)
        if root is None:
            raise NoImagesFoundError(
                f"no OSCD city in {str(path)!r}; point at a city folder (with imgs_1/, imgs_2/, dates.txt) or the "
                "images folder with --city NAME (city= in Python)"
            )
        names = [p.name for p in _cities(root)]
        if city is None:
            raise ParameterError(
                f"{str(path)!r} holds OSCD cities {names!r}; pass --city NAME (city= in Python), one of them"
            )
        if city not in names:
            raise ParameterError(f"--city {city} (city={city!r}) is not in {str(root)!r}; choose one of {names!r}")
        return root / city

    @staticmethod
    def _date_image(when: pd.Timestamp, metas: Sequence[RasterMeta], ref: Grid, names: list[str]) -> DateImage:
        datas, bad = [], []
        for meta in metas:
            src = Grid.from_meta(meta)
            data = read_band_lazy(meta, ref, resampling=Resampling.bilinear, nodata=L1C_NODATA)
            datas.append(data)
            bad += [nodata_invalid(data, L1C_NODATA), footprint_invalid(src, ref)]
        return DateImage(
            time=when,
            image=grid_array(da.stack([da.asarray(x) for x in datas]), ref),
            source=metas[0].path.parent,
            band_names=names,
            invalid=grid_array(any_of(bad, ref.shape), ref, dims=("y", "x")),
            nodata=None,
        )

    @staticmethod
    def _add_change(ds: xr.Dataset, path: Path, ref: Grid) -> xr.Dataset:
        if not path.is_file():
            raise NoImagesFoundError(f"labels={str(path)!r} does not exist; check the path or omit labels=")
        raw = _read_mask(path)
        if raw.shape != ref.shape:
            raise GridMismatchError(
                f"change mask {str(path)!r} has shape {raw.shape!r} but the 10 m grid of imgs_1 is {ref.shape!r}; "
                "use the mask of this city"
            )
        change, encoding = decode_change_mask(raw, str(path))
        ds["change"] = xr.DataArray(
            change,
            dims=("y", "x"),
            coords={"y": ds["y"], "x": ds["x"]},
            attrs={
                "flag_values": [-1, 0, 1],
                "flag_meanings": "unknown no_change change",
                "source_file": str(path),
                "source_encoding": _ENCODINGS[encoding],
            },
        )
        ds.attrs["truth"] = "change_mask"
        return ds
