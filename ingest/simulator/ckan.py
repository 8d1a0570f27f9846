"""The district's open-data portal, served as a CKAN Action API (DataStore) over the district model.

Routes under ``/ckan`` (all JSON, CKAN envelope ``{"help", "success", "result" | "error"}``):

- ``GET /ckan/api/3/action/package_list`` — the portal's dataset names.
- ``GET /ckan/api/3/action/package_show?id=<name or id>`` — a dataset with its resources.
- ``GET /ckan/api/3/action/datastore_search?resource_id=&limit=&offset=&sort=&filters=`` —
  ``limit`` defaults to 100 and is capped at 32000 (``result.limit`` says what was applied, as
  CKAN >= 2.10 does); rows in ``_id`` order unless ``sort`` says otherwise (``_id`` or a field,
  ``asc``/``desc``); ``filters`` is a JSON object of field → value (or list of values);
  ``_links.start/next`` and ``total`` as CKAN builds them. ``q`` (full-text) is refused.
- ``GET /ckan/api/3/action/datastore_search_sql?sql=`` — only the keyset-paging shape an
  incremental loader needs: ``SELECT * FROM "<resource>" WHERE _id > N ORDER BY _id [ASC]
  LIMIT n`` (identifiers optionally quoted, trailing ``;`` allowed). Anything else is answered
  with a CKAN ``Validation Error`` (HTTP 409); an unknown table likewise, as PostgreSQL would.
  ``SELECT *`` includes ``_full_text``, as in real CKAN.

Errors are CKAN's: ``Not Found Error`` (404), ``Validation Error`` (409, field → messages).

Three packages, everything derived from the district and its clock:

- ``community-facilities/facilities`` — community centres, elderly day care, health stations,
  schools, parks, youth/rehabilitation centres and canteens, placed at the district's buildings
  and linked to the operating organisation's USCC where it has one (``economy.enterprises``).
- ``grid-population-statistics/grid-statistics`` — one row per grid: population, households,
  residents 60+ and children 0-14 (with shares) as of the first day of the clock's month (the
  portal publishes monthly). Open-data disclosure control: any count of 1-4 people or households
  is suppressed (null, ``suppressed = true``), and so is the share derived from it.
- ``enterprise-credit-ratings/credit-rating-events`` — append-only: each organisation is
  (re)rated about monthly (A/B/C/D); an event becomes visible once its ``published_at`` <= the
  clock. ``_id`` follows publication order, so the ids of what is visible never change as the
  clock advances and new events get higher ids.

Dirt (``DirtConfig``, via :func:`ingest.simulator.dirt.dirty`, keyed by the record's business
key): duplicates (the publisher uploaded a row twice: the copy gets the next ``_id``), a missing
required field, an out-of-range date (a rating dated before the organisation was registered),
and a malformed USCC (wrong check character). Facilities get duplicates and missing fields;
credit ratings get all four. :func:`served_dirt` lists what each record got.

Fault hook for retry tests: ``state_of(app).add_fault(CkanFault(503, count=2))`` (or ``POST
/ckan/_sim/faults``) makes the next CKAN calls fail with that status (``retry_after`` sets the
header). ``state_of(app).authorizations`` records the ``Authorization`` header values received.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from random import Random
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ingest.simulator import oneroster
from ingest.simulator.dirt import DirtConfig, _fraction, dirty
from ingest.simulator.district import TZ, District
from ingest.simulator.economy import Enterprise, enterprises, grid_of_building
from ingest.simulator.faults import Fault, FaultCounters, FaultQueue

PREFIX = "/ckan"
ACTION = PREFIX + "/api/3/action"
DEFAULT_LIMIT = 100
ROWS_MAX = 32000
SITE = "https://data.minghu.example.gov.cn"
ORGANISATION = {"name": "minghu-big-data-bureau", "title": "明湖区政务服务和大数据管理局"}
SUPPRESS_BELOW = 5
RATINGS = ("A", "B", "C", "D")
CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
RATING_HISTORY_DAYS = 180  # ratings published before the district's start
JSON_MEDIA = "application/json; charset=utf-8"


# --------------------------------------------------------------------------------------------
# Data: what the portal publishes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    package: str
    name: str
    title: str
    description: str
    fields: tuple[tuple[str, str], ...]  # (id, CKAN type) without _id

    def resource_id(self, seed: int) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SITE}/{seed}/{self.package}/{self.name}"))


FACILITIES = Resource(
    "community-facilities",
    "facilities",
    "社区公共服务设施 Community facilities",
    "Community centres, elderly day care, health stations, schools, parks and other public facilities.",
    (
        ("facility_id", "text"),
        ("name", "text"),
        ("category", "text"),
        ("category_name", "text"),
        ("street_code", "text"),
        ("community_code", "text"),
        ("community_name", "text"),
        ("grid_code", "text"),
        ("address", "text"),
        ("lat", "numeric"),
        ("long", "numeric"),
        ("operator_name", "text"),
        ("operator_uscc", "text"),
        ("phone", "text"),
        ("opening_hours", "text"),
        ("capacity", "int"),
    ),
)
GRID_STATISTICS = Resource(
    "grid-population-statistics",
    "grid-statistics",
    "网格人口统计 Population statistics by grid",
    "Monthly aggregates per grid; counts of 1-4 are suppressed.",
    (
        ("grid_code", "text"),
        ("grid_name", "text"),
        ("community_code", "text"),
        ("community_name", "text"),
        ("street_code", "text"),
        ("street_name", "text"),
        ("reference_date", "timestamp"),
        ("population", "int"),
        ("households", "int"),
        ("residents_60_plus", "int"),
        ("share_60_plus", "numeric"),
        ("children_0_14", "int"),
        ("share_0_14", "numeric"),
        ("suppressed", "bool"),
    ),
)
CREDIT_RATINGS = Resource(
    "enterprise-credit-ratings",
    "credit-rating-events",
    "企业公共信用评价 Enterprise credit rating events",
    "Append-only: one row per published rating of an organisation registered in the district.",
    (
        ("rating_id", "text"),
        ("uscc", "text"),
        ("enterprise_name", "text"),
        ("enterprise_kind", "text"),
        ("industry", "text"),
        ("rating", "text"),
        ("previous_rating", "text"),
        ("rating_period", "text"),
        ("rated_on", "timestamp"),
        ("registered_on", "timestamp"),
        ("published_at", "text"),
        ("authority", "text"),
    ),
)
RESOURCES = (FACILITIES, GRID_STATISTICS, CREDIT_RATINGS)
PACKAGE_META = {
    "community-facilities": ("社区公共服务设施", "Public facilities of the district's communities."),
    "grid-population-statistics": ("网格人口统计", "Population aggregates by grid, monthly."),
    "enterprise-credit-ratings": ("企业公共信用评价", "Public credit ratings of registered organisations."),
}

_FACILITY_KINDS = {
    "elderly_care": ("elderly_daycare", "日间照料中心", "08:00-17:30", 30),
    "health": ("clinic", "社区卫生服务站", "08:00-20:00", None),
    "youth": ("youth_centre", "青少年活动中心", "14:00-20:00", 60),
    "disability": ("rehabilitation", "残疾人康复站", "09:00-17:00", 20),
    "food": ("canteen", "社区食堂", "10:30-19:00", 80),
    "legal_aid": ("legal_aid", "法律援助工作站", "09:00-17:00", None),
}


def _ts(d: date) -> str:
    """A date as CKAN's DataStore returns a ``timestamp`` column."""
    return f"{d.isoformat()}T00:00:00"


def _malform_uscc(code: str) -> str:
    """The code with a wrong check character (a typo in the last character)."""
    return code[:-1] + CODE_CHARS[(CODE_CHARS.index(code[-1]) + 1) % len(CODE_CHARS)]


def facilities(district: District) -> list[dict[str, Any]]:
    """Every public facility of the district (clean), in a stable order."""
    rng = Random(f"{district.seed}/ckan/facilities")
    grids = grid_of_building(district)
    by_community: dict[str, list[Any]] = {}
    for b in district.buildings:
        by_community.setdefault(b.community_id, []).append(b)
    communities = {c.community_id: c for c in district.communities}
    buildings = {b.building_id: b for b in district.buildings}
    out: list[dict[str, Any]] = []

    def add(fid: str, name: str, category: str, category_name: str, building: Any, **extra: Any) -> None:
        community = communities[building.community_id]
        out.append(
            {
                "facility_id": fid,
                "name": name,
                "category": category,
                "category_name": category_name,
                "street_code": building.street_id,
                "community_code": community.community_id,
                "community_name": community.name,
                "grid_code": grids[building.building_id],
                "address": building.address,
                "lat": building.lat,
                "long": building.long,
                "operator_name": extra.get("operator_name"),
                "operator_uscc": extra.get("operator_uscc"),
                "phone": extra.get("phone"),
                "opening_hours": extra.get("opening_hours"),
                "capacity": extra.get("capacity"),
            }
        )

    for community in district.communities:
        places = by_community.get(community.community_id)
        if not places:
            continue
        root = community.name.removesuffix("社区")
        add(
            f"FC-{community.community_id}-CC",
            f"{community.name}党群服务中心",
            "community_centre",
            "社区党群服务中心",
            rng.choice(places),
            operator_name=community.committee,
            phone=f"021-{rng.randrange(5000_0000, 6999_9999)}",
            opening_hours="08:30-20:00",
        )
        add(
            f"FC-{community.community_id}-PK",
            f"{root}口袋公园",
            "park",
            "口袋公园",
            rng.choice(places),
            operator_name="明湖区绿化和市容管理局",
            opening_hours="05:00-22:00",
        )
    for street in district.streets:
        places = [b for b in district.buildings if b.street_id == street.street_id]
        if not places:
            continue
        root = street.name.removesuffix("街道")
        for suffix, category, category_name, capacity in (
            ("KG", "kindergarten", "幼儿园", 150 + rng.randrange(0, 150)),
        ):
            add(
                f"FC-{street.street_id}-{suffix}",
                f"明湖区{root}{category_name}",
                category,
                category_name,
                rng.choice(places),
                operator_name="明湖区教育局",
                phone=f"021-{rng.randrange(5000_0000, 6999_9999)}",
                opening_hours="07:30-17:00",
                capacity=capacity,
            )
    # The schools are the education bureau's own (the same ones whose rosters arrive as OneRoster
    # bundles), placed in their catchment.
    for school in oneroster.schools(district):
        catchment = set(school.communities)
        places = [b for b in district.buildings if b.community_id in catchment] or district.buildings
        add(
            f"FC-{school.sourced_id}",
            school.name,
            "school",
            "小学" if school.level == "primary" else "中学",
            rng.choice(places),
            operator_name="明湖区教育局",
            phone=f"021-{rng.randrange(5000_0000, 6999_9999)}",
            opening_hours="07:30-17:00",
            capacity=600 + rng.randrange(0, 900),
        )
    for e in enterprises(district):
        kind = _FACILITY_KINDS.get(e.industry)
        if kind is None or e.kind not in {"social_org", "public_institution"}:
            continue
        category, category_name, hours, capacity = kind
        add(
            f"FC-{e.uscc[-8:]}",
            e.name,
            category,
            category_name,
            buildings[e.building_id],
            operator_name=e.name,
            operator_uscc=e.uscc,
            phone=e.phone,
            opening_hours=hours,
            capacity=capacity,
        )
    return out


def reference_date(clock: datetime) -> date:
    """The statistics' reference date: the first day of the clock's month (monthly publication)."""
    return clock.astimezone(TZ).date().replace(day=1)


def grid_statistics(district: District, clock: datetime | None = None) -> list[dict[str, Any]]:
    """Per-grid aggregates as of the reference date, with small counts suppressed."""
    ref = reference_date(clock or district.clock)
    pop: dict[str, int] = {}
    old: dict[str, int] = {}
    young: dict[str, int] = {}
    for r in district.residents:
        if r.birth_date > ref:
            continue  # not born yet on the reference date
        pop[r.grid_id] = pop.get(r.grid_id, 0) + 1
        age = r.age_on(ref)
        if age >= 60:
            old[r.grid_id] = old.get(r.grid_id, 0) + 1
        elif age <= 14:
            young[r.grid_id] = young.get(r.grid_id, 0) + 1
    households: dict[str, int] = {}
    for h in district.households:
        households[h.grid_id] = households.get(h.grid_id, 0) + 1
    communities = {c.community_id: c for c in district.communities}
    streets = {s.street_id: s for s in district.streets}

    def cell(n: int) -> int | None:
        return None if 0 < n < SUPPRESS_BELOW else n

    out = []
    for g in district.grids:
        community = communities[g.community_id]
        n = pop.get(g.grid_id, 0)
        population = cell(n)
        olds, youngs, hh = (
            cell(old.get(g.grid_id, 0)),
            cell(young.get(g.grid_id, 0)),
            cell(households.get(g.grid_id, 0)),
        )
        if population is None:
            olds = youngs = hh = None
        out.append(
            {
                "grid_code": g.grid_id,
                "grid_name": g.name,
                "community_code": g.community_id,
                "community_name": community.name,
                "street_code": community.street_id,
                "street_name": streets[community.street_id].name,
                "reference_date": _ts(ref),
                "population": population,
                "households": hh,
                "residents_60_plus": olds,
                "share_60_plus": round(olds / n, 4) if olds is not None and n else None,
                "children_0_14": youngs,
                "share_0_14": round(youngs / n, 4) if youngs is not None and n else None,
                "suppressed": None in (population, hh, olds, youngs),
            }
        )
    return out


def _month_start(d: date, months: int = 0) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _rating_stream(
    district: District, e: Enterprise, until: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """One organisation's rating events published up to ``until`` (independent of the horizon)."""
    rng = Random(f"{district.seed}/ckan/rating/{e.uscc}")
    first = max(e.registered_on, (district.start - timedelta(days=RATING_HISTORY_DAYS)).date())
    month = _month_start(first, 1)
    current = rng.choices(RATINGS, weights=(35, 45, 15, 5))[0]
    previous: str | None = None
    out = []
    while True:
        rated_on = month + timedelta(days=rng.randrange(0, 10))
        published = datetime(rated_on.year, rated_on.month, rated_on.day, 9, tzinfo=TZ) + timedelta(
            minutes=rng.randrange(0, 8 * 60), seconds=rng.randrange(0, 60)
        )
        if published > until:
            return out
        period = f"{month.year:04d}-{month.month:02d}"
        out.append(
            (
                published,
                {
                    "rating_id": f"CR{month.year:04d}{month.month:02d}-{e.uscc}",
                    "uscc": e.uscc,
                    "enterprise_name": e.name,
                    "enterprise_kind": e.kind,
                    "industry": e.industry,
                    "rating": current,
                    "previous_rating": previous,
                    "rating_period": period,
                    "rated_on": _ts(rated_on),
                    "registered_on": _ts(e.registered_on),
                    "published_at": published.isoformat(timespec="seconds"),
                    "authority": "明湖区公共信用信息中心",
                },
            )
        )
        previous = current
        step = rng.random()
        i = RATINGS.index(current)
        if step < 0.1 and i > 0:
            current = RATINGS[i - 1]
        elif step > 0.88 and i < len(RATINGS) - 1:
            current = RATINGS[i + 1]
        month = _month_start(month, 1)


def credit_rating_events(district: District, clock: datetime | None = None) -> list[dict[str, Any]]:
    """Every rating event published up to the clock (clean), in publication (= ``_id``) order."""
    until = clock or district.clock
    events = [ev for e in enterprises(district) for ev in _rating_stream(district, e, until)]
    events.sort(key=lambda ev: (ev[0], ev[1]["uscc"]))
    return [data for _, data in events]


# --------------------------------------------------------------------------------------------
# Dirt
# --------------------------------------------------------------------------------------------

_KEY_FIELD = {
    FACILITIES.name: "facility_id",
    GRID_STATISTICS.name: "grid_code",
    CREDIT_RATINGS.name: "rating_id",
}
_DIRT_KINDS = {
    FACILITIES.name: ("duplicate", "missing"),
    GRID_STATISTICS.name: (),
    CREDIT_RATINGS.name: ("duplicate", "missing", "bad-date", "malformed-id"),
}
_MISSING = {FACILITIES.name: ("name", "category"), CREDIT_RATINGS.name: ("uscc", "rating")}


def _dirty_rows(
    resource: Resource, rows: list[dict[str, Any]], config: DirtConfig | None, seed: int
) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Rows as the portal holds them (with dirt, duplicates in place) and ``{kind: {key: detail}}``."""
    kinds = _DIRT_KINDS[resource.name] if config is not None else ()
    log: dict[str, dict[str, str]] = {"duplicate": {}, "missing": {}, "bad-date": {}, "malformed-id": {}}
    if not kinds:
        return rows, log
    key_field = _KEY_FIELD[resource.name]
    out = []
    for row in rows:
        key = f"ckan:{resource.name}:{row[key_field]}"
        served = row
        if "missing" in kinds and dirty(config, seed, "missing", key):
            choices = _MISSING[resource.name]
            drop = choices[int(_fraction(seed, "ckan-missing-which", key) * len(choices))]
            served = {k: v for k, v in served.items() if k != drop}
            log["missing"][row[key_field]] = drop
        if "bad-date" in kinds and dirty(config, seed, "bad-date", key):
            registered = date.fromisoformat(row["registered_on"][:10])
            days = 1 + int(_fraction(seed, "ckan-bad-date-days", key) * 3650)
            served = {**served, "rated_on": _ts(registered - timedelta(days=days))}
            log["bad-date"][row[key_field]] = served["rated_on"]
        if "malformed-id" in kinds and dirty(config, seed, "malformed-id", key) and served.get("uscc"):
            served = {**served, "uscc": _malform_uscc(served["uscc"])}
            log["malformed-id"][row[key_field]] = served["uscc"]
        out.append(served)
        if "duplicate" in kinds and dirty(config, seed, "duplicate", key):
            out.append(served)
            log["duplicate"][row[key_field]] = "uploaded twice"
    return out, log


def _full_text(row: dict[str, Any]) -> str:
    """A stand-in for the ``_full_text`` tsvector CKAN keeps per row."""
    words = sorted({str(v).lower() for v in row.values() if isinstance(v, str) and v})
    return " ".join(f"'{w}':{i}" for i, w in enumerate(words, start=1))


# --------------------------------------------------------------------------------------------
# Server state
# --------------------------------------------------------------------------------------------


# Make the next ``count`` CKAN calls answer HTTP ``status`` (with ``Retry-After`` if set).
CkanFault = Fault


@dataclass
class CkanState(FaultCounters):
    district: District
    dirt: DirtConfig | None
    faults: FaultQueue = field(default_factory=FaultQueue)
    authorizations: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[tuple[str, datetime], tuple[list[dict[str, Any]], dict[str, dict[str, str]]]] = field(
        default_factory=dict
    )

    def add_fault(self, fault: Fault) -> int:
        """Queue ``fault``; returns the CKAN calls now pending a fault."""
        return self.faults.add(fault)

    def rows(self, resource: Resource) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
        """The resource's rows (with ``_id``) at the current clock, cached per clock value."""
        clock = self.district.clock
        key = (resource.name, clock)
        with self.lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        if resource is FACILITIES:
            clean = facilities(self.district)
        elif resource is GRID_STATISTICS:
            clean = grid_statistics(self.district, clock)
        else:
            clean = credit_rating_events(self.district, clock)
        served, log = _dirty_rows(resource, clean, self.dirt, self.district.seed)
        rows = [{"_id": i, **row} for i, row in enumerate(served, start=1)]
        with self.lock:
            if len(self._cache) > 12:
                self._cache.clear()
            self._cache[key] = (rows, log)
        return rows, log


def state_of(app: FastAPI) -> CkanState:
    """The CKAN simulator's state on a mounted app (faults, calls, authorizations)."""
    return app.state.ckan


def served_dirt(app: FastAPI, resource: str) -> dict[str, dict[str, str]]:
    """``{kind: {business key: detail}}`` of the dirt in a resource at the current clock."""
    res = next(r for r in RESOURCES if r.name == resource)
    return state_of(app).rows(res)[1]


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


class CkanError(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(str(error))
        self.status = status
        self.error = error


def _validation(field_name: str, message: str) -> CkanError:
    return CkanError(409, {"__type": "Validation Error", field_name: [message]})


def _not_found(message: str) -> CkanError:
    return CkanError(404, {"__type": "Not Found Error", "message": f"Not found: {message}"})


def _help(action: str) -> str:
    return f"{SITE}/api/3/action/help_show?name={action}"


def _ok(action: str, result: Any) -> Response:
    body = {"help": _help(action), "success": True, "result": result}
    return Response(json.dumps(body, ensure_ascii=False, separators=(", ", ": ")), media_type=JSON_MEDIA)


def _fail(action: str, exc: CkanError) -> JSONResponse:
    return JSONResponse({"help": _help(action), "success": False, "error": exc.error}, status_code=exc.status)


def _int(params: Any, name: str, default: int, lo: int = 0) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _validation(name, "Invalid integer") from None
    if value < lo:
        raise _validation(name, f"Must be a natural number{' greater than zero' if lo else ''}")
    return value


_SQL = re.compile(
    r"""^\s*select\s+\*\s+from\s+(?P<table>"[^"]+"|[A-Za-z0-9_-]+)\s+
        where\s+"?_id"?\s*>\s*(?P<after>\d+)\s+
        order\s+by\s+"?_id"?(?:\s+asc)?\s+
        limit\s+(?P<limit>\d+)\s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


def mount(app: FastAPI, district: District, dirt: DirtConfig | None = None) -> None:
    """Add the CKAN portal's routes under :data:`PREFIX` to the shared simulator app."""
    state = CkanState(district, dirt)
    app.state.ckan = state
    seed = district.seed
    by_id = {r.resource_id(seed): r for r in RESOURCES}
    by_alias = {r.name: r for r in RESOURCES}

    def resource_dict(r: Resource) -> dict[str, Any]:
        rid = r.resource_id(seed)
        modified = district.clock.astimezone(TZ).replace(tzinfo=None).isoformat()
        return {
            "id": rid,
            "name": r.name,
            "description": r.description,
            "package_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SITE}/{seed}/{r.package}")),
            "format": "CSV",
            "url": f"{SITE}/datastore/dump/{rid}",
            "url_type": "datastore",
            "datastore_active": True,
            "last_modified": modified,
            "state": "active",
        }

    def package_dict(name: str) -> dict[str, Any]:
        title, notes = PACKAGE_META[name]
        modified = district.clock.astimezone(TZ).replace(tzinfo=None).isoformat()
        resources = [resource_dict(r) for r in RESOURCES if r.package == name]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SITE}/{seed}/{name}")),
            "name": name,
            "title": title,
            "notes": notes,
            "license_id": "cc-by",
            "private": False,
            "state": "active",
            "type": "dataset",
            "organization": ORGANISATION,
            "metadata_modified": modified,
            "num_resources": len(resources),
            "resources": resources,
        }

    def find_resource(ref: str | None) -> Resource:
        if not ref:
            raise _validation("resource_id", "Missing value")
        res = by_id.get(ref) or by_alias.get(ref)
        if res is None:
            raise _not_found(f'Resource "{ref}" was not found.')
        return res

    def guard(request: Request, action: str) -> Response | None:
        auth = request.headers.get("authorization")
        if auth:
            with state.lock:
                state.authorizations.add(auth)
        fault = state.faults.take_error()
        if fault is None:
            return None
        return JSONResponse(
            {
                "help": _help(action),
                "success": False,
                "error": {"__type": "Service Unavailable", "message": "simulated fault"},
            },
            status_code=fault.status,
            headers=fault.headers(),
        )

    def fields_of(r: Resource, *, full_text: bool = False) -> list[dict[str, str]]:
        head = [{"id": "_id", "type": "int"}] + (
            [{"id": "_full_text", "type": "tsvector"}] if full_text else []
        )
        return head + [{"id": f, "type": t} for f, t in r.fields]

    @app.get(ACTION + "/package_list")
    async def package_list(request: Request) -> Response:
        if (fault := guard(request, "package_list")) is not None:
            return fault
        return _ok("package_list", list(PACKAGE_META))

    @app.get(ACTION + "/package_show")
    async def package_show(request: Request) -> Response:
        if (fault := guard(request, "package_show")) is not None:
            return fault
        ref = request.query_params.get("id")
        for name in PACKAGE_META:
            if ref in (name, package_dict(name)["id"]):
                return _ok("package_show", package_dict(name))
        return _fail(
            "package_show", _not_found("Dataset not found") if ref else _validation("id", "Missing value")
        )

    @app.get(ACTION + "/datastore_search")
    async def datastore_search(request: Request) -> Response:
        if (fault := guard(request, "datastore_search")) is not None:
            return fault
        params = request.query_params
        try:
            res = find_resource(params.get("resource_id") or params.get("id"))
            limit = min(_int(params, "limit", DEFAULT_LIMIT), ROWS_MAX)
            offset = _int(params, "offset", 0)
            if params.get("q"):
                raise _validation("q", "full-text search is not offered by this portal's simulator")
            rows, _ = state.rows(res)
            names = {"_id", *(f for f, _ in res.fields)}
            raw_filters = params.get("filters")
            if raw_filters:
                try:
                    filters = json.loads(raw_filters)
                except ValueError:
                    raise _validation("filters", "Could not parse as valid JSON") from None
                if not isinstance(filters, dict):
                    raise _validation("filters", "Not a json object")
                for key, want in filters.items():
                    if key not in names:
                        raise _validation("filters", f'field "{key}" not in table')
                    allowed = {str(w) for w in (want if isinstance(want, list) else [want])}
                    rows = [r for r in rows if str(r.get(key)) in allowed]
            sort = (params.get("sort") or "_id asc").strip()
            match = re.fullmatch(r'"?([A-Za-z0-9_]+)"?(?:\s+(asc|desc))?', sort, re.IGNORECASE)
            if not match or match.group(1) not in names:
                raise _validation("sort", f'field "{sort}" not in table')
            column, desc = match.group(1), (match.group(2) or "asc").lower() == "desc"
            if column != "_id" or desc:
                rows = sorted(
                    rows, key=lambda r: (r.get(column) is None, r.get(column), r["_id"]), reverse=desc
                )
        except CkanError as exc:
            return _fail("datastore_search", exc)
        query = dict(params)
        start = {k: v for k, v in query.items() if k != "offset"}
        links = {
            "start": f"/api/3/action/datastore_search?{urlencode(start)}",
            "next": f"/api/3/action/datastore_search?{urlencode({**query, 'offset': offset + limit})}",
        }
        if offset - limit > 0:
            links["prev"] = f"/api/3/action/datastore_search?{urlencode({**query, 'offset': offset - limit})}"
        result: dict[str, Any] = {
            "include_total": True,
            "limit": limit,
            "records_format": "objects",
            "resource_id": res.resource_id(seed),
            "total_estimation_threshold": None,
            "records": rows[offset : offset + limit],
            "fields": fields_of(res),
            "_links": links,
            "total": len(rows),
            "total_was_estimated": False,
        }
        if "offset" in params:
            result["offset"] = offset
        if raw_filters:
            result["filters"] = json.loads(raw_filters)
        if "sort" in params:
            result["sort"] = sort
        return _ok("datastore_search", result)

    @app.get(ACTION + "/datastore_search_sql")
    async def datastore_search_sql(request: Request) -> Response:
        if (fault := guard(request, "datastore_search_sql")) is not None:
            return fault
        sql = request.query_params.get("sql") or ""
        try:
            if not sql.strip():
                raise _validation("sql", "Missing value")
            match = _SQL.match(sql)
            if match is None:
                raise _validation(
                    "query",
                    "this portal's simulator only answers "
                    'SELECT * FROM "<resource>" WHERE _id > N ORDER BY _id LIMIT n',
                )
            table = match.group("table").strip('"')
            res = by_id.get(table) or by_alias.get(table)
            if res is None:
                raise _validation(
                    "query", f'(psycopg2.errors.UndefinedTable) relation "{table}" does not exist'
                )
            after, limit = int(match.group("after")), int(match.group("limit"))
        except CkanError as exc:
            return _fail("datastore_search_sql", exc)
        rows, _ = state.rows(res)
        # _id is 1..n in order, so the rows after N start at index N
        selected = rows[after : after + min(limit, ROWS_MAX + 1)]
        result: dict[str, Any] = {"sql": sql, "fields": fields_of(res, full_text=True)}
        if len(selected) > ROWS_MAX:
            selected = selected[:ROWS_MAX]
            result["records_truncated"] = True
        result["records"] = [{"_id": r["_id"], "_full_text": _full_text(r), **r} for r in selected]
        return _ok("datastore_search_sql", result)

    @app.post(PREFIX + "/_sim/faults")
    async def add_fault(status: int = 503, count: int = 1, retry_after: float | None = None) -> JSONResponse:
        return JSONResponse({"pending": state.add_fault(Fault(status, count, retry_after))})
