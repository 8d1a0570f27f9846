"""Placeholder: seeds the property and commercial system in MariaDB (being written)."""

from __future__ import annotations

from typing import Any


def sync(district: Any, dsn: str, dirt: Any = None) -> dict[str, int]:
    return {}
