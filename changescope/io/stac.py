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

import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import xarray as xr

from changescope.errors import (
    BandMismatchError,
    CorruptFileError,
    EmptySeriesError,
    MissingDependencyError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.raster import DEFAULT_CHUNK
from changescope.io.registry import register_reader
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

_SNIFF_BYTES = 1 << 16
_MAX_JSON_IN_FOLDER = 16
_FEATURE_COLLECTION = re.compile(rb'"type"\s*:\s*"FeatureCollection"')
_INSTALL_HINT = "pip install changescope[stac]"
_OPEN_OPTIONS = frozenset({"crs", "resolution", "bbox", "patch_url", "sensor", "resampling", "geobox", "dtype"})
"""Reader options forwarded to :func:`open_stac` (``changescope.open`` refuses other layouts' options)."""


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"reading STAC needs the optional package {module.split('.')[0]!r}; install it with `{_INSTALL_HINT}`"
        ) from err


def _looks_like_stac(file: Path) -> bool:
    """Sniff the head and tail of a JSON file for a STAC FeatureCollection (no full parse)."""
    if not (file.is_file() and file.suffix.lower() == ".json"):
        return False
    try:
        with file.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
            size = fh.seek(0, 2)
            fh.seek(max(size - _SNIFF_BYTES, len(head)))
            tail = fh.read()
    except OSError:
        return False
    text = head + tail
    return bool(_FEATURE_COLLECTION.search(text)) and b'"stac_version"' in text


def _stac_files(folder: Path) -> list[Path]:
    candidates = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    if len(candidates) > _MAX_JSON_IN_FOLDER:
        return []
    return [p for p in candidates if _looks_like_stac(p)]


def _item_errors(pystac: ModuleType) -> tuple[type[Exception], ...]:
    """Exceptions pystac raises for a malformed item dict."""
    errors = pystac.errors
    return (
        errors.STACError,
        errors.STACTypeError,
        errors.RequiredPropertyMissing,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    )


def _absolute_href(href: str, folder: Path) -> str:
    if "://" in href or Path(href).is_absolute():
        return href
    return str((folder / href).resolve())


def read_item_collection(path: Path | str) -> list[Any]:
    """Read a local ItemCollection / FeatureCollection JSON (or a single Item) as :class:`pystac.Item` objects.

    Relative asset hrefs are made absolute against the file's folder.

    Raises:
        MissingDependencyError: pystac is not installed.
        CorruptFileError: The file is not valid JSON or not STAC items.
        EmptySeriesError: The collection holds no item.
    """
    pystac = _require("pystac")
    file = Path(path)
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptFileError(f"{str(file)!r} is not readable JSON ({err}); re-export the item collection") from err
    if not isinstance(raw, dict) or raw.get("type") not in ("FeatureCollection", "Feature"):
        raise CorruptFileError(
            f"{str(file)!r} is not a STAC ItemCollection (top-level 'type' is "
            f"{raw.get('type') if isinstance(raw, dict) else type(raw).__name__!r}, expected 'FeatureCollection')"
        )
    features = raw.get("features", []) if raw["type"] == "FeatureCollection" else [raw]
    if not isinstance(features, list):
        raise CorruptFileError(f"{str(file)!r} has a 'features' member that is not a list")
    if not features:
        raise EmptySeriesError(f"{str(file)!r} holds no STAC item; search again with a wider bbox or date range")
    items = []
    for i, feature in enumerate(features):
        try:
            item = pystac.Item.from_dict(feature, preserve_dict=False)
        except _item_errors(pystac) as err:
            raise CorruptFileError(f"feature {i} of {str(file)!r} is not a valid STAC item: {err!r}") from err
        for asset in item.assets.values():
            asset.href = _absolute_href(asset.href, file.parent)
        items.append(item)
    return items


def _as_items(items: Iterable[Any]) -> list[Any]:
    pystac = _require("pystac")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            try:
                item = pystac.Item.from_dict(dict(item))
            except _item_errors(pystac) as err:
                raise ParameterError(f"items[{i}] is not a valid STAC item: {err!r}") from err
        out.append(item)
    return out


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
    odc_stac = _require("odc.stac")
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
    odc_stac = _require("odc.stac")
    item_list = _as_items(items)
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
    client_mod = _require("pystac_client")
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
            return len(_stac_files(path)) == 1
        return _looks_like_stac(path)

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
            found = _stac_files(path)
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
