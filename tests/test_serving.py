"""The PostgreSQL serving layer: each role connects and sees exactly its tier (real server)."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime

import psycopg2
import psycopg2.errors
import pytest

from ingest.pipeline import run_source
from ingest.serving import grant_staff, publish
from ingest.simulator import District, SimulatorServer
from ingest.warehouse import build
from tests.conftest import settings_for

pytestmark = pytest.mark.integration
USERS = {"analyst": "cdl_t_analyst", "public_reader": "cdl_t_public"}
STAFF = "cdl_t_staff"


def admin(dbname: str, *statements: str | tuple[str, tuple]) -> None:
    """Run statements as the superuser, outside any transaction (CREATE/DROP DATABASE need that)."""
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=dbname)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(*(statement if isinstance(statement, tuple) else (statement,)))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    settings = settings_for(root / "lake", root / "warehouse.duckdb")
    district = District.generate(residents=500, seed=21)
    with SimulatorServer(district) as sim:
        run_source(
            "open311", until=datetime(2026, 12, 1, tzinfo=UTC), base_url=sim.open311_url, settings=settings
        )
    build(settings)
    db = f"cdl_serving_test_{os.getpid()}"
    admin("postgres", f"drop database if exists {db}", f"create database {db}")
    dsn = f"postgresql://postgres@127.0.0.1:5432/{db}"
    first = publish(settings, dsn)
    second = publish(settings, dsn)  # re-publishing replaces, never duplicates
    community = Counter(r["community_code"] for r in district.requests()).most_common(1)[0][0]
    for role, user in USERS.items():
        admin(
            db,
            f"do $$ begin if not exists (select 1 from pg_roles where rolname = '{user}') "
            f'then create role "{user}" login; end if; end $$',
            f'grant "{role}" to "{user}"',
        )
    grant_staff(dsn, STAFF, community)
    yield {"db": db, "district": district, "community": community, "first": first, "second": second}
    admin("postgres", f"drop database if exists {db} with (force)")
    admin("postgres", *[f'drop role if exists "{user}"' for user in [*USERS.values(), STAFF]])


def query(served, user: str, sql: str):
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user=user, dbname=served["db"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def denied(served, user: str, sql: str) -> bool:
    try:
        query(served, user, sql)
    except psycopg2.errors.InsufficientPrivilege:
        return True
    return False


def test_publishing_is_complete_and_idempotent(served):
    assert served["first"].tables == served["second"].tables
    assert served["first"].tables["community.community_service_requests"] == len(
        served["district"].requests()
    )


def test_analyst_sees_pseudonymous_marts_and_open_data_only(served):
    user = USERS["analyst"]
    total = query(served, user, "select sum(requests_received) from marts.mart_service_requests_daily")[0][0]
    assert total == len(served["district"].requests())
    assert query(served, user, "select count(*) from open_data.open_service_requests_by_grid")[0][0] > 0
    assert denied(served, user, "select count(*) from community.community_service_requests")
    assert denied(served, user, "select count(*) from serving.staff_communities")


def test_community_staff_see_only_their_own_community(served):
    community = served["community"]
    rows = query(
        served, STAFF, "select community_code, count(*) from community.community_service_requests group by 1"
    )
    truth = sum(1 for r in served["district"].requests() if r["community_code"] == community)
    assert rows == [(community, truth)]
    assert query(served, STAFF, "select count(*) from open_data.open_service_requests_by_grid")[0][0] > 0
    assert denied(served, STAFF, "select count(*) from marts.mart_service_requests_daily")


def test_public_reader_sees_open_data_only(served):
    user = USERS["public_reader"]
    rows = query(served, user, "select min(requesters) from open_data.open_service_requests_by_grid")
    assert rows[0][0] >= 5
    assert denied(served, user, "select count(*) from marts.mart_service_requests_daily")
    assert denied(served, user, "select count(*) from community.community_service_requests")


def test_no_identifier_column_is_served(served):
    columns = query(
        served,
        "postgres",
        "select table_schema || '.' || table_name || '.' || column_name from information_schema.columns "
        "where table_schema in ('marts', 'community', 'open_data')",
    )
    names = {c[0].rsplit(".", 1)[1] for c in columns}
    assert names and not names & {"account_id", "first_name", "last_name", "phone", "requester_token"}
