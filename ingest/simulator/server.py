"""Run the simulator over HTTP on loopback: in a background thread (tests) or the foreground (CLI)."""

from __future__ import annotations

import importlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from ingest.simulator.dirt import DirtConfig
from ingest.simulator.district import DEFAULT_START, District
from ingest.simulator.open311 import PREFIX, Fault, SimState, create_open311_app

# The other HTTP standards, each mounted on the same loopback server under its own prefix.
# Each module exposes ``PREFIX`` and ``mount(app, district, dirt)``.
HTTP_SYSTEMS: dict[str, str] = {
    "open311": "ingest.simulator.open311",
    "ckan": "ingest.simulator.ckan",
    "fhir": "ingest.simulator.fhir",
    "hsds": "ingest.simulator.hsds",
    "socrata": "ingest.simulator.socrata",
}


def create_app(
    district: District, dirt: DirtConfig | None = None, faults: Iterable[Fault] | None = None
) -> FastAPI:
    """One app serving every HTTP standard of the district (Open311 faults apply to Open311 only)."""
    app = create_open311_app(district, dirt=dirt, faults=faults)
    for name, module in HTTP_SYSTEMS.items():
        if name != "open311":
            importlib.import_module(module).mount(app, district, dirt)
    return app


def prefix_of(system: str) -> str:
    return importlib.import_module(HTTP_SYSTEMS[system]).PREFIX


class _Server(uvicorn.Server):
    """uvicorn server that reports readiness through a callback."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _config(app: FastAPI) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


class SimulatorServer:
    """Serve a district over HTTP on loopback in a background thread.

    Example::

        with SimulatorServer(District.generate(500)) as sim:
            httpx.get(sim.open311_url + "/services.json")

    ``port=0`` picks a free port. ``dirt`` and ``faults`` are passed to :func:`create_open311_app`.
    """

    def __init__(
        self,
        district: District,
        host: str = "127.0.0.1",
        port: int = 0,
        dirt: DirtConfig | None = None,
        faults: Iterable[Fault] | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.district = district
        self.host = host
        self.port = port
        self.app = create_app(district, dirt=dirt, faults=faults)
        self._startup_timeout = startup_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def open311_url(self) -> str:
        return self.base_url + PREFIX

    def url_for(self, system: str) -> str:
        """Base URL of one HTTP standard (a key of ``HTTP_SYSTEMS``) on this server."""
        return self.base_url + prefix_of(system)

    @property
    def state(self) -> SimState:
        return self.app.state.sim

    @property
    def calls(self) -> int:
        """Open311 requests received so far (including faulted ones)."""
        return self.state.calls

    def add_fault(self, fault: Fault) -> None:
        self.state.add_fault(fault)

    def start(self) -> SimulatorServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._socket = _bind(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        self._server = _Server(_config(self.app))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator failed to start on {self.base_url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(
    residents: int = 1000,
    seed: int = 42,
    host: str = "127.0.0.1",
    port: int = 8765,
    start: datetime | None = None,
    days: int = 90,
    dirt: DirtConfig | None = None,
    dropzone: str | None = None,
    advance_every: float = 0.0,
    speed: float = 1.0,
) -> None:
    """Generate a district and feed every system from it until interrupted (Ctrl-C / SIGTERM).

    HTTP standards on ``host:port``, the registry in PostgreSQL and the property system in MariaDB
    (``SIM_REGISTRY_DSN`` / ``SIM_PROPERTY_DSN``, defaults on this machine), OneRoster bundles in
    ``dropzone``. With ``advance_every`` > 0 the district lives: every that many seconds its clock
    moves on by ``speed`` times as long, new records appear and the databases and drop folder follow.
    Prints ``simulator listening on http://HOST:PORT`` (flushed) once ready; ``port=0`` picks a free one.
    """
    import signal
    from pathlib import Path

    from ingest.simulator.feeds import DistrictFeeds

    district = District.generate(residents=residents, seed=seed, start=start or DEFAULT_START, days=days)
    feeds = DistrictFeeds(
        district,
        dropzone=Path(dropzone or "data/dropzone/oneroster"),
        host=host,
        port=port,
        dirt=dirt,
    )

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with feeds:
        base = feeds.server.base_url
        print(f"simulator listening on {base}", flush=True)
        print(
            f"  {len(district.residents)} residents, {len(district.snapshot().records)} requests, "
            f"clock {district.clock.isoformat()}",
            file=sys.stderr,
            flush=True,
        )
        for env, url in feeds.source_env().items():
            print(f"  {env}={url}", file=sys.stderr, flush=True)
        try:
            while True:
                if advance_every > 0:
                    time.sleep(advance_every)
                    changes = feeds.advance(days=advance_every * speed / 86400)
                    print(f"  clock {district.clock.isoformat()}: {changes}", file=sys.stderr, flush=True)
                else:
                    time.sleep(3600)
        except KeyboardInterrupt:
            pass
