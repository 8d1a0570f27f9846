"""Public-safety incidents over Socrata SODA: connector on recorded pages, then the simulator end to end."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ingest.contracts import load_registry
from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.pipeline import run_source
from ingest.privacy.leakscan import identifiers_of, scan_files
from ingest.simulator import DirtConfig, District, SimulatorServer
from ingest.simulator import socrata as sim_socrata
from ingest.sources import SourceError, Window
from ingest.sources.http import RetryPolicy
from ingest.sources.socrata import SocrataConnector

FIXTURES = Path(__file__).parent / "fixtures" / "socrata"
SOURCE = load_registry().source("safety")
INCIDENTS = SOURCE.dataset("incidents")
FAST = RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=3, timeout=5)
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def connector(handler, **kwargs) -> SocrataConnector:
    return SocrataConnector(
        "http://soda.test/socrata",
        source="safety",
        policy=FAST,
        page_size=3,
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


# ------------------------------------------------------------------ connector on recorded pages


def test_pages_are_asked_for_with_the_exact_soql_and_read_until_a_short_page():
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        after_page1 = ":id > 'row-b822.gt9w-7ryd'" in request.url.params["$where"]
        page = "incidents_page2.json" if after_page1 else "incidents_page1.json"
        return httpx.Response(200, content=fixture(page))

    since = datetime(2026, 1, 1, tzinfo=UTC)
    window = Window(since, since + timedelta(days=20, hours=2, milliseconds=5))
    pages = list(connector(handler, api_key="app-t0ken-123").extract(INCIDENTS, window))

    assert [c.url.path for c in calls] == ["/socrata/resource/inc4-dnt1.json"] * 2
    first, second = (dict(c.url.params) for c in calls)
    assert first == {
        "$select": ":*,*",
        "$where": ":updated_at >= '2026-01-01T00:00:00.000Z' AND :updated_at < '2026-01-21T02:00:00.005Z'",
        "$order": ":id",
        "$limit": "3",
    }
    # keyset paging: the next page starts after the last :id seen (page 2 holds 2 < 3 rows: stop)
    assert second == {**first, "$where": first["$where"] + " AND :id > 'row-b822.gt9w-7ryd'"}
    # the app token travels in the header, never in the URL
    assert all(c.headers["X-App-Token"] == "app-t0ken-123" for c in calls)
    assert all("app-t0ken" not in str(c.url) for c in calls)
    assert [p.payload for p in pages] == [fixture("incidents_page1.json"), fixture("incidents_page2.json")]
    assert sum(len(p.records) for p in pages) == 5


def test_rows_are_flattened_with_the_precise_location_generalised():
    page = SocrataConnector.parse(fixture("incidents_page1.json"), label="p1", dataset=INCIDENTS)
    raw = json.loads(fixture("incidents_page1.json"))
    for rec, item in zip(page.records, raw, strict=True):
        assert "location" not in rec and "address" not in rec
        long, lat = item["location"]["coordinates"]
        # the centre of the 0.01° cell that holds the point, and never the point itself
        assert abs(rec["location_cell_lat"] - lat) <= 0.005 + 1e-9 and rec["location_cell_lat"] != lat
        assert abs(rec["location_cell_long"] - long) <= 0.005 + 1e-9 and rec["location_cell_long"] != long
        assert round(rec["location_cell_lat"] * 1000) % 10 == 5  # x.xx5: a cell centre
        # floating timestamps get the publisher's zone; fixed ones stay as sent
        assert rec["reported_at"] == item["reported_at"] + "+08:00"
        assert rec[":updated_at"] == item[":updated_at"] and rec[":updated_at"].endswith("Z")
        assert rec["incident_id"] == item["incident_id"] and rec[":id"] == item[":id"]


def test_without_drops_the_rows_of_one_reporter_and_keeps_the_format():
    payload = fixture("incidents_page1.json")
    victim = json.loads(payload)[1]["reporter_id_number"]
    kept, removed = SocrataConnector.without(payload, lambda r: r.get("reporter_id_number") != victim)
    assert removed == 1
    rows = json.loads(kept)
    assert len(rows) == 2 and victim.encode() not in kept
    assert SocrataConnector.without(payload, lambda r: True) == (payload, 0)


def test_a_socrata_error_body_fails_clearly():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=fixture("error_malformed_query.json"))

    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    with pytest.raises(SourceError, match=r"HTTP 400.*query\.compiler\.malformed"):
        list(connector(handler, api_key="s3cr3t").extract(INCIDENTS, window))
    # the same error body with HTTP 200 (some proxies do that) is not mistaken for data
    with pytest.raises(SourceError, match=r"Socrata answered an error: query\.compiler\.malformed"):
        SocrataConnector.parse(fixture("error_malformed_query.json"), label="p1", dataset=INCIDENTS)


def test_long_windows_are_sliced_to_the_contract_window():
    wheres = []

    def handler(request: httpx.Request) -> httpx.Response:
        wheres.append(request.url.params["$where"])
        return httpx.Response(200, content=b"[]\n")

    since, until = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
    assert list(connector(handler).extract(INCIDENTS, Window(since, until))) == []
    bounds = [(w.split("'")[1], w.split("'")[3]) for w in wheres]
    assert (
        len(bounds) == 3
        and bounds[0][0] == "2025-01-01T00:00:00.000Z"
        and bounds[-1][1] == "2025-04-01T00:00:00.000Z"
    )
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))


# ------------------------------------------------------------------ the simulator's SoQL


def test_simulator_speaks_enough_soql_and_answers_errors_like_socrata(simulator, district):
    url = simulator.url_for("socrata") + "/resource/inc4-dnt1.json"
    truth = sim_socrata.incidents(district)
    everything = httpx.get(url, params={"$select": ":*,*", "$limit": 50000}).json()
    assert [r[":id"] for r in everything] == sorted(r[":id"] for r in truth)
    plain = httpx.get(
        url, params={"$select": "incident_id, :updated_at", "$order": ":updated_at DESC"}
    ).json()
    assert set(plain[0]) == {"incident_id", ":updated_at"}
    assert [r[":updated_at"] for r in plain] == sorted((r[":updated_at"] for r in truth), reverse=True)
    assert ":id" not in httpx.get(url, params={"$limit": 1}).json()[0]  # system fields only on request
    cut = sorted(r[":updated_at"] for r in truth)[len(truth) // 2]
    newer = httpx.get(url, params={"$where": f":updated_at >= '{cut}'", "$limit": 50000}).json()
    assert len(newer) == sum(r[":updated_at"] >= cut for r in truth)
    for params, code in [
        ({"$where": "status = 'closed'"}, "query.compiler.malformed"),
        ({"$where": ":updated_at > 'yesterday'"}, "query.soql.type-mismatch"),
        ({"$select": "no_such_field"}, "query.soql.no-such-column"),
        ({"$limit": 50001}, "query.execution.limit-exceeded"),
    ]:
        response = httpx.get(url, params=params)
        assert response.status_code == 400 and response.json()["error"] is True
        assert response.json()["code"] == code


# ------------------------------------------------------------------ end to end into a lake


def load(settings, sim, until=UNTIL, **kwargs):
    (report,) = run_source(
        "safety", until=until, base_url=sim.url_for("socrata"), settings=settings, **kwargs
    )
    return report


def rows(settings) -> list[dict]:
    return (
        open_catalog(settings).load_table((RAW_NAMESPACE, "safety__incidents")).scan().to_arrow().to_pylist()
    )


def assert_lake_equals_truth(settings, district: District) -> None:
    got = {r["incident_id"]: r for r in rows(settings)}
    truth = {r["incident_id"]: r for r in sim_socrata.incidents(district)}
    assert set(got) == set(truth)
    for incident_id, want in truth.items():
        row = got[incident_id]
        assert row["status"] == want["status"] and row["row_id"] == want[":id"]
        assert row["updated_at"] == datetime.fromisoformat(want[":updated_at"])


def test_first_load_matches_ground_truth_with_reporters_tokenised(lake, district, simulator):
    report = load(lake, simulator)
    truth = sim_socrata.incidents(district)
    assert report.status == "success" and report.quarantined == 0
    assert report.rows_inserted == report.records_received == len(truth) > 50
    assert_lake_equals_truth(lake, district)
    loaded = rows(lake)
    assert "location" not in loaded[0] and "address" not in loaded[0]
    with_reporter = [r for r in loaded if r["reporter_id_number"]]
    assert with_reporter and all(len(r["reporter_id_number"]) > 20 for r in with_reporter)
    truth_ids = {r["reporter_id_number"] for r in truth if "reporter_id_number" in r}
    assert not truth_ids & {r["reporter_id_number"] for r in loaded}
    # local reported time (+08:00) lands as the right UTC instant
    one = next(r for r in truth if r["incident_id"] == loaded[0]["incident_id"])
    local = datetime.fromisoformat(one["reported_at"] + "+08:00")
    assert loaded[0]["reported_at"] == local


def test_incremental_run_loads_only_new_and_changed_incidents(lake, district, simulator):
    load(lake, simulator)
    before = {r["incident_id"]: r[":updated_at"] for r in sim_socrata.incidents(district)}
    district.advance(days=3)
    after = {r["incident_id"]: r[":updated_at"] for r in sim_socrata.incidents(district)}
    new = set(after) - set(before)
    changed = {i for i in before if after[i] != before[i]}
    assert new and changed
    report = load(lake, simulator)
    assert (report.rows_inserted, report.rows_updated) == (len(new), len(changed))
    # the window starts one lookback hour before the cursor, not at the beginning
    assert report.records_received < len(after) // 2
    assert_lake_equals_truth(lake, district)
    quiet = load(lake, simulator)
    assert (quiet.rows_inserted, quiet.rows_updated) == (0, 0)


def test_dirt_is_quarantined_with_reasons_and_the_rest_loaded(lake, district):
    dirt = DirtConfig(duplicate_rate=0.1, missing_field_rate=0.05, bad_date_rate=0.05, malformed_id_rate=0.05)
    plan = sim_socrata.dirt_plan(district, dirt)
    bad = set(plan["missing_field"]) | set(plan["bad_date"]) | set(plan["malformed_id"])
    assert plan["duplicate"] and plan["missing_field"] and plan["bad_date"] and plan["malformed_id"]
    with SimulatorServer(district, dirt=dirt) as sim:
        report = load(lake, sim)
    truth = sim_socrata.incidents(district)
    assert report.records_received == len(truth) + len(plan["duplicate"])
    quarantined_ids = set()
    dup_bad = len(set(plan["duplicate"]) & bad)  # a dirty duplicate is quarantined twice
    assert report.quarantined == len(bad) + dup_bad
    from ingest.lake.storage import LakeStorage
    from ingest.privacy import load_keys
    from ingest.privacy.sealed import Sealer

    storage = LakeStorage(lake)
    sealer = Sealer(load_keys().vault_key, "landing")
    reasons = []
    for rel in storage.list("quarantine/safety/incidents/"):
        for line in sealer.open(rel, storage.read_bytes(rel)).decode().splitlines():
            entry = json.loads(line)
            quarantined_ids.add(entry["record"].get("incident_id"))
            reasons.append(entry["reason"])
    assert quarantined_ids == bad
    assert any("required field 'incident_type'" in r or "required field 'reported_at'" in r for r in reasons)
    assert any("is before 'reported_at'" in r for r in reasons)
    assert any(r.startswith("field 'reporter_id_number'") for r in reasons)
    assert {r["incident_id"] for r in rows(lake)} == {r["incident_id"] for r in truth} - bad


def test_transient_503_and_429_are_retried(lake, district, simulator, monkeypatch):
    monkeypatch.setenv("SAFETY_SODA_APP_TOKEN", "app-token-from-env")
    sim_socrata.add_fault(simulator.app, 503, count=2)
    sim_socrata.add_fault(simulator.app, 429, count=1, retry_after=1)
    started = time.monotonic()
    report = load(lake, simulator)
    assert time.monotonic() - started >= 0.95  # Retry-After honoured
    assert simulator.app.state.socrata.faulted == 3
    assert simulator.app.state.socrata.app_tokens == {"app-token-from-env"}  # sent on every call
    assert "app-token-from-env" not in json.dumps(report.__dict__, default=str)
    assert report.status == "success" and report.rows_inserted == len(sim_socrata.incidents(district))
    assert_lake_equals_truth(lake, district)


def test_no_identifier_or_precise_home_location_reaches_the_lake(lake, district, simulator):
    load(lake, simulator)
    home = [i for i, _ in sim_socrata.incident_records(district) if i.location_type == "residence"]
    assert len(home) > 20
    needles = identifiers_of(district) | {i.address for i in home}
    points = {f"{i.lat:.6f}".rstrip("0") for i in home} | {f"{i.long:.6f}".rstrip("0") for i in home}
    needles |= {p for p in points if len(p) >= 8}  # 31.2071 and longer: specific to one building
    lake_root = Path(lake.lake_url)
    files, hits = scan_files([lake_root], needles, skip=[lake_root / "identity"])
    assert files > 5 and hits == []
    # positive control: the scanner does see the clear values in an opened landing payload
    from ingest.lake.storage import LakeStorage
    from ingest.privacy import load_keys
    from ingest.privacy.sealed import Sealer

    storage = LakeStorage(lake)
    landed = storage.list("landing/safety/incidents/")[0]
    opened = lake_root.parent / "opened"
    opened.mkdir()
    (opened / "page.json").write_bytes(
        Sealer(load_keys().vault_key, "landing").open(landed, storage.read_bytes(landed))
    )
    assert scan_files([opened], needles)[1]


def test_offset_paging_for_portals_that_refuse_id_comparisons():
    offsets: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert ":id >" not in request.url.params["$where"]
        offsets.append(request.url.params["$offset"])
        page = {"0": "incidents_page1.json", "3": "incidents_page2.json"}[offsets[-1]]
        return httpx.Response(200, content=fixture(page))

    dataset = INCIDENTS.model_copy(update={"options": {**INCIDENTS.options, "paging": "offset"}})
    since = datetime(2026, 1, 1, tzinfo=UTC)
    pages = list(connector(handler).extract(dataset, Window(since, since + timedelta(days=20))))
    assert offsets == ["0", "3"]
    assert sum(len(p.records) for p in pages) == 5
