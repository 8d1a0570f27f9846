"""The seeded synthetic district: places, households, residents and their service requests.

This module is the ground truth shared by every simulated source system (Open311 today; FHIR,
OneRoster, CKAN, HSDS, Socrata and database seeding later). It knows nothing about HTTP: serving
code reads :meth:`District.snapshot` (an immutable, pre-serialised view) and calls
:meth:`District.advance` to move time forward.

Determinism: everything is derived from ``(residents, seed, start, days[, requests])`` and, after
generation, from the number of :meth:`District.advance` calls and their arguments. No wall-clock
time is ever read.
"""

from __future__ import annotations

import heapq
import json
import math
import threading
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from itertools import accumulate
from random import Random
from typing import Any

from faker import Faker
from faker.providers.person.zh_CN import Provider as _ZhPersonProvider

from ingest.simulator import catalogue as cat
from ingest.simulator.dirt import DirtConfig, DirtLog, plan_dirt
from ingest.simulator.identifiers import (
    LOCAL_REGION_CODES,
    draw_mobile,
    draw_sequence,
    make_ric,
    migrant_region_codes,
)

TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
DEFAULT_START = datetime(2026, 1, 1, tzinfo=TZ)
RESIDENTS_PER_GRID = 170
REQUESTS_PER_RESIDENT = 0.3


def iso(dt: datetime) -> str:
    """ISO 8601 with the +08:00 offset, whole seconds (e.g. ``2026-01-03T09:15:00+08:00``)."""
    return dt.astimezone(TZ).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Places and people
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Street:
    street_id: str
    name: str
    office: str  # 街道办事处
    zipcode: str
    lat: float
    long: float


@dataclass(frozen=True, slots=True)
class Community:
    community_id: str
    street_id: str
    name: str
    committee: str  # 居民委员会
    zipcode: str
    lat: float
    long: float


@dataclass(frozen=True, slots=True)
class Grid:
    grid_id: str
    community_id: str
    name: str
    worker: str  # the grid worker (staff, not a resident)


@dataclass(frozen=True, slots=True)
class Compound:
    compound_id: str
    community_id: str
    name: str
    road: str
    gate_number: int
    address: str  # e.g. 幸福路12号
    property_company: str


@dataclass(frozen=True, slots=True)
class Building:
    building_id: str
    compound_id: str
    community_id: str
    street_id: str
    number: int  # 栋
    units: int
    floors: int
    rooms_per_floor: int  # per unit
    address: str  # building level, e.g. 幸福路12号3栋
    zipcode: str
    lat: float
    long: float

    @property
    def capacity(self) -> int:
        return self.units * self.floors * self.rooms_per_floor


@dataclass(frozen=True, slots=True)
class Room:
    room_id: str
    building_id: str
    unit: int
    floor: int
    number: str  # e.g. "1201"
    label: str  # e.g. 幸福路12号3栋2单元1201室 (never served by Open311)


@dataclass(slots=True)
class Household:
    household_id: str
    room_id: str
    building_id: str
    grid_id: str
    community_id: str
    kind: str  # elderly_alone, couple_child, three_generation, ...
    member_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Resident:
    resident_id: str
    id_number: str  # 18-character GB 11643 resident ID number
    name: str
    sex: str  # "M" | "F", consistent with the parity of id_number[14:17]
    birth_date: date
    mobile: str | None
    household_id: str
    room_id: str
    building_id: str
    grid_id: str
    community_id: str
    relation: str  # head, spouse, child, parent

    def age_on(self, day: date) -> int:
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - int(before_birthday)


# --------------------------------------------------------------------------------------------
# Service requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestEvent:
    at: datetime
    status: str  # open | closed
    notes: str


@dataclass(frozen=True, slots=True)
class PublishedRequest:
    """One served version of a request: the Open311 dict and its pre-serialised JSON."""

    request_id: str
    requested: datetime
    updated: datetime
    status: str
    service_code: str
    data: dict[str, Any]  # treat as read-only
    body: bytes


@dataclass(slots=True)
class ServiceRequest:
    """Internal record of a request, including its full (partly future) timeline."""

    request_id: str
    service: cat.ServiceType
    requester_id: str  # internal link, never served
    building: Building
    channel: str
    requested: datetime
    description: str
    agency: str
    media_url: str | None
    events: list[RequestEvent]
    visible: int = 0  # index of the latest event at or before the district clock
    published: PublishedRequest | None = None
    requester: Resident | None = None  # who filed it (served in the GeoReport v2 POST fields)

    @property
    def expected(self) -> datetime:
        return self.requested + timedelta(hours=self.service.sla_hours)

    @property
    def current(self) -> RequestEvent:
        return self.events[self.visible]

    def render(self) -> PublishedRequest:
        event = self.current
        data: dict[str, Any] = {
            "service_request_id": self.request_id,
            "status": event.status,
            "status_notes": event.notes,
            "service_name": self.service.service_name,
            "service_code": self.service.service_code,
            "description": self.description,
            "agency_responsible": self.agency,
            "service_notice": self.service.service_notice,
            "requested_datetime": iso(self.requested),
            "updated_datetime": iso(event.at),
            "expected_datetime": iso(self.expected),
            "address": self.building.address,
            "address_id": self.building.building_id,
            "zipcode": self.building.zipcode,
            "lat": self.building.lat,
            "long": self.building.long,
            "media_url": self.media_url,
            "channel": self.channel,
        }
        if self.requester is not None:
            # The hotline's internal export carries who filed the request, in the GeoReport v2
            # POST field names; account_id is the resident ID number the hotline keys people by.
            data.update(
                {
                    "account_id": self.requester.id_number,
                    "first_name": self.requester.name[1:],
                    "last_name": self.requester.name[:1],
                    "phone": self.requester.mobile,
                    # grid-management tags (网格化管理) the district adds to every request
                    "grid_code": self.requester.grid_id,
                    "community_code": self.requester.community_id,
                }
            )
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        return PublishedRequest(
            self.request_id, self.requested, event.at, event.status, self.service.service_code, data, body
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Immutable view of the served requests, ordered by (updated_datetime, service_request_id)."""

    version: int
    clock: datetime
    records: tuple[PublishedRequest, ...]
    updated: tuple[datetime, ...]  # parallel to records, for bisect
    by_id: dict[str, PublishedRequest]


# --------------------------------------------------------------------------------------------
# Generation helpers
# --------------------------------------------------------------------------------------------

# (kind, roles, weight): E = 60+, W = working-age adult, C = child 0-14, Y = 15-24 living with parents.
# Weights tuned so that the mean household size is ~2.6 with ~18% aged 0-14 and ~19% aged 60+.
_HOUSEHOLD_TEMPLATES: tuple[tuple[str, str, float], ...] = (
    ("elderly_alone", "E", 0.090),
    ("elderly_couple", "EE", 0.060),
    ("single", "W", 0.110),
    ("couple", "WW", 0.155),
    ("couple_child", "WWC", 0.175),
    ("couple_two_children", "WWCC", 0.055),
    ("three_generation", "EEWWC", 0.080),
    ("three_generation_small", "EWWC", 0.080),
    ("couple_young_adult", "WWY", 0.120),
    ("adult_with_parent", "WE", 0.050),
    ("single_parent", "WC", 0.025),
)
# Age bands of people 60+ (2020 census shape: ~72% of the 60+ are 65+).
_ELDER_BANDS = (
    (60, 64, 0.28), (65, 69, 0.25), (70, 74, 0.18), (75, 79, 0.12), (80, 84, 0.09), (85, 97, 0.08),
)  # fmt: skip
_ADULT_BANDS = ((18, 24, 0.12), (25, 34, 0.35), (35, 44, 0.23), (45, 59, 0.30))
_BUILDING_STYLES = {  # style: (units range, floors choices, rooms per floor per unit range)
    "walkup": ((1, 3), (5, 6, 7), (2, 2)),
    "midrise": ((1, 2), (11, 12), (2, 4)),
    "highrise": ((1, 2), (18, 24, 32), (3, 4)),
}
_HOUR_WEIGHTS = (
    1.0, 0.5, 0.3, 0.3, 0.3, 0.5, 1.5, 3.0, 6.0, 8.0, 8.0, 7.0,
    5.0, 5.0, 7.0, 7.0, 6.0, 5.0, 5.0, 5.0, 4.0, 3.0, 2.0, 1.5,
)  # fmt: skip
_HOUR_CUM = tuple(accumulate(_HOUR_WEIGHTS))
_CHANNEL_CUM_ELDER = tuple(accumulate((0.35, 0.10, 0.02, 0.20, 0.33)))
_CHANNEL_CUM_ADULT = tuple(accumulate((0.25, 0.35, 0.20, 0.12, 0.08)))


def _band_age(rng: Random, bands: tuple[tuple[int, int, float], ...]) -> int:
    lo, hi, _ = rng.choices(bands, weights=[b[2] for b in bands])[0]
    return rng.randint(lo, hi)


def _birth_date(rng: Random, ref: date, age: int) -> date:
    """A birth date giving exactly ``age`` completed years on ``ref``."""
    try:
        anchor = ref.replace(year=ref.year - age)
    except ValueError:  # 29 February
        anchor = ref.replace(year=ref.year - age, day=28)
    return anchor - timedelta(days=rng.randrange(364))


def _seconds(x: float) -> timedelta:
    return timedelta(seconds=round(x))


class _NameMaker:
    """Chinese names from Faker's zh_CN person data, drawn with the seeded Faker instance's RNG."""

    def __init__(self, fake: Faker) -> None:
        self._rng: Random = fake.random
        surnames = _ZhPersonProvider.last_names
        self._surnames = list(surnames)
        self._surname_cum = list(accumulate(surnames.values()))
        self._male = list(_ZhPersonProvider.first_names_male)
        self._female = list(_ZhPersonProvider.first_names_female)
        self._single_male = [g for g in self._male if len(g) == 1]
        self._single_female = [g for g in self._female if len(g) == 1]

    def surname(self) -> str:
        return self._rng.choices(self._surnames, cum_weights=self._surname_cum)[0]

    def given(self, male: bool) -> str:
        pool = self._male if male else self._female
        given = self._rng.choice(pool)
        if len(given) == 1 and self._rng.random() < 0.35:  # some two-character given names
            given += self._rng.choice(self._single_male if male else self._single_female)
        return given


@dataclass(slots=True)
class _Person:
    role: str
    age: int
    male: bool
    surname: str
    relation: str


# --------------------------------------------------------------------------------------------
# The district
# --------------------------------------------------------------------------------------------


class District:
    """A fictional urban district and its Open311 service requests (ground truth)."""

    def __init__(self, residents: int, seed: int, start: datetime, days: int) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.seed = seed
        self.resident_count = residents
        self.start = start.astimezone(TZ).replace(microsecond=0)
        self.days = days
        self.name = cat.DISTRICT_NAME
        self.streets: list[Street] = []
        self.communities: list[Community] = []
        self.grids: list[Grid] = []
        self.compounds: list[Compound] = []
        self.buildings: list[Building] = []
        self.rooms: list[Room] = []
        self.households: list[Household] = []
        self.residents: list[Resident] = []
        self.service_types: tuple[cat.ServiceType, ...] = cat.SERVICE_TYPES
        self.dirt_log = DirtLog()
        self._clock = self.start + timedelta(days=days)
        self._lock = threading.RLock()
        self._requests: list[ServiceRequest] = []
        self._request_by_id: dict[str, ServiceRequest] = {}
        self._heap: list[tuple[datetime, int]] = []  # (next pending event time, index into _requests)
        self._order: list[ServiceRequest] = []
        self._snapshot = Snapshot(0, self._clock, (), (), {})
        self._advances = 0
        self._daily_rate = 0.0
        self._names: set[str] = set()
        # requester model, kept for advance()
        self._pool: list[Resident] = []
        self._pool_cum: list[float] = []
        self._hot: list[tuple[Building, str]] = []
        self._hot_share = 0.0
        self._adults_by_building: dict[str, list[Resident]] = {}

    # ---------------------------------------------------------------- construction

    @classmethod
    def generate(
        cls,
        residents: int = 1000,
        seed: int = 42,
        start: datetime = DEFAULT_START,
        days: int = 90,
        requests: int | None = None,
    ) -> District:
        """Generate a district deterministically from ``(residents, seed, start, days)``.

        ``requests`` defaults to ``round(residents * 0.3)`` requests spread over ``[start, start+days)``;
        the district clock is then ``start + days``.
        """
        if residents < 1:
            raise ValueError("residents must be >= 1")
        if days < 1:
            raise ValueError("days must be >= 1")
        district = cls(residents, seed, start, days)
        rng = Random(seed)
        fake = Faker("zh_CN")
        fake.seed_instance(seed)
        district._build_places_and_people(rng, _NameMaker(fake))
        n_requests = round(residents * REQUESTS_PER_RESIDENT) if requests is None else requests
        district._daily_rate = n_requests / days
        district._build_requester_model(Random(f"{seed}/requesters"))
        req_rng = Random(f"{seed}/requests")
        before_start = district.start - timedelta(seconds=1)
        created = district._create_requests(req_rng, n_requests, before_start, days * 86400)
        district._settle(created, district._clock)
        district._publish(created)
        return district

    def _build_places_and_people(self, rng: Random, names: _NameMaker) -> None:
        ref = self.start.date()
        # 1. household compositions, exactly `resident_count` people in total
        kinds = [t[0] for t in _HOUSEHOLD_TEMPLATES]
        roles_of = {t[0]: t[1] for t in _HOUSEHOLD_TEMPLATES}
        cum = list(accumulate(t[2] for t in _HOUSEHOLD_TEMPLATES))
        plans: list[tuple[str, str]] = []
        remaining = self.resident_count
        while remaining > 0:
            kind = rng.choices(kinds, cum_weights=cum)[0]
            roles = roles_of[kind][:remaining]
            plans.append((kind, roles))
            remaining -= len(roles)

        # 2. streets and communities
        for s, (sname, zipcode) in enumerate(zip(cat.STREET_NAMES, cat.STREET_ZIPCODES, strict=True)):
            angle = 2 * math.pi * s / len(cat.STREET_NAMES)
            self.streets.append(
                Street(
                    f"ST{s + 1:02d}",
                    sname,
                    f"{cat.DISTRICT_NAME}{sname}办事处",
                    zipcode,
                    round(cat.CENTRE_LAT + 0.012 * math.sin(angle), 6),
                    round(cat.CENTRE_LONG + 0.014 * math.cos(angle), 6),
                )
            )
        per_street = len(cat.COMMUNITY_NAMES) // len(self.streets)
        for c, cname in enumerate(cat.COMMUNITY_NAMES):
            street = self.streets[c // per_street]
            angle = 2 * math.pi * (c % per_street) / per_street + rng.uniform(-0.3, 0.3)
            self.communities.append(
                Community(
                    f"CM{c + 1:02d}",
                    street.street_id,
                    cname,
                    f"{cname}居民委员会",
                    street.zipcode,
                    round(street.lat + 0.005 * math.sin(angle), 6),
                    round(street.long + 0.006 * math.cos(angle), 6),
                )
            )

        # 3. households per community (random community sizes), grids per community
        n_comm = len(self.communities)
        weights = [rng.uniform(0.6, 1.4) for _ in range(n_comm)]
        hh_counts = _apportion(len(plans), weights, minimum=1 if len(plans) >= n_comm else 0)
        offsets = [0, *accumulate(hh_counts)]
        people_counts = [
            sum(len(plans[i][1]) for i in range(offsets[c], offsets[c + 1])) for c in range(n_comm)
        ]
        total_grids = max(n_comm, round(self.resident_count / RESIDENTS_PER_GRID))
        grid_counts = _apportion(total_grids, [max(p, 1) for p in people_counts], minimum=1)

        used_compound_names: set[str] = set()
        used_ids: set[str] = set()
        used_mobiles: set[str] = set()
        for c, community in enumerate(self.communities):
            street = next(s for s in self.streets if s.street_id == community.street_id)
            grids = []
            for g in range(grid_counts[c]):
                worker = names.surname() + names.given(rng.random() < 0.4)
                grid_id = f"GD{len(self.grids) + 1:04d}"
                grid = Grid(grid_id, community.community_id, f"{community.name}第{g + 1}网格", worker)
                self.grids.append(grid)
                grids.append(grid)
            comm_plans = plans[offsets[c] : offsets[c + 1]]
            buildings = self._build_housing(rng, community, street, c, len(comm_plans), used_compound_names)
            rooms = self._occupy_rooms(rng, buildings, len(comm_plans))
            n_grid = len(grids)
            for h, ((kind, roles), room) in enumerate(zip(comm_plans, rooms, strict=True)):
                grid = grids[h * n_grid // max(len(comm_plans), 1)]
                household = Household(
                    f"HH{len(self.households) + 1:07d}",
                    room.room_id,
                    room.building_id,
                    grid.grid_id,
                    community.community_id,
                    kind,
                )
                self.households.append(household)
                for person in self._compose(rng, names, roles):
                    resident = self._make_resident(rng, names, person, household, ref, used_ids, used_mobiles)
                    household.member_ids.append(resident.resident_id)
                    self.residents.append(resident)
                    self._names.add(resident.name)

        self.residents_by_id: dict[str, Resident] = {r.resident_id: r for r in self.residents}
        self.buildings_by_id: dict[str, Building] = {b.building_id: b for b in self.buildings}
        self.households_by_id: dict[str, Household] = {h.household_id: h for h in self.households}
        self.rooms_by_id: dict[str, Room] = {r.room_id: r for r in self.rooms}
        self.compounds_by_id: dict[str, Compound] = {c.compound_id: c for c in self.compounds}

    def _build_housing(
        self, rng: Random, community: Community, street: Street, c: int, n_households: int, used: set[str]
    ) -> list[Building]:
        occupancy = rng.uniform(0.85, 0.95)
        needed = max(1, math.ceil(n_households / occupancy))
        roads = [cat.ROAD_NAMES[(2 * c + k) % len(cat.ROAD_NAMES)] for k in (0, 1)]
        gate = {road: rng.randint(1, 20) for road in roads}
        buildings: list[Building] = []
        capacity = 0
        while capacity < needed:
            road = rng.choice(roads)
            gate[road] += rng.randint(1, 12)
            style = rng.choices(list(_BUILDING_STYLES), weights=(0.5, 0.3, 0.2))[0]
            name = self._compound_name(rng, style, used)
            compound = Compound(
                f"CP{len(self.compounds) + 1:05d}",
                community.community_id,
                name,
                road,
                gate[road],
                f"{road}{gate[road]}号",
                rng.choice(cat.PROPERTY_COMPANIES),
            )
            self.compounds.append(compound)
            (u_lo, u_hi), floor_choices, (r_lo, r_hi) = _BUILDING_STYLES[style]
            clat = community.lat + rng.uniform(-0.002, 0.002)
            clong = community.long + rng.uniform(-0.0025, 0.0025)
            for number in range(1, rng.randint(2, 10) + 1):
                if capacity >= needed:
                    break
                building = Building(
                    f"BD{len(self.buildings) + 1:06d}",
                    compound.compound_id,
                    community.community_id,
                    street.street_id,
                    number,
                    rng.randint(u_lo, u_hi),
                    rng.choice(floor_choices),
                    rng.randint(r_lo, r_hi),
                    f"{compound.address}{number}栋",
                    community.zipcode,
                    round(clat + rng.uniform(-0.0006, 0.0006), 6),
                    round(clong + rng.uniform(-0.0007, 0.0007), 6),
                )
                self.buildings.append(building)
                buildings.append(building)
                capacity += building.capacity
        return buildings

    @staticmethod
    def _compound_name(rng: Random, style: str, used: set[str]) -> str:
        suffixes = ("新村", "小区") if style == "walkup" else ("苑", "花园", "公寓", "家园")
        base = rng.choice(cat.COMPOUND_PREFIXES) + rng.choice(suffixes)
        name, phase = base, 1
        while name in used:
            phase += 1
            name = f"{base}{phase}期"
        used.add(name)
        return name

    def _occupy_rooms(self, rng: Random, buildings: list[Building], n: int) -> list[Room]:
        caps = [b.capacity for b in buildings]
        cum = list(accumulate(caps))
        slots = sorted(rng.sample(range(cum[-1]), n)) if n else []
        rooms: list[Room] = []
        for slot in slots:
            b = bisect_right(cum, slot)
            building = buildings[b]
            local = slot - (cum[b - 1] if b else 0)
            per_unit = building.floors * building.rooms_per_floor
            unit, rest = divmod(local, per_unit)
            floor, pos = divmod(rest, building.rooms_per_floor)
            number = f"{floor + 1}{pos + 1:02d}"
            room = Room(
                f"RM{len(self.rooms) + 1:07d}",
                building.building_id,
                unit + 1,
                floor + 1,
                number,
                f"{building.address}{unit + 1}单元{number}室",
            )
            self.rooms.append(room)
            rooms.append(room)
        return rooms

    @staticmethod
    def _compose(rng: Random, names: _NameMaker, roles: str) -> list[_Person]:
        """Ages, sexes, surnames and relations of one household's members."""
        family = names.surname()
        n_c = roles.count("C")
        n_w = roles.count("W")
        children = [rng.randint(0, 14) for _ in range(n_c)]
        if "Y" in roles:
            children.append(rng.randint(15, 24))
        people: list[_Person] = []
        if n_w:
            if children:
                first = min(59, max(children) + rng.randint(22, 36))
            elif "E" in roles:
                first = rng.randint(30, 59)
            else:
                first = _band_age(rng, _ADULT_BANDS)
            head_male = n_w == 2 or rng.random() < 0.5
            people.append(_Person("W", first, head_male, family if head_male else names.surname(), "head"))
            if n_w == 2:
                spouse = min(59, max(20, first + rng.randint(-5, 3)))
                people.append(_Person("W", spouse, False, names.surname(), "spouse"))
            for age in children:
                surname = family if rng.random() < 0.9 or not head_male else names.surname()
                people.append(_Person("C" if age < 15 else "Y", age, rng.random() < 0.51, surname, "child"))
            for e in range(roles.count("E")):
                age = max(_band_age(rng, _ELDER_BANDS), min(97, first + rng.randint(22, 32)))
                male = e == 0 if roles.count("E") == 2 else rng.random() < 0.45
                surname = family if male and head_male else names.surname()
                people.append(_Person("E", age, male, surname, "parent"))
        else:  # elderly only
            n_e = roles.count("E")
            first = _band_age(rng, _ELDER_BANDS)
            male = rng.random() < (0.5 if n_e == 2 else 0.38)  # more widows than widowers live alone
            people.append(_Person("E", first, male, family, "head"))
            if n_e == 2:
                spouse = min(97, max(60, first + rng.randint(-6, 4)))
                people.append(_Person("E", spouse, not male, names.surname(), "spouse"))
        return people

    def _make_resident(
        self,
        rng: Random,
        names: _NameMaker,
        person: _Person,
        household: Household,
        ref: date,
        used_ids: set[str],
        used_mobiles: set[str],
    ) -> Resident:
        birth = _birth_date(rng, ref, person.age)
        # children were mostly born locally; adults include a share of migrants
        local_share = 0.9 if person.age < 15 else 0.65
        codes = LOCAL_REGION_CODES if rng.random() < local_share else migrant_region_codes(birth.year)
        region = rng.choice(codes)
        while True:
            id_number = make_ric(region, birth, draw_sequence(rng, person.male))
            if id_number not in used_ids:
                used_ids.add(id_number)
                break
        mobile_p = (
            0.0
            if person.age < 15
            else 0.6
            if person.age < 18
            else 0.97
            if person.age < 70
            else 0.85
            if person.age < 80
            else 0.55
        )
        mobile = None
        if rng.random() < mobile_p:
            mobile = draw_mobile(rng)
            while mobile in used_mobiles:
                mobile = draw_mobile(rng)
            used_mobiles.add(mobile)
        return Resident(
            f"R{len(self.residents) + 1:07d}",
            id_number,
            person.surname + names.given(person.male),
            "M" if person.male else "F",
            birth,
            mobile,
            household.household_id,
            household.room_id,
            household.building_id,
            household.grid_id,
            household.community_id,
            person.relation,
        )

    def _build_requester_model(self, rng: Random) -> None:
        """Who files requests: a weighted minority of adults, plus a few chronic-complaint buildings."""
        ref = self.start.date()
        adults = [r for r in self.residents if r.age_on(ref) >= 18]
        if not adults:
            adults = list(self.residents)
        for r in adults:
            self._adults_by_building.setdefault(r.building_id, []).append(r)
        pool_size = max(1, min(len(adults), round(len(self.residents) * 0.12)))
        self._pool = rng.sample(adults, pool_size)
        # heavy-tailed but capped: a few frequent complainers, nobody files hundreds of requests
        self._pool_cum = list(accumulate(min(rng.paretovariate(1.5), 15.0) for _ in self._pool))
        candidates = [b for b in self.buildings if b.building_id in self._adults_by_building]
        n_hot = max(1, round(len(candidates) * 0.05))
        self._hot = [(b, rng.choice(cat.HOTSPOT_SERVICES)) for b in rng.sample(candidates, n_hot)]
        # a chronic building files about four times the requests of an average building
        self._hot_share = min(0.25, 3.0 * n_hot / len(candidates))

    # ---------------------------------------------------------------- requests

    def _create_requests(
        self, rng: Random, n: int, after: datetime, span_seconds: int
    ) -> list[ServiceRequest]:
        """Create ``n`` requests with requested_datetime in ``(after, after + span_seconds]``."""
        ref = self.start.date()
        codes = [s.service_code for s in self.service_types]
        cum_adult = list(accumulate(s.weight for s in self.service_types))
        elder_boost = {"ELDERLY_CARE": 4.0, "POLICY_ENQUIRY": 1.5}
        cum_elder = list(
            accumulate(s.weight * elder_boost.get(s.service_code, 1.0) for s in self.service_types)
        )
        drafts = []
        for _ in range(n):
            offset = _draw_offset(rng, after, span_seconds)
            if self._hot and rng.random() < self._hot_share:
                building, hot_code = rng.choice(self._hot)
                requester = rng.choice(self._adults_by_building[building.building_id])
                elder = requester.age_on(ref) >= 60
                code = hot_code if rng.random() < 0.7 else rng.choices(codes, cum_weights=cum_adult)[0]
            else:
                requester = rng.choices(self._pool, cum_weights=self._pool_cum)[0]
                building = self.buildings_by_id[requester.building_id]
                elder = requester.age_on(ref) >= 60
                code = rng.choices(codes, cum_weights=cum_elder if elder else cum_adult)[0]
            drafts.append((after + timedelta(seconds=offset), code, requester, building, elder, rng.random()))
        drafts.sort(key=lambda d: d[0])  # ids follow requested time
        created: list[ServiceRequest] = []
        for requested, code, requester, building, elder, _ in drafts:
            service = cat.SERVICE_BY_CODE[code]
            request_id = f"SR-{len(self._requests) + 1:07d}"
            channel_cum = _CHANNEL_CUM_ELDER if elder else _CHANNEL_CUM_ADULT
            channel = rng.choices(cat.CHANNELS, cum_weights=channel_cum)[0]
            media_url = None
            if channel in ("app", "wechat") and rng.random() < 0.2:
                media_url = f"https://media.minghu.example/open311/{request_id}.jpg"
            agency = self._agency(service, building)
            request = ServiceRequest(
                request_id,
                service,
                requester.resident_id,
                building,
                channel,
                requested,
                self._description(rng, service, building),
                agency,
                media_url,
                _timeline(rng, service, requested, agency, self._street_office(building)),
                requester=requester,
            )
            self._requests.append(request)
            self._request_by_id[request_id] = request
            created.append(request)
        return created

    def _street_office(self, building: Building) -> str:
        return next(s.office for s in self.streets if s.street_id == building.street_id)

    def _agency(self, service: cat.ServiceType, building: Building) -> str:
        if service.responsible == cat.PROPERTY_COMPANY:
            return self.compounds_by_id[building.compound_id].property_company
        if service.responsible == cat.RESIDENTS_COMMITTEE:
            return next(c.committee for c in self.communities if c.community_id == building.community_id)
        if service.responsible == cat.SOCIAL_ORG:
            return cat.SOCIAL_ORGANISATION
        return self._street_office(building)

    def _description(self, rng: Random, service: cat.ServiceType, building: Building) -> str:
        """A free-text description that provably contains no resident name."""
        templates = list(cat.DESCRIPTIONS[service.service_code])
        rng.shuffle(templates)
        for template in templates:
            text = template.format(unit=rng.randint(1, building.units))
            if not self._mentions_name(text):
                return text
        return service.description

    def _mentions_name(self, text: str) -> bool:
        return any(text[i : i + k] in self._names for k in (2, 3, 4) for i in range(len(text) - k + 1))

    def _settle(self, requests: list[ServiceRequest], clock: datetime) -> None:
        """Make every event at or before ``clock`` visible; queue the next pending event."""
        for request in requests:
            events = request.events
            while request.visible + 1 < len(events) and events[request.visible + 1].at <= clock:
                request.visible += 1
            if request.visible + 1 < len(events):
                heapq.heappush(self._heap, (events[request.visible + 1].at, self._index(request)))

    def _index(self, request: ServiceRequest) -> int:
        return int(request.request_id[3:]) - 1

    def _publish(self, changed: list[ServiceRequest]) -> None:
        for request in changed:
            request.published = request.render()
        changed_ids = {r.request_id for r in changed}
        changed = sorted(changed, key=lambda r: (r.current.at, r.request_id))
        # every unchanged request was last updated at or before the previous clock, every changed one
        # after it, so the new order is the old order minus the changed ones, then the changed ones.
        self._order = [r for r in self._order if r.request_id not in changed_ids] + changed
        records = tuple(r.published for r in self._order if r.published is not None)
        self._snapshot = Snapshot(
            self._snapshot.version + 1,
            self._clock,
            records,
            tuple(p.updated for p in records),
            {p.request_id: p for p in records},
        )

    # ---------------------------------------------------------------- public API

    @property
    def clock(self) -> datetime:
        """The district's current time (timezone-aware, +08:00)."""
        return self._clock

    def snapshot(self) -> Snapshot:
        """The current immutable served view (safe to read from other threads)."""
        return self._snapshot

    def services(self) -> list[dict[str, Any]]:
        """Open311 service list (as served by ``services.json``)."""
        return [s.to_open311() for s in self.service_types]

    def requests(self) -> list[dict[str, Any]]:
        """Current clean version of every request, ordered by (updated_datetime, service_request_id).

        These are the dicts the Open311 server serves when no dirt is configured.
        """
        return [dict(p.data) for p in self._snapshot.records]

    def request(self, request_id: str) -> dict[str, Any] | None:
        published = self._snapshot.by_id.get(request_id)
        return None if published is None else dict(published.data)

    def request_records(self) -> list[ServiceRequest]:
        """Internal request records (with requester link and full timeline), in id order."""
        return list(self._requests)

    def requester_of(self, request_id: str) -> Resident:
        """The resident who filed a request (internal link; never served over Open311)."""
        return self.residents_by_id[self._request_by_id[request_id].requester_id]

    def dirt_plan(self, config: DirtConfig) -> dict[str, dict[str, str]]:
        """Which current request ids the given dirt config affects: ``{kind: {request_id: detail}}``."""
        return plan_dirt(config, self.seed, [p.request_id for p in self._snapshot.records])

    def advance(self, days: float = 1.0, new_requests: int | None = None) -> dict[str, int]:
        """Move the clock forward ``days``; create new requests and progress existing ones.

        Every change gets an ``updated_datetime`` in ``(previous clock, new clock]``. ``new_requests``
        defaults to the generation rate (about ``residents * 0.3 / 90`` a day). Deterministic: the
        randomness derives from the seed and the number of previous advances.
        Returns ``{"new": n, "updated": m}`` (m = existing requests whose served version changed).
        """
        span = round(days * 86400)
        if span < 1:
            raise ValueError("days must be positive (at least one second)")
        if new_requests is not None and new_requests < 0:
            raise ValueError("new_requests must be >= 0")
        with self._lock:
            self._advances += 1
            rng = Random(f"{self.seed}/advance/{self._advances}")
            old_clock = self._clock
            new_clock = old_clock + timedelta(seconds=span)
            updated: list[ServiceRequest] = []
            while self._heap and self._heap[0][0] <= new_clock:
                _, idx = heapq.heappop(self._heap)
                updated.append(self._requests[idx])
            if new_requests is None:
                new_requests = round(self._daily_rate * span / 86400 * rng.uniform(0.8, 1.2))
            created = self._create_requests(rng, new_requests, old_clock, span)
            self._clock = new_clock
            self._settle(updated + created, new_clock)
            self._publish(updated + created)
            return {"new": len(created), "updated": len(updated)}


def _apportion(total: int, weights: list[float], minimum: int = 0) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder), each >= minimum."""
    n = len(weights)
    base = [minimum] * n
    rest = total - minimum * n
    if rest <= 0:
        return base
    wsum = sum(weights)
    raw = [rest * w / wsum for w in weights]
    parts = [int(x) for x in raw]
    order = sorted(range(n), key=lambda i: (raw[i] - parts[i], -i), reverse=True)
    for i in order[: rest - sum(parts)]:
        parts[i] += 1
    return [b + p for b, p in zip(base, parts, strict=True)]


def _draw_offset(rng: Random, after: datetime, span_seconds: int) -> int:
    """Seconds in [1, span_seconds] after ``after``, shaped towards daytime hours."""
    uniform = rng.randint(1, span_seconds)
    moment = after + timedelta(seconds=uniform)
    hour = rng.choices(range(24), cum_weights=_HOUR_CUM)[0]
    midnight = moment.replace(hour=0, minute=0, second=0)
    candidate = midnight + timedelta(hours=hour, seconds=rng.randrange(3600))
    offset = int((candidate - after).total_seconds())
    return offset if 1 <= offset <= span_seconds else uniform


def _timeline(
    rng: Random, service: cat.ServiceType, requested: datetime, agency: str, office: str
) -> list[RequestEvent]:
    """The full life of a request: received, dispatched, (overdue/escalated/follow-ups), closed, reopened."""
    sla = service.sla_hours * 3600
    events = [RequestEvent(requested, "open", cat.NOTE_RECEIVED)]

    def add(at: datetime, status: str, notes: str) -> None:
        floor = events[-1].at + timedelta(seconds=60)
        events.append(RequestEvent(max(at.replace(microsecond=0), floor), status, notes))

    dispatched = requested + _seconds(rng.uniform(300, min(4 * 3600, 0.25 * sla)))
    add(dispatched, "open", cat.NOTE_DISPATCHED.format(agency=agency))
    outcome = rng.random()
    if outcome < 0.68:  # on time
        close = requested + _seconds(sla * rng.uniform(0.3, 0.95))
    elif outcome < 0.84:  # late, chased by the street office
        add(requested + _seconds(sla + rng.uniform(3600, 8 * 3600)), "open", cat.NOTE_OVERDUE)
        close = requested + _seconds(sla * rng.uniform(1.3, 2.5) + 9 * 3600)
    elif outcome < 0.93:  # escalated
        escalated = requested + _seconds(sla * rng.uniform(0.5, 0.9))
        add(escalated, "open", cat.NOTE_ESCALATED.format(office=office))
        close = requested + _seconds(sla * rng.uniform(1.2, 3.5))
    else:  # long-running, with periodic follow-ups
        close = requested + _seconds(86400 * rng.uniform(10, 45))
        follow = events[-1].at + _seconds(86400 * rng.uniform(3, 7))
        while follow < close - timedelta(days=1):
            add(follow, "open", cat.NOTE_FOLLOW_UP)
            follow += _seconds(86400 * rng.uniform(3, 7))
    add(close, "closed", rng.choice(cat.CLOSE_NOTES[service.service_code]))
    if rng.random() < 0.08:  # reopened, then closed again
        add(events[-1].at + _seconds(rng.uniform(2 * 3600, 72 * 3600)), "open", cat.NOTE_REOPENED)
        add(events[-1].at + _seconds(sla * rng.uniform(0.3, 1.0)), "closed", cat.NOTE_RECHECKED)
    return events
