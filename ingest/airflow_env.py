"""Run Airflow commands for the project: AIRFLOW_HOME inside the checkout, DAGs from ``dags/``.

Used by ``ingest demo`` (``make run``), ``make up`` and the end-to-end tests, so all three drive
Airflow the same way. SQLite metadata by default; set ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``
for PostgreSQL (CI does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ingest.settings import PACKAGE_DIR

CHECKOUT = PACKAGE_DIR.parent
WAREHOUSE_POOL = "warehouse"


def airflow_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(CHECKOUT / ".airflow"))
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(CHECKOUT / "dags")
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    env.setdefault("GX_ANALYTICS_ENABLED", "False")
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.update(extra or {})
    if not any(env.get(v) for v in ("CDL_PSEUDONYM_KEY", "CDL_KEYS_FILE", "CDL_KEYS_CONN_ID")):
        env["CDL_KEYS_FILE"] = str(demo_keys_file())
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def demo_keys_file() -> Path:
    """A local demo key pair outside the lake (``.secrets/``, git-ignored, mode 0600).

    For ``make run`` / ``make up`` on one machine only; production sets CDL_KEYS_CONN_ID (an
    Airflow connection) or CDL_PSEUDONYM_KEY / CDL_IDENTITY_KEY from a secrets manager.
    """
    from ingest.privacy import ensure_demo_keys

    return ensure_demo_keys(CHECKOUT / ".secrets" / "demo-keys.env")


def airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def airflow(
    *args: str, env: dict[str, str], check: bool = True, timeout: float | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [airflow_bin(), *args], env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"`airflow {' '.join(args)}` failed with exit code {proc.returncode}:\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def init_metadata(env: dict[str, str]) -> None:
    """Create/upgrade the metadata database and the pool the warehouse writer uses."""
    airflow("db", "migrate", env=env)
    airflow("pools", "set", WAREHOUSE_POOL, "1", "One warehouse writer at a time", env=env)


@dataclass
class DagTestResult:
    dag_id: str
    state: str
    run_id: str | None
    output: str


def dag_test(dag_id: str, logical_date: str, env: dict[str, str]) -> DagTestResult:
    """Run one DagRun in-process with ``airflow dags test`` and report how it ended."""
    proc = airflow("dags", "test", dag_id, logical_date, env=env, check=False)
    output = proc.stdout + proc.stderr
    state, run_id = "failed", None
    for line in reversed(output.splitlines()):
        if "DagRun Finished:" in line and f"dag_id={dag_id}," in line:
            state = line.split("state=", 1)[1].split(",")[0].strip()
            run_id = line.split("run_id=", 1)[1].split(",")[0].strip()
            break
    if proc.returncode != 0:
        state = "failed"
    return DagTestResult(dag_id=dag_id, state=state, run_id=run_id, output=output)


def task_states(dag_id: str, run_id: str, env: dict[str, str]) -> dict[str, str]:
    proc = airflow("tasks", "states-for-dag-run", dag_id, run_id, "--output", "json", env=env)
    rows = json.loads(proc.stdout[proc.stdout.index("[") :])
    return {row["task_id"]: row["state"] for row in rows}
