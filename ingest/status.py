"""What state each source is in: last run, cursor, rows, quarantine, freshness against its SLA."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pyiceberg.exceptions import NoSuchTableError

from ingest.contracts import load_registry, parse_duration, table_name
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE, open_catalog, read_cursor
from ingest.settings import Settings


@dataclass
class DatasetStatus:
    source: str
    dataset: str
    rows: int | None
    cursor: str | None
    last_run: str | None
    last_status: str | None
    last_success: str | None
    quarantined_last_run: int | None
    freshness_sla: str
    fresh: bool | None

    def as_row(self) -> list[str]:
        fresh = {True: "ok", False: "STALE", None: "-"}[self.fresh]
        return [
            f"{self.source}.{self.dataset}",
            "-" if self.rows is None else str(self.rows),
            self.cursor or "-",
            self.last_success or "never",
            self.last_status or "-",
            "-" if self.quarantined_last_run is None else str(self.quarantined_last_run),
            f"{fresh} ({self.freshness_sla})",
        ]


HEADERS = ["dataset", "rows", "cursor", "last success", "last run", "quarantined", "freshness"]


def collect(settings: Settings, now: datetime | None = None) -> list[DatasetStatus]:
    now = now or datetime.now(UTC)
    storage = LakeStorage(settings)
    catalog = open_catalog(settings)
    statuses = []
    for source in load_registry().sources:
        for ds in source.datasets:
            rows = cursor = None
            try:
                table = catalog.load_table((RAW_NAMESPACE, table_name(source.name, ds.name)))
                cursor = read_cursor(table)
                snap = table.current_snapshot()
                rows = int(snap.summary.get("total-records", 0)) if snap and snap.summary else 0
            except NoSuchTableError:
                pass
            runs = storage.list(f"audit/runs/{source.name}/{ds.name}/")
            last = json.loads(storage.read_bytes(runs[-1])) if runs else None
            last_ok = None
            for rel in reversed(runs[-200:]):
                rec = json.loads(storage.read_bytes(rel))
                if rec.get("status") == "success":
                    last_ok = rec
                    break
            fresh = None
            if last_ok and last_ok.get("finished_at"):
                age = now - datetime.fromisoformat(last_ok["finished_at"])
                fresh = age <= parse_duration(ds.freshness_sla)
            statuses.append(
                DatasetStatus(
                    source=source.name,
                    dataset=ds.name,
                    rows=rows,
                    cursor=cursor,
                    last_run=last["finished_at"] if last else None,
                    last_status=last["status"] if last else None,
                    last_success=last_ok["finished_at"] if last_ok else None,
                    quarantined_last_run=last.get("quarantined") if last else None,
                    freshness_sla=ds.freshness_sla,
                    fresh=fresh,
                )
            )
    return statuses
