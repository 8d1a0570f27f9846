with

source as (

    select * from {{ source('directory', 'services') }}

),

renamed as (

    select
        ----------  ids
        cast(id as varchar) as service_id,
        cast(organization_id as varchar) as organization_id,
        cast(category as varchar) as service_category,

        ----------  strings
        cast(name as varchar) as service_name,
        cast(alternate_name as varchar) as alternate_name,
        cast(description as varchar) as service_description,
        cast(status as varchar) as status,
        cast(alert as varchar) as alert,
        cast(eligibility_description as varchar) as eligibility_description,
        cast(fees_description as varchar) as fees_description,
        cast(application_process as varchar) as application_process,
        cast(languages as varchar) as languages,
        cast(schedule_byday as varchar) as schedule_byday,
        cast(schedule_opens_at as varchar) as opens_at_local,
        cast(schedule_closes_at as varchar) as closes_at_local,
        cast(schedule_description as varchar) as schedule_description,

        ----------  numerics
        cast(minimum_age as double) as minimum_age,
        cast(maximum_age as double) as maximum_age,

        ----------  dates
        cast(schedule_valid_from as date) as schedule_valid_from,
        cast(schedule_valid_to as date) as schedule_valid_to,
        cast(assured_date as date) as assured_date,

        ----------  timestamps (UTC)
        cast(last_modified as timestamptz) as last_modified_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at,

        ----------  booleans
        coalesce(cast(status as varchar) = 'active', false) as is_active,
        coalesce(cast(status as varchar) = 'temporarily closed', false) as is_temporarily_closed

    from source

)

select * from renamed
