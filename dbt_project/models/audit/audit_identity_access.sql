-- Every read (resolve) and erasure of the identity zone: who, why, how many. No identifiers.
{{ lake_json('audit/identity/*/*.json', {
    'event': 'varchar',
    'actor': 'varchar',
    'purpose': 'varchar',
    'count': 'bigint',
    'at': 'timestamptz',
}) }}
