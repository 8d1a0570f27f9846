"""Production catalog: the Iceberg SQL catalog in the machine's PostgreSQL, ingest + dbt build."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import duckdb
import psycopg2
import pytest

from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.pipeline import run_source
from ingest.warehouse import build
from tests.conftest import settings_for

pytestmark = pytest.mark.integration
PASSWORD = "catalog-pw-5d1e"  # noqa: S105 - a marker to grep for in the logs


def _admin(*statements: str) -> None:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def pg_catalog(tmp_path):
    db = f"cdl_catalog_test_{os.getpid()}"
    _admin(f"drop database if exists {db}", f"create database {db}")
    yield f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:5432/{db}"
    _admin(f"drop database if exists {db} with (force)")


def test_ingest_and_dbt_build_with_the_catalog_in_postgresql(tmp_path, pg_catalog, district, simulator):
    settings = settings_for(tmp_path / "lake", tmp_path / "warehouse.duckdb", ICEBERG_CATALOG_URI=pg_catalog)
    run_source(
        "open311", until=datetime(2026, 12, 1, tzinfo=UTC), base_url=simulator.open311_url, settings=settings
    )
    assert open_catalog(settings).table_exists((RAW_NAMESPACE, "open311__service_requests"))

    summary = build(settings)
    assert summary.counts["model"] == {"success": 7}
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    received = con.execute("select sum(requests_received) from marts.mart_service_requests_daily").fetchone()[
        0
    ]
    con.close()
    assert received == len(district.requests())
    # the catalog password reaches libpq through PGPASSWORD, never dbt's logs
    logs = list((settings.warehouse_path.parent / "dbt").rglob("*"))
    assert logs and not any(PASSWORD.encode() in p.read_bytes() for p in logs if p.is_file())
