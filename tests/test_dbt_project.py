"""dbt project over a real (temporary) Iceberg lake: build it, check the mart.

Offline: a pyiceberg SQL catalog on SQLite in a tmp dir, the DuckDB extensions
installed from their PyPI wheels, dbt run in-process with every output
(warehouse, target/, logs/) in tmp dirs.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from dbt.adapters.duckdb.connections import DuckDBConnectionManager
from dbt.cli.main import dbtRunner, dbtRunnerResult
from pyiceberg.catalog.sql import SqlCatalog

from ingest.contracts import load_registry

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DUCKDB_EXTENSIONS = ("sqlite_scanner", "avro", "iceberg", "httpfs")  # avro before iceberg

UTC = dt.UTC


def install_duckdb_extensions_from_wheels() -> None:
    """Install the duckdb-extension-* wheels' files into DuckDB's extension dir.

    DuckDB cannot download extensions here; the profile then just LOADs them.
    TODO: replace with the shared helper from the ingest package once it exists.
    """
    con = duckdb.connect()
    try:
        version = duckdb.__version__
        for name in DUCKDB_EXTENSIONS:
            spec = importlib.util.find_spec(f"duckdb_extension_{name}")
            if spec is None or spec.origin is None:
                pytest.fail(f"duckdb-extension-{name} is not installed in this environment")
            path = Path(spec.origin).parent / "extensions" / f"v{version}" / f"{name}.duckdb_extension"
            con.execute(f"INSTALL '{path}'")
    finally:
        con.close()


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


TIMESTAMPTZ = pa.timestamp("us", tz="UTC")
METADATA_FIELDS = [
    pa.field("_record_hash", pa.string()),
    pa.field("_run_id", pa.string()),
    pa.field("_loaded_at", TIMESTAMPTZ),
    pa.field("_landing_path", pa.string()),
]
SERVICE_REQUESTS_SCHEMA = pa.schema(
    [
        pa.field("service_request_id", pa.string()),
        pa.field("status", pa.string()),
        pa.field("status_notes", pa.string()),
        pa.field("service_name", pa.string()),
        pa.field("service_code", pa.string()),
        pa.field("description", pa.string()),
        pa.field("agency_responsible", pa.string()),
        pa.field("service_notice", pa.string()),
        pa.field("requested_datetime", TIMESTAMPTZ),
        pa.field("updated_datetime", TIMESTAMPTZ),
        pa.field("expected_datetime", TIMESTAMPTZ),
        pa.field("address", pa.string()),
        pa.field("address_id", pa.string()),
        pa.field("zipcode", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("long", pa.float64()),
        pa.field("media_url", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("account_id", pa.string()),
        pa.field("account_id_is_minor", pa.bool_()),
        pa.field("grid_code", pa.string()),
        pa.field("community_code", pa.string()),
        *METADATA_FIELDS,
    ]
)
SERVICES_SCHEMA = pa.schema(
    [
        pa.field("service_code", pa.string()),
        pa.field("service_name", pa.string()),
        pa.field("description", pa.string()),
        pa.field("metadata", pa.bool_()),
        pa.field("type", pa.string()),
        pa.field("keywords", pa.string()),
        pa.field("group", pa.string()),
        *METADATA_FIELDS,
    ]
)
LOADED_AT = ts("2024-05-02T06:00:00")


def _metadata(i: int) -> dict:
    return {
        "_record_hash": f"hash-{i}",
        "_run_id": "run-test",
        "_loaded_at": LOADED_AT,
        "_landing_path": "landing/open311/run-test.jsonl",
    }


def _request(
    request_id: str,
    service_code: str,
    service_name: str,
    status: str,
    requested: str,
    updated: str | None,
    expected: str | None,
    channel: str | None,
) -> dict:
    return {
        "service_request_id": request_id,
        "status": status,
        "status_notes": None,
        "service_name": service_name,
        "service_code": service_code,
        "description": "测试工单",
        "agency_responsible": "城管科" if service_code == "RD01" else "派出所",
        "service_notice": None,
        "requested_datetime": ts(requested),
        "updated_datetime": ts(updated) if updated else None,
        "expected_datetime": ts(expected) if expected else None,
        "address": "幸福路1号",
        "address_id": "A-1",
        "zipcode": "200000",
        "lat": 31.23,
        "long": 121.47,
        "media_url": None,
        "channel": channel,
        "account_id": f"id_{request_id.encode().hex():0>32}"[:35],
        "account_id_is_minor": False,
        "grid_code": "GD0001",
        "community_code": "CM01",
    }


# Timestamps are UTC; the mart buckets by Asia/Shanghai (UTC+8) date.
SERVICE_REQUESTS = [
    # RD01, local 2024-05-01 09:00: closed after 6 h, before the 8 h deadline -> on time
    _request(
        "sr-1",
        "RD01",
        "Road damage",
        "closed",
        "2024-05-01T01:00:00",
        "2024-05-01T07:00:00",
        "2024-05-01T09:00:00",
        "hotline",
    ),
    # RD01, local 2024-05-01 10:00: closed after 34 h, deadline was 24 h -> late
    _request(
        "sr-2",
        "RD01",
        "Road damage",
        "closed",
        "2024-05-01T02:00:00",
        "2024-05-02T12:00:00",
        "2024-05-02T02:00:00",
        "wechat",
    ),
    # RD01, local 2024-05-01 12:00: still open, updated after 1.5 h
    _request(
        "sr-3",
        "RD01",
        "Road damage",
        "open",
        "2024-05-01T04:00:00",
        "2024-05-01T05:30:00",
        "2024-05-03T04:00:00",
        None,
    ),
    # NS02, 2024-04-30 16:30 UTC = local 2024-05-01 00:30: closed after 2 h, on time
    _request(
        "sr-4",
        "NS02",
        "Noise",
        "closed",
        "2024-04-30T16:30:00",
        "2024-04-30T18:30:00",
        "2024-04-30T20:30:00",
        "app",
    ),
    # NS02, 2024-05-01 17:00 UTC = local 2024-05-02 01:00: open, never updated
    _request("sr-5", "NS02", "Noise", "open", "2024-05-01T17:00:00", None, None, "walk_in"),
]
SERVICES = [
    {
        "service_code": "RD01",
        "service_name": "Road damage",
        "description": "Potholes, broken paving",
        "metadata": False,
        "type": "realtime",
        "keywords": "road,pothole",
        "group": "Streets",
    },
    {
        "service_code": "NS02",
        "service_name": "Noise complaint",
        "description": "Construction or night noise",
        "metadata": True,
        "type": "realtime",
        "keywords": "noise",
        "group": "Public order",
    },
]


def write_lake(tmp_path: Path, warehouse: str | None = None, **properties: str) -> str:
    """Create the SQLite Iceberg catalog with raw.open311__* tables; return its URI."""
    uri = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    catalog = SqlCatalog("lake", uri=uri, warehouse=warehouse or (tmp_path / "lake").as_uri(), **properties)
    catalog.create_namespace("raw")
    for name, schema, rows in [
        ("open311__service_requests", SERVICE_REQUESTS_SCHEMA, SERVICE_REQUESTS),
        ("open311__services", SERVICES_SCHEMA, SERVICES),
    ]:
        arrow = pa.Table.from_pylist([row | _metadata(i) for i, row in enumerate(rows)], schema=schema)
        catalog.create_table(f"raw.{name}", schema=schema).append(arrow)
    return uri


@pytest.fixture(scope="session", autouse=True)
def duckdb_extensions() -> None:
    install_duckdb_extensions_from_wheels()


@pytest.fixture
def dbt_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("DBT_TARGET", "ci")
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    for name in ("LAKE_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    return warehouse


def invoke_dbt(tmp_path: Path, *args: str, messages: list[str] | None = None) -> dbtRunnerResult:
    """Run dbt in-process with target/ and logs/ in tmp, then release the warehouse file.

    Log messages dbt emits are appended to `messages` when given.
    """
    callbacks = [lambda event: messages.append(event.info.msg)] if messages is not None else []
    try:
        return dbtRunner(callbacks=callbacks).invoke(
            [
                *args,
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target",
                "ci",
                "--target-path",
                str(tmp_path / "dbt_target"),
                "--log-path",
                str(tmp_path / "dbt_logs"),
                "--no-partial-parse",
            ]
        )
    finally:
        # dbt-duckdb keeps its DuckDB instance open in a class attribute after the
        # invocation; close it so the test can open the file read-only.
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
        DuckDBConnectionManager.close_all_connections()


# The hand-written lake holds Open311 tables only: build what reads them (the other sources'
# staging models are built by the end-to-end tests over a lake loaded from every system).
OPEN311_ONLY = (
    "--select",
    "source:open311+",
    "--exclude",
    *(f"source:{s.name}+" for s in load_registry().sources if s.name != "open311"),
)

EXPECTED_MART_ROWS = [
    ("NS02", dt.date(2024, 5, 1), "Noise complaint", "派出所", 1, 1, 0, 2.0, 2.0, 1, 1.0),
    ("NS02", dt.date(2024, 5, 2), "Noise complaint", "派出所", 1, 0, 1, None, None, 0, None),
    ("RD01", dt.date(2024, 5, 1), "Road damage", "城管科", 3, 2, 1, 20.0, 6.0, 1, 0.5),
]


def read_mart(warehouse: Path) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(
            """
            select
                service_code, request_date, service_name, agency_responsible,
                requests_received, requests_closed, requests_open,
                median_hours_to_close, median_hours_to_update,
                closed_within_sla, share_closed_within_sla
            from marts.mart_service_requests_daily
            order by service_code, request_date
            """
        ).fetchall()


def failures(result: dbtRunnerResult) -> object:
    if result.exception is not None:
        return result.exception
    return [
        (r.node.unique_id, str(r.status), r.message)
        for r in result.result
        if str(r.status) not in ("success", "pass")
    ]


def test_build_over_iceberg_lake_produces_daily_mart(
    tmp_path: Path, dbt_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICEBERG_CATALOG_URI", write_lake(tmp_path))

    result = invoke_dbt(tmp_path, "build", *OPEN311_ONLY)

    assert result.success, failures(result)
    assert read_mart(dbt_env) == EXPECTED_MART_ROWS


@pytest.fixture
def moto_s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint (moto server, in-memory) on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("moto server did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.integration
def test_build_reads_iceberg_tables_stored_on_s3(
    tmp_path: Path, dbt_env: Path, monkeypatch: pytest.MonkeyPatch, moto_s3_endpoint: str
) -> None:
    import boto3

    credentials = {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_REGION": "us-east-1",
    }
    boto3.client(
        "s3",
        endpoint_url=moto_s3_endpoint,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        region_name=credentials["AWS_REGION"],
    ).create_bucket(Bucket="lake")
    uri = write_lake(
        tmp_path,
        warehouse="s3://lake/warehouse",
        **{
            "s3.endpoint": moto_s3_endpoint,
            "s3.access-key-id": credentials["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": credentials["AWS_SECRET_ACCESS_KEY"],
            "s3.region": credentials["AWS_REGION"],
        },
    )
    monkeypatch.setenv("ICEBERG_CATALOG_URI", uri)
    monkeypatch.setenv("LAKE_S3_ENDPOINT", moto_s3_endpoint)
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)

    result = invoke_dbt(tmp_path, "build", *OPEN311_ONLY)

    assert result.success, failures(result)
    assert read_mart(dbt_env) == EXPECTED_MART_ROWS


def test_run_start_hook_tolerates_a_lake_without_tables(
    tmp_path: Path, dbt_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh catalog: pyiceberg has created its tables, no Iceberg table exists yet.
    uri = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    SqlCatalog("lake", uri=uri, warehouse=(tmp_path / "lake").as_uri()).create_namespace("raw")
    monkeypatch.setenv("ICEBERG_CATALOG_URI", uri)

    result = invoke_dbt(tmp_path, "run-operation", "register_iceberg_sources")

    assert result.success, result.exception
    with duckdb.connect(str(dbt_env), read_only=True) as con:
        views = con.sql("select count(*) from duckdb_views() where schema_name = 'raw'").fetchone()
    assert views == (0,)


def test_run_start_hook_tolerates_a_missing_catalog_file(
    tmp_path: Path, dbt_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICEBERG_CATALOG_URI", f"sqlite:///{tmp_path / 'not-yet-created.sqlite'}")

    result = invoke_dbt(tmp_path, "run-operation", "register_iceberg_sources")

    assert result.success, result.exception
