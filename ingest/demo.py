"""``make run``: the whole pipeline through Airflow on the demo district, then a summary.

Starts the source simulator on loopback, initialises Airflow (metadata in ``.airflow/``, SQLite
unless ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` says otherwise), runs every ``ingest_<source>``
DAG and then the ``warehouse`` DAG with ``airflow dags test`` — in dependency order, the order
the Assets would trigger them — prints what landed where, and stops what it started. Offline,
and idempotent: a second run adds no rows.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ingest.airflow_env import airflow_env, dag_test, init_metadata
from ingest.contracts import load_registry, table_name
from ingest.duck import install_extensions
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import RAW_NAMESPACE
from ingest.settings import Settings, load_settings
from ingest.status import collect
from ingest.warehouse import summarise_run_results

EXAMPLE_QUERY = """\
select grid_code, grid_name, residents, residents_60_plus, health_patients, enrolled_students,
       service_requests, incidents, public_facilities, merchants
from marts.mart_grid_profile
order by residents desc limit 5"""


def run_dags(dag_ids: list[str], env: dict[str, str], log_dir: Path, logical: datetime) -> dict[str, str]:
    """``airflow dags test`` each DAG in order; stop at the first that does not succeed."""
    log_dir.mkdir(parents=True, exist_ok=True)
    states: dict[str, str] = {}
    for dag_id in dag_ids:
        print(f"  airflow dags test {dag_id} ...", flush=True)
        result = dag_test(dag_id, logical.isoformat(), env)
        (log_dir / f"{dag_id}.log").write_text(result.output)
        states[dag_id] = result.state
        print(f"    -> {states[dag_id]} (log: {log_dir / f'{dag_id}.log'})", flush=True)
        if states[dag_id] != "success":
            break
    return states


def latest_json(storage: LakeStorage, prefix: str) -> dict | None:
    files = storage.list(prefix)
    return json.loads(storage.read_bytes(files[-1])) if files else None


def print_summary(settings: Settings, states: dict[str, str]) -> bool:
    storage = LakeStorage(settings)
    ok = all(s == "success" for s in states.values())
    print("\n=== Community data lake: summary ===")
    print("DAG runs:   " + ", ".join(f"{d} {s}" for d, s in states.items()))
    print("Raw tables (rows now | this run: received / new / updated / quarantined):")
    rows = {(r.source, r.dataset): r.rows or 0 for r in collect(settings)}
    for source in load_registry().sources:
        for ds in source.datasets:
            run = latest_json(storage, f"audit/runs/{source.name}/{ds.name}/") or {}
            name = f"{RAW_NAMESPACE}.{table_name(source.name, ds.name)}"
            print(
                f"  {name:38} {rows.get((source.name, ds.name), 0):>7} | {run.get('records_received', 0)} / "
                f"{run.get('rows_inserted', 0)} / {run.get('rows_updated', 0)} / {run.get('quarantined', 0)}"
            )
    results = settings.warehouse_path.parent / "dbt" / "target" / "run_results.json"
    if results.exists():
        print("dbt build:  " + summarise_run_results(results, settings.warehouse_path).line())
    from ingest.quality import load_suites

    for suite in load_suites():
        res = latest_json(storage, f"audit/quality/{suite.suite}/")
        if res:
            verdict = "passed" if res["success"] else "FAILED"
            warn = f", {len(res['warnings_failed'])} warning(s)" if res["warnings_failed"] else ""
            print(f"Expectations {suite.suite}: {verdict} ({res['evaluated']} checked{warn})")
    print(f"Lake:       {settings.lake_url}")
    print(f"Catalog:    {settings.catalog_uri}")
    print(f"Warehouse:  {settings.warehouse_path}")
    if ok and settings.warehouse_path.exists():
        print("\nExample query (duckdb " + str(settings.warehouse_path) + "):")
        print("  " + EXAMPLE_QUERY.replace("\n", "\n  "))
        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        try:
            cur = con.execute(EXAMPLE_QUERY)
            names = [d[0] for d in cur.description]
            print("  " + " | ".join(names))
            for row in cur.fetchall():
                print("  " + " | ".join(str(v) for v in row))
        finally:
            con.close()
    return ok


def run_demo(residents: int = 2000, seed: int = 42) -> int:
    from ingest.simulator import District
    from ingest.simulator.feeds import DistrictFeeds

    settings = load_settings()
    install_extensions()
    # Fail fast on a broken source in an interactive run; production keeps the default delay.
    env = airflow_env({"CDL_RETRY_DELAY_SECONDS": "2"})
    print(f"Airflow home {env['AIRFLOW_HOME']}: migrating metadata ...", flush=True)
    init_metadata(env)
    district = District.generate(residents=residents, seed=seed)
    print(f"Simulator: {residents} residents, {len(district.requests())} service requests (seed {seed})")
    dag_ids = [f"ingest_{s.name}" for s in load_registry().sources] + ["warehouse"]
    log_dir = settings.home / "data" / "logs" / "demo"
    # HTTP standards on loopback, registry in PostgreSQL, property in MariaDB, OneRoster drop folder.
    # The demo's source databases are named after the district they hold, so a run of another
    # size or seed (or the tests) never mixes districts in them; the same district is re-synced
    # idempotently, so a second run finds nothing new.
    with DistrictFeeds(
        district,
        dropzone=settings.home / "data" / "dropzone" / "oneroster",
        registry_dsn=os.environ.get("SIM_REGISTRY_DSN")
        or f"postgresql://postgres@127.0.0.1:5432/cdl_demo_registry_{seed}_{residents}",
        property_dsn=os.environ.get("SIM_PROPERTY_DSN")
        or f"mysql://root@127.0.0.1:3306/cdl_demo_property_{seed}_{residents}",
    ) as feeds:
        env.update(feeds.source_env())
        logical = datetime.now(UTC).replace(microsecond=0)
        states = run_dags(dag_ids, env, log_dir, logical)
    ok = print_summary(settings, states)
    return 0 if ok and leak_scan(settings, district, [Path(env["AIRFLOW_HOME"]) / "logs", log_dir]) else 1


def leak_scan(settings: Settings, district, log_dirs: list[Path]) -> bool:
    """Look for every resident's clear ID number, name and phone outside the identity zone."""
    from ingest.privacy.leakscan import identifiers_of, scan_files, scan_warehouse

    needles = identifiers_of(district)
    roots = list(log_dirs)
    if not settings.lake_is_s3:
        lake = Path(settings.lake_url)
        roots.append(lake)
    files, hits = scan_files(roots, needles, skip=[] if settings.lake_is_s3 else [lake / "identity"])
    relations, warehouse_hits = scan_warehouse(settings.warehouse_path, needles)
    hits += warehouse_hits
    verdict = "0 clear identifiers found" if not hits else f"{len(hits)} LEAK(S): " + "; ".join(hits[:5])
    print(
        f"Leak scan:  {len(needles)} ID numbers/names/phones of the district searched in {files} files "
        f"(lake outside identity/, Airflow and demo logs) and {relations} warehouse relations: {verdict}"
    )
    return not hits
