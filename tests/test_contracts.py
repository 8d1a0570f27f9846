"""Source contracts and the conformance step: types, rejections with reasons, drift policies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from ingest.conform import Conformer, SchemaDriftError
from ingest.contracts import REGISTRY_DIR, Source, load_registry, parse_duration
from ingest.privacy import load_keys

REQUESTS = load_registry().source("open311").dataset("service_requests")
GOOD = {
    "service_request_id": "SR-1",
    "status": "open",
    "service_code": "NOISE",
    "requested_datetime": "2026-01-03T09:15:00+08:00",
    "updated_datetime": "2026-01-03T10:15:00+08:00",
    "lat": "31.2",
}


PSEUDONYMISER = load_keys().pseudonymiser()


def conform(records, dataset=REQUESTS):
    return Conformer("open311", dataset, pseudonymiser=PSEUDONYMISER).conform(records)


def test_registry_declares_every_column_with_a_classification_level():
    for source in load_registry().sources:
        for ds in source.datasets:
            assert ds.columns and all(c.classification for c in ds.columns), (source.name, ds.name)


def test_a_column_without_a_classification_level_is_rejected():
    data = yaml.safe_load((REGISTRY_DIR / "open311.yml").read_text())
    del data["datasets"][0]["columns"][0]["classification"]
    with pytest.raises(ValueError, match="classification"):
        Source.model_validate(data)


def test_a_primary_key_must_be_a_declared_column():
    data = yaml.safe_load((REGISTRY_DIR / "open311.yml").read_text())
    data["datasets"][1]["primary_key"] = ["no_such_column"]
    with pytest.raises(ValueError, match="primary key 'no_such_column'"):
        Source.model_validate(data)


def test_durations_parse():
    assert parse_duration("P30D") == timedelta(days=30)
    assert parse_duration("PT2H") == timedelta(hours=2)
    assert parse_duration("P1DT6H30M") == timedelta(days=1, hours=6, minutes=30)
    with pytest.raises(ValueError):
        parse_duration("30 days")


def test_values_are_typed_and_times_normalised_to_utc():
    batch = conform([GOOD])
    row = batch.table.to_pylist()[0]
    assert row["requested_datetime"] == datetime(2026, 1, 3, 1, 15, tzinfo=UTC)
    assert row["lat"] == 31.2
    assert row["description"] is None
    assert batch.rejected == [] and len(batch.hashes) == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"service_code": None}, "required field 'service_code' is missing"),
        ({"requested_datetime": ""}, "required field 'requested_datetime' is missing"),
        ({"updated_datetime": "2026-13-45T99:00"}, "field 'updated_datetime' is not an ISO 8601 datetime"),
        ({"updated_datetime": "2026-01-03T10:15:00"}, "has no UTC offset"),
        ({"lat": "north"}, "field 'lat' is not a number"),
        ({"status": {"value": "open"}}, "field 'status' is a JSON object, not a scalar"),
        ({"requested_datetime": "2026-02-01T00:00:00+08:00"}, "is before 'requested_datetime'"),
    ],
)
def test_records_that_break_the_contract_are_rejected_with_a_reason(change, reason):
    bad = {**GOOD, **change}
    batch = conform([GOOD, bad])
    assert batch.table.num_rows == 1
    (rejected,) = batch.rejected
    assert reason in rejected.reason
    assert rejected.record == bad  # the source record is kept whole for the quarantine


def test_same_content_same_hash_different_content_different_hash():
    a, b, c = conform([GOOD, dict(GOOD), {**GOOD, "status": "closed"}]).hashes
    assert a == b != c


def test_drift_policies():
    drifted = {**GOOD, "satisfaction_score": 4}
    evolving = Conformer("open311", REQUESTS, pseudonymiser=PSEUDONYMISER)
    assert evolving.conform([drifted]).table.column("satisfaction_score").to_pylist() == [4]
    assert evolving.extra_columns == {"satisfaction_score": "long"}

    frozen = REQUESTS.model_copy(update={"schema_change": "freeze"})
    complete = {c.field: GOOD.get(c.field) for c in REQUESTS.columns}  # every declared key, nulls included
    assert conform([complete], frozen).table.num_rows == 1
    with pytest.raises(SchemaDriftError, match="new column.*satisfaction_score.*freeze"):
        conform([{**complete, "satisfaction_score": 4}], frozen)
    without_channel = {k: v for k, v in complete.items() if k != "channel"}
    with pytest.raises(SchemaDriftError, match="stopped sending column.*channel.*freeze"):
        conform([without_channel], frozen)

    discarding = REQUESTS.model_copy(update={"schema_change": "discard_row"})
    batch = conform([GOOD, drifted], discarding)
    assert batch.table.num_rows == 1
    assert "satisfaction_score" in batch.rejected[0].reason


REQUESTER = {
    "account_id": "11010519491231002X",
    "first_name": "建国",
    "last_name": "王",
    "phone": "+86 138-0013-8000",
}


def test_direct_identifiers_are_tokenised_and_their_clear_values_kept_for_the_identity_zone():
    batch = conform([{**GOOD, **REQUESTER}])
    row = batch.table.to_pylist()[0]
    assert (
        row["account_id"].startswith("id_")
        and row["phone"].startswith("ph_")
        and row["last_name"].startswith("nm_")
    )
    assert "11010519491231002X" not in str(row) and "13800138000" not in str(row) and "建国" not in str(row)
    assert batch.identities[row["account_id"]] == ("id_number", "11010519491231002X")
    assert batch.identities[row["phone"]] == ("phone", "13800138000")
    # the same person in another format gets the same token
    again = conform([{**GOOD, **REQUESTER, "account_id": "11010519491231002x", "phone": "13800138000"}])
    assert again.table.to_pylist()[0]["account_id"] == row["account_id"]
    assert again.table.to_pylist()[0]["phone"] == row["phone"]


def test_invalid_resident_id_numbers_are_quarantined_without_repeating_the_number():
    bad = {**GOOD, **REQUESTER, "account_id": "110105194912310021"}  # wrong check character
    batch = conform([bad])
    (rejected,) = batch.rejected
    assert rejected.reason.startswith("field 'account_id': ") and "check" in rejected.reason
    assert "110105194912310021" not in rejected.reason


def test_a_direct_identifier_without_protection_is_rejected_by_the_contract():
    data = yaml.safe_load((REGISTRY_DIR / "open311.yml").read_text())
    column = next(c for c in data["datasets"][1]["columns"] if c["name"] == "phone")
    del column["protect"]
    with pytest.raises(ValueError, match="phone.*must declare"):
        Source.model_validate(data)


def test_protected_datasets_refuse_to_run_without_a_key():
    from ingest.privacy import PrivacyKeyMissing

    with pytest.raises(PrivacyKeyMissing, match="CDL_PSEUDONYM_KEY"):
        load_keys({})
    with pytest.raises(ValueError, match="need a pseudonymiser"):
        Conformer("open311", REQUESTS)


def test_classify_lists_every_column_with_its_level_and_protection():
    from typer.testing import CliRunner

    from ingest.cli import app

    result = CliRunner().invoke(app, ["classify", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    declared = sum(len(ds.columns) for src in load_registry().sources for ds in src.datasets)
    assert len(rows) == declared and all(
        r["level"] in {"public", "internal", "sensitive", "core"} for r in rows
    )
    protected = {r["column"] for r in rows if r["protection"] == "tokenise"}
    expected = {c.name for s in load_registry().sources for d in s.datasets for c in d.columns if c.protect}
    assert {"account_id", "first_name", "last_name", "phone"} <= protected == expected


def test_minors_are_flagged_from_the_birth_date_in_their_id_number():
    from ingest.privacy import resident_id_check_char

    first17 = "11010520150301003"  # born 2015-03-01: 10 years old at the request
    child = first17 + resident_id_check_char(first17)
    rows = conform([{**GOOD, **REQUESTER}, {**GOOD, **REQUESTER, "account_id": child}]).table.to_pylist()
    assert [r["account_id_is_minor"] for r in rows] == [False, True]


def test_a_date_compares_with_a_timestamp_in_not_before():
    """A FHIR Patient with a birth date after the record's lastUpdated is impossible: quarantined."""
    patients = load_registry().source("health").dataset("patients")
    fhir = Conformer("health", patients, pseudonymiser=PSEUDONYMISER)
    base = {
        "id": "p1",
        "last_updated": "2026-03-01T08:00:00+08:00",
        "resident_id_number": "310106200507093000",
    }
    batch = fhir.conform(
        [{**base, "birth_date": "2031-05-01"}, {**base, "id": "p2", "birth_date": "1990-05-01"}]
    )
    assert [r.reason for r in batch.rejected] == [
        "field 'last_updated' (2026-03-01T00:00:00+00:00) is before 'birth_date' (2031-05-01)"
    ]
    assert batch.table.column("id").to_pylist() == ["p2"]


def test_a_reference_must_name_a_dataset_column_of_the_same_source():
    data = load_registry().source("health").model_dump()
    data["datasets"][1]["columns"][0]["references"] = "patients.no_such_column"
    with pytest.raises(ValueError, match="references 'patients.no_such_column'"):
        Source.model_validate(data)
