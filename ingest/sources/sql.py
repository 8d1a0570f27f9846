"""SQL source systems (PostgreSQL via psycopg2, MariaDB/MySQL via PyMySQL): one connector for both.

The contract's ``url`` is a DSN — ``postgresql://user@host:port/db`` or ``mysql://user@host:port/db``
— and ``api_key`` the password, so the DSN in an environment variable or DAG never has to carry
it (a password in the DSN still works). ``dataset.endpoint`` is the table (``table`` or
``schema.table``), checked against a strict identifier pattern and quoted: nothing from the
contract reaches the SQL text unvalidated, and every value travels as a bound parameter.

Incremental datasets are read by their ``cursor.field``:
``WHERE cursor >= %s AND cursor < %s ORDER BY cursor, <primary key>``. The window is walked in
slices no longer than ``cursor.window`` (short transactions on the source), skipping empty
stretches with one ``min()`` probe, and each slice is streamed through a server-side cursor
(a psycopg2 named cursor / PyMySQL ``SSCursor``) in ``fetchmany(batch_size)`` batches: the
connector never holds more than one batch. Each batch is one :class:`Page` whose payload is NDJSON
(one JSON object per row, values rendered: datetimes ISO 8601 with offset, dates ISO, Decimal as
text so no precision is lost).

Rows are read with ``SELECT *`` on purpose: a column the source adds is then seen by the
contract's ``schema_change`` policy (``evolve`` adds it to the table, ``freeze`` fails naming it,
``discard_row`` quarantines) instead of being silently ignored by a fixed column list.

Naive timestamps (MariaDB ``DATETIME``, PostgreSQL ``timestamp``) are read in
``options.timezone`` (``"+08:00"`` or an IANA name; UTC when unset): the session time zone is set
to it, window bounds are converted to it, and values are rendered back with that offset.
Deletes in these systems are soft (a ``deleted_at`` column; the row's cursor moves), so a merge
on the primary key replaces the row with its deleted version.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingest.contracts import Dataset
from ingest.sources import Page, SourceError, Window
from ingest.sources.http import RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 5000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")
_SCHEMES = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}


@dataclass(frozen=True)
class Dsn:
    """A parsed DSN. ``password`` never appears in :meth:`where` (used in every error message)."""

    dialect: str  # postgres | mysql
    host: str
    port: int
    database: str
    user: str | None
    password: str | None
    params: dict[str, str]

    @classmethod
    def parse(cls, url: str, password: str | None = None) -> Dsn:
        parts = urlsplit(url)
        scheme = parts.scheme.split("+", 1)[0].lower()
        dialect = _SCHEMES.get(scheme)
        if dialect is None:
            raise SourceError(
                f"unsupported DSN scheme {parts.scheme!r}: use postgresql://user@host:port/db "
                "or mysql://user@host:port/db"
            )
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise SourceError(
                f"the DSN for {parts.hostname or '?'} names no database: expected {scheme}://user@host:port/db"
            )
        try:
            port = parts.port or _DEFAULT_PORTS[dialect]
        except ValueError:
            raise SourceError(f"the DSN for {parts.hostname or '?'}/{database} has an invalid port") from None
        return cls(
            dialect=dialect,
            host=parts.hostname or "localhost",
            port=port,
            database=database,
            user=unquote(parts.username) if parts.username else None,
            password=password if password is not None else unquote(parts.password or "") or None,
            params=dict(parse_qsl(parts.query)),
        )

    @property
    def where(self) -> str:
        kind = "PostgreSQL" if self.dialect == "postgres" else "MariaDB/MySQL"
        who = f" as {self.user}" if self.user else ""
        return f"{kind} database {self.database!r} on {self.host}:{self.port}{who}"


def check_identifier(name: str, *, what: str) -> str:
    """``name`` if it is a plain SQL identifier; otherwise refuse (no injection through contracts)."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise SourceError(
            f"{what} {name!r} is not a plain SQL identifier (letters, digits, underscore; "
            "not starting with a digit; at most 63 characters): fix the source contract"
        )
    return name


def parse_timezone(value: str | None) -> tzinfo:
    """``options.timezone``: ``+08:00`` / ``-0530`` / ``UTC`` / an IANA name like ``Asia/Shanghai``."""
    if value is None or str(value).upper() in {"UTC", "Z", "+00:00"}:
        return UTC
    text = str(value)
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise SourceError(
            f"options.timezone {text!r} is neither an offset like +08:00 nor an IANA time zone name"
        ) from None


def _session_offset(tz: tzinfo, at: datetime) -> str:
    """The ``+HH:MM`` a session time zone is set to (MariaDB needs an offset without tz tables)."""
    offset = tz.utcoffset(at) or timedelta(0)
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    return f"{sign}{abs(total) // 60:02d}:{abs(total) % 60:02d}"


def render_value(value: Any, tz: tzinfo) -> Any:
    """A database value as a JSON value the conformer reads (ISO 8601 for times, with offset)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact; the conformer reads numbers from text
    if isinstance(value, timedelta):  # MySQL TIME columns come back as timedelta
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict | list):
        return value  # JSON columns: the conformer rejects non-scalars for scalar columns, with a reason
    return str(value)


def _ndjson(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in rows)


class SqlConnector:
    """One table of a PostgreSQL or MariaDB/MySQL database per dataset (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        source: str = "sql",
        policy: RetryPolicy | None = None,
        **_: object,
    ) -> None:
        self.source = source
        self.dsn = Dsn.parse(url, api_key)
        self.policy = policy or RetryPolicy.from_env()
        self._con: Any = None
        self._tz_name: str | None = None

    # ------------------------------------------------------------------ connection

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken connection must not mask the real error
                log.debug("%s: closing the connection failed: %s", self.source, type(exc).__name__)
            self._con = None

    def _connect(self, tz: tzinfo) -> Any:
        if self._con is not None:
            return self._con
        attempts = max(1, min(self.policy.max_attempts, 3))
        for attempt in range(1, attempts + 1):
            try:
                self._con = self._connect_once()
                break
            except Exception as exc:  # noqa: BLE001 - driver errors are translated below
                reason = self._reason(exc)
                permanent = self._is_permanent(exc)
                if permanent or attempt == attempts:
                    raise SourceError(
                        f"{self.source}: cannot connect to {self.dsn.where}: {reason}. "
                        + (
                            "Check the user, password (secret) and database name in the connection."
                            if permanent
                            else "Check that the server is up and the DSN's host and port, then re-run; "
                            "nothing was committed."
                        )
                    ) from None
                wait = min(self.policy.initial_wait * 2 ** (attempt - 1), self.policy.max_wait)
                log.warning(
                    "%s: connecting to %s failed (attempt %d/%d): %s; retrying",
                    self.source,
                    self.dsn.where,
                    attempt,
                    attempts,
                    reason,
                )
                time.sleep(wait)
        self._set_timezone(tz)
        return self._con

    def _connect_once(self) -> Any:
        d = self.dsn
        timeout = int(d.params.get("connect_timeout", max(1, int(self.policy.timeout))))
        if d.dialect == "postgres":
            import psycopg2

            extra = {k: v for k, v in d.params.items() if k != "connect_timeout"}
            return psycopg2.connect(
                host=d.host,
                port=d.port,
                dbname=d.database,
                user=d.user,
                password=d.password,
                connect_timeout=timeout,
                application_name=f"cdl-ingest-{self.source}",
                **extra,
            )
        import pymysql

        return pymysql.connect(
            host=d.host,
            port=d.port,
            user=d.user or "",
            password=d.password or "",
            database=d.database,
            charset="utf8mb4",
            connect_timeout=timeout,
            read_timeout=max(60, int(self.policy.timeout) * 4),
            autocommit=True,
        )

    def _reason(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.dsn.password:
            text = text.replace(self.dsn.password, "***")
        return f"{type(exc).__name__}: {text}"

    @staticmethod
    def _is_permanent(exc: BaseException) -> bool:
        text = str(exc).lower()
        args = getattr(exc, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        return code in {1044, 1045, 1049} or any(
            s in text for s in ("password authentication failed", "does not exist", "no password supplied")
        )

    def _set_timezone(self, tz: tzinfo) -> None:
        """Session time zone = options.timezone, so naive columns compare and render in it."""
        name = tz.key if isinstance(tz, ZoneInfo) else _session_offset(tz, datetime.now(UTC))
        if name == self._tz_name:
            return
        with self._con.cursor() as cur:
            if self.dsn.dialect == "postgres" and isinstance(tz, ZoneInfo):
                cur.execute("SET TIME ZONE %s", (name,))
            elif self.dsn.dialect == "postgres":
                # A bare '+08:00' string would be read as a POSIX zone (sign inverted): an interval is not.
                cur.execute("SET TIME ZONE INTERVAL %s HOUR TO MINUTE", (name,))
            else:
                # MariaDB only knows named zones when its tz tables are loaded; an offset always works.
                offset = _session_offset(tz, datetime.now(UTC))
                cur.execute("SET time_zone = %s", (offset,))
        if self.dsn.dialect == "postgres":
            self._con.commit()
        self._tz_name = name

    def _quote(self, name: str) -> str:
        return f'"{name}"' if self.dsn.dialect == "postgres" else f"`{name}`"

    def _table(self, dataset: Dataset) -> str:
        parts = dataset.endpoint.split(".")
        if len(parts) > 2:
            raise SourceError(
                f"{self.source}.{dataset.name}: endpoint {dataset.endpoint!r} must be "
                "'table' or 'schema.table'"
            )
        what = f"{self.source}.{dataset.name}: endpoint part"
        return ".".join(self._quote(check_identifier(p, what=what)) for p in parts)

    def _field(self, dataset: Dataset, column: str) -> str:
        col = dataset.column(column)
        return self._quote(check_identifier(col.field, what=f"{self.source}.{dataset.name}: column"))

    # ------------------------------------------------------------------ extraction

    def extract(self, dataset: Dataset, window: Window | None, state: str | None = None) -> Iterator[Page]:
        tz = parse_timezone(dataset.options.get("timezone"))  # type: ignore[arg-type]
        batch_size = int(dataset.options.get("batch_size", DEFAULT_BATCH_SIZE))
        if batch_size < 1:
            raise SourceError(f"{self.source}.{dataset.name}: options.batch_size must be >= 1")
        table = self._table(dataset)
        order = [self._field(dataset, k) for k in dataset.primary_key]
        if dataset.cursor is None:
            sql = f"SELECT * FROM {table}" + (f" ORDER BY {', '.join(order)}" if order else "")
            yield from self._stream(dataset, sql, (), tz, batch_size, label="full table")
            return
        if window is None:
            raise SourceError(f"{self.source}.{dataset.name}: an incremental dataset needs a window")
        cursor = self._field(dataset, dataset.cursor.field)
        step = dataset.cursor.window_delta
        base = f"SELECT * FROM {table} WHERE {cursor} >= %s AND {cursor} < %s"
        ordered = f"{base} ORDER BY {', '.join([cursor, *[o for o in order if o != cursor]])}"
        probe = f"SELECT MIN({cursor}) FROM {table} WHERE {cursor} >= %s AND {cursor} < %s"
        start = window.since
        while start < window.until:
            first = self._scalar(dataset, probe, (self._bound(start, tz), self._bound(window.until, tz)), tz)
            if first is None:
                return
            if first.tzinfo is None:
                first = first.replace(tzinfo=tz)
            start = max(start, first)
            end = min(start + step, window.until)
            label = f"{dataset.endpoint} {start.isoformat()}..{end.isoformat()}"
            yield from self._stream(
                dataset, ordered, (self._bound(start, tz), self._bound(end, tz)), tz, batch_size, label=label
            )
            start = end

    def _bound(self, at: datetime, tz: tzinfo) -> datetime:
        """Window bound as a parameter: aware for PostgreSQL; local naive for MariaDB (DATETIME)."""
        if self.dsn.dialect == "postgres":
            return at
        return at.astimezone(tz).replace(tzinfo=None)

    def _scalar(self, dataset: Dataset, sql: str, params: tuple[Any, ...], tz: tzinfo) -> Any:
        con = self._connect(tz)
        try:
            with con.cursor() as cur:
                cur.execute(sql, params)
                row = cur.fetchone()
            if self.dsn.dialect == "postgres":
                con.commit()
        except Exception as exc:  # noqa: BLE001 - translated into a SourceError naming the table
            self._fail(dataset, exc)
        return row[0] if row else None

    def _stream(
        self,
        dataset: Dataset,
        sql: str,
        params: tuple[Any, ...],
        tz: tzinfo,
        batch_size: int,
        *,
        label: str,
    ) -> Iterator[Page]:
        con = self._connect(tz)
        if self.dsn.dialect == "postgres":
            cur = con.cursor(name=f"cdl_{uuid.uuid4().hex[:12]}")
            cur.itersize = batch_size
        else:
            import pymysql.cursors

            cur = con.cursor(pymysql.cursors.SSCursor)
        page_no = 0
        try:
            try:
                cur.execute(sql, params)
                rows = cur.fetchmany(batch_size)
            except Exception as exc:  # noqa: BLE001
                self._fail(dataset, exc)
            names = [d[0] for d in cur.description or ()]
            while rows:
                page_no += 1
                records = [{n: render_value(v, tz) for n, v in zip(names, row, strict=True)} for row in rows]
                yield Page(
                    payload=_ndjson(records),
                    records=records,
                    label=f"{label} batch {page_no}",
                    media_type="application/x-ndjson",
                    extension="ndjson",
                )
                if len(rows) < batch_size:
                    break
                try:
                    rows = cur.fetchmany(batch_size)
                except Exception as exc:  # noqa: BLE001
                    self._fail(dataset, exc)
        finally:
            try:
                cur.close()
                if self.dsn.dialect == "postgres":
                    con.commit()  # end the read transaction: no long-held snapshot on the source
            except Exception:  # noqa: BLE001 - the connection may already be broken; close() handles it
                self.close()

    def _fail(self, dataset: Dataset, exc: BaseException) -> None:
        reason = self._reason(exc)
        self.close()
        raise SourceError(
            f"{self.source}.{dataset.name}: reading table {dataset.endpoint!r} from {self.dsn.where} "
            f"failed: {reason}. Check the table and the contract's endpoint/cursor column; nothing from "
            "this run was committed."
        ) from None

    # ------------------------------------------------------------------ landed payloads

    @staticmethod
    def parse(payload: bytes, *, label: str, dataset: Dataset | None = None, source: str = "sql") -> Page:
        """NDJSON (one row per line, as landed) back into a page; replay reads landing with it."""
        records: list[dict[str, Any]] = []
        for n, line in enumerate(payload.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise SourceError(
                    f"{source}: {label}: line {n} is not valid JSON ({exc}); the payload may be truncated"
                ) from None
            if not isinstance(record, dict):
                raise SourceError(f"{source}: {label}: line {n} is not a JSON object")
            records.append(record)
        return Page(
            payload=payload,
            records=records,
            label=label,
            media_type="application/x-ndjson",
            extension="ndjson",
        )

    @staticmethod
    def without(payload: bytes, keep_record: Callable[[dict[str, Any]], bool]) -> tuple[bytes, int]:
        """The NDJSON payload minus the rows ``keep_record`` rejects (erasure): (bytes, removed)."""
        kept: list[bytes] = []
        removed = 0
        for line in payload.splitlines():
            if not line.strip():
                continue
            if keep_record(json.loads(line)):
                kept.append(line)
            else:
                removed += 1
        if not removed:
            return payload, 0
        return b"".join(line + b"\n" for line in kept), removed
