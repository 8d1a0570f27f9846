"""Placeholder: the socrata server is being written (mount() adds its routes under PREFIX)."""

from __future__ import annotations

from typing import Any

PREFIX = "/socrata"


def mount(app: Any, district: Any, dirt: Any = None) -> None:
    return None
