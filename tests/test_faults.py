"""Fault injection: every ingest promise under a real fault, counted against ground truth.

Faults are real: a process SIGKILLed at a named point, HTTP errors and slowness served by the
simulator, an S3 endpoint whose TCP connections are cut, two writers racing for one commit.
Each test records (fault, promise, rows expected, rows found) in the fault matrix report
(bench/results/fault_matrix.json).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from ingest.contracts import load_registry
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog, read_cursor
from ingest.pipeline import replay_dataset, run_source
from ingest.privacy import load_keys
from ingest.privacy.sealed import Sealer
from ingest.simulator import DirtConfig, SimulatorServer
from ingest.simulator.open311 import Fault
from ingest.sources import SourceError
from tests.conftest import TcpProxy, settings_for

pytestmark = pytest.mark.integration
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
SOURCE = load_registry().source("open311")
REQUESTS = SOURCE.dataset("service_requests")
TABLE = (RAW_NAMESPACE, "open311__service_requests")


def load(settings, sim, **kwargs):
    kwargs.setdefault("datasets", ["service_requests"])
    return run_source(
        "open311", until=kwargs.pop("until", UNTIL), base_url=sim.open311_url, settings=settings, **kwargs
    )


def table_state(settings) -> tuple[int, int, str | None]:
    """(rows, distinct keys, cursor) of the raw request table, as a reader sees it."""
    catalog = open_catalog(settings)
    if not catalog.table_exists(TABLE):
        return 0, 0, None
    table = catalog.load_table(TABLE)
    ids = table.scan(selected_fields=("service_request_id",)).to_arrow().column(0).to_pylist()
    return len(ids), len(set(ids)), read_cursor(table)


def truth(district) -> int:
    return len(district.requests())


def subprocess_env(settings, **extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LAKE_URL": settings.lake_url, "ICEBERG_CATALOG_URI": settings.catalog_uri})
    env.update(extra)
    return env


def spawn_run(settings, sim, *, env_extra=None, args=()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", "run", "open311", "--dataset", "service_requests",
         "--base-url", sim.open311_url, "--until", UNTIL.isoformat(), *args],
        env=subprocess_env(settings, **(env_extra or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_for(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return
    proc.kill()
    raise AssertionError(f"{marker!r} never appeared; process said:\n{''.join(seen)[-3000:]}")


def sigkill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_http_errors_and_429_are_retried_and_the_load_completes(lake, district, simulator, fault_matrix):
    simulator.add_fault(Fault(status=500, count=1))
    simulator.add_fault(Fault(status=502, count=1))
    simulator.add_fault(Fault(status=503, count=1))
    simulator.add_fault(Fault(status=429, count=1, retry_after=1))
    load(lake, simulator)
    rows, distinct, _ = table_state(lake)
    fault_matrix.record(
        "HTTP 500/502/503 + 429 Retry-After", "retried, all rows once", truth(district), distinct
    )
    assert simulator.state.faulted == 4
    assert rows == distinct == truth(district)


def test_timeouts_are_retried(lake, district, simulator, fault_matrix, monkeypatch):
    monkeypatch.setenv("INGEST_HTTP_TIMEOUT", "0.5")
    simulator.add_fault(Fault(status=None, count=2, delay_seconds=1.5))
    load(lake, simulator)
    rows, distinct, _ = table_state(lake)
    fault_matrix.record("source times out twice", "retried, all rows once", truth(district), distinct)
    assert rows == distinct == truth(district)


def test_persistent_outage_fails_clearly_and_changes_nothing(lake, district, simulator, fault_matrix):
    load(lake, simulator)
    before = table_state(lake)
    district.advance(days=1, new_requests=5)
    simulator.add_fault(Fault(status=503, count=100))
    with pytest.raises(SourceError, match=r"HTTP 503.*Nothing from this run was committed"):
        load(lake, simulator)
    fault_matrix.record("persistent HTTP 503", "fails; rows and cursor unchanged", before, table_state(lake))
    assert table_state(lake) == before


def test_bad_credentials_fail_fast_without_a_retry_storm(lake, district, simulator, fault_matrix):
    simulator.add_fault(Fault(status=401, count=100))
    calls = simulator.state.calls
    with pytest.raises(SourceError, match="401.*credentials"):
        load(lake, simulator)
    fault_matrix.record(
        "HTTP 401",
        "one call, no retries, 0 rows",
        (1, 0),
        (simulator.state.calls - calls, table_state(lake)[0]),
    )
    assert simulator.state.calls - calls == 1
    assert table_state(lake)[0] == 0


def test_truncated_page_fails_the_run_then_the_next_run_loads_everything(lake, district, fault_matrix):
    with SimulatorServer(district, dirt=DirtConfig(truncated_page=1, truncated_times=1)) as sim:
        with pytest.raises(SourceError, match="not valid JSON"):
            load(lake, sim)
        after_failure = table_state(lake)
        load(lake, sim)
    rows, distinct, _ = table_state(lake)
    fault_matrix.record(
        "truncated JSON page",
        "run fails, 0 rows visible; rerun loads all",
        (0, truth(district)),
        (after_failure[0], distinct),
    )
    assert after_failure == (0, 0, None)
    assert rows == distinct == truth(district)


@pytest.mark.parametrize(
    ("dirt", "policy", "outcome"),
    [
        (DirtConfig(new_column=True), "evolve", "column added"),
        (DirtConfig(new_column=True), "freeze", "fails naming satisfaction_score"),
        (DirtConfig(dropped_column="channel"), "evolve", "loaded with nulls"),
        (DirtConfig(dropped_column="channel"), "freeze", "fails naming channel"),
        (DirtConfig(retyped_column="lat"), "evolve", "all quarantined naming lat"),
    ],
    ids=["new-evolve", "new-freeze", "missing-evolve", "missing-freeze", "type-change"],
)
def test_schema_drift_is_handled_per_contract_policy(lake, district, fault_matrix, dirt, policy, outcome):
    from ingest.conform import SchemaDriftError
    from ingest.pipeline import run_dataset

    dataset = REQUESTS.model_copy(update={"schema_change": policy})
    with SimulatorServer(district, dirt=dirt) as sim:
        if outcome.startswith("fails"):
            column = outcome.split()[-1]
            with pytest.raises(SchemaDriftError, match=column):
                run_dataset(SOURCE, dataset, until=UNTIL, base_url=sim.open311_url, settings=lake)
            found, expected = table_state(lake)[0], 0
        else:
            report = run_dataset(SOURCE, dataset, until=UNTIL, base_url=sim.open311_url, settings=lake)
            table = open_catalog(lake).load_table(TABLE).scan().to_arrow()
            if outcome == "column added":
                assert table.column("satisfaction_score").drop_null().to_pylist()
                found, expected = table.num_rows, truth(district)
            elif outcome == "loaded with nulls":
                assert table.column("channel").null_count == table.num_rows
                found, expected = table.num_rows, truth(district)
            else:
                storage = LakeStorage(lake)
                (qfile,) = storage.list("quarantine/open311/service_requests/")
                opened = Sealer(load_keys().vault_key, "landing").open(qfile, storage.read_bytes(qfile))
                reasons = {json.loads(x)["reason"] for x in opened.decode().splitlines()}
                assert reasons and all(r.startswith("field 'lat' is not a number") for r in reasons)
                found, expected = (table.num_rows, report.quarantined), (0, truth(district))
    fault_matrix.record(f"schema drift: {dirt}", f"{policy}: {outcome}", expected, found)
    assert found == expected


def test_sigkill_mid_extraction_leaves_nothing_and_the_rerun_loads_exactly_once(
    lake, district, simulator, fault_matrix
):
    proc = spawn_run(lake, simulator, env_extra={"INGEST_FAILPOINTS": "after_page=sleep(30)"})
    wait_for(proc, "failpoint after_page reached")
    sigkill(proc)
    after_kill = table_state(lake)
    load(lake, simulator)
    rows, distinct, _ = table_state(lake)
    fault_matrix.record(
        "SIGKILL mid-extraction", "0 visible; rerun: all once", (0, truth(district)), (after_kill[0], rows)
    )
    assert after_kill[0] == 0 and after_kill[2] is None
    assert rows == distinct == truth(district)


def test_sigkill_after_data_files_written_before_commit(lake, district, simulator, fault_matrix):
    proc = spawn_run(lake, simulator, env_extra={"INGEST_FAILPOINTS": "before_commit=sleep(30)"})
    wait_for(proc, "failpoint before_commit reached")
    sigkill(proc)
    storage = LakeStorage(lake)
    orphans = [f for f in storage.list("raw/open311/service_requests/data/") if f.endswith(".parquet")]
    assert orphans, "the kill should have happened after data files were written"
    after_kill = table_state(lake)
    load(lake, simulator)
    rows, distinct, _ = table_state(lake)
    fault_matrix.record(
        "SIGKILL with data files written, before commit",
        "table unchanged (orphans only); rerun: all once",
        (0, truth(district)),
        (after_kill[0], rows),
    )
    assert after_kill[:2] == (0, 0) and after_kill[2] is None
    assert rows == distinct == truth(district)


def test_commit_landed_but_caller_saw_an_error_is_not_applied_twice(
    lake, district, simulator, fault_matrix, monkeypatch
):
    from ingest.failpoints import InjectedFault

    monkeypatch.setenv("INGEST_FAILPOINTS", "after_commit=raise")
    with pytest.raises(InjectedFault):
        load(lake, simulator)
    monkeypatch.delenv("INGEST_FAILPOINTS")
    retry = load(lake, simulator)[0]  # what an Airflow retry does
    rows, distinct, _ = table_state(lake)
    fault_matrix.record(
        "commit landed, caller saw an error",
        "retry adds nothing",
        (truth(district), 0),
        (rows, retry.rows_inserted),
    )
    assert rows == distinct == truth(district)
    assert retry.rows_inserted == 0


def test_same_window_twice_changes_nothing(lake, district, simulator, fault_matrix):
    load(lake, simulator)
    location = open_catalog(lake).load_table(TABLE).metadata_location
    load(lake, simulator, since=datetime(2025, 1, 1, tzinfo=UTC))
    rows, distinct, _ = table_state(lake)
    fault_matrix.record("same window run twice", "second run changes nothing", truth(district), rows)
    assert open_catalog(lake).load_table(TABLE).metadata_location == location
    assert rows == distinct == truth(district)


def test_two_processes_loading_one_source_at_once(lake, district, simulator, fault_matrix):
    procs = [spawn_run(lake, simulator) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    rows, distinct, _ = table_state(lake)
    fault_matrix.record("two runs of one source at once", "no duplicates", truth(district), rows)
    assert rows == distinct == truth(district)


def test_commit_conflict_is_recomputed_and_both_windows_land_once(lake, district, simulator, fault_matrix):
    split = datetime(2026, 2, 15, tzinfo=UTC)
    slow = spawn_run(
        lake,
        simulator,
        env_extra={"INGEST_FAILPOINTS": "before_commit=sleep(8)"},
        args=("--since", "2025-01-01T00:00:00+00:00", "--until", split.isoformat()),
    )
    wait_for(slow, "failpoint before_commit reached")
    load(lake, simulator, since=split)  # commits while the slow writer waits with its files written
    _, err = slow.communicate(timeout=120)
    assert slow.returncode == 0, err[-2000:]
    storage = LakeStorage(lake)
    records = [
        json.loads(storage.read_bytes(r)) for r in storage.list("audit/runs/open311/service_requests/")
    ]
    attempts = max(r["commit_attempts"] for r in records)
    rows, distinct, _ = table_state(lake)
    fault_matrix.record(
        "Iceberg commit conflict", "retried; both windows present once", truth(district), distinct
    )
    assert attempts >= 2, "the slow writer should have lost the first commit race"
    assert rows == distinct == truth(district)


def test_s3_endpoint_cut_mid_load_then_back(tmp_path, district, simulator, moto_server, fault_matrix):
    moto_server.create_bucket("lake")
    proxy = TcpProxy(moto_server.port)
    extra = {
        "LAKE_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S106 - moto's dummy credentials
        "AWS_REGION": "us-east-1",
        "ICEBERG_CATALOG_URI": f"sqlite:///{tmp_path / 'catalog.sqlite'}",
    }
    settings = settings_for("s3://lake/district", **extra)
    proc = spawn_run(settings, simulator, env_extra={**extra, "INGEST_FAILPOINTS": "before_commit=sleep(3)"})
    wait_for(proc, "failpoint before_commit reached")
    proxy.cut()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
    proxy.restore()
    after_failure = table_state(settings)
    load(settings, simulator)
    rows, distinct, _ = table_state(settings)
    fault_matrix.record(
        "S3 endpoint cut mid-load, then back",
        "nothing committed; next run completes",
        (0, truth(district)),
        (after_failure[0], rows),
    )
    assert after_failure[0] == 0 and after_failure[2] is None
    assert rows == distinct == truth(district)


def test_replay_rebuilds_the_table_identically_without_calling_the_source(
    lake, district, simulator, fault_matrix
):
    load(lake, simulator)
    district.advance(days=2, new_requests=10)
    load(lake, simulator)
    district.advance(days=1, new_requests=5)
    load(lake, simulator)

    def content():
        table = open_catalog(lake).load_table(TABLE)
        cols = [c for c in table.schema().column_names if not c.startswith("_")] + ["_record_hash"]
        return sorted(
            table.scan(selected_fields=tuple(cols)).to_arrow().to_pylist(),
            key=lambda r: r["service_request_id"],
        )

    before, cursor = content(), read_cursor(open_catalog(lake).load_table(TABLE))
    calls = simulator.state.calls
    reports = replay_dataset(
        SOURCE, REQUESTS, from_date="2026-01-01", to_date="2026-12-31", rebuild=True, settings=lake
    )
    fault_matrix.record(
        "replay from landing (rebuild)",
        "identical table, 0 source calls",
        (len(before), 0),
        (len(content()), simulator.state.calls - calls),
    )
    assert len(reports) == 3
    assert simulator.state.calls == calls
    assert content() == before
    assert read_cursor(open_catalog(lake).load_table(TABLE)) == cursor
