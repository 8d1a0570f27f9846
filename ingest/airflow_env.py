"""Run Airflow commands for the project: AIRFLOW_HOME inside the checkout, DAGs from ``dags/``.

Used by ``ingest demo`` (``make run``), ``make up`` and the end-to-end tests, so all three drive
Airflow the same way. SQLite metadata by default; set ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``
for PostgreSQL (CI does).
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


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


def dag_run_state(dag_id: str, run_output: str) -> str:
    """The final state `airflow dags test` reports (it prints the DagRun at the end)."""
    for line in reversed(run_output.splitlines()):
        if "state=" in line and dag_id in line:
            return line.split("state=", 1)[1].split(",")[0].split(">")[0].strip()
    return "unknown"
