"""Shared fixtures. Environment for the whole session is set here, not by patching os.getenv."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Session-wide environment: fast HTTP backoff, no telemetry, nothing written into the checkout.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ["INGEST_HTTP_BACKOFF_INITIAL"] = "0.01"
os.environ["INGEST_HTTP_BACKOFF_MAX"] = "2"
os.environ["INGEST_HTTP_TIMEOUT"] = "5"
# Airflow imported by the tests themselves (DagBag) gets a home of its own, never ~/airflow.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="cdl-airflow-unit-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
for var in ("LAKE_URL", "ICEBERG_CATALOG_URI", "WAREHOUSE_PATH", "SIM_REGISTRY_DSN", "SIM_PROPERTY_DSN"):
    os.environ.pop(var, None)

from ingest.contracts import load_registry  # noqa: E402
from ingest.privacy import ensure_demo_keys  # noqa: E402
from ingest.settings import Settings, load_settings  # noqa: E402

# Every source's endpoint and credential variables: tests say where each source is themselves.
for _source in load_registry().sources:
    for var in (_source.connection.url_env, _source.connection.secret_env):
        if var:
            os.environ.pop(var, None)

# One key pair for the session (subprocesses and Airflow inherit it).
for var in ("CDL_PSEUDONYM_KEY", "CDL_IDENTITY_KEY", "CDL_KEYS_CONN_ID"):
    os.environ.pop(var, None)
os.environ["CDL_KEYS_FILE"] = str(ensure_demo_keys(Path(tempfile.mkdtemp(prefix="cdl-keys-")) / "keys.env"))
from ingest.simulator import District, SimulatorServer, property_db, registry_db  # noqa: E402  # noqa: E402
from ingest.simulator.feeds import DistrictFeeds  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def settings_for(lake: Path | str, warehouse: Path | None = None, **extra: str) -> Settings:
    """Settings for a lake of the test's own (environment otherwise as the session's)."""
    environ = dict(os.environ)
    environ["LAKE_URL"] = str(lake)
    if warehouse is not None:
        environ["WAREHOUSE_PATH"] = str(warehouse)
    environ.update(extra)
    return load_settings(environ)


@pytest.fixture
def lake(tmp_path: Path) -> Settings:
    return settings_for(tmp_path / "lake", tmp_path / "warehouse.duckdb")


@pytest.fixture
def district() -> District:
    """A small district of the test's own (tests advance it, so it is not shared)."""
    return District.generate(residents=400, seed=7)


@pytest.fixture
def simulator(district: District) -> Iterator[SimulatorServer]:
    with SimulatorServer(district) as server:
        yield server


@pytest.fixture
def registry_dsn() -> Iterator[str]:
    """A PostgreSQL database of the test's own for the population registry (dropped afterwards)."""
    dsn = f"postgresql://postgres@127.0.0.1:5432/cdl_t_registry_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    yield dsn
    registry_db.drop_database(dsn)


@pytest.fixture
def property_dsn() -> Iterator[str]:
    """A MariaDB database of the test's own for the property/commercial system (dropped afterwards)."""
    dsn = f"mysql://root@127.0.0.1:3306/cdl_t_property_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    yield dsn
    property_db.drop_database(dsn)


@pytest.fixture
def feeds(
    district: District, tmp_path: Path, registry_dsn: str, property_dsn: str
) -> Iterator[DistrictFeeds]:
    """Every system of the test's district: HTTP on loopback, PostgreSQL, MariaDB, a drop folder."""
    with DistrictFeeds(
        district, dropzone=tmp_path / "dropzone", registry_dsn=registry_dsn, property_dsn=property_dsn
    ) as running:
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class MotoServer:
    """moto's S3 server on loopback: a real S3 HTTP endpoint, in memory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def create_bucket(self, name: str) -> None:
        import boto3
        from botocore.config import Config

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
            region_name="us-east-1",
            config=Config(
                request_checksum_calculation="when_required", response_checksum_validation="when_required"
            ),
        )
        s3.create_bucket(Bucket=name)


@pytest.fixture
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An initialised Airflow: PostgreSQL metadata in CI (the machine's real server), else SQLite."""
    from ingest.airflow_env import airflow_env, init_metadata

    home = tmp_path_factory.mktemp("airflow")
    extra = {"AIRFLOW_HOME": str(home), "CDL_RETRY_DELAY_SECONDS": "1"}
    database = None
    if IN_CI or os.environ.get("CDL_TEST_AIRFLOW_DB") == "postgres":
        import psycopg2

        database = f"cdl_airflow_test_{os.getpid()}"
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"drop database if exists {database}")
            cur.execute(f"create database {database}")
        conn.close()
        extra["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
        )
    env = airflow_env(extra)
    init_metadata(env)
    yield env
    if database:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"drop database if exists {database} with (force)")
        conn.close()
    shutil.rmtree(home, ignore_errors=True)


class FaultMatrix:
    """Collects (fault, promise, rows expected, rows found) from the fault tests into a JSON report."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def record(self, fault: str, promise: str, expected: object, found: object, test: str = "") -> None:
        self.rows.append(
            {
                "fault": fault,
                "promise": promise,
                "expected": expected,
                "found": found,
                "ok": expected == found,
                "test": test,
            }
        )


@pytest.fixture(scope="session")
def fault_matrix() -> Iterator[FaultMatrix]:
    import json

    matrix = FaultMatrix()
    yield matrix
    out = Path(os.environ.get("CDL_FAULT_MATRIX", ROOT / "bench" / "results" / "fault_matrix.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"faults": matrix.rows}, indent=2, ensure_ascii=False, default=str))


class TcpProxy:
    """A loopback TCP proxy that can be cut (connections dropped, port closed) and restored."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                except OSError:
                    pass
            self._conns.clear()
