"""The community health centre (HL7 FHIR R4): connector on recorded payloads, then end to end.

Recorded fixtures (tests/fixtures/fhir/) drive the connector through ``httpx.MockTransport``:
search paging by next links, the Bulk Data kick-off / poll / download / DELETE flow,
OperationOutcome errors and Retry-After on the status poll. The simulator then serves the
district's centre over HTTP and the pipeline loads it into a lake of the test's own.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ingest.contracts import load_registry
from ingest.lake.tables import open_catalog
from ingest.pipeline import run_source
from ingest.simulator import SimulatorServer
from ingest.simulator.dirt import DirtConfig
from ingest.simulator.fhir import centre_for, expected_dirt
from ingest.sources import SourceError, Window
from ingest.sources.fhir import FhirConnector, building_level
from ingest.sources.http import RetryPolicy

FIXTURES = Path(__file__).parent / "fixtures" / "fhir"
SOURCE = load_registry().source("health")
PATIENTS = SOURCE.dataset("patients")
ENCOUNTERS = SOURCE.dataset("encounters")
FAST = RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=2, timeout=5)
BASE = "https://fhir.example-chc.cn/fhir/r4"
TOKEN = "s3cr3t-bearer-token"  # noqa: S105 - a test value
WINDOW = Window(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def connector(handler, sleeps: list[float] | None = None, **kwargs) -> FhirConnector:
    return FhirConnector(
        BASE,
        api_key=TOKEN,
        policy=FAST,
        transport=httpx.MockTransport(handler),
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
        **kwargs,
    )


def with_options(dataset, **options):
    return dataset.model_copy(update={"options": {**dataset.options, **options}})


def table_rows(lake, dataset: str) -> list[dict]:
    return open_catalog(lake).load_table(("raw", f"health__{dataset}")).scan().to_arrow().to_pylist()


# ---------------------------------------------------------------------- recorded payloads


def test_search_follows_the_servers_next_links_to_the_end():
    requests: list[httpx.Request] = []
    page1 = fixture("encounter_searchset_page1.json")
    next_url = json.loads(page1)["link"][1]["url"]

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if str(request.url) == next_url:
            return httpx.Response(200, content=fixture("encounter_searchset_page2.json"))
        return httpx.Response(200, content=page1)

    pages = list(connector(handler).extract(ENCOUNTERS, WINDOW))
    first = requests[0]
    assert first.url.path == "/fhir/r4/Encounter"
    assert first.url.params.get_list("_lastUpdated") == ["ge2026-03-01T00:00:00Z", "lt2026-04-01T00:00:00Z"]
    assert first.url.params["_count"] == "500" and first.url.params["_sort"] == "_lastUpdated"
    assert str(requests[1].url) == next_url  # followed as given, never rebuilt
    assert len(requests) == 2  # page 2 has no next link: done
    assert all(r.headers["Accept"] == "application/fhir+json" for r in requests)
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in requests)
    assert pages[0].payload == page1  # landed exactly as received
    records = [r for p in pages for r in p.records]
    resources = [
        e["resource"]
        for n in (1, 2)
        for e in json.loads(fixture(f"encounter_searchset_page{n}.json"))["entry"]
    ]
    assert [r["id"] for r in records] == [r["id"] for r in resources]
    first_rec, first_res = records[0], resources[0]
    assert first_rec["patient_id"] == first_res["subject"]["reference"].removeprefix("Patient/")
    assert first_rec["period_start"] == first_res["period"]["start"]
    assert first_rec["class_code"] == first_res["class"]["code"]
    assert first_rec["service_provider"] == "chc-minghu"
    assert set(first_rec) == {c.field for c in ENCOUNTERS.columns}  # nothing the contract does not know


def test_a_next_link_that_loops_is_refused():
    page1 = json.loads(fixture("encounter_searchset_page1.json"))
    page1["link"][1]["url"] = f"{BASE}?_getpages=same&_getpagesoffset=2&_count=2"
    body = json.dumps(page1).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with pytest.raises(SourceError, match="paging loop"):
        list(connector(handler).extract(ENCOUNTERS, WINDOW))


def _bulk_handler(log: list[httpx.Request], *, polls: int = 1, status_error: bytes | None = None):
    status_url = f"{BASE}/bulkstatus/7a3e"
    manifest = json.loads(fixture("export_manifest.json"))
    remaining = [polls]

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        url = str(request.url)
        if request.url.path.endswith("/$export"):
            return httpx.Response(202, headers={"Content-Location": status_url})
        if url == status_url and request.method == "DELETE":
            return httpx.Response(202)
        if url == status_url:
            if status_error is not None:
                return httpx.Response(500, content=status_error)
            if remaining[0] > 0:
                remaining[0] -= 1
                return httpx.Response(202, headers={"X-Progress": "50%", "Retry-After": "1"})
            return httpx.Response(200, json=manifest)
        if url == manifest["output"][0]["url"]:
            return httpx.Response(200, content=fixture("patient_export.ndjson"))
        return httpx.Response(404)

    return handler


def test_bulk_export_kicks_off_honours_retry_after_downloads_and_cleans_up():
    log: list[httpx.Request] = []
    sleeps: list[float] = []
    dataset = with_options(PATIENTS, batch_lines=2)
    until = datetime(2026, 4, 1, tzinfo=UTC)  # the third patient was updated after it: next run's
    pages = list(connector(_bulk_handler(log), sleeps).extract(dataset, Window(WINDOW.since, until)))

    kickoff = log[0]
    assert kickoff.url.params["_type"] == "Patient"
    assert kickoff.url.params["_since"] == "2026-03-01T00:00:00Z"
    assert kickoff.headers["Prefer"] == "respond-async"
    assert kickoff.headers["Accept"] == "application/fhir+json"
    assert sleeps == [1.0]  # waited as the status answer asked, once
    assert [r.method for r in log] == ["GET", "GET", "GET", "GET", "DELETE"]
    assert log[-1].url == log[1].url  # the status URL is deleted at the end
    lines = fixture("patient_export.ndjson").splitlines(keepends=True)
    assert [p.payload for p in pages] == [b"".join(lines[:2]), lines[2]]  # bounded batches, bytes as sent
    assert all(p.extension == "ndjson" for p in pages)
    records = [r for p in pages for r in p.records]
    assert len(records) == 2  # lastUpdated >= until: left for the next run
    first = json.loads(lines[0])
    assert records[0]["resident_id_number"] == first["identifier"][0]["value"]
    assert records[0]["family_name"] + records[0]["given_name"] == first["name"][0]["text"]
    assert records[0]["birth_date"] == first["birthDate"]
    assert records[0]["address"] == building_level(first["address"][0]["text"])
    assert "室" not in records[0]["address"] and "单元" not in records[0]["address"]
    assert records[0]["building_id"].startswith("B")
    assert set(records[0]) == {c.field for c in PATIENTS.columns}


def test_operation_outcome_errors_name_the_servers_diagnostics_and_the_job_is_still_deleted():
    refused = fixture("operation_outcome.json")

    def kickoff_refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=refused)

    with pytest.raises(SourceError, match="limited to one running job") as excinfo:
        list(connector(kickoff_refused).extract(PATIENTS, WINDOW))
    assert TOKEN not in str(excinfo.value)

    log: list[httpx.Request] = []
    with pytest.raises(SourceError, match="still failing after 3 attempts.*limited to one running job"):
        list(connector(_bulk_handler(log, status_error=refused)).extract(PATIENTS, WINDOW))
    assert log[-1].method == "DELETE"

    search_outcome = fixture("operation_outcome.json")
    with pytest.raises(SourceError, match="OperationOutcome.*limited to one running job"):
        list(connector(lambda r: httpx.Response(200, content=search_outcome)).extract(ENCOUNTERS, WINDOW))


def test_an_export_with_errors_in_its_manifest_fails_instead_of_loading_part_of_it():
    manifest = json.loads(fixture("export_manifest.json"))
    manifest["error"] = [{"type": "OperationOutcome", "url": f"{BASE}/bulkfiles/7a3e/err.ndjson"}]
    outcome = json.dumps(json.loads(fixture("operation_outcome.json"))).encode() + b"\n"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/$export"):
            return httpx.Response(202, headers={"Content-Location": f"{BASE}/bulkstatus/7a3e"})
        if request.url.path.endswith("err.ndjson"):
            return httpx.Response(200, content=outcome)
        return httpx.Response(200, json=manifest) if request.method == "GET" else httpx.Response(202)

    with pytest.raises(SourceError, match="reported 1 error.*limited to one running job"):
        list(connector(handler).extract(PATIENTS, WINDOW))


def test_an_export_that_never_finishes_gives_up_after_the_contracts_max_wait():
    log: list[httpx.Request] = []
    sleeps: list[float] = []
    dataset = with_options(PATIENTS, max_wait_seconds=2.5)
    with pytest.raises(SourceError, match=r"still running after 2.5s \(progress: 50%\)"):
        list(connector(_bulk_handler(log, polls=100), sleeps).extract(dataset, WINDOW))
    assert log[-1].method == "DELETE"


def test_parse_reads_bundles_and_ndjson_and_without_drops_a_person_in_either_format():
    bundle = FhirConnector.parse(fixture("encounter_searchset_page1.json"), label="p1", dataset=ENCOUNTERS)
    ndjson = FhirConnector.parse(fixture("patient_export.ndjson"), label="f1", dataset=PATIENTS)
    assert (bundle.extension, len(bundle.records)) == ("json", 2)
    assert (ndjson.extension, len(ndjson.records)) == ("ndjson", 3)

    gone = ndjson.records[1]["resident_id_number"]
    payload, removed = FhirConnector.without(
        fixture("patient_export.ndjson"), lambda r: r["resident_id_number"] != gone
    )
    assert removed == 1 and gone.encode() not in payload
    assert len(FhirConnector.parse(payload, label="f1").records) == 2

    patient = bundle.records[0]["patient_id"]
    payload, removed = FhirConnector.without(
        fixture("encounter_searchset_page1.json"), lambda r: r["patient_id"] != patient
    )
    assert removed >= 1 and json.loads(payload)["resourceType"] == "Bundle"
    assert all(r["patient_id"] != patient for r in FhirConnector.parse(payload, label="p1").records)
    assert building_level("银杏路13号1栋1单元602室") == "银杏路13号1栋"


# ---------------------------------------------------------------------- against the simulator


def test_end_to_end_counts_incremental_and_no_clear_identifiers(district, simulator, lake):
    from ingest.privacy.leakscan import identifiers_of, scan_files

    centre = centre_for(district)
    url = simulator.url_for("fhir")
    reports = {r.dataset: r for r in run_source("health", until=district.clock, base_url=url, settings=lake)}
    truth = centre.counts()
    names = {
        "patients": "Patient",
        "encounters": "Encounter",
        "immunizations": "Immunization",
        "conditions": "Condition",
    }
    for dataset, kind in names.items():
        assert reports[dataset].status == "success", reports[dataset].error
        assert reports[dataset].quarantined == 0
        assert len(table_rows(lake, dataset)) == truth[kind] > 0, dataset
    assert simulator.app.state.fhir.deleted  # every export job was cleaned up
    assert not simulator.app.state.fhir.jobs

    patients = {p["id"]: p for p in table_rows(lake, "patients")}
    records = {p.id: p for p in centre.patients}
    sample = next(
        p for p in patients.values() if records[p["id"]].resident.age_on(district.clock.date()) < 10
    )
    resident = records[sample["id"]].resident
    assert sample["resident_id_number"].startswith("id_") and sample["family_name"].startswith("nm_")
    assert sample["resident_id_number_is_minor"] is True
    assert sample["address"] == district.buildings_by_id[resident.building_id].address  # building level
    assert sample["grid_code"] == resident.grid_id and sample["birth_date"] == resident.birth_date

    # Incremental: only what changed since the first run, then nothing.
    before = district.clock
    district.advance(days=4)
    changed = {
        kind: sum(1 for row in centre.snapshot().rows[kind] if before < row[0] <= district.clock)
        for kind in names.values()
    }
    assert changed["Encounter"] > 0 and changed["Patient"] > 0
    second = {r.dataset: r for r in run_source("health", until=district.clock, base_url=url, settings=lake)}
    for dataset, kind in names.items():
        assert second[dataset].rows_inserted + second[dataset].rows_updated == changed[kind], dataset
        assert len(table_rows(lake, dataset)) == centre.counts()[kind]
    third = run_source("health", until=district.clock, base_url=url, settings=lake)
    assert all(r.rows_inserted == r.rows_updated == 0 for r in third)

    root = Path(lake.lake_url)
    scanned, hits = scan_files([root], identifiers_of(district), skip=[root / "identity"])
    assert scanned > 10 and hits == []


def test_dirt_is_quarantined_with_a_reason_and_the_rest_loaded(district, lake):
    dirt = DirtConfig(
        duplicate_rate=0.05, missing_field_rate=0.03, bad_date_rate=0.03, malformed_id_rate=0.03
    )
    centre = centre_for(district)
    expected = expected_dirt(centre, dirt)
    with SimulatorServer(district, dirt=dirt) as sim:
        reports = {
            r.dataset: r
            for r in run_source("health", until=district.clock, base_url=sim.url_for("fhir"), settings=lake)
        }
    names = {
        "patients": "Patient",
        "encounters": "Encounter",
        "immunizations": "Immunization",
        "conditions": "Condition",
    }
    for dataset, kind in names.items():
        bad = set().union(
            expected[kind]["missing"], expected[kind]["bad-date"], expected[kind]["malformed-id"]
        )
        report = reports[dataset]
        assert report.status == "success", report.error
        assert bad, f"the dirt rates give every type some bad records ({dataset})"
        assert report.quarantined == len(bad) + len(expected[kind]["duplicate"] & bad), dataset
        assert report.records_received == centre.counts()[kind] + len(expected[kind]["duplicate"])
        rows = table_rows(lake, dataset)
        assert len(rows) == centre.counts()[kind] - len(bad), dataset  # duplicates merged, bad ones out
        assert not bad & {r["id"] for r in rows}
    lines = []
    from ingest.lake.storage import LakeStorage
    from ingest.privacy import load_keys
    from ingest.privacy.sealed import SUFFIX as SEALED_SUFFIX
    from ingest.privacy.sealed import Sealer

    storage, sealer = LakeStorage(lake), Sealer(load_keys().vault_key, "landing")
    quarantined = storage.list("quarantine/health/")
    assert any(
        rel.startswith("quarantine/health/patients/") and rel.endswith(SEALED_SUFFIX) for rel in quarantined
    )
    for rel in quarantined:
        data = storage.read_bytes(rel)
        data = sealer.open(rel, data) if rel.endswith(SEALED_SUFFIX) else data
        lines += [json.loads(x) for x in data.decode().splitlines()]
    reasons = " | ".join(x["reason"] for x in lines)
    assert "check character" in reasons or "check digit" in reasons or "resident" in reasons.lower()
    assert "required field 'patient_id'" in reasons and "is before" in reasons


def test_a_transient_503_from_the_fhir_server_is_retried(district, simulator, lake):
    simulator.app.state.fhir.fail_next(503, count=2, retry_after=0)
    (report,) = run_source(
        "health",
        until=district.clock,
        base_url=simulator.url_for("fhir"),
        datasets=["conditions"],
        settings=lake,
    )
    assert report.status == "success", report.error
    assert report.rows_inserted == centre_for(district).counts()["Condition"]
    assert simulator.app.state.fhir.calls >= 3


def test_a_patients_token_is_the_open311_requester_token_of_the_same_person(district, simulator, lake):
    from ingest.privacy import load_keys

    until = district.clock
    run_source(
        "open311", until=until, base_url=simulator.open311_url, datasets=["service_requests"], settings=lake
    )
    run_source(
        "health", until=until, base_url=simulator.url_for("fhir"), datasets=["patients"], settings=lake
    )
    requests = (
        open_catalog(lake).load_table(("raw", "open311__service_requests")).scan().to_arrow().to_pylist()
    )
    requester_tokens = {r["account_id"] for r in requests if r["account_id"]}
    patient_tokens = {p["resident_id_number"] for p in table_rows(lake, "patients")}
    both = requester_tokens & patient_tokens
    assert both, "residents who filed requests and are registered patients link by token"
    pseudonymiser = load_keys().pseudonymiser()
    registered = {p.resident.resident_id for p in centre_for(district).patients if p.registered <= until}
    linked = 0
    for request in requests:
        requester = district.requester_of(request["service_request_id"])
        token = pseudonymiser.token("id_number", requester.id_number)
        assert request["account_id"] == token
        if requester.resident_id in registered:
            assert token in patient_tokens  # the same person, the same token, across the two silos
            linked += 1
    assert linked > 0 and len(both) > 0


def test_export_files_elsewhere_get_no_token_unless_required_and_a_503_on_a_file_is_retried():
    manifest = json.loads(fixture("export_manifest.json"))
    file_url = "https://files.example-cdn.cn/exports/7a3e/Patient.ndjson"
    manifest.update(requiresAccessToken=False, output=[{"type": "Patient", "url": file_url}])
    file_requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/$export"):
            assert request.headers["Authorization"] == f"Bearer {TOKEN}"
            return httpx.Response(202, headers={"Content-Location": f"{BASE}/bulkstatus/7a3e"})
        if str(request.url) == file_url:
            file_requests.append(request)
            if len(file_requests) == 1:
                return httpx.Response(503, headers={"Retry-After": "0"})
            return httpx.Response(200, content=fixture("patient_export.ndjson"))
        return httpx.Response(200, json=manifest) if request.method == "GET" else httpx.Response(202)

    pages = list(connector(handler).extract(PATIENTS, Window(WINDOW.since, datetime(2026, 5, 1, tzinfo=UTC))))
    assert sum(len(p.records) for p in pages) == 3
    assert len(file_requests) == 2  # retried after the 503
    assert all("Authorization" not in r.headers for r in file_requests)  # the token stays home


def test_a_download_cut_mid_file_resumes_without_repeating_or_losing_lines():
    body = fixture("patient_export.ndjson")
    cut = body.index(b"\n") + 1 + 40  # one whole line, then part of the second
    attempts = []

    def stream(first: bool):
        yield body[:cut] if first else body
        if first:
            raise httpx.ReadError("connection reset by peer")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/$export"):
            return httpx.Response(202, headers={"Content-Location": f"{BASE}/bulkstatus/7a3e"})
        if request.url.path.endswith(".ndjson"):
            attempts.append(request)
            return httpx.Response(200, content=stream(len(attempts) == 1))
        manifest = json.loads(fixture("export_manifest.json"))
        return httpx.Response(200, json=manifest) if request.method == "GET" else httpx.Response(202)

    dataset = with_options(PATIENTS, batch_lines=1)
    pages = list(connector(handler).extract(dataset, Window(WINDOW.since, datetime(2026, 5, 1, tzinfo=UTC))))
    assert len(attempts) == 2
    assert b"".join(p.payload for p in pages) == body  # each line exactly once, in order
