"""Seeded synthetic district served over HTTP on loopback (tests and demos only).

Production code never imports this package. The district model (:mod:`.district`) is separate
from the protocol servers (:mod:`.open311`); :mod:`.server` runs them with uvicorn.
"""

from ingest.simulator.dirt import DirtConfig
from ingest.simulator.district import District
from ingest.simulator.open311 import Fault, create_open311_app
from ingest.simulator.server import SimulatorServer

__all__ = ["DirtConfig", "District", "Fault", "SimulatorServer", "create_open311_app"]
