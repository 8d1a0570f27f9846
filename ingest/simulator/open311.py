"""Open311 GeoReport v2 server over a :class:`~ingest.simulator.district.District`.

Routes (all JSON):

- ``GET  /open311/v2/services.json``
- ``GET  /open311/v2/requests.json`` — ``start_date``/``end_date`` (requested_datetime, both
  inclusive), ``updated_after``/``updated_before`` (updated_datetime, ``updated_after <= x <
  updated_before``: lower bound inclusive, upper exclusive), ``status`` and ``service_code``
  (comma-separated lists allowed), ``page`` (1-based, default 1), ``page_size`` (default 500,
  max 1000). Ordered by (updated_datetime, service_request_id). Without any date parameter: requests
  whose requested_datetime is within the 90 days before the district clock. If only one bound of a
  pair is given, the other defaults to 90 days from it. A window longer than 90 days, a reversed
  window, an unparseable date or a bad page/page_size → HTTP 400 ``[{"code": 400, "description"}]``.
  Naive datetimes are read as +08:00; a ``+`` decoded to a space in the offset is tolerated.
- ``GET  /open311/v2/requests/{service_request_id}.json`` → ``[request]`` or 404.
- Admin: ``POST /_sim/advance?days=1&new_requests=N``, ``POST /_sim/faults`` (JSON
  :class:`Fault` fields), ``DELETE /_sim/faults``, ``GET /_sim/truth``, ``GET /_sim/dirt``.
"""

from __future__ import annotations

import asyncio
import re
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ingest.simulator.dirt import DirtApplier, DirtConfig
from ingest.simulator.district import TZ, District, PublishedRequest, iso
from ingest.simulator.faults import Fault, FaultCounters, FaultQueue

PREFIX = "/open311/v2"
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
MAX_WINDOW = timedelta(days=90)
JSON_MEDIA = "application/json; charset=utf-8"
_SPACE_OFFSET = re.compile(r" (\d{2}:?\d{2})$")


class FaultBody(BaseModel):
    status: int | None = Field(default=503, ge=400, le=599)
    count: int = Field(default=1, ge=1)
    retry_after: float | None = Field(default=None, ge=0)
    delay_seconds: float = Field(default=0.0, ge=0, le=600)


@dataclass
class SimState(FaultCounters):
    """Mutable server-side state, available as ``app.state.sim`` (``calls`` counts Open311 requests
    received, faulted ones included)."""

    district: District
    dirt: DirtApplier
    faults: FaultQueue = field(default_factory=FaultQueue)
    api_keys: set[str] = field(default_factory=set)  # api_key values received (tests check keys were sent)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache: OrderedDict[tuple[Any, ...], list[PublishedRequest]] = field(default_factory=OrderedDict)

    def add_fault(self, fault: Fault) -> int:
        """Queue ``fault``; returns the Open311 calls now pending a fault."""
        return self.faults.add(fault)

    def pending_faults(self) -> int:
        return self.faults.pending()


class BadRequest(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def open311_error(code: int, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse([{"code": code, "description": description}], status_code=code, headers=headers)


def parse_datetime(name: str, value: str) -> datetime:
    text = _SPACE_OFFSET.sub(r"+\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest(f"{name} is not an ISO 8601 datetime: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=TZ)
    return parsed


def _window(
    name_lo: str, lo: datetime | None, name_hi: str, hi: datetime | None
) -> tuple[datetime | None, datetime | None]:
    if lo is None and hi is None:
        return None, None
    if lo is None and hi is not None:
        lo = hi - MAX_WINDOW
    if hi is None and lo is not None:
        hi = lo + MAX_WINDOW
    if lo is None or hi is None:  # unreachable, keeps the type checker happy
        return None, None
    if hi < lo:
        raise BadRequest(f"{name_hi} must not be before {name_lo}")
    if hi - lo > MAX_WINDOW:
        raise BadRequest(f"the {name_lo}/{name_hi} window may not exceed 90 days")
    return lo, hi


def _int_param(params: Any, name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer: {raw!r}") from exc
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise BadRequest(f"{name} must be {bound}, got {value}")
    return value


def _list_param(params: Any, name: str) -> set[str] | None:
    raw = params.get(name)
    if not raw:
        return None
    return {v.strip() for v in raw.split(",") if v.strip()}


def _join(parts: Iterable[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]"


def _select(state: SimState, params: Any) -> tuple[list[PublishedRequest], datetime]:
    """Filtered, ordered records for a requests.json query (cached per district version)."""
    snapshot = state.district.snapshot()
    dates = {k: params.get(k) for k in ("start_date", "end_date", "updated_after", "updated_before")}
    parsed = {k: parse_datetime(k, v) for k, v in dates.items() if v}
    start, end = _window("start_date", parsed.get("start_date"), "end_date", parsed.get("end_date"))
    after, before = _window(
        "updated_after", parsed.get("updated_after"), "updated_before", parsed.get("updated_before")
    )
    if not parsed:
        start, end = snapshot.clock - MAX_WINDOW, None
    statuses = _list_param(params, "status")
    if statuses is not None and not statuses <= {"open", "closed"}:
        raise BadRequest(f"status must be open or closed, got {params.get('status')!r}")
    codes = _list_param(params, "service_code")
    key = (
        snapshot.version,
        start,
        end,
        after,
        before,
        frozenset(statuses or ()),
        frozenset(codes or ()),
    )
    with state.lock:
        hit = state.cache.get(key)
        if hit is not None:
            state.cache.move_to_end(key)
            return hit, snapshot.clock
    lo, hi = 0, len(snapshot.records)
    if after is not None and before is not None:
        lo = bisect_left(snapshot.updated, after)
        hi = bisect_left(snapshot.updated, before)
    selected = [
        r
        for r in snapshot.records[lo:hi]
        if (start is None or r.requested >= start)
        and (end is None or r.requested <= end)
        and (statuses is None or r.status in statuses)
        and (codes is None or r.service_code in codes)
    ]
    with state.lock:
        state.cache[key] = selected
        while len(state.cache) > 32:
            state.cache.popitem(last=False)
    return selected, snapshot.clock


def create_open311_app(
    district: District,
    dirt: DirtConfig | None = None,
    faults: Iterable[Fault] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``district`` as Open311 GeoReport v2 under ``/open311/v2``.

    ``dirt`` injects deterministic dirt (logged in ``district.dirt_log``); ``faults`` pre-queues
    faults for the first Open311 calls. Server state is ``app.state.sim`` (:class:`SimState`).
    """
    app = FastAPI(title="Community district simulator — Open311 GeoReport v2", docs_url=None, redoc_url=None)
    state = SimState(district, DirtApplier(dirt, district.seed, district.dirt_log))
    for fault in faults or ():
        state.add_fault(fault)
    app.state.sim = state

    @app.middleware("http")
    async def open311_faults(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.startswith(PREFIX + "/"):
            return await call_next(request)
        if "api_key" in request.query_params:
            state.api_keys.add(request.query_params["api_key"])
        fault = state.faults.take()
        if fault is None:
            return await call_next(request)
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.status is None or fault.status < 400:
            return await call_next(request)
        return open311_error(fault.status, fault.message, fault.headers())

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return open311_error(400, exc.description)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(PREFIX + "/"):
            return open311_error(exc.status_code, str(exc.detail))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get(PREFIX + "/services.json")
    async def services() -> JSONResponse:
        return JSONResponse(district.services())

    @app.get(PREFIX + "/requests.json")
    async def requests_json(request: Request) -> Response:
        params = request.query_params
        page = _int_param(params, "page", 1, 1)
        page_size = _int_param(params, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        selected, clock = _select(state, params)
        applier = state.dirt
        served = applier.expand_duplicates(selected) if applier.config.duplicate_rate else None
        begin = (page - 1) * page_size
        if served is None:
            rows = [(r, False) for r in selected[begin : begin + page_size]]
        else:
            rows = served[begin : begin + page_size]
        body = _join(applier.render(r.request_id, r.data, r.body, clock, copy) for r, copy in rows)
        body = applier.maybe_truncate(page, body, len(rows), page_size, str(params))
        return Response(body, media_type=JSON_MEDIA)

    @app.get(PREFIX + "/requests/{request_id}.json")
    async def request_json(request_id: str) -> Response:
        snapshot = district.snapshot()
        record = snapshot.by_id.get(request_id)
        if record is None:
            return open311_error(404, f"service request {request_id!r} not found")
        body = state.dirt.render(record.request_id, record.data, record.body, snapshot.clock)
        return Response(_join([body]), media_type=JSON_MEDIA)

    # ------------------------------------------------------------------ admin (not Open311)

    @app.post("/_sim/advance")
    async def advance(days: float = 1.0, new_requests: int | None = None) -> JSONResponse:
        try:
            counts = district.advance(days=days, new_requests=new_requests)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({**counts, "clock": iso(district.clock)})

    @app.post("/_sim/faults")
    async def add_fault(body: FaultBody) -> JSONResponse:
        pending = state.add_fault(Fault(body.status, body.count, body.retry_after, body.delay_seconds))
        return JSONResponse({"pending": pending})

    @app.delete("/_sim/faults")
    async def clear_faults() -> JSONResponse:
        state.faults.clear()
        return JSONResponse({"pending": 0})

    @app.get("/_sim/truth")
    async def truth() -> JSONResponse:
        snapshot = district.snapshot()
        calls, faulted, pending = state.faults.counts()
        return JSONResponse(
            {
                "requests": len(snapshot.records),
                "open": sum(1 for r in snapshot.records if r.status == "open"),
                "clock": iso(snapshot.clock),
                "calls": calls,
                "faulted": faulted,
                "faults_pending": pending,
            }
        )

    @app.get("/_sim/dirt")
    async def dirt_log() -> JSONResponse:
        return JSONResponse({"counts": district.dirt_log.counts(), "log": district.dirt_log.as_dict()})

    return app
