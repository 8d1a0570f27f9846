"""Encryption at rest for lake objects that hold clear personal data (landing, quarantine).

``Sealer(key, purpose)`` derives its own AES-256-GCM key from the identity-zone key with HKDF
(``info`` = purpose), so landing payloads, quarantine files and identity mappings never share
key material. Object layout: ``b"CDLS"`` | version ``0x01`` | 12-byte nonce | ciphertext+tag;
the associated data is the header plus the object's relpath, so a sealed object moved to
another path fails to open instead of answering for it.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"CDLS"
VERSION = 1
NONCE_LEN = 12
SUFFIX = ".sealed"


class SealedObjectError(RuntimeError):
    pass


class Sealer:
    def __init__(self, key: bytes, purpose: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"cdl {purpose} v1".encode()
        ).derive(key)
        self._aead = AESGCM(derived)
        self.purpose = purpose

    def __repr__(self) -> str:
        return f"Sealer(purpose={self.purpose!r})"

    def seal(self, relpath: str, data: bytes) -> bytes:
        header = MAGIC + bytes([VERSION])
        nonce = secrets.token_bytes(NONCE_LEN)
        return header + nonce + self._aead.encrypt(nonce, data, header + relpath.encode())

    def open(self, relpath: str, blob: bytes) -> bytes:
        header = blob[: len(MAGIC) + 1]
        if header != MAGIC + bytes([VERSION]):
            raise SealedObjectError(f"{relpath} is not a sealed lake object (bad header)")
        nonce = blob[len(header) : len(header) + NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, blob[len(header) + NONCE_LEN :], header + relpath.encode())
        except InvalidTag:
            raise SealedObjectError(
                f"{relpath} failed authentication: wrong identity-zone key, or the object was modified "
                "or moved. Check CDL_IDENTITY_KEY; do not trust the object."
            ) from None
