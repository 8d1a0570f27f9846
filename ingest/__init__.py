"""Community data lake ingest package."""
