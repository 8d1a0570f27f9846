"""Open311 GeoReport v2 connector (resident service requests).

``services.json`` is read whole. ``requests.json`` is read incrementally: the window
[since, until) of ``updated_datetime`` is walked in slices no longer than the dataset's
``cursor.window`` (the spec caps a query at 90 days) using the widely implemented
``updated_after`` / ``updated_before`` extension, and each slice is paged with ``page`` /
``page_size`` until a short page. Records are yielded as received; deduplication across pages
happens in the lake writer, on the primary key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import Any

from ingest.contracts import Dataset
from ingest.sources import Page, SourceError, Window
from ingest.sources._json import array_of_objects, load_page
from ingest.sources.http import HttpClient, HttpConnector

MAX_WINDOW = timedelta(days=90)


def _iso(value: Any) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Open311Connector(HttpConnector):
    SOURCE = "open311"
    PAGE_SIZE = 1000
    page_size: int

    def make_client(self, base_url: str, api_key: str | None, **kwargs: Any) -> HttpClient:
        # GeoReport v2 sends the key as a query parameter: HttpClient keeps it out of logs and errors
        secret = {"api_key": api_key} if api_key else None
        return HttpClient(base_url, source=self.source, secret_params=secret, **kwargs)

    def extract(self, dataset: Dataset, window: Window | None, state: str | None = None) -> Iterator[Page]:
        if dataset.endpoint == "services.json":
            yield self._fetch(dataset.endpoint, {}, label="services")
            return
        if dataset.endpoint == "requests.json":
            if window is None:
                raise SourceError(f"{self.source}.{dataset.name}: an incremental dataset needs a window")
            yield from self._requests(dataset, window)
            return
        raise SourceError(f"{self.source}: unknown endpoint {dataset.endpoint!r} in contract {dataset.name}")

    def _requests(self, dataset: Dataset, window: Window) -> Iterator[Page]:
        step = min(dataset.cursor.window_delta if dataset.cursor else MAX_WINDOW, MAX_WINDOW)
        start = window.since
        while start < window.until:
            end = min(start + step, window.until)
            page_no = 1
            while True:
                params = {
                    "updated_after": _iso(start),
                    "updated_before": _iso(end),
                    "page": page_no,
                    "page_size": self.page_size,
                }
                label = f"requests {_iso(start)}..{_iso(end)} page {page_no}"
                page = self._fetch(dataset.endpoint, params, label=label)
                if page.records:
                    yield page
                if len(page.records) < self.page_size:
                    break
                page_no += 1
            start = end

    def _fetch(self, endpoint: str, params: dict[str, Any], *, label: str) -> Page:
        response = self.client.get(endpoint, params, what=f"GET {endpoint} ({label})")
        return self.parse(response.content, label=label, source=self.source)

    @staticmethod
    def without(payload: bytes, keep_record: Callable[[dict[str, Any]], bool]) -> tuple[bytes, int]:
        """The payload minus the records ``keep_record`` rejects (erasure requests): (bytes, removed)."""
        records = json.loads(payload)
        kept = [r for r in records if keep_record(r)]
        if len(kept) == len(records):
            return payload, 0
        return json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode(), len(records) - len(kept)

    @staticmethod
    def parse(payload: bytes, *, label: str, dataset: Dataset | None = None, source: str = "open311") -> Page:
        """A GeoReport v2 JSON array as a page (also used to replay landed payloads)."""
        body = load_page(payload, source=source, label=label)
        records = array_of_objects(body, source=source, label=label, of="objects (GeoReport v2)")
        return Page(payload=payload, records=records, label=label)
