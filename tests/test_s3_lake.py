"""The same ingest into a lake on S3 — over the S3 HTTP protocol (moto server on loopback)."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest

from ingest.duck import lake_connection
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.pipeline import run_source
from ingest.warehouse import build
from tests.conftest import settings_for

pytestmark = pytest.mark.integration
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def s3_lake(tmp_path, moto_server):
    moto_server.create_bucket("community-lake")
    return settings_for(
        "s3://community-lake/district",
        tmp_path / "warehouse.duckdb",
        ICEBERG_CATALOG_URI=f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        LAKE_S3_ENDPOINT=moto_server.endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto's dummy credentials
        AWS_REGION="us-east-1",
    )


def test_ingest_into_s3_lake_and_read_back_with_duckdb(s3_lake, district, simulator):
    (services, requests) = run_source(
        "open311", until=UNTIL, base_url=simulator.open311_url, settings=s3_lake
    )
    assert requests.rows_inserted == len(district.requests())

    table = open_catalog(s3_lake).load_table((RAW_NAMESPACE, "open311__service_requests"))
    assert table.metadata_location.startswith("s3://community-lake/district/raw/open311/service_requests/")
    storage = LakeStorage(s3_lake)
    assert storage.list(requests.landing_prefix), "landing payloads are in the bucket"
    assert storage.list("audit/runs/open311/service_requests/")

    con = lake_connection(s3_lake)
    count, distinct = con.execute(
        "select count(*), count(distinct service_request_id) from raw.open311__service_requests"
    ).fetchone()
    assert count == distinct == len(district.requests())
    closed = sum(1 for r in district.requests() if r["status"] == "closed")
    assert (
        con.execute("select count(*) from raw.open311__service_requests where status = 'closed'").fetchone()[
            0
        ]
        == closed
    )

    # a second run over the same window changes nothing in the bucket's table
    location = table.metadata_location
    run_source("open311", until=UNTIL, base_url=simulator.open311_url, settings=s3_lake)
    assert (
        open_catalog(s3_lake).load_table((RAW_NAMESPACE, "open311__service_requests")).metadata_location
        == location
    )


def test_dbt_builds_the_warehouse_from_an_s3_lake(s3_lake, district, simulator):
    run_source("open311", until=UNTIL, base_url=simulator.open311_url, settings=s3_lake)
    summary = build(s3_lake)
    assert summary.counts["model"] == {"success": 7}  # 2 staging views, 3 marts, 2 audit
    con0 = duckdb.connect(str(s3_lake.warehouse_path), read_only=True)
    assert con0.execute("select count(*) from audit.audit_extractions").fetchone()[0] == 2  # one per dataset
    con0.close()
    con = duckdb.connect(str(s3_lake.warehouse_path), read_only=True)
    assert con.execute("select sum(requests_received) from marts.mart_service_requests_daily").fetchone()[
        0
    ] == len(district.requests())


def test_s3_endpoint_going_away_fails_the_run_and_commits_nothing(s3_lake, district, simulator, moto_server):
    moto_server.stop()
    with pytest.raises(Exception, match=r"(?i)s3|connect|curl|network|aws"):
        run_source("open311", until=UNTIL, base_url=simulator.open311_url, settings=s3_lake)
    moto_server.start()  # a fresh, empty S3: the catalog must not point at anything half-written
    moto_server.create_bucket("community-lake")
    catalog = open_catalog(s3_lake)
    assert not catalog.table_exists((RAW_NAMESPACE, "open311__service_requests"))
    (_, requests) = run_source("open311", until=UNTIL, base_url=simulator.open311_url, settings=s3_lake)
    assert requests.rows_inserted == len(district.requests())
