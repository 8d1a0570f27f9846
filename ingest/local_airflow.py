"""``make up``: Airflow (api-server, scheduler, dag-processor, triggerer) plus the simulator.

Everything runs on loopback from the project's own ``.airflow`` home; the UI is at
http://localhost:8080 (all users are admins locally: ``SIMPLE_AUTH_MANAGER_ALL_ADMINS``).
Ctrl-C stops every process it started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from ingest.airflow_env import airflow_bin, airflow_env, init_metadata
from ingest.settings import PACKAGE_DIR
from ingest.simulator.feeds import source_env

PROJECT_HOME = PACKAGE_DIR.parent

SIMULATOR_PORT = 8765
COMPONENTS = (["api-server", "--port", "8080"], ["scheduler"], ["dag-processor"], ["triggerer"])


def up(residents: int = 2000) -> int:
    env = airflow_env()
    sim_url = f"http://127.0.0.1:{SIMULATOR_PORT}"
    dropzone = str(PROJECT_HOME / "data" / "dropzone" / "oneroster")
    for name, url in source_env(sim_url, dropzone).items():
        env.setdefault(name, url)
    print(f"Airflow home {env['AIRFLOW_HOME']}: migrating metadata ...", flush=True)
    init_metadata(env)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ingest.simulator",
                "--residents",
                str(residents),
                "--port",
                str(SIMULATOR_PORT),
                "--dropzone",
                dropzone,
                # A living district: every minute of wall time it lives an hour, so each hourly DAG
                # run finds new requests, encounters, incidents, moves and work orders.
                "--advance-every",
                "60",
                "--speed",
                "60",
            ],
            env=env,
        )
    ]
    procs += [subprocess.Popen([airflow_bin(), *args], env=env) for args in COMPONENTS]
    print(
        "\nAirflow UI: http://localhost:8080 — DAGs ingest_* and warehouse (unpause and trigger them)."
        f"\nSimulator: {sim_url} — Ctrl-C stops everything.\n",
        flush=True,
    )

    def stop(*_: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        failed = [p.args for p in procs if p.poll() is not None]
        print(f"stopped because a component exited: {failed}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "up":
    sys.exit(up())
