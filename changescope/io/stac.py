"""Reader for STAC items: a local ItemCollection JSON, items from Python, or a STAC API search.

Pixels are loaded lazily with ``odc.stac.load`` (one plane per solar day by default) and turned into a series:
``image (time, band, y, x)`` with the asset names as band names, ``valid (time, y, x)``, CRS and transform.

Invalid pixels are

- pixels equal to an asset's nodata (from the raster extension) in any image band, or non-finite;
- pixels flagged by the mask asset (``mask_asset=``, default ``"SCL"``): for Sentinel-2 ``SCL`` the classes in
  :data:`SCL_INVALID`, for any other mask asset nonzero values (``invalid_values=`` overrides both).

Needs the optional extra ``stac`` (``pip install changescope[stac]``): odc-stac and pystac, plus pystac-client
for :func:`search_stac`. Relative asset hrefs in a JSON file are resolved against the file's folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import xarray as xr

from changescope.errors import (
    BandMismatchError,
    EmptySeriesError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.raster import DEFAULT_CHUNK
from changescope.io.registry import register_reader
from changescope.io.stac_items import (
    as_items,
    looks_like_stac,
    read_item_collection,
    require,
    stac_files,
)
from changescope.series import BandInfo, make_series

__all__ = [
    "DEFAULT_MASK_ASSET",
    "SCL_INVALID",
    "StacReader",
    "open_stac",
    "read_item_collection",
    "search_items",
    "search_stac",
]

SCL_INVALID: frozenset[int] = frozenset({0, 1, 3, 8, 9, 10})
"""Sentinel-2 scene classes treated as invalid: no data, saturated, cloud shadow, cloud medium/high, cirrus."""

DEFAULT_MASK_ASSET = "SCL"
"""Mask asset used when the items carry it; silently skipped when they do not."""

_OPEN_OPTIONS = frozenset({"crs", "resolution", "bbox", "patch_url", "sensor", "resampling", "geobox", "dtype"})
"""Reader options forwarded to :func:`open_stac` (``changescope.open`` refuses other layouts' options)."""


def _asset_names(items: Sequence[Any]) -> list[str]:
    """Asset keys (plus eo common names) over all items, in first-seen order."""
    names: dict[str, None] = {}
    for item in items:
        for key, asset in item.assets.items():
            names.setdefault(key, None)
            for band in asset.extra_fields.get("eo:bands", []) or []:
                if isinstance(band, Mapping) and band.get("common_name"):
                    names.setdefault(str(band["common_name"]), None)
    return list(names)


def _band_field(asset: Any, field: str) -> Any:
    """A per-band field of an asset in the STAC 1.0 (``raster:bands``/``eo:bands``) or 1.1 (``bands``) form."""
    fields = asset.extra_fields
    for key in (f"raster:{field}", f"eo:{field}", field):
        if key in fields:
            return fields[key]
    for group in ("raster:bands", "eo:bands", "bands"):
        entries = fields.get(group) or []
        if entries and isinstance(entries[0], Mapping):
            for key in (field, f"raster:{field}", f"eo:{field}"):
                if key in entries[0]:
                    return entries[0][key]
    return None


def _band_info(items: Sequence[Any], name: str) -> BandInfo:
    for item in items:
        asset = item.assets.get(name)
        if asset is None:
            continue
        scale = _band_field(asset, "scale")
        offset = _band_field(asset, "offset")
        wavelength = _band_field(asset, "center_wavelength")
        base = BandInfo.from_name(name, scale=float(scale or 1.0), offset=float(offset or 0.0))
        if wavelength is not None:
            return BandInfo(name, float(wavelength), base.scale, base.offset)
        return base
    return BandInfo.from_name(name)


def _default_bands(items: Sequence[Any], exclude: str | None) -> list[str]:
    odc_stac = require("odc.stac")
    names: dict[str, None] = {}
    for parsed in odc_stac.parse_items(items):
        for key in parsed.bands:
            names.setdefault(str(key[0]), None)
    return [n for n in names if n != exclude]


def _invalid(data: Any, nodata: Any) -> Any:
    bad = da.zeros(data.shape, dtype=bool, chunks=data.chunks)
    if nodata is not None and np.isfinite(float(nodata)):
        bad = bad | (data == nodata)
    if np.issubdtype(data.dtype, np.floating):
        bad = bad | ~da.isfinite(data)
    return bad


def open_stac(
    items: Iterable[Any],
    *,
    bands: Sequence[str] | None = None,
    mask_asset: str | None = DEFAULT_MASK_ASSET,
    invalid_values: Iterable[int] | None = None,
    chunks: Mapping[str, int] | None = None,
    groupby: str = "solar_day",
    crs: Any = None,
    resolution: float | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    patch_url: Callable[[str], str] | None = None,
    sensor: str = "stac",
    **load_kwargs: Any,
) -> xr.Dataset:
    """Load STAC items as a lazy series with ``odc.stac.load``.

    Args:
        items: :class:`pystac.Item` objects (or their dicts), e.g. an ItemCollection.
        bands: Asset names (or eo common names) to load as image bands; all raster assets but the mask by default.
        mask_asset: Asset holding a cloud/quality mask. The default ``"SCL"`` is used only when the items carry it;
            any other name must exist. ``None`` disables masking.
        invalid_values: Mask values that mark a pixel invalid; default :data:`SCL_INVALID` for ``SCL`` and
            "nonzero" for any other mask asset.
        chunks: Dask chunks per dimension (default ``{"x": 1024, "y": 1024}``).
        groupby: How items are merged into dates (``"solar_day"``, ``"time"``, ``"id"`` or a property name).
        crs: Output CRS (default: the items' own, see ``odc.stac.load``).
        resolution: Output resolution in CRS units.
        bbox: Lon/lat bounds ``(minx, miny, maxx, maxy)`` to load.
        patch_url: Function signing/rewriting asset URLs (e.g. ``planetary_computer.sign``).
        sensor: Value of ``attrs["sensor"]``.
        **load_kwargs: More ``odc.stac.load`` options (``geobox=``, ``resampling=``, ...).

    Returns:
        The series.

    Raises:
        MissingDependencyError: odc-stac or pystac is not installed.
        EmptySeriesError: There is no item.
        BandMismatchError: A band or the named mask asset is not an asset of the items.
        ParameterError: odc-stac cannot build the pixel grid from the items and options.
    """
    odc_stac = require("odc.stac")
    item_list = as_items(items)
    if not item_list:
        raise EmptySeriesError("no STAC item to load; search again with a wider bbox or date range")
    available = _asset_names(item_list)
    mask = mask_asset if mask_asset in available else None
    if mask_asset is not None and mask is None and mask_asset != DEFAULT_MASK_ASSET:
        raise BandMismatchError(
            f"mask_asset={mask_asset!r} is not an asset of the STAC items; available assets: {available!r} "
            "(pass mask_asset=None to load without a mask)"
        )
    band_names = list(bands) if bands is not None else _default_bands(item_list, mask)
    missing = [b for b in band_names if b not in available]
    if missing:
        raise BandMismatchError(
            f"asset {missing[0]!r} is not in the STAC items; available assets: {available!r}; fix bands="
        )
    if not band_names:
        raise BandMismatchError(f"the STAC items have no raster asset besides the mask; assets: {available!r}")
    to_load = list(dict.fromkeys([*band_names, *([mask] if mask else [])]))
    try:
        ds = odc_stac.load(
            item_list,
            bands=to_load,
            chunks=dict(chunks or {"x": DEFAULT_CHUNK, "y": DEFAULT_CHUNK}),
            groupby=groupby,
            crs=crs,
            resolution=resolution,
            bbox=bbox,
            patch_url=patch_url,
            **load_kwargs,
        )
    except ValueError as err:
        raise ParameterError(
            f"odc.stac.load cannot load these items ({err}); items need proj metadata (proj:code/epsg, shape, "
            "transform) or pass crs= and resolution="
        ) from err
    arrays = [da.asarray(ds[b].data) for b in band_names]
    bad = da.stack([_invalid(a, ds[b].attrs.get("nodata")) for a, b in zip(arrays, band_names, strict=True)]).any(
        axis=0
    )
    if mask is not None:
        m = da.asarray(ds[mask].data)
        values = invalid_values if invalid_values is not None else (SCL_INVALID if mask.upper() == "SCL" else None)
        flagged = da.isin(m, sorted(int(v) for v in values)) if values is not None else m != 0
        bad = bad | flagged | _invalid(m, None)
    dtype = np.result_type(*[a.dtype for a in arrays])
    image = da.stack([a.astype(dtype) for a in arrays], axis=1).rechunk({1: -1})
    return make_series(
        image,
        times=ds["time"].values,
        bands=[_band_info(item_list, b) for b in band_names],
        crs=ds.rio.crs,
        transform=ds.rio.transform(),
        valid=~bad,
        sensor=sensor,
        attrs={"mask_asset": mask or "", "groupby": groupby, "n_items": len(item_list)},
    )


def search_items(
    url: str,
    *,
    collections: Sequence[str] | str,
    bbox: tuple[float, float, float, float] | None = None,
    datetime: str | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = None,
    modifier: Callable[[Any], Any] | None = None,
) -> list[Any]:
    """Search a STAC API with pystac-client and return the matching items.

    Args:
        url: STAC API root, e.g. ``"https://earth-search.aws.element84.com/v1"``.
        collections: Collection id(s), e.g. ``"sentinel-2-l2a"``.
        bbox: Lon/lat bounds.
        datetime: Date range, e.g. ``"2021-01-01/2021-12-31"``.
        query: STAC API query filter, e.g. ``{"eo:cloud_cover": {"lt": 30}}``.
        max_items: Stop after this many items.
        modifier: Item modifier passed to ``pystac_client.Client.open`` (e.g. ``planetary_computer.sign_inplace``).

    Raises:
        MissingDependencyError: pystac-client is not installed.
        ParameterError: The search failed (bad URL, collection or network).
    """
    client_mod = require("pystac_client")
    errors = (client_mod.exceptions.APIError, OSError, ValueError)
    try:
        client = client_mod.Client.open(url, modifier=modifier)
        search = client.search(
            collections=[collections] if isinstance(collections, str) else list(collections),
            bbox=bbox,
            datetime=datetime,
            query=dict(query) if query else None,
            max_items=max_items,
        )
        return list(search.items())
    except errors as err:
        raise ParameterError(f"STAC search at {url!r} failed ({err}); check the URL, collections and network") from err


def search_stac(
    url: str,
    *,
    collections: Sequence[str] | str,
    bbox: tuple[float, float, float, float] | None = None,
    datetime: str | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = None,
    modifier: Callable[[Any], Any] | None = None,
    **open_kwargs: Any,
) -> xr.Dataset:
    """Search a STAC API and open the found items as a series (see :func:`search_items` and :func:`open_stac`).

    ``bbox`` both selects the items and clips the loaded pixels.

    Raises:
        EmptySeriesError: The search found no item.
    """
    items = search_items(
        url, collections=collections, bbox=bbox, datetime=datetime, query=query, max_items=max_items, modifier=modifier
    )
    if not items:
        raise EmptySeriesError(
            f"the search at {url!r} for {collections!r}, bbox={bbox!r}, datetime={datetime!r} found no item; "
            "widen the bbox or date range"
        )
    ds = open_stac(items, bbox=bbox, **open_kwargs)
    ds.attrs["source"] = url
    return ds


@register_reader
class StacReader:
    """A local STAC ItemCollection JSON file, or a folder holding exactly one."""

    name: ClassVar[str] = "stac"
    priority: ClassVar[int] = 20
    extra_options: ClassVar[frozenset[str]] = _OPEN_OPTIONS

    def can_open(self, path: Path) -> bool:
        """A ``.json`` FeatureCollection of STAC items, or a folder with exactly one (sniffed, not parsed)."""
        if path.is_dir():
            return len(stac_files(path)) == 1
        return looks_like_stac(path)

    def open(
        self,
        path: Path,
        *,
        bands: Sequence[str] | None = None,
        mask_asset: str | None = DEFAULT_MASK_ASSET,
        invalid_values: Iterable[int] | None = None,
        chunks: Mapping[str, int] | None = None,
        groupby: str = "solar_day",
        **kwargs: Any,
    ) -> xr.Dataset:
        """Open the item collection as a series.

        Args:
            path: The JSON file, or a folder holding one STAC ItemCollection JSON.
            bands: Asset names to load as bands (all raster assets but the mask by default).
            mask_asset: Mask asset (see :func:`open_stac`).
            invalid_values: Mask values marking invalid pixels.
            chunks: Dask chunks.
            groupby: How items are merged into dates.
            **kwargs: ``crs=``, ``resolution=``, ``bbox=`` and other :func:`open_stac` options.

        Raises:
            NoImagesFoundError: A folder holds no STAC JSON.
            ParameterError: A folder holds several.
        """
        file = path
        if path.is_dir():
            found = stac_files(path)
            if not found:
                raise NoImagesFoundError(f"no STAC ItemCollection *.json in {str(path)!r}; point at the JSON file")
            if len(found) > 1:
                raise ParameterError(
                    f"{str(path)!r} holds several STAC collections {[p.name for p in found]!r}; point at one of them"
                )
            file = found[0]
        return open_stac(
            read_item_collection(file),
            bands=bands,
            mask_asset=mask_asset,
            invalid_values=invalid_values,
            chunks=chunks,
            groupby=groupby,
            **{k: v for k, v in kwargs.items() if k in _OPEN_OPTIONS},
        )
