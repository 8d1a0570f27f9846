"""The schools source: OneRoster 1.1 CSV bundles from a drop folder (recorded fixtures, simulator, S3)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.contracts import load_registry
from ingest.lake.storage import LakeStorage
from ingest.lake.tables import open_catalog, read_cursor
from ingest.pipeline import replay_dataset, run_source
from ingest.simulator import DirtConfig, District
from ingest.simulator import oneroster as sim
from ingest.simulator.dirt import dirty
from ingest.sources import SourceError
from ingest.sources.oneroster import OneRosterConnector

FIXTURES = Path(__file__).parent / "fixtures" / "oneroster"
BULK = "oneroster_20260101T000000Z_bulk.zip"
DELTA = "oneroster_20260110T000000Z_delta.zip"
SOURCE = load_registry().source("schools")
STUDENTS = SOURCE.dataset("students")
ENROLLMENTS = SOURCE.dataset("enrollments")
SCHOOLS = SOURCE.dataset("schools")
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)


def drop(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(FIXTURES / name, folder / name)
    return folder


def member(name: str, csv_name: str) -> bytes:
    with zipfile.ZipFile(FIXTURES / name) as zf:
        return zf.read(csv_name)


def table(settings, dataset: str):
    return open_catalog(settings).load_table(("raw", f"schools__{dataset}"))


# ------------------------------------------------------------------ recorded fixtures


def test_bulk_bundle_pages_keep_the_csv_bytes_and_filter_by_role(tmp_path):
    folder = drop(tmp_path, BULK)
    pages = list(OneRosterConnector(str(folder), page_size=2).extract(STUDENTS, None))
    # 5 users in 3 pages of <= 2 rows; the role filter keeps the 3 students
    assert len(pages) == 3 and all(p.extension == "csv" for p in pages)
    records = [r for p in pages for r in p.records]
    assert [r["sourcedId"] for r in records] == ["stu-1", "stu-2", "stu-3"]
    assert records[2]["orgSourcedIds"] == "sch-a,sch-b"  # quoted multi-valued field
    assert all("password" not in r for r in records)  # credentials are never passed on
    # payload = header + that page's rows, byte for byte as in the bundle
    original = member(BULK, "users.csv")
    header = original.split(b"\r\n", 1)[0] + b"\r\n"
    assert pages[0].payload.startswith(header) and original.startswith(b"\xef\xbb\xbf")
    assert header + b"".join(p.payload[len(header) :] for p in pages) == original
    # only the bundle's last page carries the new state: the checksum of the bundle
    assert [p.state is None for p in pages] == [True, True, False]
    import hashlib

    state = json.loads(pages[-1].state)
    assert state["bundles"][BULK][2] == hashlib.sha256((FIXTURES / BULK).read_bytes()).hexdigest()


def test_parse_rebuilds_a_page_from_its_bytes_and_without_drops_only_rejected_rows(tmp_path):
    page = next(OneRosterConnector(str(drop(tmp_path, BULK))).extract(STUDENTS, None))
    replayed = OneRosterConnector.parse(page.payload, label="x", dataset=STUDENTS)
    assert replayed.records == page.records
    # without a dataset there is no role filter: every user row (the teacher's password still dropped)
    assert len(OneRosterConnector.parse(page.payload, label="x").records) == 5
    kept, removed = OneRosterConnector.without(
        page.payload, lambda r: r["identifier"] != "310115201211202467"
    )
    assert removed == 1
    assert kept == page.payload.replace(
        next(ln for ln in page.payload.split(b"\r\n") if b"stu-2," in ln) + b"\r\n", b""
    )
    assert OneRosterConnector.without(page.payload, lambda r: True) == (page.payload, 0)


def test_delta_after_bulk_is_processed_alone_and_carries_soft_deletes(tmp_path):
    folder = drop(tmp_path, BULK, DELTA)
    conn = OneRosterConnector(str(folder))
    first = list(conn.extract(STUDENTS, None))
    assert len(first) == 2  # one page per bundle, in name order
    state = first[0].state
    pages = list(conn.extract(STUDENTS, None, state))
    assert len(pages) == 1 and "(delta)" in pages[0].label
    by_id = {r["sourcedId"]: r for r in pages[0].records}
    # the soft delete carries nothing but sourcedId/status/dateLastModified: kept despite its empty role
    assert by_id["stu-2"]["status"] == "tobedeleted" and by_id["stu-2"]["role"] == ""
    assert by_id["stu-3"]["orgSourcedIds"] == "sch-b" and "stu-4" in by_id
    # everything processed: nothing more, and the same bytes under a new name are skipped too
    assert list(conn.extract(STUDENTS, None, pages[-1].state)) == []
    shutil.copy(folder / DELTA, folder / "oneroster_20260111T000000Z_delta.zip")
    again = list(conn.extract(STUDENTS, None, pages[-1].state))
    assert [p.records for p in again] == [[]] and again[0].payload == b""
    assert list(conn.extract(STUDENTS, None, again[-1].state)) == []  # the copy is remembered


def test_a_bundle_without_the_dataset_file_advances_the_state_only(tmp_path):
    folder = drop(tmp_path, BULK, DELTA)
    conn = OneRosterConnector(str(folder))
    state = list(conn.extract(SCHOOLS, None))[-1].state
    assert len(json.loads(state)["bundles"]) == 2  # the delta (orgs absent) is processed as well
    bulk_only = list(OneRosterConnector(str(drop(tmp_path / "b", BULK))).extract(SCHOOLS, None))
    assert [r["sourcedId"] for r in bulk_only[0].records] == ["sch-a", "sch-b"]  # type=school only


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


GOOD_MANIFEST = "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.users,bulk\n"
USERS = "sourcedId,status,dateLastModified,role\nu1,active,,student\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04 this is not a zip", "not a readable zip"),
        (_zip({"users.csv": USERS}), "has no manifest.csv"),
        (
            _zip({"manifest.csv": GOOD_MANIFEST.replace("1.1", "1.2"), "users.csv": USERS}),
            "oneroster.version",
        ),
        (
            _zip({"manifest.csv": GOOD_MANIFEST.replace("bulk", "full"), "users.csv": USERS}),
            "file.users='full'",
        ),
        (_zip({"manifest.csv": GOOD_MANIFEST}), "the zip lacks it"),
    ],
)
def test_a_bad_bundle_fails_naming_it_and_does_not_advance(tmp_path, content, message):
    folder = drop(tmp_path, BULK)
    (folder / "oneroster_20260105T000000Z_delta.zip").write_bytes(content)
    conn = OneRosterConnector(str(folder))
    pages = []
    with pytest.raises(SourceError, match=message) as info:
        for page in conn.extract(STUDENTS, None):
            pages.append(page)
    assert "oneroster_20260105T000000Z_delta.zip" in str(info.value)
    assert len(pages) == 1  # the good bulk before it; the pipeline commits nothing of a failed run


def test_a_corrupt_run_commits_nothing_then_recovers(tmp_path, lake):
    folder = drop(tmp_path, BULK)
    (folder / "oneroster_20260105T000000Z_delta.zip").write_bytes(b"PK\x03\x04 truncated")
    until = District.generate(residents=20, seed=1).clock
    with pytest.raises(SourceError, match="oneroster_20260105T000000Z_delta.zip"):
        run_source("schools", until=until, base_url=str(folder), datasets=["students"], settings=lake)
    assert (
        read_cursor(table(lake, "students")) is None
        and table(lake, "students").scan().to_arrow().num_rows == 0
    )
    (folder / "oneroster_20260105T000000Z_delta.zip").unlink()
    (report,) = run_source("schools", until=until, base_url=str(folder), datasets=["students"], settings=lake)
    assert report.rows_inserted == 3


# ------------------------------------------------------------------ simulator, end to end


def expected_students(district: District) -> set[str]:
    return {s.sourced_id for s, _seg in sim.students(district)}


def test_end_to_end_bulk_then_deltas_only(tmp_path, lake, district):
    from ingest.privacy.leakscan import identifiers_of, scan_files

    dropzone = tmp_path / "dropzone"
    bulk = sim.publish(district, dropzone)
    assert bulk is not None and bulk.name.endswith("_bulk.zip")
    assert sim.publish(district, dropzone) is None  # idempotent per clock
    reports = {
        r.dataset: r
        for r in run_source("schools", until=district.clock, base_url=str(dropzone), settings=lake)
    }
    assert all(r.status == "success" and r.quarantined == 0 for r in reports.values())

    # ground truth: every resident aged 6-17 on the clock date, minus those who withdrew
    today = district.clock.date()
    minors = {r.resident_id for r in district.residents if 6 <= r.age_on(today) <= 17}
    gone = {s.resident.resident_id for s in sim.withdrawn(district)}
    truth = expected_students(district)
    assert len(truth) == len(minors - gone) > 20
    students = table(lake, "students").scan().to_arrow().to_pylist()
    assert {r["sourcedId"] for r in students} == truth
    assert all(r["identifier"].startswith("id_") and r["givenName"].startswith("nm_") for r in students)
    assert reports["schools"].rows_inserted == len(sim.schools(district)) >= 3
    enrolled = [r for r in table(lake, "enrollments").scan().to_arrow().to_pylist() if r["role"] == "student"]
    assert {r["userSourcedId"] for r in enrolled} == truth
    assert table(lake, "demographics").scan().to_arrow().num_rows == len(truth)

    # no new bundle: nothing received
    again = run_source("schools", until=district.clock, base_url=str(dropzone), settings=lake)
    assert sum(r.records_received for r in again) == 0

    # past 1 September and the next leaver: a delta with the new school year, newcomers and leavers
    before = district.clock
    first_leave = min(s.leave for s, _ in sim.students(district))
    district.advance(days=max(160, (first_leave - before).days + 1))
    delta = sim.publish(district, dropzone)
    assert delta is not None and delta.name.endswith("_delta.zip")
    with zipfile.ZipFile(delta) as zf:
        users_rows = zf.read("users.csv").decode().strip().splitlines()[1:]
    reports = {
        r.dataset: r
        for r in run_source("schools", until=district.clock, base_url=str(dropzone), settings=lake)
    }
    assert reports["students"].records_received == sum(",student," in row for row in users_rows)
    students = {r["sourcedId"]: r for r in table(lake, "students").scan().to_arrow().to_pylist()}
    active = {k for k, r in students.items() if r["status"] == "active"}
    assert active == expected_students(district)
    left = {s.sourced_id for s, _ in sim.students(district, before)} - active
    assert left and all(students[k]["status"] == "tobedeleted" for k in left)  # soft deletes, rows kept
    enrolments = table(lake, "enrollments").scan().to_arrow().to_pylist()
    old_year = [r for r in enrolments if "-2025-" in r["classSourcedId"]]
    assert old_year and all(r["status"] == "tobedeleted" for r in old_year)

    # the same bundle under another name is never processed again
    shutil.copy(delta, dropzone / delta.name.replace("_delta", "9_delta"))
    again = run_source("schools", until=district.clock, base_url=str(dropzone), settings=lake)
    assert sum(r.records_received for r in again) == 0 and sum(r.rows_inserted for r in again) == 0

    needles = identifiers_of(district)
    files, hits = scan_files([Path(lake.lake_url)], needles, skip=[Path(lake.lake_url) / "identity"])
    assert files > 20 and hits == []


def test_dirty_rows_are_quarantined_with_reasons_and_the_rest_loaded(tmp_path, lake, district):
    dirt = DirtConfig(duplicate_rate=0.1, missing_field_rate=0.1, bad_date_rate=0.15, malformed_id_rate=0.1)
    dropzone = tmp_path / "dropzone"
    sim.publish(district, dropzone, dirt=dirt)
    reports = {
        r.dataset: r
        for r in run_source(
            "schools",
            until=district.clock,
            base_url=str(dropzone),
            datasets=["students", "demographics"],
            settings=lake,
        )
    }
    truth = expected_students(district)
    missing = {s for s in truth if dirty(dirt, district.seed, "missing", s)}
    malformed = {s for s in truth - missing if dirty(dirt, district.seed, "malformed-id", s)}
    future = {s for s in truth if dirty(dirt, district.seed, "bad-date", s)}
    dupes = {s for s in truth if dirty(dirt, district.seed, "duplicate", s)}
    assert missing and malformed and future and dupes
    students = reports["students"]
    assert students.quarantined == len(missing | malformed) + len(dupes & (missing | malformed))
    loaded = {r["sourcedId"] for r in table(lake, "students").scan().to_arrow().to_pylist()}
    assert loaded == truth - missing - malformed  # duplicates collapse on sourcedId
    assert table(lake, "demographics").scan().to_arrow().num_rows == len(truth - future)
    from ingest.privacy import load_keys
    from ingest.privacy.sealed import Sealer

    lines = []  # students' quarantine is sealed (it holds ID numbers); demographics' is not
    for path in (Path(lake.lake_url) / "quarantine" / "schools").rglob("*.jsonl*"):
        data = path.read_bytes()
        if path.suffix == ".sealed":
            data = Sealer(load_keys().vault_key, "landing").open(str(path.relative_to(lake.lake_url)), data)
        lines += data.decode().splitlines()
    reasons = [json.loads(line)["reason"] for line in lines]
    assert any("check character" in r for r in reasons)
    assert any("required field 'sourcedId'" in r for r in reasons)
    assert any("'dateLastModified'" in r and "is before 'birthDate'" in r for r in reasons)


def test_s3_drop_folder(tmp_path, lake, district, moto_server, monkeypatch):
    from pyarrow import fs as pafs

    monkeypatch.setenv("LAKE_S3_ENDPOINT", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    moto_server.create_bucket("sis-exports")
    local = tmp_path / "dropzone"
    sim.publish(district, local)
    s3 = pafs.S3FileSystem(
        endpoint_override=moto_server.endpoint.removeprefix("http://"), scheme="http",
        access_key="testing", secret_key="testing", region="us-east-1",  # noqa: S106 - moto
    )  # fmt: skip
    for path in local.glob("*.zip"):
        with s3.open_output_stream(f"sis-exports/oneroster/{path.name}") as out:
            out.write(path.read_bytes())
    url = "s3://sis-exports/oneroster"
    (report,) = run_source(
        "schools", until=district.clock, base_url=url, datasets=["students"], settings=lake
    )
    assert report.status == "success" and report.rows_inserted == len(expected_students(district))
    (again,) = run_source("schools", until=district.clock, base_url=url, datasets=["students"], settings=lake)
    assert again.records_received == 0


def _roster(students: dict[str, str], mode: str = "bulk") -> bytes:
    """A minimal OneRoster 1.1 bundle with users.csv (students) in the given mode."""
    manifest = f"propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.users,{mode}\n"
    header = "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,givenName\n"
    rows = "".join(
        f"{sid},{status},2026-02-01T08:00:00Z,true,sch-a,student,{sid}-login,\n"
        for sid, status in students.items()
    )
    return _zip({"manifest.csv": manifest, "users.csv": header + rows})


def test_a_later_bulk_file_is_the_complete_set_and_replay_agrees(tmp_path, lake):
    """OneRoster bulk = the full roster: a student a later bulk file no longer lists is deleted;
    a delta in between is superseded; an empty bulk deletes nothing; replay ends in the same table."""
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "oneroster_20260201T000000Z_bulk.zip").write_bytes(
        _roster({"s1": "active", "s2": "active", "s3": "active"})
    )
    run_source("schools", until=UNTIL, base_url=str(folder), settings=lake, datasets=["students"])
    (folder / "oneroster_20260202T000000Z_delta.zip").write_bytes(_roster({"s4": "active"}, "delta"))
    (folder / "oneroster_20260203T000000Z_bulk.zip").write_bytes(_roster({"s1": "active", "s2": "active"}))
    (report,) = run_source("schools", until=UNTIL, base_url=str(folder), settings=lake, datasets=["students"])
    ids = sorted(table(lake, "students").scan().to_arrow().column("sourcedId").to_pylist())
    assert ids == ["s1", "s2"]  # s3 left the roster; s4 came by delta, then the bulk left it out
    assert (report.rows_deleted, report.rows_inserted) == (1, 0)
    landed = LakeStorage(lake).list("landing/schools/students/")
    assert sum(".snapshot." in rel for rel in landed) == 2  # both bulk files are marked for replay

    (folder / "oneroster_20260204T000000Z_bulk.zip").write_bytes(_roster({}))
    (report,) = run_source("schools", until=UNTIL, base_url=str(folder), settings=lake, datasets=["students"])
    assert report.rows_deleted == 0 and table(lake, "students").scan().to_arrow().num_rows == 2

    replay_dataset(
        SOURCE, STUDENTS, from_date="2000-01-01", to_date="2100-01-01", rebuild=True, settings=lake
    )
    assert sorted(table(lake, "students").scan().to_arrow().column("sourcedId").to_pylist()) == ids
