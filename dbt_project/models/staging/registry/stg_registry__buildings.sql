with

source as (

    select * from {{ source('registry', 'buildings') }}

),

renamed as (

    select
        ----------  ids
        cast(building_id as varchar) as building_id,
        cast(compound_id as varchar) as compound_id,
        cast(community_id as varchar) as community_code,
        cast(street_id as varchar) as street_code,
        cast(grid_id as varchar) as grid_code,

        ----------  strings
        cast(compound_name as varchar) as compound_name,
        cast(address as varchar) as building_address,
        cast(zipcode as varchar) as zipcode,
        cast(property_company as varchar) as property_company,

        ----------  numerics
        cast(building_number as integer) as building_number,
        cast(units as integer) as units,
        cast(floors as integer) as floors,
        cast(rooms_per_floor as integer) as rooms_per_floor,
        cast(latitude as double) as latitude,
        cast(longitude as double) as longitude,

        ----------  booleans
        cast(deleted_at is not null as boolean) as is_deleted,

        ----------  timestamps (UTC)
        cast(updated_at as timestamptz) as updated_at,
        cast(deleted_at as timestamptz) as deleted_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
