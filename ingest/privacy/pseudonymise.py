"""Keyed pseudonyms for direct identifiers (HMAC-SHA256), the same in every source.

A token is ``<prefix>_<32 hex>``: the first 128 bits of HMAC-SHA256(key, kind + "\\x1f" +
normalised value). The key makes tokens impossible to brute-force from the small space of
18-digit ID numbers or 11-digit mobiles (a plain hash would not be); the kind in the message
keeps an ID number and a phone number with the same characters apart (domain separation);
normalisation makes "11010519491231002x" and "1101 0519 4912 3100 2X", or "+86 138-0013-8000" and
"13800138000", the same person in every source, so the warehouse can join on tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from types import MappingProxyType

import pyarrow as pa

from ingest.privacy.identifiers import compact_code, normalise_mobile

__all__ = ["KIND_PREFIXES", "MIN_KEY_BYTES", "TOKEN_PATTERN", "Pseudonymiser", "normalise"]

MIN_KEY_BYTES = 32
TOKEN_HEX_CHARS = 32

# The closed set of identifier kinds and the tag their tokens carry.
KIND_PREFIXES: MappingProxyType[str, str] = MappingProxyType(
    {
        "id_number": "id",  # resident ID number (GB 11643)
        "phone": "ph",  # mobile or landline
        "name": "nm",  # personal name
        "address": "ad",  # address below building level (room, unit)
        "uscc": "uc",  # unified social credit code (GB 32100)
    }
)
TOKEN_PATTERN = re.compile(rf"^(?:{'|'.join(KIND_PREFIXES.values())})_[0-9a-f]{{{TOKEN_HEX_CHARS}}}$")

_WHITESPACE = re.compile(r"\s+")
# A space next to a non-ASCII character is layout, not content: "张　三" is "张三".
_SPACE_NEXT_TO_CJK = re.compile(r" (?=[^\x00-\x7f])|(?<=[^\x00-\x7f]) ")
# Middle dots in transliterated and minority names (阿卜杜·热合曼) come in many code points.
_MIDDLE_DOTS = re.compile(r"[\u00b7\u2022\u2027\u2219\u22c5\u30fb\uff65\u318d]")


def _text(value: str) -> str:
    text = unicodedata.normalize("NFKC", value)
    text = _MIDDLE_DOTS.sub("\u00b7", text)
    text = _WHITESPACE.sub(" ", text).strip()
    return _SPACE_NEXT_TO_CJK.sub("", text).casefold()


_NORMALISERS: dict[str, Callable[[str], str]] = {
    "id_number": compact_code,
    "phone": normalise_mobile,
    "name": _text,
    "address": _text,
    "uscc": compact_code,
}


def _check_kind(kind: str) -> str:
    prefix = KIND_PREFIXES.get(kind)
    if prefix is None:
        raise ValueError(f"unknown identifier kind {kind!r}; expected one of {', '.join(KIND_PREFIXES)}")
    return prefix


def normalise(kind: str, value: str) -> str:
    """The canonical form a value is tokenised in (may be empty: nothing to tokenise)."""
    _check_kind(kind)
    if not isinstance(value, str):
        raise TypeError(f"{kind} values must be strings, got {type(value).__name__}")
    return _NORMALISERS[kind](value)


class Pseudonymiser:
    """Turns identifiers into keyed tokens. Never shows its key in ``repr``."""

    def __init__(self, key: bytes, key_id: str = "k1") -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the pseudonym key must be at least {MIN_KEY_BYTES} random bytes")
        self.key_id = key_id
        self._bases = {
            kind: hmac.new(bytes(key), kind.encode() + b"\x1f", hashlib.sha256) for kind in KIND_PREFIXES
        }

    def __repr__(self) -> str:
        return f"Pseudonymiser(key_id={self.key_id!r})"

    def _digest(self, kind: str, normalised: str) -> str:
        mac = self._bases[kind].copy()
        mac.update(normalised.encode("utf-8"))
        return mac.hexdigest()[:TOKEN_HEX_CHARS]

    def token(self, kind: str, value: str) -> str:
        """Token of one value; raises ValueError for an unknown kind or an empty value."""
        prefix = _check_kind(kind)
        canonical = normalise(kind, value)
        if not canonical:
            raise ValueError(f"empty {kind}: nothing to pseudonymise")
        return f"{prefix}_{self._digest(kind, canonical)}"

    def _tokenise_list(self, kind: str, values: Iterable[str | None]) -> list[str | None]:
        prefix = _check_kind(kind) + "_"
        normaliser = _NORMALISERS[kind]
        base = self._bases[kind]
        cache: dict[str, str | None] = {}
        out: list[str | None] = []
        append = out.append
        for value in values:
            if value is None:
                append(None)
                continue
            try:
                append(cache[value])
                continue
            except KeyError:
                pass
            if not isinstance(value, str):
                raise TypeError(f"{kind} values must be strings, got {type(value).__name__}")
            canonical = normaliser(value)
            if canonical:
                mac = base.copy()
                mac.update(canonical.encode("utf-8"))
                tok: str | None = prefix + mac.hexdigest()[:TOKEN_HEX_CHARS]
            else:
                tok = None  # blank values must not all join as one "person"
            cache[value] = tok
            append(tok)
        return out

    def tokens(
        self, kind: str, values: pa.Array | pa.ChunkedArray | Sequence[str | None]
    ) -> pa.Array | pa.ChunkedArray:
        """Tokens for a column. Nulls and values that are blank after normalisation become null.

        Arrow input is dictionary-encoded first, so each distinct value is hashed once.
        """
        _check_kind(kind)
        if isinstance(values, pa.ChunkedArray):
            return pa.chunked_array([self.tokens(kind, chunk) for chunk in values.chunks], type=pa.string())
        if isinstance(values, pa.Array):
            if isinstance(values, pa.DictionaryArray):
                values = values.dictionary_decode()
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                values = values.cast(pa.string())
            encoded = values.dictionary_encode()
            dictionary = pa.array(self._tokenise_list(kind, encoded.dictionary.to_pylist()), type=pa.string())
            return dictionary.take(encoded.indices)
        return pa.array(self._tokenise_list(kind, values), type=pa.string())

    def mapping(self, kind: str, values: Iterable[str | None]) -> dict[str, tuple[str, str]]:
        """token -> (kind, normalised value) for the identity zone (``IdentityVault.put``)."""
        out: dict[str, tuple[str, str]] = {}
        for value in values:
            if value is None:
                continue
            canonical = normalise(kind, value)
            if canonical:
                out[f"{KIND_PREFIXES[kind]}_{self._digest(kind, canonical)}"] = (kind, canonical)
        return out
