-- One row per extraction run of any source: what was taken, when, for which declared purpose.
-- Read from the append-only run records the ingest package writes to the lake (audit/runs/).
{{ lake_json('audit/runs/*/*/*.json', {
    'source': 'varchar',
    'dataset': 'varchar',
    'run_id': 'varchar',
    'status': 'varchar',
    'window_since': 'timestamptz',
    'window_until': 'timestamptz',
    'records_received': 'bigint',
    'rows_inserted': 'bigint',
    'rows_updated': 'bigint',
    'quarantined': 'bigint',
    'erased_skipped': 'bigint',
    'fields': 'varchar[]',
    'purpose': 'varchar',
    'started_at': 'timestamptz',
    'finished_at': 'timestamptz',
    'error': 'varchar',
}) }}
