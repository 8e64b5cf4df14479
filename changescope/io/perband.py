"""Reader for one GeoTIFF per band and date (``format="perband"``).

Layout::

    FOLDER/
      CBERS-4_AWFI_B13_2018-05-09.tif      <prefix>_<BAND>_<date>.tif, one band per file
      CBERS-4_AWFI_B14_2018-05-09.tif
      ...
      CBERS-4_AWFI_CMASK_2018-05-09.tif    mask tokens (CMASK, SCL, QA, FMASK, MASK, CLM) are masks, not bands

File names are parsed from the end: the date (``YYYY-MM-DD``, ``YYYY_MM_DD`` or ``YYYYMMDD``) last, the band token
(letters and digits) before it, and the prefix is the rest (it may be empty: ``B02_2018-07-18.tif``). All files of
a folder must share one prefix (or pass ``prefix=``).

Band names: tokens of known sensors map to band names (CBERS-4 AWFI ``B13..B16`` = blue, green, red, nir, scale
1e-4; CBERS-4 MUX ``B05..B08``; Sentinel-2 ``B01..B12, B8A`` keep their names, scale 1e-4); other tokens keep
their token as name, scale 1. Band order: bands with a known wavelength first, by wavelength, then the others in
natural token order (``B2 < B10``); with ``bands=[...]`` the order given.

Pixels are invalid where a band holds its nodata value, outside a resampled band's footprint, or where a mask file
says so (see :data:`changescope.io.bandfiles.MASK_RULES`; for the CBERS CMASK the sample files hold 0 = clear and
4 = cloud, with 255 = no data). Bands of one date at different resolutions are resampled (lazily) onto the finest
band's grid: bilinear for bands, nearest for masks. A mask file must be georeferenced and cover its date's band grid
(to one mask pixel); a mask of another extent or shape is refused, not resampled into a partial mask. One band must
be stored in one dtype on every date.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import dask.array as da
import pandas as pd
import xarray as xr
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from changescope.errors import (
    BandMismatchError,
    DateError,
    DuplicateDateError,
    EmptySeriesError,
    GridMismatchError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.bandfiles import (
    KNOWN_SENSORS,
    SENTINEL2_TOKENS,
    Grid,
    MaskRule,
    SensorSpec,
    any_of,
    footprint_invalid,
    grid_array,
    mask_rule,
    nodata_invalid,
    read_band_lazy,
    select_bands,
)
from changescope.io.raster import RasterMeta, grid_bounds, list_rasters, raster_meta
from changescope.io.registry import register_reader
from changescope.io.stack import DateImage, stack_dates
from changescope.series import BandInfo

__all__ = ["BandFile", "PerBandReader", "parse_band_file"]

_NAME = re.compile(r"^(?:(?P<prefix>.+)[_-])?(?P<band>[A-Za-z0-9]+)[_-](?P<date>\d{4}[-_]?\d{2}[-_]?\d{2})$")
_EXAMPLE = "PREFIX_BAND_YYYY-MM-DD.tif (e.g. CBERS-4_AWFI_B13_2018-05-09.tif)"


@dataclass(frozen=True)
class BandFile:
    """One file of a per-band layout.

    Attributes:
        path: The file.
        prefix: Everything before the band token (``""`` when none).
        token: Band token as written (``"B13"``, ``"CMASK"``).
        time: Acquisition date.
    """

    path: Path
    prefix: str
    token: str
    time: pd.Timestamp


def parse_band_file(path: Path) -> BandFile | None:
    """Parse ``<prefix>_<BAND>_<date>.tif``; ``None`` when the name does not have that shape.

    Raises:
        DateError: The name has that shape but its date does not exist (``2018-02-30``).
    """
    match = _NAME.match(path.stem)
    if match is None:
        return None
    digits = re.sub(r"[-_]", "", match["date"])
    try:
        when = pd.Timestamp(year=int(digits[:4]), month=int(digits[4:6]), day=int(digits[6:8]))
    except ValueError as err:
        raise DateError(
            f"{str(path)!r} ends in {match['date']!r}, which is not a valid date; name files {_EXAMPLE}"
        ) from err
    return BandFile(path=path, prefix=match["prefix"] or "", token=match["band"], time=when)


def _check_mask_cover(mask: RasterMeta, grid: Grid, when: pd.Timestamp) -> None:
    """Refuse a mask file that does not cover its date's band grid (to one mask pixel) or has no georeference."""
    day = when.date().isoformat()
    if mask.crs is None:
        raise GridMismatchError(
            f"mask {str(mask.path)!r} has no georeference; write it with the CRS and transform of the bands of {day} "
            f"({grid.shape!r} px)"
        )
    want = grid_bounds(grid.transform, grid.height, grid.width)
    have = grid_bounds(mask.transform, mask.height, mask.width)
    if mask.crs != grid.crs:
        have = transform_bounds(mask.crs, grid.crs, *have)
    tol = max(abs(have[2] - have[0]) / mask.width, abs(have[3] - have[1]) / mask.height)
    covers = have[0] <= want[0] + tol and have[1] <= want[1] + tol and have[2] >= want[2] - tol
    if not (covers and have[3] >= want[3] - tol):
        raise GridMismatchError(
            f"mask {str(mask.path)!r} ({mask.height} x {mask.width} px) covers {tuple(round(v, 6) for v in have)!r} "
            f"but the bands of {day} cover {tuple(round(v, 6) for v in want)!r} ({grid.shape!r} px); write the mask "
            "on the band grid or remove it"
        )


def _check_dtypes(
    by_date: dict[pd.Timestamp, dict[str, BandFile]], metas: dict[Path, RasterMeta], tokens: Sequence[str]
) -> None:
    """Refuse a band stored in different dtypes on different dates (the dates would be on different scales)."""
    first: dict[str, RasterMeta] = {}
    for d in sorted(by_date):
        for token, f in by_date[d].items():
            meta = metas.get(f.path)
            if meta is None or token not in tokens:
                continue
            ref = first.setdefault(token, meta)
            if meta.dtype != ref.dtype:
                raise BandMismatchError(
                    f"{str(meta.path)!r} stores {meta.dtype} values but {str(ref.path)!r}, the same band {token!r}, "
                    f"stores {ref.dtype}; the dates would be on different scales: convert the files of {token!r} to "
                    "one dtype and scale"
                )


def _sensor(prefix: str, tokens: Sequence[str]) -> SensorSpec | None:
    for spec in KNOWN_SENSORS:
        if re.search(spec.prefix, prefix, flags=re.IGNORECASE) and any(spec.band_info(t) for t in tokens):
            return spec
    s2 = {t.upper() for t in SENTINEL2_TOKENS}
    if tokens and all(t.upper() in s2 for t in tokens):
        return next(spec for spec in KNOWN_SENSORS if spec.name == "Sentinel-2")
    return None


@register_reader
class PerBandReader:
    """One single-band GeoTIFF per band and date, ``<prefix>_<BAND>_<date>.tif``."""

    name: ClassVar[str] = "perband"
    priority: ClassVar[int] = 60

    def can_open(self, path: Path) -> bool:
        """A folder where most GeoTIFFs parse as per-band files and one date holds two or more bands."""
        if not path.is_dir():
            return False
        files = list_rasters(path, check_links=False)
        parsed = [m for m in (_NAME.match(f.stem) for f in files) if m is not None]
        if not parsed or 2 * len(parsed) < len(files):
            return False
        per_date: dict[str, set[str]] = defaultdict(set)
        for m in parsed:
            if mask_rule(m["band"]) is None:
                per_date[m["date"]].add(m["band"].upper())
        return any(len(tokens) >= 2 for tokens in per_date.values())

    def open(
        self,
        path: Path,
        *,
        bands: Sequence[str] | None = None,
        prefix: str | None = None,
        drop_incomplete: bool = False,
        reproject: bool = False,
        align: bool = False,
        mask_values: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> xr.Dataset:
        """Open the folder as a series.

        Args:
            path: The folder.
            bands: Bands to read, by name (``"red"``) or token (``"B15"``), in the order wanted; all when omitted.
            prefix: File-name prefix to read when the folder mixes several.
            drop_incomplete: Drop dates that miss a selected band instead of refusing them
                (listed in ``attrs["dropped_dates"]``; ``--drop-incomplete``).
            reproject: Reproject dates in another CRS onto the first date's grid (``--reproject``).
            align: Resample dates on another grid of the same CRS onto the first date's grid (``--align``).
            mask_values: Mask values that mark invalid pixels, replacing the built-in rule of the mask token.
            **kwargs: Unused (:func:`changescope.open` passes only the options named above).

        Raises:
            NoImagesFoundError: The folder holds no GeoTIFF.
            DateError: A file name does not end in a band token and a valid date.
            ParameterError: The folder mixes prefixes and ``prefix`` is not given, or does not match.
            BandMismatchError: A date misses a band, a file holds several bands, or ``bands`` names an absent band.
            CRSMismatchError: Dates are in different CRSs and ``reproject`` is False.
            GridMismatchError: Dates are on different grids and ``align`` is False, or a mask does not cover its date.
            CorruptFileError: A file is not a readable raster or is cut short.
        """
        if not path.is_dir():
            raise NoImagesFoundError(f"{str(path)!r} is not a folder; the perband reader opens a folder of {_EXAMPLE}")
        files = self._files(path, prefix)
        band_files = [f for f in files if mask_rule(f.token) is None]
        mask_files = [f for f in files if mask_rule(f.token) is not None]
        if not band_files:
            raise NoImagesFoundError(
                f"{str(path)!r} holds only mask files ({sorted({f.token for f in mask_files})!r}); add the band files"
            )
        tokens = sorted({f.token for f in band_files})
        spec = _sensor(files[0].prefix, tokens)
        infos = {t: (spec.band_info(t) if spec else None) or BandInfo.from_name(t) for t in tokens}
        selected = select_bands(infos, bands, where=str(path))
        names = [infos[t].name for t in selected]
        if len(set(names)) != len(names):
            raise BandMismatchError(
                f"band tokens {selected!r} in {str(path)!r} give repeated band names {names!r}; "
                "select one of each with bands=[...]"
            )
        by_date: dict[pd.Timestamp, dict[str, BandFile]] = defaultdict(dict)
        for f in band_files + mask_files:
            other = by_date[f.time].get(f.token)
            if other is not None:
                raise DuplicateDateError(
                    f"{str(other.path)!r} and {str(f.path)!r} are both band {f.token!r} of "
                    f"{f.time.date().isoformat()}; keep one file per band and date"
                )
            by_date[f.time][f.token] = f
        dropped = self._check_complete(path, by_date, selected, drop_incomplete)
        dates = sorted(d for d in by_date if d not in dropped)
        if not dates:
            raise EmptySeriesError(
                f"no date in {str(path)!r} has all of bands {selected!r}; select fewer bands with bands=[...]"
            )
        metas = {f.path: raster_meta(f.path) for d in dates for f in by_date[d].values()}
        for meta in metas.values():
            if meta.count != 1:
                raise BandMismatchError(
                    f"{str(meta.path)!r} holds {meta.count} bands; per-band files hold one band each "
                    "(open a folder of multi-band files with format='geotiff_folder')"
                )
        _check_dtypes(by_date, metas, selected)
        ref_grid = self._finest([metas[by_date[dates[0]][t].path] for t in selected])
        rules = {f.token: rule for f in mask_files if (rule := mask_rule(f.token, mask_values)) is not None}
        items = []
        for d in dates:
            grid = self._finest([metas[by_date[d][t].path] for t in selected])
            if (reproject and grid.crs != ref_grid.crs) or (align and grid.crs == ref_grid.crs):
                grid = ref_grid
            band_list = [(metas[by_date[d][t].path], infos[t]) for t in selected]
            masks = [(metas[f.path], rules[tok]) for tok, f in by_date[d].items() if tok in rules]
            for mask_meta, _ in masks:
                _check_mask_cover(mask_meta, self._finest([metas[by_date[d][t].path] for t in selected]), d)
            items.append(self._date_image(d, band_list, masks, grid))
        return stack_dates(
            items,
            sensor=spec.name if spec else (files[0].prefix or "perband"),
            reproject=reproject,
            align=align,
            bands=[infos[t] for t in selected],
            attrs={
                "prefix": files[0].prefix,
                "band_tokens": list(selected),
                **({"dropped_dates": [d.date().isoformat() for d in sorted(dropped)]} if dropped else {}),
                **({"masks": [f"{r.token}: {r.description}" for r in rules.values()]} if rules else {}),
            },
        )

    @staticmethod
    def _files(folder: Path, prefix: str | None) -> list[BandFile]:
        rasters = list_rasters(folder)
        if not rasters:
            raise NoImagesFoundError(f"no GeoTIFF (*.tif) found in {str(folder)!r}; put files named {_EXAMPLE} there")
        parsed = [(p, parse_band_file(p)) for p in rasters]
        bad = [p.name for p, f in parsed if f is None]
        if bad:
            raise DateError(
                f"cannot read a band and date from {bad[:5]!r} in {str(folder)!r}; name files {_EXAMPLE} "
                "or move the others out"
            )
        files = [f for _, f in parsed if f is not None]
        prefixes = sorted({f.prefix for f in files})
        if prefix is not None:
            files = [f for f in files if f.prefix == prefix]
            if not files:
                raise ParameterError(
                    f"prefix={prefix!r} matches no file in {str(folder)!r}; choose one of {prefixes!r}"
                )
        elif len(prefixes) > 1:
            raise ParameterError(
                f"{str(folder)!r} mixes file-name prefixes {prefixes!r}; pass prefix= one of them to read one series"
            )
        return files

    @staticmethod
    def _check_complete(
        folder: Path,
        by_date: dict[pd.Timestamp, dict[str, BandFile]],
        selected: Sequence[str],
        drop_incomplete: bool,
    ) -> set[pd.Timestamp]:
        missing = {d: [t for t in selected if t not in files] for d, files in by_date.items()}
        incomplete = {d: m for d, m in sorted(missing.items()) if m}
        if incomplete and not drop_incomplete:
            listed = "; ".join(f"{d.date().isoformat()} misses {m!r}" for d, m in list(incomplete.items())[:5])
            raise BandMismatchError(
                f"incomplete dates in {str(folder)!r}: {listed}; add the files, select bands present on every "
                "date with bands=[...], or pass --drop-incomplete (drop_incomplete=True in Python)"
            )
        return set(incomplete)

    @staticmethod
    def _finest(metas: Sequence[RasterMeta]) -> Grid:
        grids = [Grid.from_meta(m) for m in metas]
        return min(grids, key=lambda g: g.pixel_area)

    @staticmethod
    def _date_image(
        when: pd.Timestamp,
        bands: Sequence[tuple[RasterMeta, BandInfo]],
        masks: Sequence[tuple[RasterMeta, MaskRule]],
        grid: Grid,
    ) -> DateImage:
        datas = []
        bad: list[Any] = []
        for meta, _ in bands:
            src = Grid.from_meta(meta)
            data = read_band_lazy(meta, grid, resampling=Resampling.bilinear, nodata=meta.nodata)
            datas.append(data)
            bad += [nodata_invalid(data, meta.nodata), footprint_invalid(src, grid)]
        for meta, rule in masks:
            src = Grid.from_meta(meta)
            data = read_band_lazy(meta, grid, resampling=Resampling.nearest, nodata=meta.nodata)
            bad += [rule.invalid(data), nodata_invalid(data, meta.nodata), footprint_invalid(src, grid)]
        return DateImage(
            time=when,
            image=grid_array(da.stack([da.asarray(x) for x in datas]), grid),
            source=bands[0][0].path,
            band_names=[info.name for _, info in bands],
            invalid=grid_array(any_of(bad, grid.shape), grid, dims=("y", "x")),
            nodata=None,
        )
