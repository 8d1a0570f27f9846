"""DuckDB helpers: extensions from their wheels (no downloads here) and views over the lake."""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from ingest.settings import Settings

# Order matters: iceberg needs avro.
EXTENSIONS = ("avro", "iceberg", "httpfs", "sqlite_scanner", "postgres_scanner")


def extension_file(name: str) -> Path:
    module = importlib.import_module(f"duckdb_extension_{name}")
    version = duckdb.__version__
    path = Path(module.__file__).parent / "extensions" / f"v{version}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise FileNotFoundError(
            f"DuckDB extension {name} for DuckDB {version} not found at {path}; "
            "the duckdb and duckdb-extension-* pins in pyproject.toml must match"
        )
    return path


def install_extensions(con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """Install the bundled extensions into DuckDB's extension directory (idempotent, offline)."""
    own = con is None
    con = con or duckdb.connect()
    try:
        installed = {
            row[0]
            for row in con.execute(
                "select extension_name from duckdb_extensions() where installed"
            ).fetchall()
        }
        done = []
        for name in EXTENSIONS:
            if name not in installed:
                con.execute(f"install '{extension_file(name)}'")
                done.append(name)
        return done
    finally:
        if own:
            con.close()


def s3_secret_sql(settings: Settings) -> str | None:
    s3 = settings.s3
    if not settings.lake_is_s3 or s3 is None:
        return None
    parts = ["type s3", f"region '{s3.region}'"]
    if s3.access_key_id:
        parts += [f"key_id '{s3.access_key_id}'", f"secret '{s3.secret_access_key}'"]
    if s3.endpoint:
        parsed = urlparse(s3.endpoint)
        parts += [
            f"endpoint '{parsed.netloc or parsed.path}'",
            "url_style 'path'",
            f"use_ssl {'true' if parsed.scheme == 'https' else 'false'}",
        ]
    return f"create or replace secret lake_s3 ({', '.join(parts)})"


def lake_connection(settings: Settings, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per Iceberg table (``raw.<table>``, ``curated.<table>``)."""
    from ingest.lake.tables import open_catalog

    install_extensions()
    con = duckdb.connect(database)
    for name in ("iceberg", "httpfs"):
        con.execute(f"load {name}")
    secret = s3_secret_sql(settings)
    if secret:
        con.execute(secret)
    catalog = open_catalog(settings)
    for (namespace,) in catalog.list_namespaces():
        con.execute(f'create schema if not exists "{namespace}"')
        for ident in catalog.list_tables(namespace):
            table = catalog.load_table(ident)
            con.execute(
                f'create or replace view "{namespace}"."{ident[-1]}" as '
                f"select * from iceberg_scan('{table.metadata_location}')"
            )
    return con
