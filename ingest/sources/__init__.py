"""Source connectors, one module per standard.

A connector knows its protocol and nothing about where rows land: it takes its endpoint,
credentials and window as parameters and yields :class:`Page` objects — the payload exactly as
received (for the landing zone) plus the records parsed from it (for the contract check).
"""

from __future__ import annotations

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


class Connector(Protocol):
    def extract(self, dataset: Dataset, window: Window | None) -> Iterator[Page]: ...

    def close(self) -> None: ...

    @staticmethod
    def parse(payload: bytes, *, label: str) -> Page:
        """Turn a landed payload back into a page (replay reads the landing zone with it)."""
        ...


ConnectorFactory = Callable[..., Connector]


def connector_for(name: str) -> ConnectorFactory:
    """The connector class registered under a contract's ``connector`` name."""
    if name == "open311":
        from ingest.sources.open311 import Open311Connector

        return Open311Connector
    raise SourceError(f"no connector named {name!r}; check the 'connector' field of the source contract")
