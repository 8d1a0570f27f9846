"""Open Referral HSDS 3.0 API connector (the civil affairs bureau's social-service directory).

Each dataset is one HSDS list endpoint (``organizations``, ``services``, ``locations``,
``service_at_locations``), read whole on every run: the directory is small and HSDS offers no
reliable change feed for every entity (``modified_after`` exists for services only), so the
datasets are full snapshots (``disposition: replace``) and the lake's change detection commits
nothing when nothing changed.

Paging follows the HSDS 3.0 OpenAPI: ``page`` (1-based) and ``per_page`` query parameters, and
the ``Page`` envelope ``{total_items, total_pages, page_number, size, first_page, last_page,
empty, contents}``; pages are requested until ``last_page`` is true. Each HTTP page is one
:class:`~ingest.sources.Page` (memory stays bounded by ``per_page``).

HSDS objects are nested; the standard knowledge of how to flatten them lives here
(:func:`flatten`): an organisation's Unified Social Credit Code comes from its
``organization_identifiers`` entry with ``identifier_scheme`` ``CN-USCC`` (served with
``full=true``), a location's address from ``addresses[0]``, a service's timetable from
``schedules[0]``, and the district's grid / community / service-category codes from
``attributes`` by ``link_type``.

Dataset options (contract ``options``): ``per_page`` (default 100), ``full`` (ask for the fully
nested objects, default true for organisations and services), ``identifier_scheme`` (default
``CN-USCC``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from ingest.contracts import Dataset
from ingest.sources import Page, SourceError, Window
from ingest.sources._json import load_page
from ingest.sources.http import HttpClient, HttpConnector

ENTITIES = ("organizations", "services", "locations", "service_at_locations")
DEFAULT_PER_PAGE = 100
USCC_SCHEME = "CN-USCC"
# attributes.link_type -> flat column, per entity (the district's HSDS profile)
ATTRIBUTE_COLUMNS: dict[str, dict[str, str]] = {
    "services": {"service_category": "category"},
    "locations": {"grid": "grid_code", "community": "community_code"},
}


def _first(items: Any) -> dict[str, Any]:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _attributes(item: dict[str, Any], entity: str) -> dict[str, Any]:
    wanted = ATTRIBUTE_COLUMNS.get(entity, {})
    out: dict[str, Any] = dict.fromkeys(wanted.values())
    for attr in item.get("attributes") or ():
        if not isinstance(attr, dict) or attr.get("link_type") not in wanted:
            continue
        term = attr.get("taxonomy_term") if isinstance(attr.get("taxonomy_term"), dict) else {}
        out[wanted[attr["link_type"]]] = attr.get("value") or term.get("code")
    return out


def _uscc(item: dict[str, Any], scheme: str) -> str | None:
    for ident in item.get("organization_identifiers") or ():
        if isinstance(ident, dict) and ident.get("identifier_scheme") == scheme:
            return ident.get("identifier")
    # Some publishers still put the registration number in the deprecated tax_id.
    tax_id = item.get("tax_id")
    return tax_id if isinstance(tax_id, str) and len(tax_id.strip()) == 18 else None


def _organization(item: dict[str, Any], scheme: str) -> dict[str, Any]:
    return {
        "id": item.get("id"),
        "name": item.get("name"),
        "alternate_name": item.get("alternate_name"),
        "description": item.get("description"),
        "email": item.get("email"),
        "website": item.get("website"),
        "legal_status": item.get("legal_status"),
        "year_incorporated": item.get("year_incorporated"),
        "parent_organization_id": item.get("parent_organization_id"),
        "uscc": _uscc(item, scheme),
        "phone": _first(item.get("phones")).get("number"),
    }


def _service(item: dict[str, Any]) -> dict[str, Any]:
    schedule = _first(item.get("schedules"))
    languages = [
        lang.get("code") or lang.get("name")
        for lang in item.get("languages") or ()
        if isinstance(lang, dict) and (lang.get("code") or lang.get("name"))
    ]
    organization = item.get("organization") if isinstance(item.get("organization"), dict) else {}
    return {
        "id": item.get("id"),
        "organization_id": item.get("organization_id") or organization.get("id"),
        "name": item.get("name"),
        "alternate_name": item.get("alternate_name"),
        "description": item.get("description"),
        "status": item.get("status"),
        "eligibility_description": item.get("eligibility_description"),
        "fees_description": item.get("fees_description"),
        "application_process": item.get("application_process"),
        "minimum_age": item.get("minimum_age"),
        "maximum_age": item.get("maximum_age"),
        "alert": item.get("alert"),
        "languages": ",".join(languages) if languages else None,
        "schedule_byday": schedule.get("byday"),
        "schedule_opens_at": schedule.get("opens_at"),
        "schedule_closes_at": schedule.get("closes_at"),
        "schedule_description": schedule.get("description"),
        "schedule_valid_from": schedule.get("valid_from"),
        "schedule_valid_to": schedule.get("valid_to"),
        "assured_date": item.get("assured_date"),
        "last_modified": item.get("last_modified"),
        **_attributes(item, "services"),
    }


def _location(item: dict[str, Any]) -> dict[str, Any]:
    address = _first(item.get("addresses"))
    return {
        "id": item.get("id"),
        "location_type": item.get("location_type"),
        "organization_id": item.get("organization_id"),
        "name": item.get("name"),
        "description": item.get("description"),
        "address_1": address.get("address_1"),
        "city": address.get("city"),
        "region": address.get("region"),
        "state_province": address.get("state_province"),
        "postal_code": address.get("postal_code"),
        "country": address.get("country"),
        "latitude": item.get("latitude"),
        "longitude": item.get("longitude"),
        "external_identifier": item.get("external_identifier"),
        "external_identifier_type": item.get("external_identifier_type"),
        **_attributes(item, "locations"),
    }


def _service_at_location(item: dict[str, Any]) -> dict[str, Any]:
    service = item.get("service") if isinstance(item.get("service"), dict) else {}
    location = item.get("location") if isinstance(item.get("location"), dict) else {}
    return {
        "id": item.get("id"),
        "service_id": item.get("service_id") or service.get("id"),
        "location_id": item.get("location_id") or location.get("id"),
        "description": item.get("description"),
    }


def entity_of(items: list[dict[str, Any]]) -> str:
    """Which HSDS entity a page of items holds, from their fields (when no dataset is given)."""
    keys: set[str] = set()
    for item in items:
        keys.update(item)
    if "service_id" in keys and ("location_id" in keys or "location" in keys):
        return "service_at_locations"
    if keys & {"location_type", "addresses", "latitude", "external_identifier"}:
        return "locations"
    if keys & {"status", "eligibility_description", "fees_description", "schedules", "last_modified"}:
        return "services"
    return "organizations"


def flatten(item: dict[str, Any], entity: str, *, scheme: str = USCC_SCHEME) -> dict[str, Any]:
    """One HSDS object as the flat record the contract describes."""
    if entity == "organizations":
        return _organization(item, scheme)
    if entity == "services":
        return _service(item)
    if entity == "locations":
        return _location(item)
    if entity == "service_at_locations":
        return _service_at_location(item)
    raise ValueError(f"unknown HSDS entity {entity!r} (known: {', '.join(ENTITIES)})")


def _entity_of_dataset(dataset: Dataset | None) -> str | None:
    if dataset is None:
        return None
    entity = dataset.endpoint.strip("/").rsplit("/", 1)[-1]
    return entity if entity in ENTITIES else None


def _envelope(payload: bytes, label: str, source: str) -> dict[str, Any]:
    body = load_page(payload, source=source, label=label)
    if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
        raise SourceError(
            f"{source}: {label}: expected an HSDS 3.0 paginated response (an object with a 'contents' "
            f"array), got {type(body).__name__}"
            + (f" with keys {sorted(body)[:8]}" if isinstance(body, dict) else "")
            + ". Check that the base URL points at the HSDS API root."
        )
    if not all(isinstance(item, dict) for item in body["contents"]):
        raise SourceError(f"{source}: {label}: 'contents' must be an array of objects")
    return body


def _page(payload: bytes, body: dict[str, Any], label: str, dataset: Dataset | None) -> Page:
    items = body["contents"]
    entity = _entity_of_dataset(dataset) or entity_of(items)
    scheme = str(dataset.options.get("identifier_scheme", USCC_SCHEME)) if dataset else USCC_SCHEME
    return Page(payload=payload, records=[flatten(i, entity, scheme=scheme) for i in items], label=label)


class HsdsConnector(HttpConnector):
    SOURCE = "directory"

    def make_client(self, base_url: str, api_key: str | None, **kwargs: Any) -> HttpClient:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return HttpClient(base_url, source=self.source, headers=headers, **kwargs)

    def extract(self, dataset: Dataset, window: Window | None, state: str | None = None) -> Iterator[Page]:
        entity = _entity_of_dataset(dataset)
        if entity is None:
            raise SourceError(
                f"{self.source}.{dataset.name}: endpoint {dataset.endpoint!r} is not an HSDS list "
                f"endpoint; use one of {', '.join(ENTITIES)} in the contract"
            )
        options = dataset.options
        per_page = int(options.get("per_page", DEFAULT_PER_PAGE))
        full_opt = options.get("full", entity in ("organizations", "services"))
        full = full_opt.lower() in ("true", "1", "yes") if isinstance(full_opt, str) else bool(full_opt)
        page_no = 1
        total_pages: int | None = None
        while True:
            params: dict[str, Any] = {"page": page_no, "per_page": per_page}
            if full:
                params["full"] = "true"
            label = f"{entity} page {page_no}" + (f"/{total_pages}" if total_pages else "")
            response = self.client.get(dataset.endpoint, params, what=f"GET {dataset.endpoint} ({label})")
            body = _envelope(response.content, label, self.source)
            page = _page(response.content, body, label, dataset)
            served = body.get("page_number")
            if served is not None and int(served) != page_no:
                raise SourceError(
                    f"{self.source}.{dataset.name}: asked for page {page_no}, the directory answered "
                    f"page {served}: it ignores the 'page' parameter, so the snapshot would be incomplete"
                )
            total_pages = body.get("total_pages") if isinstance(body.get("total_pages"), int) else None
            if page.records or page_no == 1:
                yield page
            if body.get("last_page") is True or body.get("empty") is True:
                return
            if not page.records:
                raise SourceError(
                    f"{self.source}.{dataset.name}: {label} is empty but not marked last_page; "
                    "the listing changed while it was read or the server pages wrongly. Re-run."
                )
            if total_pages is not None and page_no >= total_pages and body.get("last_page") is None:
                return  # servers that omit last_page: total_pages is the other stop signal
            page_no += 1

    @staticmethod
    def parse(
        payload: bytes, *, label: str, dataset: Dataset | None = None, source: str = "directory"
    ) -> Page:
        """An HSDS 3.0 paginated response as a page of flat records (also replays landed pages)."""
        return _page(payload, _envelope(payload, label, source), label, dataset)

    @staticmethod
    def without(payload: bytes, keep_record: Callable[[dict[str, Any]], bool]) -> tuple[bytes, int]:
        """The page minus the items whose flat record ``keep_record`` rejects (erasure requests)."""
        body = _envelope(payload, "erasure", "hsds")
        items = body["contents"]
        entity = entity_of(items)
        kept = [i for i in items if keep_record(flatten(i, entity))]
        removed = len(items) - len(kept)
        if not removed:
            return payload, 0
        body = {**body, "contents": kept, "size": len(kept)}
        if isinstance(body.get("total_items"), int):
            body["total_items"] = max(0, body["total_items"] - removed)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), removed
