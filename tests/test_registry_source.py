"""The population registry (PostgreSQL) through the SQL connector, counted against ground truth.

Ground truth is ``registry_db.tables(district)``: the registry as of the district clock, the same
rows the simulator wrote into the test's own database (``registry_dsn``, dropped afterwards).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from ingest.conform import SchemaDriftError
from ingest.contracts import REGISTRY_DIR, load_registry, load_source
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.pipeline import run_dataset
from ingest.privacy import is_minor, load_keys
from ingest.privacy.identifiers import validate_resident_id
from ingest.privacy.leakscan import identifiers_of, scan_files
from ingest.privacy.sealed import Sealer
from ingest.simulator import DirtConfig, registry_db
from ingest.sources import SourceError, Window
from ingest.sources.sql import SqlConnector, check_identifier

FIXTURES = Path(__file__).parent / "fixtures" / "sql"
# The registry's own contract file (not the whole registry: other sources' contracts are not ours).
SOURCE = load_source(REGISTRY_DIR / "registry.yml")
RESIDENTS = SOURCE.dataset("residents")


def load(lake, district, dsn, datasets=None, until=None):
    """Run the registry's datasets (all, or the named ones) like run_source does: {dataset: report}."""
    until = until or district.clock + timedelta(minutes=1)
    selected = [SOURCE.dataset(n) for n in datasets] if datasets else SOURCE.datasets
    return {ds.name: run_dataset(SOURCE, ds, until=until, base_url=dsn, settings=lake) for ds in selected}


def rows(lake, dataset="residents") -> dict[str, dict]:
    table = open_catalog(lake).load_table((RAW_NAMESPACE, f"registry__{dataset}")).scan().to_arrow()
    key = SOURCE.dataset(dataset).primary_key[0]
    return {r[key]: r for r in table.to_pylist()}


def truth(district, dirt=None) -> dict[str, dict[str, dict]]:
    data = registry_db.tables(district, dirt)
    return {t: {r[registry_db.PRIMARY_KEYS[t]]: r for r in data[t]} for t in data}


def test_connector_reads_recorded_ndjson_and_erases_rows():
    payload = (FIXTURES / "registry_residents_batch1.ndjson").read_bytes()
    page = SqlConnector.parse(payload, label="fixture")
    assert [r["resident_id"] for r in page.records] == ["R0000001", "R0000002", "R0000003"]
    assert page.extension == "ndjson" and page.payload == payload
    assert page.records[0]["updated_at"] == "2024-05-31T18:00:00+00:00"
    kept, removed = SqlConnector.without(payload, lambda r: r["resident_id"] != "R0000002")
    assert removed == 1
    assert [r["resident_id"] for r in SqlConnector.parse(kept, label="x").records] == ["R0000001", "R0000003"]
    assert SqlConnector.without(payload, lambda r: True) == (payload, 0)
    with pytest.raises(SourceError, match="line 2 is not valid JSON"):
        SqlConnector.parse(payload[: payload.index(b"\n") + 20], label="cut")


@pytest.mark.parametrize(
    "endpoint", ["residents; drop table residents", 'residents"--', "a.b.c", "1residents", "res idents"]
)
def test_table_names_are_validated_before_anything_reaches_the_database(endpoint):
    connector = SqlConnector("postgresql://postgres@127.0.0.1:1/nowhere", source="registry")
    dataset = RESIDENTS.model_copy(update={"endpoint": endpoint})
    window = Window(
        datetime.fromisoformat(RESIDENTS.cursor.initial), datetime.fromisoformat("2026-01-01T00:00+08:00")
    )
    with pytest.raises(SourceError, match="identifier|schema.table"):
        next(connector.extract(dataset, window))
    assert check_identifier("public", what="schema") == "public"


def test_first_load_matches_the_registry_and_holds_no_clear_identifiers(
    lake, district, registry_dsn, tmp_path
):
    written = registry_db.sync(district, registry_dsn)
    want = truth(district)
    assert written == {t: len(v) for t, v in want.items()}
    reports = load(lake, district, registry_dsn)
    for name, report in reports.items():
        assert report.status == "success" and report.quarantined == 0, report.summary()
        assert report.rows_inserted == len(want[name]), name
        assert set(rows(lake, name)) == set(want[name]), name

    got = rows(lake)
    # moves, move-outs and deaths since the registry went live are in the first load
    deleted = {k for k, r in want["residents"].items() if r["deleted_at"] is not None}
    assert deleted, "the simulated registry should have soft-deleted residents by now"
    assert {k for k, r in got.items() if r["deleted_at"] is not None} == deleted
    for key, row in want["residents"].items():
        assert got[key]["updated_at"] == row["updated_at"] and got[key]["status"] == row["status"]
        assert got[key]["grid_id"] == row["grid_id"]
    assert all(r["resident_id_number"].startswith("id_") for r in got.values())
    assert all(r["resident_name"].startswith("nm_") for r in got.values())
    births = [r for r in want["residents"].values() if r["resident_id"] > district.residents[-1].resident_id]
    assert births, "new registrations and births should exist"
    # minors flagged from the birth date in the ID number, at the time of the record (PIPL art. 28)
    minors = {k for k, r in got.items() if r["resident_id_number_is_minor"]}
    assert minors == {
        k
        for k, r in want["residents"].items()
        if is_minor(r["birth_date"], r["updated_at"].astimezone(UTC).date())
    }

    # no clear ID number, name or mobile of anyone in the registry outside the identity zone
    needles = identifiers_of(district)
    for r in want["residents"].values():
        needles |= {r["id_number"], r["name"]} | ({r["mobile"]} if r["mobile"] else set())
    needles |= {r["worker_name"] for r in want["grids"].values()}
    storage = LakeStorage(lake)
    landed = storage.list("landing/registry/residents/")[0]
    (tmp_path / "opened.ndjson").write_bytes(
        Sealer(load_keys().vault_key, "landing").open(landed, storage.read_bytes(landed))
    )
    assert scan_files([tmp_path], needles)[1], "positive control: the scanner sees an opened payload"
    lake_dir = Path(lake.lake_url)
    files, hits = scan_files([lake_dir], needles, skip=[lake_dir / "identity"])
    assert files > 10 and hits == []


def test_incremental_run_loads_only_moved_and_new_rows(lake, district, registry_dsn):
    registry_db.sync(district, registry_dsn)
    load(lake, district, registry_dsn, ["residents", "households"])
    before = truth(district)
    district.advance(days=30)
    changed = registry_db.sync(district, registry_dsn)
    after = truth(district)
    for name in ("residents", "households"):
        new = set(after[name]) - set(before[name])
        moved = {k for k in before[name] if after[name][k] != before[name][k]}
        assert changed[name] == len(new | moved)
        assert new | moved, f"30 days should change some {name}"
    # a second sync without a clock change writes nothing (updated_at stays)
    assert registry_db.sync(district, registry_dsn) == {t: 0 for t in registry_db.TABLES}

    reports = load(lake, district, registry_dsn, ["residents", "households"])
    for name, report in reports.items():
        new = set(after[name]) - set(before[name])
        moved = {k for k in before[name] if after[name][k] != before[name][k]}
        assert (report.rows_inserted, report.rows_updated) == (len(new), len(moved)), report.summary()
        # only the lookback (2 h before the cursor) is re-read, not the table
        assert report.records_received < len(after[name]) / 4
        got = rows(lake, name)
        assert set(got) == set(after[name])
        assert all(got[k]["updated_at"] == r["updated_at"] for k, r in after[name].items())
    # moved-out and deceased residents stay as soft-deleted rows, flagged by deleted_at
    got = rows(lake)
    for key, row in after["residents"].items():
        assert (got[key]["deleted_at"] is None) == (row["deleted_at"] is None)
        assert got[key]["status"] == row["status"]

    again = load(lake, district, registry_dsn, ["residents", "households"])
    assert all(r.rows_inserted == 0 and r.rows_updated == 0 for r in again.values())


def test_new_source_column_evolves_the_table_and_fails_a_frozen_contract(lake, district, registry_dsn):
    registry_db.sync(district, registry_dsn)
    load(lake, district, registry_dsn, ["residents"])
    con = psycopg2.connect(registry_dsn)
    with con, con.cursor() as cur:
        cur.execute("alter table residents add column hukou_type text")
        cur.execute(
            "update residents set hukou_type = 'local', updated_at = updated_at + interval '1 second' "
            "where resident_id = (select resident_id from residents order by updated_at desc limit 1) "
            "returning resident_id"
        )
        (changed,) = cur.fetchone()
    con.close()
    until = district.clock + timedelta(minutes=1)
    frozen = RESIDENTS.model_copy(update={"schema_change": "freeze"})
    with pytest.raises(SchemaDriftError, match="hukou_type"):
        run_dataset(SOURCE, frozen, until=until, base_url=registry_dsn, settings=lake)
    table = open_catalog(lake).load_table((RAW_NAMESPACE, "registry__residents"))
    assert "hukou_type" not in table.schema().column_names

    report = run_dataset(SOURCE, RESIDENTS, until=until, base_url=registry_dsn, settings=lake)
    # every row re-read now carries the new column (the changed row among them), nothing else
    assert report.status == "success" and report.rows_inserted == 0
    assert 1 <= report.rows_updated == report.records_received < 50
    got = rows(lake)
    assert got[changed]["hukou_type"] == "local"
    assert sum(1 for r in got.values() if r["hukou_type"] is not None) == 1


def test_malformed_id_numbers_and_missing_birth_dates_are_quarantined(lake, district, registry_dsn):
    dirt = DirtConfig(malformed_id_rate=0.05, missing_field_rate=0.03)
    registry_db.sync(district, registry_dsn, dirt=dirt)
    want = truth(district, dirt)["residents"]
    malformed = {k for k, r in want.items() if not validate_resident_id(r["id_number"]).valid}
    missing = {k for k, r in want.items() if r["birth_date"] is None}
    assert malformed and missing
    report = load(lake, district, registry_dsn, ["residents"])["residents"]
    assert report.quarantined == len(malformed | missing)
    assert set(rows(lake)) == set(want) - malformed - missing

    storage = LakeStorage(lake)
    (path,) = storage.list("quarantine/registry/residents/")
    lines = Sealer(load_keys().vault_key, "landing").open(path, storage.read_bytes(path)).splitlines()
    reasons = {json.loads(line)["record"]["resident_id"]: json.loads(line)["reason"] for line in lines}
    assert set(reasons) == malformed | missing
    assert all("birth_date" in reasons[k] for k in missing - malformed)
    assert all("id_number" in reasons[k] and "check" in reasons[k].lower() for k in malformed - missing)


def test_an_unreachable_database_fails_clearly_without_the_password(lake, district):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    secret = "pw-never-shown-7781"  # noqa: S105 - a made-up password the error must not echo
    dsn = f"postgresql://postgres:{secret}@127.0.0.1:{port}/cdl_registry_missing"
    with pytest.raises(SourceError) as err:
        run_dataset(SOURCE, RESIDENTS, until=district.clock, base_url=dsn, settings=lake)
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "cdl_registry_missing" in message
    assert secret not in message
    # the password given as the secret (REGISTRY_PASSWORD) is not shown either
    connector = SqlConnector(f"postgresql://postgres@127.0.0.1:{port}/x", api_key=secret, source="registry")
    window = Window(district.start, district.clock)
    with pytest.raises(SourceError) as err:
        next(connector.extract(RESIDENTS, window))
    assert secret not in str(err.value) and "registry" in str(err.value)


def test_an_airflow_connection_becomes_a_dsn_without_its_password(monkeypatch):
    """In a task, REGISTRY_DSN may be unset: the contract's Airflow connection says where the
    database is; the password stays the secret, never part of the DSN (which reaches logs)."""
    from airflow.sdk import Connection

    from ingest.pipeline import resolve_connection

    conns = {
        "registry_default": Connection(
            conn_id="registry_default", conn_type="postgres", host="db.internal", port=5432,
            schema="population", login="lake_reader", password="s3cret-pw",  # noqa: S106 - a test value
        ),
        "property_default": Connection(
            conn_id="property_default", conn_type="mysql", host="shop-db", schema="property", login="ro",
        ),
    }  # fmt: skip
    monkeypatch.setattr(Connection, "get", classmethod(lambda cls, conn_id: conns[conn_id]))
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "ingest_registry")
    registry = load_registry()
    assert resolve_connection(registry.source("registry")) == (
        "postgresql://lake_reader@db.internal:5432/population",
        "s3cret-pw",
    )
    assert resolve_connection(registry.source("property")) == ("mysql://ro@shop-db/property", None)
