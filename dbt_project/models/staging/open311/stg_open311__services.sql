with

source as (

    select * from {{ source('open311', 'services') }}

),

renamed as (

    select
        ----------  ids
        cast(service_code as varchar) as service_code,

        ----------  strings
        cast(service_name as varchar) as service_name,
        cast(description as varchar) as service_description,
        cast(type as varchar) as service_type,
        cast(keywords as varchar) as keywords,
        cast("group" as varchar) as service_group,

        ----------  booleans
        cast(metadata as boolean) as has_metadata,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
