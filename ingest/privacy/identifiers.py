"""Validate Chinese direct identifiers: resident ID numbers, USCCs and mobile numbers.

Reasons are written for the community data clerk who has to fix the record at the source: they
say what is wrong and where, and never repeat the full identifier (a reason ends up in
quarantine files and logs, which are not the identity zone).

- Resident ID number (GB 11643): 6-digit region code, 8-digit birth date, 3-digit sequence (odd =
  male), ISO 7064 MOD 11-2 check character. ``python-stdnum`` (``stdnum.cn.ric``) decides whether
  the region code existed in the birth year.
- Unified Social Credit Code (GB 32100): ``stdnum.cn.uscc``.
- Mainland mobile numbers: 11 digits starting 13-19.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from stdnum import numdb
from stdnum.cn import ric, uscc
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidFormat, InvalidLength, ValidationError

__all__ = [
    "CodeCheck",
    "IdCheck",
    "age_on",
    "compact_code",
    "contains_identifier",
    "is_minor",
    "normalise_mobile",
    "resident_id_check_char",
    "validate_mobile",
    "validate_resident_id",
    "validate_uscc",
]

RIC_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
RIC_CHECK_CHARS = "10X98765432"
PIPL_MINOR_AGE = 14

# Separators people and systems put inside identifiers ("1101 0519…", "138-0013-8000").
_SEPARATORS = re.compile(r"[\s\-_.()/]+")


@dataclass(frozen=True, slots=True)
class IdCheck:
    """Outcome of validating a resident ID number. Derived fields are set only when valid."""

    valid: bool
    reason: str | None = None
    normalised: str | None = None
    birth_date: date | None = None
    sex: str | None = None  # "M" | "F"
    region: str | None = None  # e.g. "上海市杨浦区"
    region_code: str | None = None


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """Outcome of validating a USCC or a mobile number."""

    valid: bool
    reason: str | None = None
    normalised: str | None = None


def compact_code(value: str) -> str:
    # NFKC folds full-width digits and letters (１１０…Ｘ) typed with Chinese input methods.
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", value)).upper()


def resident_id_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 17 digits of a resident ID number."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("expected the first 17 digits of a resident ID number")
    total = sum(int(c) * w for c, w in zip(first17, RIC_WEIGHTS, strict=True))
    return RIC_CHECK_CHARS[total % 11]


def _describe_char(ch: str) -> str:
    return repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"


def _region(number: str, birth: date) -> tuple[str | None, str | None]:
    """(region name, reason) for the region code, as python-stdnum knows it."""
    code = number[:6]
    parts = {k: v for _, props in numdb.get("cn/loc").info(code) for k, v in props.items()}
    if "county" not in parts:
        return None, (
            f"unknown region code {code} (first 6 digits; not an administrative division in GB/T 2260)"
        )
    try:
        place = ric.get_birth_place(number)
    except (InvalidComponent, KeyError):
        return None, (
            f"region code {code} was not in use in the birth year {birth.year}; "
            "check the first 6 digits and the birth date"
        )
    name = "".join(place.get(k, "") for k in ("province", "prefecture", "county"))
    return name, None


def validate_resident_id(value: str | None, *, on: date | None = None) -> IdCheck:
    """Validate an 18-character resident ID number (GB 11643).

    ``on`` is the day the check is made for (birth dates after it are rejected); it defaults to
    today. Spaces, dashes, full-width characters and a lowercase ``x`` are tolerated.
    """
    if value is not None and not isinstance(value, str):
        return IdCheck(
            False, f"resident ID number must be text, got {type(value).__name__} (keep it as a string)"
        )
    if value is None or not value.strip():
        return IdCheck(False, "resident ID number is empty")
    number = compact_code(value)
    if len(number) != 18:
        hint = " (old 15-digit numbers must be converted to 18 digits)" if len(number) == 15 else ""
        return IdCheck(False, f"resident ID number has {len(number)} characters, expected 18{hint}")
    for pos, ch in enumerate(number[:17], start=1):
        if not ("0" <= ch <= "9"):
            return IdCheck(False, f"character {pos} is {_describe_char(ch)}, expected a digit 0-9")
    if number[17] not in "0123456789X":
        return IdCheck(False, f"character 18 is {_describe_char(number[17])}, expected a digit or X")
    if number[17] != resident_id_check_char(number[:17]):
        return IdCheck(
            False,
            "check character is wrong (ISO 7064 MOD 11-2): a digit was probably mistyped; "
            "compare the number with the ID card",
        )
    raw_birth = number[6:14]
    try:
        birth = date(int(raw_birth[:4]), int(raw_birth[4:6]), int(raw_birth[6:]))
    except ValueError:
        return IdCheck(False, f"birth date {raw_birth} is not a real date (characters 7-14, YYYYMMDD)")
    today = on or date.today()
    if birth > today:
        return IdCheck(False, "birth date is in the future")
    if birth.year < 1900:
        return IdCheck(False, f"birth year {birth.year} is before 1900")
    region, reason = _region(number, birth)
    if reason is not None:
        return IdCheck(False, reason)
    # The checks above mirror python-stdnum's; it stays the authority on validity.
    try:
        ric.validate(number)
    except (ValidationError, KeyError):
        return IdCheck(False, "resident ID number is rejected by python-stdnum (cn.ric)")
    return IdCheck(
        valid=True,
        normalised=number,
        birth_date=birth,
        sex="M" if int(number[14:17]) % 2 else "F",
        region=region,
        region_code=number[:6],
    )


def age_on(birth_date: date, on: date) -> int:
    """Age in completed years on ``on`` (someone born on 29 February ages on 1 March)."""
    before_birthday = (on.month, on.day) < (birth_date.month, birth_date.day)
    return on.year - birth_date.year - int(before_birthday)


def is_minor(birth_date: date, on: date, age: int = PIPL_MINOR_AGE) -> bool:
    """True when the person is younger than ``age`` on ``on``.

    PIPL art. 28/31: personal information of a minor under 14 is sensitive personal information.
    """
    return age_on(birth_date, on) < age


def validate_uscc(value: str | None) -> CodeCheck:
    """Validate a Unified Social Credit Code (GB 32100) with ``stdnum.cn.uscc``."""
    if value is not None and not isinstance(value, str):
        return CodeCheck(False, f"unified social credit code must be text, got {type(value).__name__}")
    if value is None or not value.strip():
        return CodeCheck(False, "unified social credit code is empty")
    code = compact_code(value)
    try:
        uscc.validate(code)
    except InvalidLength:
        return CodeCheck(False, f"unified social credit code has {len(code)} characters, expected 18")
    except InvalidFormat:
        if not code[:8].isascii() or not code[:8].isdigit():
            return CodeCheck(False, "characters 1-8 (registration authority, type, region) must be digits")
        return CodeCheck(
            False,
            "characters 9-18 may only use 0-9 and the letters ABCDEFGHJKLMNPQRTUWXY (no I, O, S, V, Z)",
        )
    except InvalidChecksum:
        return CodeCheck(
            False, "check character is wrong (GB 32100 MOD 31): a character was probably mistyped"
        )
    except ValidationError:
        return CodeCheck(False, "unified social credit code is rejected by python-stdnum (cn.uscc)")
    return CodeCheck(True, normalised=code)


def normalise_mobile(value: str) -> str:
    """Strip separators and the +86 / 0086 / 86 country prefix; no validation."""
    number = _SEPARATORS.sub("", unicodedata.normalize("NFKC", value))
    if number.startswith("+"):
        number = number[1:]
        if number.startswith("86"):
            number = number[2:]
    elif number.startswith("0086"):
        number = number[4:]
    elif number.startswith("86") and len(number) == 13:
        number = number[2:]
    return number


def validate_mobile(value: str | None) -> CodeCheck:
    """Validate a mainland mobile number; ``normalised`` is the bare 11 digits."""
    if value is not None and not isinstance(value, str):
        return CodeCheck(False, f"mobile number must be text, got {type(value).__name__}")
    if value is None or not value.strip():
        return CodeCheck(False, "mobile number is empty")
    number = normalise_mobile(value)
    if not number.isascii() or not number.isdigit():
        return CodeCheck(False, "mobile number may only contain digits, spaces, dashes and a +86 prefix")
    if len(number) != 11:
        return CodeCheck(False, f"mobile number has {len(number)} digits, expected 11")
    if number[0] != "1" or number[1] not in "3456789":
        hint = " (this looks like a landline with its area code)" if number[0] == "0" else ""
        return CodeCheck(False, f"mobile number starts with {number[:2]}, expected 13-19{hint}")
    return CodeCheck(True, normalised=number)


# Digit runs that look like a resident ID number or a mobile number inside free text.
_DIGIT_SEPARATORS = re.compile(r"(?<=[0-9])[\s\-]+(?=[0-9Xx])")
_IDENTIFIER_IN_TEXT = re.compile(r"(?<![0-9])(?:[0-9]{17}[0-9Xx]|(?:0086|86)?1[3-9][0-9]{9})(?![0-9])")


def contains_identifier(text: str) -> bool:
    """True if free text (an audit purpose, an actor name) seems to carry an ID or mobile number."""
    compact = _DIGIT_SEPARATORS.sub("", unicodedata.normalize("NFKC", text))
    return bool(_IDENTIFIER_IN_TEXT.search(compact))
