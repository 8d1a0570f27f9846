"""Source connectors, one module per standard.

A connector knows its protocol and nothing about where rows land: it takes its endpoint,
credentials and window (or resume state) as parameters and yields :class:`Page` objects — the
payload exactly as received (for the landing zone) plus the flat records parsed from it (for the
contract check).

Every connector class is constructed as ``Cls(url, *, api_key=None, source=<source name>)`` and
offers:

* ``extract(dataset, window, state=None)`` — pages for a time window of the dataset's cursor
  field (``window`` is None for datasets without a ``cursor``). Connectors that resume by
  something other than time (a bundle checksum, an ``_id``) read the saved ``state`` string and
  report the new one on each page (``Page.state``); it is committed with the rows.
* ``close()``
* ``parse(payload, *, label, dataset=None) -> Page`` (static) — a landed payload back into a page;
  replay reads the landing zone with it, so it must not need the network.
* ``without(payload, keep_record) -> (payload, removed)`` (static) — the payload minus the records
  ``keep_record`` rejects; ``keep_record`` sees the *flat* record ``parse`` produces (erasure).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ingest.contracts import Dataset


class SourceError(RuntimeError):
    """The source failed in a way the user must act on (message says what and where)."""


@dataclass(frozen=True)
class Window:
    """Half-open interval [since, until) of the dataset's cursor field."""

    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")


@dataclass
class Page:
    payload: bytes
    records: list[dict[str, Any]]
    label: str = field(default="")
    media_type: str = "application/json"
    extension: str = "json"
    # Resume state after this page, for connectors that do not resume by a time cursor
    # (None: unchanged). The last page's state is committed with the run's rows.
    state: str | None = None
    # This page starts a complete snapshot of the dataset (a OneRoster bulk file): keys the table
    # holds that neither it nor the run's later pages list are deleted at commit (merge datasets).
    replaces_all: bool = False


class Connector(Protocol):
    def extract(
        self, dataset: Dataset, window: Window | None, state: str | None = None
    ) -> Iterator[Page]: ...

    def close(self) -> None: ...

    @staticmethod
    def parse(payload: bytes, *, label: str, dataset: Dataset | None = None) -> Page:
        """Turn a landed payload back into a page (replay reads the landing zone with it)."""
        ...

    @staticmethod
    def without(payload: bytes, keep_record: Callable[[dict[str, Any]], bool]) -> tuple[bytes, int]:
        """The payload minus the records ``keep_record`` rejects (erasure requests)."""
        ...


ConnectorFactory = Callable[..., Connector]

# Contract ``connector`` name -> "module:Class". One module per standard; SQL sources share one.
CONNECTORS: dict[str, str] = {
    "open311": "ingest.sources.open311:Open311Connector",
    "sql": "ingest.sources.sql:SqlConnector",
    "ckan": "ingest.sources.ckan:CkanConnector",
    "fhir": "ingest.sources.fhir:FhirConnector",
    "oneroster": "ingest.sources.oneroster:OneRosterConnector",
    "hsds": "ingest.sources.hsds:HsdsConnector",
    "socrata": "ingest.sources.socrata:SocrataConnector",
}


def connector_for(name: str) -> ConnectorFactory:
    """The connector class registered under a contract's ``connector`` name."""
    try:
        module, attr = CONNECTORS[name].split(":")
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise SourceError(
            f"no connector named {name!r}; check the 'connector' field of the source contract "
            f"(known: {known})"
        ) from None
    return getattr(importlib.import_module(module), attr)
