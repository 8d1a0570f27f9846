"""Placeholder: writes OneRoster 1.1 CSV bundles into a drop folder (being written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def publish(district: Any, dropzone: Path, dirt: Any = None) -> Path | None:
    return None
