"""The district's schools as a school information system would export them: OneRoster 1.1 CSV bundles.

``publish(district, dropzone)`` drops one zip bundle into a folder, as a SIS export job does:
the first call writes a **bulk** bundle (everything as of the district clock), every later call
after ``district.advance()`` writes a **delta** bundle with only what changed since the last
published bundle (or returns None when nothing did). A small ``.publisher-state.json`` in the
drop folder remembers the clock of the last bundle, so publishing twice at one clock is a no-op.
Bundles are written under a temporary name and renamed, so a reader never sees half a zip.

Ground truth (deterministic from the district's seed and residents, never from the wall clock):

* orgs: the district education bureau and its schools — 2-3 primary schools (grades 01-06), each
  serving a catchment of communities, and one complete middle school (grades 07-12);
* students: every resident aged 6-17 on the clock date (enrolled from the 6th birthday, gone on the
  18th), ``users.identifier`` = the resident ID number (China's student status number is based on
  it), names as ``familyName`` / ``givenName``; no phone or e-mail (minors' contact numbers are
  their guardians', which a SIS export should not pass off as the child's);
* grade from the age on 1 September of the school year; one homeroom class (and course) per school,
  grade and school year, one head teacher per class (staff, not residents);
* over time: children turning 6 enrol, 18th birthdays and withdrawals (about 2 % a year, e.g. to a
  private school elsewhere) become ``tobedeleted``, transfers between primary schools (about 3 % a
  year) move a student and their enrolment, and on 1 September everyone moves up a grade into the
  new school year's classes.

Dirt (``DirtConfig`` through :func:`ingest.simulator.dirt.dirty`, keyed by the row's sourcedId):
``malformed-id`` (users.identifier with a wrong check character), ``missing`` (users and
enrollments rows with an empty sourcedId), ``duplicate`` (users, enrollments and demographics rows
written twice) and ``bad-date`` (demographics.birthDate 1-30 days after the clock).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import weakref
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ingest.simulator.dirt import DirtConfig, dirty, malform_id
from ingest.simulator.district import TZ, District, Resident

STATE_FILE = ".publisher-state.json"
SYSTEM_NAME = "明湖区中小学学籍管理系统"
SYSTEM_CODE = "MHQ-SIS"
WITHDRAW_SHARE = 0.06  # over TIMELINE_YEARS
TRANSFER_SHARE = 0.09
TIMELINE_YEARS = 3
HEADERS: dict[str, list[str]] = {  # OneRoster 1.1 CSV binding, column order as in the spec
    "orgs": "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId".split(","),
    "academicSessions": (
        "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear"
    ).split(","),
    "courses": (
        "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,"
        "subjects,subjectCodes"
    ).split(","),
    "classes": (
        "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,"
        "schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods"
    ).split(","),
    "users": (
        "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,"
        "familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password"
    ).split(","),
    "demographics": (
        "sourcedId,status,dateLastModified,birthDate,sex,americanIndianOrAlaskaNative,asian,"
        "blackOrAfricanAmerican,nativeHawaiianOrOtherPacificIslander,white,demographicRaceTwoOrMoreRaces,"
        "hispanicOrLatinoEthnicity,countryOfBirthCode,stateOfBirthAbbreviation,cityOfBirth,"
        "publicSchoolResidenceStatus"
    ).split(","),
    "enrollments": (
        "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,"
        "beginDate,endDate"
    ).split(","),
}
# Every file of the OneRoster 1.1 CSV binding, as named in manifest.csv (file.<name>).
MANIFEST_FILES = (
    "academicSessions", "categories", "classes", "classResources", "courses", "courseResources",
    "demographics", "enrollments", "lineItems", "orgs", "resources", "results", "users",
)  # fmt: skip
GRADE_NAMES = ("一", "二", "三", "四", "五", "六", "初一", "初二", "初三", "高一", "高二", "高三")
_TEACHER_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾"
_TEACHER_GIVEN = ("老师", "静", "敏", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超")
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)


def _fraction(*parts: object) -> float:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _short(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=5).hexdigest()


def _utc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=TZ)


def _birthday(born: date, age: int) -> date:
    try:
        return born.replace(year=born.year + age)
    except ValueError:  # 29 February
        return born.replace(year=born.year + age, day=28)


def school_year_of(at: datetime) -> int:
    """The start year of the school year (1 September) ``at`` falls in."""
    local = at.astimezone(TZ)
    return local.year if (local.month, local.day) >= (9, 1) else local.year - 1


def _sy_start(year: int) -> datetime:
    return datetime(year, 9, 1, tzinfo=TZ)


# --------------------------------------------------------------------------------------------
# Schools and students (ground truth)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class School:
    sourced_id: str
    name: str
    identifier: str  # 10-digit school code (学校标识码)
    level: str  # primary | middle
    communities: tuple[str, ...]  # catchment (primary schools)


@dataclass(frozen=True)
class Segment:
    """A stretch of one student's school life with the same school, grade and school year."""

    start: datetime
    end: datetime
    school: str
    grade: int
    year: int


@dataclass(frozen=True)
class Student:
    sourced_id: str
    resident: Resident
    enter: datetime
    leave: datetime  # 18th birthday or withdrawal, whichever is first
    withdrawn_at: datetime | None
    transferred_at: datetime | None
    segments: tuple[Segment, ...]

    def segment_at(self, at: datetime) -> Segment | None:
        for seg in self.segments:
            if seg.start <= at < seg.end:
                return seg
        return None


@dataclass
class _Model:
    schools: list[School]
    students: list[Student]
    epoch: datetime


_MODELS: weakref.WeakKeyDictionary[District, _Model] = weakref.WeakKeyDictionary()


def _model(district: District) -> _Model:
    model = _MODELS.get(district)
    if model is None:
        model = _build(district)
        _MODELS[district] = model
    return model


def schools(district: District) -> list[School]:
    return list(_model(district).schools)


def students(district: District, at: datetime | None = None) -> list[tuple[Student, Segment]]:
    """Ground truth: the students enrolled at ``at`` (default: the clock) with their current segment."""
    at = at or district.clock
    out = []
    for student in _model(district).students:
        seg = student.segment_at(at)
        if seg is not None:
            out.append((student, seg))
    return out


def withdrawn(district: District, at: datetime | None = None) -> list[Student]:
    """Students who withdrew (left the district's schools before turning 18) by ``at``."""
    at = at or district.clock
    return [s for s in _model(district).students if s.withdrawn_at is not None and s.withdrawn_at <= at]


def _build(district: District) -> _Model:
    seed = district.seed
    epoch = _sy_start(school_year_of(district.start))
    n_primary = 2 if district.resident_count < 5000 else 3
    communities = [c.community_id for c in district.communities]
    streets = {s.street_id: s for s in district.streets}
    comm_street = {c.community_id: c.street_id for c in district.communities}
    schools_: list[School] = []
    for i in range(n_primary):
        catchment = tuple(c for k, c in enumerate(communities) if k * n_primary // len(communities) == i)
        street = streets[comm_street[catchment[0]]].name if catchment else district.name
        code = f"21{3101 + i:04d}{int(_fraction(seed, 'school', i) * 9000) + 1000:04d}"
        schools_.append(
            School(f"sch-p{i + 1}", f"{district.name}{street}第{i + 1}小学", code, "primary", catchment)
        )
    code = f"31{3101:04d}{int(_fraction(seed, 'school', 'm') * 9000) + 1000:04d}"
    schools_.append(School("sch-m1", f"{district.name}实验中学", code, "middle", tuple(communities)))
    primary_of = {c: s.sourced_id for s in schools_[:n_primary] for c in s.communities}
    primaries = [s.sourced_id for s in schools_[:n_primary]]

    horizon = epoch + timedelta(days=365 * TIMELINE_YEARS)
    span = (horizon - epoch).total_seconds()
    out: list[Student] = []
    for r in district.residents:
        enter = max(epoch, _midnight(_birthday(r.birth_date, 6)))
        leave = _midnight(_birthday(r.birth_date, 18))
        if leave <= epoch:
            continue
        withdraw = transfer = None
        if _fraction(seed, "oneroster-withdraw", r.resident_id) < WITHDRAW_SHARE:
            withdraw = epoch + timedelta(seconds=round(_fraction(seed, "withdraw-at", r.resident_id) * span))
        if _fraction(seed, "oneroster-transfer", r.resident_id) < TRANSFER_SHARE and len(primaries) > 1:
            transfer = epoch + timedelta(seconds=round(_fraction(seed, "transfer-at", r.resident_id) * span))
        if withdraw is not None and withdraw < leave:
            leave = withdraw
        else:
            withdraw = None
        if leave <= enter:
            continue
        home = primary_of[r.community_id]
        other = primaries[(primaries.index(home) + 1) % len(primaries)]
        cuts = {enter, leave}
        year = school_year_of(enter) + 1
        while _sy_start(year) < leave:
            cuts.add(_sy_start(year))
            year += 1
        if transfer is not None and enter < transfer < leave:
            cuts.add(transfer)
        else:
            transfer = None
        bounds = sorted(cuts)
        segments: list[Segment] = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            sy = school_year_of(a)
            grade = min(12, max(1, r.age_on(date(sy, 9, 1)) - 5))
            if grade > 6:
                school = "sch-m1"
            else:
                school = other if transfer is not None and a >= transfer else home
            segments.append(Segment(a, b, school, grade, sy))
        sid = f"stu-{_short(seed, 'student', r.resident_id)}"
        out.append(Student(sid, r, enter, leave, withdraw, transfer, tuple(segments)))
    return _Model(schools_, out, epoch)


# --------------------------------------------------------------------------------------------
# The roster at an instant: {file: {sourcedId: (row, valid from, valid until)}}
# --------------------------------------------------------------------------------------------

Roster = dict[str, dict[str, tuple[dict[str, str], datetime, datetime]]]


def _class_id(school: str, year: int, grade: int) -> str:
    return f"cls-{school}-{year}-g{grade:02d}"


def _grades(school: School) -> range:
    return range(1, 7) if school.level == "primary" else range(7, 13)


def _teacher(seed: int, school: str, grade: int) -> tuple[str, str, str]:
    key = f"{school}-g{grade:02d}"
    surname = _TEACHER_SURNAMES[int(_fraction(seed, "teacher-s", key) * len(_TEACHER_SURNAMES))]
    given = _TEACHER_GIVEN[int(_fraction(seed, "teacher-g", key) * len(_TEACHER_GIVEN))]
    return f"tch-{key}", surname, given


def roster(district: District, at: datetime) -> Roster:
    model = _model(district)
    seed = district.seed
    out: Roster = {name: {} for name in HEADERS}
    year = school_year_of(at)
    y_start, y_end = _sy_start(year), _sy_start(year + 1)
    bureau = "org-edu-bureau"
    out["orgs"][bureau] = (
        {"name": f"{district.name}教育局", "type": "district", "identifier": "", "parentSourcedId": ""},
        model.epoch,
        FAR_FUTURE,
    )
    sessions = out["academicSessions"]
    sy = f"sy-{year}"
    sessions[sy] = (
        {"title": f"{year}-{year + 1}学年", "type": "schoolYear", "startDate": f"{year}-09-01",
         "endDate": f"{year + 1}-07-15", "parentSourcedId": "", "schoolYear": str(year + 1)},
        y_start, y_end,
    )  # fmt: skip
    for term, (title, begin, end) in enumerate(
        ((f"{year}学年第一学期", f"{year}-09-01", f"{year + 1}-01-20"),
         (f"{year}学年第二学期", f"{year + 1}-02-20", f"{year + 1}-07-15")),
        start=1,
    ):  # fmt: skip
        sessions[f"{sy}-t{term}"] = (
            {"title": title, "type": "semester", "startDate": begin, "endDate": end,
             "parentSourcedId": sy, "schoolYear": str(year + 1)},
            y_start, y_end,
        )  # fmt: skip
    for school in model.schools:
        out["orgs"][school.sourced_id] = (
            {
                "name": school.name,
                "type": "school",
                "identifier": school.identifier,
                "parentSourcedId": bureau,
            },
            model.epoch,
            FAR_FUTURE,
        )
        for grade in _grades(school):
            course = f"crs-{school.sourced_id}-{year}-g{grade:02d}"
            cls = _class_id(school.sourced_id, year, grade)
            name = GRADE_NAMES[grade - 1] + ("年级" if grade <= 6 else "")
            out["courses"][course] = (
                {"schoolYearSourcedId": sy, "title": f"{year}学年{name}", "courseCode": f"G{grade:02d}",
                 "grades": f"{grade:02d}", "orgSourcedId": school.sourced_id, "subjects": "",
                 "subjectCodes": ""},
                y_start, y_end,
            )  # fmt: skip
            out["classes"][cls] = (
                {"title": f"{name}(1)班", "grades": f"{grade:02d}", "courseSourcedId": course,
                 "classCode": f"{year}-G{grade:02d}-1", "classType": "homeroom", "location": "",
                 "schoolSourcedId": school.sourced_id, "termSourcedIds": f"{sy}-t1,{sy}-t2",
                 "subjects": "", "subjectCodes": "", "periods": ""},
                y_start, y_end,
            )  # fmt: skip
            teacher, surname, given = _teacher(seed, school.sourced_id, grade)
            out["users"][teacher] = (
                {"enabledUser": "true", "orgSourcedIds": school.sourced_id, "role": "teacher",
                 "username": teacher, "userIds": "", "givenName": given, "familyName": surname,
                 "middleName": "", "identifier": "", "email": "", "sms": "", "phone": "",
                 "agentSourcedIds": "", "grades": "", "password": ""},
                model.epoch, FAR_FUTURE,
            )  # fmt: skip
            out["enrollments"][f"enr-{cls}-{teacher}"] = (
                {"classSourcedId": cls, "schoolSourcedId": school.sourced_id, "userSourcedId": teacher,
                 "role": "teacher", "primary": "true", "beginDate": f"{year}-09-01", "endDate": ""},
                y_start, y_end,
            )  # fmt: skip
    for student in model.students:
        if not student.enter <= at < student.leave:
            continue
        r = student.resident
        segs = student.segments
        i = next(k for k, s in enumerate(segs) if s.start <= at < s.end)
        seg = segs[i]
        # the user row changes when school or grade does; the enrolment when the class does
        u0 = i
        while u0 > 0 and (segs[u0 - 1].school, segs[u0 - 1].grade) == (seg.school, seg.grade):
            u0 -= 1
        u1 = i
        while u1 + 1 < len(segs) and (segs[u1 + 1].school, segs[u1 + 1].grade) == (seg.school, seg.grade):
            u1 += 1
        sid = student.sourced_id
        out["users"][sid] = (
            {"enabledUser": "true", "orgSourcedIds": seg.school, "role": "student",
             "username": f"s{_short(seed, 'login', sid)}", "userIds": "", "givenName": r.name[1:],
             "familyName": r.name[:1], "middleName": "", "identifier": r.id_number, "email": "",
             "sms": "", "phone": "", "agentSourcedIds": "", "grades": f"{seg.grade:02d}", "password": ""},
            segs[u0].start, segs[u1].end,
        )  # fmt: skip
        out["demographics"][sid] = (
            {"birthDate": r.birth_date.isoformat(), "sex": "male" if r.sex == "M" else "female",
             **{k: "" for k in HEADERS["demographics"][5:]}},
            student.enter, student.leave,
        )  # fmt: skip
        cls = _class_id(seg.school, seg.year, seg.grade)
        out["enrollments"][f"enr-{cls}-{sid}"] = (
            {"classSourcedId": cls, "schoolSourcedId": seg.school, "userSourcedId": sid, "role": "student",
             "primary": "false", "beginDate": seg.start.astimezone(TZ).date().isoformat(),
             "endDate": f"{seg.year + 1}-07-15"},
            seg.start, seg.end,
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# Bundles
# --------------------------------------------------------------------------------------------


def _rows_for(
    name: str, items: list[tuple[str, str, datetime, dict[str, str]]], district: District,
    dirt: DirtConfig | None, clock: datetime,
) -> list[list[str]]:  # fmt: skip
    """CSV rows (header first) of one file, with dirt applied."""
    header = HEADERS[name]
    seed = district.seed
    rows = [header]
    for sourced_id, status, modified, data in sorted(items, key=lambda x: (x[2], x[0])):
        row = {"sourcedId": sourced_id, "status": status, "dateLastModified": _utc(modified), **data}
        copies = 1
        student = row.get("role") == "student" or name == "demographics"
        if name in {"users", "enrollments"} and dirty(dirt, seed, "missing", sourced_id):
            row["sourcedId"] = ""
        if name == "users" and student and row.get("identifier"):
            if dirty(dirt, seed, "malformed-id", sourced_id):
                row["identifier"] = malform_id(row["identifier"])
        if name == "demographics" and dirty(dirt, seed, "bad-date", sourced_id):
            days = 1 + int(_fraction(seed, "future-birth", sourced_id) * 30)
            row["birthDate"] = (clock.astimezone(TZ).date() + timedelta(days=days)).isoformat()
        if name in {"users", "enrollments", "demographics"} and dirty(dirt, seed, "duplicate", sourced_id):
            copies = 2
        rows.extend([[row.get(col, "") for col in header]] * copies)
    return rows


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def _write_bundle(path: Path, files: dict[str, bytes], mode: str) -> None:
    manifest = [["propertyName", "value"], ["manifest.version", "1.0"], ["oneroster.version", "1.1"]]
    manifest += [[f"file.{n}", mode if n in files else "absent"] for n in MANIFEST_FILES]
    manifest += [["source.systemName", SYSTEM_NAME], ["source.systemCode", SYSTEM_CODE]]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("manifest.csv", _csv(manifest))
                for name, data in files.items():
                    zf.writestr(f"{name}.csv", data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the drop folder's reader is another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _diff(before: Roster, now: Roster) -> dict[str, list[tuple[str, str, datetime, dict[str, str]]]]:
    changes: dict[str, list[tuple[str, str, datetime, dict[str, str]]]] = {}
    for name in HEADERS:
        items = []
        old, new = before[name], now[name]
        for key, (row, start, _end) in new.items():
            prev = old.get(key)
            if prev is None or prev[0] != row:
                items.append((key, "active", start, row))
        for key, (row, _start, end) in old.items():
            if key not in new:
                items.append((key, "tobedeleted", end, row))
        if items:
            changes[name] = items
    return changes


def publish(district: District, dropzone: Path, dirt: Any = None) -> Path | None:
    """Drop the next bundle for the district clock: bulk first, then deltas; None if nothing changed."""
    dropzone = Path(dropzone)
    dropzone.mkdir(parents=True, exist_ok=True)
    state_path = dropzone / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    clock = district.clock
    stamp = clock.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    now = roster(district, clock)
    if not state.get("clock"):
        mode = "bulk"
        changes = {n: [(k, "active", s, row) for k, (row, s, _e) in now[n].items()] for n in HEADERS}
    else:
        last = datetime.fromisoformat(state["clock"])
        if clock <= last:
            return None
        mode = "delta"
        changes = _diff(roster(district, last), now)
    path = None
    if changes:
        files = {n: _csv(_rows_for(n, changes[n], district, dirt, clock)) for n in HEADERS if n in changes}
        path = dropzone / f"oneroster_{stamp}_{mode}.zip"
        _write_bundle(path, files, mode)
    state = {
        "clock": clock.isoformat(),
        "bundles": [*state.get("bundles", []), *([path.name] if path else [])],
    }
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, state_path)
    return path
