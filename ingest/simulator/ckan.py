"""Placeholder: the ckan server is being written (mount() adds its routes under PREFIX)."""

from __future__ import annotations

from typing import Any

PREFIX = "/ckan"


def mount(app: Any, district: Any, dirt: Any = None) -> None:
    return None
