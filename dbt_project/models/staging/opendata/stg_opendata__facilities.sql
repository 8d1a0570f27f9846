with

source as (

    select * from {{ source('opendata', 'facilities') }}

),

renamed as (

    select
        ----------  ids
        cast(facility_id as varchar) as facility_id,
        cast(datastore_id as bigint) as datastore_row_id,
        cast(street_code as varchar) as street_code,
        cast(community_code as varchar) as community_code,
        cast(grid_code as varchar) as grid_code,
        cast(operator_uscc as varchar) as operator_uscc,

        ----------  strings
        cast(name as varchar) as facility_name,
        cast(category as varchar) as category,
        cast(category_name as varchar) as category_name,
        cast(community_name as varchar) as community_name,
        cast(address as varchar) as address,
        cast(operator_name as varchar) as operator_name,
        cast(phone as varchar) as service_phone,
        cast(opening_hours as varchar) as opening_hours,

        ----------  numerics
        cast(lat as double) as latitude,
        cast(long as double) as longitude,
        cast(capacity as bigint) as capacity,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
