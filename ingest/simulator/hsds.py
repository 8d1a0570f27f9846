"""Placeholder: the hsds server is being written (mount() adds its routes under PREFIX)."""

from __future__ import annotations

from typing import Any

PREFIX = "/hsds"


def mount(app: Any, district: Any, dirt: Any = None) -> None:
    return None
