with

source as (

    select * from {{ source('schools', 'enrollments') }}

),

renamed as (

    select
        ----------  ids
        cast(sourcedid as varchar) as enrollment_id,
        cast(classsourcedid as varchar) as class_id,
        cast(schoolsourcedid as varchar) as school_id,
        cast(usersourcedid as varchar) as user_id,

        ----------  strings
        cast(status as varchar) as status,
        cast(role as varchar) as enrollment_role,

        ----------  booleans
        cast("primary" as boolean) as is_primary,
        cast(coalesce(status = 'tobedeleted', false) as boolean) as is_deleted,

        ----------  dates
        cast(begindate as date) as begin_date,
        cast(enddate as date) as end_date,

        ----------  timestamps (UTC)
        cast(datelastmodified as timestamptz) as modified_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
