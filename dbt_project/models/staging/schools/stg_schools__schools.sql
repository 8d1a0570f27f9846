with

source as (

    select * from {{ source('schools', 'schools') }}

),

renamed as (

    select
        ----------  ids
        cast(sourcedid as varchar) as school_id,
        cast(parentsourcedid as varchar) as district_org_id,
        cast(identifier as varchar) as school_code,

        ----------  strings
        cast(name as varchar) as school_name,
        cast(type as varchar) as org_type,
        cast(status as varchar) as status,

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
