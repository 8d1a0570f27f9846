with

source as (

    select * from {{ source('schools', 'students') }}

),

renamed as (

    select
        ----------  ids
        cast(sourcedid as varchar) as student_id,
        cast(orgsourcedids as varchar) as school_ids,
        cast(identifier as varchar) as student_token,
        cast(identifier_is_minor as boolean) as student_is_minor,
        cast(agentsourcedids as varchar) as guardian_ids,

        ----------  strings
        cast(status as varchar) as status,
        cast(role as varchar) as user_role,
        cast(grades as varchar) as grade,

        ----------  booleans
        cast(enableduser as boolean) as is_enabled,
        cast(coalesce(status = 'tobedeleted', false) as boolean) as is_deleted,

        ----------  timestamps (UTC)
        cast(datelastmodified as timestamptz) as modified_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
