"""Offline tests of the synthetic district and its Open311 GeoReport v2 server."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from stdnum.cn import ric

from ingest.simulator import DirtConfig, District, SimulatorServer
from ingest.simulator.catalogue import SERVICE_BY_CODE
from ingest.simulator.dirt import BAD_DATE_FUTURE, BAD_DATE_UNPARSEABLE, UNPARSEABLE_DATE
from ingest.simulator.identifiers import REGION_CODES
from ingest.simulator.open311 import Fault, create_open311_app

ROOT = Path(__file__).resolve().parents[1]
V2 = "/open311/v2"
OFFSET = "+08:00"


@pytest.fixture(scope="module")
def district() -> District:
    return District.generate(residents=1000, seed=42)


@pytest.fixture(scope="module")
def big() -> District:
    return District.generate(residents=2000, seed=11)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def fetch_all(client: httpx.Client | TestClient, prefix: str = V2, **params: Any) -> list[dict[str, Any]]:
    """Walk pages of requests.json until an empty page."""
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        resp = client.get(f"{prefix}/requests.json", params={**params, "page": page})
        assert resp.status_code == 200, resp.text
        batch = resp.json()
        if not batch:
            return rows
        rows.extend(batch)
        page += 1


def all_windows(
    client: httpx.Client | TestClient, d: District, page_size: int, prefix: str = V2
) -> list[dict]:
    """Every request, walking 30-day updated_datetime windows (lower bound inclusive)."""
    rows: list[dict[str, Any]] = []
    lo = d.start
    end = d.clock + timedelta(seconds=1)
    while lo < end:
        hi = min(lo + timedelta(days=30), end)
        rows += fetch_all(
            client, prefix, updated_after=lo.isoformat(), updated_before=hi.isoformat(), page_size=page_size
        )
        lo = hi
    return rows


# ------------------------------------------------------------------------------- people


def test_id_numbers_valid_unique_and_consistent(big: District) -> None:
    ids = [r.id_number for r in big.residents]
    assert len(ids) == 2000
    assert len(set(ids)) == len(ids)
    for r in big.residents:
        assert ric.is_valid(r.id_number), r.id_number
        assert r.id_number[:6] in REGION_CODES
        assert ric.get_birth_date(r.id_number) == r.birth_date
        assert (int(r.id_number[14:17]) % 2 == 1) == (r.sex == "M")
        if r.mobile is not None:
            assert re.fullmatch(r"1[3-9]\d{9}", r.mobile)
    mobiles = [r.mobile for r in big.residents if r.mobile]
    assert len(set(mobiles)) == len(mobiles)
    adults = [r for r in big.residents if r.age_on(big.start.date()) >= 18]
    assert sum(1 for r in adults if r.mobile) / len(adults) > 0.85
    assert all(r.mobile is None for r in big.residents if r.age_on(big.start.date()) < 15)


def test_age_and_household_shape(big: District) -> None:
    ref = big.start.date()
    ages = [r.age_on(ref) for r in big.residents]
    n = len(ages)
    assert 0.15 <= sum(a <= 14 for a in ages) / n <= 0.21
    assert 0.16 <= sum(a >= 60 for a in ages) / n <= 0.22
    assert 2.4 <= n / len(big.households) <= 2.8
    alone = [
        h
        for h in big.households
        if len(h.member_ids) == 1 and big.residents_by_id[h.member_ids[0]].age_on(ref) >= 60
    ]
    assert len(alone) / len(big.households) > 0.05
    assert min(ages) >= 0 and max(ages) <= 100


def test_structure(district: District) -> None:
    d = district
    assert len(d.streets) == 3 and len(d.communities) == 12
    assert len(d.grids) == max(12, round(1000 / 170))
    assert {g.community_id for g in d.grids} == {c.community_id for c in d.communities}
    assert sum(len(h.member_ids) for h in d.households) == len(d.residents) == 1000
    for r in d.residents:
        household = d.households_by_id[r.household_id]
        assert r.resident_id in household.member_ids
        room = d.rooms_by_id[r.room_id]
        assert room.building_id == r.building_id == household.building_id
        assert r.grid_id == household.grid_id
    assert len({h.room_id for h in d.households}) == len(d.households)  # one household per room
    for b in d.buildings:
        assert b.address.endswith(f"{b.number}栋") and "室" not in b.address


# ------------------------------------------------------------------------------- requests (truth)


def test_requests_ground_truth(district: District) -> None:
    d = district
    rows = d.requests()
    assert len(rows) == 300
    assert [r["service_request_id"] for r in rows] == sorted(
        (r["service_request_id"] for r in rows), key=lambda i: (d.request(i)["updated_datetime"], i)
    )
    late = 0
    for r in rows:
        service = SERVICE_BY_CODE[r["service_code"]]
        requested, updated, expected = (
            parse(r[k]) for k in ("requested_datetime", "updated_datetime", "expected_datetime")
        )
        for key in ("requested_datetime", "updated_datetime", "expected_datetime"):
            assert r[key].endswith(OFFSET) and len(r[key]) == 25
        assert d.start <= requested < d.clock
        assert requested <= updated <= d.clock
        assert expected == requested + timedelta(hours=service.sla_hours)
        assert r["status"] in ("open", "closed")
        assert r["service_name"] == service.service_name
        assert r["address_id"] in d.buildings_by_id
        assert r["address"] == d.buildings_by_id[r["address_id"]].address
        assert "室" not in r["address"] and "单元" not in r["address"]
        assert r["channel"] in ("hotline", "wechat", "app", "property_desk", "walk_in")
        assert abs(r["lat"] - 31.205) < 0.05 and abs(r["long"] - 121.47) < 0.05
        late += r["status"] == "closed" and updated > expected
        requester = d.requester_of(r["service_request_id"])
        assert requester.building_id == r["address_id"]
        assert requester.age_on(d.start.date()) >= 18
    statuses = Counter(r["status"] for r in rows)
    assert statuses["open"] > 0 and statuses["closed"] > statuses["open"]
    assert late > 0.05 * len(rows)
    assert sum(r["media_url"] is None for r in rows) > 0.8 * len(rows)
    per_building = Counter(r["address_id"] for r in rows)
    assert per_building.most_common(1)[0][1] >= 3 * len(rows) / len(d.buildings)
    requesters = {d.requester_of(r["service_request_id"]).resident_id for r in rows}
    assert len(requesters) < 0.2 * len(d.residents)  # a minority files requests


def test_generation_is_deterministic() -> None:
    a = District.generate(residents=600, seed=7)
    b = District.generate(residents=600, seed=7)
    c = District.generate(residents=600, seed=8)
    dump = lambda d: json.dumps(d.requests(), ensure_ascii=False)  # noqa: E731
    assert dump(a) == dump(b)
    assert [r.id_number for r in a.residents] == [r.id_number for r in b.residents]
    assert dump(a) != dump(c)
    assert a.advance(1.5) == b.advance(1.5)
    assert a.advance(0.5, new_requests=4) == b.advance(0.5, new_requests=4)
    assert dump(a) == dump(b) and a.clock == b.clock


def test_advance_moves_clock_and_updates(district: District) -> None:
    d = District.generate(residents=1000, seed=42)
    before = {r["service_request_id"]: r for r in d.requests()}
    old_clock = d.clock
    counts = d.advance(days=2)
    assert d.clock == old_clock + timedelta(days=2)
    assert counts["new"] > 0 and counts["updated"] > 0
    after = {r["service_request_id"]: r for r in d.requests()}
    new_ids = set(after) - set(before)
    assert len(new_ids) == counts["new"]
    changed = [i for i in before if after[i] != before[i]]
    assert len(changed) == counts["updated"]
    for i in changed + sorted(new_ids):
        assert old_clock < parse(after[i]["updated_datetime"]) <= d.clock
    for i in new_ids:
        assert old_clock < parse(after[i]["requested_datetime"]) <= d.clock
    assert d.advance(0.25, new_requests=0)["new"] == 0


# ------------------------------------------------------------------------------- Open311 HTTP


def test_services_and_single_request(district: District) -> None:
    client = TestClient(create_open311_app(district))
    services = client.get(f"{V2}/services.json").json()
    assert len(services) == 9
    assert {s["service_code"] for s in services} >= {"PROP_REPAIR", "NOISE", "ELDERLY_CARE"}
    for s in services:
        assert set(s) == {
            "service_code",
            "service_name",
            "description",
            "metadata",
            "type",
            "keywords",
            "group",
        }
        assert s["metadata"] is False and s["type"] == "realtime"
    one = district.requests()[0]
    resp = client.get(f"{V2}/requests/{one['service_request_id']}.json")
    assert resp.status_code == 200 and resp.json() == [one]
    missing = client.get(f"{V2}/requests/SR-9999999.json")
    assert missing.status_code == 404
    assert missing.json()[0]["code"] == 404 and missing.json()[0]["description"]


def test_query_params_and_errors(district: District) -> None:
    client = TestClient(create_open311_app(district))
    default = fetch_all(client, page_size=1000)  # no dates: last 90 days before the clock
    assert default == district.requests()
    start = district.start
    for lo, hi in (("start_date", "end_date"), ("updated_after", "updated_before")):
        resp = client.get(
            f"{V2}/requests.json",
            params={lo: start.isoformat(), hi: (start + timedelta(days=91)).isoformat()},
        )
        assert resp.status_code == 400
        assert resp.json()[0]["code"] == 400 and "90 days" in resp.json()[0]["description"]
    for params in (
        {"start_date": "yesterday"},
        {"updated_after": "2026-13-45T99:00"},
        {"page": 0},
        {"page_size": 1001},
        {"status": "pending"},
    ):
        resp = client.get(f"{V2}/requests.json", params=params)
        assert resp.status_code == 400, params
        assert resp.json()[0]["code"] == 400
    assert client.get(f"{V2}/requests.json", params={"page": 99, "page_size": 1000}).json() == []
    opened = fetch_all(client, status="open", page_size=1000)
    assert opened and all(r["status"] == "open" for r in opened)
    assert len(opened) == sum(r["status"] == "open" for r in district.requests())
    noise = fetch_all(client, service_code="NOISE,PARKING", page_size=1000)
    assert noise and {r["service_code"] for r in noise} <= {"NOISE", "PARKING"}
    # requested_datetime window, inclusive on both ends; '+' decoded to a space is tolerated
    lo, hi = start + timedelta(days=10), start + timedelta(days=20)
    lo_text, hi_text = lo.isoformat().replace("+", "%20"), hi.isoformat().replace("+", "%2B")
    raw = client.get(f"{V2}/requests.json?start_date={lo_text}&end_date={hi_text}&page_size=1000")
    assert raw.status_code == 200
    expected = [r for r in district.requests() if lo <= parse(r["requested_datetime"]) <= hi]
    assert raw.json() == expected


def test_paging_returns_each_request_exactly_once(district: District) -> None:
    with SimulatorServer(district) as sim, httpx.Client(base_url=sim.base_url, timeout=5) as client:
        assert sim.open311_url == sim.base_url + "/open311/v2"
        rows = all_windows(client, district, page_size=37)
        truth = client.get("/_sim/truth").json()
    ids = [r["service_request_id"] for r in rows]
    assert Counter(ids).most_common(1)[0][1] == 1
    assert set(ids) == {r["service_request_id"] for r in district.requests()}
    assert truth["requests"] == len(ids) and truth["clock"] == district.clock.isoformat()
    assert truth["calls"] >= len(ids) // 37


def test_advance_over_http_and_incremental_window() -> None:
    d = District.generate(residents=800, seed=3)
    with SimulatorServer(d) as sim, httpx.Client(base_url=sim.base_url, timeout=5) as client:
        old_clock = d.clock
        counts = client.post("/_sim/advance", params={"days": 1.5, "new_requests": 10}).json()
        assert counts["new"] == 10 and counts["updated"] > 0
        assert parse(counts["clock"]) == old_clock + timedelta(days=1.5)
        delta = fetch_all(
            client,
            updated_after=(old_clock + timedelta(seconds=1)).isoformat(),
            updated_before=(d.clock + timedelta(seconds=1)).isoformat(),
            page_size=7,
        )
    assert len(delta) == counts["new"] + counts["updated"]
    assert all(old_clock < parse(r["updated_datetime"]) <= d.clock for r in delta)


# ------------------------------------------------------------------------------- dirt


def test_dirt_duplicates_are_counted() -> None:
    d = District.generate(residents=1000, seed=5)
    client = TestClient(create_open311_app(d, dirt=DirtConfig(duplicate_rate=0.1)))
    rows = all_windows(client, d, page_size=50)
    counts = Counter(r["service_request_id"] for r in rows)
    dups = {i for i, c in counts.items() if c > 1}
    plan = d.dirt_plan(DirtConfig(duplicate_rate=0.1))
    assert dups == set(plan["duplicate"]) == set(d.dirt_log.duplicated)
    assert 10 <= len(dups) <= 60
    assert len(rows) == len(d.requests()) + len(dups)
    assert set(counts) == {r["service_request_id"] for r in d.requests()}


def test_dirt_missing_fields_and_bad_dates() -> None:
    d = District.generate(residents=1000, seed=5)
    config = DirtConfig(missing_field_rate=0.05, bad_date_rate=0.05)
    client = TestClient(create_open311_app(d, dirt=config))
    rows = fetch_all(client, page_size=200)
    assert len(rows) == 300
    missing = {
        r["service_request_id"]: f for r in rows for f in ("service_code", "requested_datetime") if f not in r
    }
    assert missing and missing == d.dirt_log.missing_field == d.dirt_plan(config)["missing_field"]
    bad: dict[str, str] = {}
    for r in rows:
        if r.get("updated_datetime") == UNPARSEABLE_DATE:
            bad[r["service_request_id"]] = BAD_DATE_UNPARSEABLE
        elif "requested_datetime" in r and parse(r["requested_datetime"]) > d.clock:
            bad[r["service_request_id"]] = BAD_DATE_FUTURE
    assert bad and bad == d.dirt_log.bad_date == d.dirt_plan(config)["bad_date"]
    assert set(bad.values()) == {BAD_DATE_UNPARSEABLE, BAD_DATE_FUTURE}
    # clean records are untouched
    truth = {r["service_request_id"]: r for r in d.requests()}
    clean = [r for r in rows if r["service_request_id"] not in missing and r["service_request_id"] not in bad]
    assert clean and all(r == truth[r["service_request_id"]] for r in clean)


def test_dirt_new_column_and_truncated_page() -> None:
    d = District.generate(residents=1000, seed=5)
    client = TestClient(
        create_open311_app(d, dirt=DirtConfig(new_column=True, truncated_page=2, truncated_times=1))
    )
    first = client.get(f"{V2}/requests.json", params={"page": 1, "page_size": 100})
    assert all("satisfaction_score" in r for r in first.json())
    assert all(r["satisfaction_score"] is None for r in first.json() if r["status"] == "open")
    assert all(1 <= r["satisfaction_score"] <= 5 for r in first.json() if r["status"] == "closed")
    second = client.get(f"{V2}/requests.json", params={"page": 2, "page_size": 100})
    assert second.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(second.content)
    assert second.content.startswith(b'[{"service_request_id"')
    retry = client.get(f"{V2}/requests.json", params={"page": 2, "page_size": 100})
    assert len(retry.json()) == 100  # truncated_times=1: the retry is whole
    assert d.dirt_log.counts()["truncated_pages"] == 1
    assert d.dirt_log.truncated_pages[0]["page"] == 2


# ------------------------------------------------------------------------------- faults


def test_fault_injection_then_recovery(district: District) -> None:
    app = create_open311_app(district)
    client = TestClient(app)
    assert client.post("/_sim/faults", json={"status": 503, "count": 2}).json() == {"pending": 2}
    assert client.post("/_sim/faults", json={"status": 429, "count": 1, "retry_after": 7}).json() == {
        "pending": 3
    }
    got = [client.get(f"{V2}/services.json") for _ in range(4)]
    assert [r.status_code for r in got] == [503, 503, 429, 200]
    assert got[0].json()[0]["code"] == 503
    assert got[2].headers["retry-after"] == "7"
    truth = client.get("/_sim/truth").json()
    assert truth["calls"] == 4 and truth["faulted"] == 3 and truth["faults_pending"] == 0
    assert client.post("/_sim/faults", json={"status": 200}).status_code == 422  # validated payload


def test_fault_delay_causes_client_timeout(district: District) -> None:
    with SimulatorServer(district, faults=[Fault(status=None, delay_seconds=0.6)]) as sim:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(sim.open311_url + "/services.json", timeout=0.15)
        ok = httpx.get(sim.open311_url + "/services.json", timeout=5)
        assert ok.status_code == 200
        assert sim.calls == 2


# ------------------------------------------------------------------------------- privacy


REQUESTER_FIELDS = ("account_id", "first_name", "last_name", "phone")


def test_requester_fields_identify_the_requester_and_nothing_else_is_personal(district: District) -> None:
    """Requests carry who filed them in the GeoReport v2 POST fields (the hotline's internal
    export); every other field — descriptions, notes, addresses — holds no personal data."""
    d = District.generate(residents=1000, seed=42)
    d.advance(3)
    client = TestClient(create_open311_app(d))
    rows = all_windows(client, d, page_size=1000)
    assert len(rows) == len(d.requests())
    for row in rows:
        requester = d.requester_of(row["service_request_id"])
        assert row["account_id"] == requester.id_number
        assert row["last_name"] + row["first_name"] == requester.name
        assert row["phone"] == requester.mobile
        assert (row["grid_code"], row["community_code"]) == (requester.grid_id, requester.community_id)
    names = {r.name for r in d.residents}
    numbers = [r.id_number for r in d.residents] + [r.mobile for r in d.residents if r.mobile]
    for row in rows:
        other = {k: v for k, v in row.items() if k not in REQUESTER_FIELDS}
        text = json.dumps(other, ensure_ascii=False)
        assert not any(n in text for n in numbers), row["service_request_id"]
        for value in other.values():
            if isinstance(value, str):
                hits = [value[i : i + k] for k in (2, 3, 4) for i in range(len(value) - k + 1)]
                assert not names.intersection(hits), (row["service_request_id"], value)


# ------------------------------------------------------------------------------- separate process


def test_module_entry_point_runs_as_a_process(tmp_path, registry_dsn, property_dsn) -> None:
    """The CLI simulator feeds every system: its own databases and drop folder, not the demo's."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest.simulator", "--residents", "200", "--seed", "1", "--port", "0"]
        + ["--dropzone", str(tmp_path / "dropzone")],
        cwd=ROOT,
        env={**os.environ, "SIM_REGISTRY_DSN": registry_dsn, "SIM_PROPERTY_DSN": property_dsn},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        line = lines.get(timeout=15)
        match = re.fullmatch(r"simulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        truth = httpx.get(match.group(1) + "/_sim/truth", timeout=5).json()
        assert truth["requests"] == 60
        assert list((tmp_path / "dropzone").glob("oneroster_*_bulk.zip"))  # bundles went where asked
    finally:
        proc.terminate()
        proc.wait(timeout=10)
