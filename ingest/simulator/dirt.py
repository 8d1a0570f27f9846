"""Switchable, deterministic, countable dirt for simulated source data.

Which request gets which dirt is a pure function of ``(seed, kind, request_id)`` (a keyed hash),
so the same record is dirty the same way on every page, every call and every run. What was actually
served is recorded in a :class:`DirtLog` (``district.dirt_log``) so tests can count what a loader
did with it; :func:`plan_dirt` (``district.dirt_plan(config)``) gives the same answer up front.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

MISSING_FIELDS: tuple[str, ...] = ("service_code", "requested_datetime")
UNPARSEABLE_DATE = "2026-13-45T99:00"
BAD_DATE_UNPARSEABLE = "unparseable_updated_datetime"
BAD_DATE_FUTURE = "future_requested_datetime"


@dataclass(frozen=True)
class DirtConfig:
    """Dirt to inject into served records. Everything is off by default.

    - ``duplicate_rate``: share of records served twice in a row (the copy lands on the same page,
      or first thing on the next page when the original is a page's last row).
    - ``missing_field_rate``: share of records with a required field dropped (``service_code`` or
      ``requested_datetime``, chosen per record).
    - ``bad_date_rate``: share of records with a bad date: either ``updated_datetime`` replaced by
      the unparseable ``"2026-13-45T99:00"`` or ``requested_datetime`` moved 1-30 days beyond the
      district clock.
    - ``new_column``: every record gains an extra ``satisfaction_score`` field (1-5 when closed,
      null when open).
    - ``truncated_page``: this 1-based page number of ``requests.json`` is served with its JSON body
      cut off mid-document (HTTP 200, valid Content-Length, cut at a UTF-8 character boundary so
      the body decodes as text but not as JSON). ``truncated_times`` limits that to the
      first n times the page is served (None = every time).
    - ``dropped_column``: this field is left out of every record (schema drift: a missing column).
    - ``retyped_column``: this field's value is served wrapped in an object ``{"value": v}``
      (schema drift: a type change).
    - ``malformed_id_rate``: share of person records (registry, FHIR, OneRoster, work orders)
      whose resident ID number is served with a wrong check character — see
      :func:`malform_id` (Open311 ignores it).
    - ``seed``: hash key; defaults to the district seed.

    The other standards' servers use the same knobs through :func:`dirty` (``duplicate_rate``,
    ``missing_field_rate``, ``bad_date_rate`` = an out-of-range date), keyed by their own record id.
    """

    duplicate_rate: float = 0.0
    missing_field_rate: float = 0.0
    bad_date_rate: float = 0.0
    new_column: bool = False
    truncated_page: int | None = None
    truncated_times: int | None = None
    dropped_column: str | None = None
    retyped_column: str | None = None
    malformed_id_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "missing_field_rate", "bad_date_rate", "malformed_id_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.truncated_page is not None and self.truncated_page < 1:
            raise ValueError("truncated_page is 1-based")

    @property
    def touches_records(self) -> bool:
        return bool(
            self.missing_field_rate
            or self.bad_date_rate
            or self.new_column
            or self.dropped_column
            or self.retyped_column
        )


def _fraction(seed: int, kind: str, request_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}|{kind}|{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


_RATES = {
    "duplicate": "duplicate_rate",
    "missing": "missing_field_rate",
    "bad-date": "bad_date_rate",
    "malformed-id": "malformed_id_rate",
}


def dirty(config: DirtConfig | None, seed: int, kind: str, key: str) -> bool:
    """Whether record ``key`` gets dirt ``kind`` (duplicate, missing, bad-date, malformed-id).

    A pure function of (seed, kind, key), so a record is dirty the same way on every call.
    """
    if config is None:
        return False
    rate = getattr(config, _RATES[kind])
    return rate > 0 and _fraction(config.seed if config.seed is not None else seed, kind, key) < rate


def malform_id(id_number: str) -> str:
    """The ID number with a wrong check character (what a typo in the last digit looks like)."""
    check = id_number[-1].upper()
    wrong = "0123456789X"[("0123456789X".index(check) + 1) % 11]
    return id_number[:-1] + wrong


@dataclass(frozen=True, slots=True)
class RecordDirt:
    duplicate: bool = False
    missing_field: str | None = None
    bad_date: str | None = None

    @property
    def clean(self) -> bool:
        return not (self.duplicate or self.missing_field or self.bad_date)


_CLEAN = RecordDirt()


def record_dirt(config: DirtConfig, seed: int, request_id: str) -> RecordDirt:
    """The dirt a given record gets under ``config`` (pure function)."""
    key = config.seed if config.seed is not None else seed
    duplicate = config.duplicate_rate > 0 and _fraction(key, "duplicate", request_id) < config.duplicate_rate
    missing = None
    if config.missing_field_rate > 0 and _fraction(key, "missing", request_id) < config.missing_field_rate:
        missing = MISSING_FIELDS[int(_fraction(key, "missing-which", request_id) * len(MISSING_FIELDS))]
    bad = None
    if config.bad_date_rate > 0 and _fraction(key, "bad-date", request_id) < config.bad_date_rate:
        which = _fraction(key, "bad-date-which", request_id) < 0.5
        bad = BAD_DATE_UNPARSEABLE if which else BAD_DATE_FUTURE
    if not (duplicate or missing or bad):
        return _CLEAN
    return RecordDirt(duplicate, missing, bad)


def plan_dirt(config: DirtConfig, seed: int, request_ids: list[str]) -> dict[str, dict[str, str]]:
    """``{kind: {request_id: detail}}`` for kinds duplicate, missing_field, bad_date, new_column."""
    plan: dict[str, dict[str, str]] = {"duplicate": {}, "missing_field": {}, "bad_date": {}, "new_column": {}}
    for request_id in request_ids:
        d = record_dirt(config, seed, request_id)
        if d.duplicate:
            plan["duplicate"][request_id] = "served twice"
        if d.missing_field:
            plan["missing_field"][request_id] = d.missing_field
        if d.bad_date:
            plan["bad_date"][request_id] = d.bad_date
        if config.new_column:
            plan["new_column"][request_id] = "satisfaction_score"
    return plan


@dataclass
class DirtLog:
    """What dirt was actually served (per request id), accumulated across calls until reset()."""

    duplicated: Counter[str] = field(default_factory=Counter)  # id -> extra copies served
    missing_field: dict[str, str] = field(default_factory=dict)  # id -> dropped field
    bad_date: dict[str, str] = field(default_factory=dict)  # id -> BAD_DATE_* kind
    new_column: set[str] = field(default_factory=set)  # ids served with satisfaction_score
    truncated_pages: list[dict[str, Any]] = field(default_factory=list)  # {page, page_size, rows, query}
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reset(self) -> None:
        with self._lock:
            self.duplicated.clear()
            self.missing_field.clear()
            self.bad_date.clear()
            self.new_column.clear()
            self.truncated_pages.clear()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "duplicated": len(self.duplicated),
                "duplicate_copies": sum(self.duplicated.values()),
                "missing_field": len(self.missing_field),
                "bad_date": len(self.bad_date),
                "new_column": len(self.new_column),
                "truncated_pages": len(self.truncated_pages),
            }

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "duplicated": dict(self.duplicated),
                "missing_field": dict(self.missing_field),
                "bad_date": dict(self.bad_date),
                "new_column": sorted(self.new_column),
                "truncated_pages": list(self.truncated_pages),
            }

    def record(self, request_id: str, dirt: RecordDirt, new_column: bool, copies: int = 0) -> None:
        with self._lock:
            if copies:
                self.duplicated[request_id] += copies
            if dirt.missing_field:
                self.missing_field[request_id] = dirt.missing_field
            if dirt.bad_date:
                self.bad_date[request_id] = dirt.bad_date
            if new_column:
                self.new_column.add(request_id)

    def record_truncation(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.truncated_pages.append(entry)


class DirtApplier:
    """Applies a :class:`DirtConfig` to pre-serialised records (used by the HTTP servers)."""

    def __init__(self, config: DirtConfig | None, seed: int, log: DirtLog) -> None:
        self.config = config or DirtConfig()
        self.seed = seed
        self.log = log
        self._cache: dict[str, RecordDirt] = {}
        self._truncations = 0
        self._lock = threading.Lock()

    def dirt_of(self, request_id: str) -> RecordDirt:
        d = self._cache.get(request_id)
        if d is None:
            d = record_dirt(self.config, self.seed, request_id)
            self._cache[request_id] = d
        return d

    def expand_duplicates(self, records: list[Any]) -> list[tuple[Any, bool]]:
        """Records as served: each duplicated one followed by its copy. Items are (record, is_copy)."""
        if not self.config.duplicate_rate:
            return [(r, False) for r in records]
        out: list[tuple[Any, bool]] = []
        for r in records:
            out.append((r, False))
            if self.dirt_of(r.request_id).duplicate:
                out.append((r, True))
        return out

    def render(
        self, request_id: str, data: dict[str, Any], body: bytes, clock: datetime, copy: bool = False
    ) -> bytes:
        """The JSON bytes to serve for one record, logging the dirt applied."""
        d = self.dirt_of(request_id)
        if d.clean and not (
            self.config.new_column or self.config.dropped_column or self.config.retyped_column
        ):
            return body
        self.log.record(request_id, d, self.config.new_column, copies=1 if copy else 0)
        if not self.config.touches_records:
            return body
        out = dict(data)
        if d.missing_field:
            out.pop(d.missing_field, None)
        if d.bad_date == BAD_DATE_UNPARSEABLE:
            out["updated_datetime"] = UNPARSEABLE_DATE
        elif d.bad_date == BAD_DATE_FUTURE and "requested_datetime" in out:
            days = 1 + int(_fraction(self.seed, "future-days", request_id) * 30)
            out["requested_datetime"] = (clock + timedelta(days=days)).isoformat(timespec="seconds")
        if self.config.new_column:
            score = 1 + int(_fraction(self.seed, "satisfaction", request_id) * 5)
            out["satisfaction_score"] = score if out.get("status") == "closed" else None
        if self.config.dropped_column:
            out.pop(self.config.dropped_column, None)
        if self.config.retyped_column and out.get(self.config.retyped_column) is not None:
            out[self.config.retyped_column] = {"value": out[self.config.retyped_column]}
        return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()

    def maybe_truncate(self, page: int, body: bytes, rows: int, page_size: int, query: str) -> bytes:
        """Cut the body of the configured page in half (mid-document), if due."""
        cfg = self.config
        if cfg.truncated_page is None or page != cfg.truncated_page:
            return body
        with self._lock:
            if cfg.truncated_times is not None and self._truncations >= cfg.truncated_times:
                return body
            self._truncations += 1
        self.log.record_truncation({"page": page, "page_size": page_size, "rows": rows, "query": query})
        cut = max(1, len(body) // 2)
        while cut > 1 and (body[cut] & 0xC0) == 0x80:  # cut between characters, not inside one
            cut -= 1
        return body[:cut]
