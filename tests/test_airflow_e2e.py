"""End to end through Airflow: ingest DAG -> warehouse DAG (quality -> dbt -> quality).

The DAGs run with ``airflow dags test`` in a subprocess against the simulator and a lake of the
test's own. The Airflow metadata database is the machine's real PostgreSQL in CI (SQLite
locally; ``CDL_TEST_AIRFLOW_DB=postgres`` forces PostgreSQL). One pipeline run per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ingest.airflow_env import dag_test, task_states
from ingest.contracts import load_registry, table_name
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.simulator import District, property_db, registry_db
from ingest.simulator.feeds import DistrictFeeds
from tests.conftest import settings_for

pytestmark = pytest.mark.integration
LOGICAL = datetime(2026, 11, 30, 12, tzinfo=UTC)
SECRET = "known-secret-7f3a9c0e"  # noqa: S105 - a marker to grep for, not a credential


@pytest.fixture(scope="module")
def pipeline(airflow_home, tmp_path_factory):
    """Run every ingest DAG, then the warehouse DAG, once; yield what the tests inspect."""
    root = tmp_path_factory.mktemp("e2e")
    settings = settings_for(root / "lake", root / "warehouse.duckdb")
    district = District.generate(residents=500, seed=21)
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    feeds = DistrictFeeds(
        district,
        dropzone=root / "dropzone",
        registry_dsn=f"postgresql://postgres@127.0.0.1:5432/cdl_e2e_registry_{suffix}",
        property_dsn=f"mysql://root@127.0.0.1:3306/cdl_e2e_property_{suffix}",
    )
    try:
        with feeds:
            env = {
                **airflow_home,
                **feeds.source_env(),
                "LAKE_URL": settings.lake_url,
                "WAREHOUSE_PATH": str(settings.warehouse_path),
                "OPEN311_API_KEY": SECRET,
            }
            ingests = {
                src.name: dag_test(f"ingest_{src.name}", LOGICAL.isoformat(), env)
                for src in load_registry().sources
            }
            warehouse = dag_test("warehouse", LOGICAL.isoformat(), env)
            api_keys_seen = set(feeds.server.state.api_keys)
        yield {
            "settings": settings,
            "district": district,
            "env": env,
            "ingests": ingests,
            "ingest": ingests["open311"],
            "warehouse": warehouse,
            "root": root,
            "api_keys_seen": api_keys_seen,
        }
    finally:
        registry_db.drop_database(feeds.registry_dsn)
        property_db.drop_database(feeds.property_dsn)


def test_every_source_dag_loads_every_dataset(pipeline):
    """All eight systems of the district, each through its own generated DAG, into raw tables."""
    failed = {name: r.output[-3000:] for name, r in pipeline["ingests"].items() if r.state != "success"}
    assert not failed, failed
    catalog = open_catalog(pipeline["settings"])
    empty = [
        f"{src.name}.{ds.name}"
        for src in load_registry().sources
        for ds in src.datasets
        if catalog.load_table((RAW_NAMESPACE, table_name(src.name, ds.name))).scan().to_arrow().num_rows == 0
    ]
    assert not empty, f"datasets with no rows after the first load: {empty}"


def test_ingest_dag_loads_every_request_into_iceberg(pipeline):
    assert pipeline["ingest"].state == "success", pipeline["ingest"].output[-3000:]
    table = open_catalog(pipeline["settings"]).load_table((RAW_NAMESPACE, "open311__service_requests"))
    got = table.scan(selected_fields=("service_request_id", "_run_id")).to_arrow()
    truth = {r["service_request_id"] for r in pipeline["district"].requests()}
    assert sorted(got.column("service_request_id").to_pylist()) == sorted(truth)
    # rows carry the Airflow run that loaded them
    assert set(got.column("_run_id").to_pylist()) == {f"{pipeline['ingest'].run_id}__try1"}


def test_warehouse_dag_builds_the_mart_and_passes_its_checkpoints(pipeline):
    result = pipeline["warehouse"]
    assert result.state == "success", result.output[-3000:]
    states = task_states("warehouse", result.run_id, pipeline["env"])
    assert set(states.values()) == {"success"}, states
    requests = pipeline["district"].requests()
    con = duckdb.connect(str(pipeline["settings"].warehouse_path), read_only=True)
    received, closed = con.execute(
        "select sum(requests_received), sum(requests_closed) from marts.mart_service_requests_daily"
    ).fetchone()
    con.close()
    assert received == len(requests)
    assert closed == sum(1 for r in requests if r["status"] == "closed")
    con = duckdb.connect(str(pipeline["settings"].warehouse_path), read_only=True)
    extractions = con.execute(
        "select dataset, records_received, purpose from audit.audit_extractions where status = 'success'"
    ).fetchall()
    con.close()
    assert ("service_requests", len(requests)) in {(d, n) for d, n, _ in extractions}
    assert all(p for _, _, p in extractions)  # every extraction carries its declared purpose
    storage = LakeStorage(pipeline["settings"])
    for suite in ("raw.open311.service_requests", "mart.governance.service_requests_daily"):
        (latest,) = storage.list(f"audit/quality/{suite}/")[-1:]
        assert json.loads(storage.read_bytes(latest))["success"] is True, suite


def test_failed_blocking_expectation_fails_the_quality_task_and_stops_dbt(pipeline):
    """Deliberately bad rows in the raw table: the gate fails, dbt never runs, the warehouse stays."""
    settings = pipeline["settings"]
    published = settings.warehouse_path.read_bytes()
    table = open_catalog(settings).load_table((RAW_NAMESPACE, "open311__service_requests"))
    good = table.scan(limit=2).to_arrow()
    bad = good.set_column(
        good.schema.get_field_index("status"), "status", pa.array(["lost_in_space"] * good.num_rows)
    )  # same ids again (duplicates) with a status GeoReport v2 does not know
    table.append(bad)

    result = dag_test("warehouse", (LOGICAL + timedelta(hours=1)).isoformat(), pipeline["env"])
    assert result.state == "failed"
    states = task_states("warehouse", result.run_id, pipeline["env"])
    assert states["check_raw_open311__service_requests"] == "failed"
    assert states["dbt_build"] == "upstream_failed"
    assert "quality gate raw.open311.service_requests failed" in result.output
    assert "expect_column_values_to_be_unique" in result.output
    assert hashlib.sha256(settings.warehouse_path.read_bytes()).digest() == hashlib.sha256(published).digest()


def test_credentials_never_appear_in_logs_task_output_or_the_lake(pipeline):
    assert pipeline["ingest"].state == "success"
    assert pipeline["api_keys_seen"] == {SECRET}  # the key really was used on every call
    assert SECRET not in pipeline["ingest"].output + pipeline["warehouse"].output
    scanned = 0
    for folder in (pipeline["root"], Path(pipeline["env"]["AIRFLOW_HOME"])):
        for path in folder.rglob("*"):
            if path.is_file():
                scanned += 1
                assert SECRET.encode() not in path.read_bytes(), f"secret leaked into {path}"
    assert scanned > 20  # task logs, landing payloads, audit records, dbt logs were all looked at


def test_lake_status_dag_shows_each_dataset_in_airflow(pipeline):
    result = dag_test("lake_status", LOGICAL.isoformat(), pipeline["env"])
    assert result.state == "success", result.output[-3000:]
    # the table is in the task log (stdout of `dags test`, or the task log file, by logging setup)
    task_logs = Path(pipeline["env"]["AIRFLOW_HOME"]) / "logs"
    text = result.output + "".join(
        p.read_text(errors="replace") for p in task_logs.rglob("*") if p.is_file() and "lake_status" in str(p)
    )
    table = open_catalog(pipeline["settings"]).load_table((RAW_NAMESPACE, "open311__service_requests"))
    rows = (
        table.scan(selected_fields=("service_request_id",)).to_arrow().num_rows
    )  # the bad-rows test adds some
    assert f"open311.service_requests | {rows} |" in text, text[-6000:]


def test_leak_scan_finds_no_clear_identifier_outside_the_identity_zone(pipeline, tmp_path):
    """Every file in the lake (but identity/), every Airflow log and every warehouse relation."""
    from ingest.privacy import load_keys
    from ingest.privacy.leakscan import identifiers_of, scan_files, scan_warehouse
    from ingest.privacy.sealed import Sealer

    settings, district = pipeline["settings"], pipeline["district"]
    needles = identifiers_of(district)
    lake = Path(settings.lake_url)
    # Positive control: the scanner finds the requesters in a landing payload once it is opened.
    storage = LakeStorage(settings)
    landed = storage.list("landing/open311/service_requests/")[0]
    (tmp_path / "opened.json").write_bytes(
        Sealer(load_keys().vault_key, "landing").open(landed, storage.read_bytes(landed))
    )
    assert scan_files([tmp_path], needles)[1], "the scanner must see clear identifiers when they are there"

    logs = tmp_path / "dag-test-output.log"
    logs.write_text(pipeline["ingest"].output + pipeline["warehouse"].output)
    files, hits = scan_files(
        [lake, Path(pipeline["env"]["AIRFLOW_HOME"]), settings.warehouse_path.parent / "dbt", logs.parent],
        needles,
        skip=[lake / "identity", tmp_path / "opened.json"],
    )
    relations, warehouse_hits = scan_warehouse(settings.warehouse_path, needles)
    assert files > 30 and relations >= 5
    assert hits == [] and warehouse_hits == []
    # and the identity zone does hold them — encrypted, so not even there in the clear
    identity_files, identity_hits = scan_files([lake / "identity"], needles)
    assert identity_files >= 1 and identity_hits == []


def k_of(rows: list[tuple], quasi_identifiers: list[str], path: Path) -> int:
    """k of the people behind aggregate rows (each row expanded to one record per person), by pyCANON."""
    import csv
    import subprocess

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(quasi_identifiers)
        for *qi, people in rows:
            writer.writerows([qi] * people)
    anon_python = Path(__file__).resolve().parents[1] / ".venv-anon" / "bin" / "python"
    script = Path(__file__).parent / "anonymity" / "k_anonymity.py"
    proc = subprocess.run(
        [str(anon_python), str(script), str(path), ",".join(quasi_identifiers)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(proc.stdout.strip().splitlines()[-1])


def test_open_data_mart_is_k_anonymous_after_small_cell_suppression(pipeline, tmp_path):
    qi = ["grid_code", "service_code", "request_month"]
    con = duckdb.connect(str(pipeline["settings"].warehouse_path), read_only=True)
    published = con.execute(
        f"select {', '.join(qi)}, requesters from open_data.open_service_requests_by_grid"
    ).fetchall()
    con.close()
    assert published, "something must be published"
    assert k_of(published, qi, tmp_path / "published.csv") >= 5

    # Positive control: the unsuppressed cells of the same data are NOT 5-anonymous.
    requests = pipeline["district"].requests()
    raw: dict[tuple, set[str]] = {}
    for r in requests:
        key = (r["grid_code"], r["service_code"], r["requested_datetime"][:7] + "-01")
        raw.setdefault(key, set()).add(r["account_id"])
    raw_rows = [(*k, len(v)) for k, v in raw.items()]
    assert k_of(raw_rows, qi, tmp_path / "raw.csv") < 5
    # every published row really is an aggregate of at least 5 people
    assert min(row[-1] for row in published) >= 5


def test_the_warehouse_carries_identifiers_only_as_tokens_and_opens_nothing_sensitive(pipeline):
    """Outside `raw`, no column carries a contract's direct-identifier column under its own name
    (staging renames the tokens `*_token`), and the open-data schema has no column the contracts
    classify sensitive or core. (The `raw` views dbt reads hold tokens, never clear values, as the
    leak scan proves; pseudonymous sensitive data such as diagnoses may be modelled for analysts.)"""
    from ingest.contracts import DIRECT_IDENTIFIERS, load_registry

    columns = [c for s in load_registry().sources for d in s.datasets for c in d.columns]
    identifiers = {c.name for c in columns if c.category in DIRECT_IDENTIFIERS}
    restricted = {c.name for c in columns if c.classification in {"sensitive", "core"}}
    con = duckdb.connect(str(pipeline["settings"].warehouse_path), read_only=True)
    found = con.execute(
        "select table_schema, column_name from information_schema.columns where table_schema <> 'raw'"
    ).fetchall()
    con.close()
    assert identifiers and restricted and found
    assert not identifiers & {name for _, name in found}, identifiers & {name for _, name in found}
    in_open_data = {name for schema, name in found if schema == "open_data"}
    assert not restricted & in_open_data, restricted & in_open_data


def test_the_unified_warehouse_links_one_person_across_departments(pipeline):
    """The registry, health centre, schools and hotline each tokenise the ID number with the same
    key: dim_residents' flags must equal the overlaps computed straight from the raw tables."""
    con = duckdb.connect(str(pipeline["settings"].warehouse_path), read_only=True)
    try:
        flagged = con.execute(
            "select count(*) filter (where is_health_patient), count(*) filter (where is_enrolled_student), "
            "sum(service_requests_filed) from marts.dim_residents"
        ).fetchone()
        overlaps = con.execute(
            """
            with registered as (
                select resident_id_number as token from raw.registry__residents where deleted_at is null
            )
            select
                (select count(distinct token) from registered
                 where token in (select resident_id_number from raw.health__patients)),
                (select count(distinct token) from registered
                 where token in (select identifier from raw.schools__students
                                 where coalesce(status, 'active') <> 'tobedeleted')),
                (select count(*) from raw.open311__service_requests
                 where account_id in (select token from registered))
            """
        ).fetchone()
        profile = con.execute("select sum(health_patients) from marts.mart_grid_profile").fetchone()[0]
    finally:
        con.close()
    assert flagged == overlaps
    assert all(n > 0 for n in overlaps)  # the sources really do share people
    assert profile == flagged[0]  # and the grid profile adds them up
