"""An erasure request removes one resident from every zone, and keeps them out."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from pyiceberg.expressions import EqualTo

from ingest.contracts import load_registry
from ingest.erasure import erase_resident
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.pipeline import replay_dataset, run_source
from ingest.privacy import IdentityVault, LakeAuditSink, load_keys
from ingest.privacy.leakscan import scan_files, scan_warehouse
from ingest.privacy.sealed import Sealer
from ingest.warehouse import build

pytestmark = pytest.mark.integration
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
TABLE = (RAW_NAMESPACE, "open311__service_requests")


def landed_records(lake) -> list[dict]:
    storage, sealer = LakeStorage(lake), Sealer(load_keys().vault_key, "landing")
    out = []
    for rel in storage.list("landing/open311/service_requests/"):
        out += json.loads(sealer.open(rel, storage.read_bytes(rel)))
    return out


def test_erasure_removes_the_resident_everywhere_and_keeps_them_out(lake, district, simulator):
    run_source("open311", until=UNTIL, base_url=simulator.open311_url, settings=lake)
    district.advance(days=1, new_requests=5)
    run_source(
        "open311", until=UNTIL, base_url=simulator.open311_url, settings=lake
    )  # two snapshots, two pages
    build(lake)
    filed = Counter(district.requester_of(r["service_request_id"]).id_number for r in district.requests())
    id_number, their_requests = filed.most_common(1)[0]
    resident = next(r for r in district.residents if r.id_number == id_number)
    token = load_keys().pseudonymiser().token("id_number", id_number)
    table = open_catalog(lake).load_table(TABLE)
    assert table.scan(row_filter=EqualTo("account_id", token)).to_arrow().num_rows == their_requests
    landed_before = len(landed_records(lake))

    report = erase_resident(
        id_number=id_number, actor="clerk-07", purpose="resident's erasure request", settings=lake
    )

    # raw: no row, no data file, no snapshot that still holds them; everyone else untouched
    table = open_catalog(lake).load_table(TABLE)
    assert report.rows_deleted["raw.open311__service_requests"] == their_requests
    assert table.scan(row_filter=EqualTo("account_id", token)).to_arrow().num_rows == 0
    assert table.scan().to_arrow().num_rows == len(district.requests()) - their_requests
    assert len(list(table.snapshots())) == 1 and report.data_files_removed >= 1
    needles = {id_number, token, resident.name} | ({resident.mobile} if resident.mobile else set())
    raw_files, raw_hits = scan_files([Path(lake.lake_url) / "raw"], {token})
    assert raw_files and raw_hits == []
    # landing: their records are gone from the sealed payloads; nobody else's
    landed = landed_records(lake)
    assert all(r.get("account_id") != id_number for r in landed)
    assert len(landed) == landed_before - report.landing_records_removed
    # identity zone: their ID number can no longer be resolved
    storage = LakeStorage(lake)
    vault = IdentityVault(storage, load_keys().vault_key, LakeAuditSink(storage))
    assert vault.resolve([token], purpose="erasure check", actor="pytest") == {}
    # warehouse rebuilt without them
    assert report.warehouse_rebuilt
    relations, hits = scan_warehouse(lake.warehouse_path, needles)
    assert relations >= 4 and hits == []
    con = duckdb.connect(str(lake.warehouse_path), read_only=True)
    assert con.execute("select sum(requests_received) from marts.mart_service_requests_daily").fetchone()[
        0
    ] == (len(district.requests()) - their_requests)
    con.close()
    # audited, without identifiers
    (audit,) = storage.list("audit/erasure/")
    text = storage.read_bytes(audit).decode()
    assert "clerk-07" in text and id_number not in text and token not in text

    # the source still has them: a re-run of the whole window must not bring them back
    again = run_source(
        "open311",
        until=UNTIL,
        since=datetime(2025, 1, 1, tzinfo=UTC),
        base_url=simulator.open311_url,
        settings=lake,
        datasets=["service_requests"],
    )[0]
    assert again.erased_skipped == their_requests
    assert (
        open_catalog(lake).load_table(TABLE).scan(row_filter=EqualTo("account_id", token)).to_arrow().num_rows
        == 0
    )
    # nor a replay of the landing zone
    source = load_registry().source("open311")
    requests = source.dataset("service_requests")
    replay_dataset(
        source, requests, from_date="2026-01-01", to_date="2026-12-31", rebuild=True, settings=lake
    )
    assert (
        open_catalog(lake).load_table(TABLE).scan(row_filter=EqualTo("account_id", token)).to_arrow().num_rows
        == 0
    )


def test_landing_past_retention_is_purged_and_replay_skips_it(lake, district, simulator):
    from datetime import date

    from ingest.retention import purge_expired

    june = datetime(2026, 6, 1, tzinfo=UTC)
    run_source(
        "open311", until=june, base_url=simulator.open311_url, settings=lake, datasets=["service_requests"]
    )
    run_source(
        "open311", until=UNTIL, base_url=simulator.open311_url, settings=lake, datasets=["service_requests"]
    )
    storage = LakeStorage(lake)
    assert storage.list("landing/open311/service_requests/load_date=2026-06-01/")
    # open311 keeps landing for P180D: on 2026-12-04 the June payloads are past it, December's are not
    report = purge_expired(lake, today=date(2026, 12, 4))
    assert report.landing_objects >= 1
    assert not storage.list("landing/open311/service_requests/load_date=2026-06-01/")
    assert storage.list("landing/open311/service_requests/load_date=2026-12-01/")
    assert storage.list("audit/retention/")
    # nothing within retention is touched by a purge on an earlier day
    assert purge_expired(lake, today=date(2026, 12, 1)).landing_objects == 0
    source = load_registry().source("open311")
    replayed = replay_dataset(
        source,
        source.dataset("service_requests"),
        from_date="2026-01-01",
        to_date="2026-12-31",
        settings=lake,
    )
    assert [r.landing_prefix.split("load_date=")[1][:10] for r in replayed] == ["2026-12-01"]


def _landed_health_text(lake, dataset: str) -> str:
    storage, sealer = LakeStorage(lake), Sealer(load_keys().vault_key, "landing")
    return "".join(
        sealer.open(rel, storage.read_bytes(rel)).decode()
        for rel in storage.list(f"landing/health/{dataset}/")
    )


def test_erasure_follows_references_to_records_without_a_token(lake, district, simulator):
    """A patient's encounters, immunizations and conditions carry only the FHIR patient id: the
    erasure follows `references: patients.id` and keeps them out of later loads too."""
    url = simulator.url_for("fhir")
    run_source("health", until=UNTIL, base_url=url, settings=lake)
    catalog = open_catalog(lake)
    encounters = catalog.load_table((RAW_NAMESPACE, "health__encounters")).scan().to_arrow()
    patient_id = Counter(encounters.column("patient_id").to_pylist()).most_common(1)[0][0]
    patients = catalog.load_table((RAW_NAMESPACE, "health__patients"))
    (token,) = patients.scan(row_filter=EqualTo("id", patient_id)).to_arrow().column("resident_id_number")
    linked = {
        ds: catalog.load_table((RAW_NAMESPACE, f"health__{ds}"))
        .scan(row_filter=EqualTo("patient_id", patient_id))
        .to_arrow()
        .num_rows
        for ds in ("encounters", "immunizations", "conditions")
    }
    assert linked["encounters"] >= 2
    assert f"Patient/{patient_id}" in _landed_health_text(lake, "encounters")

    report = erase_resident(token=token.as_py(), actor="clerk-07", settings=lake, rebuild_warehouse=False)

    for ds, n in linked.items():
        table = open_catalog(lake).load_table((RAW_NAMESPACE, f"health__{ds}"))
        assert report.rows_deleted[f"raw.health__{ds}"] == n
        assert table.scan(row_filter=EqualTo("patient_id", patient_id)).to_arrow().num_rows == 0
        # no older snapshot still holds them either
        assert len(table.snapshots()) == 1
        assert f"Patient/{patient_id}" not in _landed_health_text(lake, ds)
    assert report.landing_records_removed >= 1 + linked["encounters"]

    # The centre still serves them: a full reload (new lake state, same register) keeps them out.
    for ds in ("encounters", "immunizations", "conditions"):
        open_catalog(lake).drop_table((RAW_NAMESPACE, f"health__{ds}"))
    reports = run_source("health", until=UNTIL, base_url=url, settings=lake)
    assert sum(r.erased_skipped for r in reports if r.dataset != "patients") == sum(linked.values())
    for ds in ("encounters", "immunizations", "conditions"):
        table = open_catalog(lake).load_table((RAW_NAMESPACE, f"health__{ds}"))
        assert table.scan(row_filter=EqualTo("patient_id", patient_id)).to_arrow().num_rows == 0
