"""Iceberg tables in the ``raw`` zone: create, read state, and commit a run exactly once.

A run's rows are staged as local Parquet files first (bounded memory). The commit then, in
ONE Iceberg transaction:

* evolves the schema if the contract admitted new columns,
* keeps, per primary key, the newest version in the run (duplicates across pages collapse),
* drops versions the table already holds (same key, same record hash) — so re-running a
  window, replaying payloads or retrying after an ambiguous commit changes nothing,
* deletes the superseded versions of changed keys (``merge``) or all rows (``replace``),
* appends the new versions, and
* stores the dataset's cursor in the table properties.

Either all of that becomes visible, or none of it. A commit that loses a race with another
writer (``CommitFailedException``) is recomputed against the new table state and retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, And, EqualTo, In, Or
from pyiceberg.table import Table
from sqlalchemy.exc import IntegrityError, OperationalError

from ingest.failpoints import failpoint
from ingest.settings import Settings

log = logging.getLogger(__name__)

RAW_NAMESPACE = "raw"
CURSOR_PROPERTY = "ingest.cursor"
CURSOR_RUN_PROPERTY = "ingest.cursor-run-id"
META_FIELDS = [
    pa.field("_record_hash", pa.string()),
    pa.field("_run_id", pa.string()),
    pa.field("_loaded_at", pa.timestamp("us", tz="UTC")),
    pa.field("_landing_path", pa.string()),
]
SEQ = "_seq"
T = TypeVar("T")
MAX_COMMIT_ATTEMPTS = 5


def open_catalog(settings: Settings) -> SqlCatalog:
    if settings.catalog_uri.startswith("sqlite:///"):
        Path(settings.catalog_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    props: dict[str, str] = {"uri": settings.catalog_uri, "warehouse": _warehouse(settings)}
    if settings.s3:
        props.update(settings.s3.iceberg_properties())
    return _losing_a_creation_race_is_fine(lambda: SqlCatalog("lake", **props))


def _losing_a_creation_race_is_fine(create: Callable[[], T]) -> T:
    """Two first runs at once both create the catalog's tables or a namespace: the loser of the
    race gets a constraint error, tries once more and finds the thing there."""
    try:
        return create()
    except (OperationalError, IntegrityError) as exc:
        if "already exists" not in str(exc) and "UNIQUE constraint" not in str(exc):
            raise
        return create()


def _warehouse(settings: Settings) -> str:
    return settings.lake_url if settings.lake_is_s3 else f"file://{settings.lake_url}"


def table_location(settings: Settings, source: str, dataset: str) -> str:
    return f"{_warehouse(settings)}/raw/{source}/{dataset}"


# pyiceberg >= 0.12 retries a conflicting commit by re-applying the same appends on top of the
# other writer's snapshot. For us that would append rows the other writer may already have
# added: a duplicate. Our own retry (commit_run) recomputes what to write against the new table
# state instead, so the library's blind retry is switched off on every table we own.
NO_LIBRARY_RETRY = {"commit.retry.num-retries": "0"}
TABLE_PROPERTIES = {"format-version": "2", "write.parquet.compression-codec": "zstd", **NO_LIBRARY_RETRY}


def ensure_table(
    catalog: SqlCatalog, settings: Settings, source: str, dataset: str, schema: pa.Schema
) -> Table:
    identifier = (RAW_NAMESPACE, f"{source}__{dataset}")
    _losing_a_creation_race_is_fine(lambda: catalog.create_namespace_if_not_exists(RAW_NAMESPACE))
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        log.info("creating Iceberg table %s.%s", *identifier)
        table = catalog.create_table_if_not_exists(
            identifier,
            schema=pa.schema([*schema, *META_FIELDS]),
            location=table_location(settings, source, dataset),
            properties=TABLE_PROPERTIES,
        )
    if any(table.properties.get(k) != v for k, v in NO_LIBRARY_RETRY.items()):
        with table.transaction() as tx:
            tx.set_properties(NO_LIBRARY_RETRY)
    return table


def read_cursor(table: Table) -> str | None:
    return table.properties.get(CURSOR_PROPERTY)


@dataclass
class StagedRun:
    """Conformed rows of one run, spilled to local Parquet so memory stays bounded."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    schema: pa.Schema | None = None

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        seq = pa.array(range(self.rows, self.rows + table.num_rows), pa.int64())
        table = table.append_column(SEQ, seq)
        path = self.directory / f"part-{len(self.files):05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        self.files.append(path)
        self.rows += table.num_rows
        self.schema = table.schema if self.schema is None else pa.unify_schemas([self.schema, table.schema])


@dataclass
class CommitResult:
    rows_staged: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_unchanged: int = 0
    committed: bool = False
    attempts: int = 0
    snapshot_id: int | None = None


def _key_filter(primary_key: list[str], keys: pa.Table) -> Any:
    if len(primary_key) == 1:
        name = primary_key[0]
        return In(name, set(keys.column(name).to_pylist()))
    return (
        Or(*[And(*[EqualTo(k, row[k]) for k in primary_key]) for row in keys.to_pylist()]) if keys else None
    )


def _on(left: str, right: str, columns: list[str]) -> str:
    return " and ".join(f'{left}."{c}" = {right}."{c}"' for c in columns)


def _diff(
    staged: StagedRun,
    existing: pa.Table,
    primary_key: list[str],
    order_by: str | None,
    disposition: str,
    snapshot_from: int | None = None,
) -> tuple[duckdb.DuckDBPyConnection, str, pa.Table, int, int]:
    """Find the rows to write and the keys they supersede.

    With ``snapshot_from`` (merge only), the staged rows from that sequence number on are a
    complete snapshot of the dataset: keys the table holds that the snapshot does not list are
    deleted, and so are versions staged earlier in the run for such keys.

    Returns (connection, SQL selecting the rows to append, keys to delete, unchanged count,
    number of keys deleted because the snapshot no longer lists them).
    """
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("set memory_limit = '512MB'")
    con.execute(f"set temp_directory = '{staged.directory / 'duckdb_tmp'}'")
    files = ", ".join(f"'{p}'" for p in staged.files)
    con.execute(f"create temp view incoming as select * from read_parquet([{files}], union_by_name = true)")
    con.register("existing", existing)
    keys = primary_key or ["_record_hash"]
    partition = ", ".join(f'"{k}"' for k in keys)
    order = f'"{order_by}" desc nulls last, "{SEQ}" desc' if order_by else f'"{SEQ}" desc'
    scope = "incoming"
    if snapshot_from is not None and disposition == "merge" and primary_key:
        listed = con.execute(
            f'select count(*) from incoming where "{SEQ}" >= {int(snapshot_from)}'
        ).fetchone()[0]
        if listed:
            con.execute(
                f"create temp view scoped as select i.* from incoming i semi join "
                f'(select distinct {partition} from incoming where "{SEQ}" >= {int(snapshot_from)}) s '
                f"on {_on('i', 's', keys)}"
            )
            scope = "scoped"
        else:
            # An empty complete snapshot is more likely a broken export than a district with no
            # records: it deletes nothing.
            log.warning("a complete snapshot without records: nothing deleted")
    # The newest version of each key in this run: duplicates across pages collapse here.
    con.execute(
        f"create temp table winners as select * from {scope} "
        f"qualify row_number() over (partition by {partition} order by {order}) = 1"
    )
    # Versions the table does not hold yet (new keys, or known keys with different content).
    con.execute(
        f"create temp table changed as select w.* from winners w "
        f"left join existing e on {_on('w', 'e', keys)} "
        f"where e._record_hash is distinct from w._record_hash"
    )
    changed = con.execute("select count(*) from changed").fetchone()[0]
    total = con.execute("select count(*) from winners").fetchone()[0]
    # Keys the table holds that this run's (complete) set no longer lists.
    gone = ", ".join(f'e."{k}"' for k in keys)
    unlisted = f"select distinct {gone} from existing e anti join winners w on {_on('e', 'w', keys)}"
    if disposition == "replace":
        vanished = con.execute(f"select count(*) from ({unlisted})").fetchone()[0]
        if changed == 0 and vanished == 0:
            return con, "select * from changed where false", pa.table({}), total, 0
        return con, "select * from winners", pa.table({}), 0, 0
    vanished = 0
    if disposition == "merge":
        key_list = ", ".join(f'c."{k}"' for k in keys)
        superseded = (
            f"select distinct {key_list} from changed c semi join existing e on {_on('c', 'e', keys)}"
        )
        if scope == "scoped":
            vanished = con.execute(f"select count(*) from ({unlisted})").fetchone()[0]
            superseded = f"{superseded} union {unlisted}"
        delete_keys = con.execute(superseded).to_arrow_table()
    else:
        delete_keys = pa.table({})
    return con, "select * from changed", delete_keys, total - changed, vanished


@dataclass(frozen=True)
class CommitSpec:
    """How a run's rows go into its table."""

    disposition: str  # append | merge | replace
    primary_key: list[str]
    order_by: str | None  # newest version per key wins, by this column
    cursor: str | None  # stored in the table properties with the rows
    run_id: str
    snapshot_properties: dict[str, str]
    # "time": an ISO instant that only moves forward; "state": an opaque resume token set by the
    # connector (e.g. bundle checksums), stored whenever it changes.
    cursor_kind: str = "time"
    # Staged rows from this sequence number on are a complete snapshot (a OneRoster bulk file):
    # keys the snapshot no longer lists are deleted (merge only).
    snapshot_from: int | None = None


def commit_run(
    catalog: SqlCatalog, identifier: tuple[str, str], staged: StagedRun, spec: CommitSpec
) -> CommitResult:
    result = CommitResult(rows_staged=staged.rows)
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        result.attempts = attempt
        table = catalog.load_table(identifier)
        try:
            _commit_once(table, staged, result, spec)
            return result
        except CommitFailedException as exc:
            if attempt == MAX_COMMIT_ATTEMPTS:
                raise RuntimeError(
                    f"{identifier[1]}: Iceberg commit kept conflicting with other writers after {attempt} "
                    f"attempts ({exc}). Nothing from this run is visible; re-run it."
                ) from exc
            wait = 0.2 * 2**attempt
            log.warning(
                "%s: commit conflict (attempt %d), recomputing against the new table state",
                identifier[1],
                attempt,
            )
            time.sleep(wait)
    return result


def _commit_once(table: Table, staged: StagedRun, result: CommitResult, spec: CommitSpec) -> None:
    disposition, primary_key, cursor, run_id = spec.disposition, spec.primary_key, spec.cursor, spec.run_id
    snapshot_properties = spec.snapshot_properties
    old_cursor = read_cursor(table)
    if spec.cursor_kind == "time":
        advance_cursor = cursor is not None and (old_cursor is None or cursor > old_cursor)
    else:
        advance_cursor = cursor is not None and cursor != old_cursor
    result.rows_inserted = result.rows_updated = result.rows_deleted = result.rows_unchanged = 0
    result.committed = False

    if staged.rows == 0:
        if advance_cursor:
            with table.transaction() as tx:
                tx.set_properties({CURSOR_PROPERTY: cursor, CURSOR_RUN_PROPERTY: run_id})
            result.committed = True
        return

    lookup = [*primary_key, "_record_hash"] if primary_key else ["_record_hash"]
    existing = table.scan(selected_fields=tuple(lookup)).to_arrow()
    con, select_sql, delete_keys, unchanged, vanished = _diff(
        staged, existing, primary_key, spec.order_by, disposition, spec.snapshot_from
    )
    try:
        target = table.schema().as_arrow()
        incoming_schema = staged.schema
        new_fields = [f for f in incoming_schema if f.name != SEQ and f.name not in target.names]
        to_write = con.execute(f"select count(*) from ({select_sql})").fetchone()[0]
        result.rows_unchanged = unchanged
        if to_write == 0 and not advance_cursor and not new_fields and not vanished:
            return
        with table.transaction() as tx:
            if new_fields:
                with tx.update_schema() as update:
                    update.union_by_name(pa.schema(new_fields))
                target = tx.table_metadata.schema().as_arrow()
            if disposition == "replace" and to_write and existing.num_rows:
                tx.delete(AlwaysTrue(), snapshot_properties=snapshot_properties)
                result.rows_deleted = existing.num_rows
            elif delete_keys.num_rows:
                tx.delete(_key_filter(primary_key, delete_keys), snapshot_properties=snapshot_properties)
                result.rows_updated = delete_keys.num_rows - vanished
                result.rows_deleted = vanished
            if to_write:
                columns = ", ".join(
                    f'"{f.name}"' if f.name in incoming_schema.names else f'null::varchar as "{f.name}"'
                    for f in target
                )
                reader = con.execute(f"select {columns} from ({select_sql})").to_arrow_reader(50_000)
                tx.append(reader.cast(target), snapshot_properties=snapshot_properties)
            if advance_cursor:
                tx.set_properties({CURSOR_PROPERTY: cursor, CURSOR_RUN_PROPERTY: run_id})
            failpoint("before_commit")  # data files written, nothing committed yet
        failpoint("after_commit")  # committed; the caller may still see an error
        result.rows_inserted = to_write - result.rows_updated
        result.committed = True
        snapshot = table.refresh().current_snapshot()
        result.snapshot_id = snapshot.snapshot_id if snapshot else None
    finally:
        con.close()
