with

source as (

    select * from {{ source('health', 'encounters') }}

),

renamed as (

    select
        ----------  ids
        cast(id as varchar) as encounter_id,
        cast(patient_id as varchar) as patient_id,
        cast(service_provider as varchar) as service_provider_id,

        ----------  strings
        cast(status as varchar) as status,
        cast(class_code as varchar) as class_code,
        cast(type_code as varchar) as type_code,
        cast(type_display as varchar) as type_display,
        cast(reason_code as varchar) as reason_code,

        ----------  booleans
        cast(status = 'finished' as boolean) as is_finished,
        cast(class_code = 'HH' as boolean) as is_home_visit,

        ----------  timestamps (UTC)
        cast(period_start as timestamptz) as started_at,
        cast(period_end as timestamptz) as ended_at,
        cast(last_updated as timestamptz) as last_updated_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
