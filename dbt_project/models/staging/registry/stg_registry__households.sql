with

source as (

    select * from {{ source('registry', 'households') }}

),

renamed as (

    select
        ----------  ids
        cast(household_id as varchar) as household_id,
        cast(head_resident_id as varchar) as head_resident_id,
        cast(room_id as varchar) as room_id,
        cast(building_id as varchar) as building_id,
        cast(grid_id as varchar) as grid_code,
        cast(community_id as varchar) as community_code,

        ----------  strings
        cast(kind as varchar) as household_kind,

        ----------  numerics
        cast(member_count as integer) as member_count,

        ----------  booleans
        cast(deleted_at is not null as boolean) as is_deleted,

        ----------  timestamps (UTC)
        cast(registered_at as timestamptz) as registered_at,
        cast(updated_at as timestamptz) as updated_at,
        cast(deleted_at as timestamptz) as deleted_at,

        ----------  ingest metadata
        cast(_run_id as varchar) as ingest_run_id,
        cast(_loaded_at as timestamptz) as loaded_at

    from source

)

select * from renamed
