"""CKAN Action API connector (open-data portals' DataStore resources).

``dataset.endpoint`` names the DataStore resource either by its id (a UUID or DataStore alias,
used as is) or as ``<package name>/<resource name>``, resolved once per run with
``package_show`` — names survive a portal re-creating a resource, ids do not.

``dataset.options``:

* ``mode: full`` (default) — the whole resource with ``datastore_search``, paged with
  ``limit``/``offset`` in ``_id`` order until a page returns fewer rows than asked for or the
  offset reaches ``result.total``. Meant for ``disposition: replace``: the pipeline's change
  detection commits nothing when the snapshot is identical.
* ``mode: id_cursor`` — append-only resources: only the rows after the last ``_id`` seen
  (the resume state), with ``datastore_search_sql`` and ``SELECT * FROM "<resource>" WHERE _id
  > N ORDER BY _id LIMIT n`` (keyset paging; ``datastore_search``'s ``filters`` only match
  equality on CKAN < 2.11). Each page reports the highest ``_id`` it holds as ``Page.state``.
  Needs ``ckan.datastore.sqlsearch.enabled`` on the portal.
* ``page_size`` — rows per call (default 1000; CKAN caps it at ``ckan.datastore.search.rows_max``,
  32000 by default, and says so in ``result.limit`` / ``records_truncated``).

Each page's payload is the JSON response exactly as received; its records are
``result.records`` with ``_id`` kept (the DataStore row id) and ``_full_text`` (CKAN's internal
search vector, returned by ``SELECT *``) dropped. ``success: false`` is an error even with HTTP
200. The API key goes in the ``Authorization`` header (never the query string, never a log line).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from ingest.contracts import Dataset
from ingest.sources import Page, SourceError, Window
from ingest.sources._json import load_page
from ingest.sources.http import HttpClient, HttpConnector

DEFAULT_PAGE_SIZE = 1000
MODES = ("full", "id_cursor")
INTERNAL_FIELDS = ("_full_text",)
# Resource ids are UUIDs; aliases are "a-z0-9_-". Anything else never reaches the SQL text.
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


class CkanConnector(HttpConnector):
    SOURCE = "ckan"

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._resolved: dict[str, str] = {}

    def make_client(self, base_url: str, api_key: str | None, **kwargs: Any) -> HttpClient:
        # the portal root is configured; the Action API lives below it
        headers = {"Authorization": api_key} if api_key else None
        return HttpClient(
            base_url.rstrip("/") + "/api/3/action", source=self.source, headers=headers, **kwargs
        )

    # ------------------------------------------------------------------ extraction

    def extract(self, dataset: Dataset, window: Window | None, state: str | None = None) -> Iterator[Page]:
        where = f"{self.source}.{dataset.name}"
        mode = str(dataset.options.get("mode", "full"))
        if mode not in MODES:
            raise SourceError(
                f"{where}: options.mode {mode!r} is not one of {', '.join(MODES)}; fix the contract"
            )
        size = self._page_size(dataset)
        resource_id = self.resolve(dataset)
        if mode == "full":
            yield from self._full(dataset, resource_id, size)
        else:
            yield from self._after_id(dataset, resource_id, size, self._last_id(where, state))

    def _page_size(self, dataset: Dataset) -> int:
        raw = self.page_size or dataset.options.get("page_size", DEFAULT_PAGE_SIZE)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise SourceError(
                f"{self.source}.{dataset.name}: options.page_size must be a positive integer, got {raw!r}"
            )
        return raw

    @staticmethod
    def _last_id(where: str, state: str | None) -> int:
        if state in (None, ""):
            return 0
        try:
            value = int(state)
        except ValueError:
            value = -1
        if value < 0:
            raise SourceError(
                f"{where}: the saved resume state {state!r} is not a DataStore _id; "
                "it is the last _id loaded — reset it (or drop the table) to reload from the start"
            )
        return value

    def resolve(self, dataset: Dataset) -> str:
        """The DataStore resource id of ``dataset.endpoint`` (``package/resource`` via package_show)."""
        endpoint = dataset.endpoint.strip()
        where = f"{self.source}.{dataset.name}"
        if "/" not in endpoint:
            resource_id = endpoint
        elif endpoint in self._resolved:
            resource_id = self._resolved[endpoint]
        else:
            package, _, name = endpoint.partition("/")
            label = f"package_show {package}"
            response = self.client.get("package_show", {"id": package}, what=f"GET package_show ({where})")
            body = _envelope(response.content, label=label, source=self.source)
            resources = body["result"].get("resources") or []
            matches = [r for r in resources if name in (r.get("name"), r.get("id"))]
            if not matches:
                known = ", ".join(str(r.get("name")) for r in resources) or "none"
                raise SourceError(
                    f"{where}: package {package!r} has no resource named {name!r} (it has: {known}); "
                    "fix the dataset endpoint in the contract"
                )
            if not matches[0].get("datastore_active", True):
                raise SourceError(
                    f"{where}: resource {name!r} of {package!r} is not in the DataStore "
                    "(datastore_active is false); ask the portal team to push it"
                )
            resource_id = str(matches[0]["id"])
            self._resolved[endpoint] = resource_id
        if not _RESOURCE_ID.match(resource_id):
            raise SourceError(f"{where}: {resource_id!r} is not a CKAN resource id or alias")
        return resource_id

    def _full(self, dataset: Dataset, resource_id: str, size: int) -> Iterator[Page]:
        offset, page_no = 0, 1
        while True:
            params = {"resource_id": resource_id, "limit": size, "offset": offset, "sort": "_id asc"}
            label = f"{dataset.name} datastore_search offset {offset} (page {page_no})"
            page = self._fetch("datastore_search", params, label)
            result = json.loads(page.payload)["result"]
            if page.records:
                yield page
            # the portal may cap limit at its rows_max: its answer says what it applied
            applied = min(size, int(result.get("limit") or size))
            offset += len(page.records)
            total = result.get("total")
            if len(page.records) < applied or not page.records or (total is not None and offset >= total):
                return
            page_no += 1

    def _after_id(self, dataset: Dataset, resource_id: str, size: int, last_id: int) -> Iterator[Page]:
        page_no = 1
        while True:
            sql = f'SELECT * FROM "{resource_id}" WHERE _id > {last_id} ORDER BY _id LIMIT {size}'
            label = f"{dataset.name} datastore_search_sql _id > {last_id} (page {page_no})"
            page = self._fetch("datastore_search_sql", {"sql": sql}, label)
            if not page.records:
                return
            ids = [r.get("_id") for r in page.records]
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise SourceError(
                    f"{self.source}.{dataset.name}: {label}: a record has no integer _id; "
                    "the _id cursor needs the DataStore row id in every record"
                )
            newest = max(ids)
            if newest <= last_id:
                raise SourceError(
                    f"{self.source}.{dataset.name}: {label}: the portal returned no _id above {last_id}; "
                    "it ignored the WHERE clause — nothing from this run was committed"
                )
            last_id = newest
            page.state = str(last_id)
            yield page
            truncated = bool(json.loads(page.payload)["result"].get("records_truncated"))
            if len(page.records) < size and not truncated:
                return
            page_no += 1

    def _fetch(self, action: str, params: dict[str, Any], label: str) -> Page:
        response = self.client.get(action, params, what=f"GET {action} ({self.source}: {label})")
        return self.parse(response.content, label=label, source=self.source)

    # ------------------------------------------------------------------ offline

    @staticmethod
    def parse(payload: bytes, *, label: str, dataset: Dataset | None = None, source: str = "ckan") -> Page:
        """A CKAN action response (datastore_search or datastore_search_sql) as a page of flat records."""
        body = _envelope(payload, label=label, source=source)
        result = body["result"]
        records = result.get("records") if isinstance(result, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SourceError(
                f"{source}: {label}: result.records is not a list of objects — is records_format "
                "'objects' (the default)?"
            )
        flat = [{k: v for k, v in r.items() if k not in INTERNAL_FIELDS} for r in records]
        return Page(payload=payload, records=flat, label=label)

    @staticmethod
    def without(payload: bytes, keep_record: Callable[[dict[str, Any]], bool]) -> tuple[bytes, int]:
        """The response minus the records ``keep_record`` rejects (erasure): (bytes, removed)."""
        body = json.loads(payload)
        records = body["result"]["records"]
        kept = [r for r in records if keep_record({k: v for k, v in r.items() if k not in INTERNAL_FIELDS})]
        if len(kept) == len(records):
            return payload, 0
        body["result"]["records"] = kept
        return json.dumps(body, ensure_ascii=False, separators=(", ", ": ")).encode(), len(records) - len(
            kept
        )


def _envelope(payload: bytes, *, label: str, source: str) -> dict[str, Any]:
    """The decoded CKAN envelope; ``success: false`` (even with HTTP 200) is a SourceError."""
    body = load_page(payload, source=source, label=label)
    if not isinstance(body, dict) or "success" not in body:
        raise SourceError(
            f"{source}: {label}: not a CKAN action response (no 'success' key); check the base URL "
            "points at the portal root (…/api/3/action is added by the connector)"
        )
    if body.get("success") is not True:
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        kind = error.get("__type", "unknown error")
        detail = error.get("message") or "; ".join(
            f"{k}: {v}" for k, v in error.items() if k not in {"__type", "message"}
        )
        raise SourceError(
            f"{source}: {label}: CKAN answered success=false — {kind}: {detail or 'no message'}. "
            "Nothing from this run was committed."
        )
    if "result" not in body:
        raise SourceError(f"{source}: {label}: CKAN response has no 'result'")
    return body
