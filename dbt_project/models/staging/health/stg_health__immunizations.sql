with

source as (

    select * from {{ source('health', 'immunizations') }}

),

renamed as (

    select
        ----------  ids
        cast(id as varchar) as immunization_id,
        cast(patient_id as varchar) as patient_id,

        ----------  strings
        cast(status as varchar) as status,
        cast(vaccine_system as varchar) as vaccine_system,
        cast(vaccine_code as varchar) as vaccine_code,
        cast(vaccine_display as varchar) as vaccine_display,
        cast(lot_number as varchar) as lot_number,

        ----------  booleans
        cast(status = 'completed' as boolean) as is_completed,

        ----------  timestamps (UTC)
        cast(occurrence_datetime as timestamptz) as occurred_at,
        cast(last_updated as timestamptz) as last_updated_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
