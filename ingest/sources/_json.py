"""JSON page checks shared by the REST connectors' ``parse``."""

from __future__ import annotations

import json
from typing import Any

from ingest.sources import SourceError


def load_page(payload: bytes, *, source: str, label: str) -> Any:
    """The decoded payload; a payload that is not JSON (a page cut short) is a SourceError."""
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise SourceError(
            f"{source}: {label}: the response is not valid JSON ({exc}); "
            f"{len(payload)} bytes received — the page may be truncated. "
            "Nothing from this run was committed; re-run once the source serves whole pages."
        ) from None


def array_of_objects(body: Any, *, source: str, label: str, of: str) -> list[dict[str, Any]]:
    """``body`` if it is a JSON array of objects, else a SourceError naming what was expected
    (``of``, e.g. "objects (GeoReport v2)")."""
    if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
        raise SourceError(f"{source}: {label}: expected a JSON array of {of}, got {type(body).__name__}")
    return body
