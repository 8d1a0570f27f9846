"""The property and commercial system (MariaDB) through the SQL connector, against ground truth.

MariaDB keeps local ``DATETIME`` values without zone; the contract says they are +08:00, so the
window bounds must be converted to local time and values rendered back with the offset — the
boundary test fails if either is off by the eight hours.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pymysql
import pytest

from ingest.contracts import REGISTRY_DIR, load_source
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog, read_cursor
from ingest.pipeline import replay_dataset, run_dataset
from ingest.privacy import load_keys
from ingest.privacy.leakscan import identifiers_of, scan_files
from ingest.privacy.sealed import Sealer
from ingest.simulator import DirtConfig, property_db
from ingest.sources import SourceError, Window
from ingest.sources.sql import SqlConnector

FIXTURES = Path(__file__).parent / "fixtures" / "sql"
SOURCE = load_source(REGISTRY_DIR / "property.yml")
ORDERS = SOURCE.dataset("work_orders")


def load(lake, district, dsn, datasets=("merchants", "work_orders"), until=None):
    until = until or district.clock + timedelta(minutes=1)
    return {
        n: run_dataset(SOURCE, SOURCE.dataset(n), until=until, base_url=dsn, settings=lake) for n in datasets
    }


def rows(lake, dataset="work_orders") -> dict[str, dict]:
    table = open_catalog(lake).load_table((RAW_NAMESPACE, f"property__{dataset}")).scan().to_arrow()
    key = SOURCE.dataset(dataset).primary_key[0]
    return {r[key]: r for r in table.to_pylist()}


def truth(district, dirt=None) -> dict[str, dict[str, dict]]:
    data = property_db.tables(district, dirt)
    return {t: {r[property_db.PRIMARY_KEYS[t]]: r for r in data[t]} for t in data}


def test_recorded_batch_parses_with_local_offsets():
    payload = (FIXTURES / "property_work_orders_batch1.ndjson").read_bytes()
    page = SqlConnector.parse(payload, label="fixture")
    assert len(page.records) == 3
    assert all(r["created_at"].endswith("+08:00") for r in page.records)
    kept, removed = SqlConnector.without(payload, lambda r: r["reporter_phone"] != "13762296247")
    assert removed == 1 and b"13762296247" not in kept


def test_first_load_matches_ground_truth_in_local_time_without_clear_identifiers(
    lake, district, property_dsn, tmp_path
):
    assert property_db.sync(district, property_dsn) == {t: len(v) for t, v in truth(district).items()}
    want = truth(district)
    reports = load(lake, district, property_dsn)
    for name, report in reports.items():
        assert report.status == "success" and report.quarantined == 0, report.summary()
        assert report.rows_inserted == len(want[name])
    got = rows(lake)
    assert set(got) == set(want["work_orders"])
    for key, row in want["work_orders"].items():
        # DATETIME read as +08:00: the instants are the simulator's, not eight hours off
        assert got[key]["created_at"] == row["created_at"] and got[key]["updated_at"] == row["updated_at"]
        assert got[key]["status"] == row["status"]
    statuses = {r["status"] for r in got.values()}
    assert {"done", "assigned"} <= statuses and statuses <= {"open", "assigned", "done", "cancelled"}
    assert all(r["reporter_name"].startswith("nm_") for r in got.values())
    merchants = rows(lake, "merchants")
    assert set(merchants) == set(want["merchants"])
    assert {r["kind"] for r in merchants.values()} == {"merchant", "property_company"}

    needles = identifiers_of(district)
    storage = LakeStorage(lake)
    landed = storage.list("landing/property/work_orders/")[0]
    (tmp_path / "opened.ndjson").write_bytes(
        Sealer(load_keys().vault_key, "landing").open(landed, storage.read_bytes(landed))
    )
    assert scan_files([tmp_path], needles)[1], "positive control: the scanner sees an opened payload"
    lake_dir = Path(lake.lake_url)
    files, hits = scan_files([lake_dir], needles, skip=[lake_dir / "identity"])
    assert files > 5 and hits == []


def test_window_bounds_are_converted_to_local_time(lake, district, property_dsn):
    property_db.sync(district, property_dsn)
    want = truth(district)["work_orders"]
    # cut the window one second after some order's last update: it must be in, the next one out
    times = sorted({r["updated_at"] for r in want.values()})
    cut = times[len(times) // 2]
    report = load(lake, district, property_dsn, ["work_orders"], until=cut + timedelta(seconds=1))
    expected = {k for k, r in want.items() if r["updated_at"] <= cut}
    assert report["work_orders"].rows_inserted == len(expected)
    assert set(rows(lake)) == expected


def test_status_changes_and_new_orders_load_incrementally(lake, district, property_dsn):
    property_db.sync(district, property_dsn)
    load(lake, district, property_dsn, ["work_orders"])
    before = truth(district)["work_orders"]
    district.advance(days=2)
    assert property_db.sync(district, property_dsn)["work_orders"] > 0
    assert property_db.sync(district, property_dsn) == {"merchants": 0, "work_orders": 0}
    after = truth(district)["work_orders"]
    new = set(after) - set(before)
    progressed = {k for k in before if after[k] != before[k]}
    assert new and progressed
    report = load(lake, district, property_dsn, ["work_orders"])["work_orders"]
    assert (report.rows_inserted, report.rows_updated) == (len(new), len(progressed))
    got = rows(lake)
    assert all(got[k]["status"] == r["status"] for k, r in after.items())
    again = load(lake, district, property_dsn, ["work_orders"])["work_orders"]
    assert (again.rows_inserted, again.rows_updated) == (0, 0)


def test_missing_categories_and_impossible_dates_are_quarantined(lake, district, property_dsn):
    dirt = DirtConfig(missing_field_rate=0.05, bad_date_rate=0.05)
    property_db.sync(district, property_dsn, dirt=dirt)
    want = truth(district, dirt)["work_orders"]
    missing = {k for k, r in want.items() if r["category"] is None}
    bad = {
        k
        for k, r in want.items()
        if any(r[c] is not None and r[c] < r["created_at"] for c in ("assigned_at", "closed_at"))
    }
    assert missing and bad
    report = load(lake, district, property_dsn, ["work_orders"])["work_orders"]
    assert report.quarantined == len(missing | bad)
    assert set(rows(lake)) == set(want) - missing - bad
    storage = LakeStorage(lake)
    (path,) = storage.list("quarantine/property/work_orders/")
    lines = Sealer(load_keys().vault_key, "landing").open(path, storage.read_bytes(path)).splitlines()
    reasons = {json.loads(x)["record"]["work_order_id"]: json.loads(x)["reason"] for x in lines}
    assert all("category" in reasons[k] for k in missing)
    assert all("before 'created_at'" in reasons[k] for k in bad - missing)


def test_rejected_credentials_fail_fast_without_echoing_the_password(district, property_dsn):
    property_db.sync(district, property_dsn)
    database = property_dsn.rsplit("/", 1)[1]
    con = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with con.cursor() as cur:
        cur.execute("create user if not exists 'cdl_reader'@'%' identified by 'right-password-1'")
        cur.execute(f"grant select on `{database}`.* to 'cdl_reader'@'%'")
    con.close()
    try:
        window = Window(district.start, district.clock)
        dsn = property_dsn.replace("root@", "cdl_reader@")
        secret = "wrong-password-5531"  # noqa: S105 - a made-up password the error must not echo
        started = datetime.now()
        with pytest.raises(SourceError) as err:
            next(SqlConnector(dsn, api_key=secret, source="property").extract(ORDERS, window))
        assert (datetime.now() - started).total_seconds() < 5, "no retry storm on refused credentials"
        assert database in str(err.value) and "127.0.0.1:3306" in str(err.value)
        assert secret not in str(err.value) and "password" in str(err.value)
        # the password from the secret (PROPERTY_PASSWORD), not in the DSN, is what logs in
        right = SqlConnector(dsn, api_key="right-password-1", source="property")  # noqa: S106
        assert len(next(right.extract(ORDERS, window)).records) > 0
        right.close()
    finally:
        con = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
        with con.cursor() as cur:
            cur.execute("drop user if exists 'cdl_reader'@'%'")
        con.close()


def test_replay_rebuilds_work_orders_from_landed_ndjson_without_the_database(lake, district, property_dsn):
    property_db.sync(district, property_dsn)
    load(lake, district, property_dsn, ["work_orders"])
    district.advance(days=1)
    property_db.sync(district, property_dsn)
    load(lake, district, property_dsn, ["work_orders"])
    table = open_catalog(lake).load_table((RAW_NAMESPACE, "property__work_orders"))
    before, cursor = rows(lake), read_cursor(table)
    con = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with con.cursor() as cur:  # the source is gone: replay must not need it
        cur.execute(f"drop database `{property_dsn.rsplit('/', 1)[1]}`")
    con.close()
    reports = replay_dataset(
        SOURCE, ORDERS, from_date="2000-01-01", to_date="2100-01-01", rebuild=True, settings=lake
    )
    assert len(reports) == 2
    after = rows(lake)
    strip = ("_run_id", "_loaded_at")
    assert {k: {c: v for c, v in r.items() if c not in strip} for k, r in after.items()} == {
        k: {c: v for c, v in r.items() if c not in strip} for k, r in before.items()
    }
    table = open_catalog(lake).load_table((RAW_NAMESPACE, "property__work_orders"))
    assert read_cursor(table) == cursor


def test_a_merchant_with_an_invalid_uscc_is_quarantined_and_the_rest_load(lake, district, property_dsn):
    property_db.sync(district, property_dsn)
    good = truth(district)["merchants"]
    some = next(iter(good.values()))
    check = some["uscc"][-1]
    broken = some["uscc"][:-1] + ("0" if check != "0" else "1")  # a typo in the check character
    con = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with con.cursor() as cur:
        cur.execute(f"use `{property_dsn.rsplit('/', 1)[1]}`")
        cur.execute(
            "insert into merchants select %s, concat(name, '分店'), kind, industry, building_id, grid_id, "
            "community_id, phone, licence_status, registered_on, updated_at, deleted_at "
            "from merchants where uscc = %s",
            (broken, some["uscc"]),
        )
    con.close()
    report = load(lake, district, property_dsn, ["merchants"])["merchants"]
    assert report.quarantined == 1 and report.rows_inserted == len(good)
    assert set(rows(lake, "merchants")) == set(good)
