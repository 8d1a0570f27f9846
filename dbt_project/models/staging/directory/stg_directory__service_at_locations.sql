with

source as (

    select * from {{ source('directory', 'service_at_locations') }}

),

renamed as (

    select
        ----------  ids
        cast(id as varchar) as service_at_location_id,
        cast(service_id as varchar) as service_id,
        cast(location_id as varchar) as location_id,

        ----------  strings
        cast(description as varchar) as service_at_location_description,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
