"""``search_stac`` against a real STAC API served here on 127.0.0.1, its COGs served over HTTP by the same server.

The API is a minimal STAC API (landing page, conformance, collection, ``/search`` by GET and POST with
``collections``, ``bbox``, ``datetime`` and ``limit``) over a seeded local ItemCollection. pystac-client talks to it
over HTTP; odc-stac loads the pixels lazily, GDAL reading the COGs with HTTP range requests.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import rasterio

from changescope.errors import EmptySeriesError
from changescope.series import reflectance
from changescope.testing.stac import DEFAULT_STAC_DATES, write_stac_collection

pytest.importorskip("odc.stac")
pytest.importorskip("pystac_client")
uvicorn = pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The .shapely.ops.transform:DeprecationWarning")]

COLLECTION = "test-s2"


def _in_range(item: dict[str, Any], dt: str | None, bbox: list[float] | None) -> bool:
    when = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
    if dt:
        lo, _, hi = dt.partition("/")
        hi = hi or lo
        if lo not in ("", "..") and when < datetime.fromisoformat(lo.replace("Z", "+00:00")):
            return False
        if hi not in ("", "..") and when > datetime.fromisoformat(hi.replace("Z", "+00:00")):
            return False
    if bbox:
        x0, y0, x1, y1 = item["bbox"]
        if x1 < bbox[0] or x0 > bbox[2] or y1 < bbox[1] or y0 > bbox[3]:
            return False
    return True


def stac_api(folder: Path, items: list[dict[str, Any]], root: str) -> Any:
    """A FastAPI app serving ``items`` as a STAC API at ``root`` and the files of ``folder`` under ``/files``."""
    from fastapi.responses import FileResponse, JSONResponse

    app = fastapi.FastAPI()
    geojson = "application/geo+json"

    @app.get("/")
    def landing() -> dict[str, Any]:
        return {
            "type": "Catalog",
            "id": "local",
            "description": "a local STAC API for tests",
            "stac_version": "1.0.0",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/collections",
            ],
            "links": [
                {"rel": "self", "href": root, "type": "application/json"},
                {"rel": "root", "href": root, "type": "application/json"},
                {"rel": "data", "href": f"{root}collections", "type": "application/json"},
                {"rel": "search", "href": f"{root}search", "type": geojson, "method": "GET"},
                {"rel": "search", "href": f"{root}search", "type": geojson, "method": "POST"},
            ],
        }

    @app.get("/conformance")
    def conformance() -> dict[str, Any]:
        return {"conformsTo": landing()["conformsTo"]}

    def collection() -> dict[str, Any]:
        return {
            "type": "Collection",
            "id": COLLECTION,
            "stac_version": "1.0.0",
            "description": "seeded test items",
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [{"rel": "root", "href": root}],
        }

    @app.get("/collections")
    def collections() -> dict[str, Any]:
        return {"collections": [collection()], "links": []}

    @app.get("/collections/{cid}")
    def one_collection(cid: str) -> Any:
        return collection() if cid == COLLECTION else JSONResponse({"code": "NotFound"}, status_code=404)

    def search(body: dict[str, Any]) -> JSONResponse:
        wanted = body.get("collections") or [COLLECTION]
        if isinstance(wanted, str):
            wanted = wanted.split(",")
        bbox = body.get("bbox")
        if isinstance(bbox, str):
            bbox = [float(v) for v in bbox.split(",")]
        found = [it for it in items if COLLECTION in wanted and _in_range(it, body.get("datetime"), bbox)]
        found = found[: int(body.get("limit") or 100)]
        return JSONResponse({"type": "FeatureCollection", "features": found, "links": []}, media_type=geojson)

    @app.get("/search")
    def search_get(
        collections: str | None = None, bbox: str | None = None, datetime: str | None = None, limit: int = 100
    ) -> JSONResponse:
        return search({"collections": collections, "bbox": bbox, "datetime": datetime, "limit": limit})

    @app.post("/search")
    def search_post(body: dict[str, Any]) -> JSONResponse:
        return search(body)

    @app.get("/files/{name}")
    def files(name: str) -> Any:
        path = folder / name
        if "/" in name or not path.is_file():
            return JSONResponse({"code": "NotFound"}, status_code=404)
        return FileResponse(path, media_type="image/tiff")

    return app


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The STAC API's root URL and the folder of its COGs."""
    folder = tmp_path_factory.mktemp("stac_api")
    collection = write_stac_collection(folder, seed=11)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    root = f"http://127.0.0.1:{port}/"
    items = json.loads(collection.read_text())["features"]
    for item in items:  # assets over HTTP, as a real API serves them
        item["collection"] = COLLECTION
        item["links"] = [{"rel": "collection", "href": f"{root}collections/{COLLECTION}"}]
        for asset in item["assets"].values():
            asset["href"] = f"{root}files/{Path(asset['href']).name}"
    config = uvicorn.Config(stac_api(folder, items, root), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the STAC API did not start"
        time.sleep(0.05)
    yield root, folder
    server.should_exit = True
    thread.join(timeout=10)


def test_search_a_live_stac_api_and_load_lazily(api: tuple[str, Path]) -> None:
    from changescope.io.stac import search_stac

    root, folder = api
    ds = search_stac(root, collections=COLLECTION, datetime="2021-04-01/2021-05-31", bands=["B02", "B03"])
    assert [str(t)[:10] for t in ds["time"].values] == [d[:10] for d in DEFAULT_STAC_DATES[:2]]
    assert list(ds["band"].values) == ["B02", "B03"]
    assert isinstance(ds["image"].data, da.Array), "pixels must load lazily"
    assert ds.attrs["source"] == root
    image = ds["image"].values
    valid = ds["valid"].values
    refl = reflectance(ds).values[0, 0]  # the items' raster:scale
    np.testing.assert_allclose(refl[valid[0]], image[0, 0][valid[0]] * 1e-4, rtol=1e-6)
    for t, day in enumerate(d[:10] for d in DEFAULT_STAC_DATES[:2]):
        for b, band in enumerate(["B02", "B03"]):
            with rasterio.open(folder / f"{day}_{band}.tif") as src:
                raw = src.read(1)
            good = raw != 0
            np.testing.assert_array_equal(image[t, b][good], raw[good])
            assert not ds["valid"].values[t][~good].any()


def test_a_search_that_finds_nothing_names_what_to_widen(api: tuple[str, Path]) -> None:
    from changescope.io.stac import search_stac

    with pytest.raises(EmptySeriesError, match="widen the bbox or date range"):
        search_stac(api[0], collections=COLLECTION, datetime="2019-01-01/2019-12-31")
