"""The runner: the only place that wires a source, its contract, the lake and the audit trail.

``run_source`` is what both the CLI (``ingest run``) and the Airflow task call. It never
computes "now" for the window: the caller passes ``until`` (Airflow's data interval end, or the
CLI's clock), so re-running a window is deterministic.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

from ingest.conform import Conformer
from ingest.contracts import Dataset, Source, load_registry, table_name
from ingest.failpoints import failpoint
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import (
    META_FIELDS,
    RAW_NAMESPACE,
    CommitSpec,
    StagedRun,
    commit_run,
    ensure_table,
    open_catalog,
    read_cursor,
)
from ingest.privacy import IdentityVault, LakeAuditSink, load_keys
from ingest.privacy.sealed import SUFFIX as SEALED_SUFFIX
from ingest.privacy.sealed import Sealer
from ingest.settings import Settings, load_settings
from ingest.sources import Page, SourceError, Window, connector_for

log = logging.getLogger(__name__)


@dataclass
class DatasetReport:
    source: str
    dataset: str
    run_id: str
    status: str = "running"
    window_since: str | None = None
    window_until: str | None = None
    cursor_before: str | None = None
    cursor_after: str | None = None
    pages: int = 0
    records_received: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_unchanged: int = 0
    quarantined: int = 0
    erased_skipped: int = 0
    committed: bool = False
    commit_attempts: int = 0
    snapshot_id: int | None = None
    started_at: str = ""
    finished_at: str | None = None
    duration_s: float = 0.0
    fields: list[str] = field(default_factory=list)
    purpose: str = ""
    landing_prefix: str = ""
    error: str | None = None

    def summary(self) -> str:
        return (
            f"{self.source}.{self.dataset}: {self.status} — {self.records_received} received, "
            f"{self.rows_inserted} new, {self.rows_updated} updated, {self.rows_unchanged} unchanged, "
            f"{self.quarantined} quarantined; cursor {self.cursor_before} → {self.cursor_after}"
        )


def new_run_id(prefix: str = "manual") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}__{stamp}__{uuid.uuid4().hex[:8]}"


def safe_run_id(run_id: str) -> str:
    """Run ids become path segments: keep them to a portable alphabet."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", run_id)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def resolve_connection(source: Source, base_url: str | None = None) -> tuple[str, str | None]:
    """Base URL and API key: explicit value, then environment, then Airflow connection, then default."""
    conn = source.connection
    url = base_url or os.environ.get(conn.url_env)
    secret = os.environ.get(conn.secret_env) if conn.secret_env else None
    if (url is None or secret is None) and conn.conn_id and os.environ.get("AIRFLOW_CTX_DAG_ID"):
        try:
            from airflow.sdk import Connection

            airflow_conn = Connection.get(conn.conn_id)
        except Exception:  # noqa: BLE001 - a missing connection just means "not configured"
            airflow_conn = None
        if airflow_conn is not None:
            if url is None and airflow_conn.host:
                url = _url_of_connection(airflow_conn)
            secret = secret or airflow_conn.password
    url = url or conn.default_url
    if not url:
        raise SourceError(
            f"{source.name}: no base URL: set {conn.url_env}, the Airflow connection {conn.conn_id}, "
            "or pass --base-url"
        )
    return url, secret


# Airflow connection types of database sources -> DSN scheme the SQL connector reads.
_DSN_SCHEMES = {"postgres": "postgresql", "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


def _url_of_connection(conn: object) -> str:
    """Base URL or DSN from an Airflow connection — never with its password (that is the secret)."""
    host = conn.host
    port = f":{conn.port}" if conn.port else ""
    path = (conn.schema or "").lstrip("/")
    scheme = _DSN_SCHEMES.get((conn.conn_type or "").lower())
    if scheme:
        login = f"{quote(conn.login, safe='')}@" if conn.login else ""
        return f"{scheme}://{login}{host}{port}/{path}"
    host = host if "://" in host else f"https://{host}"
    return f"{host}{port}/{path}".rstrip("/")


def _write_audit(storage: LakeStorage, report: DatasetReport) -> None:
    stamp = (report.finished_at or report.started_at).replace(":", "").replace("-", "")[:15]
    rel = f"audit/runs/{report.source}/{report.dataset}/{stamp}__{safe_run_id(report.run_id)}.json"
    storage.write_json(rel, asdict(report))


@dataclass
class _Context:
    source: Source
    dataset: Dataset
    settings: Settings
    storage: LakeStorage
    conformer: Conformer
    report: DatasetReport
    sealer: Sealer | None = None  # set when the dataset carries direct identifiers
    vault: IdentityVault | None = None

    def seal(self, relpath: str, data: bytes) -> tuple[str, bytes]:
        """Objects holding clear personal data are encrypted at rest (``.sealed``)."""
        if self.sealer is None:
            return relpath, data
        relpath += SEALED_SUFFIX
        return relpath, self.sealer.seal(relpath, data)


def _open(source: Source, dataset: Dataset, settings: Settings | None, run_id: str) -> tuple[_Context, Table]:
    settings = settings or load_settings()
    storage = LakeStorage(settings)
    sealer = vault = pseudonymiser = None
    linked = any(c.references for c in dataset.columns)
    if dataset.personal_columns or linked:
        # Payloads and quarantined records of any dataset with personal data (identifiers, but also
        # a minor's birth date or a diagnosis) are sealed at rest. Refuses to run
        # (PrivacyKeyMissing, with what to do) when the keys are not configured.
        keys = load_keys()
        sealer = Sealer(keys.vault_key, "landing")
    if dataset.protected_columns:
        pseudonymiser = keys.pseudonymiser()
        vault = IdentityVault(storage, keys.vault_key, LakeAuditSink(storage))
    conformer = Conformer(source.name, dataset, pseudonymiser=pseudonymiser)
    if dataset.protected_columns or linked:
        from ingest.erasure import ErasureRegister, erased_refs

        register = ErasureRegister(storage, Sealer(keys.vault_key, "erasure"))
        if dataset.protected_columns:
            conformer.erased = register.tokens()
        conformer.erased_refs = erased_refs(source, dataset, register)
    report = DatasetReport(
        source=source.name,
        dataset=dataset.name,
        run_id=run_id,
        started_at=_iso(datetime.now(UTC)),
        purpose=source.purpose,
    )
    table = ensure_table(
        open_catalog(settings), settings, source.name, dataset.name, conformer.arrow_schema()
    )
    known = {c.name for c in conformer.columns()} | {f.name for f in META_FIELDS}
    for fld in table.schema().fields:
        if fld.name not in known:
            conformer.extra_columns[fld.name] = _iceberg_to_contract_type(fld)
    return _Context(source, dataset, settings, storage, conformer, report, sealer, vault), table


def _load_pages(
    ctx: _Context,
    pages: Iterable[tuple[str, Page]],
    *,
    land: bool,
    cursor_cap: datetime | None,
    state_after: str | None = None,
) -> None:
    """Conform, stage and commit ``(landing path, page)`` pairs as ONE Iceberg commit.

    ``state_after`` is the resume state to commit when the pages carry none (replay restores the
    state the original run reached).
    """
    source, dataset, report, storage = ctx.source, ctx.dataset, ctx.report, ctx.storage
    staging = Path(tempfile.mkdtemp(prefix=f"ingest-{source.name}-{dataset.name}-"))
    try:
        staged = StagedRun(directory=staging)
        quarantine_file = staging / "quarantine.jsonl"
        loaded_at = datetime.now(UTC)
        # The cursor moves to the newest value actually received (never past the window end), not
        # to our own clock: a source whose clock lags ours must not lose the rows in between.
        max_seen: datetime | None = None
        state = state_after  # resume state reported by the connector (non-time cursors)
        snapshot_from: int | None = None  # staged row number where a complete snapshot starts
        identities: dict[str, tuple[str, str]] = {}
        with quarantine_file.open("w", encoding="utf-8") as qfh:
            for landing_rel, page in pages:
                report.pages += 1
                if page.replaces_all:
                    snapshot_from = staged.rows
                if land:
                    landing_rel, sealed = ctx.seal(landing_rel, page.payload)
                    storage.write_bytes(landing_rel, sealed)
                report.records_received += len(page.records)
                if page.state is not None:
                    state = page.state
                batch = ctx.conformer.conform(page.records)
                for rej in batch.rejected:
                    line = {"reason": rej.reason, "landing_path": landing_rel, "record": rej.record}
                    qfh.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                report.quarantined += len(batch.rejected)
                identities.update(batch.identities)
                report.erased_skipped += batch.erased
                n = batch.table.num_rows
                staged.add(
                    batch.table.append_column(META_FIELDS[0], pa.array(batch.hashes, pa.string()))
                    .append_column(META_FIELDS[1], pa.array([report.run_id] * n, pa.string()))
                    .append_column(META_FIELDS[2], pa.array([loaded_at] * n, META_FIELDS[2].type))
                    .append_column(META_FIELDS[3], pa.array([storage.uri(landing_rel)] * n, pa.string()))
                )
                if dataset.cursor and n:
                    page_max = pc.max(batch.table[dataset.cursor.field]).as_py()
                    if page_max is not None and (max_seen is None or page_max > max_seen):
                        max_seen = page_max
                failpoint("after_page")
        report.fields = [c.name for c in ctx.conformer.columns()]
        if dataset.cursor and max_seen is not None:
            report.cursor_after = _iso(min(max_seen, cursor_cap) if cursor_cap else max_seen)
        elif not dataset.cursor and state is not None:
            report.cursor_after = state
        else:
            report.cursor_after = report.cursor_before

        if identities and ctx.vault is not None:
            # Before the commit: rows never reference a token whose identity is not on record.
            ctx.vault.put(safe_run_id(report.run_id), identities)
        result = commit_run(
            open_catalog(ctx.settings),
            (RAW_NAMESPACE, table_name(source.name, dataset.name)),
            staged,
            CommitSpec(
                disposition=dataset.disposition,
                primary_key=dataset.primary_key,
                order_by=dataset.cursor.field if dataset.cursor else None,
                cursor=report.cursor_after,
                cursor_kind="time" if dataset.cursor else "state",
                snapshot_from=snapshot_from,
                run_id=report.run_id,
                snapshot_properties={
                    "ingest.run-id": report.run_id,
                    "ingest.source": source.name,
                    "ingest.window": f"{report.window_since}..{report.window_until}",
                },
            ),
        )
        report.rows_inserted = result.rows_inserted
        report.rows_updated = result.rows_updated
        report.rows_deleted = result.rows_deleted
        report.rows_unchanged = result.rows_unchanged
        report.committed = result.committed
        report.commit_attempts = result.attempts
        report.snapshot_id = result.snapshot_id
        if report.quarantined:
            load_date = report.landing_prefix.split("load_date=", 1)[-1].split("/", 1)[0]
            storage.write_bytes(
                *ctx.seal(
                    f"quarantine/{source.name}/{dataset.name}/load_date={load_date}/{safe_run_id(report.run_id)}.jsonl",
                    quarantine_file.read_bytes(),
                )
            )
            log.warning(
                "%s.%s: %d record(s) quarantined (see quarantine/%s/%s/)",
                source.name,
                dataset.name,
                report.quarantined,
                source.name,
                dataset.name,
            )
        if (
            dataset.cursor
            and report.cursor_before
            and (report.cursor_after is None or report.cursor_after < report.cursor_before)
        ):
            report.cursor_after = report.cursor_before
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _finish(ctx: _Context, started: float, exc: BaseException | None) -> None:
    report = ctx.report
    if exc is not None:
        report.status = "failed"
        report.error = f"{type(exc).__name__}: {exc}"
        report.cursor_after = report.cursor_before
    elif report.status == "running":
        report.status = "success"
    report.finished_at = _iso(datetime.now(UTC))
    report.duration_s = round(time.monotonic() - started, 3)
    try:
        _write_audit(ctx.storage, report)
    except Exception:  # noqa: BLE001 - never mask the run's own error with an audit error
        log.exception("%s.%s: could not write the run record", report.source, report.dataset)
    log.info(report.summary())


def run_dataset(
    source: Source,
    dataset: Dataset,
    *,
    until: datetime,
    since: datetime | None = None,
    base_url: str | None = None,
    run_id: str | None = None,
    settings: Settings | None = None,
) -> DatasetReport:
    """Extract one dataset for the window ending at ``until`` and commit it exactly once."""
    started = time.monotonic()
    ctx, table = _open(source, dataset, settings, run_id or new_run_id())
    report = ctx.report
    connector = None
    try:
        window = None
        report.cursor_before = read_cursor(table)
        report.window_until = _iso(until)  # also "as of" for datasets without a time cursor
        if dataset.cursor:
            if since is None:
                if report.cursor_before:
                    since = datetime.fromisoformat(report.cursor_before) - dataset.cursor.lookback_delta
                else:
                    since = datetime.fromisoformat(dataset.cursor.initial)
            window = Window(since=since, until=until)
            report.window_since = _iso(since)
            if since >= until:
                log.info(
                    "%s.%s: the window is empty (cursor is past %s): nothing to do", *_names(report), until
                )
                report.cursor_after = report.cursor_before
                _finish(ctx, started, None)
                return report
        ctx.conformer.as_of = until
        url, secret = resolve_connection(source, base_url)
        connector = connector_for(source.connector)(url, api_key=secret, source=source.name)
        load_date = until.astimezone(UTC).date().isoformat()
        report.landing_prefix = (
            f"landing/{source.name}/{dataset.name}/load_date={load_date}/{safe_run_id(report.run_id)}"
        )
        pages = (
            (f"{report.landing_prefix}/{_landing_name(i, page)}", page)
            for i, page in enumerate(
                connector.extract(dataset, window, None if dataset.cursor else report.cursor_before), start=1
            )
        )
        _load_pages(ctx, pages, land=True, cursor_cap=until)
    except BaseException as exc:
        _finish(ctx, started, exc)
        raise
    finally:
        if connector is not None:
            connector.close()
    _finish(ctx, started, None)
    return report


def replay_dataset(
    source: Source,
    dataset: Dataset,
    *,
    from_date: str,
    to_date: str,
    rebuild: bool = False,
    settings: Settings | None = None,
) -> list[DatasetReport]:
    """Re-load a dataset from its landing payloads, run by run, without calling the source.

    The successful runs whose load date lies in [from_date, to_date] are replayed in the order
    they originally ran, each committed with the cursor it originally reached. With ``rebuild``
    the table is dropped first and rebuilt from landing alone; without it, replay is a no-op for
    rows the table already holds.
    """
    settings = settings or load_settings()
    storage = LakeStorage(settings)
    runs = []
    for rel in storage.list(f"audit/runs/{source.name}/{dataset.name}/"):
        rec = json.loads(storage.read_bytes(rel))
        prefix = rec.get("landing_prefix") or ""
        load_date = prefix.split("load_date=", 1)[-1].split("/", 1)[0] if prefix else ""
        if rec.get("status") == "success" and rec.get("pages") and from_date <= load_date <= to_date:
            runs.append(rec)
    runs.sort(key=lambda r: r["finished_at"])
    if rebuild:
        catalog = open_catalog(settings)
        ident = (RAW_NAMESPACE, table_name(source.name, dataset.name))
        if catalog.table_exists(ident):
            log.warning("%s.%s: dropping the table to rebuild it from landing", source.name, dataset.name)
            catalog.drop_table(ident)
    parser = connector_for(source.connector).parse
    ds_name = f"{source.name}.{dataset.name}"
    reports = []
    for rec in runs:
        files = [
            f for f in storage.list(rec["landing_prefix"] + "/") if not f.rsplit("/", 1)[-1].startswith("_")
        ]
        if not files:
            log.warning(
                "%s: run %s is past landing retention (payloads purged); skipped", ds_name, rec["run_id"]
            )
            continue
        started = time.monotonic()
        ctx, table = _open(source, dataset, settings, f"replay__{rec['run_id']}")
        report = ctx.report
        report.cursor_before = read_cursor(table)
        report.window_since, report.window_until = rec.get("window_since"), rec.get("window_until")
        report.landing_prefix = rec["landing_prefix"]
        pages = (
            (
                rel,
                _replayed(
                    parser(_unseal(ctx, rel, storage.read_bytes(rel)), label=rel, dataset=dataset), rel
                ),
            )
            for rel in files
        )
        cap = None
        if dataset.cursor and rec.get("cursor_after"):
            cap = datetime.fromisoformat(rec["cursor_after"])
        state_after = None if dataset.cursor else rec.get("cursor_after")
        if rec.get("window_until") or rec.get("finished_at"):
            ctx.conformer.as_of = datetime.fromisoformat(rec.get("window_until") or rec["finished_at"])
        try:
            _load_pages(ctx, pages, land=False, cursor_cap=cap, state_after=state_after)
        except BaseException as exc:
            _finish(ctx, started, exc)
            raise
        _finish(ctx, started, None)
        reports.append(report)
    return reports


# Landing files of pages that start a complete snapshot are named NNNNNN.snapshot.<ext>, so a
# replay knows it too.
SNAPSHOT_MARK = ".snapshot"


def _landing_name(number: int, page: Page) -> str:
    return f"{number:06d}{SNAPSHOT_MARK if page.replaces_all else ''}.{page.extension}"


def _replayed(page: Page, relpath: str) -> Page:
    page.replaces_all = f"{SNAPSHOT_MARK}." in relpath.rsplit("/", 1)[-1]
    return page


def _unseal(ctx: _Context, relpath: str, data: bytes) -> bytes:
    if not relpath.endswith(SEALED_SUFFIX):
        return data
    if ctx.sealer is None:
        raise RuntimeError(
            f"{relpath} is sealed but {ctx.source.name}.{ctx.dataset.name} has no keys configured"
        )
    return ctx.sealer.open(relpath, data)


def _names(report: DatasetReport) -> tuple[str, str]:
    return report.source, report.dataset


def _iceberg_to_contract_type(fld: object) -> str:
    text = str(getattr(fld, "field_type", "string")).lower()
    for iceberg, contract in (
        ("timestamptz", "timestamptz"),
        ("long", "long"),
        ("int", "long"),
        ("double", "double"),
        ("float", "double"),
        ("boolean", "boolean"),
        ("date", "date"),
    ):
        if text.startswith(iceberg):
            return contract
    return "string"


def run_source(
    source_name: str,
    *,
    until: datetime,
    since: datetime | None = None,
    base_url: str | None = None,
    datasets: list[str] | None = None,
    run_id: str | None = None,
    settings: Settings | None = None,
) -> list[DatasetReport]:
    """Load every dataset (or the named ones) of one source for the window ending at ``until``."""
    if until.tzinfo is None:
        raise ValueError("until must be timezone-aware")
    source = load_registry().source(source_name)
    run_id = run_id or new_run_id()
    selected = [source.dataset(n) for n in datasets] if datasets else source.datasets
    return [
        run_dataset(source, ds, until=until, since=since, base_url=base_url, run_id=run_id, settings=settings)
        for ds in selected
    ]
