"""Scan files and a warehouse for clear personal identifiers (leak scan of make run and the tests).

Parquet and Avro (Iceberg data files and manifests, which are compressed) are decoded with
DuckDB and every value is searched; every other file is searched as raw bytes; a DuckDB
warehouse is searched table by table and view by view.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import duckdb

from ingest.duck import install_extensions

# Runs of the characters identifiers are made of: digits (ID numbers end in X), and CJK (names).
_RUNS = re.compile(r"[0-9Xx]+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


class _Needles:
    """Finds which needles occur in a text in one pass, however many needles there are.

    Searching each of thousands of identifiers separately costs needles x text; here the text is
    cut into runs of digits and of CJK characters (what ID numbers, mobiles and names are made
    of) and every substring of a needle's length is looked up in a set. Needles made of other
    characters are searched for directly.
    """

    def __init__(self, needles: Iterable[str]) -> None:
        needles = set(needles)
        self.indexed = {n for n in needles if _RUNS.fullmatch(n)}
        self.other = needles - self.indexed
        self.lengths = sorted({len(n) for n in self.indexed})

    def find(self, text: str) -> set[str]:
        found = {n for n in self.other if n in text}
        for match in _RUNS.finditer(text):
            run = match.group()
            for length in self.lengths:
                if length > len(run):
                    break
                found.update(
                    run[i : i + length]
                    for i in range(len(run) - length + 1)
                    if run[i : i + length] in self.indexed
                )
        return found


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
    matcher = _Needles(needles)
    scanned, hits = 0, []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or any(path.resolve().is_relative_to(s) for s in skipped):
                continue
            if path.suffix in {".duckdb", ".wal"}:
                continue  # scanned through DuckDB itself by scan_warehouse
            scanned += 1
            text = _decoded_text(con, path)
            if text is None:
                # any other file: its bytes as UTF-8 (invalid bytes become U+FFFD, which ends a run)
                text = path.read_bytes().decode("utf-8", errors="replace")
            hits += [f"{n} in {path}" for n in sorted(matcher.find(text))]
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
    matcher = _Needles(needles)
    for schema, name in relations:
        text = "\n".join(map(str, con.execute(f'select * from "{schema}"."{name}"').fetchall()))
        hits += [f"{n} in {schema}.{name}" for n in sorted(matcher.find(text))]
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
