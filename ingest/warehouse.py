"""Build the warehouse with dbt and publish it atomically.

dbt builds into a copy of the warehouse file; only when every model and test passed is the copy
moved over the published file (an atomic rename). Analysts querying the warehouse meanwhile keep
reading the previous version and are never locked out; a failed build publishes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from ingest.settings import PACKAGE_DIR, Settings, load_settings

log = logging.getLogger(__name__)


def project_dir() -> Path:
    return Path(os.environ.get("DBT_PROJECT_DIR") or PACKAGE_DIR.parent / "dbt_project")


class WarehouseBuildFailed(RuntimeError):
    pass


@dataclass
class BuildSummary:
    success: bool
    warehouse: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = [
            f"{kind}s: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
            for kind, c in self.counts.items()
        ]
        return "; ".join(parts) or "nothing built"


def dbt_env(settings: Settings, warehouse_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "WAREHOUSE_PATH": str(warehouse_file),
            "ICEBERG_CATALOG_URI": settings.catalog_uri,
            "DBT_TARGET": settings.dbt_target,
            "LAKE_URL": settings.lake_url,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    catalog = urlparse(settings.catalog_uri)
    if catalog.scheme.startswith("postgres") and catalog.password:
        env["PGPASSWORD"] = unquote(catalog.password)  # for DuckDB's postgres_scanner (libpq)
    if settings.s3:
        env["LAKE_S3_ENDPOINT"] = settings.s3.endpoint or ""
        env["AWS_REGION"] = settings.s3.region
        if settings.s3.access_key_id:
            env["AWS_ACCESS_KEY_ID"] = settings.s3.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = settings.s3.secret_access_key or ""
    return env


def summarise_run_results(run_results: Path, warehouse: Path) -> BuildSummary:
    """Counts per resource kind and status from dbt's run_results.json, and what failed."""
    summary = BuildSummary(success=True, warehouse=str(warehouse))
    if not run_results.exists():
        summary.success = False
        summary.failures.append("dbt wrote no run_results.json (it failed before running anything)")
        return summary
    data = json.loads(run_results.read_text())
    counts: dict[str, Counter[str]] = {}
    for res in data.get("results", []):
        kind = res["unique_id"].split(".")[0]
        counts.setdefault(kind, Counter())[res["status"]] += 1
        if res["status"] in {"error", "fail", "runtime error"}:
            summary.success = False
            summary.failures.append(
                f"{res['unique_id']}: {res['status']} — {(res.get('message') or '')[:300]}"
            )
    summary.counts = {k: dict(v) for k, v in counts.items()}
    return summary


def unloaded_sources(settings: Settings) -> list[str]:
    """``source.dataset`` names (dbt source selectors) of registered datasets with no raw table yet."""
    from pyiceberg.exceptions import NoSuchNamespaceError

    from ingest.contracts import load_registry, table_name
    from ingest.lake.tables import RAW_NAMESPACE, open_catalog

    try:
        present = {ident[-1] for ident in open_catalog(settings).list_tables(RAW_NAMESPACE)}
    except NoSuchNamespaceError:  # nothing loaded at all yet
        present = set()
    return [
        f"{src.name}.{ds.name}"
        for src in load_registry().sources
        for ds in src.datasets
        if table_name(src.name, ds.name) not in present
    ]


def build(settings: Settings | None = None, *, select: str | None = None) -> BuildSummary:
    settings = settings or load_settings()
    published = settings.warehouse_path
    published.parent.mkdir(parents=True, exist_ok=True)
    building = published.with_name(published.stem + ".building.duckdb")
    building.unlink(missing_ok=True)
    if published.exists():
        shutil.copy2(published, building)
    work = published.parent / "dbt"
    cmd = [
        str(Path(sys.executable).parent / "dbt"),
        "build",
        "--project-dir",
        str(project_dir()),
        "--profiles-dir",
        str(project_dir()),
        "--target",
        settings.dbt_target,
        "--target-path",
        str(work / "target"),
        "--log-path",
        str(work / "logs"),
    ]
    if select:
        cmd += ["--select", select]
    missing = unloaded_sources(settings)
    if missing:
        # A source that has never landed has no raw table yet: build everything else, and skip
        # (rather than fail) the models that read it until its first load.
        log.warning("not loaded yet, models reading them are skipped: %s", ", ".join(missing))
        cmd += ["--exclude", *(f"source:{name}+" for name in missing)]
    (work / "target" / "run_results.json").unlink(missing_ok=True)
    log.info("dbt build (target %s) into %s", settings.dbt_target, building)
    proc = subprocess.run(cmd, env=dbt_env(settings, building), capture_output=True, text=True, check=False)
    summary = summarise_run_results(work / "target" / "run_results.json", published)
    if proc.returncode != 0 or not summary.success:
        building.unlink(missing_ok=True)
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise WarehouseBuildFailed(
            "dbt build failed; the published warehouse was left as it was.\n"
            + "\n".join(summary.failures)
            + f"\n--- dbt output (last lines) ---\n{tail}\n{proc.stderr[-2000:]}"
        )
    os.replace(building, published)
    log.info("warehouse published at %s (%s)", published, summary.line())
    return summary
