"""Privacy at the door: validate Chinese identifiers, pseudonymise them, keep the mapping locked.

- :mod:`.identifiers` validates resident ID numbers (GB 11643), USCCs (GB 32100) and mobiles,
  with reasons a clerk can act on that never repeat the number.
- :mod:`.pseudonymise` turns identifiers into keyed HMAC-SHA256 tokens, the same person the same
  token in every source, column-at-a-time on Arrow arrays.
- :mod:`.keys` loads the two keys (pseudonym, identity zone) and refuses to run without them.
- :mod:`.identity` keeps token -> identifier mappings AES-256-GCM encrypted in ``identity/``;
  every read is audited and refused if the audit record cannot be written.

Works on batches, not protocols; the runner decides which columns are which kind.
"""

from ingest.privacy.identifiers import (
    PIPL_MINOR_AGE,
    CodeCheck,
    IdCheck,
    age_on,
    contains_identifier,
    is_minor,
    normalise_mobile,
    resident_id_check_char,
    validate_mobile,
    validate_resident_id,
    validate_uscc,
)
from ingest.privacy.identity import (
    AuditSink,
    AuditUnavailable,
    IdentityStorage,
    IdentityVault,
    IdentityZoneError,
    LakeAuditSink,
)
from ingest.privacy.keys import (
    Keys,
    PrivacyKeyError,
    PrivacyKeyInvalid,
    PrivacyKeyMissing,
    ensure_demo_keys,
    load_keys,
)
from ingest.privacy.pseudonymise import KIND_PREFIXES, Pseudonymiser, normalise

__all__ = [
    "KIND_PREFIXES",
    "PIPL_MINOR_AGE",
    "AuditSink",
    "AuditUnavailable",
    "CodeCheck",
    "IdCheck",
    "IdentityStorage",
    "IdentityVault",
    "IdentityZoneError",
    "Keys",
    "LakeAuditSink",
    "PrivacyKeyError",
    "PrivacyKeyInvalid",
    "PrivacyKeyMissing",
    "Pseudonymiser",
    "age_on",
    "contains_identifier",
    "ensure_demo_keys",
    "is_minor",
    "load_keys",
    "normalise",
    "normalise_mobile",
    "resident_id_check_char",
    "validate_mobile",
    "validate_resident_id",
    "validate_uscc",
]
