with

source as (

    select * from {{ source('schools', 'classes') }}

),

renamed as (

    select
        ----------  ids
        cast(sourcedid as varchar) as class_id,
        cast(coursesourcedid as varchar) as course_id,
        cast(schoolsourcedid as varchar) as school_id,
        cast(termsourcedids as varchar) as term_ids,

        ----------  strings
        cast(status as varchar) as status,
        cast(title as varchar) as class_title,
        cast(classcode as varchar) as class_code,
        cast(classtype as varchar) as class_type,
        cast(grades as varchar) as grade,
        cast(location as varchar) as classroom,
        cast(subjects as varchar) as subjects,

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
