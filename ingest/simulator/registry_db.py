"""The street office's population and household registry, seeded into PostgreSQL.

Tables ``grids``, ``buildings``, ``households`` and ``residents`` — each with ``updated_at
timestamptz`` and a soft-delete ``deleted_at`` — hold the registry AS OF ``district.clock``. The
residents are the district's own :class:`~ingest.simulator.district.Resident` objects (same ids,
ID numbers, names and mobiles as Open311 requesters and FHIR patients), plus what happened to the
population since the registry system went live (``MIGRATED_AT``): households moving within the
district, young adults leaving home for a flat of their own, households moving away (soft
delete), new households registering, births and deaths (soft delete).

Determinism: events are generated day by day from ``(seed, day)`` and the registry state at the
start of that day, starting at ``district.start``; the rows as of any clock are the initial rows
overlaid with every event at or before it. So the registry at a clock does not depend on how the
clock got there, and :func:`sync` is idempotent: rows are upserted only when they differ (``ON
CONFLICT … DO UPDATE … WHERE … IS DISTINCT FROM``), so a second sync without a clock change writes
nothing and every ``updated_at`` stays. ``updated_at`` is the event's time, never the wall clock.

Dirt (:class:`~ingest.simulator.dirt.DirtConfig`), keyed by ``resident_id``: ``malformed-id``
serves the resident's ID number with a wrong check character; ``missing`` leaves the required
``birth_date`` empty. Duplicates cannot happen in a table with a primary key.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import accumulate
from random import Random
from typing import Any
from urllib.parse import unquote, urlsplit

from faker.providers.person.zh_CN import Provider as _ZhNames

from ingest.simulator.dirt import DirtConfig, dirty, malform_id
from ingest.simulator.district import TZ, District
from ingest.simulator.economy import grid_of_building
from ingest.simulator.identifiers import (
    LOCAL_REGION_CODES,
    draw_mobile,
    draw_sequence,
    make_ric,
    migrant_region_codes,
)

# The night the registry moved to this system: older records were migrated with this updated_at.
MIGRATED_AT = datetime(2024, 6, 1, 2, 0, tzinfo=TZ)

# Yearly rates of what happens to the population (a lively inner-city district with many renters).
RATE_HOUSEHOLD_MOVE = 0.15  # per household: moves to another flat in the district
RATE_HOUSEHOLD_OUT = 0.08  # per household: moves away (all members soft-deleted)
RATE_HOUSEHOLD_IN = 0.08  # per household: a new household registers
RATE_LEAVE_HOME = 0.10  # per adult child (22+) living with parents: gets a flat of their own
RATE_BIRTH = 0.010  # per resident
RATE_DEATH_ELDERLY = 0.03  # per resident aged 60+

TABLES: dict[str, tuple[str, ...]] = {
    "grids": (
        "grid_id", "grid_name", "community_id", "community_name", "committee", "street_id",
        "street_name", "street_office", "zipcode", "worker_name", "updated_at", "deleted_at",
    ),
    "buildings": (
        "building_id", "compound_id", "compound_name", "community_id", "street_id", "grid_id",
        "building_number", "units", "floors", "rooms_per_floor", "address", "zipcode", "latitude",
        "longitude", "property_company", "updated_at", "deleted_at",
    ),
    "households": (
        "household_id", "room_id", "building_id", "grid_id", "community_id", "kind",
        "head_resident_id", "member_count", "registered_at", "updated_at", "deleted_at",
    ),
    "residents": (
        "resident_id", "id_number", "name", "sex", "birth_date", "mobile", "household_id", "room_id",
        "building_id", "grid_id", "community_id", "relation", "status", "registered_at", "updated_at",
        "deleted_at",
    ),
}  # fmt: skip
PRIMARY_KEYS = {
    "grids": "grid_id",
    "buildings": "building_id",
    "households": "household_id",
    "residents": "resident_id",
}

DDL = """
create table if not exists grids (
    grid_id text primary key,
    grid_name text not null,
    community_id text not null,
    community_name text,
    committee text,
    street_id text,
    street_name text,
    street_office text,
    zipcode text,
    worker_name text,
    updated_at timestamptz not null,
    deleted_at timestamptz
);
create index if not exists grids_updated_at on grids (updated_at);
create table if not exists buildings (
    building_id text primary key,
    compound_id text not null,
    compound_name text,
    community_id text not null,
    street_id text,
    grid_id text,
    building_number integer,
    units integer,
    floors integer,
    rooms_per_floor integer,
    address text,
    zipcode text,
    latitude double precision,
    longitude double precision,
    property_company text,
    updated_at timestamptz not null,
    deleted_at timestamptz
);
create index if not exists buildings_updated_at on buildings (updated_at);
create table if not exists households (
    household_id text primary key,
    room_id text not null,
    building_id text not null,
    grid_id text not null,
    community_id text not null,
    kind text,
    head_resident_id text,
    member_count integer not null,
    registered_at timestamptz not null,
    updated_at timestamptz not null,
    deleted_at timestamptz
);
create index if not exists households_updated_at on households (updated_at);
create table if not exists residents (
    resident_id text primary key,
    id_number text not null,
    name text not null,
    sex text not null,
    birth_date date,
    mobile text,
    household_id text not null,
    room_id text not null,
    building_id text not null,
    grid_id text not null,
    community_id text not null,
    relation text,
    status text not null,
    registered_at timestamptz not null,
    updated_at timestamptz not null,
    deleted_at timestamptz
);
create index if not exists residents_updated_at on residents (updated_at);
"""

Row = dict[str, Any]


# --------------------------------------------------------------------------------------------
# The registry's timeline
# --------------------------------------------------------------------------------------------


def _poisson(rng: Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - int((on.month, on.day) < (birth.month, birth.day))


class _Names:
    """Chinese names from Faker's zh_CN data, drawn with a caller's RNG (deterministic)."""

    surnames = list(_ZhNames.last_names)
    surname_cum = list(accumulate(_ZhNames.last_names.values()))
    male = list(_ZhNames.first_names_male)
    female = list(_ZhNames.first_names_female)

    @classmethod
    def full(cls, rng: Random, male: bool, surname: str | None = None) -> str:
        surname = surname or rng.choices(cls.surnames, cum_weights=cls.surname_cum)[0]
        given = rng.choice(cls.male if male else cls.female)
        if len(given) == 1 and rng.random() < 0.35:
            given += rng.choice([g for g in (cls.male if male else cls.female) if len(g) == 1])
        return surname + given


@dataclass
class _Timeline:
    """Initial rows, the versions events produced (in time order) and the state after the last day."""

    district: District
    initial: dict[str, dict[str, Row]]
    versions: list[tuple[datetime, str, str, Row]] = field(default_factory=list)
    state: dict[str, dict[str, Row]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)  # household -> active resident ids
    resident_ids: list[str] = field(default_factory=list)  # append-only, for rejection sampling
    household_ids: list[str] = field(default_factory=list)
    used_ids: set[str] = field(default_factory=set)
    used_mobiles: set[str] = field(default_factory=set)
    next_day: date = date.min
    next_resident: int = 0
    next_household: int = 0
    next_room: int = 0
    grid_of: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ---------------------------------------------------------------- helpers

    def _emit(self, at: datetime, table: str, row: Row) -> None:
        row["updated_at"] = at
        self.versions.append((at, table, row[PRIMARY_KEYS[table]], dict(row)))

    def _pick(self, rng: Random, ids: list[str], table: str, accept: Any, tries: int = 400) -> Row | None:
        rows = self.state[table]
        for _ in range(tries):
            row = rows[rng.choice(ids)]
            if row["deleted_at"] is None and accept(row):
                return row
        return None

    def _new_room(self, rng: Random) -> tuple[str, Any]:
        building = rng.choice(self.district.buildings)
        self.next_room += 1
        return f"RM{self.next_room:07d}", building

    def _new_household(self, rng: Random, at: datetime, kind: str) -> Row:
        room_id, building = self._new_room(rng)
        self.next_household += 1
        row: Row = {
            "household_id": f"HH{self.next_household:07d}",
            "room_id": room_id,
            "building_id": building.building_id,
            "grid_id": self.grid_of[building.building_id],
            "community_id": building.community_id,
            "kind": kind,
            "head_resident_id": None,
            "member_count": 0,
            "registered_at": at,
            "updated_at": at,
            "deleted_at": None,
        }
        self.state["households"][row["household_id"]] = row
        self.household_ids.append(row["household_id"])
        self.members[row["household_id"]] = []
        return row

    def _new_resident(
        self, rng: Random, at: datetime, household: Row, birth: date, male: bool, relation: str, **kw: Any
    ) -> Row:
        local = rng.random() < (0.95 if relation == "child" and _age(birth, at.date()) < 2 else 0.3)
        region = rng.choice(LOCAL_REGION_CODES if local else migrant_region_codes(birth.year))
        while True:
            id_number = make_ric(region, birth, draw_sequence(rng, male))
            if id_number not in self.used_ids:
                self.used_ids.add(id_number)
                break
        mobile = None
        if _age(birth, at.date()) >= 16 and rng.random() < 0.97:
            mobile = draw_mobile(rng)
            while mobile in self.used_mobiles:
                mobile = draw_mobile(rng)
            self.used_mobiles.add(mobile)
        self.next_resident += 1
        row: Row = {
            "resident_id": f"R{self.next_resident:07d}",
            "id_number": id_number,
            "name": kw.get("name") or _Names.full(rng, male),
            "sex": "M" if male else "F",
            "birth_date": birth,
            "mobile": mobile,
            "household_id": household["household_id"],
            "room_id": household["room_id"],
            "building_id": household["building_id"],
            "grid_id": household["grid_id"],
            "community_id": household["community_id"],
            "relation": relation,
            "status": "active",
            "registered_at": at,
            "updated_at": at,
            "deleted_at": None,
        }
        self.state["residents"][row["resident_id"]] = row
        self.resident_ids.append(row["resident_id"])
        self._join(household, row, at)
        return row

    def _join(self, household: Row, resident: Row, at: datetime) -> None:
        self.members[household["household_id"]].append(resident["resident_id"])
        household["member_count"] = len(self.members[household["household_id"]])
        if household["head_resident_id"] is None:
            household["head_resident_id"] = resident["resident_id"]
        self._emit(at, "residents", resident)
        self._emit(at, "households", household)

    def _leave(self, resident: Row, at: datetime) -> None:
        """Take a resident out of their household; the household closes when nobody is left."""
        household = self.state["households"][resident["household_id"]]
        members = self.members[household["household_id"]]
        members.remove(resident["resident_id"])
        household["member_count"] = len(members)
        if household["head_resident_id"] == resident["resident_id"]:
            rows = self.state["residents"]
            household["head_resident_id"] = (
                min(members, key=lambda m: rows[m]["birth_date"] or date.max) if members else None
            )
        if not members:
            household["deleted_at"] = at
        self._emit(at, "households", household)

    # ---------------------------------------------------------------- events

    def _move(self, rng: Random, at: datetime) -> None:
        household = self._pick(rng, self.household_ids, "households", lambda h: h["member_count"] > 0)
        if household is None:
            return
        room_id, building = self._new_room(rng)
        place = {
            "room_id": room_id,
            "building_id": building.building_id,
            "grid_id": self.grid_of[building.building_id],
            "community_id": building.community_id,
        }
        household.update(place)
        self._emit(at, "households", household)
        for rid in self.members[household["household_id"]]:
            resident = self.state["residents"][rid]
            resident.update(place)
            self._emit(at, "residents", resident)

    def _move_out(self, rng: Random, at: datetime) -> None:
        household = self._pick(rng, self.household_ids, "households", lambda h: h["member_count"] > 0)
        if household is None:
            return
        for rid in list(self.members[household["household_id"]]):
            resident = self.state["residents"][rid]
            resident["status"] = "moved_out"
            resident["deleted_at"] = at
            self._emit(at, "residents", resident)
            self._leave(resident, at)

    def _move_in(self, rng: Random, at: datetime) -> None:
        kind = rng.choices(("single", "couple", "couple_child"), weights=(0.45, 0.3, 0.25))[0]
        household = self._new_household(rng, at, kind)
        today = at.date()
        first_male = rng.random() < 0.5
        head_age = rng.randint(22, 45)
        head = self._new_resident(
            rng,
            at,
            household,
            today - timedelta(days=head_age * 365 + rng.randrange(365)),
            first_male,
            "head",
        )
        if kind in ("couple", "couple_child"):
            age = max(20, head_age + rng.randint(-4, 4))
            self._new_resident(
                rng,
                at,
                household,
                today - timedelta(days=age * 365 + rng.randrange(365)),
                not first_male,
                "spouse",
            )
        if kind == "couple_child":
            age = rng.randint(0, 12)
            surname = head["name"][:2] if head["name"].startswith("欧阳") else head["name"][:1]
            male = rng.random() < 0.51
            self._new_resident(
                rng,
                at,
                household,
                today - timedelta(days=age * 365 + rng.randrange(365)),
                male,
                "child",
                name=_Names.full(rng, male, surname) if first_male else None,
            )

    def _leave_home(self, rng: Random, at: datetime) -> None:
        today = at.date()
        resident = self._pick(
            rng,
            self.resident_ids,
            "residents",
            lambda r: (
                r["relation"] == "child"
                and r["birth_date"] is not None
                and _age(r["birth_date"], today) >= 22
                and self.state["households"][r["household_id"]]["member_count"] > 1
            ),
        )
        if resident is None:
            return
        self._leave(resident, at)
        household = self._new_household(rng, at, "single")
        resident.update(
            {
                "household_id": household["household_id"],
                "room_id": household["room_id"],
                "building_id": household["building_id"],
                "grid_id": household["grid_id"],
                "community_id": household["community_id"],
                "relation": "head",
            }
        )
        self._join(household, resident, at)

    def _birth(self, rng: Random, at: datetime) -> None:
        today = at.date()
        mother = self._pick(
            rng,
            self.resident_ids,
            "residents",
            lambda r: (
                r["sex"] == "F"
                and r["relation"] in ("head", "spouse")
                and r["birth_date"] is not None
                and 22 <= _age(r["birth_date"], today) <= 42
            ),
        )
        if mother is None:
            return
        household = self.state["households"][mother["household_id"]]
        head = self.state["residents"].get(household["head_resident_id"] or "", mother)
        surname = head["name"][:2] if head["name"].startswith("欧阳") else head["name"][:1]
        male = rng.random() < 0.51
        born = today - timedelta(days=rng.randint(3, 40))  # registered within weeks of the birth
        self._new_resident(rng, at, household, born, male, "child", name=_Names.full(rng, male, surname))

    def _death(self, rng: Random, at: datetime) -> None:
        today = at.date()

        def frail(r: Row) -> bool:
            age = _age(r["birth_date"], today) if r["birth_date"] else 0
            return age >= 60 and rng.random() < min(1.0, (age - 50) / 45)

        resident = self._pick(rng, self.resident_ids, "residents", frail)
        if resident is None:
            return
        resident["status"] = "deceased"
        resident["deleted_at"] = at
        self._emit(at, "residents", resident)
        self._leave(resident, at)

    def _generate_day(self, day: date) -> None:
        rng = Random(f"{self.district.seed}/registry/{day.isoformat()}")
        residents = [r for r in self.state["residents"].values() if r["deleted_at"] is None]
        n_households = sum(1 for h in self.state["households"].values() if h["deleted_at"] is None)
        elderly = sum(1 for r in residents if r["birth_date"] and _age(r["birth_date"], day) >= 60)
        adult_children = sum(
            1
            for r in residents
            if r["relation"] == "child" and r["birth_date"] and _age(r["birth_date"], day) >= 22
        )
        per_day = 1 / 365
        kinds = (
            [self._move] * _poisson(rng, RATE_HOUSEHOLD_MOVE * n_households * per_day)
            + [self._move_out] * _poisson(rng, RATE_HOUSEHOLD_OUT * n_households * per_day)
            + [self._move_in] * _poisson(rng, RATE_HOUSEHOLD_IN * n_households * per_day)
            + [self._leave_home] * _poisson(rng, RATE_LEAVE_HOME * adult_children * per_day)
            + [self._birth] * _poisson(rng, RATE_BIRTH * len(residents) * per_day)
            + [self._death] * _poisson(rng, RATE_DEATH_ELDERLY * elderly * per_day)
        )
        # registry counters are open in office hours (08:30-17:30)
        opening = datetime.combine(day, time(8, 30), TZ)
        times = sorted(opening + timedelta(seconds=rng.randrange(9 * 3600)) for _ in kinds)
        rng.shuffle(kinds)
        for at, event in zip(times, kinds, strict=True):
            event(rng, at)

    def extend(self, clock: datetime) -> None:
        """Generate whole days up to and including the one holding ``clock``."""
        last = clock.astimezone(TZ).date()
        while self.next_day <= last:
            self._generate_day(self.next_day)
            self.next_day += timedelta(days=1)

    def as_of(self, clock: datetime) -> dict[str, dict[str, Row]]:
        with self.lock:
            self.extend(clock)
            rows = {t: {k: dict(v) for k, v in table.items()} for t, table in self.initial.items()}
            for at, table, key, row in self.versions:
                if at > clock:
                    break
                rows[table][key] = dict(row)
        return rows


def _initial_rows(district: District) -> _Timeline:
    grid_of = grid_of_building(district)
    start = district.start
    cutoff = start - timedelta(hours=1)
    streets = {s.street_id: s for s in district.streets}
    communities = {c.community_id: c for c in district.communities}

    grids = {}
    for g in district.grids:
        c = communities[g.community_id]
        s = streets[c.street_id]
        grids[g.grid_id] = {
            "grid_id": g.grid_id,
            "grid_name": g.name,
            "community_id": c.community_id,
            "community_name": c.name,
            "committee": c.committee,
            "street_id": s.street_id,
            "street_name": s.name,
            "street_office": s.office,
            "zipcode": c.zipcode,
            "worker_name": g.worker,
            "updated_at": MIGRATED_AT,
            "deleted_at": None,
        }
    buildings = {}
    for b in district.buildings:
        compound = district.compounds_by_id[b.compound_id]
        buildings[b.building_id] = {
            "building_id": b.building_id,
            "compound_id": b.compound_id,
            "compound_name": compound.name,
            "community_id": b.community_id,
            "street_id": b.street_id,
            "grid_id": grid_of[b.building_id],
            "building_number": b.number,
            "units": b.units,
            "floors": b.floors,
            "rooms_per_floor": b.rooms_per_floor,
            "address": b.address,
            "zipcode": b.zipcode,
            "latitude": b.lat,
            "longitude": b.long,
            "property_company": compound.property_company,
            "updated_at": MIGRATED_AT,
            "deleted_at": None,
        }
    residents = {}
    for r in district.residents:
        rng = Random(f"{district.seed}/registry/registered/{r.resident_id}")
        office = timedelta(hours=rng.randint(9, 16), minutes=rng.randrange(60))
        if r.age_on(start.date()) < 18:  # registered at birth
            registered = datetime.combine(r.birth_date, time(0), TZ) + timedelta(days=rng.randint(3, 30))
        else:
            earliest = max(r.birth_date + timedelta(days=18 * 366), date(1995, 1, 1))
            latest = (start - timedelta(days=30)).date()
            day = earliest + timedelta(days=rng.randrange(max(1, (latest - earliest).days)))
            registered = datetime.combine(day, time(0), TZ)
        registered = min(registered + office, cutoff)
        residents[r.resident_id] = {
            "resident_id": r.resident_id,
            "id_number": r.id_number,
            "name": r.name,
            "sex": r.sex,
            "birth_date": r.birth_date,
            "mobile": r.mobile,
            "household_id": r.household_id,
            "room_id": r.room_id,
            "building_id": r.building_id,
            "grid_id": r.grid_id,
            "community_id": r.community_id,
            "relation": r.relation,
            "status": "active",
            "registered_at": registered,
            "updated_at": max(registered, MIGRATED_AT),
            "deleted_at": None,
        }
    households = {}
    for h in district.households:
        members = [residents[m] for m in h.member_ids]
        head = next((m for m in members if m["relation"] == "head"), members[0])
        registered = min(m["registered_at"] for m in members)
        households[h.household_id] = {
            "household_id": h.household_id,
            "room_id": h.room_id,
            "building_id": h.building_id,
            "grid_id": h.grid_id,
            "community_id": h.community_id,
            "kind": h.kind,
            "head_resident_id": head["resident_id"],
            "member_count": len(members),
            "registered_at": registered,
            "updated_at": max(max(m["updated_at"] for m in members), MIGRATED_AT),
            "deleted_at": None,
        }
    initial = {"grids": grids, "buildings": buildings, "households": households, "residents": residents}
    timeline = _Timeline(
        district=district,
        initial=initial,
        state={t: {k: dict(v) for k, v in rows.items()} for t, rows in initial.items()},
        members={h.household_id: list(h.member_ids) for h in district.households},
        resident_ids=list(residents),
        household_ids=list(households),
        used_ids={r.id_number for r in district.residents},
        used_mobiles={r.mobile for r in district.residents if r.mobile},
        next_day=start.date(),
        next_resident=len(district.residents),
        next_household=len(district.households),
        next_room=len(district.rooms),
        grid_of=grid_of,
    )
    return timeline


_TIMELINES: weakref.WeakKeyDictionary[District, _Timeline] = weakref.WeakKeyDictionary()
_TIMELINES_LOCK = threading.Lock()


def _timeline(district: District) -> _Timeline:
    with _TIMELINES_LOCK:
        timeline = _TIMELINES.get(district)
        if timeline is None:
            timeline = _TIMELINES[district] = _initial_rows(district)
        return timeline


def tables(district: District, dirt: DirtConfig | None = None) -> dict[str, list[Row]]:
    """The registry as of ``district.clock``: rows per table exactly as :func:`sync` writes them.

    Ground truth for tests (new residents, moves, soft deletes, and the dirt applied).
    """
    rows = _timeline(district).as_of(district.clock)
    out: dict[str, list[Row]] = {t: list(rows[t].values()) for t in TABLES}
    if dirt is not None:
        for resident in out["residents"]:
            rid = resident["resident_id"]
            if dirty(dirt, district.seed, "malformed-id", rid):
                resident["id_number"] = malform_id(resident["id_number"])
            if dirty(dirt, district.seed, "missing", rid):
                resident["birth_date"] = None
    return out


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

_DBNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _connect_args(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn)
    database = unquote(parts.path.lstrip("/"))
    if not _DBNAME.match(database):
        raise ValueError(f"registry database name {database!r} must be a plain identifier")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "user": unquote(parts.username) if parts.username else "postgres",
        "password": unquote(parts.password) if parts.password else None,
        "dbname": database,
    }


def ensure_database(dsn: str) -> None:
    """Create the registry database if it does not exist (via the server's ``postgres`` database)."""
    import psycopg2
    from psycopg2 import errors

    args = _connect_args(dsn)
    admin = psycopg2.connect(**{**args, "dbname": "postgres"})
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (args["dbname"],))
            if cur.fetchone() is None:
                try:
                    cur.execute(f'create database "{args["dbname"]}"')
                except errors.DuplicateDatabase:
                    pass  # created meanwhile by a concurrent sync
    finally:
        admin.close()


def drop_database(dsn: str) -> None:
    """Drop the DSN's database (tests and benchmarks clean up the systems they seeded)."""
    import psycopg2

    args = _connect_args(dsn)
    admin = psycopg2.connect(**{**args, "dbname": "postgres"})
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{args["dbname"]}" with (force)')
    finally:
        admin.close()


def sync(district: District, dsn: str, dirt: DirtConfig | None = None) -> dict[str, int]:
    """Bring the registry database up to ``district.clock``: ``{table: rows inserted or changed}``."""
    import psycopg2
    from psycopg2.extras import execute_values

    ensure_database(dsn)
    data = tables(district, dirt)
    con = psycopg2.connect(**_connect_args(dsn))
    try:
        with con, con.cursor() as cur:
            cur.execute(DDL)
            counts = {}
            for table, columns in TABLES.items():
                key = PRIMARY_KEYS[table]
                rest = [c for c in columns if c != key]
                sql = (
                    f"insert into {table} as t ({', '.join(columns)}) values %s "
                    f"on conflict ({key}) do update set "
                    + ", ".join(f"{c} = excluded.{c}" for c in rest)
                    + f" where ({', '.join('t.' + c for c in rest)}) is distinct from "
                    f"({', '.join('excluded.' + c for c in rest)}) returning 1"
                )
                values = [tuple(row[c] for c in columns) for row in data[table]]
                written = execute_values(cur, sql, values, page_size=2000, fetch=True) if values else []
                counts[table] = len(written)
    finally:
        con.close()
    return counts
