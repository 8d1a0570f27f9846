"""Privacy at the door: identifier validation, keyed tokens, keys, and the audited identity zone."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import time
import types
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingest.lake.storage import LakeStorage
from ingest.privacy import (
    AuditUnavailable,
    IdentityVault,
    IdentityZoneError,
    Keys,
    LakeAuditSink,
    PrivacyKeyInvalid,
    PrivacyKeyMissing,
    Pseudonymiser,
    age_on,
    ensure_demo_keys,
    is_minor,
    load_keys,
    resident_id_check_char,
    validate_mobile,
    validate_resident_id,
    validate_uscc,
)
from ingest.privacy.pseudonymise import TOKEN_PATTERN
from ingest.settings import load_settings
from ingest.simulator import District

TODAY = date(2025, 6, 1)
HMAC_KEY = bytes(range(32))
VAULT_KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(200, 232))


def with_check(first17: str) -> str:
    return first17 + resident_id_check_char(first17)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture(scope="module")
def district() -> District:
    return District.generate(residents=200, seed=1)


@pytest.fixture(scope="module")
def residents(district):
    return district.residents


# --------------------------------------------------------------------------------------------
# Identifiers
# --------------------------------------------------------------------------------------------


def test_simulator_resident_ids_are_valid_with_sex_and_birth_date(district, residents):
    on = district.clock.date()
    for r in residents:
        check = validate_resident_id(r.id_number, on=on)
        assert check.valid, (check.reason, r.resident_id)
        assert check.reason is None
        assert check.normalised == r.id_number
        assert check.birth_date == r.birth_date
        assert check.sex == r.sex
        assert check.region and check.region_code == r.id_number[:6]
        if r.mobile is not None:
            assert validate_mobile(r.mobile).normalised == r.mobile


def test_known_number_and_lenient_formatting():
    check = validate_resident_id("11010519491231002x", on=TODAY)
    assert check.valid and check.normalised == "11010519491231002X"
    assert check.birth_date == date(1949, 12, 31)
    assert check.sex == "F"  # sequence 002 is even
    assert check.region == "北京市朝阳区"
    for variant in (
        "110105 1949 1231 002X",
        " 110105-19491231-002x ",
        "１１０１０５１９４９１２３１００２Ｘ",
    ):
        assert validate_resident_id(variant, on=TODAY).normalised == "11010519491231002X", variant


def test_sex_follows_the_parity_of_the_sequence():
    assert validate_resident_id(with_check("31011019900101001"), on=TODAY).sex == "M"
    assert validate_resident_id(with_check("31011019900101002"), on=TODAY).sex == "F"


VALID = "11010519491231002X"
MALFORMED = [
    ("", "resident ID number is empty"),
    (VALID[:17], "has 17 characters, expected 18"),
    (VALID + "1", "has 19 characters, expected 18"),
    ("110105491231002", "has 15 characters, expected 18 (old 15-digit numbers"),
    ("1101051949123100AX", "character 17 is 'A', expected a digit 0-9"),
    (VALID[:17] + "Y", "character 18 is 'Y', expected a digit or X"),
    (VALID[:17] + "1", "check character is wrong (ISO 7064 MOD 11-2)"),
    (with_check("11010519991335001"), "birth date 19991335 is not a real date"),
    (with_check("11010519990229001"), "birth date 19990229 is not a real date"),
    (with_check("11010520990101001"), "birth date is in the future"),
    (with_check("11010518500101001"), "birth year 1850 is before 1900"),
    (with_check("99999919900101001"), "unknown region code 999999"),
    (with_check("32019919900101001"), "unknown region code 320199"),
    (with_check("32010219500101001"), "region code 320102 was not in use in the birth year 1950"),
]


@pytest.mark.parametrize(("number", "reason"), MALFORMED)
def test_each_malformed_id_gets_its_own_reason_without_the_number(number, reason):
    check = validate_resident_id(number, on=TODAY)
    assert not check.valid
    assert check.reason is not None and reason in check.reason
    assert check.normalised is None and check.birth_date is None and check.sex is None
    if number:
        assert number not in check.reason
        assert number[:14] not in check.reason  # not even region + birth date together


def test_non_text_ids_are_explained():
    assert validate_resident_id(110105194912310021, on=TODAY).reason == (  # type: ignore[arg-type]
        "resident ID number must be text, got int (keep it as a string)"
    )


def test_future_is_relative_to_the_day_of_the_check():
    number = with_check("31011020250602001")
    assert validate_resident_id(number, on=date(2025, 6, 1)).reason == "birth date is in the future"
    assert validate_resident_id(number, on=date(2025, 6, 2)).valid


def test_age_and_minors():
    born = date(2011, 6, 2)
    assert age_on(born, date(2025, 6, 1)) == 13
    assert age_on(born, date(2025, 6, 2)) == 14
    assert is_minor(born, date(2025, 6, 1))
    assert not is_minor(born, date(2025, 6, 2))
    assert is_minor(born, date(2025, 6, 2), age=18)
    leap = date(2012, 2, 29)
    assert age_on(leap, date(2026, 2, 28)) == 13
    assert age_on(leap, date(2026, 3, 1)) == 14


def test_minors_in_the_district_are_flagged(district, residents):
    on = district.clock.date()
    minors = [r for r in residents if is_minor(validate_resident_id(r.id_number, on=on).birth_date, on)]
    assert minors, "the demo district has children"
    assert all(r.age_on(on) < 14 for r in minors)
    assert all(r.age_on(on) >= 14 for r in residents if r not in minors)


def test_uscc():
    good = validate_uscc("9111 0000 6000 3734 1l")
    assert good.valid and good.normalised == "91110000600037341L" and good.reason is None
    cases = [
        ("", "is empty"),
        ("91110000600037341", "has 17 characters, expected 18"),
        ("91110000600037341M", "check character is wrong (GB 32100 MOD 31)"),
        ("A1110000600037341L", "characters 1-8"),
        ("9111000060003734OL", "characters 9-18 may only use"),
    ]
    for code, reason in cases:
        check = validate_uscc(code)
        assert not check.valid and reason in (check.reason or ""), (code, check)
        assert not code or code not in (check.reason or "")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("13800138000", "13800138000"),
        ("+86 138-0013-8000", "13800138000"),
        ("+8613800138000", "13800138000"),
        ("86 13800138000", "13800138000"),
        ("0086-138 0013 8000", "13800138000"),
        ("199 0000 0000", "19900000000"),
    ],
)
def test_mobile_normalisation(raw, normalised):
    check = validate_mobile(raw)
    assert check.valid and check.normalised == normalised


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "is empty"),
        ("1380013800", "has 10 digits, expected 11"),
        ("12800138000", "starts with 12, expected 13-19"),
        ("021-6123-4567", "landline"),
        ("138OO138000", "may only contain digits"),
    ],
)
def test_bad_mobiles(raw, reason):
    check = validate_mobile(raw)
    assert not check.valid and reason in (check.reason or "")


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def test_tokens_are_deterministic_keyed_and_kind_separated():
    p = Pseudonymiser(HMAC_KEY)
    t = p.token("id_number", VALID)
    assert TOKEN_PATTERN.match(t) and t.startswith("id_") and len(t) == 35
    assert Pseudonymiser(HMAC_KEY).token("id_number", VALID) == t
    assert Pseudonymiser(OTHER_KEY).token("id_number", VALID) != t
    same_text = "13800138000"
    assert p.token("phone", same_text)[3:] != p.token("id_number", same_text)[3:]
    assert len({p.token(kind, "张三") for kind in ("name", "address")}) == 2
    assert p.token("uscc", "91110000600037341L").startswith("uc_")


def test_the_same_person_gets_the_same_token_across_formatting():
    p = Pseudonymiser(HMAC_KEY)
    assert p.token("id_number", "11010519491231002x") == p.token("id_number", "11010519491231002X")
    assert p.token("id_number", " 110105 19491231 002X") == p.token("id_number", VALID)
    assert p.token("phone", "+86 138-0013-8000") == p.token("phone", "13800138000")
    assert p.token("name", " 张　三 ") == p.token("name", "张三")
    assert p.token("name", "阿卜杜・热合曼") == p.token("name", "阿卜杜·热合曼")
    assert p.token("address", "幸福路 12 号 3 单元 501 室") == p.token("address", "幸福路12号3单元501室")
    assert p.token("name", "张三") != p.token("name", "张四")


def test_unknown_kind_and_empty_value_are_refused():
    p = Pseudonymiser(HMAC_KEY)
    with pytest.raises(ValueError, match="unknown identifier kind 'email'"):
        p.token("email", "a@b.c")
    with pytest.raises(ValueError, match="unknown identifier kind"):
        p.tokens("email", ["a@b.c"])
    with pytest.raises(ValueError, match="empty phone"):
        p.token("phone", "  - ")
    with pytest.raises(ValueError, match="at least 32"):
        Pseudonymiser(b"short")


def test_no_clear_value_in_any_token_and_no_key_in_repr(residents):
    p = Pseudonymiser(HMAC_KEY, key_id="k7")
    for r in residents:
        for kind, value in (("id_number", r.id_number), ("name", r.name), ("phone", r.mobile)):
            if value is None:
                continue
            token = p.token(kind, value)
            assert value not in token and value[-6:] not in token
    assert repr(p) == "Pseudonymiser(key_id='k7')"


def test_vectorised_tokens_match_single_tokens_and_keep_nulls(residents):
    p = Pseudonymiser(HMAC_KEY)
    values = [r.id_number for r in residents[:50]] + [None, "", "   "]
    expected = [p.token("id_number", v) for v in values[:50]] + [None, None, None]
    assert p.tokens("id_number", values).to_pylist() == expected
    arr = pa.array(values, type=pa.string())
    assert p.tokens("id_number", arr).to_pylist() == expected
    assert p.tokens("id_number", pa.array(values, type=pa.large_string())).to_pylist() == expected
    assert p.tokens("id_number", arr.dictionary_encode()).to_pylist() == expected
    chunked = pa.chunked_array([arr[:20], arr[20:]])
    out = p.tokens("id_number", chunked)
    assert isinstance(out, pa.ChunkedArray) and out.to_pylist() == expected
    assert p.tokens("phone", pa.array([13800138000, None])).to_pylist() == [
        p.token("phone", "13800138000"),
        None,
    ]


def test_tokens_throughput_on_a_50k_batch():
    p = Pseudonymiser(HMAC_KEY)
    n = 50_000
    ids = pa.array([f"3101101990{i:08d}" for i in range(n)])
    phones = pa.array([f"+86 138-{i:04d}-{i % 10000:04d}" for i in range(n)])
    started = time.perf_counter()
    id_tokens = p.tokens("id_number", ids)
    phone_tokens = p.tokens("phone", phones)
    elapsed = time.perf_counter() - started
    rate = 2 * n / elapsed
    print(f"\ntokens: {rate:,.0f} values/s ({2 * n} values, unique, in {elapsed:.3f}s)")
    assert len(id_tokens) == len(phone_tokens) == n and id_tokens.null_count == 0
    assert rate > 20_000  # ~50k-row Arrow batches must not be the pipeline's bottleneck


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def good_env(**extra: str) -> dict[str, str]:
    return {"CDL_PSEUDONYM_KEY": b64(HMAC_KEY), "CDL_IDENTITY_KEY": b64(VAULT_KEY), **extra}


def test_keys_from_the_environment_and_repr_hides_them():
    keys = load_keys(good_env(CDL_PSEUDONYM_KEY_ID="k2"))
    assert keys.hmac_key == HMAC_KEY and keys.vault_key == VAULT_KEY and keys.key_id == "k2"
    shown = repr(keys) + str(keys)
    for secret in (HMAC_KEY, VAULT_KEY):
        assert b64(secret) not in shown and repr(secret) not in shown and secret.hex() not in shown
    assert "32 bytes" in shown
    assert keys.pseudonymiser().token("phone", "13800138000") == Pseudonymiser(HMAC_KEY).token(
        "phone", "13800138000"
    )


@pytest.mark.parametrize("missing", ["CDL_PSEUDONYM_KEY", "CDL_IDENTITY_KEY"])
def test_a_missing_key_says_which_variable_and_how_to_make_one(missing):
    env = good_env()
    del env[missing]
    with pytest.raises(PrivacyKeyMissing) as err:
        load_keys(env)
    message = str(err.value)
    assert missing in message
    assert "secrets.token_bytes(32)" in message and "refuses to run" in message
    assert isinstance(err.value, RuntimeError)
    other = ({"CDL_PSEUDONYM_KEY", "CDL_IDENTITY_KEY"} - {missing}).pop()
    assert f"{other} is not set" not in message


def test_no_keys_at_all_names_both():
    with pytest.raises(PrivacyKeyMissing, match="CDL_PSEUDONYM_KEY and CDL_IDENTITY_KEY are not set"):
        load_keys({})


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (good_env(CDL_IDENTITY_KEY=b64(HMAC_KEY)), "are the same key"),
        (good_env(CDL_PSEUDONYM_KEY=b64(b"0123456789abcdef")), "decodes to 16 bytes"),
        (good_env(CDL_PSEUDONYM_KEY="not base64 at all!"), "not valid base64"),
    ],
)
def test_unusable_keys_are_rejected(env, match):
    with pytest.raises(PrivacyKeyInvalid, match=match) as err:
        load_keys(env)
    assert b64(HMAC_KEY) not in str(err.value)


def test_keys_file_and_environment_override(tmp_path):
    path = tmp_path / "keys.env"
    path.write_text(
        f"# comment\nexport CDL_PSEUDONYM_KEY={b64(HMAC_KEY)}\nCDL_IDENTITY_KEY='{b64(VAULT_KEY)}'\n"
    )
    keys = load_keys({"CDL_KEYS_FILE": str(path)})
    assert (keys.hmac_key, keys.vault_key) == (HMAC_KEY, VAULT_KEY)
    assert str(path) in keys.source
    keys = load_keys({"CDL_KEYS_FILE": str(path), "CDL_PSEUDONYM_KEY": b64(OTHER_KEY)})
    assert keys.hmac_key == OTHER_KEY and keys.vault_key == VAULT_KEY
    with pytest.raises(PrivacyKeyMissing, match="does not exist"):
        load_keys({"CDL_KEYS_FILE": str(tmp_path / "nope.env")})
    path.write_text(f"CDL_PSEUDONYM_KEY={b64(HMAC_KEY)}\n")
    with pytest.raises(PrivacyKeyMissing, match="CDL_IDENTITY_KEY is not set"):
        load_keys({"CDL_KEYS_FILE": str(path)})


def test_ensure_demo_keys_creates_a_private_file_once(tmp_path):
    path = tmp_path / "secrets" / "demo-keys.env"
    assert ensure_demo_keys(path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    first = path.read_bytes()
    keys = load_keys({"CDL_KEYS_FILE": str(path)})
    assert len(keys.hmac_key) == 32 and keys.hmac_key != keys.vault_key
    ensure_demo_keys(path)
    assert path.read_bytes() == first
    assert [p.name for p in path.parent.iterdir()] == ["demo-keys.env"]
    assert ensure_demo_keys(tmp_path / "elsewhere.env").read_bytes() != first


def test_keys_from_an_airflow_connection(monkeypatch):
    class FakeConnection:
        password = b64(HMAC_KEY)
        extra_dejson = {"identity_key": b64(VAULT_KEY)}

        @classmethod
        def get(cls, conn_id: str) -> FakeConnection:
            if conn_id != "cdl_privacy":
                raise LookupError(f"The conn_id `{conn_id}` isn't defined")
            return cls()

    fake = types.ModuleType("airflow.sdk")
    fake.Connection = FakeConnection  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow.sdk", fake)
    keys = load_keys({"CDL_KEYS_CONN_ID": "cdl_privacy"})
    assert (keys.hmac_key, keys.vault_key) == (HMAC_KEY, VAULT_KEY)
    assert "cdl_privacy" in keys.source
    with pytest.raises(PrivacyKeyMissing, match="'other' .*could not be read"):
        load_keys({"CDL_KEYS_CONN_ID": "other"})
    FakeConnection.extra_dejson = {}
    with pytest.raises(PrivacyKeyMissing, match="CDL_IDENTITY_KEY is not set in Airflow connection"):
        load_keys({"CDL_KEYS_CONN_ID": "cdl_privacy"})


# --------------------------------------------------------------------------------------------
# Identity zone
# --------------------------------------------------------------------------------------------


class MemoryStorage:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def write_bytes(self, relpath: str, data: bytes) -> str:
        self.objects[relpath] = data
        return f"mem://{relpath}"

    def read_bytes(self, relpath: str) -> bytes:
        return self.objects[relpath]

    def list(self, prefix: str) -> list[str]:
        return sorted(p for p in self.objects if p.startswith(prefix + "/"))

    def exists(self, relpath: str) -> bool:
        return relpath in self.objects


class RecordingSink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **fields: Any) -> None:
        self.records.append(fields)


class BrokenSink:
    def record(self, **fields: Any) -> None:
        raise OSError("audit volume is full")


@pytest.fixture
def storage(tmp_path: Path) -> LakeStorage:
    return LakeStorage(load_settings({"LAKE_URL": str(tmp_path / "lake"), "CDL_HOME": str(tmp_path)}))


@pytest.fixture
def people(residents):
    p = Pseudonymiser(HMAC_KEY)
    chosen = [r for r in residents if r.mobile][:20]
    mapping: dict[str, tuple[str, str]] = {}
    for r in chosen:
        mapping.update(p.mapping("id_number", [r.id_number]))
        mapping.update(p.mapping("name", [r.name]))
        mapping.update(p.mapping("phone", [r.mobile]))
    return p, chosen, mapping


def test_vault_round_trip_on_a_local_lake_with_audit(storage, people):
    p, chosen, mapping = people
    vault = IdentityVault(storage, VAULT_KEY, LakeAuditSink(storage))
    uri = vault.put("open311-20250601T000000", mapping)
    assert uri.endswith("identity/mappings/open311-20250601T000000.bin")
    assert vault.batches() == ["open311-20250601T000000"]

    wanted = [p.token("id_number", r.id_number) for r in chosen[:5]] + [p.token("phone", chosen[0].mobile)]
    unknown = Pseudonymiser(OTHER_KEY).token("id_number", VALID)
    clear = vault.resolve([*wanted, unknown], purpose="case 2025-0042 home visit", actor="clerk.wang")
    assert clear == {
        **{p.token("id_number", r.id_number): r.id_number for r in chosen[:5]},
        p.token("phone", chosen[0].mobile): chosen[0].mobile,
    }

    audit_files = storage.list("audit/identity")
    assert len(audit_files) == 1 and audit_files[0].endswith(".json")
    raw = storage.read_bytes(audit_files[0])
    record = json.loads(raw)
    assert record["event"] == "identity.resolve"
    assert (record["actor"], record["purpose"]) == ("clerk.wang", "case 2025-0042 home visit")
    assert (record["count"], record["found"]) == (7, 6) and record["at"].endswith("+00:00")
    text = raw.decode()
    for r in chosen:
        assert r.id_number not in text and r.name not in text and r.mobile not in text


def test_the_ciphertext_holds_no_clear_value_and_files_are_private(storage, people):
    _, chosen, mapping = people
    vault = IdentityVault(storage, VAULT_KEY, LakeAuditSink(storage))
    vault.put("b1", mapping)
    root = Path(storage.url)
    path = root / "identity" / "mappings" / "b1.bin"
    blob = path.read_bytes()
    assert blob.startswith(b"CDLI\x01")
    for r in chosen:
        for clear in (r.id_number, r.name, r.mobile):
            assert clear.encode("utf-8") not in blob
    assert b"id_number" not in blob and b"entries" not in blob
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "identity").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "identity" / "mappings").stat().st_mode) == 0o700
    # a fresh nonce per object: writing the same mapping again gives different bytes
    vault.put("b1", mapping)
    assert path.read_bytes() != blob and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [n for n in os.listdir(path.parent) if n.endswith(".tmp")]


def test_re_putting_a_batch_replaces_it():
    store, sink = MemoryStorage(), RecordingSink()
    vault = IdentityVault(store, VAULT_KEY, sink)
    p = Pseudonymiser(HMAC_KEY)
    a, b = p.mapping("name", ["张三"]), p.mapping("name", ["李四"])
    vault.put("batch-1", a)
    vault.put("batch-1", b)
    assert list(store.objects) == ["identity/mappings/batch-1.bin"]
    assert vault.resolve([*a, *b], purpose="check", actor="test") == {next(iter(b)): "李四"}


def test_tampering_a_wrong_key_and_moving_objects_are_caught(people):
    p, chosen, mapping = people
    store, sink = MemoryStorage(), RecordingSink()
    vault = IdentityVault(store, VAULT_KEY, sink)
    vault.put("b1", mapping)
    token = p.token("id_number", chosen[0].id_number)
    good = store.objects["identity/mappings/b1.bin"]

    tampered = bytearray(good)
    tampered[40] ^= 0x01
    store.objects["identity/mappings/b1.bin"] = bytes(tampered)
    with pytest.raises(IdentityZoneError, match="b1.bin failed authentication"):
        vault.resolve([token], purpose="check", actor="test")

    store.objects["identity/mappings/b1.bin"] = good[:-1]
    with pytest.raises(IdentityZoneError, match="failed authentication"):
        vault.resolve([token], purpose="check", actor="test")

    store.objects = {"identity/mappings/b2.bin": good}  # renamed to pass for another batch
    with pytest.raises(IdentityZoneError, match="b2.bin .*moved here from another path"):
        vault.resolve([token], purpose="check", actor="test")

    store.objects = {"identity/mappings/b1.bin": good}
    wrong = IdentityVault(store, OTHER_KEY, sink)
    with pytest.raises(IdentityZoneError, match="different identity-zone key .*CDL_IDENTITY_KEY"):
        wrong.resolve([token], purpose="check", actor="test")

    store.objects = {"identity/mappings/b1.bin": b"garbage" * 10}
    with pytest.raises(IdentityZoneError, match="not an identity-zone object"):
        vault.resolve([token], purpose="check", actor="test")
    assert sink.records == []  # nothing was disclosed, so nothing claims it was


def test_resolve_fails_closed_when_the_audit_cannot_be_written(people):
    p, chosen, mapping = people
    store = MemoryStorage()
    IdentityVault(store, VAULT_KEY, RecordingSink()).put("b1", mapping)
    vault = IdentityVault(store, VAULT_KEY, BrokenSink())
    result: dict[str, str] | None = None
    with pytest.raises(AuditUnavailable, match="audit volume is full") as err:
        result = vault.resolve([p.token("id_number", chosen[0].id_number)], purpose="check", actor="test")
    assert result is None
    assert chosen[0].id_number not in str(err.value)
    with pytest.raises(AuditUnavailable):
        vault.erase({p.token("id_number", chosen[0].id_number)})
    assert IdentityVault(store, VAULT_KEY, RecordingSink()).resolve(
        [p.token("id_number", chosen[0].id_number)], purpose="check", actor="test"
    ), "a refused erasure changed nothing"


def test_resolve_needs_a_purpose_and_an_actor_without_identifiers(people):
    p, chosen, _ = people
    vault = IdentityVault(MemoryStorage(), VAULT_KEY, RecordingSink())
    token = p.token("id_number", chosen[0].id_number)
    for kwargs in ({"purpose": "", "actor": "a"}, {"purpose": "p", "actor": "  "}):
        with pytest.raises(ValueError, match="required"):
            vault.resolve([token], **kwargs)
    with pytest.raises(ValueError, match="seems to contain an ID or mobile number"):
        vault.resolve([token], purpose=f"looking up {chosen[0].id_number}", actor="clerk")
    with pytest.raises(ValueError, match="seems to contain"):
        LakeAuditSink(MemoryStorage()).record(event="x", purpose="call 138-0013-8000")


def test_erase_removes_entries_everywhere_and_is_audited(people):
    p, chosen, mapping = people
    store, sink = MemoryStorage(), RecordingSink()
    vault = IdentityVault(store, VAULT_KEY, sink)
    items = sorted(mapping.items())
    vault.put("b1", dict(items[: len(items) // 2]))
    vault.put("b2", dict(items[len(items) // 4 :]))  # overlaps b1: the same person in two batches
    person = chosen[0]
    gone = {p.token("id_number", person.id_number), p.token("name", person.name)}
    in_objects = sum(t in dict(items[: len(items) // 2]) for t in gone) + sum(
        t in dict(items[len(items) // 4 :]) for t in gone
    )
    assert vault.erase(gone, actor="dpo.li", purpose="erasure request ticket 77") == in_objects > 0
    assert vault.resolve(sorted(gone), purpose="verify erasure", actor="dpo.li") == {}
    keep = p.token("id_number", chosen[1].id_number)
    assert vault.resolve([keep], purpose="verify", actor="dpo.li") == {keep: chosen[1].id_number}
    assert vault.erase(gone) == 0
    erase_record = sink.records[0]
    assert erase_record["event"] == "identity.erase" and erase_record["removed"] == in_objects
    assert erase_record["count"] == 2 and erase_record["actor"] == "dpo.li"


def test_bad_batch_ids_and_mappings_are_refused():
    vault = IdentityVault(MemoryStorage(), VAULT_KEY, RecordingSink())
    p = Pseudonymiser(HMAC_KEY)
    for batch_id in ("../raw/x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="batch_id"):
            vault.put(batch_id, {})
    with pytest.raises(ValueError, match="tokens made by Pseudonymiser"):
        vault.put("b1", {VALID: ("id_number", VALID)})
    with pytest.raises(ValueError, match="must start with 'nm'_"):
        vault.put("b1", {p.token("id_number", VALID): ("name", VALID)})
    with pytest.raises(ValueError, match="at least 32"):
        IdentityVault(MemoryStorage(), b"short", RecordingSink())
    assert VAULT_KEY.hex() not in repr(vault)


def test_keys_wire_the_pseudonymiser_and_the_vault(storage, tmp_path):
    keys = load_keys({"CDL_KEYS_FILE": str(ensure_demo_keys(tmp_path / "keys" / "demo.env"))})
    assert isinstance(keys, Keys)
    vault = IdentityVault(storage, keys.vault_key, LakeAuditSink(storage))
    pseudonymiser = keys.pseudonymiser()
    vault.put("demo", pseudonymiser.mapping("phone", ["+86 138-0013-8000"]))
    token = pseudonymiser.token("phone", "13800138000")
    assert vault.resolve([token], purpose="demo", actor="make run") == {token: "13800138000"}


def test_leak_scanner_finds_every_kind_of_identifier_in_one_pass(tmp_path):
    from ingest.privacy.leakscan import scan_files

    needles = {"11010519491231002X", "13912345678", "王小明", "李雷", "Zhang Wei"}
    (tmp_path / "a.json").write_text(
        '{"id":"11010519491231002X","note":"王小明来电","tel":"+8613912345678"}', encoding="utf-8"
    )
    (tmp_path / "b.log").write_text("reported by Zhang Wei; 李雪 (not 李雷's sister)", encoding="utf-8")
    (tmp_path / "c.bin").write_bytes(b"\x00\xff" + "李雷".encode() + b"\xfe")
    (tmp_path / "clean.txt").write_text("王小 明 1391234567 8", encoding="utf-8")
    files, hits = scan_files([tmp_path], needles)
    assert files == 4
    assert sorted(h.split(" in ")[0] + "@" + h.rsplit("/", 1)[-1] for h in hits) == sorted(
        [
            "11010519491231002X@a.json",
            "13912345678@a.json",
            "王小明@a.json",
            "Zhang Wei@b.log",
            "李雷@b.log",
            "李雷@c.bin",
        ]
    )
