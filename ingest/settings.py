"""Resolve where things live (lake, catalog, warehouse) from the environment, once.

Everything a run needs to know about *where* comes from here; nothing else in the package
reads location variables. The defaults give an embedded, persistent, zero-setup layout inside
the project (git-ignored ``data/``); production points ``LAKE_URL`` at ``s3://bucket/prefix`` and
``ICEBERG_CATALOG_URI`` at PostgreSQL.

| variable | default | meaning |
|---|---|---|
| ``CDL_ENV`` | ``ci`` when ``CI=true``, else ``local`` | ``local`` / ``ci`` / ``prod``; also the dbt target |
| ``CDL_HOME`` | the project checkout | where ``data/`` lives |
| ``LAKE_URL`` | ``<home>/data/lake`` | local directory or ``s3://bucket/prefix`` |
| ``ICEBERG_CATALOG_URI`` | SQLite file in ``<lake>/_catalog/`` | SQLAlchemy URL of the Iceberg catalog |
| ``WAREHOUSE_PATH`` | ``<home>/data/warehouse.duckdb`` | the analyst-facing DuckDB warehouse |
| ``LAKE_S3_ENDPOINT`` | unset (AWS) | S3-compatible endpoint, e.g. ``http://127.0.0.1:9000`` |
| ``LAKE_AWS_CONN_ID`` | unset | Airflow connection holding endpoint + credentials (used inside Airflow) |
| ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_REGION`` | | S3 credentials |
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

PACKAGE_DIR = Path(__file__).resolve().parent


def _default_home() -> Path:
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.cwd()


def _resolve_env(environ: os._Environ[str] | dict[str, str]) -> str:
    explicit = environ.get("CDL_ENV")
    if explicit:
        if explicit not in {"local", "ci", "prod"}:
            raise ValueError(f"CDL_ENV must be one of local, ci, prod (got {explicit!r})")
        return explicit
    return "ci" if environ.get("CI", "").lower() in {"1", "true", "yes"} else "local"


@dataclass(frozen=True)
class S3Settings:
    """Endpoint and credentials of an S3-compatible store. ``repr`` never shows the secret."""

    endpoint: str | None
    region: str
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def iceberg_properties(self) -> dict[str, str]:
        props = {"s3.region": self.region}
        if self.endpoint:
            props["s3.endpoint"] = self.endpoint
        if self.access_key_id:
            props["s3.access-key-id"] = self.access_key_id
        if self.secret_access_key:
            props["s3.secret-access-key"] = self.secret_access_key
        if self.session_token:
            props["s3.session-token"] = self.session_token
        return props


@dataclass(frozen=True)
class Settings:
    env: str
    home: Path
    lake_url: str
    catalog_uri: str
    warehouse_path: Path
    s3: S3Settings | None = None

    @property
    def lake_is_s3(self) -> bool:
        return self.lake_url.startswith("s3://")

    @property
    def dbt_target(self) -> str:
        return {"local": "dev"}.get(self.env, self.env)

    def with_lake(self, lake_url: str, catalog_uri: str | None = None) -> Settings:
        """The same settings pointed at another lake (CLI ``--lake``)."""
        lake_url = _normalise_lake_url(lake_url)
        s3 = (self.s3 or s3_settings_from_env(os.environ)) if lake_url.startswith("s3://") else None
        return replace(
            self,
            lake_url=lake_url,
            catalog_uri=catalog_uri or _default_catalog_uri(lake_url, self.home),
            s3=s3,
        )

    def describe(self) -> dict[str, str]:
        """Safe to print: no credentials."""
        return {
            "env": self.env,
            "lake": self.lake_url,
            "catalog": _redact_url(self.catalog_uri),
            "warehouse": str(self.warehouse_path),
            "s3_endpoint": (self.s3.endpoint or "AWS default") if self.s3 else "-",
        }


def _normalise_lake_url(url: str) -> str:
    if url.startswith("s3://"):
        return url.rstrip("/")
    if url.startswith("file://"):
        url = urlparse(url).path
    return str(Path(url).expanduser().resolve())


def _default_catalog_uri(lake_url: str, home: Path) -> str:
    if lake_url.startswith("s3://"):
        # An S3 lake still needs somewhere transactional for the catalog: a local SQLite file
        # per lake (use PostgreSQL in production, where several machines share the catalog).
        digest = hashlib.sha256(lake_url.encode()).hexdigest()[:10]
        return f"sqlite:///{home / 'data' / f'catalog-{digest}.sqlite'}"
    return f"sqlite:///{Path(lake_url) / '_catalog' / 'iceberg.sqlite'}"


def _redact_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def s3_settings_from_env(environ: os._Environ[str] | dict[str, str]) -> S3Settings:
    return S3Settings(
        endpoint=environ.get("LAKE_S3_ENDPOINT") or environ.get("AWS_ENDPOINT_URL") or None,
        region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        access_key_id=environ.get("AWS_ACCESS_KEY_ID"),
        secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY"),
        session_token=environ.get("AWS_SESSION_TOKEN"),
    )


def s3_settings_from_airflow(conn_id: str) -> S3Settings:
    """Endpoint and credentials from an Airflow ``aws`` connection (only inside Airflow)."""
    from airflow.sdk import Connection  # imported lazily: the package runs without Airflow

    conn = Connection.get(conn_id)
    extra = conn.extra_dejson or {}
    return S3Settings(
        endpoint=extra.get("endpoint_url") or None,
        region=extra.get("region_name") or "us-east-1",
        access_key_id=conn.login or None,
        secret_access_key=conn.password or None,
    )


def load_settings(environ: os._Environ[str] | dict[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    home = Path(environ.get("CDL_HOME") or _default_home()).resolve()
    lake_url = _normalise_lake_url(environ.get("LAKE_URL") or str(home / "data" / "lake"))
    catalog_uri = environ.get("ICEBERG_CATALOG_URI") or _default_catalog_uri(lake_url, home)
    warehouse = Path(environ.get("WAREHOUSE_PATH") or home / "data" / "warehouse.duckdb").resolve()
    s3 = None
    if lake_url.startswith("s3://"):
        conn_id = environ.get("LAKE_AWS_CONN_ID")
        s3 = s3_settings_from_airflow(conn_id) if conn_id else s3_settings_from_env(environ)
    return Settings(
        env=_resolve_env(environ),
        home=home,
        lake_url=lake_url,
        catalog_uri=catalog_uri,
        warehouse_path=warehouse,
        s3=s3,
    )
