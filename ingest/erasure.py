"""Erasure requests (PIPL art. 47): remove one resident from every zone, and keep them out.

``erase_resident`` finds the resident's pseudonym (from the ID number, or given directly), and:

1. deletes their rows from every raw table that carries a protected identifier (Iceberg row
   deletes) and the rows that point at those (a column with ``references``: a patient's
   encounters, a student's enrolments), then expires the older snapshots and removes the data
   files only they referenced, so time travel cannot bring the rows back;
2. removes their records from the sealed landing payloads and quarantine files (re-sealed in
   place), so a replay cannot bring them back either;
3. removes their identifiers from the identity zone (audited, fail closed) — tokens still used by
   other residents' rows (a shared phone, a common given name) stay;
4. adds their token — and the keys of their linked records — to the erasure register
   (``identity/erased.bin``, sealed): later loads drop rows of erased residents, and rows
   pointing at them, even if the source sends them again;
5. rebuilds the warehouse (optional) and writes an audit record with counts, never identifiers.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
from pyiceberg.expressions import EqualTo, In
from pyiceberg.table import Table

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
    """Who was erased, sealed in the identity zone: residents' tokens, and the keys of records
    that point at them without carrying a token (``<source>.<dataset>.<column>`` -> keys, e.g. the
    erased patients' FHIR ids that their encounters reference)."""

    def __init__(self, storage: LakeStorage, sealer: Sealer) -> None:
        self.storage, self.sealer = storage, sealer

    def _read(self) -> dict:
        if not self.storage.exists(REGISTER):
            return {"tokens": [], "keys": {}}
        data = json.loads(self.sealer.open(REGISTER, self.storage.read_bytes(REGISTER)))
        return {"tokens": data, "keys": {}} if isinstance(data, list) else data

    def tokens(self) -> set[str]:
        return set(self._read()["tokens"])

    def keys(self) -> dict[str, set[str]]:
        return {name: set(values) for name, values in self._read()["keys"].items()}

    def add(self, token: str, keys: dict[str, set[str]] | None = None) -> None:
        data = self._read()
        data["tokens"] = sorted(set(data["tokens"]) | {token})
        for name, values in (keys or {}).items():
            data["keys"][name] = sorted(set(data["keys"].get(name, [])) | {str(v) for v in values})
        self.storage.write_bytes(REGISTER, self.sealer.seal(REGISTER, json.dumps(data).encode()))


def referencing_columns(source: Source, dataset: Dataset, column: str) -> list[tuple[Dataset, str]]:
    """(dataset, column) pairs of ``source`` whose values point at ``dataset.column``."""
    target = f"{dataset.name}.{column}"
    return [(ds, c.name) for ds in source.datasets for c in ds.columns if c.references == target]


def erased_refs(source: Source, dataset: Dataset, register: ErasureRegister) -> dict[str, set[str]]:
    """For the conformer: referencing column -> erased keys of the dataset it points at."""
    keys = register.keys()
    return {
        c.name: keys[f"{source.name}.{c.references}"]
        for c in dataset.columns
        if c.references and f"{source.name}.{c.references}" in keys
    }


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


def _raw_table(settings: Settings, source: Source, ds: Dataset) -> Table | None:
    """The dataset's raw table, or None when it has never been loaded."""
    catalog = open_catalog(settings)
    ident = (RAW_NAMESPACE, table_name(source.name, ds.name))
    return catalog.load_table(ident) if catalog.table_exists(ident) else None


def _purge_raw(settings: Settings, storage: LakeStorage, source: Source, ds: Dataset, row_filter,
               selected: list[str], report: ErasureReport) -> pa.Table | None:  # fmt: skip
    """Delete the rows ``row_filter`` matches and every file that still holds them.

    Returns the deleted rows' ``selected`` columns (None when the table does not exist).
    """
    table = _raw_table(settings, source, ds)
    if table is None:
        return None
    rows = table.scan(row_filter=row_filter, selected_fields=tuple(selected)).to_arrow()
    name = f"{RAW_NAMESPACE}.{table_name(source.name, ds.name)}"
    report.rows_deleted[name] = report.rows_deleted.get(name, 0) + rows.num_rows
    if rows.num_rows == 0:
        return rows
    with table.transaction() as tx:
        tx.delete(row_filter, snapshot_properties={"ingest.operation": "erasure"})
    table = table.refresh()
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
    return rows


def _scan_keys(settings: Settings, source: Source, ds: Dataset, row_filter, key: str) -> set[str]:
    table = _raw_table(settings, source, ds)
    if table is None:
        return set()
    rows = table.scan(row_filter=row_filter, selected_fields=(key,)).to_arrow()
    return {str(v) for v in rows.column(0).to_pylist() if v is not None}


def _scrub(
    storage: LakeStorage, sealer: Sealer, source: Source, ds: Dataset, keep, report: ErasureReport
) -> None:
    """The records ``keep`` rejects, out of the dataset's sealed landing payloads and quarantine files."""
    connector = connector_for(source.connector)
    landing = _scrub_objects(storage, sealer, f"landing/{source.name}/{ds.name}/", keep, connector.without)
    quarantine = _scrub_objects(
        storage, sealer, f"quarantine/{source.name}/{ds.name}/", keep, _rewrite_quarantine
    )
    report.landing_records_removed += landing[0]
    report.landing_objects_rewritten += landing[1]
    report.quarantine_records_removed += quarantine[0]


def _still_referenced(settings: Settings, tokens: set[str]) -> set[str]:
    used: set[str] = set()
    for source in load_registry().sources:
        for ds in source.datasets:
            table = _raw_table(settings, source, ds) if ds.protected_columns else None
            if table is None:
                continue
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
    register = ErasureRegister(storage, Sealer(keys.vault_key, "erasure"))
    register.add(token)
    personal = _personal_datasets()

    # Records that point at the resident's records without carrying a token (a patient's
    # encounters, a student's enrolments): their keys are registered before anything is deleted.
    linked: list[tuple[Source, Dataset, str, set[str]]] = []
    ref_keys: dict[str, set[str]] = {}
    for source, ds, column in personal:
        for key in ds.primary_key:
            children = referencing_columns(source, ds, key)
            values = _scan_keys(settings, source, ds, EqualTo(column, token), key) if children else set()
            if values:
                ref_keys[f"{source.name}.{ds.name}.{key}"] = values
                linked += [(source, child, col, values) for child, col in children]
    if ref_keys:
        register.add(token, ref_keys)

    other_tokens: set[str] = set()
    for source, ds, column in personal:
        protected = [c.name for c in ds.protected_columns]
        rows = _purge_raw(settings, storage, source, ds, EqualTo(column, token), protected, report)
        if rows is not None:
            other_tokens |= {t for name in protected for t in rows.column(name).to_pylist() if t}
        field_name = ds.column(column).field

        def keep(record: dict, _field: str = field_name) -> bool:
            value = record.get(_field)
            if not isinstance(value, str) or not value.strip():
                return True
            try:
                return pseudonymiser.token("id_number", value) != token
            except ValueError:
                return True

        _scrub(storage, sealer, source, ds, keep, report)

    for source, child, col, values in linked:
        _purge_raw(settings, storage, source, child, In(col, values), [col], report)
        child_field = child.column(col).field

        def keep_linked(record: dict, _field: str = child_field, _values: set[str] = values) -> bool:
            return str(record.get(_field)) not in _values

        _scrub(storage, sealer, source, child, keep_linked, report)

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
