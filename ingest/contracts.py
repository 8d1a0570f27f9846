"""Source registry and data contracts: one validated YAML file per source.

A contract declares, per dataset, its columns (type, whether required, classification level),
primary key, write disposition, incremental cursor and what to do when the source's schema
changes. The registry is loaded from the package (``ingest/config/sources``), never from the
working directory, so DAGs, CLI and tests all see the same thing.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ingest.settings import PACKAGE_DIR

REGISTRY_DIR = PACKAGE_DIR / "config" / "sources"

ColumnType = Literal["string", "long", "double", "boolean", "timestamptz", "date"]
Classification = Literal["public", "internal", "sensitive", "core"]
Disposition = Literal["append", "merge", "replace"]
SchemaChangePolicy = Literal["evolve", "freeze", "discard_row"]
PersonalCategory = Literal["identifier", "contact", "name", "address", "health", "minor", "location"]
DIRECT_IDENTIFIERS = {"identifier", "contact", "name"}
# Which pseudonym family a protected column's values belong to (ingest.privacy.pseudonymise kinds).
TOKEN_KIND = {"identifier": "id_number", "contact": "phone", "name": "name", "address": "address"}

_DURATION = re.compile(r"^P(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?)?$")


def parse_duration(text: str) -> timedelta:
    """ISO 8601 durations of the simple kind used in contracts: ``P30D``, ``PT1H``, ``P1DT6H``."""
    match = _DURATION.match(text)
    if not match or text in {"P", "PT"}:
        raise ValueError(f"{text!r} is not an ISO 8601 duration like P30D or PT1H")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    return timedelta(**parts)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    name: str
    type: ColumnType
    required: bool = False
    classification: Classification
    description: str = ""
    source_field: str | None = Field(
        default=None, description="field name in the source record, if different"
    )
    not_before: str | None = Field(default=None, description="another column this value may not precede")
    category: PersonalCategory | None = Field(default=None, description="kind of personal data, if any")
    protect: Literal["tokenise"] | None = Field(
        default=None,
        description="tokenise: replaced by a keyed pseudonym at ingest; clear value to the identity zone",
    )
    validate_as: Literal["resident_id", "mobile", "uscc"] | None = Field(
        default=None, description="identifier check; failures are quarantined"
    )
    references: str | None = Field(
        default=None,
        description="'<dataset>.<column>' of the same source this value points at (erasure follows it)",
    )
    flag_minor: bool = Field(
        default=False,
        description="resident ID numbers: add <name>_is_minor (under 14 at the record's time)",
    )

    @model_validator(mode="after")
    def _direct_identifiers_are_protected(self) -> Column:
        if self.category in DIRECT_IDENTIFIERS and self.protect is None:
            raise ValueError(
                f"column {self.name}: category {self.category!r} is a direct identifier and must declare "
                "protect: tokenise (it may not reach the raw zone in the clear)"
            )
        if self.flag_minor and self.validate_as != "resident_id":
            raise ValueError(f"column {self.name}: flag_minor needs validate_as: resident_id")
        if self.protect and self.category not in TOKEN_KIND:
            raise ValueError(f"column {self.name}: protect needs a category of {sorted(TOKEN_KIND)}")
        return self

    @property
    def token_kind(self) -> str | None:
        return TOKEN_KIND.get(self.category or "") if self.protect else None

    @property
    def field(self) -> str:
        return self.source_field or self.name


class Cursor(_Strict):
    field: str = Field(description="contract column whose value moves forward as records change")
    initial: str = Field(description="ISO 8601 instant to start from on the very first run")
    lookback: str = Field(default="PT0S", description="re-read this much before the saved cursor")
    window: str = Field(default="P30D", description="largest window asked of the source in one go")

    @property
    def lookback_delta(self) -> timedelta:
        return parse_duration(self.lookback)

    @property
    def window_delta(self) -> timedelta:
        return parse_duration(self.window)


class Dataset(_Strict):
    name: str
    description: str
    endpoint: str = Field(description="where the connector finds it (path, table, resource id)")
    disposition: Disposition
    primary_key: list[str]
    cursor: Cursor | None = None
    schema_change: SchemaChangePolicy = "evolve"
    freshness_sla: str = Field(default="P1D", description="ISO 8601 duration the data may age")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="connector-specific settings (e.g. FHIR search vs bulk export)"
    )
    columns: list[Column]

    @model_validator(mode="after")
    def _check_keys(self) -> Dataset:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name}: duplicate column names")
        for key in self.primary_key:
            if key not in names:
                raise ValueError(f"dataset {self.name}: primary key {key!r} is not a declared column")
        for col in self.columns:
            if col.not_before and col.not_before not in names:
                raise ValueError(
                    f"dataset {self.name}: {col.name}.not_before names unknown column {col.not_before!r}"
                )
        if self.cursor and self.cursor.field not in names:
            raise ValueError(
                f"dataset {self.name}: cursor field {self.cursor.field!r} is not a declared column"
            )
        if self.disposition == "merge" and not self.primary_key:
            raise ValueError(f"dataset {self.name}: disposition 'merge' needs a primary_key")
        return self

    @property
    def personal_columns(self) -> list[Column]:
        """Columns holding personal information of any kind (tokenised or not)."""
        return [c for c in self.columns if c.category is not None]

    @property
    def protected_columns(self) -> list[Column]:
        return [c for c in self.columns if c.protect]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


class Connection(_Strict):
    url_env: str = Field(description="environment variable holding the base URL / DSN")
    conn_id: str | None = Field(default=None, description="Airflow connection with the same information")
    default_url: str | None = Field(default=None, description="used when neither is set (the simulator)")
    secret_env: str | None = Field(default=None, description="environment variable holding an API key")


class Source(_Strict):
    name: str
    title: str
    domain: str
    standard: str
    connector: str
    owner: str = Field(description="owning department")
    steward: str = Field(description="data steward: who answers for quality")
    responsible_party: str
    purpose: str = Field(description="declared purpose of processing (PIPL art. 6)")
    schedule: str = "@hourly"
    landing_retention: str = Field(
        default="P365D", description="how long landing payloads and quarantine files are kept (ISO 8601)"
    )
    connection: Connection
    datasets: list[Dataset]

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError(f"source name {value!r} must be a lowercase slug")
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> Source:
        for ds in self.datasets:
            for col in ds.columns:
                if not col.references:
                    continue
                target_ds, _, target_col = col.references.partition(".")
                target = next((d for d in self.datasets if d.name == target_ds), None)
                if target is None or target_col not in {c.name for c in target.columns}:
                    raise ValueError(
                        f"dataset {ds.name}: {col.name}.references {col.references!r} is not "
                        f"'<dataset>.<column>' of source {self.name}"
                    )
        return self

    def dataset(self, name: str) -> Dataset:
        for ds in self.datasets:
            if ds.name == name:
                return ds
        known = ", ".join(d.name for d in self.datasets)
        raise KeyError(f"source {self.name} has no dataset {name!r} (known: {known})")


def table_name(source: str, dataset: str) -> str:
    """Iceberg table (in namespace ``raw``) holding one source dataset."""
    return f"{source}__{dataset}"


def asset_name(source: str, dataset: str) -> str:
    """Airflow Asset name of a raw table."""
    return f"raw.{source}.{dataset}"


class Registry(_Strict):
    sources: list[Source]

    def source(self, name: str) -> Source:
        for src in self.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in self.sources)
        raise KeyError(f"unknown source {name!r}; the registry knows: {known}")


def load_source(path: Path) -> Source:
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    try:
        return Source.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"invalid source contract {path.name}: {exc}") from exc


@lru_cache(maxsize=4)
def load_registry(directory: Path = REGISTRY_DIR) -> Registry:
    sources = [load_source(p) for p in sorted(directory.glob("*.yml"))]
    return Registry(sources=sources)
