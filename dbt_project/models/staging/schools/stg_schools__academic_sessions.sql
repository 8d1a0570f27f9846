with

source as (

    select * from {{ source('schools', 'academic_sessions') }}

),

renamed as (

    select
        ----------  ids
        cast(sourcedid as varchar) as session_id,
        cast(parentsourcedid as varchar) as parent_session_id,

        ----------  strings
        cast(status as varchar) as status,
        cast(title as varchar) as session_title,
        cast(type as varchar) as session_type,
        cast(schoolyear as varchar) as school_year,

        ----------  booleans
        cast(coalesce(status = 'tobedeleted', false) as boolean) as is_deleted,

        ----------  dates
        cast(startdate as date) as start_date,
        cast(enddate as date) as end_date,

        ----------  timestamps (UTC)
        cast(datelastmodified as timestamptz) as modified_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
