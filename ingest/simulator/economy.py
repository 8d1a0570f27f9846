"""Organisations of the district, shared by every source that names them.

The same enterprise (by its Unified Social Credit Code, GB 32100) is a merchant or property
company in the property/commercial MariaDB, has a credit rating on the CKAN open-data portal and,
for social organisations, appears in the HSDS service directory. Everything is derived
deterministically from the district's seed and places, so every source agrees.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from random import Random

from stdnum.cn import uscc as _uscc

from ingest.simulator.district import Building, District

# Registration authority + type codes (GB 32100): 91 = enterprise (AIC), 52 = social organisation
# (civil affairs, 民办非企业单位), 12 = public institution.
_KIND_PREFIX = {"property_company": "91", "merchant": "91", "social_org": "52", "public_institution": "12"}
_MERCHANT_TRADES = (
    ("便利店", "retail"),
    ("生鲜超市", "retail"),
    ("餐馆", "catering"),
    ("早餐店", "catering"),
    ("药店", "pharmacy"),
    ("理发店", "personal_services"),
    ("洗衣店", "personal_services"),
    ("五金店", "retail"),
    ("快递驿站", "logistics"),
    ("培训中心", "education"),
)
_SOCIAL_ORGS = (
    ("社区养老服务中心", "elderly_care"),
    ("邻里互助会", "mutual_aid"),
    ("青少年活动中心", "youth"),
    ("残疾人康复站", "disability"),
    ("社区食堂", "food"),
    ("法律援助工作站", "legal_aid"),
)
_CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
REGION = "310115"  # the district's administrative division code (as in its residents' ID numbers)


@dataclass(frozen=True, slots=True)
class Enterprise:
    uscc: str  # 18-character Unified Social Credit Code with a valid check character
    name: str
    kind: str  # property_company | merchant | social_org | public_institution
    industry: str
    building_id: str
    community_id: str
    grid_id: str
    registered_on: date
    phone: str  # the organisation's public service number (not a person's)


def make_uscc(rng: Random, kind: str) -> str:
    body = _KIND_PREFIX[kind] + REGION + "".join(rng.choice(_CODE_CHARS) for _ in range(9))
    return body + _uscc.calc_check_digit(body)


def grid_of_building(district: District) -> dict[str, str]:
    """Each building's grid: the grid most of its households belong to."""
    votes: dict[str, Counter[str]] = {}
    for household in district.households:
        votes.setdefault(household.building_id, Counter())[household.grid_id] += 1
    fallback = {g.community_id: g.grid_id for g in reversed(district.grids)}
    return {
        b.building_id: (
            votes[b.building_id].most_common(1)[0][0] if b.building_id in votes else fallback[b.community_id]
        )
        for b in district.buildings
    }


@cache
def _enterprises(district: District) -> tuple[Enterprise, ...]:
    rng = Random(f"{district.seed}/economy")
    grids = grid_of_building(district)
    first_building: dict[str, Building] = {}
    for b in district.buildings:
        first_building.setdefault(b.compound_id, b)
    used: set[str] = set()
    out: list[Enterprise] = []

    def add(name: str, kind: str, industry: str, building: Building) -> None:
        code = make_uscc(rng, kind)
        while code in used:
            code = make_uscc(rng, kind)
        used.add(code)
        registered = date(2005, 1, 1) + timedelta(days=rng.randrange(0, 20 * 365))
        phone = f"021-{rng.randrange(5000_0000, 6999_9999)}"
        out.append(
            Enterprise(
                code,
                name,
                kind,
                industry,
                building.building_id,
                building.community_id,
                grids[building.building_id],
                registered,
                phone,
            )
        )

    companies = sorted({c.property_company for c in district.compounds})
    for company in companies:
        compound = next(c for c in district.compounds if c.property_company == company)
        add(company, "property_company", "property_management", first_building[compound.compound_id])
    # About one merchant per 60 residents, on the ground floor of buildings along the roads.
    n_merchants = max(3, district.resident_count // 60)
    for i in range(n_merchants):
        building = rng.choice(district.buildings)
        trade, industry = _MERCHANT_TRADES[i % len(_MERCHANT_TRADES)]
        compound = district.compounds_by_id[building.compound_id]
        add(f"{compound.road}{trade}{i + 1:03d}", "merchant", industry, building)
    for community in district.communities:
        buildings = [b for b in district.buildings if b.community_id == community.community_id]
        if not buildings:
            continue
        for label, industry in _SOCIAL_ORGS[: 2 + rng.randrange(0, 3)]:
            add(f"{community.name}{label}", "social_org", industry, rng.choice(buildings))
        add(
            f"{community.name.removesuffix('社区')}社区卫生服务站",
            "public_institution",
            "health",
            rng.choice(buildings),
        )
    return tuple(out)


def enterprises(district: District) -> list[Enterprise]:
    """Every organisation of the district, in a stable order (deterministic per seed)."""
    return list(_enterprises(district))
