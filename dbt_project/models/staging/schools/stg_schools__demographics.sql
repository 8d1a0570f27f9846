with

source as (

    select * from {{ source('schools', 'demographics') }}

),

renamed as (

    select
        ----------  ids
        cast(sourcedid as varchar) as student_id,

        ----------  strings
        cast(status as varchar) as status,
        cast(sex as varchar) as sex,

        ----------  dates
        cast(birthdate as date) as birth_date,

        ----------  booleans
        cast(coalesce(status = 'tobedeleted', false) as boolean) as is_deleted,

        ----------  timestamps (UTC)
        cast(datelastmodified as timestamptz) as modified_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
