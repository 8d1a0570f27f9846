"""Socrata SODA 2.1 connector (public-safety incident reports).

A dataset is read incrementally by its ``:updated_at`` system field (a fixed timestamp, UTC):
the window [since, until) is walked in slices no longer than the dataset's ``cursor.window`` and
each slice is asked for with::

    GET [base]/resource/<4x4>.json?$select=:*,*
        &$where=:updated_at >= '<since>' AND :updated_at < '<until>'
        &$order=:id&$limit=<n>[&$offset=<k>]

paging until a short page. ``$order=:id`` keeps the pages stable (without an order Socrata does
not promise one). By default pages are keyset-paged — each next page adds ``AND :id > '<last :id>'``
to the ``$where`` instead of an ``$offset`` — because with offsets a record updated while the run
pages leaves the window and shifts every later record one place up: an unchanged record would be
skipped, and nothing would ever bring it back. ``options.paging: offset`` uses ``$offset`` for
portals that refuse ``:id`` comparisons. The app token goes in the ``X-App-Token`` header,
never in the query string, so it cannot reach a log line or an error message.

``parse`` turns a page (the JSON array exactly as received) into flat records and applies what the
contract's ``options`` ask of it — standard knowledge that belongs here, not in the conformer:

* ``floating_timezone`` (e.g. ``+08:00``): SODA 2 floating timestamps carry no zone; the
  publisher's zone is appended to the values of the contract's ``timestamptz`` columns that lack
  one, so they are read as local time of the publishing agency and not refused as ambiguous.
* ``point_field`` + ``location_cell_degrees``: the source records where an incident happened as a
  precise point (for incidents at a home: the building). The point is replaced by the centre of
  its lattice cell (``location_cell_lat`` / ``location_cell_long``, e.g. 0.01° ≈ 1 km) before the
  record goes anywhere; the precise point exists only in the sealed landing payload.
* ``drop_fields``: source fields that never enter the lake (e.g. the building-level ``address``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.contracts import Dataset
from ingest.sources import Page, SourceError, Window
from ingest.sources._json import array_of_objects, load_page
from ingest.sources.http import HttpClient, HttpConnector

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 50000  # SODA 2.1's largest $limit
DEFAULT_SELECT = ":*,*"
DEFAULT_CELL_DEGREES = 0.01
DATASET_ID = re.compile(r"^[a-z0-9]{4}-[a-z0-9]{4}$")
_FLOATING = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
CELL_LAT, CELL_LONG = "location_cell_lat", "location_cell_long"


def soql_timestamp(value: datetime) -> str:
    """A window bound as a SoQL fixed-timestamp literal: UTC, milliseconds, ``Z``."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


def _cell(value: float, degrees: float) -> float:
    """Centre of the lattice cell holding ``value``: every point in the cell maps to the same number."""
    return round(math.floor(value / degrees) * degrees + degrees / 2, 6)


def _point(value: Any) -> tuple[float, float] | None:
    """(lat, long) of a SODA 2.1 Point (GeoJSON, long first) or a legacy 2.0 Location object."""
    try:
        if isinstance(value, dict) and value.get("type") == "Point":
            long, lat = value["coordinates"][:2]
            return float(lat), float(long)
        if isinstance(value, dict) and "latitude" in value and "longitude" in value:
            return float(value["latitude"]), float(value["longitude"])
    except (TypeError, ValueError, KeyError, IndexError):
        return None
    return None


def flatten(item: dict[str, Any], dataset: Dataset | None = None) -> dict[str, Any]:
    """One SODA row as a flat record for the contract (see the module docstring for the options)."""
    options = dataset.options if dataset is not None else {}
    rec = dict(item)
    point_field = str(options.get("point_field", ""))
    if point_field:
        point = _point(rec.pop(point_field, None))
        degrees = float(options.get("location_cell_degrees", DEFAULT_CELL_DEGREES))
        rec[CELL_LAT] = _cell(point[0], degrees) if point else None
        rec[CELL_LONG] = _cell(point[1], degrees) if point else None
    for name in str(options.get("drop_fields", "")).split(","):
        if name.strip():
            rec.pop(name.strip(), None)
    zone = options.get("floating_timezone")
    if dataset is not None and zone:
        for col in dataset.columns:
            value = rec.get(col.field)
            if col.type == "timestamptz" and isinstance(value, str) and _FLOATING.match(value):
                rec[col.field] = f"{value}{zone}"
    return rec


class SocrataConnector(HttpConnector):
    SOURCE = "socrata"

    def make_client(self, base_url: str, api_key: str | None, **kwargs: Any) -> HttpClient:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["X-App-Token"] = api_key
        return HttpClient(base_url, source=self.source, headers=headers, **kwargs)

    def extract(self, dataset: Dataset, window: Window | None, state: str | None = None) -> Iterator[Page]:
        where = f"{self.source}.{dataset.name}"
        if not DATASET_ID.match(dataset.endpoint):
            raise SourceError(
                f"{where}: endpoint {dataset.endpoint!r} is not a Socrata dataset id (4x4 like 'inc4-dnt1'); "
                f"fix the 'endpoint' of the dataset in ingest/config/sources/{self.source}.yml"
            )
        if window is None or dataset.cursor is None:
            raise SourceError(
                f"{where}: a Socrata dataset is read by a time window of :updated_at; "
                "declare a 'cursor' on the column mapped to :updated_at in the contract"
            )
        limit = int(self.page_size or dataset.options.get("page_size", DEFAULT_PAGE_SIZE))
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise SourceError(f"{where}: page_size must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        select = str(dataset.options.get("select", DEFAULT_SELECT))
        cursor_field = dataset.column(dataset.cursor.field).field  # e.g. ":updated_at"
        keyset = dataset.options.get("paging", "keyset") == "keyset"
        resource = f"resource/{dataset.endpoint}.json"
        step: timedelta = dataset.cursor.window_delta
        start = window.since
        while start < window.until:
            end = min(start + step, window.until)
            lo, hi = soql_timestamp(start), soql_timestamp(end)
            offset, after = 0, None
            while True:
                where_clause = f"{cursor_field} >= '{lo}' AND {cursor_field} < '{hi}'"
                params: dict[str, Any] = {"$select": select, "$order": ":id", "$limit": limit}
                if keyset:
                    if after is not None:
                        where_clause += f" AND :id > '{after}'"
                    label = f"{dataset.endpoint} {lo}..{hi} after {after or 'start'}"
                else:
                    params["$offset"] = offset
                    label = f"{dataset.endpoint} {lo}..{hi} offset {offset}"
                params["$where"] = where_clause
                response = self.client.get(resource, params, what=f"GET {resource} ({label})")
                page = self.parse(response.content, label=label, dataset=dataset, source=self.source)
                if page.records:
                    yield page
                if len(page.records) < limit:
                    break
                offset += limit
                after = str(page.records[-1].get(":id") or "")
                if keyset and (not after or "'" in after):
                    raise SourceError(
                        f"{where}: {label}: a record without a usable :id; set options.paging: offset"
                    )
            start = end

    @staticmethod
    def parse(payload: bytes, *, label: str, dataset: Dataset | None = None, source: str = "socrata") -> Page:
        """A SODA JSON array as a page of flat records (also used to replay landed payloads)."""
        body = load_page(payload, source=source, label=label)
        if isinstance(body, dict) and body.get("error"):
            raise SourceError(
                f"{source}: {label}: Socrata answered an error: {body.get('code', '?')}: "
                f"{str(body.get('message', ''))[:300]}. Check the dataset id and the query; "
                "nothing from this run was committed."
            )
        rows = array_of_objects(body, source=source, label=label, of="rows (SODA 2.1)")
        return Page(payload=payload, records=[flatten(r, dataset) for r in rows], label=label)

    @staticmethod
    def without(payload: bytes, keep_record: Callable[[dict[str, Any]], bool]) -> tuple[bytes, int]:
        """The payload minus the rows ``keep_record`` rejects (erasure requests): (bytes, removed)."""
        rows = json.loads(payload)
        kept = [r for r in rows if keep_record(flatten(r))]
        if len(kept) == len(rows):
            return payload, 0
        return json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode(), len(rows) - len(kept)
