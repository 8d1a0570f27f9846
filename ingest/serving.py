"""The PostgreSQL serving layer: marts published into schemas with roles and row-level security.

Access tiers (least privilege):

| role | sees |
|---|---|
| ``analyst`` | ``marts`` (pseudonymous marts) and ``open_data`` |
| ``community_staff`` | ``community`` (own community only: row-level security), ``open_data`` |
| ``public_reader`` | ``open_data`` only |

Roles are group roles (NOLOGIN); people log in as their own users, granted one of them.
Which community a staff user belongs to lives in ``serving.staff_communities``; the policy on
every ``community`` table compares the row's ``community_code`` with the current user's.
Each table is replaced inside one transaction, so readers see the old or the new table.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ingest.settings import Settings, load_settings

log = logging.getLogger(__name__)

# schema -> roles that may read it
TIERS: dict[str, tuple[str, ...]] = {
    "marts": ("analyst",),
    "community": ("community_staff",),
    "open_data": ("analyst", "community_staff", "public_reader"),
}
ROLES = ("analyst", "community_staff", "public_reader")
RLS_COLUMN = "community_code"

_PG_TYPES = {
    "VARCHAR": "text",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "HUGEINT": "numeric",
    "DOUBLE": "double precision",
    "FLOAT": "real",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "TIMESTAMP": "timestamp",
}


@dataclass
class PublishReport:
    tables: dict[str, int] = field(default_factory=dict)  # "schema.table" -> rows


def serving_dsn() -> str:
    dsn = os.environ.get("SERVING_DSN")
    if not dsn:
        raise RuntimeError(
            "SERVING_DSN is not set: give the PostgreSQL serving database, e.g. "
            "postgresql://publisher@db.internal:5432/community_serving"
        )
    return dsn


def _ensure_roles(cur) -> None:
    for role in ROLES:
        cur.execute("select 1 from pg_roles where rolname = %s", (role,))
        if cur.fetchone() is None:
            cur.execute(f'create role "{role}" nologin')
    cur.execute("create schema if not exists serving")
    cur.execute(
        "create table if not exists serving.staff_communities "
        "(role_name text primary key, community_code text not null)"
    )
    cur.execute("revoke all on schema serving from public")
    cur.execute('grant usage on schema serving to "community_staff"')
    cur.execute('grant select on serving.staff_communities to "community_staff"')


def _publish_table(cur, con: duckdb.DuckDBPyConnection, schema: str, table: str) -> int:
    described = con.execute(f'describe "{schema}"."{table}"').fetchall()
    columns = [(name, _PG_TYPES.get(str(type_).upper(), "text")) for name, type_, *_ in described]
    cur.execute(f'create schema if not exists "{schema}"')
    cur.execute(f'revoke all on schema "{schema}" from public')
    staging = f"{table}__publishing"
    cur.execute(f'drop table if exists "{schema}"."{staging}"')
    definitions = ", ".join(f'"{name}" {type_}' for name, type_ in columns)
    cur.execute(f'create table "{schema}"."{staging}" ({definitions})')
    with tempfile.TemporaryDirectory(prefix="cdl-publish-") as tmp:
        csv_path = Path(tmp) / f"{table}.csv"
        con.execute("set TimeZone = 'UTC'")
        con.execute(f'copy (select * from "{schema}"."{table}") to \'{csv_path}\' (format csv, header false)')
        names = ", ".join(f'"{n}"' for n, _ in columns)
        with csv_path.open(encoding="utf-8") as fh:
            cur.copy_expert(f'copy "{schema}"."{staging}" ({names}) from stdin with (format csv)', fh)
    rows = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
    cur.execute(f'drop table if exists "{schema}"."{table}"')
    cur.execute(f'alter table "{schema}"."{staging}" rename to "{table}"')
    for role in TIERS[schema]:
        cur.execute(f'grant usage on schema "{schema}" to "{role}"')
        cur.execute(f'grant select on "{schema}"."{table}" to "{role}"')
    if RLS_COLUMN in {n for n, _ in columns} and schema == "community":
        cur.execute(f'alter table "{schema}"."{table}" enable row level security')
        cur.execute(
            f'create policy own_community on "{schema}"."{table}" for select to "community_staff" using '
            f"({RLS_COLUMN} = (select community_code from serving.staff_communities "
            "where role_name = current_user))"
        )
    return rows


def publish(settings: Settings | None = None, dsn: str | None = None) -> PublishReport:
    """Copy every table of the tiers' schemas from the DuckDB warehouse into PostgreSQL."""
    import psycopg2

    settings = settings or load_settings()
    report = PublishReport()
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_type = 'BASE TABLE' and table_schema in ({', '.join(repr(s) for s in TIERS)})"
        ).fetchall()
        pg = psycopg2.connect(dsn or serving_dsn())
        try:
            with pg, pg.cursor() as cur:  # one transaction: all tables or none
                _ensure_roles(cur)
                for schema, table in tables:
                    report.tables[f"{schema}.{table}"] = _publish_table(cur, con, schema, table)
        finally:
            pg.close()
    finally:
        con.close()
    log.info("published to the serving layer: %s", report.tables)
    return report


def grant_staff(dsn: str, user: str, community_code: str) -> None:
    """Create (if needed) a login user for a residents' committee member, limited to one community."""
    import psycopg2

    pg = psycopg2.connect(dsn)
    try:
        with pg, pg.cursor() as cur:
            _ensure_roles(cur)
            cur.execute("select 1 from pg_roles where rolname = %s", (user,))
            if cur.fetchone() is None:
                cur.execute(f'create role "{user}" login')
            cur.execute(f'grant "community_staff" to "{user}"')
            cur.execute(
                "insert into serving.staff_communities values (%s, %s) "
                "on conflict (role_name) do update set community_code = excluded.community_code",
                (user, community_code),
            )
    finally:
        pg.close()
