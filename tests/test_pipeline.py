"""Ingest runs against the simulator into a real local lake, counted against ground truth."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from ingest.conform import SchemaDriftError
from ingest.contracts import load_registry
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog, read_cursor
from ingest.pipeline import run_dataset, run_source
from ingest.privacy import load_keys
from ingest.privacy.sealed import Sealer
from ingest.simulator import DirtConfig, District, SimulatorServer
from ingest.simulator.open311 import Fault
from ingest.sources import SourceError

UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
SOURCE = load_registry().source("open311")


def load(settings, sim, until=UNTIL, **kwargs):
    return {
        r.dataset: r
        for r in run_source("open311", until=until, base_url=sim.open311_url, settings=settings, **kwargs)
    }


def table(settings, name="service_requests"):
    return open_catalog(settings).load_table((RAW_NAMESPACE, f"open311__{name}"))


def rows(settings, name="service_requests") -> pa.Table:
    return table(settings, name).scan().to_arrow()


def truth_by_id(district: District) -> dict[str, dict]:
    return {r["service_request_id"]: r for r in district.requests()}


def assert_table_equals_truth(settings, district: District) -> None:
    got = rows(settings)
    ids = got.column("service_request_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate keys in the raw table"
    truth = truth_by_id(district)
    assert set(ids) == set(truth)
    for rec in got.select(["service_request_id", "status", "updated_datetime"]).to_pylist():
        want = truth[rec["service_request_id"]]
        assert rec["status"] == want["status"]
        assert rec["updated_datetime"] == datetime.fromisoformat(want["updated_datetime"])


def test_first_load_matches_simulator_ground_truth(lake, district, simulator):
    reports = load(lake, simulator)
    assert reports["service_requests"].rows_inserted == len(district.requests())
    assert reports["services"].rows_inserted == len(district.services())
    assert_table_equals_truth(lake, district)
    assert rows(lake, "services").num_rows == len(district.services())
    # every payload landed exactly as received, and the run is on the audit trail
    storage = LakeStorage(lake)
    landed = storage.list(reports["service_requests"].landing_prefix)
    assert len(landed) == reports["service_requests"].pages
    # payloads with personal data are sealed at rest; opened with the key they are as received
    assert all(p.endswith(".json.sealed") for p in landed)
    sealer = Sealer(load_keys().vault_key, "landing")
    first = json.loads(sealer.open(landed[0], storage.read_bytes(landed[0])))
    assert isinstance(first, list) and "service_request_id" in first[0] and "account_id" in first[0]
    audit = storage.list("audit/runs/open311/service_requests/")
    assert json.loads(storage.read_bytes(audit[-1]))["rows_inserted"] == len(district.requests())


def test_rerun_same_window_adds_no_rows_and_no_snapshot(lake, district, simulator):
    load(lake, simulator)
    before = {n: table(lake, n).metadata_location for n in ("services", "service_requests")}
    again = load(lake, simulator, since=datetime(2025, 1, 1, tzinfo=UTC))  # the whole window again
    assert again["service_requests"].records_received == len(district.requests())
    assert again["service_requests"].rows_inserted == 0
    assert again["service_requests"].rows_unchanged == len(district.requests())
    assert {n: table(lake, n).metadata_location for n in before} == before  # nothing committed at all
    assert_table_equals_truth(lake, district)


def test_incremental_run_loads_only_the_changes(lake, district, simulator):
    load(lake, simulator)
    cursor = read_cursor(table(lake))
    change = district.advance(days=2, new_requests=15)
    assert change["updated"] > 0
    report = load(lake, simulator, datasets=["service_requests"])["service_requests"]
    assert report.rows_inserted == change["new"]
    assert report.rows_updated == change["updated"]
    assert report.cursor_after > cursor
    assert_table_equals_truth(lake, district)
    # and with nothing new at the source, a run loads nothing
    quiet = load(lake, simulator, datasets=["service_requests"])["service_requests"]
    assert (quiet.rows_inserted, quiet.rows_updated) == (0, 0)


def test_cursor_from_the_future_loads_nothing_without_error(lake, district, simulator):
    load(lake, simulator)
    report = load(lake, simulator, until=datetime(2025, 6, 1, tzinfo=UTC), datasets=["service_requests"])
    assert report["service_requests"].status == "success"
    assert report["service_requests"].records_received == 0
    assert rows(lake).num_rows == len(district.requests())


def test_duplicates_across_pages_collapse_to_one_row(lake, district):
    with SimulatorServer(district, dirt=DirtConfig(duplicate_rate=0.2)) as sim:
        report = load(lake, sim)["service_requests"]
    copies = district.dirt_log.counts()["duplicate_copies"]
    assert copies > 10
    assert report.records_received == len(district.requests()) + copies
    assert_table_equals_truth(lake, district)


def test_malformed_records_are_quarantined_with_reasons(lake, district):
    with SimulatorServer(district, dirt=DirtConfig(missing_field_rate=0.05, bad_date_rate=0.05)) as sim:
        report = load(lake, sim)["service_requests"]
    log = district.dirt_log.as_dict()
    dirty = set(log["missing_field"]) | set(log["bad_date"])
    assert len(dirty) > 10
    assert report.quarantined == len(dirty)
    storage = LakeStorage(lake)
    (qfile,) = storage.list("quarantine/open311/service_requests/")
    assert qfile.endswith(".jsonl.sealed")
    opened = Sealer(load_keys().vault_key, "landing").open(qfile, storage.read_bytes(qfile))
    quarantined = [json.loads(line) for line in opened.decode().splitlines()]
    assert {q["record"]["service_request_id"] for q in quarantined} == dirty
    reasons = " ".join(q["reason"] for q in quarantined)
    assert "required field" in reasons and "is before 'requested_datetime'" in reasons
    assert all(q["landing_path"].startswith("landing/open311/") for q in quarantined)
    loaded = set(rows(lake).column("service_request_id").to_pylist())
    assert loaded == set(truth_by_id(district)) - dirty  # nothing lost, nothing bad loaded


def test_new_column_evolves_the_table_schema(lake, district):
    with SimulatorServer(district, dirt=DirtConfig(new_column=True)) as sim:
        load(lake, sim)
    got = rows(lake)
    assert "satisfaction_score" in got.column_names
    assert got.column("satisfaction_score").drop_null().to_pylist()  # values arrived


def test_new_column_under_freeze_fails_naming_the_column(lake, district):
    requests = SOURCE.dataset("service_requests").model_copy(update={"schema_change": "freeze"})
    with SimulatorServer(district, dirt=DirtConfig(new_column=True)) as sim:
        with pytest.raises(SchemaDriftError, match="satisfaction_score"):
            run_dataset(SOURCE, requests, until=UNTIL, base_url=sim.open311_url, settings=lake)
    assert rows(lake).num_rows == 0
    assert read_cursor(table(lake)) is None


def test_truncated_page_fails_the_run_and_commits_nothing(lake, district):
    with SimulatorServer(district, dirt=DirtConfig(truncated_page=1, truncated_times=1)) as sim:
        with pytest.raises(SourceError, match="not valid JSON"):
            load(lake, sim, datasets=["service_requests"])
        assert rows(lake).num_rows == 0
        assert read_cursor(table(lake)) is None
        load(lake, sim, datasets=["service_requests"])  # the page is whole again
    assert_table_equals_truth(lake, district)


def test_source_outage_leaves_table_and_cursor_unchanged(lake, district, simulator):
    load(lake, simulator)
    cursor, location = read_cursor(table(lake)), table(lake).metadata_location
    district.advance(days=1, new_requests=5)
    simulator.add_fault(Fault(status=503, count=50))
    with pytest.raises(SourceError, match="HTTP 503"):
        load(lake, simulator, datasets=["service_requests"])
    assert (read_cursor(table(lake)), table(lake).metadata_location) == (cursor, location)


def test_transient_errors_are_retried_and_the_load_completes(lake, district, simulator):
    simulator.add_fault(Fault(status=500, count=2))
    simulator.add_fault(Fault(status=429, count=1, retry_after=1))
    load(lake, simulator)
    assert simulator.state.faulted >= 3
    assert_table_equals_truth(lake, district)


def test_concurrent_runs_of_one_source_do_not_duplicate_rows(lake, district, simulator):
    errors: list[BaseException] = []

    def run() -> None:
        try:
            load(lake, simulator, datasets=["service_requests"])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert_table_equals_truth(lake, district)


def test_late_rows_within_the_lookback_are_picked_up(lake, district, simulator):
    load(lake, simulator)
    cursor = datetime.fromisoformat(read_cursor(table(lake)))
    lookback = SOURCE.dataset("service_requests").cursor.lookback_delta
    # a run that starts a little before the cursor re-reads the overlap without duplicating it
    report = load(lake, simulator, since=cursor - lookback / 2, datasets=["service_requests"])
    assert report["service_requests"].rows_inserted == 0
    assert rows(lake).num_rows == len(district.requests())
    assert cursor - timedelta(hours=1) < datetime.fromisoformat(read_cursor(table(lake)))


def test_without_a_pseudonym_key_the_pipeline_refuses_to_run(lake, simulator, monkeypatch):
    from ingest.privacy import PrivacyKeyMissing

    monkeypatch.delenv("CDL_KEYS_FILE")
    with pytest.raises(PrivacyKeyMissing, match="refuses to run"):
        load(lake, simulator, datasets=["service_requests"])
    assert not open_catalog(lake).table_exists((RAW_NAMESPACE, "open311__service_requests"))
    assert not LakeStorage(lake).list("landing/")


def test_requesters_are_pseudonymised_and_their_identities_kept_in_the_vault(lake, district, simulator):
    from ingest.privacy import IdentityVault, LakeAuditSink

    load(lake, simulator)
    got = rows(lake).select(["service_request_id", "account_id", "phone"]).to_pylist()
    by_id = {r["service_request_id"]: r for r in got}
    keys = load_keys()
    vault = IdentityVault(LakeStorage(lake), keys.vault_key, LakeAuditSink(LakeStorage(lake)))
    sample = [district.requester_of(i) for i in list(by_id)[:10]]
    tokens = [by_id[i]["account_id"] for i in list(by_id)[:10]]
    clear = vault.resolve(tokens, purpose="test: verify pseudonymisation", actor="pytest")
    assert [clear[t] for t in tokens] == [r.id_number for r in sample]
    assert LakeStorage(lake).list("audit/identity/"), "the read of the identity zone was audited"
    # the same resident filing twice carries the same token
    per_resident: dict[str, set[str]] = {}
    for rid, row in by_id.items():
        per_resident.setdefault(district.requester_of(rid).id_number, set()).add(row["account_id"])
    assert all(len(t) == 1 for t in per_resident.values())
