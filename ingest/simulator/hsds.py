"""Open Referral HSDS 3.0 API over the district's social-service directory (civil affairs bureau).

Routes (all JSON, paginated with ``page`` (1-based, default 1) and ``per_page`` (default 50, max
500) in the HSDS 3.0 envelope ``{total_items, total_pages, page_number, size, first_page,
last_page, empty, contents}``):

- ``GET /hsds/organizations`` — ``full=true`` adds ``organization_identifiers`` (the USCC, scheme
  ``CN-USCC``) and ``phones`` (the organisation's public service line).
- ``GET /hsds/services`` — one-to-one fields plus the nested ``organization``; ``full=true`` adds
  ``schedules``, ``languages`` and ``attributes`` (the district's service category).
- ``GET /hsds/locations`` — every location with its ``addresses`` (building level) and
  ``attributes`` (grid and community codes). Not in the 3.0 core OpenAPI (which nests locations
  in ``/service_at_locations?full=true``), but a common profile extension and what the civil
  affairs system exposes.
- ``GET /hsds/service_at_locations``
- ``GET /hsds/`` — API meta information (HSDS version).

Ground truth: the organisations are the district's social organisations and public institutions
(:func:`ingest.simulator.economy.enterprises`, the same USCCs the open-data portal and the
property/commercial database use), each with 1-4 services from a fixed catalogue, delivered at
the organisation's building. Services are launched, suspended (``temporarily closed``), reopened,
re-timetabled and re-priced on a deterministic timeline (one draw per service per 30 days); a
service is visible once launched at or before ``district.clock`` and its ``last_modified`` is its
latest change at or before the clock. Nothing depends on wall-clock time, so serving the same
clock twice gives byte-identical pages.

Dirt (:class:`~ingest.simulator.dirt.DirtConfig`, keyed by record id): ``duplicate_rate`` (an
item served twice, possibly across a page boundary), ``missing_field_rate`` (service without
``name``, organisation without ``name``, location without ``location_type``, service-at-location
without ``location_id``), ``bad_date_rate`` (service ``last_modified`` with month 13, or a
schedule whose ``valid_to`` precedes its ``valid_from``) and ``malformed_id_rate`` (organisation
USCC with a wrong check character). :func:`planned_dirt` says up front which ids get which dirt.

Faults for retry tests: :func:`add_fault` (e.g. ``add_fault(sim.app, Fault(503))``) makes the next
HSDS calls answer with an error status (and ``Retry-After``).
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from random import Random
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ingest.simulator.dirt import DirtConfig, dirty
from ingest.simulator.district import TZ, District
from ingest.simulator.economy import Enterprise, enterprises
from ingest.simulator.faults import Fault, FaultCounters, FaultQueue

PREFIX = "/hsds"
HSDS_VERSION = "3.0"
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500
EPOCH = timedelta(days=30)
USCC_SCHEME = "CN-USCC"
BUILDING_ID_TYPE = "cdl_building_id"
CITY = "上海市"
BAD_LAST_MODIFIED = "2026-13-45T10:00:00.000+08:00"  # month 13, day 45: out of range
_NS = uuid.UUID("6f1c2a9e-5b7d-4c1e-9a63-0d1f3e5a7b21")  # namespace of the directory's uuids
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
ENTITIES = ("organizations", "services", "locations", "service_at_locations")


@dataclass(frozen=True, slots=True)
class ServiceTemplate:
    code: str
    name: str
    description: str
    eligibility: str
    fees: str
    byday: str
    opens: str
    closes: str
    min_age: int | None = None
    max_age: int | None = None
    languages: tuple[str, ...] = ("zh",)


_T = ServiceTemplate
ELDERLY_MEALS = _T("elderly_meals", "老年助餐服务", "为辖区老年人提供午餐和晚餐，可堂食或送餐上门。",
                   "本街道户籍或常住的60周岁以上老年人。", "每餐15元，80周岁以上每餐补贴5元。",
                   "MO,TU,WE,TH,FR,SA", "11:00", "13:00", 60, None, ("zh", "wuu"))  # fmt: skip
DAY_CARE = _T("day_care", "日间照料", "白天托养、休息、康复活动和文娱活动，傍晚返家。",
              "生活基本能自理或半自理的60周岁以上老年人。", "每月600元，低保家庭免费。",
              "MO,TU,WE,TH,FR", "08:00", "17:00", 60, None, ("zh", "wuu"))  # fmt: skip
HOME_VISITS = _T("home_visits", "上门探访", "志愿者和社工定期上门探访独居、高龄老人及困难家庭，了解需求。",
                 "独居、高龄或行动不便的居民，由居委会登记。", "免费。",
                 "TU,TH", "09:00", "16:00", None, None, ("zh", "wuu"))  # fmt: skip
BATHING = _T("bathing_assistance", "助浴服务", "专业护理员提供上门或站点助浴。",
             "失能或半失能老年人。", "每次40元。", "WE,SA", "09:00", "15:00", 60)  # fmt: skip
NEIGHBOUR_HELP = _T("neighbour_help", "邻里互助", "组织邻里之间代买代办、陪同就医、临时看护等互助服务。",
                    "社区全体居民。", "免费。", "MO,TU,WE,TH,FR,SA,SU", "08:00", "20:00")  # fmt: skip
VOLUNTEERING = _T("volunteering", "志愿服务", "招募、培训和调度社区志愿者。", "16周岁以上居民。", "免费。",
                  "SA,SU", "09:00", "17:00", 16)  # fmt: skip
YOUTH = _T("youth_activities", "青少年课后活动", "课后作业辅导、科普、体育和艺术兴趣活动。",
           "6至14周岁的社区儿童和青少年。", "免费，材料费自理。", "MO,TU,WE,TH,FR", "15:30", "18:30",
           6, 14)  # fmt: skip
SUMMER_CARE = _T("summer_care", "暑期托管", "暑假期间的看护、阅读和户外活动。", "6至12周岁的小学生。",
                 "每周100元。", "MO,TU,WE,TH,FR", "08:30", "17:30", 6, 12)  # fmt: skip
COUNSELLING = _T("counselling", "心理辅导", "社工和心理咨询师提供个体和小组心理辅导。",
                 "有需要的青少年及其家长。", "免费。", "WE,SA", "14:00", "17:00", 10)  # fmt: skip
REHABILITATION = _T("rehabilitation", "康复训练", "肢体、言语和认知康复训练，提供康复评估。",
                    "持残疾人证的居民，或经医生转介的康复期居民。", "免费，部分项目按医保结算。",
                    "MO,WE,FR", "08:30", "11:30")  # fmt: skip
DEVICES = _T("assistive_devices", "辅具租借", "轮椅、助行器、护理床等辅具的租借和维修。",
             "残疾人、失能老人及其家属。", "押金200元，租金每月20元。",
             "TU,TH,SA", "09:00", "16:00")  # fmt: skip
CANTEEN = _T("community_canteen", "社区食堂", "面向全体居民的社区食堂，老年人享受优惠价。",
             "社区全体居民。", "按菜品计价，老年人九折。",
             "MO,TU,WE,TH,FR,SA,SU", "06:30", "19:00")  # fmt: skip
LEGAL_AID = _T("legal_aid", "法律援助", "为经济困难居民代写文书、代理诉讼和申请法律援助。",
               "经济困难或属于法律援助对象的居民。", "免费。", "TU,TH", "09:00", "12:00", 18)  # fmt: skip
LEGAL_ADVICE = _T("legal_advice", "法律咨询", "律师驻点提供婚姻家庭、劳动、物业纠纷等法律咨询。",
                  "社区全体居民。", "免费。", "SA", "09:00", "12:00", 18)  # fmt: skip
MEDIATION = _T("mediation", "人民调解", "调解邻里、家庭和物业纠纷。", "社区全体居民。", "免费。",
               "MO,TU,WE,TH,FR", "09:00", "17:00", 18)  # fmt: skip
FAMILY_DOCTOR = _T("family_doctor", "家庭医生签约", "签约家庭医生，提供健康管理、预约转诊和上门随访。",
                   "辖区常住居民。", "签约免费，诊疗按医保结算。",
                   "MO,TU,WE,TH,FR", "08:00", "16:30")  # fmt: skip
CHRONIC = _T("chronic_followup", "慢病随访", "高血压、糖尿病患者的定期随访和用药指导。",
             "已建档的慢性病患者。", "免费。", "MO,WE,FR", "08:00", "11:30", 18)  # fmt: skip
CHECKUP = _T("elderly_checkup", "老年人健康体检", "每年一次的老年人免费健康体检。",
             "65周岁以上常住居民。", "免费。", "TU,TH", "07:30", "10:30", 65)  # fmt: skip

CATALOGUE: dict[str, tuple[ServiceTemplate, ...]] = {
    "elderly_care": (ELDERLY_MEALS, DAY_CARE, HOME_VISITS, BATHING),
    "mutual_aid": (NEIGHBOUR_HELP, HOME_VISITS, VOLUNTEERING),
    "youth": (YOUTH, SUMMER_CARE, COUNSELLING),
    "disability": (REHABILITATION, DEVICES, HOME_VISITS),
    "food": (ELDERLY_MEALS, CANTEEN),
    "legal_aid": (LEGAL_AID, LEGAL_ADVICE, MEDIATION),
    "health": (FAMILY_DOCTOR, CHRONIC, REHABILITATION, CHECKUP),
}
LANGUAGE_NAMES = {"zh": "中文（普通话）", "wuu": "上海话"}
LEGAL_STATUS = {"social_org": "民办非企业单位", "public_institution": "事业单位"}
HOURS = (("08:00", "16:30"), ("08:30", "17:00"), ("09:00", "17:30"), ("13:00", "20:00"), ("09:00", "12:00"))
ALERTS = ("场地维修，暂停服务。", "工作人员培训，暂停服务。", "配合社区防疫安排，暂停服务。")


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(_NS, "/".join(str(p) for p in parts)))


def _ts(dt: datetime) -> str:
    """HSDS asks for millisecond accuracy: ``2026-01-03T09:15:00.000+08:00``."""
    return dt.astimezone(TZ).isoformat(timespec="milliseconds")


def _day(dt: datetime) -> datetime:
    return dt.astimezone(TZ).replace(hour=0, minute=0, second=0, microsecond=0)


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedService:
    service_id: str
    org: Enterprise
    org_id: str
    location_id: str
    template: ServiceTemplate
    launched: datetime


@dataclass(frozen=True, slots=True)
class Directory:
    """Everything the directory serves at one clock value (clean, before dirt)."""

    clock: datetime
    organizations: tuple[dict[str, Any], ...]
    services: tuple[dict[str, Any], ...]
    locations: tuple[dict[str, Any], ...]
    service_at_locations: tuple[dict[str, Any], ...]

    def entity(self, name: str) -> tuple[dict[str, Any], ...]:
        return getattr(self, name)


def _orgs(district: District) -> list[Enterprise]:
    return [e for e in enterprises(district) if e.kind in ("social_org", "public_institution")]


@cache
def _plan(district: District) -> tuple[PlannedService, ...]:
    """Which services each organisation runs (or will launch), fixed per district."""
    out = []
    for org in _orgs(district):
        rng = Random(f"{district.seed}/hsds/org/{org.uscc}")
        org_id = _uuid("org", org.uscc)
        location_id = _uuid("location", org.uscc, org.building_id)
        catalogue = list(CATALOGUE[org.industry])
        rng.shuffle(catalogue)
        n = rng.randint(1, min(4, len(catalogue)))
        registered = datetime(
            org.registered_on.year, org.registered_on.month, org.registered_on.day, tzinfo=TZ
        )
        for i, template in enumerate(catalogue[:n]):
            if i == 0 or rng.random() < 0.6:  # running before the district's history starts
                earliest = max(registered, district.start - timedelta(days=900))
                span = max(1, int((district.start - earliest).total_seconds()) - 86400)
                launched = earliest + timedelta(seconds=rng.randrange(span))
            else:  # launched later: some within the generated history, some after the clock
                launched = district.start + timedelta(seconds=rng.randrange((district.days + 180) * 86400))
            launched = launched.replace(microsecond=0)
            out.append(
                PlannedService(
                    _uuid("service", org.uscc, template.code), org, org_id, location_id, template, launched
                )
            )
    return tuple(out)


@cache
def _resident_names(district: District) -> frozenset[str]:
    return frozenset(r.name for r in district.residents)


def _safe(district: District, text: str, fallback: str) -> str:
    """Free text that provably names no resident (the leak scan greps for every name)."""
    names = _resident_names(district)
    hit = any(text[i : i + k] in names for k in (2, 3, 4) for i in range(len(text) - k + 1))
    return fallback if hit else text


def _service_state(district: District, plan: PlannedService, clock: datetime) -> dict[str, Any]:
    """Fold the service's deterministic timeline up to ``clock`` (one draw per 30-day epoch)."""
    t = plan.template
    state: dict[str, Any] = {
        "status": "active",
        "opens": t.opens,
        "closes": t.closes,
        "fees": t.fees,
        "alert": None,
        "last_modified": plan.launched,
        "changes": 0,
    }
    epoch = 0
    while plan.launched + epoch * EPOCH <= clock:
        rng = Random(f"{district.seed}/hsds/{plan.service_id}/{epoch}")
        start = plan.launched + epoch * EPOCH
        epoch += 1
        if state["status"] == "defunct":
            break
        if rng.random() >= 0.3:
            continue
        # changes are made in office hours, on a day within the epoch
        day = _day(start) + timedelta(days=rng.randrange(1, EPOCH.days + 1))
        at = day + timedelta(hours=8, seconds=rng.randrange(10 * 3600))
        if at > clock:
            break
        roll = rng.random()
        if state["status"] == "temporarily closed":
            if roll < 0.9:
                state.update(status="active", alert=None)
            else:
                continue
        elif roll < 0.15:
            state.update(status="temporarily closed", alert=rng.choice(ALERTS))
        elif roll < 0.6:
            opens, closes = rng.choice(HOURS)
            if (opens, closes) == (state["opens"], state["closes"]):
                continue
            state.update(opens=opens, closes=closes)
        elif roll < 0.99:
            state.update(fees=f"{t.fees}（{at.year}年{at.month}月起执行）")
        else:
            state.update(status="defunct", alert="服务已终止。")
        state["last_modified"] = at
        state["changes"] += 1
    return state


def _organization(district: District, org: Enterprise, index: int) -> dict[str, Any]:
    org_id = _uuid("org", org.uscc)
    community = next(c for c in district.communities if c.community_id == org.community_id)
    short = org.name.removeprefix(community.name) or org.name
    description = _safe(
        district,
        f"{district.name}{community.name}的{LEGAL_STATUS[org.kind]}，登记于{org.registered_on.year}年，"
        f"面向社区居民提供{'、'.join(t.name for t in CATALOGUE[org.industry])}等服务。",
        f"{LEGAL_STATUS[org.kind]}，面向社区居民提供社会服务。",
    )
    return {
        "id": org_id,
        "name": org.name,
        "alternate_name": short,
        "description": description,
        "email": f"org{index + 1:03d}@shequ.minghu.example",
        "website": f"https://shequ.minghu.example/org/{org_id}",
        "tax_status": None,
        "tax_id": None,
        "year_incorporated": org.registered_on.year,
        "legal_status": LEGAL_STATUS[org.kind],
        "logo": None,
        "uri": None,
        "parent_organization_id": None,
        # one-to-many fields, served with full=true only
        "phones": [
            {
                "id": _uuid("phone", org.uscc),
                "organization_id": org_id,
                "number": org.phone,
                "type": "voice",
                "description": "服务热线",
            }
        ],
        "organization_identifiers": [
            {
                "id": _uuid("identifier", org.uscc),
                "organization_id": org_id,
                "identifier_scheme": USCC_SCHEME,
                "identifier_type": "统一社会信用代码",
                "identifier": org.uscc,
            }
        ],
    }


def _service(district: District, plan: PlannedService, state: dict[str, Any]) -> dict[str, Any]:
    t = plan.template
    byday_cn = "、".join(
        "一二三四五六日"["MO,TU,WE,TH,FR,SA,SU".split(",").index(d)] for d in t.byday.split(",")
    )
    return {
        "id": plan.service_id,
        "organization_id": plan.org_id,
        "program_id": None,
        "name": t.name,
        "alternate_name": None,
        "description": t.description,
        "url": None,
        "email": None,
        "status": state["status"],
        "interpretation_services": None,
        "application_process": "到服务点现场登记，或由居委会代为申请。",
        "fees_description": state["fees"],
        "eligibility_description": t.eligibility,
        "minimum_age": t.min_age,
        "maximum_age": t.max_age,
        "assured_date": state["last_modified"].date().isoformat(),
        "alert": state["alert"],
        "last_modified": _ts(state["last_modified"]),
        "organization": {"id": plan.org_id, "name": plan.org.name},
        # one-to-many fields, served with full=true only
        "schedules": [
            {
                "id": _uuid("schedule", plan.service_id),
                "service_id": plan.service_id,
                "valid_from": plan.launched.date().isoformat(),
                "valid_to": None,
                "freq": "WEEKLY",
                "byday": t.byday,
                "opens_at": state["opens"],
                "closes_at": state["closes"],
                "description": f"每周{byday_cn} {state['opens']}-{state['closes']}",
            }
        ],
        "languages": [
            {
                "id": _uuid("language", plan.service_id, code),
                "service_id": plan.service_id,
                "name": LANGUAGE_NAMES[code],
                "code": code,
            }
            for code in t.languages
        ],  # fmt: skip
        "attributes": [
            {
                "id": _uuid("attribute", plan.service_id, "category"),
                "link_id": plan.service_id,
                "link_type": "service_category",
                "link_entity": "service",
                "taxonomy_term_id": _uuid("term", "service_category", t.code),
                "value": t.code,
                "label": t.name,
            }
        ],
    }


def _location(district: District, org: Enterprise) -> dict[str, Any]:
    building = district.buildings_by_id[org.building_id]
    location_id = _uuid("location", org.uscc, org.building_id)
    return {
        "id": location_id,
        "location_type": "physical",
        "url": None,
        "organization_id": _uuid("org", org.uscc),
        "name": f"{org.name}服务点",
        "alternate_name": None,
        "description": None,
        "transportation": None,
        "latitude": building.lat,
        "longitude": building.long,
        "external_identifier": building.building_id,
        "external_identifier_type": BUILDING_ID_TYPE,
        "addresses": [
            {
                "id": _uuid("address", location_id),
                "location_id": location_id,
                "attention": None,
                "address_1": building.address,  # building level: never a room
                "address_2": None,
                "city": CITY,
                "region": district.name,
                "state_province": CITY,
                "postal_code": building.zipcode,
                "country": "CN",
                "address_type": "physical",
            }
        ],
        "attributes": [
            {
                "id": _uuid("attribute", location_id, kind),
                "link_id": location_id,
                "link_type": kind,
                "link_entity": "location",
                "taxonomy_term_id": _uuid("term", kind, value),
                "value": value,
            }
            for kind, value in (("grid", org.grid_id), ("community", org.community_id))
        ],
    }


def directory(district: District, clock: datetime | None = None) -> Directory:
    """The clean directory as served at ``clock`` (default: the district clock)."""
    clock = clock or district.clock
    orgs = _orgs(district)
    services, sals = [], []
    for plan in _plan(district):
        if plan.launched > clock:
            continue
        services.append(_service(district, plan, _service_state(district, plan, clock)))
        sals.append(
            {
                "id": _uuid("service_at_location", plan.service_id, plan.location_id),
                "service_id": plan.service_id,
                "location_id": plan.location_id,
                "description": None,
            }
        )
    return Directory(
        clock,
        tuple(_organization(district, org, i) for i, org in enumerate(orgs)),
        tuple(services),
        tuple(_location(district, org) for org in orgs),
        tuple(sals),
    )


def service_changes(district: District, clock: datetime | None = None) -> dict[str, int]:
    """How many timeline changes each visible service has had by ``clock`` (for tests)."""
    clock = clock or district.clock
    return {
        p.service_id: _service_state(district, p, clock)["changes"]
        for p in _plan(district)
        if p.launched <= clock
    }


# --------------------------------------------------------------------------------------------
# Dirt
# --------------------------------------------------------------------------------------------

MISSING_FIELD = {
    "organizations": "name",
    "services": "name",
    "locations": "location_type",
    "service_at_locations": "location_id",
}


def _malform_uscc(code: str) -> str:
    """The USCC with a wrong check character (a typo in the last character)."""
    wrong = _USCC_CHARS[(_USCC_CHARS.index(code[-1]) + 1) % len(_USCC_CHARS)]
    return code[:-1] + wrong


def planned_dirt(
    district: District, config: DirtConfig | None, clock: datetime | None = None
) -> dict[str, dict[str, set[str]]]:
    """``{entity: {kind: ids}}`` for kinds duplicate, missing, bad-date, malformed-id (pure)."""
    truth = directory(district, clock)
    out: dict[str, dict[str, set[str]]] = {}
    for entity in ENTITIES:
        kinds: dict[str, set[str]] = {
            "duplicate": set(),
            "missing": set(),
            "bad-date": set(),
            "malformed-id": set(),
        }
        for item in truth.entity(entity):
            for kind in kinds:
                if kind == "bad-date" and entity != "services":
                    continue
                if kind == "malformed-id" and entity != "organizations":
                    continue
                if dirty(config, district.seed, kind, f"{entity}/{item['id']}"):
                    kinds[kind].add(item["id"])
        out[entity] = kinds
    return out


def _apply_dirt(
    entity: str, item: dict[str, Any], config: DirtConfig | None, seed: int, log: dict[str, set[str]]
) -> dict[str, Any]:
    key = f"{entity}/{item['id']}"
    if config is None:
        return item
    out = item
    if dirty(config, seed, "missing", key):
        out = dict(out)
        out.pop(MISSING_FIELD[entity], None)
        log["missing"].add(item["id"])
    if entity == "services" and dirty(config, seed, "bad-date", key):
        out = dict(out)
        if int(item["id"][-1], 16) % 2 == 0:
            out["last_modified"] = BAD_LAST_MODIFIED
        else:  # a schedule that ends before it starts
            schedule = dict(out["schedules"][0])
            schedule["valid_to"] = (
                date.fromisoformat(schedule["valid_from"]) - timedelta(days=400)
            ).isoformat()
            out["schedules"] = [schedule]
        log["bad-date"].add(item["id"])
    if entity == "organizations" and dirty(config, seed, "malformed-id", key):
        out = dict(out)
        ident = dict(out["organization_identifiers"][0])
        ident["identifier"] = _malform_uscc(ident["identifier"])
        out["organization_identifiers"] = [ident]
        log["malformed-id"].add(item["id"])
    return out


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------

ONE_TO_MANY = {
    "organizations": ("phones", "organization_identifiers"),
    "services": ("schedules", "languages", "attributes"),
    "locations": (),
    "service_at_locations": (),
}


@dataclass
class HsdsState(FaultCounters):
    """Server-side state, available as ``app.state.hsds``."""

    district: District
    dirt: DirtConfig | None
    faults: FaultQueue = field(default_factory=FaultQueue)
    authorizations: set[str] = field(default_factory=set)
    served_dirt: dict[str, set[str]] = field(
        default_factory=lambda: {
            "duplicate": set(),
            "missing": set(),
            "bad-date": set(),
            "malformed-id": set(),
        }
    )
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = field(default_factory=OrderedDict)

    def served(self, entity: str, full: bool) -> list[dict[str, Any]]:
        """The items of an entity as served at the current clock (dirt applied), cached per clock."""
        clock = self.district.clock
        key = (clock, entity, full)
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        items = []
        for item in directory(self.district, clock).entity(entity):
            dirty_item = _apply_dirt(entity, item, self.dirt, self.district.seed, self.served_dirt)
            if not full:
                dirty_item = {k: v for k, v in dirty_item.items() if k not in ONE_TO_MANY[entity]}
            items.append(dirty_item)
            if dirty(self.dirt, self.district.seed, "duplicate", f"{entity}/{item['id']}"):
                items.append(dirty_item)
                self.served_dirt["duplicate"].add(item["id"])
        with self.lock:
            self.cache[key] = items
            while len(self.cache) > 16:
                self.cache.popitem(last=False)
        return items


def add_fault(app: FastAPI, fault: Fault) -> None:
    """Make the next ``fault.count`` HSDS calls answer ``fault.status`` (retry tests)."""
    state_of(app).faults.add(fault)


def state_of(app: FastAPI) -> HsdsState:
    return app.state.hsds


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


def _int(params: Any, name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be between {lo} and {hi if hi is not None else '∞'}, got {value}")
    return value


def mount(app: FastAPI, district: District, dirt: DirtConfig | None = None) -> None:
    """Add the HSDS 3.0 routes under :data:`PREFIX` to the shared simulator app."""
    state = HsdsState(district, dirt)
    app.state.hsds = state

    def fault_response(request: Request) -> Response | None:
        auth = request.headers.get("authorization")
        if auth:
            with state.lock:
                state.authorizations.add(auth)
        fault = state.faults.take_error()
        if fault is None:
            return None
        return _error(fault.status, fault.message, fault.headers())

    @app.get(PREFIX + "/")
    async def meta(request: Request) -> Response:
        return fault_response(request) or JSONResponse(
            {
                "version": HSDS_VERSION,
                "profile": "https://shequ.minghu.example/hsds/profile",
                "openapi_url": "https://shequ.minghu.example/hsds/openapi.json",
                "description": f"{district.name}民政局社会服务目录",
                "publisher": {"name": f"{district.name}民政局社会服务科"},
            }
        )

    def paged(entity: str):  # noqa: ANN202 - FastAPI endpoint factory
        async def endpoint(request: Request) -> Response:
            faulted = fault_response(request)
            if faulted is not None:
                return faulted
            params = request.query_params
            try:
                page = _int(params, "page", 1, 1)
                per_page = _int(params, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
            except ValueError as exc:
                return _error(400, str(exc))
            full = params.get("full", "").lower() == "true"
            items = state.served(entity, full)
            total = len(items)
            total_pages = math.ceil(total / per_page)
            contents = items[(page - 1) * per_page : page * per_page]
            return JSONResponse(
                {
                    "total_items": total,
                    "total_pages": total_pages,
                    "page_number": page,
                    "size": len(contents),
                    "first_page": page == 1,
                    "last_page": page >= total_pages,
                    "empty": total == 0,
                    "contents": contents,
                }
            )

        endpoint.__name__ = f"hsds_{entity}"
        return endpoint

    for entity in ENTITIES:
        app.add_api_route(f"{PREFIX}/{entity}", paged(entity), methods=["GET"])
