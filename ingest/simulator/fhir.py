"""The community health service centre (社区卫生服务中心), served as an HL7 FHIR R4 server.

Routes under ``/fhir/r4`` (``application/fhir+json``; errors are OperationOutcomes):

- ``GET /fhir/r4/metadata`` — a minimal CapabilityStatement.
- ``GET /fhir/r4/{Patient|Encounter|Immunization|Condition}`` — search with ``_lastUpdated``
  (repeatable; prefixes ``ge gt le lt eq``, instants or dates), ``_count`` (default 100, max
  1000), ``_sort`` (``_lastUpdated``, ``-_lastUpdated``, ``_id``). A searchset Bundle with
  ``total`` and ``link`` self/next; next links are HAPI-style ``[base]?_getpages=<token>
  &_getpagesoffset=n&_count=n``, the token pinning the query and the clock it started at.
- ``GET /fhir/r4/$export`` (``Prefer: respond-async``; ``_type``, ``_since``) → 202 and a
  ``Content-Location`` status URL; ``GET`` it → 202 (``X-Progress``, ``Retry-After``) for
  ``state.export_polls`` polls, then the 200 manifest; ``GET`` the NDJSON files; ``DELETE``
  the status URL (the job and its files are gone afterwards: 404).

Ground truth (:class:`HealthCentre`, ``centre_for(district)``): about 85% of the district's
residents are registered Patients — with the SAME resident ID number (system
``urn:oid:2.16.156.10011.1.3``), name, mobile, birth date and sex as the district — plus their
encounters, immunizations (China's national immunization schedule for children, seasonal flu
for the elderly) and conditions (ICD-10; prevalence by age). The centre's FHIR server went live
one year before the district's start: records migrated then carry that ``meta.lastUpdated``;
everything later is stamped when it happened. A resource is visible once its lastUpdated is at
or before ``district.clock``, so ``district.advance()`` brings new encounters, immunizations and
diagnoses, new registrations and Patient updates (family-doctor sign-ups, 家庭医生签约).

Dirt (``DirtConfig`` via :func:`dirt.dirty`, keyed by resource id): ``duplicate`` (a resource
served twice in a row, in a page or a file), ``malformed-id`` (a Patient's ID number with a wrong
check character), ``missing`` (Patient without identifier, Encounter without subject,
Immunization without patient, Condition without code) and ``bad-date`` (Encounter period
starting, vaccine given or condition onset 1-30 days after the clock). Fault hook for retry
tests: ``app.state.fhir.fail_next(status, count, retry_after)``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
import weakref
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from math import exp
from random import Random
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from ingest.simulator.dirt import DirtConfig, dirty, malform_id
from ingest.simulator.district import TZ, District, Resident, iso
from ingest.simulator.faults import Fault, FaultCounters, FaultQueue

PREFIX = "/fhir/r4"
FHIR_JSON = "application/fhir+json; charset=utf-8"
FHIR_NDJSON = "application/fhir+ndjson"
RESOURCE_TYPES = ("Patient", "Encounter", "Immunization", "Condition")
DEFAULT_COUNT = 100
MAX_COUNT = 1000
REGISTERED_SHARE = 0.85
HISTORY_YEARS = 5  # how far past go-live the timeline is generated (encounters: lazily, by quarter)
CHUNK_DAYS = 90

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 身份证号 (WS/T 500)
HEALTH_RECORD_SYSTEM = "urn:oid:2.16.156.10011.1.2"  # 城乡居民健康档案编号
GENDER_SYSTEM = "urn:oid:2.16.156.10011.2.3.3.4"  # GB/T 2261.1
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CVX = "http://hl7.org/fhir/sid/cvx"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ENCOUNTER_TYPES = "https://fhir.minghu.example/CodeSystem/encounter-type"
BUILDING_EXTENSION = "https://fhir.minghu.example/StructureDefinition/building-id"
GRID_EXTENSION = "https://fhir.minghu.example/StructureDefinition/grid-code"
CENTRE_ORG = "chc-minghu"
PRACTITIONERS = tuple(f"gp-{n:02d}" for n in range(1, 9))

# (code, display, age band -> prevalence, chronic: needs regular follow-up)
CONDITIONS: tuple[tuple[str, str, tuple[tuple[int, float], ...], bool], ...] = (
    ("I10", "原发性高血压 Essential hypertension",
     ((35, 0.02), (45, 0.08), (60, 0.25), (75, 0.5), (200, 0.6)), True),
    ("E11.9", "2型糖尿病 Type 2 diabetes mellitus", ((35, 0.0), (45, 0.03), (60, 0.1), (200, 0.2)), True),
    ("I25.1", "冠状动脉粥样硬化性心脏病 Atherosclerotic heart disease", ((60, 0.0), (200, 0.1)), True),
    ("J44.9", "慢性阻塞性肺病 COPD", ((60, 0.0), (200, 0.07)), True),
    ("E78.5", "高脂血症 Hyperlipidaemia", ((45, 0.0), (200, 0.15)), False),
    ("J45.9", "哮喘 Asthma", ((15, 0.04), (200, 0.02)), False),
)  # fmt: skip
ACUTE_REASONS = (
    ("J06.9", "急性上呼吸道感染"),
    ("J20.9", "急性支气管炎"),
    ("K29.7", "胃炎"),
    ("M54.5", "腰痛"),
    ("R51", "头痛"),
    ("A09", "腹泻"),
)
# China's national immunization programme (simplified), CVX codes: (code, display, age in days)
CHILD_SCHEDULE: tuple[tuple[str, str, int], ...] = (
    ("08", "乙肝疫苗 HepB", 0), ("19", "卡介苗 BCG", 0), ("08", "乙肝疫苗 HepB", 30),
    ("10", "脊灰灭活疫苗 IPV", 60), ("10", "脊灰灭活疫苗 IPV", 90), ("20", "百白破疫苗 DTaP", 90),
    ("178", "二价脊灰减毒活疫苗 bOPV", 120), ("20", "百白破疫苗 DTaP", 120), ("20", "百白破疫苗 DTaP", 150),
    ("08", "乙肝疫苗 HepB", 180), ("32", "A群流脑多糖疫苗 MPSV-A", 180), ("03", "麻腮风疫苗 MMR", 240),
    ("39", "乙脑减毒活疫苗 JE", 240), ("32", "A群流脑多糖疫苗 MPSV-A", 270), ("20", "百白破疫苗 DTaP", 540),
    ("03", "麻腮风疫苗 MMR", 540), ("83", "甲肝减毒活疫苗 HepA", 540), ("39", "乙脑减毒活疫苗 JE", 730),
    ("32", "A群C群流脑多糖疫苗 MPSV-AC", 1095), ("178", "二价脊灰减毒活疫苗 bOPV", 1460),
    ("32", "A群C群流脑多糖疫苗 MPSV-AC", 2190), ("28", "白破疫苗 DT", 2190),
)  # fmt: skip
FLU = ("141", "流感疫苗 Influenza, seasonal, injectable")


def _fraction(seed: int, *parts: object) -> float:
    digest = hashlib.blake2b("|".join(map(str, (seed, "fhir", *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _hex(seed: int, *parts: object, n: int = 12) -> str:
    return hashlib.blake2b(
        "|".join(map(str, (seed, "fhir-id", *parts))).encode(), digest_size=16
    ).hexdigest()[:n]


def _poisson(rng: Random, mean: float) -> int:
    limit, k, p = exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _daytime(rng: Random, day: datetime, first: int = 8, last: int = 16) -> datetime:
    """A whole minute within opening hours on ``day`` (a +08:00 datetime)."""
    minutes = int(rng.random() * (last - first + 1) * 60)
    return day.replace(hour=first + minutes // 60, minute=minutes % 60, second=0, microsecond=0)


# ------------------------------------------------------------------------------------ model


@dataclass(slots=True)
class PatientRecord:
    id: str
    resident: Resident
    registered: datetime
    health_record_no: str
    room: Any
    building: Any
    gp_signed: datetime | None = None
    gp: str | None = None
    chronic: list[tuple[str, datetime]] = field(default_factory=list)  # (ICD-10, recorded)

    reviews: tuple[datetime, ...] = ()  # yearly health-record reviews (健康档案年度更新): a new version

    def versions(self, clock: datetime) -> list[datetime]:
        """Times of the versions at or before ``clock`` (registration first)."""
        if self.registered > clock:
            return []
        events = [self.registered, *(r for r in self.reviews if r <= clock)]
        if self.gp_signed is not None and self.gp_signed <= clock:
            events.append(self.gp_signed)
        return sorted(events)

    def last_updated(self, clock: datetime) -> datetime | None:
        versions = self.versions(clock)
        return versions[-1] if versions else None


@dataclass(frozen=True, slots=True)
class Item:
    """One non-Patient resource: its id, lastUpdated and the patient it belongs to."""

    kind: str
    id: str
    last_updated: datetime
    patient: PatientRecord
    data: tuple[Any, ...]


class HealthCentre:
    """Ground truth of the centre: who is registered and every resource's timeline."""

    def __init__(self, district: District) -> None:
        self.district = district
        self.seed = district.seed
        self.go_live = district.start - timedelta(days=365)
        self.horizon = self.go_live + timedelta(days=365 * HISTORY_YEARS)
        self._lock = threading.RLock()
        self.patients: list[PatientRecord] = []
        self.patient_by_id: dict[str, PatientRecord] = {}
        self.items: list[Item] = []  # conditions and immunizations (whole timeline)
        self._chunks = 0  # encounter quarters generated so far
        self._snapshots: OrderedDict[datetime, Snapshot] = OrderedDict()
        self._build()

    # ------------------------------------------------------------ generation

    def _migrated(self, key: object, registered: datetime) -> datetime:
        """When a record from the old system appeared here: go-live (over two days) or registration."""
        at = self.go_live + timedelta(seconds=int(_fraction(self.seed, "migrate", key) * 2 * 86400))
        return max(at, registered + timedelta(minutes=5))

    def _build(self) -> None:
        seed, ref = self.seed, self.district.start.date()
        span = (self.horizon - self.go_live).total_seconds()
        for resident in self.district.residents:
            rid = resident.resident_id
            if _fraction(seed, "registered", rid) >= REGISTERED_SHARE:
                continue
            rng = Random(f"{seed}/fhir/patient/{rid}")
            if rng.random() < 0.88:
                registered = self._migrated(("patient", rid), self.go_live)
            else:
                registered = _daytime(rng, self.go_live + timedelta(seconds=rng.uniform(0, span * 0.6)))
            # Nobody has a record before they are born: babies are registered two weeks after birth.
            born = datetime.combine(resident.birth_date, datetime.min.time(), TZ)
            registered = max(registered, born + timedelta(days=14, hours=10))
            patient = PatientRecord(
                f"pat-{_hex(seed, rid)}",
                resident,
                registered,
                f"HR{_hex(seed, 'hr', rid, n=10)}",
                self.district.rooms_by_id[resident.room_id],
                self.district.buildings_by_id[resident.building_id],
            )
            age = resident.age_on(ref)
            self._conditions(rng, patient, age)
            sign_p = 0.8 if patient.chronic else 0.7 if age >= 65 else 0.4 if age < 7 else 0.15
            if rng.random() < sign_p:
                signed = _daytime(rng, self.go_live + timedelta(seconds=rng.uniform(0, span * 0.6)))
                patient.gp_signed = max(signed, registered + timedelta(days=1))
                patient.gp = rng.choice(PRACTITIONERS)
            patient.reviews = tuple(
                _daytime(rng, registered + timedelta(days=365 * (k - 1) + rng.uniform(1, 365)))
                for k in range(1, HISTORY_YEARS + 1)
            )
            if age < 15:
                self._child_immunizations(rng, patient)
            if age >= 60:
                self._flu(rng, patient)
            self.patients.append(patient)
            self.patient_by_id[patient.id] = patient

    def _conditions(self, rng: Random, patient: PatientRecord, age: int) -> None:
        birth = datetime.combine(patient.resident.birth_date, datetime.min.time(), TZ)
        for code, display, bands, chronic in CONDITIONS:
            prevalence = next(p for upper, p in bands if age < upper)
            if rng.random() >= prevalence:
                continue
            if rng.random() < 0.8:  # diagnosed before go-live, migrated with the patient's record
                years = rng.uniform(0.5, min(15.0, max(0.6, age - 1)))
                onset = _daytime(
                    rng, max(birth + timedelta(days=200), self.go_live - timedelta(days=365 * years))
                )
                recorded = onset + timedelta(days=rng.randint(0, 30))
                last_updated = self._migrated(("condition", patient.id, code), patient.registered)
            else:  # newly diagnosed at a visit
                recorded = _daytime(
                    rng,
                    self.go_live
                    + timedelta(seconds=rng.uniform(0, (self.horizon - self.go_live).total_seconds())),
                )
                recorded = max(recorded, patient.registered + timedelta(days=1))
                onset = recorded - timedelta(days=rng.randint(3, 90))
                last_updated = recorded + timedelta(minutes=rng.randint(5, 90))
            if chronic:
                patient.chronic.append((code, last_updated))
            cid = f"cond-{_hex(self.seed, patient.id, code)}"
            self.items.append(Item("Condition", cid, last_updated, patient, (code, display, onset, recorded)))

    def _child_immunizations(self, rng: Random, patient: PatientRecord) -> None:
        birth = datetime.combine(patient.resident.birth_date, datetime.min.time(), TZ)
        for dose, (code, display, days) in enumerate(CHILD_SCHEDULE, start=1):
            if rng.random() < 0.04:
                continue  # missed dose
            delay = rng.randint(7, 60) if rng.random() < 0.15 else rng.randint(0, 6)
            given = _daytime(rng, birth + timedelta(days=days + delay))
            self._dose(rng, patient, code, display, given, dose)

    def _flu(self, rng: Random, patient: PatientRecord) -> None:
        for year in range(self.go_live.year, self.horizon.year + 1):
            if rng.random() < 0.45:
                season = datetime(year, 10, 1, tzinfo=TZ)
                self._dose(
                    rng,
                    patient,
                    FLU[0],
                    FLU[1],
                    _daytime(rng, season + timedelta(days=rng.randint(0, 80))),
                    year,
                )

    def _dose(
        self, rng: Random, patient: PatientRecord, code: str, display: str, given: datetime, n: object
    ) -> None:
        if given >= self.horizon:
            return
        if given < max(self.go_live, patient.registered):
            last_updated = self._migrated(("imm", patient.id, code, n), patient.registered)
            if given > last_updated:
                last_updated = given + timedelta(minutes=30)
        else:
            last_updated = given + timedelta(minutes=rng.randint(10, 60))
        lot = f"{given.year}{rng.randrange(10000):04d}"
        iid = f"imm-{_hex(self.seed, patient.id, code, n)}"
        self.items.append(Item("Immunization", iid, last_updated, patient, (code, display, given, lot)))

    def _ensure_encounters(self, clock: datetime) -> None:
        """Encounters are generated a quarter at a time, as far as the clock needs."""
        while self.go_live + timedelta(days=CHUNK_DAYS * self._chunks) <= clock + timedelta(days=1):
            self._encounter_chunk(self._chunks)
            self._chunks += 1

    def _encounter_chunk(self, k: int) -> None:
        start = self.go_live + timedelta(days=CHUNK_DAYS * k)
        end = start + timedelta(days=CHUNK_DAYS)
        rng = Random(f"{self.seed}/fhir/encounters/{k}")
        ref = self.district.start.date()
        n = 0
        for patient in self.patients:
            age = patient.resident.age_on(ref)
            base = 6.0 if age < 3 else 2.0 if age < 15 else 1.5 if age < 60 else 3.0
            chronic = [code for code, since in patient.chronic if since < end]
            rate = base + (6.0 if chronic else 0.0)
            visits = _poisson(rng, rate * CHUNK_DAYS / 365)
            if age >= 65 and rng.random() < CHUNK_DAYS / 365:
                visits += 1  # the yearly health check for people 65+ (国家基本公共卫生服务)
                check = True
            else:
                check = False
            for v in range(visits):
                at = _daytime(rng, start + timedelta(seconds=rng.uniform(0, CHUNK_DAYS * 86400)), 8, 16)
                if at < patient.registered:
                    continue
                if check and v == visits - 1:
                    kind, reason = ("health-check", "老年人健康体检"), None
                elif chronic and rng.random() < 0.6:
                    kind, reason = ("chronic-follow-up", "慢病随访"), rng.choice(chronic)
                else:
                    kind, reason = ("general", "普通门诊"), rng.choice(ACUTE_REASONS)[0]
                home = kind[0] == "chronic-follow-up" and age >= 75 and rng.random() < 0.2
                end_at = at + timedelta(minutes=rng.randint(10, 40))
                last_updated = end_at + timedelta(minutes=rng.randint(5, 120))
                n += 1
                eid = f"enc-{k:03d}-{n:06d}"
                data = (kind[0], kind[1], "HH" if home else "AMB", at, end_at, reason)
                self.items.append(Item("Encounter", eid, last_updated, patient, data))

    # ------------------------------------------------------------ views

    def snapshot(self, clock: datetime | None = None) -> Snapshot:
        """Every resource visible at ``clock`` (default: the district clock), ordered by lastUpdated."""
        clock = clock or self.district.clock
        with self._lock:
            snap = self._snapshots.get(clock)
            if snap is not None:
                self._snapshots.move_to_end(clock)
                return snap
            self._ensure_encounters(clock)
            by_kind: dict[str, list[tuple[datetime, str, Any]]] = {k: [] for k in RESOURCE_TYPES}
            for p in self.patients:
                lu = p.last_updated(clock)
                if lu is not None:
                    by_kind["Patient"].append((lu, p.id, p))
            for item in self.items:
                if item.last_updated <= clock:
                    by_kind[item.kind].append((item.last_updated, item.id, item))
            for rows in by_kind.values():
                rows.sort(key=lambda r: (r[0], r[1]))
            snap = Snapshot(clock, {k: tuple(v) for k, v in by_kind.items()})
            self._snapshots[clock] = snap
            while len(self._snapshots) > 4:
                self._snapshots.popitem(last=False)
            return snap

    def counts(self, clock: datetime | None = None) -> dict[str, int]:
        snap = self.snapshot(clock)
        return {k: len(v) for k, v in snap.rows.items()}

    def resources(self, kind: str, clock: datetime | None = None) -> list[dict[str, Any]]:
        """The clean resources of a type as served at ``clock`` (ground truth for tests)."""
        snap = self.snapshot(clock)
        return [render(row[2], snap.clock) for row in snap.rows[kind]]


@dataclass(frozen=True)
class Snapshot:
    clock: datetime
    rows: dict[str, tuple[tuple[datetime, str, Any], ...]]

    def times(self, kind: str) -> list[datetime]:
        return [r[0] for r in self.rows[kind]]


_CENTRES: weakref.WeakKeyDictionary[District, HealthCentre] = weakref.WeakKeyDictionary()
_CENTRES_LOCK = threading.Lock()


def centre_for(district: District) -> HealthCentre:
    """The district's health centre (built once per district, on first use)."""
    with _CENTRES_LOCK:
        centre = _CENTRES.get(district)
        if centre is None:
            centre = _CENTRES[district] = HealthCentre(district)
        return centre


# ------------------------------------------------------------------------------------ rendering


def _ref(kind: str, rid: str) -> dict[str, str]:
    return {"reference": f"{kind}/{rid}"}


def render(obj: PatientRecord | Item, clock: datetime) -> dict[str, Any]:
    """The FHIR resource (clean) for a patient record at ``clock`` or an item."""
    if isinstance(obj, PatientRecord):
        return _render_patient(obj, clock)
    meta = {"versionId": "1", "lastUpdated": iso(obj.last_updated)}
    patient = _ref("Patient", obj.patient.id)
    if obj.kind == "Encounter":
        code, display, klass, start, end, reason = obj.data
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": obj.id,
            "meta": meta,
            "status": "finished",
            "class": {
                "system": ACT_CODE,
                "code": klass,
                "display": "home health" if klass == "HH" else "ambulatory",
            },
            "type": [{"coding": [{"system": ENCOUNTER_TYPES, "code": code, "display": display}]}],
            "subject": patient,
            "period": {"start": iso(start), "end": iso(end)},
            "serviceProvider": _ref("Organization", CENTRE_ORG),
        }
        if reason:
            enc["reasonCode"] = [{"coding": [{"system": ICD10, "code": reason}]}]
        return enc
    if obj.kind == "Immunization":
        code, display, given, lot = obj.data
        return {
            "resourceType": "Immunization",
            "id": obj.id,
            "meta": meta,
            "status": "completed",
            "vaccineCode": {"coding": [{"system": CVX, "code": code, "display": display}]},
            "patient": patient,
            "occurrenceDateTime": iso(given),
            "primarySource": True,
            "lotNumber": lot,
            "performer": [{"actor": _ref("Organization", CENTRE_ORG)}],
        }
    code, display, onset, recorded = obj.data
    return {
        "resourceType": "Condition",
        "id": obj.id,
        "meta": meta,
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
            ]
        },
        "code": {"coding": [{"system": ICD10, "code": code, "display": display}]},
        "subject": patient,
        "onsetDateTime": iso(onset),
        "recordedDate": iso(recorded),
    }


def _render_patient(p: PatientRecord, clock: datetime) -> dict[str, Any]:
    r = p.resident
    signed = p.gp_signed is not None and p.gp_signed <= clock
    versions = p.versions(clock) or [p.registered]
    last_updated = versions[-1]
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": p.id,
        "meta": {"versionId": str(len(versions)), "lastUpdated": iso(last_updated)},
        "identifier": [
            {
                "use": "official",
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NNCHN"}]
                },
                "system": RESIDENT_ID_SYSTEM,
                "value": r.id_number,
            },
            {"use": "secondary", "system": HEALTH_RECORD_SYSTEM, "value": p.health_record_no},
        ],
        "active": True,
        "name": [{"use": "official", "text": r.name, "family": r.name[:1], "given": [r.name[1:]]}],
        "gender": "male" if r.sex == "M" else "female",
        "birthDate": r.birth_date.isoformat(),
        "managingOrganization": _ref("Organization", CENTRE_ORG),
    }
    if r.mobile:
        res["telecom"] = [{"system": "phone", "value": r.mobile, "use": "mobile"}]
    room, building = p.room, p.building
    if room is not None:
        res["address"] = [
            {
                "extension": [
                    {"url": BUILDING_EXTENSION, "valueString": building.building_id},
                    {"url": GRID_EXTENSION, "valueString": r.grid_id},
                ],
                "use": "home",
                "type": "physical",
                "text": room.label,  # the centre keeps the full home address; the connector cuts it
                "line": [room.label],
                "city": "上海市",
                "district": "明湖区",
                "postalCode": building.zipcode,
                "country": "CN",
            }
        ]
    if signed:
        res["generalPractitioner"] = [_ref("Practitioner", p.gp or PRACTITIONERS[0])]
    return res


# ------------------------------------------------------------------------------------ dirt


def dirty_resource(
    res: dict[str, Any], dirt: DirtConfig | None, seed: int, clock: datetime
) -> dict[str, Any]:
    """The resource with its configured dirt applied (the input is not modified)."""
    if dirt is None:
        return res
    rid, kind = res["id"], res["resourceType"]
    missing = dirty(dirt, seed, "missing", rid)
    bad_date = dirty(dirt, seed, "bad-date", rid) and kind != "Patient"
    malformed = kind == "Patient" and dirty(dirt, seed, "malformed-id", rid)
    if not (missing or bad_date or malformed):
        return res
    out = json.loads(json.dumps(res))
    future = iso(clock + timedelta(days=1 + int(_fraction(seed, "future", rid) * 30)))
    if kind == "Patient":
        if malformed:
            out["identifier"][0]["value"] = malform_id(out["identifier"][0]["value"])
        if missing:
            out.pop("identifier", None)
    elif kind == "Encounter":
        if missing:
            out.pop("subject", None)
        if bad_date:
            out["period"]["start"] = future
    elif kind == "Immunization":
        if missing:
            out.pop("patient", None)
        if bad_date:
            out["occurrenceDateTime"] = future
    elif kind == "Condition":
        if missing:
            out.pop("code", None)
        if bad_date:
            out["onsetDateTime"] = future
    return out


def expected_dirt(
    centre: HealthCentre, dirt: DirtConfig, clock: datetime | None = None
) -> dict[str, dict[str, set[str]]]:
    """``{kind: {dirt kind: resource ids}}`` among the resources visible at ``clock`` (for tests)."""
    snap = centre.snapshot(clock)
    out: dict[str, dict[str, set[str]]] = {}
    for kind, rows in snap.rows.items():
        per = out[kind] = {"duplicate": set(), "missing": set(), "bad-date": set(), "malformed-id": set()}
        for _, rid, _ in rows:
            for d in per:
                if d == "bad-date" and kind == "Patient" or d == "malformed-id" and kind != "Patient":
                    continue
                if dirty(dirt, centre.seed, d, rid):
                    per[d].add(rid)
    return out


# ------------------------------------------------------------------------------------ server


@dataclass
class ExportJob:
    id: str
    types: tuple[str, ...]
    since: datetime | None
    clock: datetime  # transactionTime: the export is as of the kick-off
    request: str
    polls_left: int


@dataclass
class FhirState(FaultCounters):
    """Server state (``app.state.fhir``): export jobs, faults, counters for tests."""

    centre: HealthCentre
    dirt: DirtConfig | None
    export_polls: int = 1  # 202 answers before the manifest
    retry_after: str = "0"
    jobs: dict[str, ExportJob] = field(default_factory=dict)
    faults: FaultQueue = field(default_factory=FaultQueue)
    deleted: list[str] = field(default_factory=list)
    authorizations: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    _job_seq: int = 0

    def fail_next(self, status: int = 503, count: int = 1, retry_after: float | None = None) -> int:
        """Make the next ``count`` FHIR calls answer ``status``; returns the calls pending a fault."""
        return self.faults.add(Fault(status, count, retry_after))

    def body(self, obj: PatientRecord | Item, clock: datetime) -> bytes:
        """Serialised resource (cached per version), dirt applied."""
        lu = obj.last_updated(clock) if isinstance(obj, PatientRecord) else obj.last_updated
        key = (obj.id, iso(lu or clock), iso(clock) if self.dirt and self.dirt.bad_date_rate else "")
        data = self._cache.get(key)
        if data is None:
            res = dirty_resource(render(obj, clock), self.dirt, self.centre.seed, clock)
            data = json.dumps(res, ensure_ascii=False, separators=(",", ":")).encode()
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = data
        return data

    def served(self, rows: tuple[tuple[datetime, str, Any], ...]) -> list[tuple[datetime, str, Any]]:
        """Rows as served: a duplicated resource is followed by its copy."""
        if not (self.dirt and self.dirt.duplicate_rate):
            return list(rows)
        out = []
        for row in rows:
            out.append(row)
            if dirty(self.dirt, self.centre.seed, "duplicate", row[1]):
                out.append(row)
        return out


class FhirError(Exception):
    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics


def outcome(status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return Response(json.dumps(body, ensure_ascii=False).encode(), status, headers, media_type=FHIR_JSON)


def _instant(name: str, text: str, upper: bool = False) -> datetime:
    try:
        if len(text) == 10:  # a date: the whole day, in local time
            day = datetime.fromisoformat(text).replace(tzinfo=TZ)
            return day + timedelta(days=1) if upper else day
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise FhirError(400, "invalid", f"{name}: {text!r} is not a FHIR date or instant") from None
    return value if value.tzinfo else value.replace(tzinfo=TZ)


def _bounds(values: list[str]) -> tuple[datetime | None, bool, datetime | None, bool]:
    """(lower, inclusive, upper, inclusive) from repeated ``_lastUpdated`` parameters."""
    lo = hi = None
    lo_inc = hi_inc = True
    for raw in values:
        prefix, text = (raw[:2], raw[2:]) if raw[:2] in {"ge", "gt", "le", "lt", "eq"} else ("eq", raw)
        if prefix in {"ge", "gt", "eq"}:
            value = _instant("_lastUpdated", text)
            if lo is None or value > lo or (value == lo and prefix == "gt"):
                lo, lo_inc = value, prefix != "gt"
        if prefix in {"le", "lt", "eq"}:
            value = _instant("_lastUpdated", text, upper=len(text) == 10 and prefix != "lt")
            inclusive = prefix in {"le", "eq"} and len(text) != 10
            if hi is None or value < hi or (value == hi and not inclusive):
                hi, hi_inc = value, inclusive
    return lo, lo_inc, hi, hi_inc


def _slice(
    times: list[datetime], lo: datetime | None, lo_inc: bool, hi: datetime | None, hi_inc: bool
) -> slice:
    start = 0 if lo is None else (bisect_left(times, lo) if lo_inc else bisect_right(times, lo))
    end = len(times) if hi is None else (bisect_right(times, hi) if hi_inc else bisect_left(times, hi))
    return slice(start, max(start, end))


def _token(query: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(query, separators=(",", ":")).encode()).decode().rstrip("=")


def _untoken(token: str) -> dict[str, Any]:
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        raise FhirError(410, "not-found", "unknown or expired _getpages token: restart the search") from None


def _count(params: Any) -> int:
    raw = params.get("_count") or str(DEFAULT_COUNT)
    if not raw.isdigit() or int(raw) < 1:
        raise FhirError(400, "invalid", f"_count must be a positive integer, got {raw!r}")
    return min(int(raw), MAX_COUNT)


def mount(app: FastAPI, district: District, dirt: DirtConfig | None = None) -> None:
    """Add the centre's FHIR R4 endpoints under :data:`PREFIX` to the shared simulator app."""
    state: FhirState | None = None
    state_lock = threading.Lock()

    def get_state() -> FhirState:
        nonlocal state
        with state_lock:
            if state is None:
                state = FhirState(centre_for(district), dirt)
                app.state.fhir = state
            return state

    class _Lazy:
        """``app.state.fhir`` before the first request (tests set knobs on it)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(get_state(), name)

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(get_state(), name, value)

    app.state.fhir = _Lazy()

    def base_of(request: Request) -> str:
        return str(request.base_url).rstrip("/") + PREFIX

    def guard(request: Request) -> FhirState:
        st = get_state()
        auth = request.headers.get("authorization")
        if auth:
            st.authorizations.add(auth)
        fault = st.faults.take_error()
        if fault is not None:
            raise _Fault(outcome(fault.status, "transient", fault.message, fault.headers()))
        return st

    def bundle(request: Request, st: FhirState, query: dict[str, Any], offset: int, count: int) -> Response:
        kind = query["type"]
        clock = datetime.fromisoformat(query["clock"])
        snap = st.centre.snapshot(clock)
        rows = snap.rows[kind]
        lo = datetime.fromisoformat(query["lo"]) if query.get("lo") else None
        hi = datetime.fromisoformat(query["hi"]) if query.get("hi") else None
        selected = rows[_slice(snap.times(kind), lo, query["lo_inc"], hi, query["hi_inc"])]
        if query["sort"] == "-_lastUpdated":
            selected = selected[::-1]
        elif query["sort"] == "_id":
            selected = tuple(sorted(selected, key=lambda r: r[1]))
        served = st.served(selected)
        page = served[offset : offset + count]
        base = base_of(request)
        token = _token(query)
        links = [{"relation": "self", "url": str(request.url)}]
        if offset + count < len(served):
            links.append(
                {
                    "relation": "next",
                    "url": f"{base}?_getpages={token}&_getpagesoffset={offset + count}&_count={count}"
                    "&_bundletype=searchset",
                }
            )
        head = {
            "resourceType": "Bundle",
            "id": _hex(st.centre.seed, "bundle", token, offset, n=16),
            "meta": {"lastUpdated": iso(clock)},
            "type": "searchset",
            "total": len(selected),
            "link": links,
        }
        entries = [
            b'{"fullUrl":"' + f"{base}/{kind}/{row[1]}".encode() + b'","resource":' + st.body(row[2], clock)
            + b',"search":{"mode":"match"}}'
            for row in page
        ]  # fmt: skip
        body = json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode()[:-1]
        body += b',"entry":[' + b",".join(entries) + b"]}"
        return Response(body, media_type=FHIR_JSON)

    class _Fault(Exception):
        def __init__(self, response: Response) -> None:
            super().__init__("fault")
            self.response = response

    def handle(fn: Any) -> Any:
        @functools.wraps(fn)
        async def wrapper(request: Request, **kwargs: Any) -> Response:
            try:
                return fn(request, **kwargs)
            except _Fault as exc:
                return exc.response
            except FhirError as exc:
                return outcome(exc.status, exc.code, exc.diagnostics)

        return wrapper

    def metadata(request: Request) -> Response:
        guard(request)
        body = {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": iso(district.clock),
            "kind": "instance",
            "software": {"name": "Minghu community health centre (simulated)"},
            "implementation": {"description": "明湖区社区卫生服务中心", "url": base_of(request)},
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": t,
                            "interaction": [{"code": "search-type"}],
                            "searchParam": [{"name": "_lastUpdated", "type": "date"}],
                        }
                        for t in RESOURCE_TYPES
                    ],
                    "operation": [
                        {
                            "name": "export",
                            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                        }
                    ],
                }
            ],
        }
        return Response(json.dumps(body, ensure_ascii=False).encode(), media_type=FHIR_JSON)

    def search(request: Request, resource_type: str) -> Response:
        st = guard(request)
        if resource_type not in RESOURCE_TYPES:
            raise FhirError(404, "not-supported", f"resource type {resource_type!r} is not supported here")
        params = request.query_params
        known = {"_lastUpdated", "_count", "_sort", "_format"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise FhirError(400, "not-supported", f"unsupported search parameter(s): {', '.join(unknown)}")
        sort = params.get("_sort") or "_lastUpdated"
        if sort not in {"_lastUpdated", "-_lastUpdated", "_id"}:
            raise FhirError(400, "not-supported", f"_sort={sort!r} is not supported")
        lo, lo_inc, hi, hi_inc = _bounds(params.getlist("_lastUpdated"))
        query = {
            "type": resource_type,
            "lo": lo.isoformat() if lo else None,
            "lo_inc": lo_inc,
            "hi": hi.isoformat() if hi else None,
            "hi_inc": hi_inc,
            "sort": sort,
            "clock": district.clock.isoformat(),
        }
        return bundle(request, st, query, 0, _count(params))

    def getpages(request: Request) -> Response:
        st = guard(request)
        params = request.query_params
        if "_getpages" not in params:
            raise FhirError(400, "invalid", "a search needs a resource type, e.g. [base]/Patient")
        offset = params.get("_getpagesoffset", "0")
        if not offset.isdigit():
            raise FhirError(400, "invalid", f"_getpagesoffset must be a non-negative integer, got {offset!r}")
        return bundle(request, st, _untoken(params["_getpages"]), int(offset), _count(params))

    def kickoff(request: Request) -> Response:
        st = guard(request)
        if request.headers.get("prefer", "").lower() != "respond-async":
            raise FhirError(400, "invalid", "$export needs the header 'Prefer: respond-async'")
        params = request.query_params
        fmt = params.get("_outputFormat")
        if fmt and fmt not in {"application/fhir+ndjson", "application/ndjson", "ndjson"}:
            raise FhirError(400, "not-supported", f"_outputFormat {fmt!r} is not supported (use ndjson)")
        types = tuple(
            t.strip() for t in (params.get("_type") or ",".join(RESOURCE_TYPES)).split(",") if t.strip()
        )
        bad = [t for t in types if t not in RESOURCE_TYPES]
        if bad:
            raise FhirError(400, "not-supported", f"_type: resource type(s) {', '.join(bad)} not supported")
        since = _instant("_since", params["_since"]) if params.get("_since") else None
        with st.lock:
            st._job_seq += 1
            job_id = _hex(st.centre.seed, "job", st._job_seq, n=16)
            st.jobs[job_id] = ExportJob(
                job_id, types, since, district.clock, str(request.url), st.export_polls
            )
        return Response(
            status_code=202, headers={"Content-Location": f"{base_of(request)}/bulkstatus/{job_id}"}
        )

    def job_of(st: FhirState, job_id: str) -> ExportJob:
        job = st.jobs.get(job_id)
        if job is None:
            raise FhirError(404, "not-found", f"export job {job_id!r} not found (deleted or never started)")
        return job

    def status(request: Request, job_id: str) -> Response:
        st = guard(request)
        job = job_of(st, job_id)
        if job.polls_left > 0:
            with st.lock:
                job.polls_left -= 1
            done = 100 * (st.export_polls - job.polls_left) // (st.export_polls + 1)
            return Response(
                status_code=202,
                headers={"X-Progress": f"in progress ({done}%)", "Retry-After": st.retry_after},
            )
        snap = st.centre.snapshot(job.clock)
        base = base_of(request)
        output = []
        for kind in job.types:
            rows = snap.rows[kind][_slice(snap.times(kind), job.since, False, None, True)]
            if rows:
                output.append(
                    {"type": kind, "url": f"{base}/bulkfiles/{job_id}/{kind}.ndjson", "count": len(rows)}
                )
        manifest = {
            "transactionTime": iso(job.clock),
            "request": job.request,
            "requiresAccessToken": True,
            "output": output,
            "error": [],
        }
        return Response(json.dumps(manifest).encode(), media_type="application/json")

    def delete(request: Request, job_id: str) -> Response:
        st = guard(request)
        job_of(st, job_id)
        with st.lock:
            st.jobs.pop(job_id, None)
            st.deleted.append(job_id)
        return Response(status_code=202)

    def download(request: Request, job_id: str, kind: str) -> Response:
        st = guard(request)
        job = job_of(st, job_id)
        if kind not in job.types or job.polls_left > 0:
            raise FhirError(404, "not-found", f"no {kind} file in export job {job_id!r}")
        snap = st.centre.snapshot(job.clock)
        rows = snap.rows[kind][_slice(snap.times(kind), job.since, False, None, True)]

        def lines() -> Iterator[bytes]:
            chunk: list[bytes] = []
            for row in st.served(rows):
                chunk.append(st.body(row[2], job.clock) + b"\n")
                if len(chunk) >= 500:
                    yield b"".join(chunk)
                    chunk = []
            if chunk:
                yield b"".join(chunk)

        return StreamingResponse(lines(), media_type=FHIR_NDJSON)

    app.add_api_route(PREFIX + "/metadata", handle(metadata), methods=["GET"])
    app.add_api_route(PREFIX + "/$export", handle(kickoff), methods=["GET"])
    app.add_api_route(PREFIX + "/bulkstatus/{job_id}", handle(status), methods=["GET"])
    app.add_api_route(PREFIX + "/bulkstatus/{job_id}", handle(delete), methods=["DELETE"])
    app.add_api_route(PREFIX + "/bulkfiles/{job_id}/{kind}.ndjson", handle(download), methods=["GET"])
    app.add_api_route(PREFIX, handle(getpages), methods=["GET"])
    app.add_api_route(PREFIX + "/{resource_type}", handle(search), methods=["GET"])
