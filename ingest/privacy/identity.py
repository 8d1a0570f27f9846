"""The identity zone: token -> identifier mappings, encrypted, audited, failing closed.

One object per load batch at ``identity/mappings/<batch_id>.bin``::

    offset  size  field
    0       4     magic b"CDLI"
    4       1     format version (1)
    5       8     key id: first 8 bytes of SHA-256("cdl identity key id" NUL vault key)
    13      12    random nonce (new for every object written)
    25      ...   AES-256-GCM ciphertext + 16-byte tag of the UTF-8 JSON payload

The AES key is derived from the identity-zone key with HKDF-SHA256. The associated data is the
13-byte header followed by the object's relpath, so an object copied or renamed to another path
(another batch) fails authentication instead of silently answering for it. The payload is
``{"format": "cdl.identity.mapping", "version": 1, "batch_id": ..., "written_at": ...,
"entries": [[token, kind, value], ...]}``.

Every read of clear values (:meth:`IdentityVault.resolve`) and every erasure writes an audit
record first; if that record cannot be written the call raises :class:`AuditUnavailable` and
returns nothing. Audit records hold counts, actor and purpose, never identifiers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ingest.privacy.identifiers import contains_identifier
from ingest.privacy.keys import ENV_IDENTITY_KEY
from ingest.privacy.pseudonymise import KIND_PREFIXES, MIN_KEY_BYTES, TOKEN_PATTERN

__all__ = [
    "AUDIT_PREFIX",
    "MAPPINGS_PREFIX",
    "AuditSink",
    "AuditUnavailable",
    "IdentityStorage",
    "IdentityVault",
    "IdentityZoneError",
    "LakeAuditSink",
]

log = logging.getLogger(__name__)

MAPPINGS_PREFIX = "identity/mappings"
AUDIT_PREFIX = "audit/identity"
MAGIC = b"CDLI"
FORMAT_VERSION = 1
KEY_ID_LEN = 8
HEADER_LEN = len(MAGIC) + 1 + KEY_ID_LEN
NONCE_LEN = 12
TAG_LEN = 16
PAYLOAD_FORMAT = "cdl.identity.mapping"
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=:+-]{0,199}$")


class IdentityZoneError(RuntimeError):
    """An identity-zone object cannot be trusted or read."""


class AuditUnavailable(RuntimeError):
    """The audit record could not be written, so the identity zone refused access."""


class IdentityStorage(Protocol):
    """What the vault needs from storage (``ingest.lake.storage.LakeStorage`` has it)."""

    def write_bytes(self, relpath: str, data: bytes) -> str: ...

    def read_bytes(self, relpath: str) -> bytes: ...

    def list(self, prefix: str) -> list[str]: ...

    def exists(self, relpath: str) -> bool: ...


@runtime_checkable
class AuditSink(Protocol):
    def record(self, **fields: Any) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _check_free_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is required: say who is asking and why (it goes into the audit record)")
    if contains_identifier(value):
        raise ValueError(
            f"{name} seems to contain an ID or mobile number; audit records must not hold identifiers "
            "(refer to a case or ticket number instead)"
        )
    return value.strip()


class LakeAuditSink:
    """One JSON object per event at ``audit/identity/<yyyymmdd>/<timestamp>-<uuid>.json``."""

    def __init__(self, storage: IdentityStorage) -> None:
        self.storage = storage

    def record(self, **fields: Any) -> None:
        for name, value in fields.items():
            if isinstance(value, str) and contains_identifier(value):
                raise ValueError(f"audit field {name!r} seems to contain an identifier; not recorded")
        now = _now()
        fields.setdefault("at", now.isoformat(timespec="microseconds"))
        relpath = f"{AUDIT_PREFIX}/{now:%Y%m%d}/{now:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex}.json"
        data = json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")
        self.storage.write_bytes(relpath, data)


def _local_root(storage: object) -> Path | None:
    """The lake's local directory, if ``storage`` is a LakeStorage on a local lake."""
    settings = getattr(storage, "settings", None)
    url = getattr(storage, "url", None)
    if settings is None or getattr(settings, "lake_is_s3", True) or not isinstance(url, str):
        return None
    return Path(url)


class IdentityVault:
    """Encrypted token -> (kind, clear value) mappings in the lake's ``identity/`` zone."""

    def __init__(self, storage: IdentityStorage, vault_key: bytes, audit: AuditSink) -> None:
        if not isinstance(vault_key, bytes | bytearray) or len(vault_key) < MIN_KEY_BYTES:
            raise ValueError(f"the identity-zone key must be at least {MIN_KEY_BYTES} random bytes")
        if not callable(getattr(audit, "record", None)):
            raise TypeError("audit must have a record(**fields) method")
        self.storage = storage
        self.audit = audit
        aes_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"cdl identity zone aes-256-gcm v1"
        ).derive(bytes(vault_key))
        self._aead = AESGCM(aes_key)
        self._key_id = hashlib.sha256(b"cdl identity key id\x00" + bytes(vault_key)).digest()[:KEY_ID_LEN]
        self._header = MAGIC + bytes([FORMAT_VERSION]) + self._key_id

    def __repr__(self) -> str:
        return f"IdentityVault(key_id={self._key_id.hex()}, storage={type(self.storage).__name__})"

    # -- objects ---------------------------------------------------------------------------

    @staticmethod
    def relpath(batch_id: str) -> str:
        if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
            raise ValueError(
                "batch_id must be 1-200 characters of letters, digits and . _ = : + - "
                "(starting with a letter or digit)"
            )
        return f"{MAPPINGS_PREFIX}/{batch_id}.bin"

    def _seal(self, relpath: str, payload: dict[str, Any]) -> bytes:
        plaintext = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        nonce = secrets.token_bytes(NONCE_LEN)
        return self._header + nonce + self._aead.encrypt(nonce, plaintext, self._header + relpath.encode())

    def _open(self, relpath: str, blob: bytes) -> dict[str, Any]:
        if len(blob) < HEADER_LEN + NONCE_LEN + TAG_LEN or blob[: len(MAGIC)] != MAGIC:
            raise IdentityZoneError(f"{relpath} is not an identity-zone object (bad header); restore it")
        version = blob[len(MAGIC)]
        if version != FORMAT_VERSION:
            raise IdentityZoneError(
                f"{relpath} has format version {version}; this code reads version {FORMAT_VERSION}"
            )
        header = blob[:HEADER_LEN]
        key_id = header[len(MAGIC) + 1 :]
        if key_id != self._key_id:
            raise IdentityZoneError(
                f"{relpath} was encrypted with a different identity-zone key (key id {key_id.hex()}, "
                f"this process has {self._key_id.hex()}); check {ENV_IDENTITY_KEY}"
            )
        nonce = blob[HEADER_LEN : HEADER_LEN + NONCE_LEN]
        try:
            plaintext = self._aead.decrypt(nonce, blob[HEADER_LEN + NONCE_LEN :], header + relpath.encode())
        except InvalidTag:
            raise IdentityZoneError(
                f"{relpath} failed authentication: it was modified, truncated, or moved here from another "
                "path. Do not trust it; restore it from backup."
            ) from None
        payload = json.loads(plaintext)
        if payload.get("format") != PAYLOAD_FORMAT or not isinstance(payload.get("entries"), list):
            raise IdentityZoneError(f"{relpath} does not hold an identity mapping")
        return payload

    def _objects(self) -> list[str]:
        return [
            p
            for p in self.storage.list(MAPPINGS_PREFIX)
            if p.endswith(".bin") and not p.rsplit("/", 1)[-1].startswith(".")
        ]

    def _load(self, relpath: str) -> dict[str, Any]:
        return self._open(relpath, self.storage.read_bytes(relpath))

    def _write(self, relpath: str, batch_id: str, entries: list[list[str]]) -> str:
        payload = {
            "format": PAYLOAD_FORMAT,
            "version": FORMAT_VERSION,
            "batch_id": batch_id,
            "written_at": _now().isoformat(timespec="seconds"),
            "entries": entries,
        }
        root = _local_root(self.storage)
        if root is not None:
            self._restrict_dirs(root)
        uri = self.storage.write_bytes(relpath, self._seal(relpath, payload))
        if root is not None:
            self._restrict_file(root / relpath)
        return uri

    @staticmethod
    def _restrict_dirs(root: Path) -> None:
        try:
            for sub in ("identity", MAPPINGS_PREFIX):
                directory = root / sub
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                directory.chmod(0o700)
        except OSError as exc:
            log.warning("could not restrict the identity zone directories to 0700: %s", exc)

    @staticmethod
    def _restrict_file(path: Path) -> None:
        try:
            path.chmod(0o600)
        except OSError as exc:
            log.warning("could not restrict %s to 0600: %s", path, exc)

    def _audit(self, **fields: Any) -> None:
        fields["at"] = _now().isoformat(timespec="microseconds")
        try:
            self.audit.record(**fields)
        except Exception as exc:
            raise AuditUnavailable(
                f"the identity zone refused {fields['event']}: its audit record could not be written "
                f"({type(exc).__name__}: {exc}). Nothing was returned or changed; fix the audit "
                f"store ({AUDIT_PREFIX}/) and retry."
            ) from exc

    # -- public ------------------------------------------------------------------------------

    def put(self, batch_id: str, mapping: Mapping[str, tuple[str, str]]) -> str:
        """Store token -> (kind, clear value) for one batch; re-putting a batch replaces it."""
        relpath = self.relpath(batch_id)
        entries: list[list[str]] = []
        for token, pair in sorted(mapping.items()):
            if not isinstance(token, str) or not TOKEN_PATTERN.match(token):
                raise ValueError("mapping keys must be tokens made by Pseudonymiser (e.g. 'id_<32 hex>')")
            kind, value = pair
            if KIND_PREFIXES.get(kind) != token.split("_", 1)[0]:
                raise ValueError(f"a token of kind {kind!r} must start with {KIND_PREFIXES.get(kind)!r}_")
            if not isinstance(value, str):
                raise ValueError(f"clear values must be strings (kind {kind!r})")
            entries.append([token, kind, value])
        return self._write(relpath, batch_id, entries)

    def batches(self) -> list[str]:
        """Batch ids held in the identity zone (no decryption, no clear values)."""
        return [p[len(MAPPINGS_PREFIX) + 1 : -len(".bin")] for p in self._objects()]

    def resolve(self, tokens: Iterable[str], *, purpose: str, actor: str) -> dict[str, str]:
        """Clear values for ``tokens`` (unknown tokens are left out), audited first.

        Raises :class:`AuditUnavailable` (returning nothing) if the audit record cannot be written.
        """
        purpose = _check_free_text("purpose", purpose)
        actor = _check_free_text("actor", actor)
        requested = list(tokens)
        if not all(isinstance(t, str) for t in requested):
            raise TypeError("tokens must be strings")
        wanted = set(requested)
        found: dict[str, str] = {}
        if wanted:
            for relpath in self._objects():
                for token, _kind, value in self._load(relpath)["entries"]:
                    if token in wanted:
                        found[token] = value
                if len(found) == len(wanted):
                    break
        self._audit(
            event="identity.resolve", actor=actor, purpose=purpose, count=len(requested), found=len(found)
        )
        return found

    def erase(
        self, tokens: set[str], *, actor: str = "system", purpose: str = "erasure request (PIPL art. 47)"
    ) -> int:
        """Remove ``tokens`` from every mapping object; returns how many entries were removed.

        Audited before anything is rewritten; fails closed like :meth:`resolve`.
        """
        purpose = _check_free_text("purpose", purpose)
        actor = _check_free_text("actor", actor)
        doomed = set(tokens)
        rewrites: list[tuple[str, str, list[list[str]]]] = []
        removed = 0
        if doomed:
            for relpath in self._objects():
                payload = self._load(relpath)
                kept = [entry for entry in payload["entries"] if entry[0] not in doomed]
                if len(kept) != len(payload["entries"]):
                    removed += len(payload["entries"]) - len(kept)
                    rewrites.append((relpath, payload["batch_id"], kept))
        self._audit(
            event="identity.erase",
            actor=actor,
            purpose=purpose,
            count=len(doomed),
            removed=removed,
            objects=len(rewrites),
        )
        for relpath, batch_id, kept in rewrites:
            self._write(relpath, batch_id, kept)
        return removed
