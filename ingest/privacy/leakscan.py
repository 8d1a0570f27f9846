"""Scan files and a warehouse for clear personal identifiers (leak scan of make run and the tests).

Parquet and Avro (Iceberg data files and manifests, which are compressed) are decoded with
DuckDB and every value is searched; every other file is searched as raw bytes; a DuckDB
warehouse is searched table by table and view by view.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import duckdb

from ingest.duck import install_extensions


def _decoded_text(con: duckdb.DuckDBPyConnection, path: Path) -> str | None:
    reader = {".parquet": "read_parquet", ".avro": "read_avro"}.get(path.suffix)
    if reader is None:
        return None
    rows = con.execute(f"select * from {reader}('{path}')").fetchall()
    return "\n".join(map(str, rows))


def scan_files(
    roots: Iterable[Path], needles: set[str], *, skip: Iterable[Path] = ()
) -> tuple[int, list[str]]:
    """(files scanned, ["<needle> in <file>", ...])."""
    install_extensions()
    con = duckdb.connect()
    con.execute("load avro")
    skipped = [p.resolve() for p in skip]
    encoded = {n: n.encode() for n in needles}
    scanned, hits = 0, []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or any(path.resolve().is_relative_to(s) for s in skipped):
                continue
            if path.suffix in {".duckdb", ".wal"}:
                continue  # scanned through DuckDB itself by scan_warehouse
            scanned += 1
            text = _decoded_text(con, path)
            if text is not None:
                hits += [f"{n} in {path}" for n in needles if n in text]
            else:
                data = path.read_bytes()
                hits += [f"{n} in {path}" for n, b in encoded.items() if b in data]
    return scanned, hits


def scan_warehouse(path: Path, needles: set[str]) -> tuple[int, list[str]]:
    """(relations scanned, hits) over every table and view of a DuckDB warehouse."""
    install_extensions()
    con = duckdb.connect(str(path), read_only=True)
    for ext in ("iceberg", "httpfs"):
        con.execute(f"load {ext}")
    relations = con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_schema not in ('information_schema', 'pg_catalog')"
    ).fetchall()
    hits = []
    for schema, name in relations:
        text = "\n".join(map(str, con.execute(f'select * from "{schema}"."{name}"').fetchall()))
        hits += [f"{n} in {schema}.{name}" for n in needles if n in text]
    con.close()
    return len(relations), hits


def identifiers_of(district) -> set[str]:
    """Every clear direct identifier the simulator gave the district's residents."""
    needles = set()
    for r in district.residents:
        needles.add(r.id_number)
        needles.add(r.name)
        if r.mobile:
            needles.add(r.mobile)
    return needles
