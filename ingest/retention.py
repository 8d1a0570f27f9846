"""Landing and quarantine retention: payloads older than the source's ``landing_retention`` go.

Landing payloads of sources with personal data hold residents' identifiers (sealed); PIPL's
minimisation says keep them no longer than needed. Replay works for everything still within
retention; older runs are skipped by replay with a warning.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime

from ingest.contracts import load_registry, parse_duration
from ingest.lake.storage import LakeStorage
from ingest.settings import Settings

log = logging.getLogger(__name__)
_LOAD_DATE = re.compile(r"/load_date=(\d{4}-\d{2}-\d{2})/")


@dataclass
class PurgeReport:
    cutoff: dict[str, str] = field(default_factory=dict)  # source -> oldest load date kept
    landing_objects: int = 0
    quarantine_objects: int = 0


def purge_expired(
    settings: Settings, *, today: date | None = None, sources: list[str] | None = None
) -> PurgeReport:
    today = today or datetime.now(UTC).date()
    storage = LakeStorage(settings)
    report = PurgeReport()
    for source in load_registry().sources:
        if sources and source.name not in sources:
            continue
        cutoff = today - parse_duration(source.landing_retention)
        report.cutoff[source.name] = cutoff.isoformat()
        for zone in ("landing", "quarantine"):
            for rel in storage.list(f"{zone}/{source.name}/"):
                match = _LOAD_DATE.search(rel)
                if match and date.fromisoformat(match[1]) < cutoff:
                    storage.delete(rel)
                    if zone == "landing":
                        report.landing_objects += 1
                    else:
                        report.quarantine_objects += 1
    if report.landing_objects or report.quarantine_objects:
        storage.write_json(
            f"audit/retention/{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.json",
            {"event": "retention.purge", "today": today.isoformat(), **asdict(report)},
        )
    log.info("retention: %s", asdict(report))
    return report
