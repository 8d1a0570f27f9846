"""Turn the source registry and the expectation suites into Airflow DAGs.

DAG files in ``dags/`` are one-line calls into this module. Nothing here touches the network,
a database or the lake at import time: tasks import the runner lazily and do the I/O when
they run. Airflow is imported only by this module; the rest of the package runs without it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, AssetAny, dag, task

from ingest.airflow_env import WAREHOUSE_POOL
from ingest.contracts import Source, asset_name, load_registry

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
WAREHOUSE_ASSET = Asset("warehouse.marts")

# Retries with exponential backoff. The delay is an operational knob (CDL_RETRY_DELAY_SECONDS):
# `make run` and the end-to-end tests shorten it so a broken source fails in seconds, not minutes.
_RETRY_DELAY = float(os.environ.get("CDL_RETRY_DELAY_SECONDS", "60"))
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-engineering",
    "retries": 3,
    "retry_delay": timedelta(seconds=_RETRY_DELAY),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(seconds=max(_RETRY_DELAY, 20 * _RETRY_DELAY)),
}


def raw_assets(source: Source) -> list[Asset]:
    return [Asset(asset_name(source.name, ds.name)) for ds in source.datasets]


def _run_id(context: dict[str, Any]) -> str:
    return f"{context['dag_run'].run_id}__try{context['ti'].try_number}"


def _window_end(context: dict[str, Any]) -> datetime:
    """End of the data interval; manual runs without one use the run's ``run_after``."""
    end = context.get("data_interval_end") or context["dag_run"].run_after
    return end if end.tzinfo else end.replace(tzinfo=UTC)


def _ingest_doc(source: Source) -> str:
    rows = "\n".join(
        f"| `{d.name}` | {d.disposition} | {', '.join(d.primary_key) or '-'} | "
        f"{d.cursor.field if d.cursor else 'full read'} | {d.freshness_sla} | "
        f"`{asset_name(source.name, d.name)}` |"
        for d in source.datasets
    )
    return f"""
### {source.title}

Loads **{source.name}** ({source.standard}) into the lake's raw zone, one task per dataset.
Each task reads from the saved cursor to the end of this run's data interval, lands the
payloads unchanged, quarantines records that break the contract, and commits rows and cursor
in one Iceberg transaction: a retried or re-run task never duplicates rows.

* **Owner:** {source.owner} — **steward:** {source.steward}
* **Responsible party:** {source.responsible_party}
* **Declared purpose:** {source.purpose}
* **Contract:** `ingest/config/sources/{source.name}.yml`
* **Same thing from a shell:** `ingest run {source.name} --until <ISO time>`

| dataset | write | key | incremental by | freshness SLA | Asset |
|---|---|---|---|---|---|
{rows}

If a task fails, its log says which source, page or record and what to do; nothing from the
failed try is visible in the lake, and the next try resumes from the unchanged cursor.
"""


def build_ingest_dag(source: Source) -> DAG:
    @dag(
        dag_id=f"ingest_{source.name}",
        schedule=source.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["ingest", source.domain, source.connector],
        doc_md=_ingest_doc(source),
        description=source.title,
    )
    def ingest_dag() -> None:
        for ds, asset in zip(source.datasets, raw_assets(source), strict=True):

            @task(task_id=f"load_{ds.name}", outlets=[asset], doc_md=ds.description)
            def load(dataset: str = ds.name, **context: Any) -> dict[str, Any]:
                from ingest.pipeline import run_source

                (report,) = run_source(
                    source.name, until=_window_end(context), datasets=[dataset], run_id=_run_id(context)
                )
                return {
                    "received": report.records_received,
                    "inserted": report.rows_inserted,
                    "updated": report.rows_updated,
                    "unchanged": report.rows_unchanged,
                    "quarantined": report.quarantined,
                    "cursor": report.cursor_after,
                }

            load()

    return ingest_dag()


WAREHOUSE_DOC = """
### Community warehouse

Runs whenever any raw table of the lake is updated (Airflow Assets):

1. `check_raw_*` — Great Expectations suites on the raw tables (`expectations/suites/raw.*.yml`).
   A failed **blocking** expectation fails the task, and nothing downstream runs.
2. `dbt_build` — `dbt build` (models + tests) into a copy of the warehouse, published by an
   atomic rename only if everything passed. Analysts are never locked out.
3. `check_marts_*` — Great Expectations business rules on the marts.

Same thing from a shell: `ingest check raw.open311.service_requests`, `ingest build`, `ingest check`.
"""


def build_warehouse_dag() -> DAG:
    from ingest.quality import load_suites

    registry = load_registry()
    assets = [a for src in registry.sources for a in raw_assets(src)]
    suites = load_suites()

    @dag(
        dag_id="warehouse",
        schedule=AssetAny(*assets),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["warehouse", "dbt", "quality"],
        doc_md=WAREHOUSE_DOC,
        description="dbt build of the community warehouse, gated by Great Expectations",
    )
    def warehouse_dag() -> None:
        def check_task(suite_name: str, task_id: str) -> Any:
            @task(task_id=task_id, doc_md=f"Great Expectations suite `{suite_name}`")
            def check(name: str = suite_name) -> dict[str, Any]:
                from dataclasses import asdict

                from airflow.sdk.exceptions import AirflowSkipException
                from pyiceberg.exceptions import NoSuchTableError

                from ingest.quality import run_suite

                try:
                    return asdict(run_suite(name))
                except NoSuchTableError:
                    # A source that has never landed: nothing to check yet, and dbt skips its models.
                    raise AirflowSkipException(f"{name}: the raw table is not loaded yet") from None

            return check()

        def slug(name: str) -> str:
            return name.split(".", 1)[1].replace(".", "__")

        raw_checks = [
            check_task(s.suite, f"check_raw_{slug(s.suite)}") for s in suites if s.target.kind == "raw"
        ]

        # none_failed: a raw check skipped because its source has not landed yet does not hold
        # back the rest of the warehouse; a failed check does.
        @task(task_id="dbt_build", pool=WAREHOUSE_POOL, outlets=[WAREHOUSE_ASSET], trigger_rule="none_failed")
        def dbt_build() -> dict[str, Any]:
            from ingest.warehouse import build

            summary = build()
            return {"counts": summary.counts, "warehouse": summary.warehouse}

        built = dbt_build()
        mart_checks = [
            check_task(s.suite, f"check_marts_{slug(s.suite)}")
            for s in suites
            if s.target.kind == "warehouse"
        ]
        for check in raw_checks:
            check >> built
        for check in mart_checks:
            built >> check

    return warehouse_dag()


def ingest_dags() -> dict[str, DAG]:
    return {f"ingest_{src.name}": build_ingest_dag(src) for src in load_registry().sources}


STATUS_DOC = """
### Lake status

Every hour (and on demand), one line per dataset: rows, cursor, last successful load, records
quarantined in the last run, and freshness against the contract's SLA. A second task deletes
landing payloads and quarantine files older than each source's `landing_retention`. The task log shows the
table; the return value (XCom) holds the same as JSON. A stale dataset fails the task, so it
shows red in the grid view. Same thing from a shell: `ingest status`.
"""


def build_status_dag() -> DAG:
    @dag(
        dag_id="lake_status",
        schedule="@hourly",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["operations", "status"],
        doc_md=STATUS_DOC,
        description="Per-dataset cursor, last load, quarantine and freshness",
    )
    def status_dag() -> None:
        @task(task_id="report")
        def report() -> list[dict[str, Any]]:
            import logging
            from dataclasses import asdict

            from ingest.settings import load_settings
            from ingest.status import HEADERS, collect

            rows = collect(load_settings())
            log = logging.getLogger("airflow.task")
            log.info(" | ".join(HEADERS))
            for row in rows:
                log.info(" | ".join(row.as_row()))
            stale = [f"{r.source}.{r.dataset}" for r in rows if r.fresh is False]
            if stale:
                raise RuntimeError(f"stale against their freshness SLA: {', '.join(stale)}")
            return [asdict(r) for r in rows]

        @task(task_id="purge_expired_landing", doc_md="Landing/quarantine past each source's retention")
        def purge() -> dict[str, Any]:
            from dataclasses import asdict

            from ingest.retention import purge_expired
            from ingest.settings import load_settings

            return asdict(purge_expired(load_settings()))

        report()
        purge()

    return status_dag()
