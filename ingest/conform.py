"""Hold records to their data contract: coerce types, reject what does not conform.

Input: records (dicts) as parsed from a source page. Output: an Arrow table in the contract's
schema (plus any columns the schema-change policy lets in) and the rejected records, each with
a reason a person can act on. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import pyarrow as pa

from ingest.contracts import Column, Dataset

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "long": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


class SchemaDriftError(RuntimeError):
    """The source changed its schema in a way the contract forbids."""


class ConformError(ValueError):
    pass


def _to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        raise ConformError(f"is a JSON {'object' if isinstance(value, dict) else 'array'}, not a scalar")
    return str(value)


def _to_long(value: Any) -> int:
    if isinstance(value, bool):
        raise ConformError("is a boolean, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ConformError("is not an integer")


def _to_double(value: Any) -> float:
    if isinstance(value, bool):
        raise ConformError("is a boolean, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConformError("is not a number") from None


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise ConformError("is not true/false")


def _to_timestamptz(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ConformError("is not an ISO 8601 datetime string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConformError("is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None:
        raise ConformError("has no UTC offset (ambiguous local time)")
    return parsed.astimezone(UTC)


def _to_date(value: Any) -> date:
    if not isinstance(value, str):
        raise ConformError("is not an ISO 8601 date string")
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise ConformError("is not an ISO 8601 date") from None


COERCE = {
    "string": _to_string,
    "long": _to_long,
    "double": _to_double,
    "boolean": _to_boolean,
    "timestamptz": _to_timestamptz,
    "date": _to_date,
}


def infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"


def record_hash(record: dict[str, Any]) -> str:
    """Stable fingerprint of a source record: the same content always gives the same hash."""
    canonical = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass
class Rejected:
    record: dict[str, Any]
    reason: str


@dataclass
class ConformedBatch:
    table: pa.Table
    hashes: list[str]
    rejected: list[Rejected]
    identities: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (kind, clear value)
    erased: int = 0  # rows of residents who asked to be erased, dropped


@dataclass
class Conformer:
    """Applies one dataset's contract. Keeps the columns the schema-change policy admitted."""

    source: str
    dataset: Dataset
    extra_columns: dict[str, str] = field(default_factory=dict)
    pseudonymiser: Any = None  # ingest.privacy.Pseudonymiser; required when the contract protects columns
    erased: set[str] = field(default_factory=set)  # tokens of erased residents: their rows are dropped
    # column name -> erased keys of the dataset it references (an erased patient's encounters)
    erased_refs: dict[str, set[str]] = field(default_factory=dict)
    # When a dataset has no time cursor, "the record's time" (e.g. for the under-14 flag) is the
    # time the run reads it up to.
    as_of: datetime | None = None

    def __post_init__(self) -> None:
        self._declared = {c.field: c for c in self.dataset.columns}
        self._protected = self.dataset.protected_columns
        if self._protected and self.pseudonymiser is None:
            raise ValueError(f"{self.source}.{self.dataset.name}: protected columns need a pseudonymiser")

    def columns(self) -> list[Column]:
        cols = list(self.dataset.columns)
        for col in self.dataset.columns:
            if col.flag_minor:
                cols.append(
                    Column(
                        name=f"{col.name}_is_minor",
                        type="boolean",
                        classification="internal",
                        description=f"derived from {col.name}: under 14 at the record's time (PIPL art. 28)",
                    )
                )
        for name, type_ in self.extra_columns.items():
            cols.append(
                Column(name=name, type=type_, classification="internal", description="added by drift")
            )
        return cols

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in self.columns()])

    def _admit_new_fields(self, records: list[dict[str, Any]]) -> set[str]:
        """Apply the schema-change policy to fields the contract does not declare.

        Returns the undeclared fields whose rows must be rejected (policy ``discard_row``).
        """
        unknown: dict[str, Any] = {}
        for rec in records:
            for key, value in rec.items():
                if key not in self._declared and key not in self.extra_columns and key not in unknown:
                    unknown[key] = value
        if not unknown:
            return set()
        policy = self.dataset.schema_change
        where = f"{self.source}.{self.dataset.name}"
        if policy == "freeze":
            names = ", ".join(sorted(unknown))
            raise SchemaDriftError(
                f"{where}: the source sent new column(s) {names}, and the contract's schema_change "
                "policy is 'freeze'. Nothing was loaded. Add the column(s) to the contract "
                f"(ingest/config/sources/{self.source}.yml) or change the policy to 'evolve'."
            )
        if policy == "discard_row":
            return set(unknown)
        for key, value in unknown.items():
            # The first non-null value decides the type; all-null columns arrive as strings.
            sample = next((r[key] for r in records if r.get(key) is not None), value)
            self.extra_columns[key] = infer_type(sample) if sample is not None else "string"
        return set()

    def _check_missing_fields(self, records: list[dict[str, Any]]) -> None:
        """Under ``freeze``, a declared column that no record of the page carries is drift."""
        if self.dataset.schema_change != "freeze" or not records:
            return
        present: set[str] = set()
        for rec in records:
            present.update(rec)
        missing = sorted(c.field for c in self.dataset.columns if c.field not in present)
        if missing:
            raise SchemaDriftError(
                f"{self.source}.{self.dataset.name}: the source stopped sending column(s) "
                f"{', '.join(missing)}, and the contract's schema_change policy is 'freeze'. Nothing "
                "was loaded. Confirm the change with the source owner, then update the contract "
                f"(ingest/config/sources/{self.source}.yml)."
            )

    def conform(self, records: list[dict[str, Any]]) -> ConformedBatch:
        self._check_missing_fields(records)
        discard_fields = self._admit_new_fields(records)
        columns = self.columns()
        values: dict[str, list[Any]] = {c.name: [] for c in columns}
        hashes: list[str] = []
        rejected: list[Rejected] = []
        identities: dict[str, tuple[str, str]] = {}
        erased = 0
        for rec in records:
            row, reason = self._conform_one(rec, columns, discard_fields)
            if reason is None and self._protected:
                reason = self._pseudonymise(rec, row, identities)
                if (
                    reason is None
                    and self.erased
                    and any(row[c.name] in self.erased for c in self._protected)
                ):
                    erased += 1
                    continue
            if (
                reason is None
                and self.erased_refs
                and any(row.get(name) in keys for name, keys in self.erased_refs.items())
            ):
                erased += 1
                continue
            if reason is not None:
                rejected.append(Rejected(record=rec, reason=reason))
                continue
            for name, value in row.items():
                values[name].append(value)
            # Hash what is stored (tokens, not clear identifiers): a hash over a record holding an
            # ID number would let anyone who knows the other fields brute-force the number.
            stored = {**rec, **{c.field: row[c.name] for c in self._protected}} if self._protected else rec
            hashes.append(record_hash(stored))
        table = pa.table(values, schema=self.arrow_schema())
        if erased:
            # no clear value of an erased resident may reach the identity zone again
            identities = {t: v for t, v in identities.items() if t not in self.erased}
        return ConformedBatch(
            table=table, hashes=hashes, rejected=rejected, identities=identities, erased=erased
        )

    def _pseudonymise(
        self, rec: dict[str, Any], row: dict[str, Any], identities: dict[str, tuple[str, str]]
    ) -> str | None:
        """Validate and tokenise the protected columns of one row, in place; return a reject reason."""
        from ingest.privacy import is_minor, normalise

        for col in self._protected:
            value = row[col.name]
            if value is None:
                continue
            if col.validate_as:
                check = _check_code(col.validate_as, value)
                if not check.valid:
                    return f"field '{col.field}': {check.reason}"
                if col.flag_minor:  # validate_as: resident_id (the contract guarantees it)
                    at = row.get(self.dataset.cursor.field) if self.dataset.cursor else self.as_of
                    row[f"{col.name}_is_minor"] = is_minor(check.birth_date, at.date()) if at else None
            kind = col.token_kind
            try:
                token = self.pseudonymiser.token(kind, value)
            except ValueError as exc:
                return f"field '{col.field}': {exc}"
            identities[token] = (kind, normalise(kind, value))
            row[col.name] = token
        return None

    def _conform_one(
        self, rec: dict[str, Any], columns: list[Column], discard_fields: set[str]
    ) -> tuple[dict[str, Any], str | None]:
        extra = discard_fields.intersection(rec)
        if extra:
            return {}, f"unexpected field(s) {', '.join(sorted(extra))} (schema_change: discard_row)"
        row: dict[str, Any] = {}
        for col in columns:
            raw = rec.get(col.field)
            if raw is None or raw == "":
                if col.required:
                    return {}, f"required field '{col.field}' is missing or empty"
                row[col.name] = None
                continue
            try:
                row[col.name] = COERCE[col.type](raw)
            except ConformError as exc:
                shown = raw if len(str(raw)) <= 40 else f"{str(raw)[:40]}…"
                return {}, f"field '{col.field}' {exc}: {shown!r} (expected {col.type})"
        for col in columns:
            if col.validate_as and not col.protect and row[col.name] is not None:
                # Codes that are not personal (an organisation's USCC) are checked, not tokenised.
                check = _check_code(col.validate_as, row[col.name])
                if not check.valid:
                    return {}, f"field '{col.field}': {check.reason}"
                row[col.name] = getattr(check, "normalised", None) or row[col.name]
            if col.not_before and row[col.name] is not None and row.get(col.not_before) is not None:
                if _instant(row[col.name]) < _instant(row[col.not_before]):
                    return {}, (
                        f"field '{col.field}' ({row[col.name].isoformat()}) is before "
                        f"'{col.not_before}' ({row[col.not_before].isoformat()})"
                    )
        return row, None


def _check_code(kind: str, value: Any) -> Any:
    """The ``ingest.privacy`` check for a contract's ``validate_as`` (resident_id, mobile, uscc)."""
    from ingest.privacy import identifiers

    return getattr(identifiers, f"validate_{kind}")(value)


def _instant(value: Any) -> Any:
    """Dates and timestamps compare on one axis: a date is its midnight UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time.min, UTC)
    return value
