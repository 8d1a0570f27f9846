"""IMS OneRoster 1.1 CSV connector: zip bundles a school information system drops into a folder.

A bundle is a zip of CSV files plus ``manifest.csv`` (``propertyName,value``: ``manifest.version``
1.0, ``oneroster.version`` 1.1, ``file.<name>`` = ``bulk`` | ``delta`` | ``absent``). The drop
folder is a local directory (``/path``, ``file:///path``, or a path relative to the project home)
or an S3 prefix (``s3://bucket/prefix``, endpoint and credentials as for the lake:
``LAKE_S3_ENDPOINT`` / ``AWS_*``, see :mod:`ingest.settings`).

Bundles carry no time cursor, so a dataset resumes by *what it has processed*: its state is a
compact JSON of the SHA-256 checksums of the bundles already loaded (plus a name/size/mtime
cache so unchanged bundles are not downloaded again just to be hashed). Each run lists
``*.zip`` in name order (bundle names start with a UTC timestamp, so name order is time
order), skips every bundle whose checksum was processed — also when the same bytes reappear
under another name — validates the manifest of each new bundle, and yields the dataset's CSV
member as pages of bounded row batches. Each page's payload is the member's header line plus
that batch's rows, byte for byte as in the bundle; the new state rides on the bundle's last
page, so a run that fails half-way commits nothing and reprocesses the bundle next time.

Bulk and delta files both merge on ``sourcedId`` in the lake (rows of later bundles win);
``status=tobedeleted`` rows of a delta are kept as soft deletes. A *bulk* file is the complete
set: its first page is marked ``replaces_all``, and the commit deletes the records the file (and
any later delta of the same run) no longer lists, while deltas applied earlier in the run to
records the bulk file still lists are superseded as usual. A bulk file without records deletes
nothing (more likely a broken export than an empty school).

Standard knowledge applied here: ``password`` (OneRoster users.csv) is never passed on — a
credential has no place in a lake; users.csv rows are filtered by ``role`` (dataset options
``filter_field`` / ``filter_values``), and a ``tobedeleted`` row with the filter field left
empty is kept (a delta may carry deletions with only ``sourcedId, status, dateLastModified``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyarrow import fs as pafs

from ingest.contracts import Dataset
from ingest.sources import Page, SourceError, Window

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
MANIFEST_VERSION = "1.0"
ONEROSTER_VERSION = "1.1"
MODES = {"bulk", "delta", "absent"}
DEFAULT_PAGE_SIZE = 5000
# Fields never passed on from a OneRoster file (credentials).
DROPPED_FIELDS = ("password",)
_CHUNK = 1 << 20
STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Bundle:
    name: str
    path: str  # filesystem path (local path, or bucket/key on S3)
    size: int
    mtime_ns: int


@dataclasses.dataclass
class ResumeState:
    """Bundles processed: ``name -> [size, mtime_ns, sha256]``; the checksums are what counts.

    Size and mtime only spare a re-download: a bundle whose name, size and mtime are on record is
    not fetched again to be hashed. Anything else is fetched, hashed and skipped if its checksum
    was processed under any name.
    """

    bundles: dict[str, list[Any]] = dataclasses.field(default_factory=dict)

    @property
    def processed(self) -> set[str]:
        return {str(entry[2]) for entry in self.bundles.values()}

    @classmethod
    def load(cls, text: str | None, *, where: str) -> ResumeState:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            bundles = {str(k): list(v) for k, v in data["bundles"].items()}
            if any(len(v) != 3 for v in bundles.values()):
                raise ValueError("each bundle entry must be [size, mtime_ns, sha256]")
            return cls(bundles)
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise SourceError(
                f"{where}: the saved resume state is not the bundle-checksum JSON this connector writes "
                f"({exc}); inspect the table property 'ingest.cursor' before re-running"
            ) from None

    def dump(self) -> str:
        return json.dumps(
            {"v": STATE_VERSION, "bundles": dict(sorted(self.bundles.items()))}, separators=(",", ":")
        )

    def record(self, bundle: Bundle, checksum: str) -> None:
        previous = self.bundles.get(bundle.name)
        if previous and previous[2] != checksum:
            # the name now holds other bytes: keep the old checksum on record under a derived key
            self.bundles[f"{bundle.name}@{str(previous[2])[:12]}"] = previous
        self.bundles[bundle.name] = [bundle.size, bundle.mtime_ns, checksum]

    def known(self, bundle: Bundle) -> bool:
        entry = self.bundles.get(bundle.name)
        return bool(entry) and entry[0] == bundle.size and entry[1] == bundle.mtime_ns


class _Tap:
    """Feeds decoded lines to ``csv.reader`` and remembers the raw bytes each row came from."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self.raw: list[bytes] = []
        self._first = True

    def __iter__(self) -> _Tap:
        return self

    def __next__(self) -> str:
        raw = next(self._lines)
        self.raw.append(raw)
        if self._first:
            self._first = False
            return raw.decode("utf-8-sig")
        return raw.decode("utf-8")

    def take(self) -> bytes:
        out = b"".join(self.raw)
        self.raw.clear()
        return out


def _rows(lines: Iterator[bytes], *, where: str) -> Iterator[tuple[bytes, list[str]]]:
    """``(raw bytes, fields)`` per CSV row (quoted newlines included); the header is the first row."""
    tap = _Tap(lines)
    reader = csv.reader(tap, strict=True)
    try:
        for fields in reader:
            raw = tap.take()
            if not fields:  # a blank line is not a row
                continue
            yield raw, fields
    except (csv.Error, UnicodeDecodeError) as exc:
        raise SourceError(
            f"{where}: line {reader.line_num} is not valid UTF-8 CSV ({exc}); OneRoster CSV files are "
            "UTF-8 with RFC 4180 quoting — ask the exporting system to re-send the bundle"
        ) from None


def _filter(dataset: Dataset | None) -> tuple[str | None, set[str]]:
    if dataset is None:
        return None, set()
    field = dataset.options.get("filter_field")
    values = str(dataset.options.get("filter_values", ""))
    return (str(field) if field else None), {v.strip() for v in values.split(",") if v.strip()}


def _records(
    header: list[str], rows: list[list[str]], dataset: Dataset | None, *, where: str, first_line: int = 2
) -> list[dict[str, Any]]:
    field, allowed = _filter(dataset)
    out = []
    for offset, fields in enumerate(rows):
        if len(fields) > len(header):
            raise SourceError(
                f"{where}: row {first_line + offset} has {len(fields)} fields but the header has "
                f"{len(header)}; the file is malformed — ask the exporting system to re-send it"
            )
        record = dict(zip(header, fields + [""] * (len(header) - len(fields)), strict=True))
        if field and allowed:
            value = record.get(field, "")
            if value not in allowed and not (value == "" and record.get("status") == "tobedeleted"):
                continue
        for name in DROPPED_FIELDS:
            record.pop(name, None)
        out.append(record)
    return out


def _header(fields: list[str], *, where: str) -> list[str]:
    header = [f.strip() for f in fields]
    if "sourcedId" not in header:
        raise SourceError(
            f"{where}: the header has no 'sourcedId' column (got {', '.join(header[:6])}…); "
            "this is not a OneRoster 1.1 CSV file"
        )
    return header


class OneRosterConnector:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        source: str = "schools",
        page_size: int | None = None,
        **_: object,
    ) -> None:
        self.source = source
        self.page_size = page_size
        self.url = url
        self.fs, self.root = self._filesystem(url)

    # ------------------------------------------------------------------ drop folder

    @staticmethod
    def _filesystem(url: str) -> tuple[pafs.FileSystem, str]:
        if url.startswith("s3://"):
            from ingest.lake.storage import s3_filesystem
            from ingest.settings import load_settings, s3_settings_from_env

            settings = load_settings()
            # The lake's S3 settings (Airflow connection or env) when the lake is on S3, else the
            # same AWS_* / LAKE_S3_ENDPOINT variables the lake would use.
            s3 = settings.s3 or s3_settings_from_env(os.environ)
            fs = s3_filesystem(dataclasses.replace(settings, s3=s3))
            return fs, url[len("s3://") :].rstrip("/")
        if url.startswith("file://"):
            url = urlparse(url).path
        path = Path(url).expanduser()
        if not path.is_absolute():
            from ingest.settings import load_settings

            path = load_settings().home / path
        return pafs.LocalFileSystem(), str(path.resolve())

    def close(self) -> None:
        pass

    def bundles(self) -> list[Bundle]:
        """The ``*.zip`` bundles of the drop folder, in name (= time) order."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        except (FileNotFoundError, OSError) as exc:
            raise SourceError(
                f"{self.source}: cannot list the drop folder {self.url} ({exc}); check the path / "
                "bucket and credentials (LAKE_S3_ENDPOINT, AWS_*) of the OneRoster drop"
            ) from None
        out = []
        for info in infos:
            if info.type != pafs.FileType.File or info.base_name.startswith("."):
                continue
            if not info.base_name.lower().endswith(".zip"):
                continue
            mtime = info.mtime_ns if info.mtime_ns is not None else 0
            out.append(Bundle(info.base_name, info.path, info.size or 0, int(mtime)))
        return sorted(out, key=lambda b: b.name)

    def _download(self, bundle: Bundle, target: Path) -> str:
        """Copy a bundle to a local file (bounded memory), returning its SHA-256."""
        digest = hashlib.sha256()
        try:
            with self.fs.open_input_stream(bundle.path) as src, target.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
        except OSError as exc:
            raise SourceError(
                f"{self.source}: cannot read bundle {bundle.name} from {self.url} ({exc})"
            ) from None
        return digest.hexdigest()

    # ------------------------------------------------------------------ extract

    def extract(self, dataset: Dataset, window: Window | None, state: str | None = None) -> Iterator[Page]:
        where = f"{self.source}.{dataset.name}"
        member = dataset.endpoint
        if not member.endswith(".csv"):
            raise SourceError(f"{where}: endpoint {member!r} must name a OneRoster CSV file (e.g. users.csv)")
        page_size = int(self.page_size or dataset.options.get("page_size", DEFAULT_PAGE_SIZE))
        resume = ResumeState.load(state, where=where)
        pending = False  # processed bundles not yet reported on a page (their member was absent)
        scratch = Path(tempfile.mkdtemp(prefix="oneroster-"))
        try:
            for bundle in self.bundles():
                if resume.known(bundle):
                    continue
                local = scratch / "bundle.zip"
                checksum = self._download(bundle, local)
                already = checksum in resume.processed
                resume.record(bundle, checksum)
                if already:
                    log.info(
                        "%s: bundle %s was already processed (same checksum); skipped", where, bundle.name
                    )
                    pending = True  # record the name, so the copy is not downloaded again
                    continue
                pages = 0
                for page in self._bundle_pages(local, bundle.name, dataset, page_size, where=where):
                    pages += 1
                    if page.state == "":  # the bundle's last page carries the new state
                        page.state = resume.dump()
                        pending = False
                    yield page
                if pages == 0:
                    pending = True
                local.unlink(missing_ok=True)
            if pending:
                # Bundles without this dataset's file still count as processed: report that on an
                # empty page so the next run does not open them again.
                yield Page(
                    payload=b"",
                    records=[],
                    label="state",
                    media_type="text/csv",
                    extension="csv",
                    state=resume.dump(),
                )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _bundle_pages(
        self, local: Path, name: str, dataset: Dataset, page_size: int, *, where: str
    ) -> Iterator[Page]:
        """Pages of one bundle's member; the last one has ``state=""`` (filled in by the caller)."""
        member = dataset.endpoint
        try:
            zf = zipfile.ZipFile(local)
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(
                f"{where}: bundle {name} is not a readable zip ({exc}); nothing was loaded from it or any "
                "later bundle — remove or replace the bundle in the drop folder, then re-run"
            ) from None
        with zf:
            mode = validate_manifest(zf, name=name, member=member, where=where)
            if mode == "absent":
                return
            label_base = f"{name}/{member} ({mode})"
            try:
                with zf.open(member) as fh:
                    rows = _rows(iter(fh), where=f"{where}: {label_base}")
                    first = next(rows, None)
                    if first is None:
                        raise SourceError(f"{where}: {label_base} is empty (no header line)")
                    header_raw, header_fields = first
                    _header(header_fields, where=f"{where}: {label_base}")
                    batch: list[bytes] = []
                    line = 2  # first data line of the batch (1-based, header = line 1)
                    previous: Page | None = None
                    # A bulk file is the complete set: its first page says so, and the commit
                    # deletes what the file no longer lists.
                    bulk = mode == "bulk"
                    for raw, _fields in rows:
                        batch.append(raw)
                        if len(batch) >= page_size:
                            if previous is not None:
                                yield previous
                            previous = self._page(header_raw, batch, dataset, label_base, line)
                            previous.replaces_all, bulk = bulk, False
                            line += len(batch)
                            batch = []
                    if batch or previous is None:
                        if previous is not None:
                            yield previous
                        previous = self._page(header_raw, batch, dataset, label_base, line)
                        previous.replaces_all, bulk = bulk, False
                    previous.state = ""
                    yield previous
            except zipfile.BadZipFile as exc:
                raise SourceError(
                    f"{where}: bundle {name} is corrupt ({exc}); nothing from this run was committed — "
                    "remove or replace the bundle in the drop folder, then re-run"
                ) from None

    @classmethod
    def _page(cls, header_raw: bytes, batch: list[bytes], dataset: Dataset, label: str, line: int) -> Page:
        payload = header_raw + b"".join(batch)
        label = f"{label} rows {line}-{line + len(batch) - 1}" if batch else f"{label} (no rows)"
        return cls.parse(payload, label=label, dataset=dataset)

    # ------------------------------------------------------------------ offline

    @staticmethod
    def parse(payload: bytes, *, label: str, dataset: Dataset | None = None) -> Page:
        """A OneRoster CSV payload (header + rows) as a page; ``dataset`` options filter the rows."""
        where = f"oneroster: {label}"
        rows = [fields for _raw, fields in _rows(iter(io.BytesIO(payload)), where=where)]
        records: list[dict[str, Any]] = []
        if rows:
            header = _header(rows[0], where=where)
            records = _records(header, rows[1:], dataset, where=where)
        return Page(payload=payload, records=records, label=label, media_type="text/csv", extension="csv")

    @staticmethod
    def without(payload: bytes, keep_record: Callable[[dict[str, Any]], bool]) -> tuple[bytes, int]:
        """The CSV minus the rows whose flat record ``keep_record`` rejects; kept rows stay byte-exact."""
        rows = list(_rows(iter(io.BytesIO(payload)), where="oneroster: erasure"))
        if not rows:
            return payload, 0
        header_raw, header_fields = rows[0]
        header = _header(header_fields, where="oneroster: erasure")
        kept = [header_raw]
        removed = 0
        for raw, fields in rows[1:]:
            record = _records(header, [fields], None, where="oneroster: erasure")[0]
            if keep_record(record):
                kept.append(raw)
            else:
                removed += 1
        if not removed:
            return payload, 0
        return b"".join(kept), removed


def read_manifest(zf: zipfile.ZipFile, *, name: str, where: str) -> dict[str, str]:
    try:
        data = zf.read(MANIFEST)
    except KeyError:
        raise SourceError(
            f"{where}: bundle {name} has no {MANIFEST}; a OneRoster 1.1 bundle must have one — "
            "nothing was loaded from it or any later bundle; ask the exporting system to re-send it"
        ) from None
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{where}: bundle {name} is corrupt ({exc}); remove or replace it") from None
    rows = [fields for _raw, fields in _rows(iter(io.BytesIO(data)), where=f"{where}: {name}/{MANIFEST}")]
    if not rows or [f.strip() for f in rows[0][:2]] != ["propertyName", "value"]:
        raise SourceError(f"{where}: {name}/{MANIFEST} must start with the header 'propertyName,value'")
    return {r[0].strip(): (r[1].strip() if len(r) > 1 else "") for r in rows[1:] if r}


def validate_manifest(zf: zipfile.ZipFile, *, name: str, member: str, where: str) -> str:
    """The bundle's mode for ``member`` (bulk, delta or absent), after checking the manifest."""
    manifest = read_manifest(zf, name=name, where=where)
    for prop, expected in (("manifest.version", MANIFEST_VERSION), ("oneroster.version", ONEROSTER_VERSION)):
        if manifest.get(prop) != expected:
            raise SourceError(
                f"{where}: bundle {name}: {MANIFEST} has {prop}={manifest.get(prop)!r}, this connector "
                f"reads {prop} {expected} only; nothing was loaded from it or any later bundle"
            )
    stem = member[: -len(".csv")]
    mode = manifest.get(f"file.{stem}", "").lower()
    present = member in zf.namelist()
    if not mode:
        if present:
            raise SourceError(
                f"{where}: bundle {name} holds {member} but {MANIFEST} does not declare file.{stem}"
            )
        return "absent"
    if mode not in MODES:
        raise SourceError(
            f"{where}: bundle {name}: {MANIFEST} has file.{stem}={mode!r}; expected bulk, delta or absent"
        )
    if mode != "absent" and not present:
        raise SourceError(
            f"{where}: bundle {name}: {MANIFEST} declares {member} as {mode} but the zip lacks it"
        )
    return mode
