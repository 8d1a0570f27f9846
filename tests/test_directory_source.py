"""The social-service directory (HSDS 3.0): connector on recorded pages, simulator end to end."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from stdnum.cn import uscc as stdnum_uscc

from ingest.contracts import load_registry
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.pipeline import run_source
from ingest.privacy.leakscan import identifiers_of, scan_files
from ingest.simulator import DirtConfig, District, Fault, SimulatorServer
from ingest.simulator import hsds as hsds_sim
from ingest.simulator.economy import enterprises
from ingest.sources import SourceError
from ingest.sources.hsds import HsdsConnector, flatten
from ingest.sources.http import RetryPolicy

FIXTURES = Path(__file__).parent / "fixtures" / "hsds"
SOURCE = load_registry().source("directory")
DATASETS = [d.name for d in SOURCE.datasets]
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
FAST = RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=3, timeout=5)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def connector(handler, **kwargs) -> HsdsConnector:
    return HsdsConnector(
        "http://directory.test/hsds", policy=FAST, transport=httpx.MockTransport(handler), **kwargs
    )


def serve_fixtures(calls: list[httpx.Request]):
    """A recorded HSDS API: ``<entity>_page<n>.json`` or, for one-page listings, ``<entity>.json``."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        entity = request.url.path.rsplit("/", 1)[-1]
        page = request.url.params.get("page", "1")
        paged = FIXTURES / f"{entity}_page{page}.json"
        return httpx.Response(
            200, content=paged.read_bytes() if paged.exists() else fixture(f"{entity}.json")
        )

    return handler


# ------------------------------------------------------------------ connector on recorded pages


def test_organizations_are_paged_until_last_page_and_flattened():
    calls: list[httpx.Request] = []
    pages = list(connector(serve_fixtures(calls)).extract(SOURCE.dataset("organizations"), None))
    assert [dict(c.url.params) for c in calls] == [
        {"page": "1", "per_page": "100", "full": "true"},
        {"page": "2", "per_page": "100", "full": "true"},
    ]
    assert [p.payload for p in pages] == [
        fixture("organizations_page1.json"),
        fixture("organizations_page2.json"),
    ]
    records = [r for p in pages for r in p.records]
    items = [i for n in (1, 2) for i in json.loads(fixture(f"organizations_page{n}.json"))["contents"]]
    assert [r["id"] for r in records] == [i["id"] for i in items]
    for record, item in zip(records, items, strict=True):
        (ident,) = item["organization_identifiers"]
        assert ident["identifier_scheme"] == "CN-USCC"
        assert record["uscc"] == ident["identifier"] and stdnum_uscc.is_valid(record["uscc"])
        assert record["phone"] == item["phones"][0]["number"]
        assert record["legal_status"] == item["legal_status"]
        assert not any(isinstance(v, dict | list) for v in record.values())  # flat


def test_services_flatten_schedule_languages_and_category():
    calls: list[httpx.Request] = []
    pages = list(connector(serve_fixtures(calls)).extract(SOURCE.dataset("services"), None))
    assert len(calls) == 2 and calls[-1].url.params["page"] == "2"
    records = {r["id"]: r for p in pages for r in p.records}
    item = json.loads(fixture("services_page2.json"))["contents"][0]
    record = records[item["id"]]
    schedule = item["schedules"][0]
    assert record["organization_id"] == item["organization_id"]
    assert (record["name"], record["status"], record["last_modified"]) == (
        item["name"],
        item["status"],
        item["last_modified"],
    )
    assert record["schedule_opens_at"] == schedule["opens_at"]
    assert record["schedule_byday"] == schedule["byday"]
    assert record["languages"] == ",".join(lang["code"] for lang in item["languages"])
    assert record["category"] == item["attributes"][0]["value"]


def test_locations_take_the_first_address_and_the_grid_attribute():
    calls: list[httpx.Request] = []
    (page,) = connector(serve_fixtures(calls)).extract(SOURCE.dataset("locations"), None)
    assert "full" not in calls[0].url.params
    item = json.loads(fixture("locations.json"))["contents"][0]
    record = page.records[0]
    assert record["address_1"] == item["addresses"][0]["address_1"]
    assert record["postal_code"] == item["addresses"][0]["postal_code"]
    assert (record["latitude"], record["longitude"]) == (item["latitude"], item["longitude"])
    assert record["external_identifier"] == item["external_identifier"]
    attrs = {a["link_type"]: a["value"] for a in item["attributes"]}
    assert (record["grid_code"], record["community_code"]) == (attrs["grid"], attrs["community"])
    (sal,) = connector(serve_fixtures([])).extract(SOURCE.dataset("service_at_locations"), None)
    assert {tuple(r.values())[:3] for r in sal.records} == {
        (i["id"], i["service_id"], i["location_id"])
        for i in json.loads(fixture("service_at_locations.json"))["contents"]
    }


def test_parse_replays_a_landed_page_and_without_drops_items():
    payload = fixture("services_page1.json")
    replayed = HsdsConnector.parse(payload, label="landing", dataset=SOURCE.dataset("services"))
    guessed = HsdsConnector.parse(payload, label="landing")  # entity inferred from the fields
    assert replayed.records == guessed.records and len(replayed.records) == 2
    drop = replayed.records[0]["id"]
    rewritten, removed = HsdsConnector.without(payload, lambda r: r["id"] != drop)
    body = json.loads(rewritten)
    assert removed == 1 and body["size"] == 1 and body["total_items"] == 3
    assert [i["id"] for i in body["contents"]] == [replayed.records[1]["id"]]
    assert HsdsConnector.without(payload, lambda r: True) == (payload, 0)


def test_a_server_that_ignores_page_is_an_error_not_an_endless_loop():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=fixture("organizations_page1.json"))  # always page 1

    with pytest.raises(SourceError, match="ignores the 'page' parameter"):
        list(connector(handler).extract(SOURCE.dataset("organizations"), None))


def test_a_truncated_page_fails_the_run():
    body = fixture("services_page1.json")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body[: len(body) // 2])

    with pytest.raises(SourceError, match="not valid JSON"):
        list(connector(handler).extract(SOURCE.dataset("services"), None))


def test_the_api_key_goes_in_a_header_and_429_honours_retry_after():
    stamps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer s3cr3t"
        assert "s3cr3t" not in str(request.url)
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"}, content=b"slow down")
        return httpx.Response(200, content=fixture("locations.json"))

    list(connector(handler, api_key="s3cr3t").extract(SOURCE.dataset("locations"), None))
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 0.95


# ------------------------------------------------------------------ against the simulator


def load(settings, url: str, datasets: list[str] | None = None):
    reports = run_source("directory", until=UNTIL, base_url=url, settings=settings, datasets=datasets)
    return {r.dataset: r for r in reports}


def table(settings, name: str):
    return open_catalog(settings).load_table((RAW_NAMESPACE, f"directory__{name}"))


def rows(settings, name: str) -> list[dict]:
    return table(settings, name).scan().to_arrow().to_pylist()


def snapshot_id(settings, name: str) -> int | None:
    snap = table(settings, name).current_snapshot()
    return snap.snapshot_id if snap else None


def truth(district: District, entity: str) -> dict[str, dict]:
    return {i["id"]: flatten(i, entity) for i in hsds_sim.directory(district).entity(entity)}


def assert_services_match_truth(settings, district: District) -> None:
    want = truth(district, "services")
    got = {r["id"]: r for r in rows(settings, "services")}
    assert set(got) == set(want)
    for sid, row in got.items():
        w = want[sid]
        assert (row["status"], row["fees_description"], row["schedule_opens_at"]) == (
            w["status"],
            w["fees_description"],
            w["schedule_opens_at"],
        )
        assert row["last_modified"] == datetime.fromisoformat(w["last_modified"])


def test_end_to_end_counts_match_the_directory_and_nothing_personal_lands(lake, district, simulator):
    reports = load(lake, simulator.url_for("hsds"))
    directory = hsds_sim.directory(district)
    for name in DATASETS:
        assert reports[name].status == "success" and reports[name].quarantined == 0
        assert reports[name].rows_inserted == len(directory.entity(name)) > 0, name
        assert len(rows(lake, name)) == len(directory.entity(name))
    assert reports["services"].pages == -(-len(directory.services) // 100)
    # the same organisations (by USCC) as the open-data portal and the property/commercial system
    orgs = rows(lake, "organizations")
    assert {o["uscc"] for o in orgs} == {
        e.uscc for e in enterprises(district) if e.kind in ("social_org", "public_institution")
    }
    buildings = district.buildings_by_id
    for loc in rows(lake, "locations"):
        building = buildings[loc["external_identifier"]]
        assert (loc["address_1"], loc["latitude"], loc["longitude"]) == (
            building.address,
            building.lat,
            building.long,
        )
        assert loc["grid_code"] in {g.grid_id for g in district.grids}
    assert_services_match_truth(lake, district)
    # organisations, services and places only: no resident's ID number, name or phone anywhere
    files, hits = scan_files([Path(lake.lake_url)], identifiers_of(district))
    assert files > 10 and hits == []


def test_unchanged_snapshot_commits_nothing_and_changes_after_a_month_are_loaded(lake, district, simulator):
    url = simulator.url_for("hsds")
    load(lake, url)
    before = {n: snapshot_id(lake, n) for n in DATASETS}
    again = load(lake, url)
    assert {n: snapshot_id(lake, n) for n in DATASETS} == before  # nothing committed at all
    assert all(r.rows_inserted == 0 and not r.committed for r in again.values())
    assert again["services"].rows_unchanged == len(hsds_sim.directory(district).services)

    changes_before = hsds_sim.service_changes(district)
    district.advance(days=30)
    changes_after = hsds_sim.service_changes(district)
    changed = {s for s, n in changes_after.items() if n != changes_before.get(s, n)}
    launched = set(changes_after) - set(changes_before)
    assert changed and launched  # the district really moved (seeded: deterministic)
    month = load(lake, url)
    assert month["services"].committed and snapshot_id(lake, "services") != before["services"]
    assert month["services"].rows_inserted == len(changes_after)
    assert_services_match_truth(lake, district)
    assert len(rows(lake, "service_at_locations")) == len(changes_after)
    assert snapshot_id(lake, "organizations") == before["organizations"]  # organisations did not change


def test_dirt_is_quarantined_with_reasons_and_the_rest_loaded(lake, district):
    dirt = DirtConfig(duplicate_rate=0.15, missing_field_rate=0.08, bad_date_rate=0.08)
    plan = hsds_sim.planned_dirt(district, dirt)
    with SimulatorServer(district, dirt=dirt) as sim:
        reports = load(lake, sim.url_for("hsds"))
    storage = LakeStorage(lake)
    for name in DATASETS:
        kinds = plan[name]
        bad = kinds["missing"] | kinds["bad-date"]
        copies = len(kinds["duplicate"])
        assert reports[name].records_received == len(hsds_sim.directory(district).entity(name)) + copies
        # a duplicated bad record is quarantined once per copy
        assert reports[name].quarantined == len(bad) + len(bad & kinds["duplicate"]), name
        loaded = [r["id"] for r in rows(lake, name)]
        assert len(loaded) == len(set(loaded))  # duplicates collapsed on the key
        assert set(loaded) == set(truth(district, name)) - bad
    services = plan["services"]
    assert services["missing"] and services["bad-date"] and services["duplicate"]
    (qfile,) = storage.list("quarantine/directory/services/")
    quarantined = [json.loads(line) for line in storage.read_bytes(qfile).decode().splitlines()]
    reasons = {q["record"]["id"]: q["reason"] for q in quarantined}
    assert set(reasons) == services["missing"] | services["bad-date"]
    for sid in services["missing"]:
        assert reasons[sid] == "required field 'name' is missing or empty"
    for sid in services["bad-date"] - services["missing"]:
        assert (
            "last_modified' is not an ISO 8601" in reasons[sid]
            or "is before 'schedule_valid_from'" in reasons[sid]
        )


def test_malformed_uscc_is_quarantined(lake, district):
    dirt = DirtConfig(malformed_id_rate=0.2)
    malformed = hsds_sim.planned_dirt(district, dirt)["organizations"]["malformed-id"]
    assert malformed
    with SimulatorServer(district, dirt=dirt) as sim:
        report = load(lake, sim.url_for("hsds"), datasets=["organizations"])["organizations"]
    assert report.quarantined == len(malformed)
    (qfile,) = LakeStorage(lake).list("quarantine/directory/organizations/")
    reasons = [
        json.loads(line)["reason"] for line in LakeStorage(lake).read_bytes(qfile).decode().splitlines()
    ]
    assert all("field 'uscc': check character is wrong" in r for r in reasons)
    assert {r["id"] for r in rows(lake, "organizations")} == set(truth(district, "organizations")) - malformed


def test_transient_503_and_429_from_the_directory_are_retried(lake, district, simulator):
    hsds_sim.add_fault(simulator.app, Fault(status=503, count=2))
    hsds_sim.add_fault(simulator.app, Fault(status=429, count=1, retry_after=1))
    report = load(lake, simulator.url_for("hsds"), datasets=["services"])["services"]
    assert hsds_sim.state_of(simulator.app).faulted == 3
    assert report.status == "success"
    assert_services_match_truth(lake, district)
