"""Chinese identifier helpers for the simulator (GB 11643 resident ID numbers, mobiles)."""

from __future__ import annotations

from datetime import date
from random import Random

_RIC_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RIC_CHECK = "10X98765432"

# Real county-level region codes. python-stdnum's cn.ric also checks that the code existed in the
# birth year, so codes only valid since the 1980s (most outside Beijing/central Shanghai in its
# database) are used only for people born from 1990 on.
LOCAL_REGION_CODES: tuple[str, ...] = (
    "310101",  # 上海市黄浦区
    "310104",  # 上海市徐汇区
    "310105",  # 上海市长宁区
    "310106",  # 上海市静安区
    "310107",  # 上海市普陀区
    "310109",  # 上海市虹口区
    "310110",  # 上海市杨浦区
)
MIGRANT_REGION_CODES_ANY_YEAR: tuple[str, ...] = (
    "110101",  # 北京市东城区
    "110102",  # 北京市西城区
    "110105",  # 北京市朝阳区
    "110108",  # 北京市海淀区
)
MIGRANT_REGION_CODES_SINCE_1990: tuple[str, ...] = (
    "320102",  # 江苏省南京市玄武区
    "330106",  # 浙江省杭州市西湖区
    "420106",  # 湖北省武汉市武昌区
    "510107",  # 四川省成都市武侯区
    "410105",  # 河南省郑州市金水区
    "370102",  # 山东省济南市历下区
)
MIGRANT_REGION_CODES = MIGRANT_REGION_CODES_ANY_YEAR + MIGRANT_REGION_CODES_SINCE_1990
REGION_CODES: tuple[str, ...] = LOCAL_REGION_CODES + MIGRANT_REGION_CODES

# Mobile number prefixes actually allocated to Chinese carriers (all start 13-19).
MOBILE_PREFIXES: tuple[str, ...] = (
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139",
    "150", "151", "152", "153", "155", "156", "157", "158", "159",
    "166", "173", "176", "177", "178",
    "180", "181", "182", "183", "184", "185", "186", "187", "188", "189",
    "191", "198", "199",
)  # fmt: skip


def migrant_region_codes(birth_year: int) -> tuple[str, ...]:
    """Non-local region codes that python-stdnum accepts for someone born in ``birth_year``."""
    return MIGRANT_REGION_CODES if birth_year >= 1990 else MIGRANT_REGION_CODES_ANY_YEAR


def ric_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of the first 17 digits of a resident ID number."""
    total = sum(int(c) * w for c, w in zip(first17, _RIC_WEIGHTS, strict=True))
    return _RIC_CHECK[total % 11]


def make_ric(region: str, birth: date, sequence: int) -> str:
    """Build an 18-character resident ID number (GB 11643) with a correct check character."""
    if not 0 <= sequence <= 999:
        raise ValueError(f"sequence out of range: {sequence}")
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + ric_check_char(first17)


def draw_sequence(rng: Random, male: bool) -> int:
    """A 3-digit sequence whose parity encodes sex (odd = male), never 000."""
    if male:
        return rng.randrange(1, 1000, 2)
    return rng.randrange(2, 1000, 2)


def draw_mobile(rng: Random) -> str:
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(100_000_000):08d}"
