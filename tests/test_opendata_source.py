"""The open-data portal (CKAN Action API): connector on recorded responses, then end to end.

Recorded responses (``fixtures/ckan/``) are real-format CKAN envelopes: ``package_show``, two
``datastore_search`` pages of a 3-row resource, a ``datastore_search_sql`` page and a
``success: false`` error.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ingest.contracts import load_registry
from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.pipeline import run_source
from ingest.simulator import DirtConfig, District, SimulatorServer
from ingest.simulator import ckan as portal
from ingest.sources import SourceError
from ingest.sources.ckan import CkanConnector
from ingest.sources.http import RetryPolicy

FIXTURES = Path(__file__).parent / "fixtures" / "ckan"
SOURCE = load_registry().source("opendata")
RATINGS = SOURCE.dataset("credit_ratings")
FACILITIES = SOURCE.dataset("facilities")
FAST = RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=3, timeout=5)
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
RESOURCE_ID = json.loads((FIXTURES / "package_show.json").read_bytes())["result"]["resources"][0]["id"]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def connector(handler, **kwargs) -> CkanConnector:
    return CkanConnector(
        "http://portal.test/ckan/",
        source="opendata",
        policy=FAST,
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def full_mode(dataset):
    """A contract dataset read in full-refresh mode from the recorded resource."""
    return dataset.model_copy(update={"options": {"mode": "full"}})


# ---------------------------------------------------------------- connector on recorded responses


def test_full_mode_resolves_the_resource_and_pages_to_the_end():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.url.path, dict(request.url.params), request.headers.get("authorization")))
        if request.url.path.endswith("/package_show"):
            return httpx.Response(200, content=fixture("package_show.json"))
        offset = request.url.params["offset"]
        return httpx.Response(200, content=fixture(f"datastore_search_page{1 + int(offset) // 2}.json"))

    pages = list(connector(handler, api_key="k-123", page_size=2).extract(full_mode(RATINGS), None))
    assert [c[0] for c in calls] == ["/ckan/api/3/action/package_show"] + [
        "/ckan/api/3/action/datastore_search"
    ] * 2
    assert calls[0][1] == {"id": "enterprise-credit-ratings"}
    assert [(c[1]["offset"], c[1]["limit"], c[1]["resource_id"]) for c in calls[1:]] == [
        ("0", "2", RESOURCE_ID),
        ("2", "2", RESOURCE_ID),
    ]
    assert all(c[1]["sort"] == "_id asc" for c in calls[1:])
    # the key travels in the Authorization header, never in the URL
    assert {c[2] for c in calls} == {"k-123"} and all("k-123" not in str(c[1]) for c in calls)
    assert [p.payload for p in pages] == [
        fixture("datastore_search_page1.json"),
        fixture("datastore_search_page2.json"),
    ]
    assert [r["_id"] for p in pages for r in p.records] == [1, 2, 3]
    assert all(p.state is None for p in pages)


def test_full_mode_stops_when_the_offset_reaches_the_total():
    """A full last page ends the read when offset == total (no empty extra call)."""
    body = json.loads(fixture("datastore_search_page1.json"))
    body["result"]["total"] = 2
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.params.get("offset"))
        return httpx.Response(200, json=body)

    pages = list(
        connector(handler, page_size=2).extract(
            full_mode(RATINGS).model_copy(update={"endpoint": RESOURCE_ID}), None
        )
    )
    assert calls == ["0"] and len(pages) == 1


def test_id_cursor_asks_for_rows_after_the_saved_id_and_reports_the_new_one():
    sqls = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/package_show"):
            return httpx.Response(200, content=fixture("package_show.json"))
        sqls.append(request.url.params["sql"])
        return httpx.Response(200, content=fixture("datastore_search_sql.json"))

    (page,) = connector(handler, page_size=3).extract(RATINGS, None, state="2")
    assert sqls == [f'SELECT * FROM "{RESOURCE_ID}" WHERE _id > 2 ORDER BY _id LIMIT 3']
    assert page.state == "4"  # the highest _id received; 2 rows < 3 asked: the end
    assert [r["_id"] for r in page.records] == [3, 4]
    assert all("_full_text" not in r for r in page.records)  # CKAN's search vector is not data
    assert page.payload == fixture("datastore_search_sql.json")


def test_id_cursor_rejects_a_state_that_is_not_an_id():
    with pytest.raises(SourceError, match="not a DataStore _id"):
        list(
            connector(lambda r: httpx.Response(500)).extract(
                RATINGS.model_copy(update={"endpoint": "x"}), None, "abc"
            )
        )


@pytest.mark.parametrize("status", [200, 404])
def test_success_false_is_an_error_naming_the_ckan_error(status):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=fixture("error_not_found.json"))

    ds = full_mode(RATINGS).model_copy(update={"endpoint": "no-such-resource"})
    with pytest.raises(SourceError) as err:
        list(connector(handler).extract(ds, None))
    assert "Not Found Error" in str(err.value) and "no-such-resource" in str(err.value)
    assert "opendata" in str(err.value)


def test_unknown_resource_name_in_the_package_says_what_exists():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=fixture("package_show.json"))

    ds = RATINGS.model_copy(update={"endpoint": "enterprise-credit-ratings/nope"})
    with pytest.raises(SourceError, match="no resource named 'nope'.*credit-rating-events"):
        list(connector(handler).extract(ds, None))


def test_truncated_page_is_an_error_not_data():
    payload = fixture("datastore_search_page1.json")
    with pytest.raises(SourceError, match="not valid JSON"):
        CkanConnector.parse(payload[: len(payload) // 2], label="p1")


def test_without_drops_records_and_keeps_the_envelope():
    payload = fixture("datastore_search_sql.json")
    out, removed = CkanConnector.without(payload, lambda r: r["_id"] != 3)
    assert removed == 1
    page = CkanConnector.parse(out, label="erased")
    assert [r["_id"] for r in page.records] == [4]
    assert json.loads(out)["result"]["sql"] == json.loads(payload)["result"]["sql"]
    assert CkanConnector.without(payload, lambda r: True) == (payload, 0)


# ---------------------------------------------------------------- simulator end to end


def load(settings, sim, **kwargs):
    reports = run_source("opendata", until=UNTIL, base_url=sim.url_for("ckan"), settings=settings, **kwargs)
    assert all(r.status == "success" for r in reports), [r.error for r in reports]
    return {r.dataset: r for r in reports}


def table(settings, name):
    return open_catalog(settings).load_table((RAW_NAMESPACE, f"opendata__{name}"))


def test_portal_loads_match_ground_truth_and_rerun_commits_nothing(lake, district, simulator, tmp_path):
    reports = load(lake, simulator)
    facilities = portal.facilities(district)
    grids = portal.grid_statistics(district)
    ratings = portal.credit_rating_events(district)
    assert reports["facilities"].rows_inserted == len(facilities) > 30
    assert reports["grid_statistics"].rows_inserted == len(district.grids)
    assert reports["credit_ratings"].rows_inserted == len(ratings) > 100
    assert reports["credit_ratings"].cursor_after == str(len(ratings))

    got = table(lake, "credit_ratings").scan().to_arrow()
    assert sorted(got.column("rating_id").to_pylist()) == sorted(r["rating_id"] for r in ratings)
    stats = {r["grid_code"]: r for r in table(lake, "grid_statistics").scan().to_arrow().to_pylist()}
    assert set(stats) == {g.grid_id for g in district.grids}
    for row in grids:
        assert stats[row["grid_code"]]["population"] == row["population"]
        assert stats[row["grid_code"]]["children_0_14"] == row["children_0_14"]
    # open-data disclosure control: no published count of 1-4 people, and it did suppress some
    counts = [
        v
        for r in stats.values()
        for k, v in r.items()
        if k in {"population", "residents_60_plus", "children_0_14"}
    ]
    assert not [c for c in counts if c is not None and 0 < c < 5]
    assert any(r["suppressed"] for r in stats.values())
    assert sum(r["population"] or 0 for r in stats.values()) <= len(district.residents)

    before = {
        n: table(lake, n).metadata_location for n in ("facilities", "grid_statistics", "credit_ratings")
    }
    again = load(lake, simulator)
    assert {n: table(lake, n).metadata_location for n in before} == before  # no new snapshot anywhere
    assert again["facilities"].rows_unchanged == len(facilities) and not again["facilities"].committed
    assert again["credit_ratings"].records_received == 0

    # nothing about the district's residents reaches the lake (the data are aggregates and organisations)
    from ingest.privacy.leakscan import identifiers_of, scan_files

    files, hits = scan_files(
        [Path(lake.lake_url)], identifiers_of(district), skip=[Path(lake.lake_url) / "identity"]
    )
    assert files > 5 and hits == []


def test_id_cursor_loads_only_new_rating_events_after_the_clock_moves(lake, district, simulator):
    first = load(lake, simulator)["credit_ratings"]
    seen = len(portal.credit_rating_events(district))
    district.advance(days=40)
    now = portal.credit_rating_events(district)
    assert len(now) > seen  # the portal published new ratings
    second = load(lake, simulator)
    assert second["credit_ratings"].records_received == len(now) - seen
    assert second["credit_ratings"].rows_inserted == len(now) - seen
    assert (first.cursor_after, second["credit_ratings"].cursor_after) == (str(seen), str(len(now)))
    assert table(lake, "credit_ratings").scan().to_arrow().num_rows == len(now)
    # the monthly statistics moved to a new reference date: a new snapshot replaced the old one
    assert second["grid_statistics"].committed and second["grid_statistics"].rows_deleted == len(
        district.grids
    )
    assert not second["facilities"].committed  # unchanged facilities: nothing committed
    assert load(lake, simulator)["credit_ratings"].rows_inserted == 0


DIRT = DirtConfig(duplicate_rate=0.08, missing_field_rate=0.05, bad_date_rate=0.05, malformed_id_rate=0.05)


@pytest.fixture
def dirty_portal(district):
    with SimulatorServer(district, dirt=DIRT) as server:
        yield server


def quarantined(settings, dataset: str) -> list[dict]:
    lines = []
    for path in (Path(settings.lake_url) / "quarantine" / "opendata" / dataset).rglob("*.jsonl"):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_dirt_is_quarantined_with_reasons_and_the_rest_loads(lake, district, dirty_portal):
    reports = load(lake, dirty_portal, datasets=["credit_ratings", "facilities"])
    dirt = portal.served_dirt(dirty_portal.app, "credit-rating-events")
    assert all(dirt[k] for k in ("duplicate", "missing", "bad-date", "malformed-id"))
    lines = quarantined(lake, "credit_ratings")
    reasons = {q["record"]["rating_id"]: q["reason"] for q in lines}
    assert set(reasons) == set(dirt["missing"]) | set(dirt["bad-date"]) | set(dirt["malformed-id"])
    # a dirty row uploaded twice is quarantined twice: once per copy received
    assert (
        reports["credit_ratings"].quarantined
        == len(lines)
        == len(reasons) + len(set(reasons) & set(dirt["duplicate"]))
    )
    for key, dropped in dirt["missing"].items():
        assert reasons[key] == f"required field '{dropped}' is missing or empty"
    for key in dirt["bad-date"]:
        if key not in dirt["missing"] and key not in dirt["malformed-id"]:
            assert "'rated_on'" in reasons[key] and "before 'registered_on'" in reasons[key]
    # duplicates (the same row uploaded twice, with its own _id) collapse on the key
    got = table(lake, "credit_ratings").scan().to_arrow().column("rating_id").to_pylist()
    assert len(got) == len(set(got))
    truth = portal.credit_rating_events(district)
    assert set(got) == {r["rating_id"] for r in truth} - set(reasons)
    fac = reports["facilities"]
    fac_dirt = portal.served_dirt(dirty_portal.app, "facilities")
    assert fac.quarantined == len(fac_dirt["missing"]) > 0
    assert fac.rows_inserted == len(portal.facilities(district)) - fac.quarantined


def test_malformed_uscc_is_quarantined_with_the_reason(lake, district, dirty_portal):
    load(lake, dirty_portal, datasets=["credit_ratings"])
    dirt = portal.served_dirt(dirty_portal.app, "credit-rating-events")
    malformed = set(dirt["malformed-id"]) - set(dirt["missing"]) - set(dirt["bad-date"])
    reasons = {q["record"]["rating_id"]: q["reason"] for q in quarantined(lake, "credit_ratings")}
    assert malformed and all("check character is wrong" in reasons.get(k, "") for k in malformed)


def test_transient_503_and_429_from_the_portal_are_retried(lake, district, simulator):
    state = portal.state_of(simulator.app)
    state.add_fault(portal.CkanFault(status=503, count=2))
    state.add_fault(portal.CkanFault(status=429, count=1, retry_after=1))
    started = time.monotonic()
    reports = load(lake, simulator, datasets=["facilities"])
    assert state.faulted == 3
    assert time.monotonic() - started >= 1  # Retry-After was honoured
    assert reports["facilities"].rows_inserted == len(portal.facilities(district))


def test_simulator_answers_only_the_keyset_sql_shape(simulator):
    base = simulator.url_for("ckan") + "/api/3/action/"
    bad = httpx.get(base + "datastore_search_sql", params={"sql": 'DELETE FROM "credit-rating-events"'})
    assert bad.status_code == 409 and bad.json()["success"] is False
    assert bad.json()["error"]["__type"] == "Validation Error"
    capped = httpx.get(base + "datastore_search", params={"resource_id": "facilities", "limit": 50000}).json()
    assert capped["result"]["limit"] == portal.ROWS_MAX
    default = httpx.get(base + "datastore_search", params={"resource_id": "credit-rating-events"}).json()
    assert len(default["result"]["records"]) == portal.DEFAULT_LIMIT
    assert "offset=100" in default["result"]["_links"]["next"]


def test_ids_of_published_ratings_never_change_as_the_clock_moves():
    district = District.generate(residents=120, seed=3)
    before = portal.credit_rating_events(district)
    district.advance(days=65)
    after = portal.credit_rating_events(district)
    assert after[: len(before)] == before and len(after) > len(before)
