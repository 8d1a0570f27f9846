"""The property and commercial system (物业/商户管理), seeded into MariaDB.

Two tables, as a property-management vendor's system keeps them:

* ``merchants`` — the district's merchants and property companies (from
  :func:`ingest.simulator.economy.enterprises`, same USCCs as the CKAN portal), with their licence
  status. Over time some merchants close (licence ``cancelled``, soft delete), some are suspended
  for a few weeks, and new shops register.
* ``work_orders`` — repair and complaint work orders taken by the property companies' desks:
  reporter name and phone (what a desk writes down; no ID number), room and building codes, a
  description that never names anyone, and a status that progresses as the clock moves
  (``open`` → ``assigned`` → ``done``, or ``cancelled``). New orders arrive every day.

Times are ``DATETIME`` without zone, in the district's local time (+08:00) — how MariaDB systems
usually store them; the contract's ``options.timezone`` tells the connector how to read them.

Determinism: every merchant's and order's whole life is drawn from ``(seed, day)`` when it is
created, independent of the clock; the tables as of a clock show each entity's latest state at or
before it. :func:`sync` compares with what the database holds and writes only rows that differ,
so a second sync without a clock change writes nothing and ``updated_at`` never moves by itself.

Dirt (keyed by ``work_order_id``): ``missing`` leaves the required ``category`` empty; ``bad-date``
puts the assignment or closing time a day before the order was created.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from random import Random
from typing import Any
from urllib.parse import unquote, urlsplit

from ingest.simulator.dirt import DirtConfig, dirty
from ingest.simulator.district import TZ, District
from ingest.simulator.economy import Enterprise, enterprises, make_uscc

MIGRATED_AT = datetime(2024, 6, 1, 3, 0, tzinfo=TZ)
ORDERS_PER_HOUSEHOLD_DAY = 0.015
MERCHANT_CLOSE_RATE = 0.10  # per merchant and year
MERCHANT_SUSPEND_RATE = 0.04
MERCHANT_OPEN_RATE = 0.12  # new merchants per existing merchant and year

# (category, weight, description templates — never a person's name, only the unit at most)
CATEGORIES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("plumbing", 0.20, ("卫生间下水道堵塞，请尽快派人疏通", "厨房水管漏水", "水龙头关不紧，一直滴水")),
    ("leak", 0.12, ("楼上渗水，天花板有水渍", "外墙渗水，雨天墙面潮湿")),
    ("electrical", 0.14, ("{unit}单元楼道灯不亮", "户内跳闸，无法合闸")),
    ("elevator", 0.10, ("{unit}单元电梯故障停运", "电梯运行有异响")),
    ("door_access", 0.08, ("{unit}单元门禁无法刷卡", "单元门闭门器损坏")),
    ("cleaning", 0.12, ("楼道垃圾未及时清运", "{unit}单元楼道有小广告")),
    ("greenery", 0.06, ("绿化带树枝遮挡窗户", "草坪长期无人修剪")),
    ("parking", 0.08, ("车位被占用", "地库照明不足")),
    ("noise", 0.06, ("夜间装修噪音扰民", "空调外机噪音大")),
    ("security", 0.04, ("{unit}单元门锁损坏", "监控摄像头不工作")),
)
CHANNELS = (("desk", 0.45), ("phone", 0.35), ("wechat", 0.20))
STATUSES = ("open", "assigned", "done", "cancelled")

TABLES: dict[str, tuple[str, ...]] = {
    "merchants": (
        "uscc", "name", "kind", "industry", "building_id", "grid_id", "community_id", "phone",
        "licence_status", "registered_on", "updated_at", "deleted_at",
    ),
    "work_orders": (
        "work_order_id", "company_uscc", "building_id", "room_id", "grid_id", "community_id",
        "category", "description", "channel", "reporter_name", "reporter_phone", "status",
        "created_at", "assigned_at", "closed_at", "updated_at",
    ),
}  # fmt: skip
PRIMARY_KEYS = {"merchants": "uscc", "work_orders": "work_order_id"}

DDL = (
    """create table if not exists merchants (
        uscc char(18) primary key,
        name varchar(200) not null,
        kind varchar(32) not null,
        industry varchar(64),
        building_id varchar(16),
        grid_id varchar(16),
        community_id varchar(16),
        phone varchar(32),
        licence_status varchar(16) not null,
        registered_on date,
        updated_at datetime not null,
        deleted_at datetime null,
        key merchants_updated_at (updated_at)
    ) default charset = utf8mb4""",
    """create table if not exists work_orders (
        work_order_id varchar(24) primary key,
        company_uscc char(18) not null,
        building_id varchar(16) not null,
        room_id varchar(16),
        grid_id varchar(16),
        community_id varchar(16),
        category varchar(32) null,
        description varchar(500),
        channel varchar(16),
        reporter_name varchar(64),
        reporter_phone varchar(32),
        status varchar(16) not null,
        created_at datetime not null,
        assigned_at datetime null,
        closed_at datetime null,
        updated_at datetime not null,
        key work_orders_updated_at (updated_at)
    ) default charset = utf8mb4""",
)

Row = dict[str, Any]


def _poisson(rng: Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _at(rng: Random, day: date, first_hour: int = 8, hours: int = 12) -> datetime:
    return datetime.combine(day, time(first_hour), TZ) + timedelta(seconds=rng.randrange(hours * 3600))


@dataclass(frozen=True)
class _Life:
    """One entity's versions: (time, changes) in time order; the first is its creation."""

    key: str
    base: Row
    events: tuple[tuple[datetime, Row], ...]

    def as_of(self, clock: datetime) -> Row | None:
        if self.events[0][0] > clock:
            return None
        row = dict(self.base)
        for at, changes in self.events:
            if at > clock:
                break
            row.update(changes)
            row["updated_at"] = at
        return row


# --------------------------------------------------------------------------------------------
# Merchants
# --------------------------------------------------------------------------------------------


def _merchant_life(district: District, e: Enterprise, created: datetime, rng: Random) -> _Life:
    base = {
        "uscc": e.uscc,
        "name": e.name,
        "kind": e.kind,
        "industry": e.industry,
        "building_id": e.building_id,
        "grid_id": e.grid_id,
        "community_id": e.community_id,
        "phone": e.phone,
        "licence_status": "active",
        "registered_on": e.registered_on,
        "deleted_at": None,
    }
    events: list[tuple[datetime, Row]] = [(created, {})]
    if e.kind == "merchant":
        # when (if within the next two years) it is suspended for a while, and when it closes
        day0 = max(created.date(), district.start.date())
        close_in = rng.expovariate(MERCHANT_CLOSE_RATE / 365)
        suspend_in = rng.expovariate(MERCHANT_SUSPEND_RATE / 365)
        if suspend_in < min(close_in, 730) - 60:
            suspended = _at(rng, day0 + timedelta(days=int(suspend_in)))
            events.append((suspended, {"licence_status": "suspended"}))
            lifted = _at(rng, suspended.date() + timedelta(days=rng.randint(7, 45)))
            events.append((lifted, {"licence_status": "active"}))
        if close_in < 730:
            closed = max(_at(rng, day0 + timedelta(days=int(close_in))), events[-1][0] + timedelta(hours=1))
            events.append((closed, {"licence_status": "cancelled", "deleted_at": closed}))
    return _Life(e.uscc, base, tuple(events))


@lru_cache(maxsize=8)
def _initial_merchants(district: District) -> tuple[_Life, ...]:
    lives = []
    for e in enterprises(district):
        if e.kind not in ("merchant", "property_company"):
            continue
        rng = Random(f"{district.seed}/property/merchant/{e.uscc}")
        created = max(datetime.combine(e.registered_on, time(9), TZ), MIGRATED_AT)
        lives.append(_merchant_life(district, e, created, rng))
    return tuple(lives)


@lru_cache(maxsize=4096)
def _merchants_opened(district: District, day: date) -> tuple[_Life, ...]:
    rng = Random(f"{district.seed}/property/merchants/{day.isoformat()}")
    existing = len(_initial_merchants(district))
    taken = {e.uscc for e in enterprises(district)}
    lives = []
    from ingest.simulator.economy import _MERCHANT_TRADES  # the same trades as the existing shops

    for k in range(_poisson(rng, MERCHANT_OPEN_RATE * existing / 365)):
        building = rng.choice(district.buildings)
        trade, industry = rng.choice(_MERCHANT_TRADES)
        uscc = make_uscc(rng, "merchant")
        if uscc in taken:
            continue
        compound = district.compounds_by_id[building.compound_id]
        grid = _grid_of(district)[building.building_id]
        e = Enterprise(
            uscc,
            f"{compound.road}{trade}{day:%m%d}{k + 1}",
            "merchant",
            industry,
            building.building_id,
            building.community_id,
            grid,
            day,
            f"021-{rng.randrange(5000_0000, 6999_9999)}",
        )
        lives.append(_merchant_life(district, e, _at(rng, day, 9, 8), rng))
    return tuple(lives)


@lru_cache(maxsize=8)
def _grid_of(district: District) -> dict[str, str]:
    from ingest.simulator.economy import grid_of_building

    return grid_of_building(district)


# --------------------------------------------------------------------------------------------
# Work orders
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _desk_model(district: District) -> tuple[list[Any], dict[str, str], dict[str, list[Any]]]:
    """Households that report, the company USCC by name, and each household's adults."""
    company_uscc = {e.name: e.uscc for e in enterprises(district) if e.kind == "property_company"}
    adults: dict[str, list[Any]] = {}
    ref = district.start.date()
    for r in district.residents:
        if r.age_on(ref) >= 18:
            adults.setdefault(r.household_id, []).append(r)
    households = [h for h in district.households if h.household_id in adults]
    return households, company_uscc, adults


@lru_cache(maxsize=4096)
def _orders_created(district: District, day: date) -> tuple[_Life, ...]:
    rng = Random(f"{district.seed}/property/work_orders/{day.isoformat()}")
    households, company_uscc, adults = _desk_model(district)
    cats = [c[0] for c in CATEGORIES]
    weights = [c[1] for c in CATEGORIES]
    templates = {c[0]: c[2] for c in CATEGORIES}
    n = _poisson(rng, ORDERS_PER_HOUSEHOLD_DAY * len(district.households))
    created_times = sorted(_at(rng, day, 7, 14) for _ in range(n))
    lives = []
    for k, created in enumerate(created_times, start=1):
        household = rng.choice(households)
        building = district.buildings_by_id[household.building_id]
        compound = district.compounds_by_id[building.compound_id]
        with_phone = [a for a in adults[household.household_id] if a.mobile]
        reporter = rng.choice(with_phone or adults[household.household_id])
        category = rng.choices(cats, weights=weights)[0]
        description = rng.choice(templates[category]).format(unit=rng.randint(1, building.units))
        channel = rng.choices([c[0] for c in CHANNELS], weights=[c[1] for c in CHANNELS])[0]
        base = {
            "work_order_id": f"WO{day:%Y%m%d}{k:04d}",
            "company_uscc": company_uscc[compound.property_company],
            "building_id": building.building_id,
            "room_id": household.room_id,
            "grid_id": household.grid_id,
            "community_id": household.community_id,
            "category": category,
            "description": description,
            "channel": channel,
            "reporter_name": reporter.name,
            "reporter_phone": reporter.mobile,
            "status": "open",
            "created_at": created,
            "assigned_at": None,
            "closed_at": None,
        }
        events: list[tuple[datetime, Row]] = [(created, {})]
        if rng.random() < 0.05:  # withdrawn by the resident, or a duplicate of another order
            cancelled = created + timedelta(minutes=rng.randint(30, 24 * 60))
            events.append((cancelled, {"status": "cancelled", "closed_at": cancelled}))
        else:
            assigned = created + timedelta(minutes=rng.randint(10, 180))
            events.append((assigned, {"status": "assigned", "assigned_at": assigned}))
            slow = category in ("elevator", "leak") or rng.random() < 0.10
            hours = rng.uniform(24, 240) if slow else rng.uniform(1, 72)
            done = assigned + timedelta(seconds=round(hours * 3600))
            events.append((done, {"status": "done", "closed_at": done}))
        lives.append(_Life(base["work_order_id"], base, tuple(events)))
    return tuple(lives)


# --------------------------------------------------------------------------------------------
# Ground truth and sync
# --------------------------------------------------------------------------------------------

_LOCK = threading.Lock()


def _days(district: District) -> list[date]:
    first, last = district.start.date(), district.clock.date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def tables(district: District, dirt: DirtConfig | None = None) -> dict[str, list[Row]]:
    """Both tables as of ``district.clock``, exactly as :func:`sync` writes them (times aware, +08:00)."""
    clock = district.clock
    with _LOCK:
        merchant_lives = list(_initial_merchants(district))
        order_lives: list[_Life] = []
        for day in _days(district):
            merchant_lives += _merchants_opened(district, day)
            order_lives += _orders_created(district, day)
    merchants = [row for life in merchant_lives if (row := life.as_of(clock)) is not None]
    orders = []
    for life in order_lives:
        row = life.as_of(clock)
        if row is None:
            continue
        if dirty(dirt, district.seed, "missing", life.key):
            row["category"] = None
        if dirty(dirt, district.seed, "bad-date", life.key):
            for col in ("closed_at", "assigned_at"):
                if row[col] is not None:
                    row[col] = row["created_at"] - timedelta(days=1)
                    break
        orders.append(row)
    return {"merchants": merchants, "work_orders": orders}


_DBNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _connect(dsn: str, *, database: bool = True) -> Any:
    """A connection to the DSN's database (``database=False``: to the server, creating it first)."""
    import pymysql

    parts = urlsplit(dsn)
    name = unquote(parts.path.lstrip("/"))
    if not _DBNAME.match(name):
        raise ValueError(f"property database name {name!r} must be a plain identifier")
    con = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username) if parts.username else "root",
        password=unquote(parts.password) if parts.password else "",
        database=name if database else None,
        charset="utf8mb4",
        autocommit=False,
    )
    if not database:
        with con.cursor() as cur:
            cur.execute(f"create database if not exists `{name}` character set utf8mb4")
        con.commit()
    return con


def drop_database(dsn: str) -> None:
    """Drop the DSN's database (tests and benchmarks clean up the systems they seeded)."""
    con = _connect(dsn, database=False)
    try:
        with con.cursor() as cur:
            cur.execute(f"drop database if exists `{unquote(urlsplit(dsn).path.lstrip('/'))}`")
        con.commit()
    finally:
        con.close()


def _local(value: Any) -> Any:
    """What MariaDB stores for a value: aware datetimes as naive +08:00 wall time."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(TZ).replace(tzinfo=None)
    return value


def sync(district: District, dsn: str, dirt: DirtConfig | None = None) -> dict[str, int]:
    """Bring the property database up to ``district.clock``: ``{table: rows inserted or changed}``."""
    _connect(dsn, database=False).close()
    data = tables(district, dirt)
    con = _connect(dsn)
    counts: dict[str, int] = {}
    try:
        with con.cursor() as cur:
            for ddl in DDL:
                cur.execute(ddl)
            for table, columns in TABLES.items():
                key = PRIMARY_KEYS[table]
                cur.execute(f"select {', '.join(columns)} from {table}")
                held = {row[0]: tuple(row) for row in cur.fetchall()}
                changed = []
                for row in data[table]:
                    values = tuple(_local(row[c]) for c in columns)
                    if held.get(row[key]) != values:
                        changed.append(values)
                if changed:
                    cur.executemany(
                        f"insert into {table} ({', '.join(columns)}) values "
                        f"({', '.join(['%s'] * len(columns))}) on duplicate key update "
                        + ", ".join(f"{c} = values({c})" for c in columns if c != key),
                        changed,
                    )
                counts[table] = len(changed)
        con.commit()
    finally:
        con.close()
    return counts
