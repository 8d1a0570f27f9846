"""HL7 FHIR R4 connector (community health centre): RESTful search and Bulk Data ``$export``.

Two modes per dataset (``options.mode``), because servers differ in what they are good at:

* ``search`` — ``GET [base]/<Resource>?_lastUpdated=ge<since>&_lastUpdated=lt<until>&_count=n
  &_sort=_lastUpdated``; the server's ``Bundle.link[relation=next].url`` is followed to the end
  (never built by hand, as the spec asks), with a guard against a server that loops. Each
  searchset Bundle is one page, landed as received.
* ``bulk`` — FHIR Bulk Data Access (Flat FHIR): kick-off ``GET [base]/$export?_type=<Resource>
  &_since=<since>`` with ``Prefer: respond-async`` → 202 + ``Content-Location``; the status URL
  is polled (honouring ``Retry-After``, up to ``options.max_wait_seconds``) until the 200
  manifest; each NDJSON output file is streamed in bounded batches of lines (one page each);
  the status URL is DELETEd at the end, whatever happened (the spec's cleanup). ``_since`` has
  no upper bound, so records whose ``meta.lastUpdated`` is at or past ``window.until`` are left
  out of the page's records (the next run fetches them): the window stays half-open.

``parse`` reads both a Bundle and NDJSON (landed payloads are replayed with it) and flattens
each resource into one flat record whose keys are the contract's column names. Standard
knowledge lives here: which identifier system is the resident ID number, how references and
codings are read, and that a home address is cut to building level before it leaves.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from ingest.contracts import Dataset
from ingest.sources import Page, SourceError, Window
from ingest.sources._json import load_page
from ingest.sources.http import HttpClient, HttpConnector, RetryableHTTPError, _retry_after_seconds

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
# GB 11643 resident ID number (居民身份证号码), the OID WS/T 500 (电子病历共享文档规范) assigns it.
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
CVX_SYSTEM = "http://hl7.org/fhir/sid/cvx"
# The district's local Patient profile (extensions on Patient.address); overridable per dataset.
BUILDING_EXTENSION = "https://fhir.minghu.example/StructureDefinition/building-id"
GRID_EXTENSION = "https://fhir.minghu.example/StructureDefinition/grid-code"
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
DEFAULT_BATCH_LINES = 1000
DEFAULT_MAX_WAIT = 600.0
DEFAULT_MAX_PAGES = 100_000
# Anything below building level in a Chinese address: unit (单元), floor, room (室) or a "-1201" tail.
_BELOW_BUILDING = re.compile(r"(\d+|[一二三四五六七八九十]+)单元.*$|\d+(室|号房).*$|-\d+.*$|\d+层.*$")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def outcome_text(body: Any) -> str | None:
    """The diagnostics of an OperationOutcome (or None if ``body`` is not one)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    parts = []
    for issue in body.get("issue") or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        parts.append(f"{issue.get('severity', 'error')}: {text}")
    return "; ".join(parts) or "OperationOutcome without issues"


def _outcome_of(response: httpx.Response) -> str:
    try:
        text = outcome_text(response.json())
    except ValueError:
        text = None
    return text or repr(response.text[:300])


class FhirHttpClient(HttpClient):
    """:class:`HttpClient` plus what FHIR needs: any method, per-request headers, absolute URLs
    (next links, status and file URLs), OperationOutcome errors, resumable NDJSON streams.

    The bearer token is sent only to the server's own origin (or where a manifest says a file
    requires it), never put in a URL, an error message or a log line.
    """

    HINTS: ClassVar[dict[int, str]] = {
        401: "the credentials were refused: check the bearer token (secret_env / connection)",
        403: "access denied: check the client's scopes on the FHIR server",
        404: "not found: check the base URL and the resource type in the contract's endpoint",
    }
    DEFAULT_HINT = "the server rejected the request"

    def __init__(self, base_url: str, *, source: str, token: str | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, source=source, headers={"Accept": FHIR_JSON}, **kwargs)
        self._origin = _origin(str(self._client.base_url))
        self._token = token

    def _auth(self, url: str, *, force: bool | None = None) -> dict[str, str]:
        absolute = "://" in url
        send = force if force is not None else (not absolute or _origin(url) == self._origin)
        return {"Authorization": f"Bearer {self._token}"} if self._token and send else {}

    def retry_reason(self, response: httpx.Response) -> str:
        return f"HTTP {response.status_code} ({_outcome_of(response)})"

    def server_said(self, response: httpx.Response) -> str:
        return f"Server said: {_outcome_of(response)}"

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        headers: dict[str, str] | None = None,
        what: str,
        auth: bool | None = None,
    ) -> httpx.Response:
        """One request with retries (429/5xx/timeouts); 4xx → SourceError naming the outcome."""
        headers = {**(headers or {}), **self._auth(url, force=auth)}
        return self.request(method, url, params=params, headers=headers, what=what)

    def stream_lines(self, url: str, *, what: str, auth: bool | None = None) -> Iterator[bytes]:
        """The lines of an NDJSON file (each with its newline), streamed; a dropped connection is
        retried from the start of the file, skipping the lines already yielded."""
        headers = {"Accept": FHIR_NDJSON, **self._auth(url, force=auth)}
        done = 0

        def attempt() -> Iterator[bytes]:
            nonlocal done
            with self.transport_errors(), self._client.stream("GET", url, headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    self.check(response, what, hint=False)
                skip, buffer = done, b""
                for chunk in response.iter_bytes():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if skip:
                            skip -= 1
                            continue
                        done += 1
                        yield line + b"\n"
                if buffer.strip():
                    if not skip:
                        done += 1
                        yield buffer

        attempts = 0
        while True:
            attempts += 1
            try:
                yield from attempt()
                return
            except RetryableHTTPError as exc:
                if attempts >= self.policy.max_attempts:
                    raise self._exhausted(what, exc) from None
                wait = exc.retry_after
                if wait is None:
                    wait = self.policy.initial_wait * 2 ** (attempts - 1)
                wait = min(wait, self.policy.max_wait)
                log.warning(
                    "%s: %s failed after %d line(s) (attempt %d/%d): %s; resuming",
                    self.source,
                    what,
                    done,
                    attempts,
                    self.policy.max_attempts,
                    exc,
                )
                time.sleep(wait)


class FhirConnector(HttpConnector):
    SOURCE = "health"
    client: FhirHttpClient

    def __init__(self, base_url: str, *, sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._sleep = sleep

    def make_client(self, base_url: str, api_key: str | None, **kwargs: Any) -> FhirHttpClient:
        return FhirHttpClient(base_url, source=self.source, token=api_key, **kwargs)

    # ------------------------------------------------------------------ extract

    def extract(self, dataset: Dataset, window: Window | None, state: str | None = None) -> Iterator[Page]:
        mode = str(dataset.options.get("mode", "search"))
        if mode == "search":
            if window is None:
                raise SourceError(
                    f"{self.source}.{dataset.name}: search mode reads a _lastUpdated window; "
                    "give the dataset a cursor on its last_updated column in the contract"
                )
            yield from self._search(dataset, window)
        elif mode == "bulk":
            yield from self._bulk(dataset, window)
        else:
            raise SourceError(
                f"{self.source}.{dataset.name}: options.mode must be 'search' or 'bulk', got {mode!r}"
            )

    def _search(self, dataset: Dataset, window: Window) -> Iterator[Page]:
        resource = dataset.endpoint
        count = min(int(dataset.options.get("page_size", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE)
        max_pages = int(dataset.options.get("max_pages", DEFAULT_MAX_PAGES))
        step = dataset.cursor.window_delta if dataset.cursor else window.until - window.since
        start = window.since
        while start < window.until:
            end = min(start + step, window.until)
            params = [
                ("_lastUpdated", f"ge{_iso(start)}"),
                ("_lastUpdated", f"lt{_iso(end)}"),
                ("_count", str(count)),
                ("_sort", "_lastUpdated"),
            ]
            where = f"{resource} {_iso(start)}..{_iso(end)}"
            url: str = resource
            seen: set[str] = set()
            page_no = 1
            while True:
                label = f"{where} page {page_no}"
                response = self.client.send("GET", url, params=params, what=f"GET {resource} ({label})")
                body = self._bundle(response.content, label)
                page = self.parse(response.content, label=label, dataset=dataset, source=self.source)
                if page.records:
                    yield page
                nxt = next_link(body)
                if not nxt:
                    break
                if nxt in seen or nxt == str(response.request.url):
                    raise SourceError(
                        f"{self.source}.{dataset.name}: {label}: the server's next link repeats an earlier "
                        "page (paging loop); nothing was committed. Report it to the FHIR server's owner."
                    )
                if page_no >= max_pages:
                    raise SourceError(
                        f"{self.source}.{dataset.name}: {where}: more than {max_pages} pages; raise "
                        "options.max_pages or shorten cursor.window in the contract"
                    )
                seen.add(nxt)
                url, params, page_no = nxt, None, page_no + 1
            start = end

    def _bundle(self, payload: bytes, label: str) -> dict[str, Any]:
        body = load_page(payload, source=self.source, label=label)
        text = outcome_text(body)
        if text is not None:
            raise SourceError(f"{self.source}: {label}: the server answered an OperationOutcome: {text}")
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise SourceError(f"{self.source}: {label}: expected a searchset Bundle")
        return body

    def _bulk(self, dataset: Dataset, window: Window | None) -> Iterator[Page]:
        resource = dataset.endpoint
        name = f"{self.source}.{dataset.name}"
        params: dict[str, str] = {"_type": resource}
        if window is not None:
            params["_since"] = _iso(window.since)
        kickoff = self.client.send(
            "GET",
            "$export",
            params=params,
            headers={"Accept": FHIR_JSON, "Prefer": "respond-async"},
            what=f"$export kick-off for {resource}",
        )
        if kickoff.status_code != 202 or not kickoff.headers.get("Content-Location"):
            raise SourceError(
                f"{name}: $export kick-off answered HTTP {kickoff.status_code} without a Content-Location "
                "status URL; the server does not support asynchronous Bulk Data export — use "
                "options.mode: search for this dataset"
            )
        status_url = str(kickoff.request.url.join(kickoff.headers["Content-Location"]))
        try:
            manifest = self._poll(dataset, status_url)
            self._check_errors(dataset, manifest)
            token_needed = bool(manifest.get("requiresAccessToken", True))
            files = [o for o in manifest.get("output") or [] if o.get("type") in (None, resource)]
            batch_lines = int(dataset.options.get("batch_lines", DEFAULT_BATCH_LINES))
            until = window.until if window is not None else None
            for number, item in enumerate(files, start=1):
                yield from self._download(dataset, item["url"], number, batch_lines, until, token_needed)
        finally:
            self._cleanup(name, status_url)

    def _poll(self, dataset: Dataset, status_url: str) -> dict[str, Any]:
        name = f"{self.source}.{dataset.name}"
        max_wait = float(dataset.options.get("max_wait_seconds", DEFAULT_MAX_WAIT))
        interval = float(dataset.options.get("poll_seconds", 1.0))
        started, waited = time.monotonic(), 0.0
        while True:
            response = self.client.send("GET", status_url, what=f"$export status of {dataset.endpoint}")
            if response.status_code == 200:
                try:
                    manifest = response.json()
                except ValueError:
                    raise SourceError(f"{name}: the $export manifest is not JSON") from None
                if not isinstance(manifest, dict) or "output" not in manifest:
                    raise SourceError(f"{name}: the $export manifest has no 'output' list")
                return manifest
            if response.status_code != 202:
                raise SourceError(f"{name}: $export status answered HTTP {response.status_code}")
            progress = response.headers.get("X-Progress", "")
            wait = _retry_after_seconds(response.headers.get("Retry-After"))
            if wait is None:  # no hint: back off gently
                wait, interval = interval, min(interval * 2, 60.0)
            if max(time.monotonic() - started, waited) + wait > max_wait:
                raise SourceError(
                    f"{name}: the $export job is still running after {max_wait:g}s (progress: "
                    f"{progress or 'not reported'}); nothing was committed. Raise options.max_wait_seconds "
                    "in the contract or re-run later."
                )
            log.info("%s: $export in progress (%s); next poll in %.1fs", name, progress or "?", wait)
            self._sleep(wait)
            waited += wait

    def _check_errors(self, dataset: Dataset, manifest: dict[str, Any]) -> None:
        """Errors in the manifest mean the export is incomplete: fail rather than load part of it."""
        messages = []
        for item in manifest.get("error") or []:
            for line in self.client.stream_lines(
                item["url"], what=f"$export error file of {dataset.endpoint}"
            ):
                if line.strip():
                    try:
                        text = outcome_text(json.loads(line))
                    except ValueError:
                        text = None
                    messages.append(text or line[:200].decode(errors="replace"))
        if messages:
            raise SourceError(
                f"{self.source}.{dataset.name}: the $export reported {len(messages)} error(s): "
                f"{' | '.join(messages[:5])}. Nothing was committed; fix the cause on the server and re-run."
            )

    def _download(
        self,
        dataset: Dataset,
        url: str,
        number: int,
        batch_lines: int,
        until: datetime | None,
        token_needed: bool,
    ) -> Iterator[Page]:
        what = f"$export file {number} of {dataset.endpoint}"
        auth = None if token_needed else False
        lines: list[bytes] = []
        first = 1
        for line in self.client.stream_lines(url, what=what, auth=auth):
            lines.append(line)
            if len(lines) >= batch_lines:
                yield self._ndjson_page(dataset, lines, number, first, until)
                first += len(lines)
                lines = []
        if lines:
            yield self._ndjson_page(dataset, lines, number, first, until)

    def _ndjson_page(
        self, dataset: Dataset, lines: list[bytes], number: int, first: int, until: datetime | None
    ) -> Page:
        label = f"{dataset.endpoint} export file {number} lines {first}-{first + len(lines) - 1}"
        page = self.parse(b"".join(lines), label=label, dataset=dataset, source=self.source)
        if until is not None:
            page.records = [r for r in page.records if not _at_or_after(r.get("last_updated"), until)]
        return page

    def _cleanup(self, name: str, status_url: str) -> None:
        try:
            self.client.send("DELETE", status_url, what="$export cleanup (DELETE status URL)")
        except SourceError as exc:  # never mask the run's own outcome with a failed cleanup
            log.warning("%s: could not delete the $export job (the server will expire it): %s", name, exc)

    # ------------------------------------------------------------------ payloads

    @staticmethod
    def parse(payload: bytes, *, label: str, dataset: Dataset | None = None, source: str = "health") -> Page:
        """A searchset Bundle or NDJSON (detected) as a page of flat records."""
        options = dict(dataset.options) if dataset is not None else {}
        resources, ndjson = _resources(payload, label, source)
        records = [flatten(r, options) for r in resources if r.get("resourceType") != "OperationOutcome"]
        for r in resources:
            if r.get("resourceType") == "OperationOutcome":
                log.warning("%s: %s: the server added an outcome: %s", source, label, outcome_text(r))
        if ndjson:
            return Page(payload, records, label=label, media_type=FHIR_NDJSON, extension="ndjson")
        return Page(payload, records, label=label, media_type=FHIR_JSON, extension="json")

    @staticmethod
    def without(payload: bytes, keep_record: Callable[[dict[str, Any]], bool]) -> tuple[bytes, int]:
        """The payload minus the resources whose flat record ``keep_record`` rejects (same format)."""
        body = _json_or_none(payload)
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            entries = body.get("entry") or []
            kept = [
                e
                for e in entries
                if not _is_resource(e.get("resource")) or keep_record(flatten(e["resource"]))
            ]
            if len(kept) == len(entries):
                return payload, 0
            body["entry"] = kept
            return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), len(entries) - len(
                kept
            )
        out, removed = [], 0
        for line in payload.splitlines(keepends=True):
            resource = _json_or_none(line) if line.strip() else None
            if _is_resource(resource) and not keep_record(flatten(resource)):
                removed += 1
                continue
            out.append(line)
        return (b"".join(out), removed) if removed else (payload, 0)


# ---------------------------------------------------------------------- parsing helpers


def next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _is_resource(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") in FLATTENERS


def _resources(payload: bytes, label: str, source: str) -> tuple[list[dict[str, Any]], bool]:
    """The resources of a Bundle (False) or of NDJSON lines (True)."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = outcome_text(body)
        if text is not None:
            raise SourceError(f"{source}: {label}: the server answered an OperationOutcome: {text}")
        if body.get("resourceType") == "Bundle":
            resources = []
            for entry in body.get("entry") or []:
                if (entry.get("search") or {}).get("mode") == "include":
                    continue  # _include'd resources belong to another dataset
                if isinstance(entry.get("resource"), dict):
                    resources.append(entry["resource"])
            return resources, False
        return [body], True  # one NDJSON line
    resources = []
    for number, line in enumerate(payload.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise SourceError(
                f"{source}: {label}: line {number} is not JSON ({exc}); neither a Bundle nor NDJSON — "
                "the download may be truncated. Nothing was committed; re-run."
            ) from None
        if not isinstance(item, dict) or "resourceType" not in item:
            raise SourceError(f"{source}: {label}: line {number} is not a FHIR resource")
        resources.append(item)
    return resources, True


def _at_or_after(value: Any, until: datetime) -> bool:
    if not isinstance(value, str):
        return False
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False  # the contract check quarantines it with a reason
    return when.tzinfo is not None and when >= until


def _ref_id(ref: Any, resource_type: str | None = None) -> str | None:
    """``Patient/123`` (or an absolute URL ending so, or ``.../_history/n``) → ``123``."""
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    parts = ref["reference"].split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or (resource_type and parts[-2] != resource_type):
        return None
    return parts[-1] or None


def _coding(concept: Any, prefer: str | None = None) -> dict[str, Any]:
    """The preferred coding of a CodeableConcept (the one in ``prefer`` system, else the first)."""
    codings = (concept or {}).get("coding") or [] if isinstance(concept, dict) else []
    for coding in codings:
        if prefer and coding.get("system") == prefer:
            return coding
    return codings[0] if codings else {}


def _extension(element: dict[str, Any], url: str) -> Any:
    for ext in element.get("extension") or []:
        if ext.get("url") == url:
            for key, value in ext.items():
                if key.startswith("value"):
                    return value
    return None


def building_level(text: str | None) -> str | None:
    """An address cut to building level: ``幸福路12号3栋2单元1201室`` → ``幸福路12号3栋``."""
    if not text:
        return None
    return _BELOW_BUILDING.sub("", text.strip()) or None


def _last_updated(res: dict[str, Any]) -> Any:
    return (res.get("meta") or {}).get("lastUpdated")


def _patient(res: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    system = options.get("resident_id_system", RESIDENT_ID_SYSTEM)
    ident = next((i for i in res.get("identifier") or [] if i.get("system") == system), {})
    names = res.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    phones = [t for t in res.get("telecom") or [] if t.get("system") == "phone"]
    phone = next((t for t in phones if t.get("use") == "mobile"), phones[0] if phones else {})
    addresses = res.get("address") or []
    address = next((a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else {})
    lines = address.get("line") or []
    return {
        "id": res.get("id"),
        "resident_id_number": ident.get("value"),
        "family_name": name.get("family"),
        "given_name": "".join(name.get("given") or []) or None,
        "gender": res.get("gender"),
        "birth_date": res.get("birthDate"),
        "phone": phone.get("value"),
        "address": building_level(address.get("text") or (lines[0] if lines else None)),
        "building_id": _extension(address, options.get("building_extension", BUILDING_EXTENSION)),
        "grid_code": _extension(address, options.get("grid_extension", GRID_EXTENSION)),
        "general_practitioner": _ref_id((res.get("generalPractitioner") or [None])[0], "Practitioner"),
        "active": res.get("active"),
        "last_updated": _last_updated(res),
    }


def _encounter(res: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    klass = res.get("class") or {}
    type_ = _coding((res.get("type") or [None])[0])
    reason = _coding((res.get("reasonCode") or [None])[0], ICD10_SYSTEM)
    period = res.get("period") or {}
    return {
        "id": res.get("id"),
        "status": res.get("status"),
        "class_code": klass.get("code") if isinstance(klass, dict) else None,
        "type_code": type_.get("code"),
        "type_display": type_.get("display"),
        "patient_id": _ref_id(res.get("subject"), "Patient"),
        "period_start": period.get("start"),
        "period_end": period.get("end"),
        "service_provider": _ref_id(res.get("serviceProvider"), "Organization"),
        "reason_code": reason.get("code"),
        "last_updated": _last_updated(res),
    }


def _immunization(res: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    vaccine = _coding(res.get("vaccineCode"), CVX_SYSTEM)
    return {
        "id": res.get("id"),
        "status": res.get("status"),
        "vaccine_system": vaccine.get("system"),
        "vaccine_code": vaccine.get("code"),
        "vaccine_display": vaccine.get("display"),
        "patient_id": _ref_id(res.get("patient"), "Patient"),
        "occurrence_datetime": res.get("occurrenceDateTime"),
        "lot_number": res.get("lotNumber"),
        "last_updated": _last_updated(res),
    }


def _condition(res: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    code = _coding(res.get("code"), ICD10_SYSTEM)
    return {
        "id": res.get("id"),
        "clinical_status": _coding(res.get("clinicalStatus")).get("code"),
        "verification_status": _coding(res.get("verificationStatus")).get("code"),
        "condition_system": code.get("system"),
        "condition_code": code.get("code"),
        "condition_display": code.get("display"),
        "patient_id": _ref_id(res.get("subject"), "Patient"),
        "onset_datetime": res.get("onsetDateTime"),
        "recorded_date": res.get("recordedDate"),
        "last_updated": _last_updated(res),
    }


FLATTENERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "Patient": _patient,
    "Encounter": _encounter,
    "Immunization": _immunization,
    "Condition": _condition,
}


def flatten(resource: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One FHIR resource as a flat record (keys = the health contract's column names)."""
    kind = resource.get("resourceType")
    flattener = FLATTENERS.get(kind)  # type: ignore[arg-type]
    if flattener is None:
        raise SourceError(
            f"no flattener for FHIR resource type {kind!r} (known: {', '.join(FLATTENERS)}); "
            "add one to ingest/sources/fhir.py before loading it"
        )
    return flattener(resource, options or {})
