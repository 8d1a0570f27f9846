"""Where the privacy keys come from: environment, a keys file, or an Airflow connection.

Two different keys, each base64 of at least 32 random bytes:

| variable | key | used for |
|---|---|---|
| ``CDL_PSEUDONYM_KEY`` | pseudonym (HMAC) key | turns ID numbers, phones, names, addresses into tokens |
| ``CDL_IDENTITY_KEY`` | identity-zone key | encrypts the token -> identifier mapping (AES-256-GCM) |
| ``CDL_KEYS_FILE`` | | a dotenv-style file holding the two lines above (env vars win) |
| ``CDL_KEYS_CONN_ID`` | | inside Airflow: connection whose ``password`` is the pseudonym key and whose |
| | | extra ``identity_key`` is the identity-zone key (takes precedence over the rest) |
| ``CDL_PSEUDONYM_KEY_ID`` | | label of the pseudonym key version (default ``k1``), recorded with tokens |

The pipeline refuses to run without them. Losing the pseudonym key means tokens made before can
never be joined to new ones; losing the identity key means the identity zone can never be read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ingest.privacy.pseudonymise import MIN_KEY_BYTES, Pseudonymiser

__all__ = [
    "ENV_IDENTITY_KEY",
    "ENV_KEYS_CONN_ID",
    "ENV_KEYS_FILE",
    "ENV_KEY_ID",
    "ENV_PSEUDONYM_KEY",
    "Keys",
    "PrivacyKeyError",
    "PrivacyKeyInvalid",
    "PrivacyKeyMissing",
    "ensure_demo_keys",
    "key_fingerprint",
    "load_keys",
    "new_key",
]

log = logging.getLogger(__name__)

ENV_PSEUDONYM_KEY = "CDL_PSEUDONYM_KEY"
ENV_IDENTITY_KEY = "CDL_IDENTITY_KEY"
ENV_KEYS_FILE = "CDL_KEYS_FILE"
ENV_KEYS_CONN_ID = "CDL_KEYS_CONN_ID"
ENV_KEY_ID = "CDL_PSEUDONYM_KEY_ID"

_KEY_ROLES = {
    ENV_PSEUDONYM_KEY: "pseudonym key (turns ID numbers, phones and names into tokens)",
    ENV_IDENTITY_KEY: "identity-zone key (encrypts the token-to-identifier mapping)",
}
MAKE_KEY_COMMAND = (
    'python -c "import secrets,base64;print(base64.b64encode(secrets.token_bytes(32)).decode())"'
)


class PrivacyKeyError(RuntimeError):
    """A privacy key cannot be used; the message says what to do."""


class PrivacyKeyMissing(PrivacyKeyError):
    """A privacy key is not configured anywhere."""


class PrivacyKeyInvalid(PrivacyKeyError):
    """A privacy key is configured but unusable (not base64, too short, same as the other)."""


def new_key() -> str:
    """A fresh key, base64 of 32 random bytes (what :data:`MAKE_KEY_COMMAND` prints)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def key_fingerprint(key: bytes) -> str:
    """A short, non-reversible label of a key, safe to log (to check two workers agree)."""
    return hashlib.sha256(b"cdl-key-fingerprint\x00" + key).hexdigest()[:12]


@dataclass(frozen=True)
class Keys:
    hmac_key: bytes = field(repr=False)
    vault_key: bytes = field(repr=False)
    key_id: str = "k1"
    source: str = "environment"

    def __repr__(self) -> str:
        return (
            f"Keys(key_id={self.key_id!r}, source={self.source!r}, "
            f"hmac_key=<{len(self.hmac_key)} bytes, fingerprint {key_fingerprint(self.hmac_key)}>, "
            f"vault_key=<{len(self.vault_key)} bytes, fingerprint {key_fingerprint(self.vault_key)}>)"
        )

    __str__ = __repr__

    def pseudonymiser(self) -> Pseudonymiser:
        return Pseudonymiser(self.hmac_key, key_id=self.key_id)


def _missing_message(names: list[str], where: str) -> str:
    lines = [
        f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} not set{where}. "
        "The pipeline refuses to run without "
        f"{'it' if len(names) == 1 else 'them'}: personal identifiers must be pseudonymised "
        "before they reach the lake.",
    ]
    lines += [f"  {name}: the {_KEY_ROLES[name]}" for name in names]
    lines += [
        "Create a key (once per variable; the two keys must differ) with:",
        f"  {MAKE_KEY_COMMAND}",
        "then either export it (e.g. export CDL_PSEUDONYM_KEY=<printed value>), or write both "
        "CDL_PSEUDONYM_KEY=... and CDL_IDENTITY_KEY=... lines into a file readable only by the "
        "pipeline (chmod 600) and set CDL_KEYS_FILE=<path of that file>; inside Airflow, set "
        "CDL_KEYS_CONN_ID to a connection holding them.",
        "Keep the keys secret and backed up: with a lost pseudonym key old tokens can no longer be "
        "joined, with a lost identity-zone key the identity zone can no longer be read.",
    ]
    return "\n".join(lines)


def _decode(name: str, value: str, source: str) -> bytes:
    text = "".join(value.split())
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            key = base64.urlsafe_b64decode(text.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise PrivacyKeyInvalid(
                f"{name} (from {source}) is not valid base64. Create a new key with:\n  {MAKE_KEY_COMMAND}"
            ) from None
    if len(key) < MIN_KEY_BYTES:
        raise PrivacyKeyInvalid(
            f"{name} (from {source}) decodes to {len(key)} bytes; at least {MIN_KEY_BYTES} random bytes "
            f"are needed. Create a new key with:\n  {MAKE_KEY_COMMAND}"
        )
    return key


def _read_keys_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PrivacyKeyMissing(
            f"{ENV_KEYS_FILE} points to {path}, which does not exist. Create it with the lines "
            f"{ENV_PSEUDONYM_KEY}=... and {ENV_IDENTITY_KEY}=..., each key made with:\n  {MAKE_KEY_COMMAND}"
        ) from None
    except OSError as exc:
        raise PrivacyKeyMissing(
            f"{ENV_KEYS_FILE} points to {path}, which cannot be read ({exc.strerror}); "
            "check that the pipeline's user owns it."
        ) from None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0
    if mode & 0o077:
        log.warning("keys file %s is readable by other users (mode %o); run: chmod 600 %s", path, mode, path)
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        if not sep:
            # Never echo the line: it may hold a key.
            raise PrivacyKeyInvalid(f"{path} line {lineno} is not of the form NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def _from_airflow(conn_id: str) -> tuple[str | None, str | None]:
    try:
        from airflow.sdk import Connection  # imported lazily: the package runs without Airflow
    except ImportError:
        raise PrivacyKeyMissing(
            f"{ENV_KEYS_CONN_ID}={conn_id} is set but Airflow is not installed here; outside Airflow "
            f"unset it and use {ENV_PSEUDONYM_KEY}/{ENV_IDENTITY_KEY} or {ENV_KEYS_FILE}."
        ) from None
    try:
        conn = Connection.get(conn_id)
    except Exception as exc:  # Airflow raises several types for "no such connection"
        raise PrivacyKeyMissing(
            f"Airflow connection {conn_id!r} ({ENV_KEYS_CONN_ID}) could not be read: "
            f"{type(exc).__name__}. Create it (Admin > Connections) with the pseudonym key as its "
            f'password and {{"identity_key": "..."}} as its extra; make each key with:\n'
            f"  {MAKE_KEY_COMMAND}"
        ) from exc
    extra = conn.extra_dejson or {}
    return conn.password or None, extra.get("identity_key") or None


def load_keys(environ: Mapping[str, str] | None = None) -> Keys:
    """The pseudonym and identity-zone keys, or a :class:`PrivacyKeyError` saying what to fix."""
    environ = os.environ if environ is None else environ
    key_id = environ.get(ENV_KEY_ID) or "k1"
    conn_id = environ.get(ENV_KEYS_CONN_ID)
    sources: dict[str, str] = {}
    values: dict[str, str | None]
    if conn_id:
        hmac_b64, vault_b64 = _from_airflow(conn_id)
        values = {ENV_PSEUDONYM_KEY: hmac_b64, ENV_IDENTITY_KEY: vault_b64}
        where = f" in Airflow connection {conn_id!r} (password and extra 'identity_key')"
        source = f"Airflow connection {conn_id}"
        sources = dict.fromkeys(values, source)
    else:
        file_values: dict[str, str] = {}
        keys_file = environ.get(ENV_KEYS_FILE)
        if keys_file:
            path = Path(keys_file).expanduser()
            file_values = _read_keys_file(path)
        values = {}
        for name in _KEY_ROLES:
            if environ.get(name):
                values[name], sources[name] = environ[name], "environment"
            elif file_values.get(name):
                values[name], sources[name] = file_values[name], f"keys file {keys_file}"
            else:
                values[name] = None
        where = f" (neither in the environment nor in {keys_file})" if keys_file else ""
        source = ", ".join(sorted(set(sources.values()))) or "environment"
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise PrivacyKeyMissing(_missing_message(missing, where))
    hmac_key = _decode(ENV_PSEUDONYM_KEY, values[ENV_PSEUDONYM_KEY] or "", sources[ENV_PSEUDONYM_KEY])
    vault_key = _decode(ENV_IDENTITY_KEY, values[ENV_IDENTITY_KEY] or "", sources[ENV_IDENTITY_KEY])
    if secrets.compare_digest(hmac_key, vault_key):
        raise PrivacyKeyInvalid(
            f"{ENV_PSEUDONYM_KEY} and {ENV_IDENTITY_KEY} are the same key; they must differ so that "
            f"one leaking does not expose the other. Create a second key with:\n  {MAKE_KEY_COMMAND}"
        )
    return Keys(hmac_key=hmac_key, vault_key=vault_key, key_id=key_id, source=source)


_DEMO_HEADER = """\
# Demo privacy keys for a local community data lake (made by ensure_demo_keys).
# Keep this file outside the lake and readable only by you (mode 600). For a real district, make
# keys once, store them in the secrets manager / Airflow connection, and back them up.
"""


def ensure_demo_keys(path: Path) -> Path:
    """Create ``path`` (mode 0600) with two fresh random keys unless it already exists.

    A missing parent directory is created with mode 0700; an existing one is left as it is. An
    existing file is checked (it must hold two usable, different keys) and never rewritten, so
    tokens stay stable across runs.
    """
    path = Path(path).expanduser()
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)
    if not path.exists():
        content = f"{_DEMO_HEADER}{ENV_PSEUDONYM_KEY}={new_key()}\n{ENV_IDENTITY_KEY}={new_key()}\n"
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)  # atomic, and never replaces keys another process just made
            except FileExistsError:
                pass
            except OSError:  # a filesystem without hard links
                if not path.exists():
                    os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    load_keys({ENV_KEYS_FILE: str(path)})
    return path
