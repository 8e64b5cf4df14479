"""The FastAPI application of ``changescope serve`` (routes in ``docs/webapp.md``).

:func:`create_app` serves the given run folders and the built frontend in ``changescope/serve/static``. Requests
are validated by pydantic (bodies) and FastAPI (path and query parameters); ids are looked up in the served
tables, never joined to paths. Bodies over :data:`MAX_BODY` bytes are refused with 413 before they are read in
full. Only loopback host names are accepted (no DNS rebinding), and the pages' content-security policy allows no
origin but the app's own, so the app cannot fetch anything from elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from changescope.errors import ChangescopeError, NotFoundError, ParameterError
from changescope.serve.workbench import Workbench

__all__ = ["MAX_BODY", "STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]", "testserver")
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PNG_CACHE = "private, max-age=3600"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, declared or streamed.

    A body is read (at most ``limit`` bytes of it) before the app sees it, then replayed, so a streamed body
    that grows too large is refused whole instead of half-parsed.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the body's size, then pass the request on."""
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = bytes(message.get("body", b""))
            seen += len(chunk)
            if seen > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body over {limit // 1024} KiB; send a smaller request"}, status_code=413)


class SimilarRequest(BaseModel):
    """Body of ``POST /api/similar``."""

    model_config = ConfigDict(extra="forbid")
    run: str = Field(max_length=200)
    event_id: str = Field(max_length=500)
    k: int = Field(20, ge=1, le=500)
    use_feedback: bool = True
    runs: list[str] | None = Field(None, max_length=100)
    date_from: str | None = Field(None, max_length=40)
    date_to: str | None = Field(None, max_length=40)
    exclude_same_patch: bool = True


class FeedbackRequest(BaseModel):
    """Body of ``POST /api/feedback``: a label for one change (``event_id``) or a whole type (``cluster``)."""

    model_config = ConfigDict(extra="forbid")
    run: str = Field(max_length=200)
    event_id: str | None = Field(None, max_length=500)
    cluster: int | None = Field(None, ge=-1)
    label: Literal["relevant", "irrelevant", "none"]


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": PNG_CACHE})


def _parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    from changescope.discover.search import parse_bbox

    return parse_bbox(text, "bbox")


def create_app(run_dirs: Sequence[Path], allowed_hosts: Sequence[str] = LOOPBACK) -> FastAPI:
    """The web app over ``run_dirs``.

    Raises:
        ParameterError: No run folder, or one that is not a finished run.
    """
    bench = Workbench([Path(p) for p in run_dirs])
    app = FastAPI(
        title="changescope", version="1", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json"
    )
    app.state.workbench = bench

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, err: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=404)

    @app.exception_handler(ParameterError)
    async def bad_parameter(_: Request, err: ParameterError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(ChangescopeError)
    async def other_error(_: Request, err: ChangescopeError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=500)

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # ------------------------------------------------------------------ runs and images
    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        out = []
        for r in bench.runs.values():
            h, w = r.shape
            status = r.events["status"]
            m = (r.metrics or {}).get("patch")
            out.append(
                {
                    "id": r.id,
                    "name": r.root.name,
                    "aoi": str(r.info.get("aoi") or ""),
                    "crs": r.crs,
                    "extent": [0, -h, w, 0],
                    "width": w,
                    "height": h,
                    "patch_size": r.size,
                    "dates": r.dates,
                    "n_events": len(r.events),
                    "n_confirmed": int((status == "confirmed").sum()),
                    "n_pending": int((status == "pending").sum()),
                    "has_truth": bool(m),
                    "metrics": None if not m else {k: m.get(k) for k in ("auc", "ap", "best_f1")},
                    "figures": r.figures,
                    "score_range": list(r.score_range),
                    "threshold": r.info.get("threshold"),
                    "types": r.types(),
                    "has_imagery": r.series is not None,
                }
            )
        return {"runs": out}

    @app.get("/api/runs/{run}/dates/{t}/image.jpg")
    def image_jpeg(run: str, t: int) -> Response:
        data = bench.run(run).imagery.quicklook(t, "jpeg")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": PNG_CACHE})

    @app.get("/api/runs/{run}/dates/{t}/image.png")
    def image(run: str, t: int) -> Response:
        return _png(bench.run(run).imagery.quicklook(t, "png"))

    @app.get("/api/runs/{run}/dates/{t}/valid.png")
    def valid(run: str, t: int) -> Response:
        return _png(bench.run(run).imagery.valid(t))

    @app.get("/api/runs/{run}/dates/{t}/score.png")
    def score(run: str, t: int, threshold: Annotated[float | None, Query(allow_inf_nan=False)] = None) -> Response:
        r = bench.run(run)
        lo, hi = r.score_range
        return _png(r.imagery.score(t, lo, hi, threshold))

    @app.get("/api/runs/{run}/events.geojson")
    def footprints(run: str) -> dict[str, Any]:
        r = bench.run(run)
        events, types = r.feedback.as_maps()
        feats = []
        for pos in range(len(r.events)):
            it = r.item(pos, events, types)
            x0, y0, x1, y1 = it["bbox"]
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                    },
                    "properties": {k: it[k] for k in ("event_id", "cluster", "color", "status", "date", "label")},
                }
            )
        return {"type": "FeatureCollection", "features": feats}

    @app.get("/api/runs/{run}/figures/{name}")
    def figure(run: str, name: str) -> FileResponse:
        return FileResponse(bench.run(run).figure(name), media_type="image/png", headers={"Cache-Control": PNG_CACHE})

    # ------------------------------------------------------------------ changes
    @app.get("/api/changes")
    def changes(
        run: Annotated[str | None, Query(max_length=200)] = None,
        sort: Literal["rank", "rarity", "magnitude", "score", "date"] = "rank",
        order: Literal["asc", "desc"] | None = None,
        cluster: Annotated[list[int] | None, Query()] = None,
        date_from: Annotated[str | None, Query(max_length=40)] = None,
        date_to: Annotated[str | None, Query(max_length=40)] = None,
        status: Literal["all", "confirmed", "pending"] = "all",
        bbox: Annotated[str | None, Query(max_length=200)] = None,
        label: Literal["all", "relevant", "irrelevant", "unlabelled"] = "all",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        return bench.changes(
            run, sort, order, cluster or (), date_from, date_to, status, _parse_bbox(bbox), label, limit, offset
        )

    @app.get("/api/changes/{run}/{event_id}")
    def detail(run: str, event_id: str) -> dict[str, Any]:
        return bench.detail(run, event_id)

    @app.get("/api/changes/{run}/{event_id}/thumb/{t}.png")
    def thumb(run: str, event_id: str, t: int) -> Response:
        r = bench.run(run)
        ev = r.events.iloc[r.position(event_id)]
        return _png(r.imagery.thumb(t, int(ev["y0"]), int(ev["x0"]), r.size))

    @app.post("/api/similar")
    def similar(body: SimilarRequest) -> dict[str, Any]:
        return bench.similar(
            body.run,
            body.event_id,
            body.k,
            body.use_feedback,
            body.runs,
            body.date_from,
            body.date_to,
            body.exclude_same_patch,
        )

    # ------------------------------------------------------------------ feedback and types
    @app.get("/api/feedback")
    def feedback(run: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
        return {"labels": bench.labels(run)}

    @app.post("/api/feedback")
    def set_feedback(body: FeedbackRequest) -> dict[str, Any]:
        return bench.set_label(body.run, body.event_id, body.cluster, body.label)

    @app.get("/api/feedback/export.parquet")
    def export(run: Annotated[str, Query(max_length=200)]) -> Response:
        name = f"changescope_labels_{run}.parquet"
        return Response(
            bench.export(run),
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/api/types")
    def types(run: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
        return {"runs": bench.types(run)}

    # ------------------------------------------------------------------ the frontend
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = STATIC / "index.html"
        if not page.is_file():
            raise NotFoundError("the web app's built files are missing from this install; reinstall changescope")
        return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC, follow_symlink=False), name="static")

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    return app


def check_host(host: str) -> str | None:
    """A warning when ``host`` is not a loopback address (the app has no authentication)."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return None
    if host.startswith("127."):
        return None
    return f"--host {host} exposes your run folders and labels to the network; the app has no login"


_ = ParameterError  # re-exported for callers that catch it from here
