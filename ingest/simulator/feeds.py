"""Every system of one district at once: what ``make run`` and the end-to-end tests start.

* the HTTP standards (Open311, CKAN, FHIR, HSDS, Socrata) on one loopback server,
* the population registry in PostgreSQL and the property/commercial system in MariaDB
  (real servers on this machine; one database each, created if missing),
* OneRoster bundles dropped into a folder (what a school's SIS export job would do).

``sync()`` brings the databases and the drop folder up to the district's clock; call it after
``district.advance()`` (``advance()`` here does both).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from ingest.contracts import load_registry
from ingest.simulator import oneroster, property_db, registry_db
from ingest.simulator.district import District
from ingest.simulator.server import SimulatorServer, prefix_of

DEFAULT_REGISTRY_DSN = "postgresql://postgres@127.0.0.1:5432/cdl_registry"
DEFAULT_PROPERTY_DSN = "mysql://root@127.0.0.1:3306/cdl_property"


def _dsns(registry_dsn: str | None, property_dsn: str | None) -> dict[str, str]:
    """The SQL systems' DSNs: as given, else SIM_REGISTRY_DSN / SIM_PROPERTY_DSN, else this machine's."""
    return {
        "registry": registry_dsn or os.environ.get("SIM_REGISTRY_DSN", DEFAULT_REGISTRY_DSN),
        "property": property_dsn or os.environ.get("SIM_PROPERTY_DSN", DEFAULT_PROPERTY_DSN),
    }


def source_env(
    http_base: str, dropzone: str, registry_dsn: str | None = None, property_dsn: str | None = None
) -> dict[str, str]:
    """``{url_env: url}`` for every registered source, given where the simulator's systems are."""
    dsns = _dsns(registry_dsn, property_dsn)
    env = {}
    for source in load_registry().sources:
        if source.connector == "sql":
            env[source.connection.url_env] = dsns[source.name]
        elif source.connector == "oneroster":
            env[source.connection.url_env] = dropzone
        else:
            env[source.connection.url_env] = http_base + prefix_of(source.connector)
    return env


class DistrictFeeds:
    def __init__(
        self,
        district: District,
        *,
        dropzone: Path,
        registry_dsn: str | None = None,
        property_dsn: str | None = None,
        **server_options: object,
    ) -> None:
        self.district = district
        self.dropzone = Path(dropzone)
        dsns = _dsns(registry_dsn, property_dsn)
        self.registry_dsn, self.property_dsn = dsns["registry"], dsns["property"]
        self.dirt = server_options.get("dirt")
        self.server = SimulatorServer(district, **server_options)  # type: ignore[arg-type]

    def sync(self) -> dict[str, object]:
        """Databases and drop folder as of the district clock: what changed in each."""
        return {
            "registry": registry_db.sync(self.district, self.registry_dsn, dirt=self.dirt),
            "property": property_db.sync(self.district, self.property_dsn, dirt=self.dirt),
            "oneroster": oneroster.publish(self.district, self.dropzone, dirt=self.dirt),
        }

    def advance(self, days: float = 1.0, **kwargs: object) -> dict[str, object]:
        changes: dict[str, object] = {"open311": self.district.advance(days, **kwargs)}  # type: ignore[arg-type]
        changes.update(self.sync())
        return changes

    def source_env(self) -> dict[str, str]:
        """``{url_env: url}`` pointing every registered source at this district."""
        return source_env(self.server.base_url, str(self.dropzone), self.registry_dsn, self.property_dsn)

    def start(self) -> DistrictFeeds:
        self.dropzone.mkdir(parents=True, exist_ok=True)
        self.sync()
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> DistrictFeeds:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
