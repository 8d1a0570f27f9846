with

source as (

    select * from {{ source('directory', 'locations') }}

),

renamed as (

    select
        ----------  ids
        cast(id as varchar) as location_id,
        cast(organization_id as varchar) as organization_id,
        cast(external_identifier as varchar) as external_identifier,
        cast(external_identifier_type as varchar) as external_identifier_type,
        cast(grid_code as varchar) as grid_code,
        cast(community_code as varchar) as community_code,

        ----------  strings
        cast(location_type as varchar) as location_type,
        cast(name as varchar) as location_name,
        cast(description as varchar) as location_description,
        cast(address_1 as varchar) as address,
        cast(city as varchar) as city,
        cast(region as varchar) as region,
        cast(state_province as varchar) as state_province,
        cast(postal_code as varchar) as postal_code,
        cast(country as varchar) as country,

        ----------  numerics
        cast(latitude as double) as latitude,
        cast(longitude as double) as longitude,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at,

        ----------  derived
        case
            when cast(external_identifier_type as varchar) = 'cdl_building_id'
                then cast(external_identifier as varchar)
        end as building_id

    from source

)

select * from renamed
