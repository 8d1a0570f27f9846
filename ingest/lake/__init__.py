"""The lake: zones on a local directory or an S3-compatible bucket, and Iceberg tables.

Zones (prefixes under ``LAKE_URL``): ``landing/`` payloads exactly as received, ``raw/`` and
``curated/`` Iceberg tables, ``quarantine/`` rejected records with reasons, ``audit/`` run
records, ``identity/`` (restricted) and ``open/`` (published). The lake knows nothing of source
protocols.
"""

from ingest.lake.storage import LakeStorage

ZONES = ("landing", "raw", "curated", "quarantine", "audit", "identity", "open")

__all__ = ["ZONES", "LakeStorage"]
