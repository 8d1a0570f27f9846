"""Socrata SODA 2.1 server for the district police station's incident reports (警情).

Route (JSON only): ``GET /socrata/resource/inc4-dnt1.json`` — the public-security sub-bureau's
incident dataset as its Socrata-based data platform publishes it, with enough SoQL for an
incremental loader:

- ``$select``: ``:*,*`` (system fields + columns), ``*``, ``:*`` or a plain comma-separated list
  of field names (system fields ``:id``, ``:version``, ``:created_at``, ``:updated_at`` included).
- ``$where``: comparisons of ``:updated_at``, ``:created_at`` (fixed timestamps) or ``:id`` with a
  quoted literal (``>``, ``>=``, ``<``, ``<=``, ``=``, ``!=``), joined by ``AND``. Anything else
  is answered like Socrata does: HTTP 400 ``{"code", "error": true, "message", "data"}``.
- ``$order``: ``:id``, ``:updated_at``, ``:created_at`` or ``incident_id``, optionally ``ASC`` /
  ``DESC``, comma-separated. Default ``:id``.
- ``$limit`` (default 1000, at most 50000) and ``$offset``.
- ``field=value`` simple equality filters on served fields.

The response is a JSON array in Socrata's layout (one object a line, ``\\n,`` between them,
null fields left out, numbers as strings, floating timestamps without a zone, fixed timestamps
in UTC with ``Z``) plus the ``X-SODA2-Fields`` / ``X-SODA2-Types`` headers.

The source system records where each incident happened as precisely as the dispatcher knew it:
a ``location`` point (building coordinates for incidents at a home) and a building-level
``address``, next to the grid / community / street codes and the road. Keeping the precise point
out of the lake is the loader's job (see :mod:`ingest.sources.socrata`).

Timeline: incidents are drawn day by day from ``(seed, day)`` — independent of how the clock got
where it is — and each carries its whole life (reported → dispatched → closed). A record is visible
once it was reported at or before ``district.clock`` and shows its latest status at that time; every
status change bumps ``:updated_at``. :func:`incidents` is the ground truth the tests count against.

Dirt (:class:`~ingest.simulator.dirt.DirtConfig`, keyed by incident id through
:func:`~ingest.simulator.dirt.dirty`): duplicates (a record served twice in a row), a missing
required field (``incident_type`` or ``reported_at``), an out-of-range date (``reported_at`` 1-30
days after the clock), a reporter ID number with a wrong check character. :func:`dirt_plan` says
up front which incidents get which.

Faults: :func:`add_fault` (or ``POST /socrata/_sim/faults?status=503&count=1&retry_after=``) makes
the next calls answer an error, for the retry tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from random import Random
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ingest.simulator.dirt import DirtConfig, dirty, malform_id
from ingest.simulator.district import TZ, Building, District, Household, Resident
from ingest.simulator.faults import Fault, FaultCounters, FaultQueue

PREFIX = "/socrata"
DATASET_ID = "inc4-dnt1"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 50000
INCIDENTS_PER_RESIDENT_YEAR = 1.0
SYSTEM_FIELDS = (":id", ":version", ":created_at", ":updated_at")
MISSING_FIELDS = ("incident_type", "reported_at")
JSON_MEDIA = "application/json;charset=utf-8"

# (field, SODA 2 type) in served order; the loader's contract declares the same fields.
FIELDS: tuple[tuple[str, str], ...] = (
    (":id", "meta_data"),
    (":version", "meta_data"),
    (":created_at", "meta_data"),
    (":updated_at", "meta_data"),
    ("incident_id", "text"),
    ("incident_type", "text"),
    ("incident_type_name", "text"),
    ("category", "text"),
    ("priority", "number"),
    ("status", "text"),
    ("channel", "text"),
    ("reported_at", "floating_timestamp"),
    ("dispatched_at", "floating_timestamp"),
    ("closed_at", "floating_timestamp"),
    ("disposition", "text"),
    ("summary", "text"),
    ("police_station", "text"),
    ("street_code", "text"),
    ("community_code", "text"),
    ("grid_code", "text"),
    ("road", "text"),
    ("location_type", "text"),
    ("at_residence", "checkbox"),
    ("address", "text"),
    ("location", "point"),
    ("reporter_name", "text"),
    ("reporter_phone", "text"),
    ("reporter_id_number", "text"),
)
FIELD_TYPES = dict(FIELDS)
USER_FIELDS = tuple(f for f, _ in FIELDS if not f.startswith(":"))


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentType:
    code: str
    name: str
    category: str
    weight: float
    priority: int
    close_minutes: tuple[int, int]
    places: tuple[tuple[str, float], ...]  # (location_type, weight)
    summaries: tuple[str, ...]
    dispositions: tuple[str, ...]


DAY = 24 * 60
INCIDENT_TYPES: tuple[IncidentType, ...] = (
    IncidentType("NOISE", "噪声扰民", "public_order", 0.22, 3, (20, 120),
                 (("residence", 0.85), ("shop", 0.15)),
                 ("报警人称楼上住户深夜持续发出噪声。",
                  "报警人反映邻居装修噪声扰民。", "报警人称楼下商铺音响声音过大。"),
                 ("现场劝导，噪声已停止。", "已调解处理。", "已责令整改。")),
    IncidentType("DISPUTE", "邻里纠纷", "civil_dispute", 0.16, 2, (30, 300),
                 (("residence", 0.6), ("compound", 0.4)),
                 ("报警人称与邻居因漏水问题发生争执。",
                  "报警人称与邻居因停车位发生口角。", "报警人称邻居堆放杂物占用楼道。"),
                 ("现场调解成功。", "已移交人民调解委员会。", "双方达成和解。")),
    IncidentType("DOMESTIC", "家庭纠纷", "civil_dispute", 0.05, 2, (40, 360),
                 (("residence", 1.0),),
                 ("报警人称家庭成员之间发生争吵。", "报警人称家中发生纠纷，请求民警到场。"),
                 ("现场调解，双方情绪平稳。", "已出具告诫书。", "已转介社区跟进。")),
    IncidentType("THEFT", "盗窃", "criminal", 0.13, 2, (DAY, 10 * DAY),
                 (("residence", 0.35), ("compound", 0.35), ("shop", 0.3)),
                 ("报警人称电动自行车被盗。", "报警人称家中财物被盗。", "报警人称店内商品被盗。"),
                 ("已立案侦查。", "被盗财物已追回。", "经核查不予立案。")),
    IncidentType("FRAUD", "电信网络诈骗报案", "criminal", 0.10, 2, (2 * DAY, 20 * DAY),
                 (("residence", 1.0),),
                 ("报警人称接到冒充客服电话后被骗转账。",
                  "报警人称网购退款被骗。", "报警人称被冒充公检法人员诈骗。"),
                 ("已立案侦查。", "涉案资金已止付冻结。", "已移交反诈中心。")),
    IncidentType("TRAFFIC", "交通事故", "traffic", 0.14, 1, (40, 240),
                 (("road", 1.0),),
                 ("两车发生刮擦，无人员受伤。", "非机动车与行人发生碰撞。", "车辆倒车时碰撞路边设施。"),
                 ("已按简易程序处理。", "已移交交警大队。", "双方自行协商解决。")),
    IncidentType("FIRE_ALARM", "火警", "fire", 0.05, 1, (15, 90),
                 (("residence", 0.7), ("shop", 0.3)),
                 ("报警人称楼道内有烟雾。", "报警人称厨房起火。", "报警人称电动车充电时冒烟。"),
                 ("经核实为误报。", "明火已扑灭，无人员伤亡。", "已移交消防部门调查。")),
    IncidentType("SUSPICIOUS", "可疑情况", "public_order", 0.07, 2, (20, 120),
                 (("compound", 0.6), ("road", 0.4)),
                 ("报警人称小区内有陌生人逐户敲门。", "报警人称有人在车辆旁徘徊。"),
                 ("经核查无异常。", "已盘查并登记。")),
    IncidentType("ASSISTANCE", "求助", "assistance", 0.08, 3, (30, 600),
                 (("public_place", 0.6), ("road", 0.4)),
                 ("报警人称家中老人走失。", "报警人称钱包遗失。", "报警人称儿童与家长走散。"),
                 ("走失人员已找回。", "遗失物品已找回。", "已登记备案。")),
)  # fmt: skip
# Accounts that only fit one kind of place (the rest fit every place of their type).
_PLACE_SUMMARIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("NOISE", "residence"): ("报警人称楼上住户深夜持续发出噪声。", "报警人反映邻居装修噪声扰民。"),
    ("NOISE", "shop"): ("报警人称楼下商铺音响声音过大。",),
    ("THEFT", "residence"): ("报警人称家中财物被盗。",),
    ("THEFT", "compound"): ("报警人称电动自行车被盗。",),
    ("THEFT", "shop"): ("报警人称店内商品被盗。",),
    ("FIRE_ALARM", "residence"): (
        "报警人称楼道内有烟雾。",
        "报警人称厨房起火。",
        "报警人称电动车充电时冒烟。",
    ),
    ("FIRE_ALARM", "shop"): ("报警人称商铺内电线冒烟。",),
}
TYPE_BY_CODE = {t.code: t for t in INCIDENT_TYPES}
_TYPE_CUM = tuple(accumulate(t.weight for t in INCIDENT_TYPES))
CHANNELS = ("110", "walk_in", "online", "patrol")
_CHANNEL_WEIGHTS = {
    "default": (0.72, 0.10, 0.08, 0.10),
    "FRAUD": (0.40, 0.40, 0.20, 0.0),
    "TRAFFIC": (0.85, 0.0, 0.0, 0.15),
    "SUSPICIOUS": (0.70, 0.0, 0.0, 0.30),
}
STATUSES = ("reported", "dispatched", "closed")
# Police calls peak in the evening.
_HOUR_CUM = tuple(
    accumulate(
        (2.0, 1.5, 1.0, 0.7, 0.5, 0.5, 0.8, 1.5, 2.5, 3.5, 4.0, 4.0,
         4.0, 3.8, 3.8, 4.0, 4.2, 4.5, 5.0, 5.5, 5.8, 5.5, 4.5, 3.0)
    )
)  # fmt: skip
_ROW_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyz"


def _hash(*parts: object) -> bytes:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()


def _code(digest: bytes, n: int, offset: int = 0) -> str:
    return "".join(_ROW_ALPHABET[b % len(_ROW_ALPHABET)] for b in digest[offset : offset + n])


def fixed(at: datetime) -> str:
    """A Socrata fixed timestamp: UTC, milliseconds, ``Z`` (e.g. ``2026-03-01T02:00:00.000Z``)."""
    utc = at.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


def floating(at: datetime) -> str:
    """A Socrata floating timestamp in the station's local time (+08:00), no zone."""
    local = at.astimezone(TZ)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f".{local.microsecond // 1000:03d}"


# --------------------------------------------------------------------------------------------
# The incident model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident with its whole (partly future) life."""

    incident_id: str
    row_id: str
    kind: IncidentType
    channel: str
    location_type: str
    building: Building
    household: Household
    station: str
    road: str
    address: str
    lat: float
    long: float
    summary: str
    disposition: str
    reporter: Resident | None
    events: tuple[datetime, ...]  # reported, dispatched, closed (aware, millisecond precision)

    def version_at(self, clock: datetime) -> int | None:
        """Index of the latest status at ``clock`` (None: not reported yet)."""
        if self.events[0] > clock:
            return None
        return sum(1 for at in self.events if at <= clock) - 1

    def render(self, version: int) -> dict[str, Any]:
        """The record as the dataset serves it at ``version`` (null fields left out, like SODA)."""
        ev = self.events
        rec: dict[str, Any] = {
            ":id": self.row_id,
            ":version": "rv-{}.{}-{}".format(*(_code(_hash(self.row_id, version), 4, k) for k in (0, 4, 8))),
            ":created_at": fixed(ev[0]),
            ":updated_at": fixed(ev[version]),
            "incident_id": self.incident_id,
            "incident_type": self.kind.code,
            "incident_type_name": self.kind.name,
            "category": self.kind.category,
            "priority": str(self.kind.priority),
            "status": STATUSES[version],
            "channel": self.channel,
            "reported_at": floating(ev[0]),
        }
        if version >= 1:
            rec["dispatched_at"] = floating(ev[1])
        if version >= 2:
            rec["closed_at"] = floating(ev[2])
            rec["disposition"] = self.disposition
        rec.update(
            {
                "summary": self.summary,
                "police_station": self.station,
                "street_code": self.building.street_id,
                "community_code": self.household.community_id,
                "grid_code": self.household.grid_id,
                "road": self.road,
                "location_type": self.location_type,
                "at_residence": self.location_type == "residence",
                "address": self.address,
                "location": {"type": "Point", "coordinates": [self.long, self.lat]},
            }
        )
        if self.reporter is not None:
            rec["reporter_name"] = self.reporter.name
            if self.reporter.mobile:
                rec["reporter_phone"] = self.reporter.mobile
            rec["reporter_id_number"] = self.reporter.id_number
        return rec


def _poisson(rng: Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


class _Model:
    """Incidents of one district, generated day by day and cached per clock value."""

    def __init__(self, district: District) -> None:
        self.district = district
        self.seed = district.seed
        self.start_day: date = district.start.date()
        self.rate = district.resident_count * INCIDENTS_PER_RESIDENT_YEAR / 365.0
        ref = self.start_day
        self.households = list(district.households)
        residents = district.residents_by_id
        self.callers: dict[str, list[Resident]] = {}
        for h in self.households:
            adults = [residents[m] for m in h.member_ids if residents[m].age_on(ref) >= 18]
            self.callers[h.household_id] = adults
        self.pool = [r for r in district.residents if r.age_on(ref) >= 18] or list(district.residents)
        self.names = {r.name for r in district.residents}
        self._clean_texts: dict[tuple[str, ...], list[str]] = {}
        self.stations = {s.street_id: s.name.removesuffix("街道") + "派出所" for s in district.streets}
        self.compounds = district.compounds_by_id
        self.communities = {c.community_id: c for c in district.communities}
        self.days: dict[int, list[Incident]] = {}
        self.snapshots: OrderedDict[datetime, list[tuple[Incident, int]]] = OrderedDict()
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- generation

    def _clean(self, rng: Random, texts: tuple[str, ...], fallback: str) -> str:
        """A text of the vocabulary that provably contains no resident's name (checked once per text)."""
        options = self._clean_texts.get(texts)
        if options is None:
            options = self._clean_texts[texts] = [t for t in texts if not self._mentions_name(t)]
        return rng.choice(options) if options else fallback

    def _mentions_name(self, text: str) -> bool:
        return any(text[i : i + k] in self.names for k in (2, 3, 4) for i in range(len(text) - k + 1))

    def _day(self, day: int) -> list[Incident]:
        rng = Random(f"{self.seed}/socrata/{day}")
        midnight = datetime.combine(self.start_day + timedelta(days=day), datetime.min.time(), TZ)
        n = _poisson(rng, self.rate)
        drafts = []
        for _ in range(n):
            hour = rng.choices(range(24), cum_weights=_HOUR_CUM)[0]
            at = midnight + timedelta(
                hours=hour, seconds=rng.randrange(3600), milliseconds=rng.randrange(1000)
            )
            drafts.append((at, rng.random()))
        drafts.sort()
        out = []
        for i, (reported, _) in enumerate(drafts, start=1):
            out.append(self._incident(rng, f"JQ{midnight:%Y%m%d}{i:04d}", reported))
        return out

    def _incident(self, rng: Random, incident_id: str, reported: datetime) -> Incident:
        kind = rng.choices(INCIDENT_TYPES, cum_weights=_TYPE_CUM)[0]
        places, weights = zip(*kind.places, strict=True)
        place = rng.choices(places, weights=weights)[0]
        channel = rng.choices(CHANNELS, weights=_CHANNEL_WEIGHTS.get(kind.code, _CHANNEL_WEIGHTS["default"]))[
            0
        ]
        household = rng.choice(self.households)
        building = self.district.buildings_by_id[household.building_id]
        compound = self.compounds[building.compound_id]
        jitter = {"residence": 0.0, "compound": 0.0004, "shop": 0.001, "road": 0.0015, "public_place": 0.002}
        lat = round(building.lat + rng.uniform(-1, 1) * jitter[place], 6)
        long = round(building.long + rng.uniform(-1, 1) * jitter[place], 6)
        address = {
            "residence": building.address,
            "compound": compound.address,
            "shop": f"{compound.road}{compound.gate_number + rng.randint(1, 40)}号商铺",
            "road": f"{compound.road}{compound.gate_number}号附近",
            "public_place": self.communities[household.community_id].name + "广场",
        }[place]
        reporter: Resident | None = None
        if channel != "patrol" and rng.random() > 0.08:  # a few callers will not give their name
            home = self.callers.get(household.household_id) or []
            candidates = home if place == "residence" and home else self.pool
            reporter = rng.choice(candidates)
        if channel == "patrol":
            dispatched = reported + timedelta(seconds=rng.randint(30, 120))
        elif kind.priority == 1:
            dispatched = reported + timedelta(seconds=rng.randint(60, 480))
        else:
            dispatched = reported + timedelta(seconds=rng.randint(120, 1800))
        lo, hi = kind.close_minutes
        minutes = rng.uniform(lo, hi)
        if rng.random() < 0.04:  # a long investigation
            minutes += rng.uniform(20, 60) * DAY
        closed = dispatched + timedelta(minutes=minutes)
        ms = (timedelta(milliseconds=rng.randrange(1000)), timedelta(milliseconds=rng.randrange(1000)))
        dispatched = dispatched.replace(microsecond=0) + ms[0]
        closed = closed.replace(microsecond=0) + ms[1]
        digest = _hash(self.seed, "socrata-row", incident_id)
        return Incident(
            incident_id=incident_id,
            row_id=f"row-{_code(digest, 4)}.{_code(digest, 4, 4)}-{_code(digest, 4, 8)}",
            kind=kind,
            channel=channel,
            location_type=place,
            building=building,
            household=household,
            station=self.stations[building.street_id],
            road=compound.road,
            address=address,
            lat=lat,
            long=long,
            summary=self._clean(rng, _PLACE_SUMMARIES.get((kind.code, place), kind.summaries), kind.name),
            disposition=self._clean(rng, kind.dispositions, "已处理。"),
            reporter=reporter,
            events=(reported, dispatched, closed),
        )

    # ---------------------------------------------------------------- views

    def visible(self, clock: datetime) -> list[tuple[Incident, int]]:
        """(incident, version) of every incident reported by ``clock``, ordered by ``:id``."""
        with self.lock:
            hit = self.snapshots.get(clock)
            if hit is not None:
                return hit
            last = (clock.astimezone(TZ).date() - self.start_day).days
            for day in range(0, last + 1):
                if day not in self.days:
                    self.days[day] = self._day(day)
            out = []
            for day in range(0, last + 1):
                for incident in self.days[day]:
                    version = incident.version_at(clock)
                    if version is not None:
                        out.append((incident, version))
            out.sort(key=lambda iv: iv[0].row_id)
            self.snapshots[clock] = out
            while len(self.snapshots) > 4:
                self.snapshots.popitem(last=False)
            return out


_MODELS: weakref.WeakKeyDictionary[District, _Model] = weakref.WeakKeyDictionary()
_MODELS_LOCK = threading.Lock()


def model(district: District) -> _Model:
    with _MODELS_LOCK:
        m = _MODELS.get(district)
        if m is None:
            m = _MODELS[district] = _Model(district)
        return m


def incident_records(district: District, clock: datetime | None = None) -> list[tuple[Incident, int]]:
    """Internal incidents (with reporter link and full timeline) visible at ``clock``, by ``:id``."""
    return model(district).visible(clock or district.clock)


def incidents(district: District, clock: datetime | None = None) -> list[dict[str, Any]]:
    """Ground truth: every incident's clean record as served at ``clock`` (default: now), by ``:id``."""
    return [i.render(v) for i, v in incident_records(district, clock)]


# --------------------------------------------------------------------------------------------
# Dirt
# --------------------------------------------------------------------------------------------


def _dirt_kinds(config: DirtConfig | None, seed: int, incident: Incident) -> dict[str, str]:
    if config is None:
        return {}
    key = incident.incident_id
    kinds: dict[str, str] = {}
    if dirty(config, seed, "duplicate", key):
        kinds["duplicate"] = "served twice"
    if dirty(config, seed, "missing", key):
        kinds["missing_field"] = MISSING_FIELDS[_hash(seed, "missing-which", key)[0] % len(MISSING_FIELDS)]
    if dirty(config, seed, "bad-date", key):
        kinds["bad_date"] = "reported_at after the clock"
    if incident.reporter is not None and dirty(config, seed, "malformed-id", key):
        kinds["malformed_id"] = "reporter_id_number check character"
    return kinds


def dirt_plan(
    district: District, config: DirtConfig, clock: datetime | None = None
) -> dict[str, dict[str, str]]:
    """``{kind: {incident_id: detail}}`` for the incidents visible at ``clock`` (duplicate,
    missing_field, bad_date, malformed_id)."""
    plan: dict[str, dict[str, str]] = {
        "duplicate": {},
        "missing_field": {},
        "bad_date": {},
        "malformed_id": {},
    }
    for incident, _ in incident_records(district, clock):
        for kind, detail in _dirt_kinds(config, district.seed, incident).items():
            plan[kind][incident.incident_id] = detail
    return plan


def _dirty_record(rec: dict[str, Any], kinds: dict[str, str], seed: int, clock: datetime) -> dict[str, Any]:
    out = dict(rec)
    if "missing_field" in kinds:
        out.pop(kinds["missing_field"], None)
    if "bad_date" in kinds and "reported_at" in out:
        days = 1 + _hash(seed, "future-days", rec["incident_id"])[0] % 30
        out["reported_at"] = floating(clock + timedelta(days=days))
    if "malformed_id" in kinds and "reporter_id_number" in out:
        out["reporter_id_number"] = malform_id(out["reporter_id_number"])
    return out


# --------------------------------------------------------------------------------------------
# SoQL (the subset a loader needs)
# --------------------------------------------------------------------------------------------


class SoqlError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, query: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.query = code, message, status, query


def soda_error(code: str, message: str, status: int = 400, data: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body: dict[str, Any] = {"code": code, "error": True, "message": message}
    if data:
        body["data"] = data
    return JSONResponse(body, status_code=status, headers=headers)


_IDENT = re.compile(r"^:?[a-z_][a-z0-9_]*$")
_COMPARISON = re.compile(
    r"^\s*(?P<field>:updated_at|:created_at|:id)\s*(?P<op>>=|<=|!=|=|>|<)\s*'(?P<value>[^']*)'\s*$", re.I
)
_AND = re.compile(r"\s+and\s+", re.I)
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _select(raw: str | None) -> list[str]:
    if raw is None or not raw.strip():
        return list(USER_FIELDS)
    fields: list[str] = []
    for term in (t.strip() for t in raw.split(",")):
        if term == ":*":
            fields += [f for f in SYSTEM_FIELDS if f not in fields]
        elif term == "*":
            fields += [f for f in USER_FIELDS if f not in fields]
        elif _IDENT.match(term):
            if term not in FIELD_TYPES:
                raise SoqlError("query.soql.no-such-column", f"No such column: {term}", query=raw)
            if term not in fields:
                fields.append(term)
        else:
            raise SoqlError(
                "query.compiler.malformed",
                f'Could not parse SoQL query "select {raw}": this server accepts plain column lists only',
                query=raw,
            )
    return fields


def _timestamp(literal: str, where: str) -> datetime:
    text = literal.strip()
    if not _TIMESTAMP.match(text):
        raise SoqlError(
            "query.soql.type-mismatch",
            f"Cannot compare a fixed_timestamp with the text '{literal}'",
            query=where,
        )
    text = text.replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise SoqlError("query.soql.type-mismatch", f"Not a timestamp: '{literal}'", query=where) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # fixed timestamps compare in UTC


def _where(raw: str | None) -> list[tuple[str, str, Any]]:
    if raw is None or not raw.strip():
        return []
    text = raw.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    terms = []
    for part in _AND.split(text):
        match = _COMPARISON.match(part)
        if match is None:
            raise SoqlError(
                "query.compiler.malformed",
                f'Could not parse SoQL query "where {raw}": this server understands comparisons of '
                ":updated_at, :created_at or :id with a quoted literal, joined by AND",
                query=raw,
            )
        name, op, value = match["field"].lower(), match["op"], match["value"]
        terms.append((name, op, value if name == ":id" else _timestamp(value, raw)))
    return terms


_PARAMS = {"$select", "$where", "$order", "$limit", "$offset"}
_ORDER_KEYS = {":id", ":updated_at", ":created_at", "incident_id"}


def _order(raw: str | None) -> list[tuple[str, bool]]:
    if raw is None or not raw.strip():
        return [(":id", False)]
    keys = []
    for part in raw.split(","):
        words = part.split()
        if not words or len(words) > 2 or words[0].lower() not in _ORDER_KEYS:
            raise SoqlError(
                "query.compiler.malformed",
                f"Cannot order by {part.strip()!r}: this server orders by {', '.join(sorted(_ORDER_KEYS))}",
                query=raw,
            )
        desc = len(words) == 2 and words[1].lower() == "desc"
        if len(words) == 2 and words[1].lower() not in {"asc", "desc"}:
            raise SoqlError("query.compiler.malformed", f"Expected ASC or DESC, got {words[1]!r}", query=raw)
        keys.append((words[0].lower(), desc))
    return keys


def _int(params: Any, name: str, default: int, hi: int | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SoqlError("query.compiler.malformed", f"{name} must be an integer, got {raw!r}") from None
    if value < 0 or (hi is not None and value > hi):
        raise SoqlError("query.execution.limit-exceeded" if hi else "query.compiler.malformed",
                        f"{name} must be between 0 and {hi if hi else 'infinity'}, got {value}")  # fmt: skip
    return value


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


@dataclass
class SocrataState(FaultCounters):
    """Server-side state, available as ``app.state.socrata``."""

    district: District
    dirt: DirtConfig | None = None
    app_tokens: set[str] = field(default_factory=set)
    faults: FaultQueue = field(default_factory=FaultQueue)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_fault(self, status: int = 503, count: int = 1, retry_after: float | None = None) -> int:
        """Queue a fault; returns the dataset calls now pending a fault."""
        return self.faults.add(Fault(status, count, retry_after))


def add_fault(app: FastAPI, status: int = 503, count: int = 1, retry_after: float | None = None) -> None:
    """Make the next ``count`` dataset calls answer HTTP ``status`` (with ``Retry-After`` if given)."""
    app.state.socrata.add_fault(status, count, retry_after)


def _sort_key(field_name: str, incident: Incident, version: int) -> Any:
    if field_name == ":id":
        return incident.row_id
    if field_name == ":updated_at":
        return incident.events[version]
    if field_name == ":created_at":
        return incident.events[0]
    return incident.incident_id


def _query(state: SocrataState, params: Any) -> tuple[list[tuple[Incident, int]], list[str], datetime]:
    select = _select(params.get("$select"))
    where = _where(params.get("$where"))
    order = _order(params.get("$order"))
    unsupported = [k for k in params if k.startswith("$") and k not in _PARAMS]
    if unsupported:
        raise SoqlError(
            "query.compiler.malformed", f"{', '.join(unsupported)} is not supported by this server"
        )
    filters = {k: v for k, v in params.items() if not k.startswith("$")}
    for name in filters:
        if name not in FIELD_TYPES or name.startswith(":") or FIELD_TYPES[name] == "point":
            raise SoqlError("query.soql.no-such-column", f"No such column: {name}")
    clock = state.district.clock
    rows = incident_records(state.district, clock)
    if where or filters:
        kept = []
        for incident, version in rows:
            values = {":id": incident.row_id, ":updated_at": incident.events[version],
                      ":created_at": incident.events[0]}  # fmt: skip
            if not all(_OPS[op](values[name], value) for name, op, value in where):
                continue
            if filters:
                rec = incident.render(version)
                if not all(str(rec.get(k)).lower() == v.lower() for k, v in filters.items()):
                    continue
            kept.append((incident, version))
        rows = kept
    if order != [(":id", False)]:
        for name, desc in reversed(order):  # stable sorts, last key first
            rows = sorted(rows, key=lambda iv, n=name: _sort_key(n, *iv), reverse=desc)
    return rows, select, clock


def mount(app: FastAPI, district: District, dirt: DirtConfig | None = None) -> None:
    """Add the Socrata routes under :data:`PREFIX` to the shared simulator app."""
    state = SocrataState(district, dirt)
    app.state.socrata = state

    @app.get(PREFIX + "/resource/{dataset_id}.json")
    async def resource(dataset_id: str, request: Request) -> Response:
        token = request.headers.get("X-App-Token")
        if token:
            with state.lock:
                state.app_tokens.add(token)
        fault = state.faults.take_error()
        if fault is not None:
            code = "too_many_requests" if fault.status == 429 else "internal_error"
            return soda_error(code, fault.message, fault.status, headers=fault.headers())
        if dataset_id != DATASET_ID:
            return soda_error("not_found", f"Cannot find dataset {dataset_id}", 404)
        params = request.query_params
        try:
            limit = _int(params, "$limit", DEFAULT_LIMIT, MAX_LIMIT)
            offset = _int(params, "$offset", 0)
            rows, select, clock = _query(state, params)
        except SoqlError as exc:
            return soda_error(exc.code, exc.message, exc.status, {"query": exc.query} if exc.query else None)
        seed = district.seed
        served: list[tuple[Incident, int, dict[str, str]]] = []
        for incident, version in rows:
            kinds = _dirt_kinds(state.dirt, seed, incident)
            served.append((incident, version, kinds))
            if "duplicate" in kinds:
                served.append((incident, version, kinds))
        bodies = []
        for incident, version, kinds in served[offset : offset + limit]:
            rec = incident.render(version)
            if kinds:
                rec = _dirty_record(rec, kinds, seed, clock)
            out = {k: rec[k] for k in select if k in rec}
            bodies.append(json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode())
        body = b"[" + b"\n,".join(bodies) + b"]\n"
        headers = {
            "X-SODA2-Fields": json.dumps(select, ensure_ascii=False),
            "X-SODA2-Types": json.dumps([FIELD_TYPES[f] for f in select]),
        }
        return Response(body, media_type=JSON_MEDIA, headers=headers)

    @app.post(PREFIX + "/_sim/faults")
    async def faults(status: int = 503, count: int = 1, retry_after: float | None = None) -> JSONResponse:
        return JSONResponse({"pending": state.add_fault(status, count, retry_after)})

    @app.get(PREFIX + "/_sim/truth")
    async def truth() -> JSONResponse:
        rows = incident_records(district)
        return JSONResponse(
            {
                "incidents": len(rows),
                "closed": sum(1 for _, v in rows if v == 2),
                "clock": district.clock.isoformat(),
                "calls": state.calls,
                "faulted": state.faulted,
            }
        )
