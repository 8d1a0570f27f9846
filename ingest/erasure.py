"""Erasure requests (PIPL art. 47): remove one resident from every zone, and keep them out.

``erase_resident`` finds the resident's pseudonym (from the ID number, or given directly), and:

1. deletes their rows from every raw table that carries a protected identifier (Iceberg row
   deletes), then expires the older snapshots and removes the data files only they referenced,
   so time travel cannot bring the rows back;
2. removes their records from the sealed landing payloads and quarantine files (re-sealed in
   place), so a replay cannot bring them back either;
3. removes their identifiers from the identity zone (audited, fail closed) — tokens still used by
   other residents' rows (a shared phone, a common given name) stay;
4. adds their token to the erasure register (``identity/erased.bin``, sealed): later loads drop
   rows of erased residents even if the source sends them again;
5. rebuilds the warehouse (optional) and writes an audit record with counts, never identifiers.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from pyiceberg.expressions import EqualTo, In

from ingest.contracts import Dataset, Source, load_registry, table_name
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog
from ingest.privacy import IdentityVault, LakeAuditSink, Pseudonymiser, load_keys
from ingest.privacy.sealed import SUFFIX as SEALED_SUFFIX
from ingest.privacy.sealed import Sealer
from ingest.settings import Settings, load_settings
from ingest.sources import connector_for

log = logging.getLogger(__name__)
REGISTER = "identity/erased.bin"


@dataclass
class ErasureReport:
    rows_deleted: dict[str, int] = field(default_factory=dict)
    data_files_removed: int = 0
    landing_records_removed: int = 0
    landing_objects_rewritten: int = 0
    quarantine_records_removed: int = 0
    identity_entries_removed: int = 0
    warehouse_rebuilt: bool = False


class ErasureRegister:
    """Tokens of erased residents, sealed in the identity zone."""

    def __init__(self, storage: LakeStorage, sealer: Sealer) -> None:
        self.storage, self.sealer = storage, sealer

    def tokens(self) -> set[str]:
        if not self.storage.exists(REGISTER):
            return set()
        return set(json.loads(self.sealer.open(REGISTER, self.storage.read_bytes(REGISTER))))

    def add(self, token: str) -> None:
        tokens = sorted(self.tokens() | {token})
        self.storage.write_bytes(REGISTER, self.sealer.seal(REGISTER, json.dumps(tokens).encode()))


def _identifier_column(dataset: Dataset) -> str | None:
    return next((c.name for c in dataset.protected_columns if c.category == "identifier"), None)


def _personal_datasets() -> list[tuple[Source, Dataset, str]]:
    found = []
    for source in load_registry().sources:
        for ds in source.datasets:
            column = _identifier_column(ds)
            if column:
                found.append((source, ds, column))
    return found


def _purge_raw(settings: Settings, storage: LakeStorage, source: Source, ds: Dataset, column: str, token: str,
               report: ErasureReport) -> set[str]:  # fmt: skip
    """Delete the resident's rows and every file that still holds them; return their other tokens."""
    catalog = open_catalog(settings)
    ident = (RAW_NAMESPACE, table_name(source.name, ds.name))
    if not catalog.table_exists(ident):
        return set()
    table = catalog.load_table(ident)
    protected = [c.name for c in ds.protected_columns]
    rows = table.scan(row_filter=EqualTo(column, token), selected_fields=tuple(protected)).to_arrow()
    report.rows_deleted[".".join(ident)] = rows.num_rows
    if rows.num_rows == 0:
        return set()
    tokens = {t for name in protected for t in rows.column(name).to_pylist() if t}
    with table.transaction() as tx:
        tx.delete(EqualTo(column, token), snapshot_properties={"ingest.operation": "erasure"})
    table = catalog.load_table(ident)
    current = table.current_snapshot()
    keep = {task.file.file_path for task in table.scan().plan_files()}
    old_ids = [
        s.snapshot_id for s in table.snapshots() if current is None or s.snapshot_id != current.snapshot_id
    ]
    doomed: set[str] = set()
    for snapshot_id in old_ids:
        doomed |= {task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()}
    if old_ids:
        table.maintenance.expire_snapshots().by_ids(old_ids).commit()
    for path in sorted(doomed - keep):
        storage.delete(storage.relpath_of(path))
        report.data_files_removed += 1
    return tokens


def _still_referenced(settings: Settings, tokens: set[str]) -> set[str]:
    catalog = open_catalog(settings)
    used: set[str] = set()
    for source in load_registry().sources:
        for ds in source.datasets:
            ident = (RAW_NAMESPACE, table_name(source.name, ds.name))
            if not ds.protected_columns or not catalog.table_exists(ident):
                continue
            table = catalog.load_table(ident)
            for col in ds.protected_columns:
                hits = table.scan(row_filter=In(col.name, tokens), selected_fields=(col.name,)).to_arrow()
                used |= set(hits.column(0).to_pylist())
    return used


def _scrub_objects(
    storage: LakeStorage, sealer: Sealer, prefix: str, keep_record, rewrite
) -> tuple[int, int]:
    """Rewrite sealed objects under ``prefix`` without the resident's records: (records, objects)."""
    records = objects = 0
    for rel in storage.list(prefix):
        if not rel.endswith(SEALED_SUFFIX):
            continue
        data = sealer.open(rel, storage.read_bytes(rel))
        new_data, removed = rewrite(data, keep_record)
        if removed:
            storage.write_bytes(rel, sealer.seal(rel, new_data))
            records += removed
            objects += 1
    return records, objects


def _rewrite_quarantine(data: bytes, keep_record) -> tuple[bytes, int]:
    lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
    kept = [x for x in lines if keep_record(x.get("record") or {})]
    body = "".join(json.dumps(x, ensure_ascii=False, default=str) + "\n" for x in kept)
    return body.encode(), len(lines) - len(kept)


def erase_resident(
    *,
    id_number: str | None = None,
    token: str | None = None,
    actor: str,
    purpose: str = "erasure request (PIPL art. 47)",
    settings: Settings | None = None,
    rebuild_warehouse: bool = True,
) -> ErasureReport:
    if not (id_number or token):
        raise ValueError("give the resident's ID number or their token")
    settings = settings or load_settings()
    storage = LakeStorage(settings)
    keys = load_keys()
    pseudonymiser: Pseudonymiser = keys.pseudonymiser()
    token = token or pseudonymiser.token("id_number", id_number)
    sealer = Sealer(keys.vault_key, "landing")
    report = ErasureReport()
    # Register first: from now on no load can bring the resident back, whatever fails below.
    ErasureRegister(storage, Sealer(keys.vault_key, "erasure")).add(token)

    other_tokens: set[str] = set()
    for source, ds, column in _personal_datasets():
        other_tokens |= _purge_raw(settings, storage, source, ds, column, token, report)
        field_name = ds.column(column).field

        def keep(record: dict, _field: str = field_name) -> bool:
            value = record.get(_field)
            if not isinstance(value, str) or not value.strip():
                return True
            try:
                return pseudonymiser.token("id_number", value) != token
            except ValueError:
                return True

        connector = connector_for(source.connector)
        landing = _scrub_objects(
            storage, sealer, f"landing/{source.name}/{ds.name}/", keep, connector.without
        )
        quarantine = _scrub_objects(
            storage, sealer, f"quarantine/{source.name}/{ds.name}/", keep, _rewrite_quarantine
        )
        report.landing_records_removed += landing[0]
        report.landing_objects_rewritten += landing[1]
        report.quarantine_records_removed += quarantine[0]

    doomed = ({token} | other_tokens) - _still_referenced(settings, other_tokens | {token})
    vault = IdentityVault(storage, keys.vault_key, LakeAuditSink(storage))
    report.identity_entries_removed = vault.erase(doomed, actor=actor, purpose=purpose)

    if rebuild_warehouse and settings.warehouse_path.exists():
        from ingest.warehouse import build

        build(settings)
        report.warehouse_rebuilt = True
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    storage.write_json(
        f"audit/erasure/{stamp}-{uuid.uuid4().hex[:8]}.json",
        {
            "event": "erasure",
            "actor": actor,
            "purpose": purpose,
            "at": datetime.now(UTC).isoformat(),
            **asdict(report),
        },
    )
    log.info("erasure done: %s", asdict(report))
    return report
