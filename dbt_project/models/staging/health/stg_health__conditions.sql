with

source as (

    select * from {{ source('health', 'conditions') }}

),

renamed as (

    select
        ----------  ids
        cast(id as varchar) as condition_id,
        cast(patient_id as varchar) as patient_id,

        ----------  strings
        cast(clinical_status as varchar) as clinical_status,
        cast(verification_status as varchar) as verification_status,
        cast(condition_system as varchar) as code_system,
        cast(condition_code as varchar) as icd10_code,
        cast(condition_display as varchar) as condition_display,

        ----------  booleans
        cast(clinical_status in ('active', 'recurrence', 'relapse') as boolean) as is_active,
        cast(verification_status = 'confirmed' as boolean) as is_confirmed,

        ----------  timestamps (UTC)
        cast(onset_datetime as timestamptz) as onset_at,
        cast(recorded_date as timestamptz) as recorded_at,
        cast(last_updated as timestamptz) as last_updated_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
